"""An independent Python implementation of the pccl wire protocol (frames, the
Noise_XXpsk0_25519_AESGCM_SHA256 handshake, AEAD records), written from the
Noise specification with the `cryptography` package, used to check
interoperability and to play a hostile peer."""

from __future__ import annotations

import hashlib
import hmac
import os
import socket
import struct
import time

import msgpack
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

HDR = struct.Struct("<HBBIQIIII")
HELLO, AUTH, REJECT, CONTROL, DATA, HEARTBEAT, RELAY = 1, 2, 3, 4, 5, 6, 7
PROTOCOL_NAME = b"Noise_XXpsk0_25519_AESGCM_SHA256"
PROLOGUE = b"pccl/1"
TAG = 16
B58 = "123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz"


def pack(ftype: int, payload: bytes = b"", **h) -> bytes:
    """A frame in the clear (the handshake's framing)."""
    return header(ftype, len(payload), **h) + payload


def header(ftype: int, length: int, **h) -> bytes:
    return HDR.pack(0x4350, 1, ftype, h.get("tag", 0), h.get("epoch", 0), h.get("seq", 0), h.get("chunk", 0),
                    h.get("sub", 0), length)


def _raw(key) -> bytes:
    return key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def b58encode(data: bytes) -> str:
    n = int.from_bytes(data, "big")
    out = ""
    while n:
        n, r = divmod(n, 58)
        out = B58[r] + out
    return "1" * (len(data) - len(data.lstrip(b"\0"))) + out


def b58decode(text: str) -> bytes:
    n = 0
    for c in text:
        n = n * 58 + B58.index(c)
    body = n.to_bytes((n.bit_length() + 7) // 8, "big") if n else b""
    return b"\0" * (len(text) - len(text.lstrip("1"))) + body


def peer_id_of(ed_public: bytes) -> str:
    """libp2p peer id: identity multihash of the protobuf Ed25519 PublicKey."""
    return b58encode(bytes([0x00, 0x24, 0x08, 0x01, 0x12, 0x20]) + ed_public)


def public_key_of(peer_id: str) -> bytes:
    mh = b58decode(peer_id)
    assert mh[:6] == bytes([0x00, 0x24, 0x08, 0x01, 0x12, 0x20]) and len(mh) == 38, peer_id
    return mh[6:]


def _nonce(n: int) -> bytes:
    return b"\0" * 4 + n.to_bytes(8, "big")


class Cipher:
    """One direction of records: AES-256-GCM with a counter nonce."""

    def __init__(self, key: bytes):
        self.aead, self.n = AESGCM(key), 0

    def seal(self, data: bytes, ad: bytes = b"") -> bytes:
        out = self.aead.encrypt(_nonce(self.n), data, ad or None)
        self.n += 1
        return out

    def open(self, data: bytes, ad: bytes = b"") -> bytes:
        out = self.aead.decrypt(_nonce(self.n), data, ad or None)
        self.n += 1
        return out


class Noise:
    """Noise_XXpsk0_25519_AESGCM_SHA256 (Noise revision 34), either role."""

    def __init__(self, initiator: bool, psk: bytes, prologue: bytes = PROLOGUE):
        self.initiator = initiator
        self.h = PROTOCOL_NAME
        self.ck = self.h
        self.k = None
        self.n = 0
        self.mix_hash(prologue)
        self.psk = hashlib.sha256(b"pccl-run-key-v1\0" + psk).digest()
        self.s = X25519PrivateKey.generate()
        self.e = None
        self.rs = self.re = None

    def mix_hash(self, data: bytes) -> None:
        self.h = hashlib.sha256(self.h + data).digest()

    def _hkdf(self, ikm: bytes, n: int):
        temp = hmac.new(self.ck, ikm, hashlib.sha256).digest()
        outs, prev = [], b""
        for i in range(1, n + 1):
            prev = hmac.new(temp, prev + bytes([i]), hashlib.sha256).digest()
            outs.append(prev)
        return outs

    def mix_key(self, ikm: bytes) -> None:
        self.ck, k = self._hkdf(ikm, 2)
        self.k, self.n = AESGCM(k), 0

    def mix_key_and_hash(self, ikm: bytes) -> None:
        self.ck, th, k = self._hkdf(ikm, 3)
        self.mix_hash(th)
        self.k, self.n = AESGCM(k), 0

    def encrypt_and_hash(self, pt: bytes) -> bytes:
        ct = self.k.encrypt(_nonce(self.n), pt, self.h)
        self.n += 1
        self.mix_hash(ct)
        return ct

    def decrypt_and_hash(self, ct: bytes) -> bytes:
        pt = self.k.decrypt(_nonce(self.n), ct, self.h)
        self.n += 1
        self.mix_hash(ct)
        return pt

    def dh(self, priv, pub: bytes) -> None:
        self.mix_key(priv.exchange(X25519PublicKey.from_public_bytes(pub)))

    def _put_e(self) -> bytes:
        self.e = X25519PrivateKey.generate()
        pub = _raw(self.e.public_key())
        self.mix_hash(pub)
        self.mix_key(pub)
        return pub

    def _get_e(self, pub: bytes) -> None:
        self.re = pub
        self.mix_hash(pub)
        self.mix_key(pub)

    def write(self, index: int, payload: bytes) -> bytes:
        if index == 1:
            self.mix_key_and_hash(self.psk)
            out = self._put_e()
        elif index == 2:
            out = self._put_e()
            self.dh(self.e, self.re)
            out += self.encrypt_and_hash(_raw(self.s.public_key()))
            self.dh(self.s, self.re)
        else:
            out = self.encrypt_and_hash(_raw(self.s.public_key()))
            self.dh(self.s, self.re)
        return out + self.encrypt_and_hash(payload)

    def read(self, index: int, msg: bytes) -> bytes:
        if index == 1:
            self.mix_key_and_hash(self.psk)
            self._get_e(msg[:32])
            rest = msg[32:]
        elif index == 2:
            self._get_e(msg[:32])
            self.dh(self.e, self.re)
            self.rs = self.decrypt_and_hash(msg[32:80])
            self.dh(self.e, self.rs)
            rest = msg[80:]
        else:
            self.rs = self.decrypt_and_hash(msg[:48])
            self.dh(self.e, self.rs)
            rest = msg[48:]
        return self.decrypt_and_hash(rest)

    def split(self) -> tuple[Cipher, Cipher]:
        """(sender, receiver) for this side."""
        k1, k2 = self._hkdf(b"", 2)
        c1, c2 = Cipher(k1), Cipher(k2)
        return (c1, c2) if self.initiator else (c2, c1)


class Identity:
    def __init__(self, seed: bytes | None = None):
        self.key = Ed25519PrivateKey.from_private_bytes(seed or os.urandom(32))
        self.id = peer_id_of(_raw(self.key.public_key()))

    def prove(self, static_public: bytes) -> bytes:
        return self.key.sign(b"pccl-noise-static:" + static_public)

    def record(self, inc: int, addrs=(), av: int = 0) -> dict:
        """This peer's own member record (join / pending / addrs), with its
        signature `rsig` over "pccl-record-v1\\0" + the msgpack of the other
        fields (our encoder and msgpack's agree: smallest forms, map order)."""
        rec = record_fields(self.id, inc, addrs, av)
        return {**rec, "rsig": self.key.sign(RECORD_CONTEXT + msgpack.packb(rec, use_bin_type=True))}


RECORD_CONTEXT = b"pccl-record-v1\0"
COMMIT_CONTEXT = b"pccl-commit-v1\0"


def record_fields(peer_id: str, inc: int, addrs=(), av: int = 0) -> dict:
    rec = {"id": peer_id, "inc": inc, "addrs": list(addrs)}
    if av:
        rec["av"] = av
    return rec


class RawPeer:
    """A hand-driven peer on one TCP connection, initiator of the handshake.

    After handshake(), send/recv use sealed records; `tx`/`rx` are the record
    ciphers and `sealed()` builds a record's bytes without sending it (for
    replay and reordering tests). `clear_data`: DATA payloads go and come
    without AEAD (the loopback fast path; handshake() sets it when both
    hellos state mirrored endpoints, a test may force it)."""

    def __init__(self, multiaddr: str, key: bytes, identity: Identity | None = None, encrypt: bool = True):
        parts = multiaddr.split("/")
        self.sock = socket.create_connection((parts[2], int(parts[4])), timeout=10)
        self.key = key
        self.identity = identity or Identity()
        self.id = self.identity.id
        self.encrypt = encrypt
        self.tx = self.rx = None
        self.rx_encrypted = True
        self.clear_data = False

    # -- framing
    def _exact(self, n: int) -> bytes:
        buf = b""
        while len(buf) < n:
            chunk = self.sock.recv(n - len(buf))
            if not chunk:
                raise ConnectionError("closed by the peer")
            buf += chunk
        return buf

    def sealed(self, ftype: int, payload: bytes = b"", **h) -> bytes:
        hdr = self.tx.seal(header(ftype, len(payload), **h))
        if not payload:
            return hdr
        if self.clear_data and ftype == DATA:
            return hdr + payload
        if self.rx_encrypted:
            return hdr + self.tx.seal(payload)
        return hdr + payload + self.tx.seal(b"", payload)

    def send(self, ftype: int, payload: bytes = b"", **h) -> None:
        self.sock.sendall(self.sealed(ftype, payload, **h) if self.tx else pack(ftype, payload, **h))

    def send_msg(self, ftype: int, obj: dict, **h) -> None:
        self.send(ftype, msgpack.packb(obj, use_bin_type=True), **h)

    def recv_frame(self) -> tuple[tuple, bytes]:
        if self.rx is None:
            h = HDR.unpack(self._exact(32))
            return h, self._exact(h[8])
        h = HDR.unpack(self.rx.open(self._exact(48)))
        if h[8] == 0:
            return h, b""
        if self.clear_data and h[2] == DATA:
            return h, self._exact(h[8])
        body = self._exact(h[8] + TAG)
        if self.rx_encrypted:
            return h, self.rx.open(body)
        self.rx.open(body[-TAG:], body[:-TAG])
        return h, body[:-TAG]

    def recv(self) -> tuple[int, bytes]:
        h, payload = self.recv_frame()
        assert h[0] == 0x4350 and h[1] == 1
        return h[2], payload

    def recv_msg(self, skip_heartbeats: bool = True) -> tuple[int, dict]:
        while True:
            ftype, payload = self.recv()
            if ftype == HEARTBEAT and skip_heartbeats:
                continue
            return ftype, msgpack.unpackb(payload, raw=False)

    # -- handshake
    def hello_payload(self, noise: Noise, purpose: str, **extra) -> bytes:
        fields = {"id": self.id, "sig": self.identity.prove(_raw(noise.s.public_key())), "inc": 7, "addrs": [],
                  "enc": self.encrypt, "purpose": purpose, **extra}
        return msgpack.packb(fields, use_bin_type=True)

    def handshake(self, purpose: str = "test", **extra) -> dict:
        """Runs the handshake as initiator; returns the responder's hello
        (its message 2 payload). Raises PermissionError when rejected."""
        noise = Noise(True, self.key)
        self.sock.sendall(pack(HELLO, noise.write(1, b""), sub=1))
        ftype, msg2 = self.recv()
        if ftype == REJECT:
            raise PermissionError(msgpack.unpackb(msg2)["reason"])
        assert ftype == HELLO, ftype
        remote = msgpack.unpackb(noise.read(2, msg2), raw=False)
        # The responder's proof: its id's key signed its static key.
        from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
        Ed25519PublicKey.from_public_bytes(public_key_of(remote["id"])).verify(
            remote["sig"], b"pccl-noise-static:" + noise.rs)
        self.sock.sendall(pack(HELLO, noise.write(3, self.hello_payload(noise, purpose, **extra)), sub=3))
        self.tx, self.rx = noise.split()
        self.rx_encrypted = self.encrypt or remote["enc"]
        self.clear_data = "lo" in extra and remote.get("lo") == list(reversed(extra["lo"]))
        ftype, payload = self.recv()
        if ftype == REJECT:
            raise PermissionError(msgpack.unpackb(payload)["reason"])
        assert ftype == AUTH, ftype
        self.remote = remote
        self.noise = noise
        return remote

    @classmethod
    def accepted(cls, sock: socket.socket, key: bytes, identity: Identity, inc: int = 7, addrs=()) -> "RawPeer":
        """Runs the handshake as responder on an accepted socket (a peer that
        dialed us); returns the peer with its records set up."""
        self = cls.__new__(cls)
        sock.settimeout(10)
        self.sock, self.key, self.identity, self.id = sock, key, identity, identity.id
        self.encrypt, self.tx, self.rx, self.rx_encrypted, self.clear_data = True, None, None, True, False
        noise = Noise(False, key)
        ftype, msg1 = self.recv()
        assert ftype == HELLO, ftype
        noise.read(1, msg1)
        mine = {"id": self.id, "sig": identity.prove(_raw(noise.s.public_key())), "inc": inc,
                "addrs": list(addrs), "enc": True, "obs": ""}
        sock.sendall(pack(HELLO, noise.write(2, msgpack.packb(mine, use_bin_type=True)), sub=2))
        ftype, msg3 = self.recv()
        assert ftype == HELLO, ftype
        remote = msgpack.unpackb(noise.read(3, msg3), raw=False)
        from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
        Ed25519PublicKey.from_public_bytes(public_key_of(remote["id"])).verify(
            remote["sig"], b"pccl-noise-static:" + noise.rs)
        self.tx, self.rx = noise.split()
        self.send(AUTH)
        self.remote, self.noise = remote, noise
        return self

    def closed_by_peer(self, timeout: float = 10.0) -> bool:
        """True when the peer closes within `timeout` (whatever it sends meanwhile)."""
        deadline = time.monotonic() + timeout
        try:
            while True:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self.sock.settimeout(left)
                if not self.sock.recv(65536):
                    return True
        except (ConnectionResetError, BrokenPipeError):
            return True
        except socket.timeout:
            return False

    def close(self) -> None:
        self.sock.close()
