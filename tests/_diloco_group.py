"""Runs n peers as threads of this process (blocking pccl calls release the
GIL): forms the group, runs fn(rank, comm) on each, returns the results in rank
order, and closes every communicator even when a peer fails."""

import threading
import traceback

import torch

import pccl_py as pc
from pccl_py._training import form_group


def run_group(n, fn, timeout=50.0, comm_timeout=5.0):
    torch.set_num_threads(1)
    first = pc.Communicator(run_key="diloco-test", timeout=comm_timeout)
    comms = [first] + [pc.Communicator(bootstrap=first.addrs, run_key="diloco-test", timeout=comm_timeout)
                       for _ in range(n - 1)]
    results, errors = [None] * n, []

    def body(i):
        try:
            form_group(comms[i], n, timeout=20.0)
            results[i] = fn(i, comms[i])
        except BaseException as e:  # reported below
            errors.append((i, e))
            traceback.print_exc()  # the first one is re-raised below

    threads = [threading.Thread(target=body, args=(i,), daemon=True) for i in range(n)]
    try:
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout)
        assert not any(t.is_alive() for t in threads), "a peer thread hung"
        if errors:
            raise errors[0][1]
        return results
    finally:
        for c in comms:
            c.close()
