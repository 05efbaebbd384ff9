"""The ring order a coordinator commits: relay-only links (symmetric NATs)
are kept out of the ring whenever some order allows it."""

from __future__ import annotations

import itertools
import random

from pccl_py import _core


def hops(order, bad):
    n = len(order)
    return sum(frozenset((order[i], order[(i + 1) % n])) in bad for i in range(n if n > 2 else 1))


def best_possible(ids, bad):
    first, rest = ids[0], ids[1:]
    return min(hops([first, *p], bad) for p in itertools.permutations(rest))


def test_no_relayed_links_keeps_the_sorted_order():
    ids = [f"Qm{c}" for c in "edcba"]
    order, n = _core.ring_order(ids, [])
    assert order == sorted(ids) and n == 0


def test_a_symmetric_peer_sits_between_two_public_peers():
    # b (symmetric NAT) reaches only the public p1 and p2 directly; a reaches everyone.
    ids = ["a", "b", "p1", "p2"]
    bad = [("a", "b")]
    order, n = _core.ring_order(ids, bad)
    assert n == 0 and sorted(order) == ids
    i = order.index("b")
    assert {order[i - 1], order[(i + 1) % 4]} == {"p1", "p2"}


def test_optimal_on_random_small_groups():
    rng = random.Random(7)
    for trial in range(60):
        n = rng.randint(2, 8)
        ids = sorted(f"peer{i:02d}" for i in range(n))
        pairs = [p for p in itertools.combinations(ids, 2) if rng.random() < 0.35]
        order, got = _core.ring_order(ids, pairs)
        bad = {frozenset(p) for p in pairs}
        assert sorted(order) == ids and order[0] == ids[0]
        assert got == hops(order, bad) == best_possible(ids, bad), (ids, pairs, order)


def test_large_groups_are_ordered_greedily_and_stay_permutations():
    ids = sorted(f"peer{i:03d}" for i in range(40))
    pairs = [(ids[i], ids[i + 1]) for i in range(39)]  # the sorted ring would be all relayed
    order, got = _core.ring_order(ids, pairs)
    assert sorted(order) == ids and got < 5


def test_deterministic():
    ids = sorted(f"p{i}" for i in range(7))
    pairs = [("p0", "p1"), ("p2", "p3"), ("p1", "p4")]
    assert _core.ring_order(ids, pairs) == _core.ring_order(list(reversed(ids)), [(b, a) for a, b in pairs])
