"""A hostile *member* of a run, for the security tests: an Identity driven by
hand over tests/wire.py. It joins through the real protocol (signed join
record, commit), keeps itself alive with heartbeats, accepts the members'
data connections (it advertises a listener), records everything it receives
and sends whatever a test wants on authenticated connections."""

from __future__ import annotations

import queue
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import msgpack

from wire import CONTROL, HEARTBEAT, Identity, RawPeer


def done_bytes(epoch: int, tag: int, seq: int, peer_id: str) -> bytes:
    """What a member signs when it is done with an op (mesh.cpp done_bytes)."""
    return b"pccl-done-v1\0" + msgpack.packb([epoch, tag, seq, peer_id], use_bin_type=True)


def identity_above(ids) -> Identity:
    """An identity whose id sorts after every id in `ids` (so it never
    coordinates, and its ring position is predictable)."""
    while True:
        ident = Identity()
        if all(ident.id > i for i in ids):
            return ident


class RawMember:
    def __init__(self, comms, key: bytes, identity: Identity | None = None, inc: int = 7):
        self.identity = identity or identity_above([c.peer_id for c in comms])
        self.id, self.inc, self.key = self.identity.id, inc, key
        self.lock = threading.Lock()  # record counters: one sender at a time per link
        self.links: dict[str, list[RawPeer]] = {}
        self.inbox: queue.Queue = queue.Queue()
        self.closed = threading.Event()
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.addr = f"/ip4/127.0.0.1/tcp/{self.listener.getsockname()[1]}/p2p/{self.id}"
        self._threads = [threading.Thread(target=self._accept, daemon=True),
                         threading.Thread(target=self._heartbeat, daemon=True)]
        for t in self._threads:
            t.start()
        for c in comms:  # a control link to every member, dialed by us
            p = RawPeer(c.addrs[0], key, self.identity)
            p.handshake(inc=inc, addrs=[self.addr])
            self._add(p)

    # -- plumbing
    def _add(self, p: RawPeer) -> None:
        with self.lock:
            if self.closed.is_set():  # close() has run: nobody would close this one
                p.close()
                return
            self.links.setdefault(p.remote["id"], []).append(p)
        threading.Thread(target=self._read, args=(p,), daemon=True).start()

    def _accept(self) -> None:
        self.listener.settimeout(0.2)
        while not self.closed.is_set():
            try:
                s, _ = self.listener.accept()
            except (socket.timeout, OSError):
                continue
            try:
                p = RawPeer.accepted(s, self.key, self.identity, self.inc, [self.addr])
            except Exception:  # noqa: BLE001 - a failed dial is the dialer's problem
                s.close()
                continue
            self._add(p)

    def _read(self, p: RawPeer) -> None:
        while not self.closed.is_set():
            try:
                h, payload = p.recv_frame()
            except socket.timeout:
                continue
            except Exception:  # noqa: BLE001 - closed (by either side)
                return
            if h[2] == CONTROL:
                self.inbox.put((p.remote["id"], msgpack.unpackb(payload, raw=False)))

    def _heartbeat(self) -> None:
        while not self.closed.wait(0.25):
            for peer in list(self.links):
                try:
                    self.send(peer, HEARTBEAT)
                except OSError:
                    pass

    # -- what a test does
    def send(self, peer: str, ftype: int, payload: bytes = b"", **h) -> None:
        with self.lock:
            self.links[peer][0].send(ftype, payload, **h)

    def send_msg(self, peer: str, obj: dict, **h) -> None:
        self.send(peer, CONTROL, msgpack.packb(obj, use_bin_type=True), **h)

    def wait_msg(self, pred, timeout: float = 10.0):
        """The first control message (peer, msg) with pred(peer, msg), dropping others."""
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError("no matching control message")
            try:
                peer, msg = self.inbox.get(timeout=left)
            except queue.Empty:
                continue
            if pred(peer, msg):
                return peer, msg

    def join(self, comms) -> dict:
        """Asks comms[0] to admit us and runs the members' update_topology();
        returns the commit that admits us."""
        self.send_msg(comms[0].peer_id, {"t": "join", **self.identity.record(self.inc, [self.addr])})
        self.wait_msg(lambda _p, m: m.get("t") == "join_ack")
        with ThreadPoolExecutor(len(comms)) as ex:
            for f in [ex.submit(c.update_topology) for c in comms]:
                f.result(timeout=30)
        _, commit = self.wait_msg(lambda _p, m: m.get("t") == "commit" and any(
            x["id"] == self.id for x in m["members"]))
        self.commit = commit
        return commit

    def ready(self, coordinator: str) -> None:
        """Our part of the members' next update_topology()."""
        c = self.commit
        self.send_msg(coordinator, {"t": "ready", "epoch": c["epoch"], "members": c["members"], "pending": [],
                                    "relayed": [], "commit": c})

    def done_vote(self, epoch: int, tag: int, seq: int, also=()) -> dict:
        """Our vote that we finished an op's data phase, signed as members
        sign theirs; `also` adds (id, signature) claims for others."""
        sig = self.identity.key.sign(done_bytes(epoch, tag, seq, self.id))
        return {"t": "vote", "epoch": epoch, "tag": tag, "seq": seq, "done": [self.id] + [a[0] for a in also],
                "dsig": [sig] + [a[1] for a in also], "nack": [], "fail": False, "status": 0, "msg": ""}

    def close(self) -> None:
        if self.closed.is_set():
            return
        for peer in list(self.links):
            try:
                self.send_msg(peer, {"t": "bye"})
            except OSError:
                pass
        with self.lock:
            self.closed.set()
            links = [p for ps in self.links.values() for p in ps]
        self._threads[0].join()  # no accept in flight after this (a handshake in it ends within 10 s)
        for p in links:
            p.close()
        self.listener.close()
