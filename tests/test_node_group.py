"""pccl_py.NodeGroup: the exchanges of a node's ranks through its store, and
how a gone or failed sibling is reported (NodeError, bounded in time)."""

import threading
import time

import pytest

torch = pytest.importorskip("torch")
import torch.distributed as dist  # noqa: E402

import pccl_py as pc  # noqa: E402


def _store():
    return dist.TCPStore("127.0.0.1", 0, is_master=True, wait_for_workers=False)


def test_exchange_returns_every_ranks_value_in_rank_order():
    store = _store()
    groups = [pc.NodeGroup(r, 3, dist.TCPStore("127.0.0.1", store.port, is_master=False), timeout=5.0,
                           heartbeat=0.1) for r in range(3)]
    out = [None] * 3

    def run(r):
        out[r] = groups[r].exchange("k", f"v{r}".encode())
    threads = [threading.Thread(target=run, args=(r,)) for r in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert out == [[b"v0", b"v1", b"v2"]] * 3
    assert groups[0].exchange("once", b"x", wait=False) is None  # publish only
    for g in groups:
        g.close()


def test_a_sibling_without_heartbeat_is_reported_within_the_timeout():
    store = _store()
    g = pc.NodeGroup(0, 2, store, timeout=0.6, heartbeat=0.1)
    t = time.monotonic()
    with pytest.raises(pc.NodeError, match="rank 1 of this node sent no heartbeat"):
        g.exchange("k", b"1")  # rank 1 never started
    assert 0.5 < time.monotonic() - t < 3.0
    g.close()


def test_a_failed_sibling_fails_the_others_next_exchange():
    store = _store()
    a = pc.NodeGroup(0, 2, store, timeout=5.0, heartbeat=0.1)
    b = pc.NodeGroup(1, 2, dist.TCPStore("127.0.0.1", store.port, is_master=False), timeout=5.0, heartbeat=0.1)
    b.fail("its ring was closed")
    with pytest.raises(pc.NodeError, match="rank 1: its ring was closed"):
        a.exchange("k", b"1")
    with pytest.raises(pc.NodeError, match="already failed"):
        b.exchange("k", b"1")
    a.close()
    b.close()


def test_bad_arguments_are_refused():
    store = _store()
    with pytest.raises(pc.InvalidArgumentError):
        pc.NodeGroup(2, 2, store)
    with pytest.raises(pc.InvalidArgumentError):
        pc.NodeGroup(0, 2, store, timeout=0.1, heartbeat=0.1)
