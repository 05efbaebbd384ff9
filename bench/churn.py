"""Recovery time after a peer's death: from a SIGKILL to the survivors' next
successful all-reduce, 4 and 8 peer processes on loopback, default timeout.

    python bench/churn.py [--peers 4 8] [--kills 20] [--count 65536]

Each peer runs tests/churn_peer.py "rounds" (int64 all-reduces of --count
elements, update_topology() every 4 rounds and after every failure). The
driver kills a random member, times the survivors' first successful round
without it (peers stamp time.time(); one clock), restarts it (same key file:
a new incarnation) and waits for a round of all peers again. Prints mean and
p99 recovery, and as the baseline measured in the same run the median time
between two rounds with no failure (recovery / round = rounds lost per kill).

Runs against the installed pccl_py (`pip install .` first; the benches never
put the source tree on sys.path).
"""

import argparse
import inspect
import os
import random
import statistics
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests"))

import pccl_py as pc  # noqa: E402

from churn_group import ChurnGroup, RoundChecker  # noqa: E402

DEFAULT_TIMEOUT = inspect.signature(pc.Communicator).parameters["timeout"].default


def p99(xs):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(0.99 * (len(xs) - 1))))]


def bench(n, kills, count, seed):
    rng = random.Random(seed)
    check = RoundChecker(count)
    recov, gaps = [], []
    with tempfile.TemporaryDirectory() as keys, ChurnGroup(
            "rounds", {"timeout": DEFAULT_TIMEOUT, "count": count, "topo_every": 4, "duration": 600,
                       "join_timeout": 60.0}, key_dir=keys) as g:
        g.on_message = lambda slot, m: check.add(g.ids[slot], m) if m.get("ok") else None
        g.start_group(n)

        def full_round(slot, m):
            return bool(m.get("ok")) and len(m["members"]) == n

        g.wait_for(full_round, 120, f"a round of all {n}", since=0)
        for _ in range(kills):
            # baseline: gaps between consecutive rounds seen by one peer, no failure
            watch = min(g.peers)
            first = g.wait_for(lambda s, m: s == watch and full_round(s, m), 60, "a round")[1]
            second = g.wait_for(lambda s, m: s == watch and full_round(s, m), 60, "a round")[1]
            gaps.append(second["t"] - first["t"])
            victim = rng.choice(sorted(g.peers))
            gone = g.ids[victim]
            t_kill = g.kill(victim)
            m = g.wait_for(lambda s, m: bool(m.get("ok")) and gone not in m["members"] and m["t"] > t_kill,
                           4 * DEFAULT_TIMEOUT + 30, "the survivors' next round")[1]
            recov.append(m["t"] - t_kill)
            g.start(victim, bootstrap=[a for s in sorted(g.addrs) for a in g.addrs[s]], joiner=True)
            g.wait_for(full_round, 120, f"a round of all {n} after the restart")
    return recov, gaps, len(check.rounds)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--peers", type=int, nargs="+", default=[4, 8])
    ap.add_argument("--kills", type=int, default=20)
    ap.add_argument("--count", type=int, default=65536, help="int64 elements per all-reduce")
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()
    print(f"timeout {DEFAULT_TIMEOUT:g} s (library default), {a.count * 8 // 1024} KiB per all-reduce, "
          f"{a.kills} SIGKILLs per size")
    print(f"{'peers':>5} {'kills':>5} {'mean s':>8} {'p99 s':>8} {'max s':>8} {'round s':>8} "
          f"{'p99/round':>9} {'p99/timeout':>11} {'rounds ok':>9}")
    for n in a.peers:
        t0 = time.monotonic()
        recov, gaps, rounds = bench(n, a.kills, a.count, a.seed + n)
        rnd = statistics.median(gaps)
        print(f"{n:>5} {len(recov):>5} {statistics.mean(recov):>8.3f} {p99(recov):>8.3f} {max(recov):>8.3f} "
              f"{rnd:>8.4f} {p99(recov) / rnd:>9.1f} {p99(recov) / DEFAULT_TIMEOUT:>11.3f} {rounds:>9}"
              f"   ({time.monotonic() - t0:.0f} s)", flush=True)


if __name__ == "__main__":
    main()
