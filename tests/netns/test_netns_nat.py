"""Peers behind real (namespace) NATs form a run and all-reduce."""

from __future__ import annotations

import errno
import hashlib

import numpy as np
import pytest

pytestmark = pytest.mark.timeout(120)


def expected_digest(n: int, count: int) -> str:
    x = sum((np.arange(count, dtype=np.float32) / 1024 + i + 1).astype(np.float32) for i in range(n))
    return hashlib.sha256(x.astype(np.float32).tobytes()).hexdigest()


def listen(host) -> list[str]:
    return [f"/ip4/{host.ip}/tcp/0"]


def start_ring(internet, hosts, comm_kw=None, count=1 << 16):
    """Starts a run of len(hosts) peers, hosts[0] first; returns each peer's
    (hello, joined, result) messages."""
    n = len(hosts)
    common = {"n": n, "count": count, "comm": comm_kw or {}}
    first = hosts[0].spawn("ring", {**common, "index": 0, "listen": listen(hosts[0])})
    hello = [first.read(30)]
    boot = hello[0]["addrs"]
    peers = [first]
    for i, h in enumerate(hosts[1:], start=1):
        p = h.spawn("ring", {**common, "index": i, "listen": listen(h), "bootstrap": boot})
        peers.append(p)
        hello.append(p.read(30))
    joined = [p.read(60) for p in peers]
    return peers, hello, joined, [p.read(90) for p in peers]


SERVE = ("import socket;s=socket.socket();s.setsockopt(socket.SOL_SOCKET,socket.SO_REUSEADDR,1);"
         "s.bind(('0.0.0.0',7000));s.listen();print('up',flush=True);c,a=s.accept();print(a[0],a[1],flush=True)")
CONNECT = ("import socket,sys;s=socket.socket();s.settimeout(2);s.bind(('0.0.0.0',{sport}));"
           "r=s.connect_ex(('{ip}',7000));print(r,flush=True)")


@pytest.mark.parametrize("symmetric", [False, True])
def test_harness_nat_maps_outbound_and_drops_inbound(internet, symmetric):
    """The harness itself: outbound connections are NATed to the router's address
    (same port unless symmetric), unsolicited inbound ones are dropped."""
    pub = internet.public_host()
    a = internet.nat_host(symmetric=symmetric)
    srv = pub.python(SERVE)
    assert srv.stdout.readline().strip() == "up"
    out = a.python(CONNECT.format(sport=41000, ip=pub.ip))
    assert out.stdout.readline().strip() == "0"
    host, port = srv.stdout.readline().split()
    assert host == a.wan_ip
    assert (int(port) != 41000) if symmetric else (int(port) == 41000)
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
