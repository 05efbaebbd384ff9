"""The protocol simulator (cpp/src/sim/simulator.h, private _core._simulate):
a fixed budget of seeds in CI, each checking every invariant; the checker
itself must be able to fail (a deliberately broken commit is found).

A failing seed prints itself; replay it with
    python bench/simulate.py --peers N --seed S
"""

import pytest

from pccl_py import _core

# (peers, seeds): 200 runs, ~12 s on one idle core.
BUDGET = [(8, range(1, 125)), (16, range(1, 63)), (32, range(1, 13)), (64, range(1, 3))]


def _check(peers, seeds, **kw):
    bad = []
    for seed in seeds:
        r = _core._simulate(seed, peers, **kw)
        assert r["seed"] == seed and r["peers"] == peers
        if r["violations"]:
            bad.append(f"--peers {peers} --seed {seed}: faults {r['faults']}: " + "; ".join(r["violations"][:3]))
    return bad


@pytest.mark.timeout(120)
@pytest.mark.parametrize("peers,seeds", BUDGET, ids=[f"{n}peers" for n, _ in BUDGET])
def test_every_invariant_holds_for_the_seed_budget(peers, seeds):
    bad = _check(peers, seeds)
    assert not bad, "invariant violations (replay: python bench/simulate.py ...):\n" + "\n".join(bad)


def test_a_run_is_a_function_of_its_seed():
    a = _core._simulate(7, 16)
    b = _core._simulate(7, 16)
    assert a == b
    c = _core._simulate(8, 16)
    assert (a["events"], a["faults"]) != (c["events"], c["faults"])


def test_fault_free_ops_all_succeed_exactly_in_ring_time():
    # No faults: every op succeeds (the checker compares each result with the
    # exact sum bit for bit), and an op of 8 peers takes its 2*(8-1) hops of
    # at most 30 ms each plus the vote's gossip, never a timeout.
    r = _core._simulate(3, 8, faults=0)
    assert r["violations"] == [] and r["faults"] == []
    assert r["ops_failed"] == 0 and r["ops_ok"] >= 8 * 3
    assert r["recovery_s"] == []
    lat = r["op_latency_s"]
    assert len(lat) == r["ops_ok"]
    assert 2 * 7 * 0.001 < min(lat) and max(lat) < 2 * 7 * 0.030 + 0.2


def test_a_frozen_peer_costs_the_heartbeat_bound_not_the_op_timeout():
    # Freezes that outlast the bound (3 s) are found by heartbeats: the
    # survivors' first success without the frozen peer comes after the
    # bound, well before the 10 s op timeout would have struck.
    recoveries = []
    for seed in range(1, 31):
        r = _core._simulate(seed, 8, faults=1, kinds="freeze")
        assert r["violations"] == [], r["violations"]
        recoveries += r["recovery_s"]
    assert len(recoveries) >= 10
    assert all(3.0 <= x < 3.0 + 3.0 for x in recoveries), sorted(recoveries)


def test_a_killed_peer_is_found_by_its_closed_connections():
    recoveries = []
    for seed in range(1, 31):
        r = _core._simulate(seed, 8, faults=1, kinds="kill")
        assert r["violations"] == [], r["violations"]
        recoveries += r["recovery_s"]
    assert len(recoveries) == 30
    assert max(recoveries) < 1.5, sorted(recoveries)  # delays of one op and a round, not a bound


def test_joiners_are_admitted_and_partitions_leave_two_consistent_runs():
    admitted, splits = 0, 0
    for seed in range(1, 41):
        r = _core._simulate(seed, 8, faults=1, kinds="join")
        assert r["violations"] == [], r["violations"]
        admitted += len(r["admission_s"])
        r = _core._simulate(seed, 8, faults=1, kinds="partition")
        assert r["violations"] == [], r["violations"]  # includes: every side's views agree after the heal
        splits += r["partition_splits"]
    assert admitted == 40
    # An op in flight when a partition cuts can succeed on one side and fail
    # on the other (no quorum): reported apart, and rare.
    assert splits < 10


# Seeds where a member that resumed (or heard back) holding every done vote
# and its echo used to fail on a fail vote that crossed a partition while the
# rest of its side succeeded: success comes first now (MeshChannel::commit).
SUCCESS_FIRST = [(8, [574, 584, 650, 1316, 1354, 1477, 1698, 2985]), (16, [454, 575, 825])]


@pytest.mark.timeout(120)
def test_a_fail_vote_does_not_undo_a_member_holding_every_done():
    bad = [b for peers, seeds in SUCCESS_FIRST for b in _check(peers, seeds)]
    assert not bad, "\n".join(bad)


def test_a_joiner_whose_first_bootstrap_peers_died_is_admitted_through_the_next():
    # Each seed kills a peer that is the joiner's first two bootstrap peers
    # (its third is alive): the refused dials move on within a round trip,
    # as Mesh::ask_to_join does, so the joiner is admitted.
    for seed in (1795, 1860, 2604, 2627):
        r = _core._simulate(seed, 8)
        assert r["violations"] == [], r["violations"]
        assert len(r["admission_s"]) == 1, r["faults"]


@pytest.mark.parametrize("peers", [16, 32])
def test_the_vote_costs_about_two_messages_per_pair_not_n_cubed(peers):
    # Each member names to each other one only the done votes it may lack,
    # and holds back forwards that are not urgent for the gossip gap: about
    # 2 n^2 vote messages per op (re-broadcasting the whole set on every
    # change cost ~0.6 n^3: 19k at 32 peers, here ~2k).
    r = _core._simulate(3, peers, faults=0)
    assert r["violations"] == [] and r["ops_failed"] == 0
    ops = r["ops_ok"] / peers
    assert r["vote_messages"] / ops < 3 * peers * peers, r["vote_messages"] / ops


def test_the_checker_finds_a_member_that_skips_the_commit():
    # break_commit: peer 0 returns success right after its own data phase.
    # When a death strikes during an op, the others fail it while peer 0
    # succeeded: the checker must say so, naming the op.
    found = []
    for seed in range(1, 41):
        r = _core._simulate(seed, 8, faults=2, kinds="kill", break_commit=True)
        found += [v for v in r["violations"] if "succeeded on peer 0" in v and "failed on" in v]
    assert len(found) >= 2, found
    # The same seeds with the real commit: nothing.
    assert _check(8, range(1, 41), faults=2, kinds="kill") == []


def test_bad_arguments_raise():
    with pytest.raises(Exception, match="peers must be"):
        _core._simulate(1, 0)
    with pytest.raises(Exception, match="unknown fault kind"):
        _core._simulate(1, 8, faults=1, kinds="meteor")
