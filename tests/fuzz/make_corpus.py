"""Writes the seed corpus of the fuzz harnesses (tests/fuzz/corpus/<harness>/).

Seeds are small valid messages of each wire format, built here from the
format descriptions in the headers (and the `msgpack` / `multiaddr` packages),
so the fuzzers start from inputs that pass the magic/version checks and reach
the deep parts of each decoder at once. Files named regress-* are inputs that
once broke a harness, kept as regression tests; this script leaves them alone.
Regenerate the seeds after a format changes:

    python tests/fuzz/make_corpus.py
"""

import hashlib
import os
import struct

import sys

import msgpack
import multiaddr

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))
import wire  # noqa: E402  (tests/wire.py: frame headers, peer ids)


def varint(v: int) -> bytes:
    out = bytearray()
    while v >= 0x80:
        out.append((v & 0x7F) | 0x80)
        v >>= 7
    out.append(v)
    return bytes(out)


def f32(*vs: float) -> bytes:
    return struct.pack(f"<{len(vs)}f", *vs)


def positions(ps) -> bytes:  # first index, then gaps
    return b"".join(varint(p if i == 0 else p - ps[i - 1]) for i, p in enumerate(ps))


QM = "QmYyQSo1c1Ym7orWxLYvCrM2EmxFTANf8wXmmE7DWjhx5N"
ED = wire.peer_id_of(hashlib.sha256(b"key").digest())


def frame_seeds():
    for limit in (0, 1):
        for t in range(1, 8):
            yield bytes([limit]) + wire.header(t, 100, tag=3, epoch=7, seq=2, chunk=1)


def msgpack_seeds():
    yield msgpack.packb({"id": ED, "sig": b"\x07" * 64, "inc": 1, "addrs": ["/ip4/1.2.3.4/tcp/1"], "enc": True,
                         "purpose": "control", "rev": 3})
    yield msgpack.packb({"t": "hello", "v": 1, "id": QM, "nonce": b"\x01" * 16, "inc": 3,
                         "addrs": ["/ip4/127.0.0.1/tcp/4001"], "purpose": "control"})
    yield msgpack.packb({"t": "commit", "epoch": 5, "members": [{"id": QM, "inc": 1, "addrs": [], "av": 2}]})
    yield msgpack.packb([None, True, False, -1, -33, 127, 128, 65536, 2**40, -(2**40), 1.5, "s" * 40, b"b" * 300])
    yield msgpack.packb([[[[{"a": [1, 2, {"b": None}]}]]]])
    yield msgpack.packb({"f": 1.25}, use_single_float=True)
    yield msgpack.packb({"state": {"rev": 2**64 - 1, "tensors": [["w", 4096, 12345]]}})


def ring_descriptor_seeds():
    d = {"t": "all_reduce", "dtype": 0, "count": 1000, "op": 0, "world": 3, "quant": 0, "qblock": 0,
         "stoch": False, "algo": 0}
    yield msgpack.packb(d)
    yield msgpack.packb(dict(d, quant=3, qblock=128, stoch=True, algo=1, op=4, dtype=9))
    yield msgpack.packb(dict(d, quant=99, op=77, dtype=1000))


ADDRS = [
    "/ip4/127.0.0.1/tcp/4001",
    f"/ip4/1.2.3.4/tcp/4001/p2p/{QM}",
    "/ip6/::1/tcp/4001",
    "/ip6/2001:db8::8a2e:370:7334/udp/53",
    "/dns4/example.com/tcp/443",
    "/dns/xn--bcher-kva.example./tcp/1",
    "/dns6/a-b.c/tcp/65535",
    f"/ip4/10.0.0.1/tcp/1/p2p/{QM}/p2p-circuit/p2p/{QM}",
    f"/ipfs/{QM}",
    f"/ip4/127.0.0.1/tcp/5/p2p/{ED}",
]


def multiaddr_text_seeds():
    for a in ADDRS:
        yield a.encode()


def multiaddr_bytes_seeds():
    for a in ADDRS:
        yield multiaddr.Multiaddr(a.replace("/ipfs/", "/p2p/")).to_bytes()


def peer_id_seeds():
    yield QM.encode()
    yield ED.encode()
    yield b"1111" + QM.encode()[:10]
    yield b"\x12\x20" + hashlib.sha256(b"x").digest()  # raw multihash bytes (the encode side)
    yield b"\x00\x04abcd"


def sparse_seeds():
    idx = [0, 3, 4, 100]
    vals = [1.0, -2.5, 3e-5, 65504.0]
    body = varint(1000) + varint(len(idx)) + positions(idx)
    yield b"PS\x01\x00" + body + f32(*vals)
    yield b"PS\x01\x01" + body + struct.pack("<4e", *vals)
    yield b"PS\x01\x00" + varint(0) + varint(0)


def fedzip_seeds():
    n = 64
    # mode 1 (difference of address): per cluster, a count and its positions.
    c0, c1 = [1, 5, 9], [2, 40]
    yield b"\x00FZ\x01\x01" + varint(n) + varint(5) + b"\x02" + f32(-1.0, 2.0) + \
        varint(len(c0)) + positions(c0) + varint(len(c1)) + positions(c1)
    # mode 0 (Huffman): positions, code lengths (1, 2, 2), then codes MSB first.
    pos = [0, 1, 7, 30]
    syms = [0, 1, 2, 0]  # canonical codes: 0 -> 0, 1 -> 10, 2 -> 11
    bits = "".join({0: "0", 1: "10", 2: "11"}[s] for s in syms)
    bits += "0" * (-len(bits) % 8)
    stream = bytes(int(bits[i:i + 8], 2) for i in range(0, len(bits), 8))
    yield b"\x00FZ\x01\x00" + varint(n) + varint(len(pos)) + b"\x03" + f32(-3.0, 0.5, 4.0) + \
        positions(pos) + b"\x01\x02\x02" + stream
    # mode 0 with every entry kept (no positions), one cluster.
    yield b"\x00FZ\x01\x00" + varint(8) + varint(8) + b"\x01" + f32(1.0) + b"\x01" + b"\x00"
    yield b"\x00FZ\x01\x00" + varint(n) + varint(0) + b"\x00"
    # the encode side: options, then f32 values.
    yield b"\x01" + f32(*[float(i % 7 - 3) for i in range(64)]) + b"\x10\x03\x1e\x00"


def relay_seeds():
    # Byte 0 even: a relay payload from a peer (nat/relay_wire.h), one of each type.
    msgs = [
        {"t": "reserve"}, {"t": "reserved", "ttl": 600.0}, {"t": "error", "reason": "relay circuits are full"},
        {"t": "connect", "target": ED}, {"t": "incoming", "cid": 2**63 + 1, "from": QM},
        {"t": "accept", "cid": 2**63 + 1}, {"t": "open"}, {"t": "open", "direct": True},
        {"t": "dialback", "addrs": [f"/ip4/1.2.3.4/tcp/4001/p2p/{QM}", "/ip6/::1/tcp/1"]},
        {"t": "dialback", "ok": True},
        {"t": "dcutr-connect", "addrs": ["1.2.3.4:4001"]},
        {"t": "dcutr-connect", "addrs": ["5.6.7.8:50001"], "wait": 0.125},
        {"t": "dcutr-reverse", "cid": 7, "purpose": "control", "addrs": ["/ip4/1.2.3.4/tcp/4001"]},
        {"t": "dcutr-sync"}, {"t": "x-newer", "field": [1, 2]},
    ]
    for i, m in enumerate(msgs):
        yield bytes([2 * (i % 3)]) + msgpack.packb(m)
    # Byte 0 odd: a message of our own, built by the harness from the bytes.
    for i in range(13):
        yield bytes([1]) + hashlib.sha256(bytes([i])).digest() * 2


def relay_book_seeds():
    # Operation sequences (FuzzedDataProvider reads its integers from the end).
    for i in range(8):
        yield b"".join(hashlib.sha256(bytes([i, j])).digest() for j in range(8))


SEEDS = {
    "fuzz_frame": frame_seeds,
    "fuzz_msgpack": msgpack_seeds,
    "fuzz_ring_descriptor": ring_descriptor_seeds,
    "fuzz_multiaddr_text": multiaddr_text_seeds,
    "fuzz_multiaddr_bytes": multiaddr_bytes_seeds,
    "fuzz_peer_id": peer_id_seeds,
    "fuzz_sparse": sparse_seeds,
    "fuzz_fedzip": fedzip_seeds,
    "fuzz_relay": relay_seeds,
    "fuzz_relay_book": relay_book_seeds,
}


def main() -> None:
    for harness, make in SEEDS.items():
        d = os.path.join(HERE, "corpus", harness)
        os.makedirs(d, exist_ok=True)
        for old in os.listdir(d):  # regress-* inputs (past findings) stay
            if old.startswith("seed-"):
                os.remove(os.path.join(d, old))
        for i, seed in enumerate(make()):
            with open(os.path.join(d, f"seed-{i:02d}"), "wb") as f:
                f.write(seed)


if __name__ == "__main__":
    main()
