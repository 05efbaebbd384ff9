"""How recovery time and per-op latency grow with the number of peers, in
simulated time: the one-process protocol simulator (cpp/src/sim/simulator.h)
runs the real view / commit logic of the mesh and a ring all-reduce with the
real reduce kernels for N simulated peers on links of 1-30 ms one way and
100 Mbit/s, with 1-3 faults per seed (kill, freeze, partition + heal, slow
link, join), and checks every invariant on every run.

    python bench/simulate.py --peers 8 64 256 1000 --seeds 5
    python bench/simulate.py --peers 16 --seed 141      # replay one seed

Prints, per N: runs, invariant violations (0 expected), the ops that split
across a partition or on a member removed meanwhile (counted apart, see
simulator.h), and p50/p90/p99 of the recovery time (a death, freeze or
partition -> a survivor's first successful op without the lost peers), of
the admission time of joiners and of the latency of successful ops. As the
baseline from the same runs (no Gloo run exists in simulated time) it prints
the fault-free ring time of one op, 2(N-1) hops of the mean link delay, and
the ratio of the op latency to it (what the vote and the skew add).

Runs against the installed pccl_py (`pip install .` first; the benches never
put the source tree on sys.path). The 1,000-peer runs take minutes each on
one core (millions of simulated messages per op).
"""

import argparse
import sys
import time

from pccl_py import _core


def pct(xs, q):
    if not xs:
        return float("nan")
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(q * (len(xs) - 1))))]


def fmt(xs):
    return f"{pct(xs, .5):8.3f} {pct(xs, .9):8.3f} {pct(xs, .99):8.3f}"


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--peers", type=int, nargs="+", default=[8, 64, 256, 1000])
    ap.add_argument("--seeds", type=int, default=5, help="seeds 1..S per N")
    ap.add_argument("--seed", type=int, nargs="+", help="exactly these seeds (replay)")
    ap.add_argument("--kinds", default="kill,freeze,partition,slow,join")
    ap.add_argument("--faults", type=int, default=-1, help="faults per run (-1: 1..3 from the seed)")
    ap.add_argument("--verbose", action="store_true", help="print each run's faults and violations")
    args = ap.parse_args()
    seeds = args.seed or list(range(1, args.seeds + 1))
    mean_delay = (0.001 + 0.030) / 2
    print(f"simulated time, seconds; links 1-30 ms one way, 100 Mbit/s; timeout 10 s, heartbeat 3 s")
    print(f"{'N':>5} {'runs':>4} {'viol':>4} {'split':>5} {'rem':>3} | {'recovery p50/p90/p99':>26} |"
          f" {'admission p50/p90/p99':>26} | {'op latency p50/p90/p99':>26} | {'ring':>6} {'ratio':>5} | {'wall s':>6}")
    total_violations = 0
    for n in args.peers:
        rec, adm, lat = [], [], []
        viol = splits = removed = 0
        t0 = time.time()
        for s in seeds:
            r = _core._simulate(s, n, faults=args.faults, kinds=args.kinds)
            rec += r["recovery_s"]
            adm += r["admission_s"]
            lat += r["op_latency_s"]
            splits += r["partition_splits"]
            removed += r["removed_splits"]
            if r["violations"]:
                viol += 1
                print(f"  VIOLATION --peers {n} --seed {s}: faults {r['faults']}", file=sys.stderr)
                for v in r["violations"][:5]:
                    print(f"    {v}", file=sys.stderr)
            elif args.verbose:
                print(f"  seed {s}: {r['faults']}, {r['ops_ok']} ok / {r['ops_failed']} failed ops, "
                      f"{r['events']} events, {r['sim_time_s']:.1f} s simulated", file=sys.stderr)
        total_violations += viol
        ring = 2 * (n - 1) * mean_delay
        ratio = pct(lat, .5) / ring if ring else float("nan")
        print(f"{n:5d} {len(seeds):4d} {viol:4d} {splits:5d} {removed:3d} | {fmt(rec)} | {fmt(adm)} | {fmt(lat)} |"
              f" {ring:6.3f} {ratio:5.2f} | {time.time() - t0:6.1f}", flush=True)
    return 1 if total_violations else 0


if __name__ == "__main__":
    sys.exit(main())
