"""The stream pool (mesh/links.h) dials the configured streams to each ring
neighbour and, for the direct algorithm's fan-out to every other member, as
many but at most Links::kOtherStreamsTotal (64) over all of them. One group
in this process over the in-memory transport (not a one-host view: that
dials one stream per neighbour, see test_one_host.py)."""

from __future__ import annotations

import collections

import numpy as np

from local_group import close_all, make_group, run_all


def test_a_direct_op_among_many_members_dials_fewer_streams_to_each_non_neighbour():
    n = 10  # 9 others: 64 // 9 = 7 streams each, the default 8 to the two ring neighbours
    comms = make_group(n, key="stream-pool", listen=["/memory/0"])
    try:
        xs = [np.full(1 << 14, i, np.float32) for i in range(n)]
        res = run_all(comms, lambda c, x: c.all_reduce(x, algorithm="direct"), xs)
        assert not any(isinstance(r, Exception) for r in res), res
        assert all(np.array_equal(x, np.full(1 << 14, n * (n - 1) / 2, np.float32)) for x in xs)
        for c in comms:
            # Both directions of each pair: its dials to us and ours to it.
            per_peer = collections.Counter(k["peer"] for k in c.connections() if k["purpose"] == "data")
            assert sorted(per_peer.values()) == [14] * (n - 3) + [16] * 2, per_peer
    finally:
        close_all(comms)
