"""Ring all-reduce across real peer processes: every dtype and op, odd sizes,
bit-identical results, exact values."""

import itertools
import math

import pytest

from harness import PeerGroup

DTYPES = ["f32", "f64", "f16", "bf16", "i8", "i16", "i32", "i64", "u8", "u16", "u32", "u64"]
OPS = ["sum", "avg", "min", "max", "prod"]
FLOAT_TOL = {"f64": 1e-9, "f32": 1e-4, "f16": 0.05, "bf16": 0.4}


def tolerance(dtype: str, op: str, n: int) -> float:
    if dtype not in FLOAT_TOL:
        return 0.0  # integers: exact
    if op in ("min", "max"):
        return 0.0  # no rounding at all
    scale = 4.0 ** n if op == "prod" else 4.0 * n
    return FLOAT_TOL[dtype] * max(1.0, scale / 16) * n


@pytest.mark.parametrize("n", [2, 3, 4, 5])
def test_every_dtype_and_op_is_exact_and_bit_identical(n):
    cases = [[d, o, c] for d, o, c in itertools.product(DTYPES, OPS, [1, 7, 1003])]
    big = [["f32", "sum", 1_000_003], ["f64", "avg", 1_000_003], ["bf16", "sum", 1_000_003],
           ["i32", "max", 1_000_003], ["u8", "prod", 1_000_003], ["f16", "avg", 1_000_003]]
    if n == 4:  # one group runs the large odd count for every dtype and op
        big = [[d, o, 1_000_003] for d, o in itertools.product(DTYPES, OPS)]
    cases += big
    with PeerGroup(n, "allreduce_matrix", {"cases": cases}, timeout=240) as g:
        out = g.results()
    members = out[0]["members"]
    assert len(members) == n and all(o["members"] == members for o in out)
    for k, (dtype, op, count) in enumerate(cases):
        got = [o["results"][k] for o in out]
        assert len({r["digest"] for r in got}) == 1, f"{dtype} {op} x{count}: results differ across peers"
        assert all(r["world"] == n for r in got)
        tol = tolerance(dtype, op, n)
        assert got[0]["err"] <= tol, f"{dtype} {op} x{count} with {n} peers: error {got[0]['err']} > {tol}"


@pytest.mark.parametrize("n", [2, 3, 5])
def test_direct_algorithm_is_exact_and_bit_identical(n):
    """The direct exchange (every member to every owner) gives the same
    guarantees as the ring: exact within the same bounds, identical bytes."""
    cases = [[d, o, c] for d, o, c in itertools.product(DTYPES, OPS, [1, 7, 1003])]
    cases += [["f32", "sum", 1_000_003], ["bf16", "avg", 1_000_003], ["i64", "prod", 1_000_003]]
    with PeerGroup(n, "allreduce_matrix", {"cases": cases, "algorithm": "direct"}, timeout=240) as g:
        out = g.results()
    for k, (dtype, op, count) in enumerate(cases):
        got = [o["results"][k] for o in out]
        assert len({r["digest"] for r in got}) == 1, f"{dtype} {op} x{count}: results differ across peers"
        assert all(r["world"] == n for r in got)
        # Each member sends 2(n-1)/n of the buffer, as in the ring (+ one descriptor per peer).
        esize = {"f64": 8, "i64": 8, "u64": 8, "f32": 4, "i32": 4, "u32": 4}.get(dtype, 2 if "16" in dtype else 1)
        if count == 1_000_003:
            assert abs(got[0]["tx"] - 2 * (n - 1) / n * count * esize) < 0.001 * count * esize, got[0]["tx"]
        tol = tolerance(dtype, op, n)
        assert got[0]["err"] <= tol, f"{dtype} {op} x{count} with {n} peers: error {got[0]['err']} > {tol}"


def test_four_concurrent_async_ops():
    with PeerGroup(3, "async", timeout=120) as g:
        out = g.results()
    for t in range(4):
        assert len({o["digests"][t] for o in out}) == 1
    assert all(o["worlds"] == [3, 3, 3, 3] for o in out)
