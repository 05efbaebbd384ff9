"""An in-place all-reduce that fails leaves every survivor's input as it
was, bit for bit, wherever in the ring the failure strikes: the ring keeps
each region of the buffer just before it first writes it
(collectives/backup.h), the other algorithms keep it all up front. Whole
groups run in this process over the in-memory transport."""

from __future__ import annotations

import itertools
import threading
import time

import numpy as np
import pytest

import pccl_py as pc
from pccl_py import testing
from local_group import close_all, make_group, run_all


@pytest.fixture(autouse=True)
def _no_faults_left():
    yield
    testing.reset()


# (algorithm, quant, members, fraction of the op's own time at which one
# dies): 4 members early in the reduce-scatter and mid-op (the direct
# algorithm's data phase is 2 link delays of its ~4: earlier fractions); 2
# members once the data phase is over (every all-gather piece, landing in
# place, has arrived) but before the dying member's done vote can arrive (an
# op of 2 takes ~4 link delays: 2 of data, 2 of votes).
KILLS = [(alg, q, n, f) for alg, q in (("ring", None), ("ring", "int8")) for n, f in ((4, 0.2), (4, 0.5), (2, 0.6))]
KILLS += [("direct", None, 4, 0.1), ("direct", None, 4, 0.3), ("direct", None, 2, 0.6)]


@pytest.mark.parametrize("algorithm,quant,n,kill_at", KILLS, ids=[f"{a}-{q}-{n}peers-{f}" for a, q, n, f in KILLS])
def test_a_failed_op_restores_every_survivors_input(algorithm, quant, n, kill_at):
    """The kill strikes at a fraction of the op's own time, timed on the same
    delayed links just before."""
    comms = make_group(n, key=f"backup-{algorithm}-{quant}-{n}-{kill_at}", timeout=3.0, listen=["/memory/0"])
    try:
        rng = np.random.default_rng(7)
        # 1.2 MB each: many sub-chunks per ring chunk, so a failure finds
        # some regions reduced, some gathered, some untouched.
        xs = [rng.uniform(-4, 4, 300_000).astype(np.float32) for _ in range(n)]
        opts = dict(algorithm=algorithm, quant=quant)
        run_all(comms, lambda c, x: c.all_reduce(x.copy(), **opts), xs)  # warm: links up
        for a, b in itertools.permutations(comms, 2):
            testing.set_delay(a, b, 0.1)
        t0 = time.monotonic()
        run_all(comms, lambda c, x: c.all_reduce(x.copy(), **opts), xs)
        took = time.monotonic() - t0
        originals = [x.copy() for x in xs]
        # Every member runs the op; the last one dies while it is in flight.
        killer = threading.Timer(kill_at * took, testing.kill, args=(comms[-1],))
        killer.start()
        res = run_all(comms, lambda c, x: c.all_reduce(x, **opts), xs)[:-1]
        killer.join()
        # (Of 2, the survivor learns of the death from the heartbeat bound,
        # which is the op timeout here: it times out.)
        assert all(isinstance(r, (pc.PeerLostError, pc.errors.TimeoutError)) for r in res), (took, res)
        assert [x.tobytes() for x in xs[:-1]] == [o.tobytes() for o in originals[:-1]]
    finally:
        close_all(comms[:-1])
