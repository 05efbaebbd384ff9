"""Membership corner cases found by the churn tests, in one process (peers as
threads; blocking calls release the GIL)."""

from __future__ import annotations

import time

import numpy as np
import pytest

import pccl_py as pc
from local_group import close_all, make_group, run_all


@pytest.mark.timeout(60)
def test_joiner_admitted_in_background_then_op_before_update_topology():
    """A joiner whose admission arrived in the background and that runs an op
    without calling update_topology() first is a full member: its next
    update_topology() is the collective one (it used to return at once and
    run the next op alone while the others waited for it)."""
    comms = make_group(2, key="bg-join", timeout=3.0)
    joiner = pc.Communicator(bootstrap=comms[0].addrs, run_key="bg-join", timeout=3.0)
    comms.append(joiner)
    try:
        run_all(comms[:2], lambda c: c.update_topology())  # admits it; it has not called update_topology
        deadline = time.monotonic() + 20
        while joiner.world_size < 3:  # the commit reaches it in the background
            assert time.monotonic() < deadline
            time.sleep(0.01)
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
