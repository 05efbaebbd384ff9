"""FedZip: exact restoration of the quantized tensor, Huffman properties,
k-means, malformed input, ratios."""
import itertools

import numpy as np
import pytest

from pccl_py import _core
from pccl_py.compress import FedZip


def _is_prefix_free(codes):
    words = [format(c, f"0{l}b") for c, l in codes if l > 0]
    return not any(a != b and b.startswith(a) for a, b in itertools.permutations(words, 2)) and \
        len(set(words)) == len(words)


@pytest.mark.parametrize("freqs", [[5, 1, 1, 3], [1], [0, 7, 0], [10, 10, 10], [1, 2, 4, 8, 16, 32, 64],
                                   [1000, 1, 1], list(range(1, 33)), [0, 0]])
def test_huffman_prefix_free_shortest_for_most_frequent(freqs):
    codes = _core.huffman_codes(freqs)
    lengths = [l for _, l in codes]
    assert all((l > 0) == (f > 0) for f, l in zip(freqs, lengths))
    if not any(freqs):
        return
    assert _is_prefix_free(codes)
    most = [l for f, l in zip(freqs, lengths) if f == max(freqs)]
    assert min(most) == min(l for l in lengths if l > 0)
    used = [l for l in lengths if l > 0]
    if len(used) > 1:  # Huffman codes are complete (Kraft sum 1) and optimal
        assert sum(2.0 ** -l for l in used) == 1.0
        for a, b in itertools.combinations(range(len(freqs)), 2):
            if freqs[a] > freqs[b] > 0:
                assert lengths[a] <= lengths[b]
    else:
        assert used == [1]


def test_kmeans_deterministic_and_fits_clusters():
    rng = np.random.default_rng(0)
    x = np.concatenate([rng.normal(-5, 0.1, 300), rng.normal(0.5, 0.1, 500), rng.normal(9, 0.1, 200)])
    x = rng.permutation(x).astype(np.float32)
    c = _core.kmeans_1d(x, 3)
    assert np.allclose(c, [-5, 0.5, 9], atol=0.05) and np.array_equal(c, _core.kmeans_1d(x, 3))
    assert _core.kmeans_1d(np.full(10, 2.0, np.float32), 3).tolist() == [2.0]
    assert _core.kmeans_1d(np.float32([1, 2]), 3).tolist() == [1.0, 2.0]


@pytest.mark.parametrize("n,density,clusters", [(1, 1.0, 3), (10, 0.5, 3), (100_000, 0.01, 3),
                                                (100_000, 0.001, 1), (50_000, 0.1, 8), (12345, 1.0, 3)])
def test_decode_restores_quantized_tensor(n, density, clusters):
    rng = np.random.default_rng(n)
    x = rng.standard_t(3, n).astype(np.float32)
    blob = _core.fedzip_encode(x, density, clusters)
    y = _core.fedzip_decode(blob)
    q = _core.fedzip_quantize(x, density, clusters)
    assert y.dtype == np.float32 and np.array_equal(y.view(np.uint32), q.view(np.uint32))
    kept = np.flatnonzero(y)
    idx, vals = _core.topk_select(x, density)
    assert kept.size <= idx.size <= 1.3 * _core.topk_target(density, n)
    assert set(kept.tolist()) <= set(idx.tolist())
    centroids = np.unique(y[idx])
    assert 1 <= centroids.size <= clusters
    # Every kept value maps to its nearest centroid.
    nearest = centroids[np.abs(vals[:, None] - centroids[None, :]).argmin(axis=1)]
    assert np.allclose(np.abs(vals - y[idx]), np.abs(vals - nearest), atol=0)


def test_both_layouts_are_used_and_decoded():
    rng = np.random.default_rng(1)
    modes = set()
    for density in (0.001, 0.3, 1.0):
        x = rng.standard_normal(20_000).astype(np.float32)
        blob = _core.fedzip_encode(x, density, 3)
        modes.add(_core.fedzip_mode(blob))
        assert np.array_equal(_core.fedzip_decode(blob), _core.fedzip_quantize(x, density, 3))
    assert modes == {0, 1}


def test_fedzip_edge_cases():
    assert _core.fedzip_decode(_core.fedzip_encode(np.zeros(0, np.float32), 0.5)).size == 0
    z = _core.fedzip_decode(_core.fedzip_encode(np.zeros(1000, np.float32), 0.01))
    assert z.size == 1000 and not z.any()
    with pytest.raises(ValueError, match="NaN"):
        _core.fedzip_encode(np.float32([1, np.nan]), 0.5)
    with pytest.raises(ValueError, match="clusters"):
        _core.fedzip_encode(np.ones(4, np.float32), 0.5, 0)
    with pytest.raises(ValueError, match="density"):
        _core.fedzip_encode(np.ones(4, np.float32), 1.5)


def test_fedzip_decode_never_crashes_on_garbage():
    rng = np.random.default_rng(2)
    for density in (0.01, 0.5):
        good = _core.fedzip_encode(rng.standard_normal(3000).astype(np.float32), density)
        for cut in range(0, len(good), max(1, len(good) // 200)):
            with pytest.raises(ValueError):
                _core.fedzip_decode(good[:cut])
        for _ in range(1500):
            b = bytearray(good)
            b[rng.integers(len(b))] = rng.integers(256)
            if b[4] & 0x80 or b[4] > 0x40:  # keep n small: a flipped length byte may ask for a huge tensor
                continue
            try:
                y = _core.fedzip_decode(bytes(b))
            except ValueError:
                continue
            assert np.isfinite(y).all()


def test_fedzip_helper_ratios_and_shapes():
    rng = np.random.default_rng(3)
    tensors = {"w1": rng.standard_normal((256, 512)).astype(np.float32),
               "b1": rng.standard_normal(256).astype(np.float32),
               "w2": rng.standard_normal((10, 256)).astype(np.float32)}
    fz = FedZip(density=0.01, clusters=3)
    payload = fz.encode(tensors)
    out = fz.decode(payload)
    q = fz.quantized(tensors)
    for name in tensors:
        assert out[name].shape == tensors[name].shape and np.array_equal(out[name], q[name])
    assert np.count_nonzero(out["b1"]) == 256  # biases stay dense (but clustered)
    assert len(np.unique(out["b1"])) <= 3
    r = payload.ratios
    assert r["w1"] > 250 and r["b1"] > 10
    total = sum(4 * t.size for t in tensors.values())
    assert payload.ratio == pytest.approx(total / payload.nbytes)
