"""Bad input gets a clear exception naming the problem, within the timeout,
and leaves the other peers working."""

import socket
import threading
import time

import numpy as np
import pytest
import torch

import pccl_py as pc
from local_group import close_all, make_group, run_all


@pytest.fixture
def pair():
    comms = make_group(2)
    yield comms
    close_all(comms)


def test_unparsable_multiaddr():
    with pytest.raises(pc.InvalidArgumentError, match=r"invalid multiaddr '/ip4/1\.2\.3/tcp/1'"):
        pc.Communicator(bootstrap=["/ip4/1.2.3/tcp/1"], run_key="k")
    with pytest.raises(pc.InvalidArgumentError, match="unknown protocol"):
        pc.Communicator(listen=["/ip9/1.2.3.4/tcp/0"], run_key="k")


def test_bootstrap_where_nobody_listens():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    t0 = time.monotonic()
    with pytest.raises(pc.NetworkError, match=f"127.0.0.1/tcp/{port}.*(refused|reach)"):
        pc.Communicator(bootstrap=[f"/ip4/127.0.0.1/tcp/{port}"], run_key="k", timeout=3.0)
    assert time.monotonic() - t0 < 3.0


def test_world_of_one_returns_input_at_once():
    with pc.Communicator(run_key="k") as c:
        x = np.arange(7, dtype=np.float32)
        info = c.all_reduce(x, op="avg")
        assert x.tolist() == list(range(7)) and info.world_size == 1 and info.tx_bytes == 0
        y = np.zeros(7, np.float32)
        c.all_reduce(x, op="sum", out=y)
        assert y.tolist() == list(range(7))


def test_buffer_errors_name_the_problem():
    with pc.Communicator(run_key="k") as c:
        with pytest.raises(pc.InvalidArgumentError, match="not contiguous"):
            c.all_reduce(np.zeros((4, 4), np.float32)[:, 1])
        with pytest.raises(pc.InvalidArgumentError, match="not contiguous"):
            c.all_reduce(torch.zeros(4, 4).t())
        with pytest.raises(pc.InvalidArgumentError, match="unsupported dtype complex64"):
            c.all_reduce(np.zeros(3, np.complex64))
        with pytest.raises(pc.InvalidArgumentError, match="unsupported device 'meta'"):
            c.all_reduce(torch.zeros(3, device="meta"))
        with pytest.raises(pc.InvalidArgumentError, match="numpy array or a torch CPU tensor"):
            c.all_reduce([1.0, 2.0])
        with pytest.raises(pc.InvalidArgumentError, match="read-only"):
            a = np.zeros(3, np.float32)
            a.flags.writeable = False
            c.all_reduce(a)
        with pytest.raises(pc.InvalidArgumentError, match="out must match"):
            c.all_reduce(np.zeros(3, np.float32), out=np.zeros(4, np.float32))
        with pytest.raises(pc.InvalidArgumentError, match="unknown reduce op 'median'"):
            c.all_reduce(np.zeros(3, np.float32), op="median")


def test_closed_communicator():
    c = pc.Communicator(run_key="k")
    c.close()
    with pytest.raises(pc.ClosedError, match="closed"):
        c.all_reduce(np.zeros(3, np.float32))
    with pytest.raises(pc.ClosedError):
        c.update_topology()
    c.close()  # idempotent


def test_close_while_another_thread_waits_on_an_op(pair):
    """close() while another thread is inside wait() on an async op (a
    wrapper's background sync): that op fails with ClosedError there, and the
    handle is freed only once the waiting thread has left the C call."""
    a = pair[0]
    h = a.all_reduce_async(np.ones(1 << 16, np.float32), tag=7)  # the other peer never joins it
    errs = []
    inside = threading.Event()

    def waiter():
        inside.set()
        try:
            h.wait()
        except Exception as e:  # noqa: BLE001 - checked below
            errs.append(e)

    t = threading.Thread(target=waiter, daemon=True)
    t.start()
    inside.wait(10)
    time.sleep(0.2)  # now blocked in the core's wait
    a.close()
    t.join(10)
    assert not t.is_alive() and len(errs) == 1 and isinstance(errs[0], pc.ClosedError), errs


@pytest.mark.parametrize("second", [np.zeros(10, np.float64), np.zeros(11, np.float32)])
def test_mismatch_between_peers_fails_everywhere_then_recovers(pair, second):
    inputs = [np.ones(10, np.float32), second]
    t0 = time.monotonic()
    errs = run_all(pair, lambda c, x: c.all_reduce(x), inputs)
    assert time.monotonic() - t0 < 5.0  # well within the timeout: the neighbour aborts the op
    for e in errs:
        assert isinstance(e, pc.InvalidUsageError), e
        assert "mismatch" in str(e)
    assert "f32 x 10 (sum)" in str(errs[0]) + str(errs[1])
    assert inputs[0].tolist() == [1.0] * 10  # in place: restored after the failure
    # The group still works afterwards.
    xs = [np.ones(4, np.float32), np.full(4, 2, np.float32)]
    infos = run_all(pair, lambda c, x: c.all_reduce(x), xs)
    assert all(isinstance(i, pc.OpInfo) for i in infos), infos
    assert xs[0].tolist() == xs[1].tolist() == [3.0] * 4


def test_algorithm_mismatch_between_peers_fails_everywhere(pair):
    inputs = [np.ones(10, np.float32), np.ones(10, np.float32)]
    errs = run_all(pair, lambda c, x: c.all_reduce(x, algorithm="direct" if x is inputs[1] else "ring"), inputs)
    for e in errs:
        assert isinstance(e, pc.InvalidUsageError), e
    assert "f32 x 10 (sum, direct)" in str(errs[0]) + str(errs[1])
    with pytest.raises(pc.InvalidArgumentError, match="unknown algorithm 'tree'"):
        pair[0].all_reduce(inputs[0], algorithm="tree")


def test_op_mismatch_between_peers(pair):
    errs = run_all(pair, lambda c, op: c.all_reduce(np.ones(4, np.float32), op=op), ["sum", "max"])
    assert all(isinstance(e, pc.InvalidUsageError) for e in errs), errs


def test_out_of_place_leaves_input_untouched(pair):
    xs = [np.arange(5, dtype=np.float64), np.arange(5, dtype=np.float64) * 10]
    outs = [np.zeros(5), np.zeros(5)]
    run_all(pair, lambda c, x, o: c.all_reduce(x, op="max", out=o), xs, outs)
    assert xs[0].tolist() == list(range(5)) and outs[0].tolist() == outs[1].tolist() == [0, 10, 20, 30, 40]


def test_torch_bf16_and_f16_tensors(pair):
    xs = [torch.full((33,), 1.5, dtype=torch.bfloat16), torch.full((33,), 2.25, dtype=torch.bfloat16)]
    run_all(pair, lambda c, x: c.all_reduce(x), xs)
    assert torch.equal(xs[0], xs[1]) and xs[0][0].item() == 3.75
    hs = [torch.full((5,), 0.5, dtype=torch.float16), torch.full((5,), 0.25, dtype=torch.float16)]
    run_all(pair, lambda c, x: c.all_reduce(x, op="avg"), hs)
    assert hs[0].tolist() == hs[1].tolist() == [0.375] * 5
