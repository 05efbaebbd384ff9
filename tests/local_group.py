"""Several communicators in one process (their blocking calls release the
GIL), for tests that need peers but not separate processes."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import pccl_py as pc


def make_group(n: int, key: str = "local", timeout: float = 5.0, **kw) -> list[pc.Communicator]:
    first = pc.Communicator(run_key=key, timeout=timeout, **kw)
    comms = [first] + [pc.Communicator(bootstrap=first.addrs, run_key=key, timeout=timeout, **kw)
                       for _ in range(n - 1)]
    run_all(comms, lambda c: _join(c, n))
    return comms


def _join(c: pc.Communicator, n: int) -> None:
    c.wait_for_peers(n, timeout=60.0)


def run_all(comms, fn, *args_per_comm):
    """Runs fn(comm, *args) on every comm concurrently; returns results or
    exceptions (in comm order)."""
    def call(i):
        try:
            return fn(comms[i], *(a[i] for a in args_per_comm))
        except Exception as e:  # noqa: BLE001 - returned to the test
            return e
    with ThreadPoolExecutor(len(comms)) as ex:
        return list(ex.map(call, range(len(comms))))


def close_all(comms) -> None:
    for c in comms:
        c.close()


def run_peer_threads(threads, comms, errors, timeout: float = 50.0) -> None:
    """Starts the peers' threads, then join_peer_threads."""
    try:
        for t in threads:
            t.start()
    except BaseException:
        close_all(comms)
        raise
    join_peer_threads(threads, comms, errors, timeout)


def join_peer_threads(threads, comms, errors, timeout: float = 50.0) -> None:
    """Waits for started peer threads (a hang fails the test), asserts none
    recorded an error, and closes every communicator."""
    try:
        for t in threads:
            t.join(timeout)
        assert not any(t.is_alive() for t in threads), "a peer hung"
        assert not errors, errors
    finally:
        close_all(comms)
