"""The recursive-doubling all-reduce and the automatic per-op choice
(algorithm="auto", the default): exact, bit-identical results for every
dtype and op at power-of-two and other group sizes, latency in log2(n) hops
(not the ring's 2(n-1)), the same failure guarantees, and the choice itself.
Whole groups run in this process over the in-memory transport; the TCP path
is covered by test_allreduce.py's matrix (auto at 4 peers) and the churn
tests (their small ops run doubling)."""

from __future__ import annotations

import itertools
import threading
import time

import numpy as np
import pytest

import pccl_py as pc
from pccl_py import _core, testing
from local_group import close_all, make_group, run_all
from peer_main import digest, make_input, max_error
from test_allreduce import DTYPES, OPS, tolerance

MEM = ["/memory/0"]


@pytest.fixture(autouse=True)
def _no_faults_left():
    yield
    testing.reset()


def group(n: int, timeout: float = 5.0) -> list[pc.Communicator]:
    return make_group(n, key="dbl", timeout=timeout, listen=MEM)


def f32_inputs(n: int, count: int, seed: int = 0) -> list[np.ndarray]:
    return [np.random.default_rng(seed * 100 + i).uniform(-4, 4, count).astype(np.float32) for i in range(n)]


@pytest.mark.parametrize("n", [2, 3, 5, 6, 8])
def test_every_dtype_and_op_is_exact_and_bit_identical(n):
    """Spare ranks fold in (n = 3, 5, 6) or not (2, 8); pieces of 1 KiB cut
    the larger buffers in many frames."""
    comms = make_group(n, key="dbl", timeout=10.0, listen=MEM, chunk_bytes=1024)
    try:
        cases = [[d, o, c] for d, o, c in itertools.product(DTYPES, OPS, [1, 7, 1003])]
        for k, (dtype, op, count) in enumerate(cases):
            xs = [make_input(dtype, count, i, k) for i in range(n)]
            infos = run_all(comms, lambda c, x: c.all_reduce(x, op=op, algorithm="doubling"), xs)
            assert all(isinstance(i, pc.OpInfo) and i.world_size == n for i in infos), (dtype, op, count, infos)
            assert len({digest(x) for x in xs}) == 1, f"{dtype} {op} x{count}: results differ across members"
            err = max_error(dtype, op, count, n, k, xs[0])
            assert err <= tolerance(dtype, op, n), f"{dtype} {op} x{count} with {n}: error {err}"
    finally:
        close_all(comms)


def test_min_max_with_nan_and_signed_zeros_are_bit_identical():
    """op(a, b) != op(b, a) for min/max of NaN or -0.0/+0.0: both partners
    of a step must evaluate the same expression."""
    n = 4
    comms = group(n)
    try:
        for op in ["min", "max", "sum"]:
            xs = [np.array([np.nan, 0.0, -0.0, 1.0, np.nan], np.float32) if i % 2 else
                  np.array([1.0, -0.0, 0.0, np.nan, -np.nan], np.float32) for i in range(n)]
            run_all(comms, lambda c, x: c.all_reduce(x, op=op, algorithm="doubling"), xs)
            assert len({x.tobytes() for x in xs}) == 1, op
    finally:
        close_all(comms)


def test_an_empty_buffer_and_a_world_of_one():
    comms = group(3)
    try:
        xs = [np.zeros(0, np.float32) for _ in comms]
        infos = run_all(comms, lambda c, x: c.all_reduce(x, algorithm="doubling"), xs)
        assert all(isinstance(i, pc.OpInfo) for i in infos), infos
    finally:
        close_all(comms)
    solo = pc.Communicator(run_key="dbl", listen=MEM)
    try:
        x = np.arange(5, dtype=np.float32)
        assert solo.all_reduce(x, algorithm="doubling").world_size == 1
        assert x.tolist() == [0, 1, 2, 3, 4]
    finally:
        solo.close()


def test_latency_grows_with_log2_n_hops_not_2n():
    """8 members, every link delayed: doubling needs 3 one-way delays (+ the
    commit's vote), the ring 14."""
    n, delay = 8, 0.1
    comms = group(n, timeout=10.0)
    try:
        xs = f32_inputs(n, 4096)
        for algo in ["doubling", "ring"]:  # warm: every data link is dialed
            run_all(comms, lambda c, x: c.all_reduce(x.copy(), algorithm=algo), xs)
        for a, b in itertools.permutations(comms, 2):
            testing.set_delay(a, b, delay)
        took = {}
        for algo in ["doubling", "ring"]:
            ys = [x.copy() for x in xs]
            t0 = time.monotonic()
            res = run_all(comms, lambda c, y: c.all_reduce(y, algorithm=algo), ys)
            took[algo] = time.monotonic() - t0
            assert not any(isinstance(r, Exception) for r in res), res
            assert len({y.tobytes() for y in ys}) == 1
        assert 3 * delay <= took["doubling"] < 7 * delay, took
        assert took["ring"] >= 14 * delay, took
    finally:
        close_all(comms)


@pytest.mark.parametrize("n, victim", [(5, 0), (5, 3), (8, 6)])
def test_a_peer_killed_mid_op_fails_it_on_every_survivor_then_they_continue(n, victim):
    """A spare (rank 0 of 5), a folding member (3 of 5) or a plain one dies
    while the op is in flight: every survivor fails it with PeerLostError,
    its input restored, and the survivors then reduce exactly."""
    comms = group(n, timeout=3.0)
    try:
        xs = f32_inputs(n, 3000, seed=3)
        run_all(comms, lambda c, x: c.all_reduce(x.copy(), algorithm="doubling"), xs)  # warm
        for a, b in itertools.permutations(comms, 2):
            testing.set_delay(a, b, 0.15)
        originals = [x.copy() for x in xs]
        dead = comms[victim]
        survivors = [c for i, c in enumerate(comms) if i != victim]
        mine = [x for i, x in enumerate(xs) if i != victim]
        killer = threading.Timer(0.2, testing.kill, args=(dead,))
        killer.start()
        t0 = time.monotonic()
        res = run_all(survivors, lambda c, x: c.all_reduce(x, algorithm="doubling"), mine)
        killer.join()
        assert all(isinstance(r, pc.PeerLostError) for r in res), res
        assert time.monotonic() - t0 < 2 * 3.0 + 1
        assert [x.tobytes() for x in mine] == [o.tobytes() for i, o in enumerate(originals) if i != victim]
        testing.reset()
        run_all(survivors, lambda c: c.update_topology())
        assert all(c.world_size == n - 1 for c in survivors)
        res = run_all(survivors, lambda c, x: c.all_reduce(x, algorithm="doubling"), mine)
        assert all(isinstance(r, pc.OpInfo) and r.world_size == n - 1 for r in res), res
        want = np.sum([o.astype(np.float64) for i, o in enumerate(originals) if i != victim], axis=0)
        assert len({x.tobytes() for x in mine}) == 1
        assert np.max(np.abs(mine[0] - want)) < 1e-4 * n * 4
    finally:
        close_all([c for i, c in enumerate(comms) if i != victim])


def test_algorithm_mismatch_fails_everywhere():
    comms = group(4)
    try:
        xs = f32_inputs(4, 10)
        errs = run_all(comms, lambda c, x: c.all_reduce(x, algorithm="ring" if x is xs[2] else "doubling"), xs)
        assert all(isinstance(e, pc.InvalidUsageError) for e in errs), errs
        assert "mismatch" in str(errs[2]) and "(sum, doubling)" in "".join(str(e) for e in errs)
        assert_works = run_all(comms, lambda c, x: c.all_reduce(x), xs)
        assert all(isinstance(i, pc.OpInfo) for i in assert_works), assert_works
    finally:
        close_all(comms)


def choose(nbytes: int, world: int, algorithm: str = "auto", quant: str = "none") -> str:
    opts = _core.AllReduceOpts(algorithm=getattr(_core.Algorithm, algorithm), quant=getattr(_core.Quant, quant))
    return _core.choose_algorithm(nbytes, world, opts).name


def test_auto_picks_doubling_for_small_dense_buffers_and_the_ring_or_direct_for_large_ones():
    assert _core.AllReduceOpts().algorithm == _core.Algorithm.auto  # the default
    for world in [2, 4, 8, 16, 32, 64]:
        wide = "direct" if world >= 24 else "ring"  # 2 latency steps instead of 2(n-1), same bytes
        assert choose(4, world) == "doubling"
        assert choose(64 << 10, world) == "doubling"
        assert choose(16 << 20, world) == wide
        assert choose(64 << 10, world, quant="int8") == wide  # doubling does not quantize
    assert choose(16 << 20, 23) == "ring" and choose(16 << 20, 24) == "direct"
    assert choose(1 << 20, 32) == "doubling" and choose((1 << 20) + 4, 32) == "direct"  # the size cap
    assert choose(256 << 10, 3) == "ring"  # 3 steps of the whole buffer vs 4 of 2/3 of it
    assert choose(4, 1) == "ring"  # nothing travels anyway
    for algo in ["ring", "direct", "doubling"]:  # an explicit choice is kept
        assert choose(4, 8, algo) == choose(16 << 20, 8, algo) == algo


def test_doubling_with_quantization_is_refused_before_anything_is_sent():
    comms = group(2)
    try:
        with pytest.raises(pc.InvalidArgumentError, match="doubling algorithm does not quantize"):
            comms[0].all_reduce(np.ones(8, np.float32), quant="int8", algorithm="doubling")
        assert comms[0].algorithm_for(64 << 10) == "doubling"
        assert comms[0].algorithm_for(64 << 10, quant="int8") == "ring"
        assert comms[0].algorithm_for(64 << 20, world_size=8) == "ring"
        assert comms[0].algorithm_for(64 << 20, world_size=32) == "direct"
    finally:
        close_all(comms)
