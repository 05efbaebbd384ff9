"""sync_state(versions=...): a tensor passed with the same memory and version
as at the last successful sync is not hashed again (the DiLoCo wrappers bump
a fragment's version whenever its global copy changes, so unchanged fragments
cost nothing); without a version every call hashes."""

import numpy as np
import pytest

from local_group import close_all, make_group, run_all


@pytest.mark.timeout(60)
def test_an_unchanged_version_reuses_the_hash_a_new_one_rehashes():
    comms = make_group(2, key="versions", timeout=5.0)
    try:
        states = [{"w": np.ones(1000, np.float32), "m": np.zeros(10, np.float32)} for _ in comms]

        def sync(versions):
            res = run_all(comms, lambda c, st: c.sync_state(st, 3, versions=versions), states)
            assert not any(isinstance(r, Exception) for r in res), res
            return [r.tensors_received for r in res]

        assert sync({"w": 5}) == [0, 0]
        # The bytes change behind the version's back: not re-hashed, so not noticed.
        states[1]["w"][0] = 7.0
        assert sync({"w": 5}) == [0, 0]
        assert states[1]["w"][0] == 7.0 and states[0]["w"][0] == 1.0
        # A new version is hashed: the states differ and are made identical again.
        received = sync({"w": 6})
        assert sorted(received) == [0, 1]
        assert np.array_equal(states[0]["w"], states[1]["w"])
        # Unversioned tensors are hashed every time.
        states[0]["m"][3] = 2.0
        assert sorted(sync({"w": 6})) == [0, 1]
        assert np.array_equal(states[0]["m"], states[1]["m"])
    finally:
        close_all(comms)
