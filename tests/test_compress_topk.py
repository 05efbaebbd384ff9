"""Top-k selection, the sparse set wire format and the rank-ordered sparse sum."""
import numpy as np
import pytest

from pccl_py import _core


def exact_topk_indices(x, k):
    order = np.lexsort((np.arange(x.size), -np.abs(x)))  # by |x| desc, then index
    return np.sort(order[:k])


@pytest.mark.parametrize("n,density", [(1, 0.001), (10, 0.25), (1000, 0.01), (50_000, 0.001)])
def test_small_n_is_exact(n, density):
    x = np.random.default_rng(n).standard_normal(n).astype(np.float32)
    idx, vals = _core.topk_select(x, density)
    k = _core.topk_target(density, n)
    assert k == max(1, int(np.ceil(density * n)))
    assert np.array_equal(idx, exact_topk_indices(x, k))
    assert np.array_equal(vals, x[idx])


def _check_threshold_property(x, idx, k):
    assert 0.8 * k <= idx.size <= 1.3 * k, (idx.size, k)
    assert np.all(np.diff(idx) > 0)
    mask = np.zeros(x.size, bool)
    mask[idx] = True
    if (~mask).any():
        assert np.abs(x[mask]).min() >= np.abs(x[~mask]).max()


@pytest.mark.parametrize("dist", ["normal", "cauchy", "uniform", "sparse_grad", "constant"])
@pytest.mark.parametrize("density", [0.001, 0.01, 0.1])
def test_sampled_threshold_count_within_bounds(dist, density):
    rng = np.random.default_rng(11)
    n = 1_000_003
    x = {"normal": lambda: rng.standard_normal(n),
         "cauchy": lambda: rng.standard_cauchy(n),
         "uniform": lambda: rng.uniform(-1, 1, n),
         "sparse_grad": lambda: rng.standard_normal(n) * (rng.random(n) < 0.02),
         "constant": lambda: np.full(n, -2.0)}[dist]().astype(np.float32)
    for seed in (0, 1):
        idx, vals = _core.topk_select(x, density, seed, 0.01)
        _check_threshold_property(x, idx, _core.topk_target(density, n))
        assert np.array_equal(vals, x[idx])
    again, _ = _core.topk_select(x, density, 1, 0.01)
    assert np.array_equal(idx, again)  # deterministic for a seed


def test_huge_input():
    x = np.random.default_rng(2).standard_normal(10_000_000, dtype=np.float32)
    idx, vals = _core.topk_select(x, 0.001, 0, 0.001)
    _check_threshold_property(x, idx, 10_000)


def test_topk_rejects_bad_input():
    x = np.ones(100, np.float32)
    x[3] = np.nan
    with pytest.raises(ValueError, match="element 3 is NaN"):
        _core.topk_select(x, 0.1)
    with pytest.raises(ValueError, match="density"):
        _core.topk_select(np.ones(3, np.float32), 0.0)
    with pytest.raises(ValueError, match="sample_rate"):
        _core.topk_select(np.ones(3, np.float32), 0.5, 0, 2.0)
    idx, vals = _core.topk_select(np.zeros(0, np.float32), 0.5)
    assert idx.size == 0 and vals.size == 0


def test_sparse_roundtrip_f32_and_fp16():
    rng = np.random.default_rng(5)
    n = 1 << 22
    idx = np.sort(rng.choice(n, 5000, replace=False)).astype(np.int64)
    vals = (rng.standard_normal(5000) * 10).astype(np.float32)
    b = _core.sparse_encode(idx, vals, n)
    i2, v2, n2 = _core.sparse_decode(b)
    assert n2 == n and np.array_equal(i2, idx) and np.array_equal(v2, vals)
    # 4-byte header + 2 varints + (<= 3-byte gaps + 4-byte values)
    assert len(b) <= 4 + 10 + 5000 * 7
    b16 = _core.sparse_encode(idx, vals, n, True)
    i3, v3, _ = _core.sparse_decode(b16)
    assert np.array_equal(i3, idx) and np.array_equal(v3, vals.astype(np.float16).astype(np.float32))
    assert len(b16) == len(b) - 2 * 5000
    for i, v, n in [([], [], 0), ([], [], 10), ([0], [1.5], 1), ([2**40], [-1.0], 2**40 + 1)]:
        got = _core.sparse_decode(_core.sparse_encode(np.array(i, np.int64), np.array(v, np.float32), n))
        assert got[0].tolist() == i and got[1].tolist() == v and got[2] == n


def test_sparse_encode_rejects_bad_sets():
    v = np.ones(3, np.float32)
    with pytest.raises(ValueError, match="strictly ascending"):
        _core.sparse_encode(np.array([1, 1, 2]), v, 10)
    with pytest.raises(ValueError, match=">= n"):
        _core.sparse_encode(np.array([1, 2, 10]), v, 10)
    with pytest.raises(ValueError, match="NaN"):
        _core.sparse_encode(np.array([1, 2, 3]), np.float32([1, np.nan, 2]), 10)
    with pytest.raises(ValueError, match="differ in length"):
        _core.sparse_encode(np.array([1, 2]), v, 10)


def _header(n, count, flags=0):
    def varint(v):
        out = bytearray()
        while v >= 0x80:
            out.append((v & 0x7F) | 0x80)
            v >>= 7
        out.append(v)
        return bytes(out)
    return b"PS\x01" + bytes([flags]) + varint(n) + varint(count)


@pytest.mark.parametrize("blob,match", [
    (b"", "bad magic"),
    (b"XS\x01\x00\x05\x00", "bad magic"),
    (b"PS\x02\x00\x05\x00", "version"),
    (b"PS\x01\x04\x05\x00", "flags"),
    (_header(5, 6) + b"\x00" * 40, "exceeds n"),
    (_header(10, 2) + b"\x03\x00" + b"\0" * 8, "not strictly ascending"),
    (_header(10, 2) + b"\x03\x07" + b"\0" * 8, "out of range"),
    (_header(10, 1) + b"\x0a" + b"\0" * 4, "out of range"),
    (_header(10, 1) + b"\x01" + b"\0" * 5, "value section"),
    (_header(10, 1) + b"\x01" + b"\0" * 3, "truncated"),
    (_header(1 << 60, 1 << 40) + b"\x01" * 10, "truncated"),
    (_header(10, 1) + b"\xff" * 11, "varint|truncated"),
    (_header(10, 1) + b"\x01" + b"\x00\x00\xc0\x7f", "non-finite"),
])
def test_sparse_decode_rejects_malformed(blob, match):
    with pytest.raises(ValueError, match=match):
        _core.sparse_decode(blob)


def test_sparse_decode_never_crashes_on_garbage():
    rng = np.random.default_rng(9)
    good = _core.sparse_encode(np.array([0, 5, 900, 70000]), np.float32([1, -2, 3, 4]), 1 << 20, False)
    for cut in range(len(good)):
        with pytest.raises(ValueError):
            _core.sparse_decode(good[:cut])
    for _ in range(3000):
        b = bytearray(good)
        for _ in range(rng.integers(1, 4)):
            b[rng.integers(len(b))] = rng.integers(256)
        try:
            idx, vals, n = _core.sparse_decode(bytes(b))
        except ValueError:
            continue
        assert np.all(np.diff(idx) > 0) and (idx.size == 0 or idx[-1] < n) and np.isfinite(vals).all()


@pytest.mark.parametrize("world", [1, 3, 8])
def test_sparse_sum_equals_dense_sum_in_rank_order(world):
    rng = np.random.default_rng(world)
    n = 100_000
    blobs, dense = [], []
    for r in range(world):
        x = (rng.standard_normal(n) * 10.0 ** rng.uniform(-3, 3)).astype(np.float32)
        idx, vals = _core.topk_select(x, 0.01, r)
        blobs.append(_core.sparse_encode(idx, vals, n, r % 2 == 1))
        d = np.zeros(n, np.float32)
        i2, v2, _ = _core.sparse_decode(blobs[-1])
        d[i2] = v2
        dense.append(d)
    expected = np.zeros(n, np.float32)
    for d in dense:  # f32 additions in rank order: the same operations as sparse_sum
        expected += d
    got = _core.sparse_sum(blobs, n)
    assert got.dtype == np.float32 and np.array_equal(got, expected)
    assert np.array_equal(got.view(np.uint32), _core.sparse_sum(blobs, n).view(np.uint32))
    assert np.allclose(got, np.sum(dense, axis=0, dtype=np.float64), rtol=1e-6, atol=1e-6)


def test_sparse_sum_rejects_mismatched_sets():
    a = _core.sparse_encode(np.array([1]), np.float32([1]), 10)
    b = _core.sparse_encode(np.array([1]), np.float32([1]), 11)
    with pytest.raises(ValueError, match="set 1 has dense length 11"):
        _core.sparse_sum([a, b], 10)
    with pytest.raises(ValueError, match="bad magic"):
        _core.sparse_sum([a, b"junk"], 10)
    assert _core.sparse_sum([], 4).tolist() == [0, 0, 0, 0]
