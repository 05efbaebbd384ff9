"""An independent Python implementation of the pccl wire protocol (frames and
handshake), used to check interoperability and hostile input."""

from __future__ import annotations

import hashlib
import hmac
import os
import socket
import struct

import msgpack

import pccl_py

HDR = struct.Struct("<HBBIQIIII")
HELLO, AUTH, REJECT, CONTROL, DATA, HEARTBEAT, RELAY = 1, 2, 3, 4, 5, 6, 7


def pack(ftype: int, payload: bytes = b"", **h) -> bytes:
    return HDR.pack(0x4350, 1, ftype, h.get("tag", 0), h.get("epoch", 0), h.get("seq", 0), h.get("chunk", 0),
                    h.get("sub", 0), len(payload)) + payload


def proof(key: bytes, sender: str, receiver: str, receiver_nonce: bytes, sender_nonce: bytes) -> bytes:
    msg = b"pccl-auth-v1\0" + sender.encode() + b"\0" + receiver.encode() + b"\0" + receiver_nonce + sender_nonce
    return hmac.new(key, msg, hashlib.sha256).digest()


class RawPeer:
    """A hand-driven peer on one TCP connection."""

    def __init__(self, multiaddr: str, key: bytes):
        parts = multiaddr.split("/")
        self.sock = socket.create_connection((parts[2], int(parts[4])), timeout=10)
        self.key = key
        self.id = pccl_py._core.peer_id_from_secret(os.urandom(32))
        self.nonce = os.urandom(32)

    def send(self, ftype: int, payload: bytes = b"", **h) -> None:
        self.sock.sendall(pack(ftype, payload, **h))

    def send_msg(self, ftype: int, obj: dict) -> None:
        self.send(ftype, msgpack.packb(obj, use_bin_type=True))

    def _exact(self, n: int) -> bytes:
        buf = b""
        while len(buf) < n:
            chunk = self.sock.recv(n - len(buf))
            if not chunk:
                raise ConnectionError("closed by the peer")
            buf += chunk
        return buf

    def recv(self) -> tuple[int, bytes]:
        magic, ver, ftype, tag, epoch, seq, chunk, sub, length = HDR.unpack(self._exact(32))
        assert magic == 0x4350 and ver == 1
        return ftype, self._exact(length)

    def recv_msg(self, skip_heartbeats: bool = True) -> tuple[int, dict]:
        while True:
            ftype, payload = self.recv()
            if ftype == HEARTBEAT and skip_heartbeats:
                continue
            return ftype, msgpack.unpackb(payload, raw=False)

    def handshake(self, purpose: str = "test") -> dict:
        """Runs the handshake; returns the remote hello. Raises if rejected."""
        self.send_msg(HELLO, {"v": 1, "id": self.id, "inc": 7, "nonce": self.nonce, "addrs": [],
                              "purpose": purpose, "obs": ""})
        ftype, hello = self.recv_msg()
        assert ftype == HELLO, ftype
        self.remote = hello
        self.send_msg(AUTH, {"mac": proof(self.key, self.id, hello["id"], hello["nonce"], self.nonce)})
        ftype, auth = self.recv_msg()
        if ftype == AUTH:
            if hmac.compare_digest(auth["mac"], proof(self.key, hello["id"], self.id, self.nonce, hello["nonce"])):
                return hello
            # The peer does not know our key; it must also refuse ours.
            ftype, auth = self.recv_msg()
        assert ftype == REJECT, ftype
        raise PermissionError(auth["reason"])

    def closed_by_peer(self, timeout: float = 10.0) -> bool:
        self.sock.settimeout(timeout)
        try:
            while True:
                if not self.sock.recv(65536):
                    return True
        except (ConnectionResetError, BrokenPipeError):
            return True
        except socket.timeout:
            return False

    def close(self) -> None:
        self.sock.close()
