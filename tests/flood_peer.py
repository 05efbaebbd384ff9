"""A run's first peer under a low file-descriptor limit, driven over stdin
(one JSON command a line), for the resource tests.

    python tests/flood_peer.py flood '{"nofile": 128, "key": "..."}'

Commands: {"op": "round", "n": n}: wait for n members, update_topology(),
then an all-reduce of ones,
answered with {"world": n, "value": x, "rss_mb": peak RSS (VmHWM)}; {"op": "cpu"}:
{"cpu_s": user+system seconds so far}; {"op": "stop"}."""

import json
import resource
import sys

import numpy as np

import pccl_py as pc


def peak_rss_mb() -> float:
    """This process's own peak RSS (VmHWM). Not getrusage's ru_maxrss, which
    Linux carries over exec from the forking parent (a big test worker)."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError("no VmHWM in /proc/self/status")


def say(**kw) -> None:
    print(json.dumps(kw), flush=True)


def main() -> None:
    args = json.loads(sys.argv[2])
    resource.setrlimit(resource.RLIMIT_NOFILE, (args["nofile"], args["nofile"]))
    comm = pc.Communicator(run_key=args["key"], timeout=10.0)
    say(addrs=comm.addrs)
    for line in sys.stdin:
        cmd = json.loads(line)
        if cmd["op"] == "round":
            comm.wait_for_peers(cmd["n"], timeout=60.0)  # a newcomer asks to join in its own wait_for_peers
            comm.update_topology()
            x = np.ones(100_000, np.float32)
            comm.all_reduce(x)
            say(world=comm.world_size, value=float(x[0]), rss_mb=peak_rss_mb())
        elif cmd["op"] == "cpu":
            r = resource.getrusage(resource.RUSAGE_SELF)
            say(cpu_s=r.ru_utime + r.ru_stime)
        else:
            break
    comm.close()


if __name__ == "__main__":
    main()
