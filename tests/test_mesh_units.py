"""The mesh's parts one by one, in one process on the in-memory transport:
the router (data frames and votes never wait on the membership lock), the
stream pool (installing a view dials the ring neighbours' streams in the
background; an op uses them and never dials on its own thread) and liveness
(heartbeats go on while the membership lock is held; a frozen peer is found
by its heartbeat bound, not by the op timeout)."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

import pccl_py as pc
from pccl_py import testing
from local_group import close_all, make_group, run_all

MEM = ["/memory/0"]


@pytest.fixture(autouse=True)
def _no_faults_left():
    yield
    testing.reset()


def group(n: int, **kw) -> list[pc.Communicator]:
    return make_group(n, key="units", listen=MEM, **kw)


def data_links(c: pc.Communicator, other: pc.Communicator) -> int:
    return sum(x["peer"] == other.peer_id and x["purpose"] == "data" for x in c.connections())


def ring_neighbours(comms: list[pc.Communicator]) -> list[tuple[pc.Communicator, pc.Communicator]]:
    by_id = {c.peer_id: c for c in comms}
    order = comms[0].members
    n = len(order)
    return [(by_id[order[i]], by_id[order[(i + 1) % n]]) for i in range(n)]


def wait_for(cond, within: float, what: str) -> None:
    deadline = time.monotonic() + within
    while not cond():
        assert time.monotonic() < deadline, what
        time.sleep(0.01)


def inputs(n: int, count: int, seed: int) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.integers(-1000, 1000, count).astype(np.float32) for _ in range(n)]


def total_links(comms) -> list[int]:
    return [len(c.connections()) for c in comms]


def hold(comm: pc.Communicator, seconds: float) -> threading.Thread:
    t = threading.Thread(target=testing.hold_membership_lock, args=(comm, seconds), daemon=True)
    t.start()
    time.sleep(0.1)  # the lock is taken now (the call does nothing else)
    return t


# -- the router ----------------------------------------------------------------

def test_a_data_frame_is_delivered_while_the_membership_lock_is_held():
    """b's op is open; b's membership lock is then held (as by a slow view
    change) for 4 s. a's data frames and both sides' votes reach their
    mailboxes through the router alone: the op completes on both sides, with
    the exact sum, long before the lock is free again."""
    a, b = comms = group(2, timeout=8.0, streams=2)
    try:
        xa, xb = inputs(2, 5000, seed=1)
        want = xa + xb
        wait_for(lambda: data_links(a, b) == 4, 10.0, "the pool did not dial a's and b's streams")
        hb = b.all_reduce_async(xb)
        time.sleep(0.5)  # b's op opens its channel (before the lock is held)
        holder = hold(b, 4.0)
        t0 = time.monotonic()
        a.all_reduce(xa)
        hb.wait()
        elapsed = time.monotonic() - t0
        assert holder.is_alive(), "the op waited for the membership lock"
        assert elapsed < 3.0, elapsed
        assert np.array_equal(xa, want) and np.array_equal(xb, want)
        holder.join()
    finally:
        close_all(comms)


# -- the stream pool -----------------------------------------------------------

def test_installing_a_view_dials_the_ring_neighbours_streams_and_an_op_never_dials():
    """Before any op, every member holds `streams` data links to each ring
    neighbour (and they to it): the pool dialed them in the background when
    the view was installed. A ring all-reduce then adds no link at all (its
    thread took the pool's links and dialed nothing); a direct one, which
    needs every pair, gets the missing links from the pool and is exact."""
    comms = group(4, timeout=5.0, streams=2)
    try:
        pairs = ring_neighbours(comms)
        wait_for(lambda: all(data_links(x, y) >= 4 for x, y in pairs), 10.0,
                 "the ring neighbours' streams were not dialed after the view was installed")
        time.sleep(0.3)  # the pool is done: nothing else is dialed without an op
        before = total_links(comms)
        xs = inputs(4, 20_000, seed=2)
        want = sum(xs)
        res = run_all(comms, lambda c, x: c.all_reduce(x, algorithm="ring"), xs)
        assert not any(isinstance(r, Exception) for r in res), res
        assert all(np.array_equal(x, want) for x in xs)
        assert total_links(comms) == before, "a ring op dialed"
        xs = inputs(4, 20_000, seed=3)
        want = sum(xs)
        res = run_all(comms, lambda c, x: c.all_reduce(x, algorithm="direct"), xs)
        assert not any(isinstance(r, Exception) for r in res), res
        assert all(np.array_equal(x, want) for x in xs)
        assert all(data_links(x, y) >= 2 for x in comms for y in comms if x is not y)
    finally:
        close_all(comms)


# -- liveness ------------------------------------------------------------------

def test_heartbeats_go_on_while_the_membership_lock_is_held():
    """b's membership lock held for three heartbeat bounds: its heartbeats
    (sent from its routing snapshot) still reach a, which keeps it; then an
    op succeeds on the same view."""
    a, b = comms = group(2, timeout=5.0, heartbeat_timeout=0.5, streams=2)
    try:
        wait_for(lambda: data_links(a, b) == 4, 10.0, "the pool did not dial a's and b's streams")
        epoch = a.epoch
        holder = hold(b, 1.5)
        holder.join()
        xs = inputs(2, 1000, seed=4)
        want = xs[0] + xs[1]
        res = run_all(comms, lambda c, x: c.all_reduce(x), xs)
        assert not any(isinstance(r, Exception) for r in res), res
        assert all(np.array_equal(x, want) for x in xs)
        assert a.epoch == b.epoch == epoch
    finally:
        close_all(comms)


def test_a_frozen_peer_is_found_within_heartbeat_timeout_not_the_op_timeout():
    """Op timeout 8 s, heartbeat bound 1 s: the survivors' op fails with
    PeerLostError (the peer fell silent) within a few heartbeat bounds."""
    comms = group(3, timeout=8.0, heartbeat_timeout=1.0)
    try:
        a, b, c = comms
        wait_for(lambda: all(data_links(x, y) > 0 for x, y in ring_neighbours(comms)), 10.0, "no pool")
        testing.freeze(c)
        t0 = time.monotonic()
        res = run_all([a, b], lambda m: m.all_reduce(np.ones(10_000, np.float32)))
        elapsed = time.monotonic() - t0
        assert all(isinstance(r, pc.PeerLostError) for r in res), res
        assert any("silent" in str(r) for r in res), res
        assert elapsed < 4.0, elapsed
    finally:
        testing.reset()
        close_all(comms)
