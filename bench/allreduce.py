"""All-reduce throughput: pccl_py (encrypted, and with encrypt=False) vs
torch.distributed Gloo, same run.

    pip install torch==2.13.0 && pip install . && python bench/allreduce.py \
        [--peers 4] [--sizes-mib 4 64] [--iters 10] [--algorithm ring|direct]

Runs against the installed package. Starts N peer processes for each
configuration on loopback, all-reduces (sum) f32 buffers of each size, and
prints the median time per op of rank 0 (every iteration starts after a
barrier), bus bandwidths and the ratios gloo_time / pccl_time (> 1: pccl_py
is faster) and encrypted / clear (the cost of AES-256-GCM on every payload;
frames stay authenticated with encrypt=False).
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


def pccl_worker(rank, n, sizes, iters, boot_q, out_q, streams, chunk, algorithm, encrypt):
    import numpy as np

    import pccl_py as pc
    comm = pc.Communicator(bootstrap=[] if rank == 0 else [boot_q.get()], run_key="bench", timeout=60,
                           encrypt=encrypt,
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
            comm.all_reduce(x, algorithm=algorithm)
            if it >= 2:
                times.append(time.perf_counter() - t0)
        res[size] = statistics.median(times)
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
        res[size] = statistics.median(times)
    if rank == 0:
        out_q.put(res)
    dist.barrier()
    dist.destroy_process_group()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--peers", type=int, default=4)
    ap.add_argument("--sizes-mib", type=float, nargs="+", default=[4, 64])
    ap.add_argument("--iters", type=int, default=10)
    ap.add_argument("--streams", type=int, default=0, help="streams per neighbour (0: the library's default)")
    ap.add_argument("--chunk-kib", type=int, default=0, help="sub-chunk KiB (0: the library's default)")
    ap.add_argument("--only", choices=["pccl_py", "pccl_clear", "gloo"], help="run one configuration (no ratios)")
    ap.add_argument("--algorithm", choices=["ring", "direct"], default="ring", help="pccl_py's all-reduce algorithm")
    a = ap.parse_args()
    sizes = [int(s * (1 << 20)) for s in a.sizes_mib]
    n = a.peers
    ctx = mp.get_context("spawn")
    out_q, boot_q = ctx.Queue(), ctx.Queue()
    results = {}
    for name in [a.only] if a.only else ["pccl_py", "pccl_clear", "gloo"]:
        if name.startswith("pccl"):
            procs = [ctx.Process(target=pccl_worker, args=(r, n, sizes, a.iters, boot_q, out_q, a.streams,
                                                           a.chunk_kib * 1024, a.algorithm, name == "pccl_py"))
                     for r in range(n)]
        else:
            port = free_port()
            procs = [ctx.Process(target=gloo_worker, args=(r, n, sizes, a.iters, port, out_q)) for r in range(n)]
        for p in procs:
            p.start()
        try:
            results[name] = out_q.get(timeout=900)
        finally:
            for p in procs:
                p.join(timeout=60)
                if p.is_alive():
                    p.kill()
    print(f"{n} peers on loopback, f32 sum, median of {a.iters} ops ({os.cpu_count()} cores)")
    print(f"{'size':>9} {'pccl ms':>9} {'clear ms':>9} {'gloo ms':>9} {'pccl GB/s':>10} {'gloo GB/s':>10} "
          f"{'gloo/pccl':>10} {'gloo/clear':>11} {'pccl/clear':>11}")
    for s in sizes:
        if a.only:
            t = results[a.only][s]
            print(f"{s / 2**20:>7.0f}Mi {a.only} {t * 1e3:.1f} ms")
            continue
        p, c, g = results["pccl_py"][s], results["pccl_clear"][s], results["gloo"][s]
        bus = 2 * (n - 1) / n * s / 1e9  # bus bandwidth convention (bytes each peer moves)
        print(f"{s / 2**20:>7.0f}Mi {p * 1e3:>9.1f} {c * 1e3:>9.1f} {g * 1e3:>9.1f} {bus / p:>10.2f} {bus / g:>10.2f} "
              f"{g / p:>10.2f} {g / c:>11.2f} {p / c:>11.2f}")


if __name__ == "__main__":
    main()
