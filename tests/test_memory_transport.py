"""The in-memory transport (/memory/<n>): whole groups on threads of this
process, through the real mesh, commit and collective code, with faults
injected by pccl_py.testing. Real-socket behaviour (TCP, the secure
channel's records, NAT) stays covered by the multi-process tests."""

from __future__ import annotations

import itertools
import re
import time

import multiaddr
import numpy as np
import pytest

import pccl_py as pc
import wire
from pccl_py import _core, testing
from local_group import close_all, make_group, run_all
from peer_main import digest, make_input, max_error
from test_allreduce import check_matrix, direct_cases, ring_cases

MEM = ["/memory/0"]


@pytest.fixture(autouse=True)
def _no_faults_left():
    yield
    testing.reset()


def group(n: int, timeout: float = 5.0, **kw) -> list[pc.Communicator]:
    return make_group(n, key="mem", timeout=timeout, listen=MEM, **kw)


def inputs(n: int, count: int = 1001, seed: int = 0) -> list[np.ndarray]:
    return [np.random.default_rng(seed * 100 + i).uniform(-4, 4, count).astype(np.float32) for i in range(n)]


def assert_reduced(xs: list[np.ndarray], originals: list[np.ndarray]) -> None:
    want = np.sum([o.astype(np.float64) for o in originals], axis=0)
    assert all(x.tobytes() == xs[0].tobytes() for x in xs), "results differ across members"
    assert np.max(np.abs(xs[0] - want)) < 1e-4 * len(xs) * 4


def assert_all_reduce_works(comms: list[pc.Communicator], count: int = 3001, seed: int = 1) -> None:
    """A sum over `comms` succeeds on every member, exact and bit-identical."""
    ys = inputs(len(comms), count, seed)
    originals = [y.copy() for y in ys]
    res = run_all(comms, lambda c, y: c.all_reduce(y), ys)
    assert not any(isinstance(r, Exception) for r in res), res
    assert_reduced(ys, originals)


# -- addresses -----------------------------------------------------------------

@pytest.mark.parametrize("text", ["/memory/0", "/memory/7", "/memory/18446744073709551615",
                                  "/memory/3/p2p/12D3KooWD3eckifWpRn9wQpMG9R9hX3sD158z7EqHWmweQAJU5SA"])
def test_memory_multiaddr_matches_python_multiaddr(text):
    ref = multiaddr.Multiaddr(text)
    b = _core.multiaddr_to_bytes(text)
    assert b == ref.to_bytes()  # code 777, then the id as 8 big-endian bytes
    assert _core.multiaddr_from_bytes(b) == str(ref) == _core.multiaddr_normalize(text)


@pytest.mark.parametrize("text, why", [("/memory/", "missing value"), ("/memory/x", "bad memory id"),
                                       ("/memory/18446744073709551616", "out of range")])
def test_bad_memory_multiaddr_is_a_clear_error(text, why):
    with pytest.raises(ValueError, match=why):
        _core.multiaddr_to_bytes(text)
    with pytest.raises(ValueError, match="invalid binary multiaddr"):
        _core.multiaddr_from_bytes(bytes.fromhex("8906") + b"\x00" * 7)  # one byte short


def test_memory_id_zero_picks_a_free_one_and_a_taken_one_is_refused():
    a = pc.Communicator(listen=MEM, run_key="mem")
    b = pc.Communicator(listen=MEM, run_key="mem")
    try:
        ida, idb = (int(re.match(r"/memory/(\d+)/p2p/", c.addrs[0]).group(1)) for c in (a, b))
        assert ida != idb and ida > 0 and idb > 0
        assert a.addrs == [f"/memory/{ida}/p2p/{a.peer_id}"]
        with pytest.raises(pc.NetworkError, match="address in use"):
            pc.Communicator(listen=[f"/memory/{ida}"], run_key="mem")
        with pytest.raises(pc.InvalidArgumentError, match="mix"):
            pc.Communicator(listen=["/memory/0", "/ip4/127.0.0.1/tcp/0"], run_key="mem")
    finally:
        close_all([a, b])


# -- collectives ---------------------------------------------------------------

def run_matrix(n: int, cases: list, algorithm: str) -> list:
    """tests/peer_main.py's allreduce_matrix scenario on n threads."""
    comms = group(n, streams=2)
    try:
        def run(c):
            out = []
            for case, (dtype, op, count) in enumerate(cases):
                # Inputs by rank (ring order, not creation order), so that
                # max_error recomputes every member's contribution.
                x = make_input(dtype, count, c.rank, case)
                info = c.all_reduce(x, op=op, algorithm=algorithm)
                out.append({"digest": digest(x), "world": info.world_size, "tx": info.tx_bytes,
                            "err": max_error(dtype, op, count, n, case, x)})
            return out
        res = run_all(comms, run)
    finally:
        close_all(comms)
    for r in res:
        assert not isinstance(r, Exception), r
    return res


@pytest.mark.parametrize("n", [2, 3, 5])
def test_every_dtype_and_op_is_exact_and_bit_identical(n):
    """tests/test_allreduce.py's ring matrix (4 real processes there)."""
    cases = ring_cases(every_big=False)
    check_matrix(cases, run_matrix(n, cases, "ring"), n)


@pytest.mark.parametrize("n", [2, 5])
def test_direct_algorithm_is_exact_and_bit_identical(n):
    """tests/test_allreduce.py's direct matrix (3 real processes there)."""
    cases = direct_cases()
    check_matrix(cases, run_matrix(n, cases, "direct"), n, direct=True)


def test_four_concurrent_async_ops():
    """Four ops with distinct tags in flight at once, on every member."""
    comms = group(3)
    try:
        def run(c):
            xs = [make_input("f32", 100_000 + 17 * t, c.rank, t) for t in range(4)]
            handles = [c.all_reduce_async(x, op="sum", tag=t) for t, x in enumerate(xs)]
            return [h.wait().world_size for h in handles], [digest(x) for x in xs]
        res = run_all(comms, run)
    finally:
        close_all(comms)
    assert all(r[0] == [3, 3, 3, 3] for r in res), res
    for t in range(4):
        assert len({r[1][t] for r in res}) == 1


def test_sync_state_brings_a_joiner_up_to_date():
    comms = group(2)
    joiner = None
    try:
        state = [{"w": np.full(5000, float(i + 1), np.float32)} for i in range(2)]
        run_all(comms, lambda c, s: c.sync_state(s, revision=3), state)
        joiner = pc.Communicator(bootstrap=comms[0].addrs, run_key="mem", timeout=5.0, listen=MEM)
        everyone = comms + [joiner]
        run_all(everyone, lambda c: c.wait_for_peers(3, timeout=30.0))
        assert [c.world_size for c in everyone] == [3, 3, 3]
        mine = {"w": np.zeros(5000, np.float32)}
        res = run_all(everyone, lambda c, s: c.sync_state(s, revision=0 if c is joiner else 3),
                      state + [mine])
        assert not any(isinstance(r, Exception) for r in res), res
        assert mine["w"].tobytes() == state[0]["w"].tobytes() == state[1]["w"].tobytes()
    finally:
        close_all(comms + ([joiner] if joiner else []))


# -- the handshake -------------------------------------------------------------

def test_a_peer_without_the_run_key_cannot_join():
    comms = group(2)
    try:
        with pytest.raises(pc.AuthError, match="run key mismatch"):
            pc.Communicator(bootstrap=comms[0].addrs, run_key="not-the-key", timeout=5.0, listen=MEM)
        run_all(comms, lambda c: c.update_topology())
        assert [c.world_size for c in comms] == [2, 2]
        assert all(c.connections() and all(x["endpoint"].startswith("memory:") for x in c.connections())
                   for c in comms)
    finally:
        close_all(comms)


def test_dialing_a_peer_id_that_is_not_there_fails_authentication():
    comms = group(2)
    try:
        wrong = comms[0].addrs[0].replace(comms[0].peer_id, comms[1].peer_id)
        with pytest.raises(pc.AuthError, match="dialed peer"):
            pc.Communicator(bootstrap=[wrong], run_key="mem", timeout=5.0, listen=MEM)
    finally:
        close_all(comms)


# -- membership and faults -----------------------------------------------------

def survivors_fail_then_continue(comms, victim, timeout, fault):
    """Runs an all-reduce while `fault` hits `victim`; every survivor must
    raise PeerLostError within the timeout bound, then agree on a smaller view
    and all-reduce bit-identically on it."""
    survivors = [c for c in comms if c is not victim]
    xs = inputs(len(comms), 50_000)
    fault(victim)
    t0 = time.monotonic()
    res = run_all(survivors, lambda c, x: c.all_reduce(x), xs[:len(survivors)])
    elapsed = time.monotonic() - t0
    assert all(isinstance(r, pc.PeerLostError) for r in res), res
    assert elapsed < 2 * timeout + 1, elapsed
    assert [x.tobytes() for x in xs[:len(survivors)]] == [x.tobytes() for x in inputs(len(comms), 50_000)[:len(survivors)]], \
        "a failed op changed its input"
    run_all(survivors, lambda c: c.update_topology())
    assert all(c.world_size == len(survivors) and victim.peer_id not in c.members for c in survivors)
    assert_all_reduce_works(survivors, 1001, seed=1)


def test_a_killed_peer_is_lost_by_every_survivor_within_the_timeout():
    comms = group(4, timeout=3.0)
    try:
        survivors_fail_then_continue(comms, comms[2], 3.0, testing.kill)
    finally:
        close_all(comms)


def test_a_frozen_peer_is_lost_by_its_heartbeat_timeout():
    # The heartbeat bound (1 s) below the op timeout: the frozen peer is
    # declared dead before any op wait runs out (with equal bounds it may
    # surface as the op's TimeoutError instead).
    comms = group(3, timeout=2.0, heartbeat_timeout=1.0)
    try:
        survivors_fail_then_continue(comms, comms[1], 2.0, testing.freeze)
    finally:
        testing.reset()
        close_all(comms)


def test_a_peer_that_leaves_is_dropped_and_a_new_one_joins():
    comms = group(3)
    extra = None
    try:
        comms[2].close()
        live = comms[:2]
        run_all(live, lambda c: c.update_topology())
        assert [c.world_size for c in live] == [2, 2]
        extra = pc.Communicator(bootstrap=live[1].addrs, run_key="mem", timeout=5.0, listen=MEM)
        everyone = live + [extra]
        run_all(everyone, lambda c: c.wait_for_peers(3, timeout=30.0))
        assert all(c.world_size == 3 and sorted(c.members) == sorted(everyone[0].members) for c in everyone)
        assert_all_reduce_works(everyone, 3001, seed=2)
    finally:
        close_all(comms[:2] + ([extra] if extra else []))


def test_dropped_links_lose_the_peer_on_both_sides():
    comms = group(3, timeout=3.0)
    try:
        a, b, c = comms
        assert testing.drop_links(a, b) > 0
        xs = inputs(3, 20_000)
        t0 = time.monotonic()
        res = run_all(comms, lambda m, x: m.all_reduce(x), xs)
        assert time.monotonic() - t0 < 2 * 3.0 + 1
        # Nobody may succeed while others fail; with a and b cut, nobody succeeds.
        assert all(isinstance(r, pc.PeerLostError) for r in res), res
    finally:
        close_all(comms)


def test_a_short_partition_only_delays_the_op():
    """Frames held by a partition shorter than the timeout arrive once it
    heals (as TCP retransmits them): the op succeeds everywhere."""
    comms = group(3, timeout=5.0)
    try:
        xs = inputs(3, 30_000, seed=3)
        originals = [x.copy() for x in xs]
        testing.partition(comms[:2], comms[2:])
        handles = [c.all_reduce_async(x) for c, x in zip(comms, xs)]
        time.sleep(0.5)
        assert not any(h.done for h in handles), "an op completed across the partition"
        testing.heal()
        res = run_all(list(range(3)), lambda i: handles[i].wait())
        assert not any(isinstance(r, Exception) for r in res), res
        assert_reduced(xs, originals)
    finally:
        close_all(comms)


def test_a_long_partition_fails_the_op_on_both_sides_and_the_majority_goes_on():
    comms = group(3, timeout=2.0)
    try:
        majority, minority = comms[:2], comms[2:]
        testing.partition(majority, minority)
        xs = inputs(3, 30_000, seed=4)
        t0 = time.monotonic()
        res = run_all(comms, lambda c, x: c.all_reduce(x), xs)
        assert time.monotonic() - t0 < 2 * 2.0 + 1
        assert all(isinstance(r, (pc.PeerLostError, pc.TimeoutError)) for r in res), res
        run_all(majority, lambda c: c.update_topology())
        assert all(c.world_size == 2 for c in majority)
        testing.heal()
        assert_all_reduce_works(majority, 1001, seed=5)
    finally:
        close_all(comms)


def test_injected_delay_slows_the_ring_by_its_hops_and_keeps_results_exact():
    comms = group(3, timeout=5.0)
    try:
        xs = inputs(3, 3001, seed=6)
        originals = [x.copy() for x in xs]
        run_all(comms, lambda c, x: c.all_reduce(x.copy(), algorithm="ring"), xs)  # warm: every data link dialed
        delay = 0.15
        for a, b in itertools.permutations(comms, 2):
            testing.set_delay(a, b, delay)
        t0 = time.monotonic()
        res = run_all(comms, lambda c, x: c.all_reduce(x, algorithm="ring"), xs)
        elapsed = time.monotonic() - t0
        assert not any(isinstance(r, Exception) for r in res), res
        assert_reduced(xs, originals)
        # A 3-member ring is 2 reduce-scatter + 2 all-gather hops, then the
        # commit's vote round: at least 4 one-way delays, far less than 20.
        assert 4 * delay <= elapsed < 20 * delay, elapsed
    finally:
        close_all(comms)


def links_between(c: pc.Communicator, other: pc.Communicator) -> int:
    return sum(x["peer"] == other.peer_id for x in c.connections())


def data_links_between(c: pc.Communicator, other: pc.Communicator) -> int:
    return sum(x["peer"] == other.peer_id and x["purpose"] == "data" for x in c.connections())


def pool_full(comms: list[pc.Communicator], streams: int, within: float = 10.0) -> None:
    """Waits until every pair of a ring of at most 3 (all neighbours) has its
    `streams` data links each way: the stream pool dials them in the background."""
    deadline = time.monotonic() + within
    pairs = list(itertools.permutations(comms, 2))
    while any(data_links_between(a, b) != 2 * streams for a, b in pairs) and time.monotonic() < deadline:
        time.sleep(0.01)
    assert all(data_links_between(a, b) == 2 * streams for a, b in pairs)


@pytest.mark.parametrize("frame", [
    b"\0" * 32,                                     # bad magic
    b"PC",                                           # truncated header
    wire.header(wire.DATA, (64 << 20) + 1),          # over the 64 MiB cap (no payload follows)
    wire.header(wire.CONTROL, 100) + b"short",       # fewer payload bytes than the header says
    wire.pack(wire.HELLO, b"x" * 10, sub=1),         # a handshake frame after the handshake
    wire.pack(wire.RELAY, b"\x80"),                  # relay frames mean nothing here
    wire.pack(wire.CONTROL, b"\xc1"),                # not msgpack
], ids=["magic", "truncated", "oversized", "short-payload", "late-hello", "relay", "bad-msgpack"])
def test_a_hostile_frame_closes_that_link_only(frame):
    """Frames through the memory transport get the checks of bytes from a
    socket: a malformed one closes the link it came on, nothing else."""
    comms = group(3, timeout=3.0, streams=2)
    try:
        a, b, c = comms
        xs = inputs(3, 20_000, seed=7)
        run_all(comms, lambda m, x: m.all_reduce(x), xs)
        pool_full(comms, 2)  # data links up (dialed in the background): a and b share several
        before, others = links_between(b, a), links_between(b, c)
        assert before >= 2
        assert testing.inject(a, b, frame)
        deadline = time.monotonic() + 3.0
        while links_between(b, a) != before - 1 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert links_between(b, a) == before - 1
        assert links_between(b, c) == others
        assert_all_reduce_works(comms, 3001, seed=8)
    finally:
        close_all(comms)


def test_faults_on_unknown_peers_are_harmless_and_bad_delays_refused():
    testing.partition(["nobody"], ["else"])
    testing.heal()
    assert testing.drop_links("nobody", "else") == 0
    assert not testing.inject("nobody", "else", b"\0" * 32)
    with pytest.raises(ValueError, match="delay"):
        testing.set_delay("a", "b", -1.0)
