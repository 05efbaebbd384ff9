"""Relay reservations on loopback (no NAT needed): a peer holds `relay_slots`
reservations, replaces a dead relay by the next configured one, refreshes
its reservation before the relay's TTL ends; a relay ends reservations
nobody refreshes and circuits over their duration limit."""

from __future__ import annotations

import socket
import time

import pytest

import pccl_py as pc
from wire import RELAY, RawPeer

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
