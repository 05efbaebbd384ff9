"""Membership corner cases found by the churn tests, in one process (peers as
threads; blocking calls release the GIL)."""

from __future__ import annotations

import time

import numpy as np
import pytest

import pccl_py as pc
from local_group import close_all, make_group, run_all


@pytest.mark.timeout(60)
def test_joiner_admitted_in_background_becomes_member_in_update_topology():
    """Admission is a collective point: a joiner admitted while it was not in
    update_topology() is not a member (world_size 0) until it calls it; that
    call returns at once, and every later update_topology() is collective.
    (A joiner that used to see itself admitted in the background and skipped
    the call took the members' next round for its admission and returned
    from it alone, leaving the others waiting for its ready.)"""
    comms = make_group(2, key="bg-join", timeout=3.0)
    joiner = pc.Communicator(bootstrap=comms[0].addrs, run_key="bg-join", timeout=3.0)
    comms.append(joiner)
    try:
        deadline = time.monotonic() + 20
        while comms[0].world_size < 3:  # admits it (the joiner is not in update_topology)
            assert time.monotonic() < deadline
            assert not any(isinstance(r, Exception) for r in run_all(comms[:2], lambda c: c.update_topology()))
        assert joiner.world_size == 0
        joiner.update_topology()
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
