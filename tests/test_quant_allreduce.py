"""Quantized ring all-reduce: bit-identical results across real peer
processes for every format, bytes on the wire shrink by the format's factor,
the error stays within the analytic bound, bad inputs fail on every member."""

import numpy as np
import pytest

import pccl_py as pc
from harness import PeerGroup
from local_group import close_all, make_group, run_all
from peer_main import quant_error_bound, quant_input

FORMATS = ["fp16", "bf16", "int8", "int4", "e3m0"]
DISTS = ["normal", "uniform", "heavy", "negative", "constant"]
BLOCK = 128
# Bytes per value on the wire / 4 (f32), per-block f32 scale included.
WIRE_FRACTION = {"fp16": 0.5, "bf16": 0.5, "int8": (1 + 4 / BLOCK) / 4, "int4": (0.5 + 4 / BLOCK) / 4,
                 "e3m0": (0.5 + 4 / BLOCK) / 4}
BIG = 600_000


@pytest.mark.parametrize("algorithm", ["ring", "direct"])
def test_parity_error_bound_and_bytes_across_processes(algorithm):
    n = 4
    cases = [[d, q, op, 20_011, False] for q in FORMATS for d in DISTS for op in ("sum", "avg")]
    cases += [["normal", q, "avg", 5_003, True] for q in ("int8", "int4", "e3m0")]  # stochastic rounding
    cases += [["normal", q, "sum", 1, False] for q in FORMATS]  # fewer elements than peers
    big = len(cases)
    cases += [["normal", None, "sum", BIG, False]] + [["normal", q, "sum", BIG, False] for q in FORMATS]
    # The ring's bound (n-1 quantized partial sums) also covers the direct
    # exchange, where each member's own values are quantized once.
    with PeerGroup(n, "quant_allreduce", {"cases": cases, "algorithm": algorithm}, timeout=120) as g:
        out = g.results()
    for k, (dist, quant, op, count, stoch) in enumerate(cases):
        got = [o["results"][k] for o in out]
        what = f"{quant} {op} {dist} x{count}{' stochastic' if stoch else ''}"
        assert len({r["digest"] for r in got}) == 1, f"{what}: results differ across peers"
        assert all(r["world"] == n for r in got)
        if quant is None:
            assert got[0]["err"] < 1e-3
            continue
        bound = quant_error_bound(quant, op, stoch, [quant_input(dist, count, i, k) for i in range(n)])
        assert got[0]["err"] <= bound, f"{what}: max abs error {got[0]['err']} > bound {bound}"
        if dist == "constant" and quant in ("int8", "int4", "e3m0"):
            # The sum is every block's absmax: exactly on the grid (up to the scale's rounding).
            assert got[0]["err"] <= 1e-5 * n * n, what
    dense = [o["results"][big] for o in out]
    for j, q in enumerate(FORMATS):
        for rank, o in enumerate(out):
            r = o["results"][big + 1 + j]
            for key in ("tx", "rx"):
                ratio = r[key] / dense[rank][key]
                assert abs(ratio - WIRE_FRACTION[q]) < 0.01 * WIRE_FRACTION[q] + 1e-4, \
                    f"{q} {key}: {r[key]} bytes vs dense {dense[rank][key]}: ratio {ratio:.4f}, " \
                    f"expected {WIRE_FRACTION[q]:.4f}"


@pytest.fixture(scope="module")
def group():
    comms = make_group(3, key="quant")
    yield comms
    close_all(comms)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_nan_or_inf_fails_on_every_member(group, bad):
    xs = [np.ones(10_000, np.float32) for _ in group]
    xs[1][1234] = bad
    kept = [x.copy() for x in xs]
    res = run_all(group, lambda c, x: c.all_reduce(x, op="avg", quant="int8"), xs)
    assert all(isinstance(r, pc.errors.InvalidArgumentError) for r in res), res
    word = "NaN" if np.isnan(bad) else "Inf"
    assert f"input element 1234 is {word}" in str(res[1])
    for x, k in zip(xs, kept):  # all or nothing: inputs unchanged
        assert np.array_equal(x, k, equal_nan=True)
    # The group is still usable afterwards.
    ys = [np.full(1000, float(i), np.float32) for i in range(3)]
    res = run_all(group, lambda c, y: c.all_reduce(y, op="sum", quant="int8"), ys)
    assert all(isinstance(r, pc.OpInfo) for r in res), res
    assert all(np.allclose(y, 3.0, atol=1e-5) for y in ys)


def test_mismatched_quant_fails_on_every_member(group):
    xs = [np.ones(5000, np.float32) for _ in group]
    quants = ["int8", "int4", "int8"]
    res = run_all(group, lambda c, x, q: c.all_reduce(x, quant=q), xs, quants)
    assert all(isinstance(r, pc.errors.InvalidUsageError) for r in res), res
    assert any("int4/128" in str(r) and "int8/128" in str(r) for r in res)
    res = run_all(group, lambda c, x, b: c.all_reduce(x, quant="int8", quant_block=b), xs, [64, 64, 128])
    assert all(isinstance(r, pc.errors.InvalidUsageError) for r in res), res


@pytest.mark.parametrize("kw, msg", [
    ({"x": np.ones(8, np.float64), "quant": "int8"}, "needs f32 data, got f64"),
    ({"x": np.ones(8, np.float32), "quant": "int8", "op": "max"}, "supports only sum and avg, got max"),
    ({"x": np.ones(8, np.float32), "quant": "int8", "op": "prod"}, "supports only sum and avg, got prod"),
    ({"x": np.ones(8, np.float32), "quant": "int8", "quant_block": 0}, "quant_block must be >= 1"),
    ({"x": np.ones(8, np.float32), "quant": "int5"}, "unknown quant 'int5'"),
])
def test_bad_options_are_rejected_locally(group, kw, msg):
    kw = dict(kw)
    x = kw.pop("x")
    with pytest.raises(pc.errors.InvalidArgumentError, match=msg):
        group[0].all_reduce(x, **kw)


def test_async_quantized_matches_across_members(group):
    xs = [quant_input("normal", 50_000, i, 99) for i in range(3)]
    res = run_all(group, lambda c, x: c.all_reduce_async(x, op="avg", quant="bf16", tag=5).wait(), xs)
    assert all(isinstance(r, pc.OpInfo) for r in res), res
    assert xs[0].tobytes() == xs[1].tobytes() == xs[2].tobytes()
