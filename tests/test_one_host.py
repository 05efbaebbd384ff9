"""A view on one machine (every member advertises only direct loopback TCP
addresses) pipelines large all-reduces in larger sub-chunks; the decision is
a pure function of the view, so every member cuts the same pieces."""

from __future__ import annotations

import numpy as np
import pytest

from pccl_py import _core
from local_group import close_all, make_group, run_all

LO4 = "/ip4/127.0.0.1/tcp/4001"
LO6 = "/ip6/::1/tcp/4002"


@pytest.mark.parametrize("addrs,expected", [
    ([[LO4], [LO4, LO6], ["/ip4/127.9.8.7/tcp/1"]], True),
    ([[LO4], ["/ip4/10.0.0.2/tcp/4001"]], False),  # a member on another machine
    ([[LO4], [LO4, "/ip4/192.168.1.5/tcp/4001"]], False),  # reachable off this host too
    ([[LO4], ["/ip4/127.0.0.1/tcp/4001/p2p-circuit"]], False),  # relayed
    ([[LO4], ["/dns4/localhost/tcp/4001"]], False),  # a name: could resolve anywhere
    ([[LO4], []], False),  # advertises nothing
    ([[LO4], ["/memory/3"]], False),
    ([[LO4], ["not a multiaddr"]], False),
    ([], False),
])
def test_one_host_is_decided_from_the_advertised_addresses(addrs, expected):
    assert _core.one_host(addrs) is expected


@pytest.mark.parametrize("n,count", [(3, (3 << 20) + 7), (2, 1 << 18)])
def test_large_ops_on_one_host_are_exact(n, count):
    """Loopback peers (the default listen address): integer sums, which do not
    depend on the order of additions, match numpy exactly at sizes cut into
    1 MiB sub-chunks and at sizes that keep the configured ones."""
    comms = make_group(n, key=f"one-host-{n}")
    try:
        assert _core.one_host([c.addrs for c in comms]) is True  # what they advertise (with /p2p/<id>)
        rng = np.random.default_rng(n)
        xs = [rng.integers(-1000, 1000, count, dtype=np.int32) for _ in comms]
        want = np.sum(xs, axis=0, dtype=np.int32)
        res = run_all(comms, lambda c, x: c.all_reduce(x), xs)
        assert not any(isinstance(r, Exception) for r in res), res
        for x in xs:
            assert np.array_equal(x, want)
        # The pool dialed one stream per neighbour, not the configured 8
        # (each way: ours to it, and its to us).
        for c in comms:
            per_peer = {}
            for k in c.connections():
                if k["purpose"] == "data":
                    per_peer[k["peer"]] = per_peer.get(k["peer"], 0) + 1
            assert per_peer and max(per_peer.values()) <= 2, per_peer
    finally:
        close_all(comms)
