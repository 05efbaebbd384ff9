"""Ring and direct all-reduce across real peer processes (TCP, the secure
channel, several streams): every dtype and op, odd sizes, bit-identical
results, exact values. The same matrix for other group sizes, and the async
ops, run in one process over the in-memory transport
(tests/test_memory_transport.py), with the case lists and checks below."""

import itertools

import pytest

from harness import PeerGroup

DTYPES = ["f32", "f64", "f16", "bf16", "i8", "i16", "i32", "i64", "u8", "u16", "u32", "u64"]
OPS = ["sum", "avg", "min", "max", "prod"]
FLOAT_TOL = {"f64": 1e-9, "f32": 1e-4, "f16": 0.05, "bf16": 0.4}
BIG = 1_000_003


def tolerance(dtype: str, op: str, n: int) -> float:
    if dtype not in FLOAT_TOL:
        return 0.0  # integers: exact
    if op in ("min", "max"):
        return 0.0  # no rounding at all
    scale = 4.0 ** n if op == "prod" else 4.0 * n
    return FLOAT_TOL[dtype] * max(1.0, scale / 16) * n


def ring_cases(every_big: bool) -> list:
    """Every dtype and op at 1, 7 and 1003 elements, plus large odd counts
    (for every dtype and op when `every_big`, else a sample)."""
    cases = [[d, o, c] for d, o, c in itertools.product(DTYPES, OPS, [1, 7, 1003])]
    if every_big:
        return cases + [[d, o, BIG] for d, o in itertools.product(DTYPES, OPS)]
    return cases + [["f32", "sum", BIG], ["f64", "avg", BIG], ["bf16", "sum", BIG],
                    ["i32", "max", BIG], ["u8", "prod", BIG], ["f16", "avg", BIG]]


def direct_cases() -> list:
    cases = [[d, o, c] for d, o, c in itertools.product(DTYPES, OPS, [1, 7, 1003])]
    return cases + [["f32", "sum", BIG], ["bf16", "avg", BIG], ["i64", "prod", BIG]]


def check_matrix(cases: list, out: list, n: int, direct: bool = False) -> None:
    """`out[member][case]` = {"digest", "world", "err", "tx"} of every member."""
    for k, (dtype, op, count) in enumerate(cases):
        got = [o[k] for o in out]
        assert len({r["digest"] for r in got}) == 1, f"{dtype} {op} x{count}: results differ across peers"
        assert all(r["world"] == n for r in got)
        if direct and count == BIG:
            # Each member sends 2(n-1)/n of the buffer, as in the ring (+ one descriptor per peer).
            esize = {"f64": 8, "i64": 8, "u64": 8, "f32": 4, "i32": 4, "u32": 4}.get(dtype, 2 if "16" in dtype else 1)
            assert abs(got[0]["tx"] - 2 * (n - 1) / n * count * esize) < 0.001 * count * esize, got[0]["tx"]
        tol = tolerance(dtype, op, n)
        assert got[0]["err"] <= tol, f"{dtype} {op} x{count} with {n} peers: error {got[0]['err']} > {tol}"


def test_every_dtype_and_op_is_exact_and_bit_identical():
    n, cases = 4, ring_cases(every_big=True)
    with PeerGroup(n, "allreduce_matrix", {"cases": cases}, timeout=240) as g:
        out = g.results()
    members = out[0]["members"]
    assert len(members) == n and all(o["members"] == members for o in out)
    check_matrix(cases, [o["results"] for o in out], n)


def test_direct_algorithm_is_exact_and_bit_identical():
    """The direct exchange (every member to every owner) gives the same
    guarantees as the ring: exact within the same bounds, identical bytes."""
    n, cases = 3, direct_cases()
    with PeerGroup(n, "allreduce_matrix", {"cases": cases, "algorithm": "direct"}, timeout=240) as g:
        out = g.results()
    check_matrix(cases, [o["results"] for o in out], n, direct=True)
