"""All-reduce time: pccl_py (every payload sealed, and on the loopback fast
path) vs torch.distributed Gloo, same run.

    pip install torch==2.13.0 && pip install . && python bench/allreduce.py \
        [--peers 4 [16 32 ...]] [--sizes-mib 4 64] [--iters 10] [--rounds 1] \
        [--algorithm auto|ring|direct|doubling] [--only pccl_sealed [gloo ...]]

Runs against the installed package. For each group size, starts that many
peer processes on loopback per configuration, all-reduces (sum) f32 buffers
of each size, and prints the median time per op of rank 0 (every iteration
starts after a barrier), the algorithm pccl_py ran (auto resolves per op by
size and group size), bus bandwidths and the ratios gloo_time / pccl_time
(> 1: pccl_py is faster) and sealed / clear (the cost of the AEAD on every
payload). Configurations:

  pccl_sealed  seal_loopback=True: every payload AES-256-GCM, as on any real link
  pccl_clear   the default on loopback: data payloads skip the AEAD (handshake,
               headers and control frames stay sealed; see the README's Security)
  pccl_nobackup  pccl_clear with all_reduce(backup=False): no copy of the input
               kept to restore it if the op fails (Gloo keeps none either)
  gloo         torch.distributed's Gloo backend

--rounds N repeats every configuration N times, interleaved (sealed, clear,
gloo, sealed, ...) so a change in the machine's load hits all of them alike,
prints each round's line and then the median over rounds of each figure.
Group sizes beyond the machine's cores measure the machine as much as the
library: the line above the table says how many cores there were, and the
load average before and after.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import socket
import statistics
import time


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def pccl_worker(rank, n, sizes, iters, boot_q, out_q, streams, chunk, algorithm, seal_loopback, heartbeat_s,
                backup):
    import numpy as np

    import pccl_py as pc
    comm = pc.Communicator(bootstrap=[] if rank == 0 else [boot_q.get()], run_key="bench", timeout=60,
                           seal_loopback=seal_loopback, heartbeat_timeout=heartbeat_s,
                           **({"streams": streams} if streams else {}), **({"chunk_bytes": chunk} if chunk else {}))
    if rank == 0:
        for _ in range(n - 1):
            boot_q.put(comm.addrs[0])
    comm.wait_for_peers(n, timeout=120)
    tiny = np.zeros(1, np.float32)
    res = {}
    for size in sizes:
        x = np.ones(size // 4, np.float32)
        times = []
        for it in range(iters + 2):
            comm.all_reduce(tiny)  # barrier
            t0 = time.perf_counter()
            comm.all_reduce(x, algorithm=algorithm, backup=backup)
            if it >= 2:
                times.append(time.perf_counter() - t0)
        res[size] = (statistics.median(times), comm.algorithm_for(x.nbytes, algorithm=algorithm))
    if rank == 0:
        out_q.put(res)
    comm.all_reduce(tiny)
    comm.close()


def gloo_worker(rank, n, sizes, iters, port, out_q):
    import torch
    import torch.distributed as dist
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=n)
    res = {}
    for size in sizes:
        x = torch.ones(size // 4, dtype=torch.float32)
        times = []
        for it in range(iters + 2):
            dist.barrier()
            t0 = time.perf_counter()
            dist.all_reduce(x)
            if it >= 2:
                times.append(time.perf_counter() - t0)
        res[size] = (statistics.median(times), "gloo")
    if rank == 0:
        out_q.put(res)
    dist.barrier()
    dist.destroy_process_group()


CONFIGS = ["pccl_sealed", "pccl_clear", "pccl_nobackup", "gloo"]


def run_config(name: str, n: int, sizes: list, a: argparse.Namespace) -> dict:
    """{size: (median seconds, algorithm)} of rank 0 for one configuration."""
    ctx = mp.get_context("spawn")
    out_q, boot_q = ctx.Queue(), ctx.Queue()
    if name.startswith("pccl"):
        procs = [ctx.Process(target=pccl_worker, args=(r, n, sizes, a.iters, boot_q, out_q, a.streams,
                                                       a.chunk_kib * 1024, a.algorithm, name == "pccl_sealed",
                                                       a.heartbeat_s, name != "pccl_nobackup"))
                 for r in range(n)]
    else:
        port = free_port()
        procs = [ctx.Process(target=gloo_worker, args=(r, n, sizes, a.iters, port, out_q)) for r in range(n)]
    for p in procs:
        p.start()
    try:
        return out_q.get(timeout=900)
    finally:
        for p in procs:
            p.join(timeout=60)
            if p.is_alive():
                p.kill()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--peers", type=int, nargs="+", default=[4], help="group sizes, each run in turn")
    ap.add_argument("--sizes-mib", type=float, nargs="+", default=[4, 64])
    ap.add_argument("--iters", type=int, default=10)
    ap.add_argument("--streams", type=int, default=0, help="streams per neighbour (0: the library's default)")
    ap.add_argument("--chunk-kib", type=int, default=0, help="sub-chunk KiB (0: the library's default)")
    ap.add_argument("--only", choices=CONFIGS, nargs="+", help="run these configurations only")
    ap.add_argument("--algorithm", choices=["auto", "ring", "direct", "doubling"], default="auto",
                    help="pccl_py's all-reduce algorithm (auto: the library's choice per op)")
    ap.add_argument("--heartbeat-s", type=float, default=30.0,
                    help="pccl_py's heartbeat_timeout: many peers on few loaded cores go silent for seconds, "
                         "which the library's default (3 s) would take for death")
    ap.add_argument("--rounds", type=int, default=1,
                    help="runs of every configuration, interleaved; the last lines are the medians over rounds")
    a = ap.parse_args()
    if a.rounds < 1:
        ap.error("--rounds must be at least 1")
    sizes = [int(s * (1 << 20)) for s in a.sizes_mib]
    configs = a.only or CONFIGS
    cols = {"pccl_sealed": "sealed ms", "pccl_clear": "clear ms", "pccl_nobackup": "nobkp ms", "gloo": "gloo ms"}
    ratios = [(num, den, label) for num, den, label in [("gloo", "pccl_sealed", "gloo/sealed"),
                                                        ("gloo", "pccl_clear", "gloo/clear"),
                                                        ("gloo", "pccl_nobackup", "gloo/nobkp"),
                                                        ("pccl_sealed", "pccl_clear", "sealed/clear")]
              if num in configs and den in configs]
    print(f"loopback, f32 sum, median of {a.iters} ops per size and run, {a.rounds} round(s) "
          f"({os.cpu_count()} cores, load average {load()}), algorithm={a.algorithm}")
    print(f"{'peers':>5} {'size':>9} {'round':>6} {'algo':>9}" + "".join(f" {cols[c]:>9}" for c in configs) +
          "".join(f" {c + ' GB/s':>16}" for c in configs) + "".join(f" {r[2]:>12}" for r in ratios), flush=True)

    def line(n, s, rnd, algo, t):
        bus = 2 * (n - 1) / n * s / 1e9  # bus bandwidth convention (bytes each peer moves in a ring)
        size = f"{s / 2**20:.0f}Mi" if s >= 1 << 20 else f"{s / 2**10:.0f}Ki"
        print(f"{n:>5} {size:>9} {rnd:>6} {algo:>9}" + "".join(f" {t[c] * 1e3:>9.2f}" for c in configs) +
              "".join(f" {bus / t[c]:>16.2f}" for c in configs) +
              "".join(f" {t[num] / t[den]:>12.2f}" for num, den, _ in ratios), flush=True)

    for n in a.peers:
        rounds = []
        for r in range(a.rounds):
            results = {name: run_config(name, n, sizes, a) for name in configs}
            rounds.append(results)
            for s in sizes:
                algo = next((results[c][s][1] for c in configs if c != "gloo"), "-")
                line(n, s, str(r + 1), algo, {c: results[c][s][0] for c in configs})
        if a.rounds > 1:
            for s in sizes:
                algo = next((rounds[0][c][s][1] for c in configs if c != "gloo"), "-")
                line(n, s, "median", algo, {c: statistics.median(x[c][s][0] for x in rounds) for c in configs})
    print(f"load average after: {load()}")


def load() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


if __name__ == "__main__":
    main()
