"""Relay reservations on loopback (no NAT needed): a peer holds `relay_slots`
reservations, replaces a dead relay by the next configured one, refreshes
its reservation before the relay's TTL ends; a relay ends reservations
nobody refreshes and circuits over their duration limit. Hand-driven peers
(tests/wire.py) check the relay's bookkeeping (cpp/src/nat/relay_book.h)
against hostile or broken clients: circuits nobody accepts, accepts on the
wrong connection, malformed messages."""

from __future__ import annotations

import socket
import time

import pytest

import pccl_py as pc
from wire import RELAY, Identity, RawPeer

KEY = "relay-key"
pytestmark = pytest.mark.timeout(60)


def wait_until(pred, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = pred()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def relay(**limits) -> pc.Communicator:
    return pc.Communicator(run_key=KEY, relay=pc.RelayLimits(**limits) if limits else True)


def test_a_dead_relay_is_replaced_by_the_next_one():
    r1, r2, r3 = relay(), relay(), relay()
    relays = [r.addrs[0] for r in (r1, r2, r3)]
    a = pc.Communicator(run_key=KEY, relays=relays, relay_slots=2)
    try:
        assert a.reservations == relays[:2]
        assert a.reachability == "public"
        r1.close()
        wait_until(lambda: a.reservations == relays[1:], 15, f"reservations on r2 and r3, have {a.reservations}")
        r2.close()
        wait_until(lambda: a.reservations == relays[2:], 15, f"a reservation on r3 only, have {a.reservations}")
    finally:
        a.close()
        for r in (r1, r2, r3):
            r.close()


def test_one_slot_moves_to_the_next_relay_and_back_is_not_needed():
    r1, r2 = relay(), relay()
    relays = [r1.addrs[0], r2.addrs[0]]
    a = pc.Communicator(run_key=KEY, relays=relays, relay_slots=1)
    try:
        assert a.reservations == relays[:1]
        r1.close()
        wait_until(lambda: a.reservations == relays[1:], 15, f"a reservation on r2, have {a.reservations}")
        time.sleep(0.5)
        assert a.reservations == relays[1:]  # one slot: no second reservation
    finally:
        a.close()
        r1.close()
        r2.close()


def test_reservations_are_refreshed_before_their_ttl():
    r = relay(reservation_ttl=1.0)
    a = pc.Communicator(run_key=KEY, relays=[r.addrs[0]])
    try:
        time.sleep(3.0)  # three TTLs: only the refreshes keep it
        assert a.reservations == [r.addrs[0]]
    finally:
        a.close()
        r.close()


def test_the_relay_ends_a_reservation_nobody_refreshes():
    r = relay(reservation_ttl=1.0)
    raw = RawPeer(r.addrs[0], KEY.encode())
    try:
        raw.handshake(purpose="relay-reserve")
        raw.send_msg(RELAY, {"t": "reserve"})
        ftype, reply = raw.recv_msg()
        assert ftype == RELAY and reply["t"] == "reserved" and reply["ttl"] == 1.0
        t0 = time.monotonic()
        assert raw.closed_by_peer(timeout=10)
        assert 0.5 < time.monotonic() - t0 < 5
    finally:
        raw.close()
        r.close()


def test_the_relay_refuses_reservations_over_its_limit():
    r = relay(max_reservations=1)
    a = pc.Communicator(run_key=KEY, relays=[r.addrs[0]])
    b = pc.Communicator(run_key=KEY, relays=[r.addrs[0]])
    try:
        assert a.reservations == [r.addrs[0]]
        assert b.reservations == [] and b.reachability == "unknown"
    finally:
        for c in (a, b, r):
            c.close()


def test_a_circuit_over_its_duration_limit_is_closed():
    """b joins a's run through a circuit on r (no hole punching); r closes
    that circuit after max_circuit_seconds; the run goes on over the direct
    links the ring dialed."""
    r = relay(max_circuit_seconds=1.5)
    a = pc.Communicator(run_key=KEY, relays=[r.addrs[0]])
    circuit = f"{r.addrs[0]}/p2p-circuit/p2p/{a.peer_id}"
    b = pc.Communicator(run_key=KEY, bootstrap=[circuit], hole_punch=False)
    try:
        import threading
        t = threading.Thread(target=a.wait_for_peers, args=(2, 30.0))
        t.start()
        b.update_topology()
        t.join()
        relayed = [c for c in b.connections() if c["peer"] == a.peer_id and c["kind"] == "relayed"]
        assert relayed and relayed[0]["via"] == r.peer_id, b.connections()
        # RTT probes run end to end through the relay too (loopback: well under a second).
        wait_until(lambda: all(c["rtt_ms"] is not None for c in b.connections() if c["kind"] == "relayed"), 5,
                   "an RTT measurement through the relay")
        assert all(0 < c["rtt_ms"] < 1000 for c in b.connections() if c["rtt_ms"] is not None), b.connections()
        wait_until(lambda: not [c for c in b.connections() if c["kind"] == "relayed"], 10,
                   "the relay to close the circuit")
    finally:
        for c in (b, a, r):
            c.close()


def test_a_short_timeout_bounds_the_wait_for_an_unresponsive_relay():
    """A relay that accepts TCP but never speaks: the constructor's reservation
    attempt gives up after min(5 s, timeout / 2) (cpp/src/nat/timeouts.h), not
    after a fixed 5 s, so the configured timeout bounds it."""
    hole = socket.socket()
    hole.bind(("127.0.0.1", 0))
    hole.listen(8)
    stranger = pc.Communicator(run_key=KEY)  # only for a well-formed relay peer id
    relay_id = stranger.peer_id
    stranger.close()
    addr = f"/ip4/127.0.0.1/tcp/{hole.getsockname()[1]}/p2p/{relay_id}"
    try:
        t0 = time.monotonic()
        a = pc.Communicator(run_key=KEY, relays=[addr], timeout=1.0)
        elapsed = time.monotonic() - t0
        try:
            assert a.reservations == [] and a.reachability == "unknown"
            assert 0.45 < elapsed < 1.5, elapsed  # it waited for the relay, timeout / 2
        finally:
            t1 = time.monotonic()
            a.close()
            assert time.monotonic() - t1 < 1.0  # a retry in progress ends at once
    finally:
        hole.close()


@pytest.mark.parametrize("bad", [{"relay_slots": 0}, {"relay": pc.RelayLimits(max_circuit_seconds=-1)},
                                 {"relay": pc.RelayLimits(reservation_ttl=0.1)}])
def test_bad_relay_settings_are_rejected(bad):
    with pytest.raises(pc.InvalidArgumentError):
        pc.Communicator(run_key=KEY, **bad)


# ---- the relay against hand-driven clients (regressions of bugs found by review and fuzzing)

def raw_on(r: pc.Communicator, purpose: str, identity: Identity | None = None) -> RawPeer:
    p = RawPeer(r.addrs[0], KEY.encode(), identity)
    p.handshake(purpose=purpose)
    return p


def reserved_on(r: pc.Communicator, identity: Identity | None = None) -> RawPeer:
    p = raw_on(r, "relay-reserve", identity)
    p.send_msg(RELAY, {"t": "reserve"})
    assert p.recv_msg() == (RELAY, {"t": "reserved", "ttl": 600.0})
    return p


def refused(p: RawPeer, reason: str) -> None:
    """The relay answers an error with `reason` and closes the connection."""
    assert p.recv_msg() == (RELAY, {"t": "error", "reason": reason})
    assert p.closed_by_peer(timeout=5)


def test_a_malformed_dialback_address_is_skipped_not_fatal():
    """An address the relay cannot parse is one it cannot dial back, not a
    reason to end the reservation (ip4_target threw on malformed text, which
    closed the asking connection)."""
    r = relay()
    b = reserved_on(r)
    try:
        b.send_msg(RELAY, {"t": "dialback", "addrs": ["garbage", "/ip4/999.1.2.3/tcp/1", "/ip4/1.2.3.4/tcp/x"]})
        assert b.recv_msg() == (RELAY, {"t": "dialback", "ok": False})
        b.send_msg(RELAY, {"t": "reserve"})  # the reservation lives on
        assert b.recv_msg() == (RELAY, {"t": "reserved", "ttl": 600.0})
    finally:
        b.close()
        r.close()


def test_a_circuit_its_target_never_accepts_frees_its_slot():
    """A target that never accepts: its pending circuit ended after
    circuit_setup_s (min(10 s, timeout)) with an error to the dialer, and at
    once when the dialer leaves. Before, pending circuits were never removed
    and filled max_circuits for good."""
    r = pc.Communicator(run_key=KEY, relay=pc.RelayLimits(max_circuits=1), timeout=2.0)
    b = reserved_on(r)
    dialers = []
    try:
        def dial() -> RawPeer:
            a = raw_on(r, "relay-hop")
            dialers.append(a)
            a.send_msg(RELAY, {"t": "connect", "target": b.id})
            return a

        a1 = dial()
        ftype, incoming = b.recv_msg()
        assert ftype == RELAY and incoming["t"] == "incoming" and incoming["from"] == a1.id
        refused(dial(), "relay circuits are full")
        t0 = time.monotonic()
        refused(a1, "the target did not accept the circuit in time")
        assert 1.5 < time.monotonic() - t0 < 4.0
        a3 = dial()  # the slot is free again
        assert b.recv_msg()[1]["from"] == a3.id
        a3.close()  # the dialer leaves: its pending circuit goes with it
        deadline = time.monotonic() + 5
        while True:  # (the relay learns of the close a moment later)
            a4 = dial()
            b.sock.settimeout(0.5)
            try:
                assert b.recv_msg()[1]["from"] == a4.id
                break
            except socket.timeout:
                assert time.monotonic() < deadline, "the slot of a dialer that left stayed taken"
    finally:
        for p in (b, *dialers):
            p.close()
        r.close()


def test_an_accept_on_the_wrong_connection_is_refused_and_the_circuit_waits():
    """The second side of a circuit must be a fresh relay-stop connection of
    its target: an accept on the target's reservation (or any connection
    with a role, the dialer's own included) is refused, and the circuit
    stays for the right one, which then gets it spliced."""
    r = relay()
    b_id = Identity()
    b = reserved_on(r, b_id)
    a = raw_on(r, "relay-hop")
    stops = []
    try:
        a.send_msg(RELAY, {"t": "connect", "target": b_id.id})
        cid = b.recv_msg()[1]["cid"]
        assert cid >> 63 == 1  # relay-assigned ids carry the top bit: never one of the relay's own dials
        b.send_msg(RELAY, {"t": "accept", "cid": cid})  # on the reservation
        refused(b, "an accept on a connection for something else")
        for wrong in (cid ^ (1 << 63), cid + 1):  # no circuit of the relay's has these ids
            s = raw_on(r, "relay-stop", b_id)
            stops.append(s)
            s.send_msg(RELAY, {"t": "accept", "cid": wrong})
            refused(s, "unknown circuit")
        intruder = raw_on(r, "relay-stop")  # another peer
        stops.append(intruder)
        intruder.send_msg(RELAY, {"t": "accept", "cid": cid})
        refused(intruder, "circuit accepted by the wrong peer")
        s = raw_on(r, "relay-stop", b_id)
        stops.append(s)
        s.send_msg(RELAY, {"t": "accept", "cid": cid})
        assert s.recv_msg() == (RELAY, {"t": "open"})
        assert a.recv_msg() == (RELAY, {"t": "open"})
        a.sock.sendall(b"through the relay")  # spliced byte for byte, once each way
        assert s._exact(17) == b"through the relay"
        s.sock.sendall(b"and back")
        assert a._exact(8) == b"and back"
    finally:
        for p in (a, b, *stops):
            p.close()
        r.close()


def test_a_circuit_to_oneself_is_refused():
    """connect naming the dialer itself: before, the relay sent the incoming
    over the dialer's reservation, and the dialer could accept on its own
    hop connection, a circuit spliced to itself."""
    r = relay()
    me = Identity()
    res = reserved_on(r, me)
    hop = raw_on(r, "relay-hop", me)
    try:
        hop.send_msg(RELAY, {"t": "connect", "target": me.id})
        refused(hop, "a circuit to oneself")
        res.send_msg(RELAY, {"t": "reserve"})  # no incoming came on the reservation
        assert res.recv_msg() == (RELAY, {"t": "reserved", "ttl": 600.0})
    finally:
        res.close()
        hop.close()
        r.close()


@pytest.mark.parametrize("bad", [
    {"t": "connect"},                                   # a missing field
    {"t": "connect", "target": "not-a-peer-id"},
    {"t": "accept", "cid": -1},                         # a field of the wrong type
    {"t": "accept", "cid": 0},
    {"t": "dialback", "addrs": ["/ip4/1.2.3.4/tcp/1"] * 33},  # over kMaxRelayAddrs
    {"t": "dcutr-reverse", "cid": 1, "purpose": "p" * 65, "addrs": []},
    {"t": "error", "reason": "r" * 513},
    {"t": "reserve", "pad": "x" * (33 << 10)},          # over kMaxRelayPayload
    [1, 2, 3],                                          # not a map
])
def test_a_malformed_relay_message_closes_that_connection_only(bad):
    r = relay()
    other = reserved_on(r)
    p = raw_on(r, "relay-reserve")
    try:
        p.send_msg(RELAY, bad)
        assert p.closed_by_peer(timeout=5)
        other.send_msg(RELAY, {"t": "reserve"})
        assert other.recv_msg() == (RELAY, {"t": "reserved", "ttl": 600.0})
        p2 = raw_on(r, "relay-reserve")  # the relay serves new connections too
        p2.send_msg(RELAY, {"t": "x-newer-type"})  # unknown types are ignored
        p2.send_msg(RELAY, {"t": "reserve"})
        assert p2.recv_msg() == (RELAY, {"t": "reserved", "ttl": 600.0})
        p2.close()
    finally:
        p.close()
        other.close()
        r.close()
