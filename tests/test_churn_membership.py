"""Membership corner cases found by the churn tests, in one process (peers as
threads; blocking calls release the GIL)."""

from __future__ import annotations

import time

import numpy as np
import pytest

import pccl_py as pc
from local_group import close_all, make_group, run_all


@pytest.mark.timeout(60)
def test_joiner_is_admitted_only_once_it_asks_in_update_topology():
    """Admission happens when the joiner asks (its first update_topology()),
    never merely because it connected: the members' rounds go on without a
    joiner that connected and then sleeps (loading a model), each as fast as a
    round without it; once it calls update_topology() the members' next round
    admits it, its call returns with their view, and every later
    update_topology() is collective."""
    comms = make_group(2, key="bg-join", timeout=1.0)
    joiner = pc.Communicator(bootstrap=comms[0].addrs, run_key="bg-join", timeout=1.0)
    comms.append(joiner)
    try:
        worst = 0.0
        end = time.monotonic() + 3.0  # 3x the timeout: it would be declared dead if it were a member
        while time.monotonic() < end:
            t0 = time.monotonic()
            res = run_all(comms[:2], lambda c: c.update_topology())
            worst = max(worst, time.monotonic() - t0)
            assert not any(isinstance(r, Exception) for r in res), res
            assert [c.world_size for c in comms] == [2, 2, 0]
            time.sleep(0.05)
        assert worst < 0.5, worst
        res = run_all(comms, lambda c: c.wait_for_peers(3, timeout=20.0))
        assert res == [3, 3, 3], res
        assert joiner.world_size == 3 and joiner.epoch == comms[0].epoch
        for _ in range(3):
            xs = [np.full(1000, i + 1, np.int64) for i in range(3)]
            res = run_all(comms, lambda c, x: c.all_reduce(x), xs)
            assert all(isinstance(r, pc.OpInfo) and r.world_size == 3 for r in res), res
            assert all(np.array_equal(x, np.full(1000, 6, np.int64)) for x in xs)
            res = run_all(comms, lambda c: c.update_topology())
            assert not any(isinstance(r, Exception) for r in res), res
            assert len({c.epoch for c in comms}) == 1
    finally:
        close_all(comms)
