"""Shared state under churn, with real processes: a joiner receives the
state through sync_state (hashed in every process) and then takes part in
all-reduces; two diverged groups merge and converge to the popular state at
the highest revision."""

from __future__ import annotations

import pytest

from churn_group import ChurnGroup
from churn_peer import state_digest, state_of

SIZES = {"w": 3 * 1024 * 1024 + 5, "b": 1000, "step": 8}


@pytest.mark.timeout(60)
def test_joiner_receives_state_then_allreduces():
    n, after = 3, 5
    with ChurnGroup("state_join", {"timeout": 3.0, "sizes": SIZES, "after": after}) as g:
        g.start_group(n)
        g.start(n, bootstrap=g.addrs[1], n=n, joiner=True)
        syncs = {s: g.wait_for(lambda slot, m, s=s: slot == s and m.get("synced"), 40, f"sync of {s}", since=0)[1]
                 for s in range(n + 1)}
        assert len({m["digest"] for m in syncs.values()}) == 1, syncs  # byte-identical everywhere
        assert len({m["revision"] for m in syncs.values()}) == 1 and syncs[0]["revision"] > 0
        assert syncs[n]["received"] == len(SIZES) and syncs[n]["rx"] >= sum(SIZES.values())
        assert all(syncs[s]["received"] == 0 for s in range(n))
        assert all(m["world"] == n + 1 for m in syncs.values())
        def rounds():
            return {s: [m for slot, m in g.log if slot == s and m.get("round")] for s in range(n + 1)}
        g.wait_for(lambda *_: all(len(r) >= after for r in rounds().values()), 30, "the rounds after the join",
                   since=0)
        rounds = rounds()
        for i in range(after):
            ms = [rounds[s][i] for s in range(n + 1)]
            assert len({m["digest"] for m in ms}) == 1 and len({m["state"] for m in ms}) == 1, ms
            assert len(ms[0]["members"]) == n + 1 and g.ids[n] in ms[0]["members"]


@pytest.mark.timeout(60)
@pytest.mark.parametrize("b_revision,winner", [(7, "A"), (8, "B"), (9, "A")])
def test_partition_heals_to_popular_state_at_highest_revision(b_revision, winner):
    """Group A (3 peers, revision 7, synced) and group B (2 peers, same run
    key, revision b_revision) trained apart. B's peers restart their
    communicators bootstrapping into A; the next sync_state makes everyone
    hold A's state (more popular at the same revision; or B's revision 9 is
    more than A's committed revision + 1 and B is no majority) or B's (8 is
    the committed revision + 1)."""
    sizes = {"w": 256 * 1024, "b": 333}
    total = 5
    a = ChurnGroup("partition", {"timeout": 3.0, "sizes": sizes, "seed": 1, "revision": 7})
    b = ChurnGroup("partition", {"timeout": 3.0, "sizes": sizes, "seed": 2, "revision": b_revision})
    with a, b:
        a.start_group(3)
        b.start_group(2)
        ga = [a.wait_for(lambda slot, m, s=s: slot == s and m.get("group"), 40, "group A", since=0)[1] for s in range(3)]
        gb = [b.wait_for(lambda slot, m, s=s: slot == s and m.get("group"), 40, "group B", since=0)[1] for s in range(2)]
        da, db = state_digest(state_of(1, sizes)), state_digest(state_of(2, sizes))
        assert {m["digest"] for m in ga} == {da} and {m["digest"] for m in gb} == {db} and da != db
        for s in range(3):
            a.peers[s].send(sync=total)
        for s in range(2):
            b.peers[s].send(merge=a.addrs[s % 3], sync=total)
        res = [a.wait_for(lambda slot, m, s=s: slot == s and m.get("synced"), 40, f"A{s} synced", since=0)[1]
               for s in range(3)]
        res += [b.wait_for(lambda slot, m, s=s: slot == s and m.get("synced"), 40, f"B{s} synced", since=0)[1]
                for s in range(2)]
        want = da if winner == "A" else db
        assert all(m["world"] == total for m in res), res
        assert {m["digest"] for m in res} == {want}
        assert {m["revision"] for m in res} == {7 if winner == "A" else b_revision}
        losers = res[3:] if winner == "A" else res[:3]
        assert all(m["received"] == len(sizes) for m in losers)
