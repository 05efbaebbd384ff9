"""Quantizers: exact sizes, error within the analytic bound, reference bits for
fp16/bf16, nearest-grid rounding for int/e3m0, stochastic rounding, bad input."""
import numpy as np
import pytest
import torch

from pccl_py import _core

KINDS = ["none", "fp16", "bf16", "int8", "int4", "e3m0"]
BLOCKED = ["int8", "int4", "e3m0"]


def _inputs():
    rng = np.random.default_rng(1234)
    n = 4099  # not a multiple of any block size used here
    return {
        "normal": rng.standard_normal(n),
        "uniform": rng.uniform(-3, 5, n),
        "student_t2": rng.standard_t(2, n),
        "cauchy": rng.standard_cauchy(n),
        "all_negative": -np.abs(rng.standard_normal(n)) - 0.5,
        "constant": np.full(n, 3.7),
        "constant_negative": np.full(n, -1e-3),
        "zeros": np.zeros(n),
        "tiny": rng.standard_normal(n) * 1e-39,  # f32 subnormals
        "huge": rng.uniform(-3e38, 3e38, n),
        "mixed_scales": rng.standard_normal(n) * 10.0 ** rng.integers(-20, 20, n),
        "one_spike": np.where(np.arange(n) == 777, 1e6, rng.standard_normal(n) * 1e-3),
    }


INPUTS = {k: v.astype(np.float32) for k, v in _inputs().items()}


def roundtrip(x, kind, block=128, stochastic=False, seed=0):
    b = _core.quantize(x, kind, block, stochastic, seed)
    assert len(b) == _core.encoded_size(x.size, kind, block)
    return b, _core.dequantize(b, x.size, kind, block)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("name", sorted(INPUTS))
@pytest.mark.parametrize("stochastic", [False, True])
def test_error_within_bound(kind, name, stochastic):
    x = INPUTS[name]
    for block in (128, 7, 1):
        _, y = roundtrip(x, kind, block, stochastic, seed=5)
        err = np.abs(y.astype(np.float64) - x.astype(np.float64)).max()
        bound = _core.max_abs_error_bound(x, kind, block, stochastic)
        assert err <= bound, (kind, name, block, err, bound)
        if kind in BLOCKED:
            # The bound itself is the textbook one: half (RTN) or one (stochastic)
            # grid step of the block's scale, plus f32 slack.
            nb = -(-x.size // block)
            amax = np.array([np.abs(x[i * block:(i + 1) * block]).max() for i in range(nb)], np.float64)
            step = {"int8": amax / 127, "int4": amax / 7, "e3m0": amax / 2}[kind]
            slack = amax.max() * 2.0**-21 + 1e-44  # f32 decode rounding
            assert bound <= step.max() * (1.0 if stochastic else 0.5) * (1 + 1e-6) + slack


def test_sizes_match_expected_ratios():
    n = 1 << 20
    assert _core.encoded_size(n, "none") == 4 * n
    assert _core.encoded_size(n, "fp16") == _core.encoded_size(n, "bf16") == 2 * n
    assert _core.encoded_size(n, "int8", 128) == n + 4 * (n // 128)
    assert _core.encoded_size(n, "int4", 128) == n // 2 + 4 * (n // 128)
    assert _core.encoded_size(n, "e3m0", 128) == n // 2 + 4 * (n // 128)
    assert _core.encoded_size(5, "int4", 2) == 3 + 4 * 3
    ratio = lambda k: 4 * n / _core.encoded_size(n, k, 128)
    assert 3.87 < ratio("int8") < 3.89  # 4x minus 1/32 scale overhead
    assert 7.5 < ratio("int4") < 7.6 and ratio("e3m0") == ratio("int4")  # 8x minus 4/32


def test_fp16_matches_ieee_round_to_nearest_even():
    rng = np.random.default_rng(7)
    bits = rng.integers(0, 2**32, 200_000, dtype=np.uint64).astype(np.uint32)
    x = bits.view(np.float32)
    x = x[np.isfinite(x) & (np.abs(x) < 65504)]
    x = np.concatenate([x, np.float32([0.0, -0.0, 65504, -65504, 6.1035156e-05, 5.9604645e-08, 2.9802322e-08,
                                       2.9802326e-08, 1.0009765625, 1.00048828125, 1.00146484375])])
    b = _core.quantize(x, "fp16")
    assert np.array_equal(np.frombuffer(b, np.uint16), x.astype(np.float16).view(np.uint16))
    y = _core.dequantize(b, x.size, "fp16")
    assert np.array_equal(y, x.astype(np.float16).astype(np.float32))


def test_fp16_saturates_instead_of_inf():
    x = np.float32([65519.0, 65520.0, 1e30, -3e38])
    y = _core.dequantize(_core.quantize(x, "fp16"), 4, "fp16")
    assert y.tolist() == [65504.0, 65504.0, 65504.0, -65504.0]


def test_bf16_matches_torch_round_to_nearest_even():
    rng = np.random.default_rng(8)
    bits = rng.integers(0, 2**32, 200_000, dtype=np.uint64).astype(np.uint32)
    x = bits.view(np.float32)
    x = x[np.isfinite(x) & (np.abs(x) < 3.38e38)]
    b = _core.quantize(x, "bf16")
    ref = torch.from_numpy(x.copy()).to(torch.bfloat16).view(torch.int16).numpy().view(np.uint16)
    assert np.array_equal(np.frombuffer(b, np.uint16), ref)
    y = _core.dequantize(b, x.size, "bf16")
    assert np.array_equal(y, torch.from_numpy(x.copy()).to(torch.bfloat16).float().numpy())


@pytest.mark.parametrize("kind,qmax", [("int8", 127), ("int4", 7)])
def test_int_codes_are_nearest_on_the_block_grid(kind, qmax):
    x = INPUTS["student_t2"]
    block = 64
    b, y = roundtrip(x, kind, block)
    nb = -(-x.size // block)
    scales = np.frombuffer(b[:4 * nb], np.float32)
    s = np.repeat(scales, block)[: x.size]
    raw = np.frombuffer(b[4 * nb:], np.uint8)
    if kind == "int8":
        codes = raw.view(np.int8).astype(np.int64)
    else:
        nib = np.stack([raw & 15, raw >> 4], axis=1).reshape(-1)[: x.size].astype(np.int64)
        codes = np.where(nib >= 8, nib - 16, nib)
    assert np.abs(codes).max() == qmax  # the absmax element uses the full range
    assert np.array_equal(y, (codes.astype(np.float32) * s).astype(np.float32))
    assert np.all(np.abs(x.astype(np.float64) / s - codes) <= 0.5 + 2e-5)  # nearest (f32 arithmetic)


def test_e3m0_is_nearest_power_of_two_grid():
    x = INPUTS["normal"]
    block = 32
    b, y = roundtrip(x, "e3m0", block)
    nb = -(-x.size // block)
    scales = np.frombuffer(b[:4 * nb], np.float32)
    for i in range(nb):
        xs, ys, s = x[i * block:(i + 1) * block], y[i * block:(i + 1) * block], scales[i]
        assert s == np.abs(xs).max()
        grid = np.concatenate([[0.0], s * 2.0 ** -np.arange(7)])
        grid = np.concatenate([-grid[1:], grid]).astype(np.float64)
        assert set(ys.tolist()) <= set(grid.astype(np.float32).tolist())
        best = np.abs(xs[:, None].astype(np.float64) - grid[None, :]).min(axis=1)
        assert np.allclose(np.abs(ys.astype(np.float64) - xs), best, rtol=0, atol=1e-7 * s)


def test_e3m0_exact_on_powers_of_two_and_signs():
    # scale 8: grid {0, 0.125, 0.25, ..., 8}; a tie goes toward zero.
    x = np.float32([-8, 4, -2, 1, 0.5, -0.25, 0.125, 0, 1 / 16, 0.01, -0.1, 3.0, 2.9])
    y = _core.dequantize(_core.quantize(x, "e3m0", 128), x.size, "e3m0", 128)
    assert y.tolist() == [-8, 4, -2, 1, 0.5, -0.25, 0.125, 0, 0, 0, -0.125, 2, 2]


@pytest.mark.parametrize("kind", BLOCKED)
def test_stochastic_rounding_unbiased_and_reproducible(kind):
    n = 128 * 2000
    x = np.full(n, 0.3, np.float32)
    x[::128] = 1.0  # fixes every block's scale to 1
    b1 = _core.quantize(x, kind, 128, True, 42)
    assert b1 == _core.quantize(x, kind, 128, True, 42)
    assert b1 != _core.quantize(x, kind, 128, True, 43)
    y = _core.dequantize(b1, n, kind, 128)
    body = np.ones(n, bool)
    body[::128] = False
    vals = y[body].astype(np.float64)
    step = {"int8": 1 / 127, "int4": 1 / 7, "e3m0": 0.25}[kind]
    assert len(set(vals.tolist())) == 2  # only the two neighbours of 0.3
    sigma = step / 2 / np.sqrt(vals.size)
    assert abs(vals.mean() - 0.3) < 5 * sigma
    rtn = _core.dequantize(_core.quantize(x, kind, 128), n, kind, 128)[body]
    assert len(set(rtn.tolist())) == 1


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_rejected_with_clear_error(kind, bad):
    x = np.ones(300, np.float32)
    x[257] = bad
    with pytest.raises(ValueError, match=r"element 257 is (NaN|Inf)"):
        _core.quantize(x, kind)
    with pytest.raises(ValueError, match=r"element 257"):
        _core.max_abs_error_bound(x, kind)


@pytest.mark.parametrize("kind", KINDS)
def test_empty_and_single(kind):
    e = np.zeros(0, np.float32)
    assert _core.quantize(e, kind) == b"" and _core.encoded_size(0, kind) == 0
    assert _core.dequantize(b"", 0, kind).size == 0
    for v in (-5.0, 1e-30, 0.0, 7e37):
        x = np.float32([v])
        _, y = roundtrip(x, kind)
        assert abs(float(y[0]) - float(x[0])) <= _core.max_abs_error_bound(x, kind)
        if kind in ("none", "e3m0"):  # the scale is the absmax itself
            assert y[0] == x[0]


def test_bad_arguments():
    x = np.ones(10, np.float32)
    with pytest.raises(ValueError, match="unknown quantization kind 'int3'"):
        _core.quantize(x, "int3")
    with pytest.raises(ValueError, match="block size"):
        _core.quantize(x, "int8", 0)
    with pytest.raises(ValueError, match="needs"):
        _core.dequantize(b"\0" * 5, 10, "int8")


@pytest.mark.parametrize("kind", KINDS)
def test_huge_roundtrip(kind):
    rng = np.random.default_rng(3)
    x = rng.standard_normal(10_000_000, dtype=np.float32)
    _, y = roundtrip(x, kind, 256)
    assert np.abs(y - x).max() <= _core.max_abs_error_bound(x, kind, 256)


def test_fp16_decode_every_code():
    h = np.arange(65536, dtype=np.uint32).astype(np.uint16)
    ref = h.view(np.float16).astype(np.float32)
    got = _core.dequantize(h.tobytes(), h.size, "fp16")
    finite = np.isfinite(ref)
    assert np.array_equal(got[finite].view(np.uint32), ref[finite].view(np.uint32))
    assert np.array_equal(np.isinf(got), np.isinf(ref)) and np.array_equal(np.isnan(got), np.isnan(ref))


@pytest.mark.parametrize("kind", ["int8", "int4"])
@pytest.mark.parametrize("stochastic", [False, True])
def test_values_near_flt_max_decode_finite_within_the_bound(kind, stochastic):
    """fuzz_quantize found int8 blocks whose max is FLT_MAX decoding to Inf
    (the rounded-up scale times 127 overflowed f32)."""
    big = np.finfo(np.float32).max
    x = np.array([big, -big, big / 3, 1.0, 0.0, np.nextafter(big, 0, dtype=np.float32)], np.float32)
    y = _core.dequantize(_core.quantize(x, kind, 4, stochastic, 7), x.size, kind, 4)
    assert np.all(np.isfinite(y))
    bound = _core.max_abs_error_bound(x, kind, 4, stochastic)
    assert np.all(np.abs(y.astype(np.float64) - x.astype(np.float64)) <= bound)


@pytest.mark.parametrize("kind", ["fp16", "bf16"])
def test_saturation_error_bound_is_not_an_ulp_short(kind):
    """fuzz_quantize found the fp16 saturation bound of -0x1.000416p+39 one
    f32 ulp below the real error (the f32 subtraction rounded down)."""
    for v in ("-0x1.000416p+39", "0x1.fffffep+127", "0x1.234567p+100"):
        x = np.array([float.fromhex(v)], np.float32)  # alone: its own bound is the block's
        y = _core.dequantize(_core.quantize(x, kind), x.size, kind)
        bound = _core.max_abs_error_bound(x, kind)
        assert abs(float(y[0]) - float(x[0])) <= bound, (v, y, bound)
