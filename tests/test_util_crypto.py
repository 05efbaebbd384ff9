"""sha256 / hmac_sha256 against hashlib, hash64 (XXH64) properties and vectors."""
import hashlib
import hmac
import random

import pytest

from pccl_py import _core


def _rand(rng, n):
    return bytes(rng.getrandbits(8) for _ in range(n))


def test_sha256_matches_hashlib_all_small_lengths():
    rng = random.Random(1)
    for n in range(0, 301):
        data = _rand(rng, n)
        assert _core.sha256(data) == hashlib.sha256(data).digest(), n


def test_sha256_one_megabyte():
    data = random.Random(2).randbytes(1 << 20)
    assert _core.sha256(data) == hashlib.sha256(data).digest()


@pytest.mark.parametrize("key_len", [0, 1, 31, 32, 63, 64, 65, 100, 200])
def test_hmac_sha256_matches_stdlib(key_len):
    rng = random.Random(key_len)
    key = _rand(rng, key_len)
    for n in (0, 1, 55, 56, 63, 64, 65, 300):
        msg = _rand(rng, n)
        assert _core.hmac_sha256(key, msg) == hmac.new(key, msg, hashlib.sha256).digest()


def test_hmac_sha256_one_megabyte_message():
    msg = random.Random(3).randbytes(1 << 20)
    key = b"k" * 70
    assert _core.hmac_sha256(key, msg) == hmac.new(key, msg, hashlib.sha256).digest()


# Reference values computed with the `xxhash` package (xxh64_intdigest).
@pytest.mark.parametrize(
    "data,seed,expected",
    [
        (b"", 0, 0xEF46DB3751D8E999),
        (b"a", 0, 0xD24EC4F1A98C6E5B),
        (b"abc", 1, 0xBEA9CA8199328908),
        (bytes(range(100)), 0, 0x6AC1E58032166597),
    ],
)
def test_hash64_known_vectors(data, seed, expected):
    assert _core.hash64(data, seed) == expected


def test_hash64_deterministic_and_discriminating():
    rng = random.Random(4)
    seen = set()
    for n in range(0, 200):
        data = _rand(rng, n)
        h = _core.hash64(data)
        assert h == _core.hash64(data)
        assert 0 <= h < 2**64
        seen.add(h)
    assert len(seen) == 200
    assert _core.hash64(b"x" * 40) != _core.hash64(b"x" * 39 + b"y")
    assert _core.hash64(b"abc", 0) != _core.hash64(b"abc", 1)


def test_hash64_alignment_independent():
    rng = random.Random(5)
    for n in (1, 7, 8, 31, 32, 33, 100, 1000):
        data = _rand(rng, n)
        expected = _core.hash64(data)
        for offset in range(0, 9):
            big = _rand(rng, offset) + data + _rand(rng, 5)
            view = memoryview(big)[offset : offset + n]
            assert _core.hash64(view) == expected, (n, offset)
