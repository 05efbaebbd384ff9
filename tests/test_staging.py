"""The CUDA staging pipeline (pccl_py._staging) on the CPU: its device
operations are replaced by a stand-in whose "stream" runs copies lazily, in
issue order, only when waited for; so a read before its copy is waited for
sees stale data and fails, and the log shows what overlaps what. The chunks
then go through real communicators."""

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import pccl_py as pc  # noqa: E402
from pccl_py import _staging  # noqa: E402
from local_group import close_all, make_group, run_all  # noqa: E402


class LazyStream:
    """CPU stand-in for _staging.CudaOps: d2h/h2d are queued (FIFO, one
    stream) and run when wait() reaches them or at end(); host buffers start
    as garbage."""

    def __init__(self):
        self.queue, self.log, self.n = [], [], 0

    def host_buffer(self, count, dtype):
        return torch.full((count,), 77, dtype=dtype)

    def begin(self):
        self.log.append(("begin",))

    def _issue(self, kind, dst, src):
        tok = self.n
        self.n += 1
        self.queue.append((tok, dst, src))
        self.log.append((kind, tok))
        return tok

    def d2h(self, dst, src):
        return self._issue("d2h", dst, src)

    def h2d(self, dst, src):
        return self._issue("h2d", dst, src)

    def _run_to(self, tok):
        while self.queue and self.queue[0][0] <= tok:
            _, dst, src = self.queue.pop(0)
            dst.copy_(src)

    def wait(self, tok):
        self.log.append(("wait", tok))
        self._run_to(tok)

    def end(self):
        self.log.append(("end",))
        self._run_to(self.n)


def test_pipeline_overlaps_the_next_copy_with_the_network_and_reuses_two_buffers():
    ops = LazyStream()
    src = torch.arange(10, dtype=torch.float32)
    dst = torch.zeros(10)
    seen = []

    def net(host):
        # While chunk k is on the network, the copy of chunk k+1 is issued and not yet run.
        seen.append((host.clone(), [kind for kind, *_ in ops.log].count("d2h"), len(ops.queue)))
        host.mul_(2)

    _staging.run_pipeline(ops, src, dst, 4, net)
    assert torch.equal(dst, src * 2)
    assert [s[0].tolist() for s in seen] == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]]
    assert [s[1] for s in seen] == [2, 3, 3]  # d2h(k+1) issued before net(k)
    assert [s[2] for s in seen] == [1, 2, 1]  # ... and still pending on the stream
    kinds = [e[0] for e in ops.log]
    assert kinds == ["begin", "d2h", "d2h", "wait", "h2d", "d2h", "wait", "h2d", "wait", "h2d", "end"]


def test_pipeline_of_one_chunk_and_of_an_empty_tensor():
    for n in (0, 3):
        ops = LazyStream()
        src = torch.arange(n, dtype=torch.int64)
        out = torch.zeros(n, dtype=torch.int64)
        _staging.run_pipeline(ops, src, out, 8, lambda h: h.add_(1))
        assert torch.equal(out, src + 1)


def test_staged_all_reduce_equals_the_cpu_op_bit_for_bit_at_two_peers():
    comms = make_group(2)
    try:
        g = torch.Generator().manual_seed(3)
        xs = [torch.randn(10_001, generator=g) * 1e3 for _ in comms]
        ref = [x.clone() for x in xs]
        run_all(comms, lambda c, x: c.all_reduce(x, op="avg"), ref)
        staged = [x.clone() for x in xs]
        infos = run_all(comms, lambda c, x: _staging.all_reduce(c, x, "avg", ops=LazyStream(), chunk_bytes=4000,
                                                                tag=5), staged)
        for x, r, info in zip(staged, ref, infos):
            assert torch.equal(x, r)
            assert info.world_size == 2 and info.attempts == 1
            assert info.tx_bytes >= 10_001 * 4 // 2  # summed over the 11 chunk ops
    finally:
        close_all(comms)


def test_staged_all_reduce_at_three_peers_equals_the_same_chunks_on_the_cpu():
    comms = make_group(3)
    try:
        g = torch.Generator().manual_seed(4)
        xs = [torch.randn(3000, generator=g) for _ in comms]
        staged = [x.clone() for x in xs]
        run_all(comms, lambda c, x: _staging.all_reduce(c, x, "sum", ops=LazyStream(), chunk_bytes=4096), staged)
        chunked = [x.clone() for x in xs]
        for lo in range(0, 3000, 1024):
            run_all(comms, lambda c, x: c.all_reduce(x[lo:lo + 1024], op="sum"), chunked)
        for x, r in zip(staged, chunked):
            assert torch.equal(x, r)
        assert all(torch.equal(staged[0], x) for x in staged)  # identical on every member
    finally:
        close_all(comms)


class LosesPeerAt:
    """A communicator whose all_reduce of chunk ``k`` raises PeerLostError
    (the chunks before it succeed, as on a real ring)."""

    def __init__(self, k):
        self.k, self.calls, self.topology = k, 0, 0

    def all_reduce(self, host, op, **kw):
        self.calls += 1
        if self.calls == self.k + 1:
            host.fill_(-1)  # backup=False: the core leaves a failed buffer undefined
            raise pc.PeerLostError("peer x lost")
        host.mul_(3)
        return pc.OpInfo(host.numel() * 4, host.numel() * 4, 2, 1)

    def update_topology(self):
        self.topology += 1


def test_failed_chunk_restores_the_whole_input_and_retry_redoes_every_chunk():
    x = torch.arange(100, dtype=torch.float32)
    comm = LosesPeerAt(2)
    with pytest.raises(pc.PeerLostError):
        _staging.all_reduce(comm, x, "sum", ops=LazyStream(), chunk_bytes=80)
    assert torch.equal(x, torch.arange(100, dtype=torch.float32))  # chunks 0, 1 were written back, then restored
    comm = LosesPeerAt(3)
    info = _staging.all_reduce(comm, x, "sum", ops=LazyStream(), chunk_bytes=80, retry=True)
    assert torch.equal(x, torch.arange(100, dtype=torch.float32) * 3)
    assert info.attempts == 2 and comm.topology == 1 and comm.calls == 3 + 1 + 5


def test_out_must_be_a_matching_device_tensor():
    with pytest.raises(pc.InvalidArgumentError, match="out must match"):
        _staging.all_reduce(LosesPeerAt(9), torch.zeros(4), "sum", out=torch.zeros(4), ops=LazyStream())


def test_cpu_tensors_and_numpy_are_not_staged():
    assert not _staging.is_device_tensor(torch.zeros(2))
    assert not _staging.is_device_tensor(np.zeros(2))
    assert not _staging.is_device_tensor(torch.zeros(2, device="meta"))
