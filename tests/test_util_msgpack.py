"""Our msgpack codec re-encodes msgpack.packb output byte for byte and rejects bad input."""
import msgpack
import pytest

from pccl_py import _core

INT_BOUNDARIES = [
    0, 1, 31, 32, 127, 128, 255, 256, 65535, 65536, 2**32 - 1, 2**32, 2**63 - 1, 2**63, 2**64 - 1,
    -1, -31, -32, -33, -127, -128, -129, -32767, -32768, -32769, -(2**31) + 1, -(2**31),
    -(2**31) - 1, -(2**63) + 1, -(2**63),
]

VALUES = (
    [None, True, False]
    + INT_BOUNDARIES
    + [0.0, -0.0, 1.5, -2.25, 1e300, float("inf"), float("-inf")]
    + ["x" * n for n in (0, 1, 31, 32, 255, 256, 65535, 65536)]
    + [b"\x00" * n for n in (0, 1, 31, 32, 255, 256, 65535, 65536)]
    + ["héllo ✓"]
    + [[], [1, 2, 3], list(range(15)), list(range(16)), list(range(65536))]
    + [{}, {"a": 1}, {str(i): i for i in range(15)}, {str(i): i for i in range(16)}]
    + [
        {"type": "join", "epoch": 3, "ids": ["a", "b"], "blob": b"\x01\x02", "nested": {"k": [None, {"z": -5}]}},
        [[[[[[1]]]]]],
        {1: "int key", b"bin": "bin key"},
    ]
)


@pytest.mark.parametrize("value", VALUES, ids=lambda v: repr(v)[:40])
def test_roundtrip_matches_packb(value):
    packed = msgpack.packb(value, use_bin_type=True)
    assert _core.msgpack_roundtrip(packed) == packed


def test_float32_and_wide_forms_are_decoded_and_reencoded_smallest():
    assert _core.msgpack_roundtrip(b"\xca\x3f\xc0\x00\x00") == msgpack.packb(1.5)
    # uint16 holding 5 -> positive fixint; str16 of 1 byte -> fixstr; array16 of 1 -> fixarray
    assert _core.msgpack_roundtrip(b"\xcd\x00\x05") == b"\x05"
    assert _core.msgpack_roundtrip(b"\xda\x00\x01a") == b"\xa1a"
    assert _core.msgpack_roundtrip(b"\xdc\x00\x01\xc0") == b"\x91\xc0"
    assert _core.msgpack_roundtrip(b"\xd0\x05") == b"\x05"


def _nested_arrays(depth):
    return b"\x91" * depth + b"\xc0"


MALFORMED = {
    "empty": b"",
    "truncated uint32": b"\xce\x00\x00",
    "truncated str": b"\xa5abc",
    "truncated array": b"\x93\x01\x02",
    "truncated map value": b"\x81\xa1k",
    "trailing bytes": b"\x01\x02",
    "huge str32 length": b"\xdb\xff\xff\xff\xff" + b"x" * 10,
    "huge bin32 length": b"\xc6\x7f\xff\xff\xff",
    "huge array32 count": b"\xdd\xff\xff\xff\xff\xc0",
    "huge map32 count": b"\xdf\xff\xff\xff\xff\xc0\xc0",
    "too deep": _nested_arrays(33),
    "fixext1": b"\xd4\x01\x00",
    "ext8": b"\xc7\x01\x05\x00",
    "timestamp32": b"\xd6\xff\x00\x00\x00\x00",
    "never-used tag": b"\xc1",
}


@pytest.mark.parametrize("name", list(MALFORMED))
def test_malformed_input_raises(name):
    with pytest.raises(ValueError, match="msgpack"):
        _core.msgpack_roundtrip(MALFORMED[name])


def test_depth_limit_is_exactly_32():
    assert _core.msgpack_roundtrip(_nested_arrays(32)) == _nested_arrays(32)
    with pytest.raises(ValueError, match="nesting deeper than 32"):
        _core.msgpack_roundtrip(_nested_arrays(33))


def test_error_messages_name_the_problem():
    with pytest.raises(ValueError, match="trailing"):
        _core.msgpack_roundtrip(b"\xc0\xc0")
    with pytest.raises(ValueError, match="ext"):
        _core.msgpack_roundtrip(b"\xd4\x01\x00")
    with pytest.raises(ValueError, match="truncated"):
        _core.msgpack_roundtrip(b"\xa5abc")


def test_random_garbage_never_crashes():
    """Hostile bytes: either a clean ValueError, or the same value msgpack decodes."""
    import random

    rng = random.Random(7)
    decoded = 0
    for _ in range(3000):
        blob = rng.randbytes(rng.randrange(1, 24))
        try:
            out = _core.msgpack_roundtrip(blob)
        except ValueError as e:
            assert "msgpack" in str(e)
            continue
        decoded += 1
        try:  # str payloads are not UTF-8-checked by us, so compare raw
            ref = msgpack.unpackb(blob, raw=True, strict_map_key=False)
        except (TypeError, ValueError):  # e.g. unhashable map keys in Python
            continue
        assert msgpack.unpackb(out, raw=True, strict_map_key=False) == ref
    assert decoded > 100
