"""Peers behind real (namespace) NATs form a run and all-reduce."""

from __future__ import annotations

import errno
import hashlib
import json
import time

import numpy as np
import pytest

pytestmark = pytest.mark.timeout(120)


def expected_digest(n: int, count: int) -> str:
    x = sum((np.arange(count, dtype=np.float32) / 1024 + i + 1).astype(np.float32) for i in range(n))
    return hashlib.sha256(x.astype(np.float32).tobytes()).hexdigest()


def listen(host) -> list[str]:
    return [f"/ip4/{host.ip}/tcp/0"]


def start_ring(internet, hosts, comm_kw=None, count=1 << 16, relay=False, keys=None, punch=True, settle=0,
               timeout=10.0):
    """Starts a run of len(hosts) peers, hosts[0] first; returns each peer's
    (hello, joined, result) messages."""
    n = len(hosts)
    common = {"n": n, "count": count, "comm": comm_kw or {}, "settle": settle, "timeout": timeout}
    keys = keys or ["netns-key"] * n
    first = hosts[0].spawn("ring", {**common, "index": 0, "listen": listen(hosts[0]), "key": keys[0],
                                    "comm": {"relay": relay}})
    hello = [first.read(30)]
    boot = hello[0]["addrs"]
    peers = [first]
    for i, h in enumerate(hosts[1:], start=1):
        kw = {"relays": boot, "hole_punch": punch} if relay else {}
        p = h.spawn("ring", {**common, "index": i, "listen": listen(h), "bootstrap": boot, "key": keys[i],
                             "comm": kw})
        peers.append(p)
        hello.append(p.read(30))
    if any("error" in h for h in hello):
        return peers, hello, None, None
    joined = [p.read(60) for p in peers]
    for j in joined:
        assert "error" not in j, (hello, joined)
    return peers, hello, joined, [p.read(90) for p in peers]


SERVE = ("import socket;s=socket.socket();s.setsockopt(socket.SOL_SOCKET,socket.SO_REUSEADDR,1);"
         "s.bind(('0.0.0.0',7000));s.listen();print('up',flush=True);c,a=s.accept();print(a[0],a[1],flush=True)")
CONNECT = ("import socket,sys;s=socket.socket();s.setsockopt(socket.SOL_SOCKET,socket.SO_REUSEADDR,1);"
           "s.settimeout(2);s.bind(('0.0.0.0',{sport}));"
           "r=s.connect_ex(('{ip}',7000));print(r,flush=True)")


@pytest.mark.parametrize("kind", ["preserving", "symmetric", "translating"])
def test_harness_nat_maps_outbound_and_drops_inbound(internet, kind):
    """The harness itself: outbound connections are NATed to the router's address
    (same port if port-preserving, the fixed shifted one if translating, a random
    one if symmetric), unsolicited inbound ones are dropped."""
    pub, pub2 = internet.public_host(), internet.public_host()
    a = internet.nat_host(symmetric=kind == "symmetric", translating=kind == "translating")
    seen = []
    for server in (pub, pub2):  # the same host port to two destinations
        srv = server.python(SERVE)
        assert srv.stdout.readline().strip() == "up"
        out = a.python(CONNECT.format(sport=40010, ip=server.ip))
        assert out.stdout.readline().strip() == "0"
        host, port = srv.stdout.readline().split()
        assert host == a.wan_ip
        seen.append(int(port))
    if kind == "symmetric":
        assert seen[0] != 40010 and seen[1] != 40010
    else:  # endpoint-independent: one mapping for every destination
        assert seen == [40010 if kind == "preserving" else 50010] * 2
    srv_a = a.python(SERVE)
    assert srv_a.stdout.readline().strip() == "up"
    inbound = pub.python(CONNECT.format(sport=0, ip=a.wan_ip))
    assert inbound.stdout.readline().strip() == str(errno.EAGAIN)  # timed out: dropped, not refused


def test_nated_peers_join_but_cannot_be_dialed_without_relay(internet):
    """One public peer (the bootstrap) and two peers behind port-preserving NATs,
    no relay: membership forms (the NATed peers dial out to the public peer),
    but the ring needs a data link *to* a NATed peer, which nobody can dial.
    This pins down what fails without NAT traversal: a PeerLostError naming
    the unreachable private address, on every member (all-or-nothing)."""
    pub = internet.public_host()
    a, b = internet.nat_host(), internet.nat_host()
    peers, hello, joined, results = start_ring(internet, [pub, a, b])
    assert [j["joined"] for j in joined] == [3, 3, 3]
    for r in results:
        assert r.get("error") == "PeerLostError", r
    assert any("cannot reach peer" in r["message"] and "10." in r["message"] for r in results)


def kinds(result, peer_ids) -> dict:
    """peer id -> set of connection kinds this peer has to it."""
    out: dict = {}
    for c in result["connections"]:
        if c["peer"] in peer_ids:
            out.setdefault(c["peer"], set()).add(c["kind"])
    return out


@pytest.mark.parametrize("translating", [False, True], ids=["port-preserving", "translating"])
def test_relay_and_hole_punching_behind_nats(internet, translating):
    """The public peer relays; the NATed peers find themselves private, reserve
    on it, advertise /p2p-circuit addresses, and the ring's links between them
    are hole-punched: a direct connection both ways, bit-identical result.
    Translating NATs (endpoint-independent, host port p leaves as p + 10000)
    defeat the guess "observed IP, same port": each side learns where its NAT
    maps its punch port from a mapping probe to the relay before it answers."""
    pub = internet.public_host()
    a, b = internet.nat_host(translating=translating), internet.nat_host(translating=translating)
    peers, hello, joined, results = start_ring(internet, [pub, a, b], relay=True, settle=4)
    assert [h["reachability"] for h in hello] == ["unknown", "private", "private"]
    for h in hello[1:]:
        assert "/p2p-circuit/p2p/" + h["peer_id"] in h["addrs"][0]
    want = expected_digest(3, 1 << 16)
    for r in results:
        assert "error" not in r, r
        assert r["world"] == 3 and r["digest"] == want
    ida, idb = hello[1]["peer_id"], hello[2]["peer_id"]
    assert "direct" in kinds(results[1], {idb})[idb], results[1]["connections"]
    assert "direct" in kinds(results[2], {ida})[ida], results[2]["connections"]
    # The relayed links the punch replaced are retired: only direct ones remain.
    later = [p.read(30) for p in peers]
    assert kinds(later[1], {idb})[idb] == {"direct"}, later[1]["connections"]
    assert kinds(later[2], {ida})[ida] == {"direct"}, later[2]["connections"]


def test_symmetric_nat_falls_back_to_the_relay(internet):
    """One NAT is symmetric (--random-fully): punching cannot work, the relayed
    connection carries the data and the all-reduce is still bit-identical."""
    pub = internet.public_host()
    a, b = internet.nat_host(), internet.nat_host(symmetric=True)
    peers, hello, joined, results = start_ring(internet, [pub, a, b], relay=True)
    want = expected_digest(3, 1 << 16)
    for r in results:
        assert "error" not in r, r
        assert r["digest"] == want
    ida, idb = hello[1]["peer_id"], hello[2]["peer_id"]
    assert kinds(results[1], {idb})[idb] == {"relayed"}, results[1]["connections"]
    assert kinds(results[2], {ida})[ida] == {"relayed"}, results[2]["connections"]


def test_a_short_timeout_bounds_punching_behind_a_symmetric_nat(internet):
    """timeout = 2 s: each punch wait is 0.3 x 2 = 0.6 s and punching stops at
    the dial's own deadline (cpp/src/nat/timeouts.h), so every dial to the peer
    behind the symmetric NAT returns (relayed) within the op timeout: the run
    forms and the all-reduce finishes well within a few timeouts."""
    timeout = 2.0
    pub = internet.public_host()
    a, b = internet.nat_host(), internet.nat_host(symmetric=True)
    peers, hello, joined, results = start_ring(internet, [pub, a, b], relay=True, timeout=timeout)
    want = expected_digest(3, 1 << 16)
    for r in results:
        assert "error" not in r, r
        assert r["digest"] == want
    ida, idb = hello[1]["peer_id"], hello[2]["peer_id"]
    assert kinds(results[1], {idb})[idb] == {"relayed"}, results[1]["connections"]
    assert max(r["op_s"] for r in results) < 2 * timeout, [r["op_s"] for r in results]
    assert max(j["join_s"] for j in joined) < 4 * timeout, [j["join_s"] for j in joined]


def test_wrong_key_behind_nat_cannot_join_through_the_relay(internet):
    """A NATed peer without the run key is refused by the relay (and could not
    pass the end-to-end handshake either): its communicator fails with AuthError."""
    pub = internet.public_host()
    a = internet.nat_host()
    first = pub.spawn("ring", {"n": 2, "index": 0, "listen": listen(pub), "comm": {"relay": True}})
    boot = first.read(30)["addrs"]
    bad = a.spawn("ring", {"n": 2, "index": 1, "listen": listen(a), "bootstrap": boot, "key": "wrong-key",
                           "comm": {"relays": boot}})
    msg = bad.read(60)
    assert msg.get("error") == "AuthError", msg


def test_a_dead_relay_is_replaced_and_the_run_continues(internet):
    """Two relay-only peers r1, r2; a public member and two private ones (one
    behind a symmetric NAT, so their link stays relayed), each holding one
    reservation, on r1. r1 is killed: both re-reserve on r2, re-advertise,
    and the next all-reduce (retried once the broken link fails it) runs over
    r2 with all three members, bit-identical."""
    r1h, r2h, pub = internet.public_host(), internet.public_host(), internet.public_host()
    a, b = internet.nat_host(), internet.nat_host(symmetric=True)
    r1 = r1h.spawn("relay", {"listen": listen(r1h)})
    r2 = r2h.spawn("relay", {"listen": listen(r2h)})
    relays = [r1.read(30), r2.read(30)]
    raddrs = [r["addrs"][0] for r in relays]
    common = {"n": 3}
    first = pub.spawn("rounds", {**common, "index": 0, "listen": listen(pub)})
    boot = first.read(30)["addrs"]
    peers = [first]
    for i, h in ((1, a), (2, b)):
        peers.append(h.spawn("rounds", {**common, "index": i, "listen": listen(h), "bootstrap": boot,
                                        "comm": {"relays": raddrs, "relay_slots": 1}}))
    hello = [p.read(30) for p in peers[1:]]
    for h in hello:
        assert h["reachability"] == "private" and h["addrs"][0].startswith(raddrs[0] + "/p2p-circuit"), h
    for p in peers:
        assert p.read(60).get("joined") == 3
    ida, idb = hello[0]["peer_id"], hello[1]["peer_id"]
    want = expected_digest(3, 1 << 16)

    def round_(k):
        for p in peers:
            p.send(round=k)
        out = [p.read(90) for p in peers]
        for o in out:
            assert "error" not in o, json.dumps(out, indent=1)
            assert o["digest"] == want and o["world"] == 3, out
        return out

    out = round_(1)
    assert {c["via"] for c in out[1]["connections"] if c["peer"] == idb} == {relays[0]["peer_id"]}
    r1.kill()
    # Both private peers move to r2 and say so in their addresses.
    for p in peers[1:]:
        deadline = time.monotonic() + 20
        while True:
            p.send(state=1)
            s = p.read(30)
            if s["reservations"] == raddrs[1:] and s["addrs"][0].startswith(raddrs[1] + "/p2p-circuit"):
                break
            assert time.monotonic() < deadline, s
            time.sleep(0.2)
    out = round_(2)
    assert {c["via"] for c in out[1]["connections"] if c["peer"] == idb and c["kind"] == "relayed"} == \
        {relays[1]["peer_id"]}, out[1]["connections"]
    assert {c["via"] for c in out[2]["connections"] if c["peer"] == ida and c["kind"] == "relayed"} == \
        {relays[1]["peer_id"]}, out[2]["connections"]


def test_a_forwarded_port_makes_a_nated_peer_public_at_its_observed_address(internet):
    """A peer behind a NAT that forwards its listen port: two relays both
    observe the same public IP, a dial-back to that IP succeeds, so the peer
    is public, advertises the observed address first, and a public peer joins
    the run by dialing it there (no relay in the path)."""
    r1h, r2h, pub = internet.public_host(), internet.public_host(), internet.public_host()
    a = internet.nat_host(forward_port=7100)
    relays = [h.spawn("relay", {"listen": listen(h)}).read(30) for h in (r1h, r2h)]
    first = a.spawn("ring", {"n": 2, "index": 0, "listen": [f"/ip4/{a.ip}/tcp/7100"],
                             "comm": {"relays": [r["addrs"][0] for r in relays]}})
    hello = first.read(30)
    assert hello["reachability"] == "public", hello
    assert hello["addrs"][0] == f"/ip4/{a.wan_ip}/tcp/7100/p2p/{hello['peer_id']}", hello
    second = pub.spawn("ring", {"n": 2, "index": 1, "listen": listen(pub), "bootstrap": [hello["addrs"][0]]})
    second.read(30)
    for p in (first, second):
        assert p.read(60).get("joined") == 2
    results = [p.read(90) for p in (first, second)]
    for r in results:
        assert "error" not in r and r["digest"] == expected_digest(2, 1 << 16), r
    assert {c["kind"] for c in results[1]["connections"] if c["peer"] == hello["peer_id"]} == {"direct"}


def test_reachability_is_asked_again_when_a_second_peer_confirms_the_observed_ip(internet):
    """With one relay, a peer behind a NAT that forwards its listen port starts
    private: one report of its public IP is not trusted. Once it joins a run
    through a second peer that reports the same IP, it asks for a dial-back
    there, becomes public at the observed address and advertises it first."""
    r1h, pub = internet.public_host(), internet.public_host()
    a = internet.nat_host(forward_port=7100)
    relay = r1h.spawn("relay", {"listen": listen(r1h)}).read(30)
    first = pub.spawn("rounds", {"n": 2, "index": 0, "listen": listen(pub)})
    boot = first.read(30)["addrs"]
    second = a.spawn("rounds", {"n": 2, "index": 1, "listen": [f"/ip4/{a.ip}/tcp/7100"], "bootstrap": boot,
                                "comm": {"relays": [relay["addrs"][0]]}})
    hello = second.read(30)
    # Private on the relay's report alone; but its Communicator bootstraps to
    # `first` before it prints this, and under load that second report and
    # the dial-back it triggers may already be done: public is then correct.
    assert hello["reachability"] in ("private", "public"), hello
    for p in (first, second):
        assert p.read(60).get("joined") == 2
    want = f"/ip4/{a.wan_ip}/tcp/7100/p2p/{hello['peer_id']}"
    deadline = time.monotonic() + 30
    while True:
        second.send(state=1)
        state = second.read(30)
        if state["reachability"] == "public" and state["addrs"][0] == want:
            break
        assert time.monotonic() < deadline, state
        time.sleep(0.5)
    for p in (first, second):  # the run goes on
        p.send(round=1)
    for p in (first, second):
        r = p.read(60)
        assert r.get("digest") == expected_digest(2, 1 << 16), r


def test_the_ring_keeps_a_symmetric_nat_peer_between_public_peers(internet):
    """Two public peers, one behind a port-preserving NAT, one behind a
    symmetric NAT: the two NATed peers can talk only through the relay (the
    public ones reach them directly: by connection reversal). Once
    the members have reported their relay-only links, the coordinator orders
    the ring so that the symmetric peer's neighbours are the public peers:
    no ring hop goes through the relay."""
    p1, p2 = internet.public_host(), internet.public_host()
    a, b = internet.nat_host(), internet.nat_host(symmetric=True)
    first = p1.spawn("rounds", {"n": 4, "index": 0, "listen": listen(p1), "comm": {"relay": True}})
    h0 = first.read(30)
    boot = h0["addrs"]
    peers = [first]
    for i, h in ((1, p2), (2, a), (3, b)):
        kw = {"relays": boot} if not h.public else {}
        peers.append(h.spawn("rounds", {"n": 4, "index": i, "listen": listen(h), "bootstrap": boot, "comm": kw}))
    ids = [h0["peer_id"]] + [p.read(30)["peer_id"] for p in peers[1:]]
    for p in peers:
        assert p.read(60).get("joined") == 4
    want = hashlib.sha256(sum((np.arange(1 << 16, dtype=np.float32) / 1024 + i + 1).astype(np.float32)
                              for i in range(4)).astype(np.float32).tobytes()).hexdigest()
    for k in (1, 2):
        for p in peers:
            p.send(round=k, topo=k == 2)
        out = [p.read(90) for p in peers]
        for o in out:
            assert "error" not in o and o["digest"] == want and o["world"] == 4, json.dumps(out, indent=1)
    ring = out[0]["members"]
    assert all(o["members"] == ring for o in out)
    i = ring.index(ids[3])
    neighbours = {ring[i - 1], ring[(i + 1) % 4]}
    assert neighbours == {ids[0], ids[1]}, (ring, ids)
    # p2 reached b (private, symmetric NAT) through the relay, then asked b to
    # dial it back directly (connection reversal): their link is direct.
    assert "direct" in {c["kind"] for c in out[1]["connections"] if c["peer"] == ids[3]}, out[1]["connections"]
