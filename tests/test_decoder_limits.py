"""Amplification: small or lying inputs from an authenticated peer must not
make a peer allocate what the op does not need (the RSS of the attacked peer,
this process, is sampled and printed), must fail with a clear error, and the
run goes on. Also the decoders on their own, and non-finite quantized pieces."""

import os
import struct
import threading
import time

import msgpack
import numpy as np
import pytest

import pccl_py as pc
from pccl_py import _core
from hostile import RawMember
from local_group import close_all, make_group, run_all
from test_hostile_member import KEY, TIMEOUT, exact_all_reduce, outsider_ping, without
from wire import CONTROL, DATA, RawPeer

PAGE = os.sysconf("SC_PAGE_SIZE")
MiB = 1 << 20


def rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * PAGE


class PeakRss:
    """Samples this process's resident set every 5 ms while active."""

    def __enter__(self):
        self.base = self.peak = rss()
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._run, daemon=True)
        self._t.start()
        return self

    def _run(self):
        while not self._stop.wait(0.005):
            self.peak = max(self.peak, rss())

    def __exit__(self, *exc):
        self._stop.set()
        self._t.join()
        self.peak = max(self.peak, rss())
        self.grew = self.peak - self.base


def varint(v: int) -> bytes:
    out = b""
    while True:
        b, v = v & 0x7F, v >> 7
        out += bytes([b | (0x80 if v else 0)])
        if not v:
            return out


@pytest.fixture
def pair():
    comms = make_group(2, key=KEY, timeout=TIMEOUT)
    yield sorted(comms, key=lambda c: c.peer_id)
    close_all(comms)


# ------------------------------------------------------------ decoders alone

def test_msgpack_decoding_is_bounded_by_decoded_size_not_input_size():
    # 2M nils are 2 MB on the wire but ~200 MB as decoded values.
    n = 2_000_000
    with pytest.raises(ValueError, match="limit"):
        _core.msgpack_roundtrip(b"\xdd" + struct.pack(">I", n) + b"\xc0" * n)
    n = 100_000
    assert _core.msgpack_roundtrip(b"\xdd" + struct.pack(">I", n) + b"\xc0" * n) == msgpack.packb([None] * n)
    with pytest.raises(ValueError, match="nesting deeper than 32"):
        _core.msgpack_roundtrip(b"\x91" * 40 + b"\xc0")


def test_fedzip_dense_length_is_checked_before_allocating():
    tiny = b"FZ\x01\x00" + varint(1 << 28) + varint(0) + b"\x00"  # 11 bytes claiming 1 GiB of zeros
    assert len(tiny) == 11
    with PeakRss() as m:
        with pytest.raises(ValueError, match="dense length 268435456 exceeds"):
            _core.fedzip_decode(tiny)
        with pytest.raises(ValueError, match="exceeds the expected 1000"):
            _core.fedzip_decode(tiny, 1000)
    print(f"fedzip 11-byte blob: peak RSS +{m.grew / MiB:.1f} MiB")
    assert m.grew < 64 * MiB
    x = np.random.default_rng(0).standard_normal(5000).astype(np.float32)
    blob = _core.fedzip_encode(x, 0.01)
    assert np.array_equal(_core.fedzip_decode(blob, 5000), _core.fedzip_quantize(x, 0.01, 3))
    with pytest.raises(ValueError, match="exceeds the expected 4999"):
        _core.fedzip_decode(blob, 4999)
    with pytest.raises(ValueError, match="holds 5000 values, expected 5001"):
        _core.fedzip_decode(blob, 5001)


def test_sparse_set_dense_length_is_checked_before_allocating():
    from pccl_py.compress import TopK
    tiny = _core.sparse_encode(np.array([3], np.int64), np.array([1.0], np.float32), 1 << 40)
    with PeakRss() as m:
        with pytest.raises(ValueError, match="claims 1099511627776 values"):
            TopK.decompress(tiny)
        with pytest.raises(ValueError, match="expected 10"):
            TopK.decompress(tiny, 10)
    assert m.grew < 64 * MiB
    ok = _core.sparse_encode(np.array([3], np.int64), np.array([1.5], np.float32), 8)
    assert np.array_equal(TopK.decompress(ok, 8), [0, 0, 0, 1.5, 0, 0, 0, 0])


# ------------------------------------------------------------ against a live peer

@pytest.mark.timeout(60)
def test_oversized_and_amplifying_control_frames_close_only_that_connection(pair):
    victim = pair[0]
    for payload, what in [
        (b"\xdd" + struct.pack(">I", 30 * MiB) + b"\xc0" * (30 * MiB), "30 MiB control frame"),
        (b"\xdd" + struct.pack(">I", 3_900_000) + b"\xc0" * 3_900_000, "3.9 MB frame of 3.9M values"),
    ]:
        raw = RawPeer(victim.addrs[0], KEY.encode())
        raw.handshake(purpose="control")
        with PeakRss() as m:
            raw.send(CONTROL, payload)
            assert raw.closed_by_peer(10.0)
        raw.close()
        print(f"{what}: peak RSS +{m.grew / MiB:.1f} MiB")
        assert m.grew < 160 * MiB
    exact_all_reduce(pair)


@pytest.mark.timeout(60)
def test_frames_for_other_epochs_are_not_kept(pair):
    victim = pair[0]
    raw = RawPeer(victim.addrs[0], KEY.encode())
    try:
        raw.handshake(purpose="control")
        e = outsider_ping(raw)["epoch"]
        blob = b"\x55" * (4 * MiB)
        with PeakRss() as m:
            for i in range(160):  # 640 MiB for ops of future epochs (and of the next one, from a non-member)
                raw.send(DATA, blob, epoch=e + 1 + i, tag=i, seq=0, chunk=0, sub=0)
            assert outsider_ping(raw)["epoch"] == e  # everything above was handled
            kept = rss() - m.base
        print(f"640 MiB of future-epoch frames: RSS +{kept / MiB:.1f} MiB after, peak +{m.grew / MiB:.1f} MiB")
        assert kept < 160 * MiB
    finally:
        raw.close()
    for _ in range(2):
        exact_all_reduce(pair)
        assert run_all(pair, lambda c: c.update_topology()) == [None, None]


@pytest.mark.timeout(60)
def test_all_gather_header_claiming_1_gib_allocates_nothing(pair):
    raw = RawMember(pair, KEY.encode())
    try:
        raw.join(pair)
        e = pair[0].epoch
        box = {}
        def gather(c):
            try:
                return c.all_gather_bytes(b"honest" * 10, tag=9)
            except pc.PcclError as err:
                return err
        with PeakRss() as m:
            ts = [threading.Thread(target=lambda c=c: box.__setitem__(c.peer_id, gather(c))) for c in pair]
            for t in ts:
                t.start()
            t0 = time.monotonic()
            raw.send(pair[0].peer_id, DATA, b"z" * 10, epoch=e, tag=9, seq=0, chunk=1 << 30, sub=0)
            for t in ts:
                t.join(timeout=3 * TIMEOUT)
            took = time.monotonic() - t0
        print(f"all-gather header claiming 1 GiB: peak RSS +{m.grew / MiB:.1f} MiB, failed in {took:.2f} s")
        assert m.grew < 160 * MiB and took < TIMEOUT
        errs = [box[c.peer_id] for c in pair]
        assert all(isinstance(x, pc.ProtocolError) for x in errs), errs
        assert "unexpected piece" in str(errs[0])
    finally:
        raw.close()
    without(raw, pair)
    res = run_all(pair, lambda c: c.all_gather_bytes(c.peer_id.encode(), tag=9))
    assert res == [[c.peer_id.encode() for c in pair]] * 2


@pytest.mark.timeout(60)
@pytest.mark.parametrize("quant", ["int8", "fp16"])
def test_non_finite_quantized_piece_fails_the_op_on_every_member(pair, quant):
    raw = RawMember(pair, KEY.encode())
    try:
        raw.join(pair)
        e = pair[0].epoch
        members = pair[0].members
        assert members[-1] == raw.id  # ring order: us last, so our next is members[0]
        n = 3 * 256  # one sub-chunk per chunk; chunk 0 is ours to finish (owner = rank + 1)
        desc = {"t": "all_reduce", "dtype": 0, "count": n, "op": 0, "world": 3, "quant": 3 if quant == "int8" else 1,
                "qblock": 128, "stoch": False,
                "algo": int(_core.AllReduceOpts().algorithm)}  # the default (auto: the ring when quantized)
        if quant == "int8":  # two blocks: scales, then codes
            piece = struct.pack("<2f", float("nan"), 1.0) + bytes(256)
        else:
            piece = struct.pack("<H", 0x7E00) + bytes(2 * 255)
        xs = [np.full(n, 0.25 * (i + 1), np.float32) for i in range(2)]
        before = [x.copy() for x in xs]
        box = {}
        ts = [threading.Thread(target=lambda i=i: box.__setitem__(i, run_one(pair[i], xs[i], quant)))
              for i in range(2)]
        for t in ts:
            t.start()
        first = members[0]
        raw.send(first, DATA, msgpack.packb(desc), epoch=e, tag=0, seq=0, chunk=0xFFFFFFFF, sub=0)
        raw.send(first, DATA, piece, epoch=e, tag=0, seq=0, chunk=0x80000000, sub=0)  # the final value of chunk 0
        for t in ts:
            t.join(timeout=3 * TIMEOUT)
        errs = [box[0], box[1]]
        assert all(isinstance(x, pc.ProtocolError) and ("NaN" in str(x)) for x in errs), errs
        for x, b in zip(xs, before):
            assert np.array_equal(x, b)  # a failed op leaves the input as it was
    finally:
        raw.close()
    without(raw, pair)
    xs = [np.full(n, 0.25 * (i + 1), np.float32) for i in range(2)]
    res = run_all(pair, lambda c, x: c.all_reduce(x, quant=quant), xs)
    assert not [r for r in res if isinstance(r, Exception)], res
    assert np.array_equal(xs[0], xs[1]) and np.allclose(xs[0], 0.75, atol=0.01)


def run_one(comm, x, quant):
    try:
        return comm.all_reduce(x, quant=quant)
    except pc.PcclError as err:
        return err


@pytest.mark.timeout(60)
def test_early_frames_beyond_the_unclaimed_cap_fail_that_op_and_are_freed(pair):
    """A member sends more than kMaxUnclaimedBytes (1 GiB) for an op the
    victim has not started: the victim stops holding it (its RSS falls back),
    and the op fails at once on every member when they start it."""
    raw = RawMember(pair, KEY.encode())
    try:
        raw.join(pair)
        victim, e = pair[0], pair[0].epoch
        blob = b"\x33" * (4 * MiB)
        with PeakRss() as m:
            for i in range(384):  # 1536 MiB
                raw.send(victim.peer_id, DATA, blob, epoch=e, tag=77, seq=0, chunk=0, sub=i)
            from test_hostile_member import ping
            ping(raw, victim)
            kept = rss() - m.base
        print(f"1536 MiB of early frames for one op: peak RSS +{m.grew / MiB:.0f} MiB, +{kept / MiB:.0f} MiB after")
        assert m.grew < 1300 * MiB and kept < 400 * MiB
        t0 = time.monotonic()
        res = run_all(pair, lambda c: c.all_reduce(np.ones(1024, np.float32), tag=77))
        assert all(isinstance(r, pc.ProtocolError) and "ops not started here" in str(r) for r in res), res
        assert time.monotonic() - t0 < TIMEOUT
    finally:
        raw.close()
    without(raw, pair)
    exact_all_reduce(pair, tag=77)
