"""One options path: the C option structs are what Python fills (named
fields, keyword arguments, C enums), their defaults are defined once (pccl.h)
and read from there by every layer, and one codec table drives the codec
names, ids, validation and Python's list."""

import inspect
import os
import re

import numpy as np
import pytest

import pccl_py as pc
from pccl_py import _buffers, _core, compress
from pccl_py.communicator import RelayLimits

HEADER = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "cpp", "include", "pccl",
                      "pccl.h")


def header() -> str:
    with open(HEADER) as f:
        return f.read()


def header_defaults() -> dict:
    out = {}
    for name, value in re.findall(r"#define PCCL_DEFAULT_(\w+) (.+)", header()):
        out[name.lower()] = eval(value.replace("u", "").strip())  # "(64u * 1024u)", "10.0", "8u"
    return out


def test_config_defaults_are_the_headers():
    d, cfg = header_defaults(), _core.Config()
    assert cfg.struct_size > 0
    assert (cfg.timeout_s, cfg.join_timeout_s, cfg.streams, cfg.chunk_bytes) == \
        (d["timeout_s"], d["join_timeout_s"], d["streams"], d["chunk_bytes"])
    assert (cfg.relay_slots, cfg.relay_max_reservations, cfg.relay_max_circuits, cfg.relay_reservation_ttl_s,
            cfg.handshake_timeout_s) == (d["relay_slots"], d["relay_max_reservations"], d["relay_max_circuits"],
                                         d["relay_reservation_ttl_s"], d["handshake_timeout_s"])
    assert (cfg.heartbeat_timeout_s, cfg.keepalive_s) == (d["heartbeat_timeout_s"], d["keepalive_s"])
    assert _core.AllReduceOpts().quant_block == d["quant_block"]


def test_python_signature_defaults_come_from_the_core():
    cfg = _core.Config()
    sig = inspect.signature(pc.Communicator.__init__).parameters
    for py_name, c_name in [("timeout", "timeout_s"), ("join_timeout", "join_timeout_s"), ("streams", "streams"),
                            ("chunk_bytes", "chunk_bytes"), ("socket_buffer", "socket_buffer"),
                            ("hole_punch", "hole_punch"), ("relay_slots", "relay_slots"), ("encrypt", "encrypt"),
                            ("heartbeat_timeout", "heartbeat_timeout_s"), ("keepalive", "keepalive_s"),
                            ("seal_loopback", "seal_loopback")]:
        assert sig[py_name].default == getattr(cfg, c_name), py_name
    limits = RelayLimits()
    assert (limits.max_reservations, limits.max_circuits, limits.max_circuit_bytes, limits.max_circuit_seconds,
            limits.reservation_ttl) == (cfg.relay_max_reservations, cfg.relay_max_circuits,
                                        cfg.relay_max_circuit_bytes, cfg.relay_max_circuit_s,
                                        cfg.relay_reservation_ttl_s)
    assert inspect.signature(pc.Communicator.all_reduce).parameters["quant_block"].default == \
        _core.AllReduceOpts().quant_block


def test_bindings_take_named_fields_and_keywords():
    o = _core.AllReduceOpts(op=_core.ReduceOp.avg, quant=_core.Quant.int4, quant_block=32, stochastic=True,
                            algorithm=_core.Algorithm.direct, tag=7, no_backup=True)
    assert (o.op, o.quant, o.quant_block, o.stochastic, o.algorithm, o.tag, o.no_backup) == \
        (_core.ReduceOp.avg, _core.Quant.int4, 32, True, _core.Algorithm.direct, 7, True)
    with pytest.raises(TypeError):
        _core.AllReduceOpts(_core.ReduceOp.sum)  # keyword only
    with pytest.raises(TypeError):
        _core.AllReduceOpts(quant=3)  # an enum, not a bare int
    with pytest.raises(TypeError):
        _core.Comm(["/ip4/127.0.0.1/tcp/0"], [], "k")  # the old 15 positional arguments are gone
    cfg = _core.Config()
    cfg.listen, cfg.run_key, cfg.streams = ["/ip4/127.0.0.1/tcp/0"], "k", 3
    comm = _core.Comm(config=cfg)
    try:
        x = np.arange(6, dtype=np.float32)
        info = comm.all_reduce(send=x.ctypes.data, recv=x.ctypes.data, count=6, dtype=_core.DType.f32,
                               opts=_core.AllReduceOpts(op=_core.ReduceOp.max))
        assert info[2] == 1 and x.tolist() == [0, 1, 2, 3, 4, 5]
    finally:
        comm.close()


def test_c_enums_are_bound_with_their_values():
    assert [int(v) for v in _core.Status.__members__.values()] == [0, 1, 2, 3, 4, 5, 6, 7, 9, 10]
    for name, value in _core.Status.__members__.items():
        if value != _core.Status.ok:
            assert pc.errors.error_for_status(int(value), "").status == int(value), name
    assert [d.name for d in (_buffers.F32, _buffers.BF16, _buffers.U64)] == ["f32", "bf16", "u64"]
    assert [int(v) for v in _core.ReduceOp.__members__.values()] == [0, 1, 2, 3, 4]
    assert {k: int(v) for k, v in _core.Algorithm.__members__.items()} == {"ring": 0, "direct": 1, "doubling": 2,
                                                                          "auto": 3}


def test_the_python_codec_list_is_the_table():
    table = _core.codecs()
    names = tuple(c["name"] for c in table)
    assert [c["id"] for c in table] == list(range(len(table)))
    assert compress.QUANT_KINDS == names == tuple(_core.Quant.__members__)
    assert {c["name"] for c in table if c["blocked"]} == {"int8", "int4", "e3m0"}
    # The C enum agrees with the table: PCCL_QUANT_<NAME> = id for every entry.
    c_enum = dict(re.findall(r"PCCL_QUANT_(\w+) = (\d+)", header()))
    assert {k.lower(): int(v) for k, v in c_enum.items()} == {c["name"]: c["id"] for c in table}
    # Every listed codec round-trips through the same table-driven entry points.
    x = np.linspace(-1, 1, 300, dtype=np.float32)
    for c in table:
        blob = compress.quantize(x, c["name"], 64)
        assert len(blob) == compress.encoded_size(300, c["name"], 64)
        err = np.max(np.abs(compress.dequantize(blob, 300, c["name"], 64) - x))
        assert err <= compress.max_abs_error_bound(x, c["name"], 64)


@pytest.mark.parametrize("call", [
    lambda: compress.quantize(np.ones(4, np.float32), "int3"),
    lambda: compress.dequantize(b"", 0, "fp8"),
    lambda: compress.encoded_size(4, "INT8"),
    lambda: compress.max_abs_error_bound(np.ones(4, np.float32), ""),
])
def test_an_unknown_codec_name_names_the_valid_ones(call):
    with pytest.raises(pc.InvalidArgumentError) as info:
        call()
    assert isinstance(info.value, ValueError)
    assert ", ".join(compress.QUANT_KINDS) in str(info.value)


def test_the_communicator_names_the_valid_codecs_too():
    with pc.Communicator() as comm:
        with pytest.raises(pc.InvalidArgumentError) as info:
            comm.all_reduce(np.ones(4, np.float32), quant="int5")
        assert "unknown quant 'int5'" in str(info.value)
        assert ", ".join(compress.QUANT_KINDS) in str(info.value)


def test_stubs_name_exactly_what_the_extension_defines():
    with open(os.path.join(os.path.dirname(_core.__file__), "_core.pyi")) as f:
        text = f.read()
    stub_all = set(eval(re.search(r"__all__: list\[str\] = (\[.*?\])", text).group(1)))
    public = {n for n in dir(_core) if not n.startswith("_")}
    assert stub_all == public
    for name in public:
        assert re.search(rf"^(class|def) {name}\b", text, re.M), name
    assert "arg0" not in text  # every binding argument is named
