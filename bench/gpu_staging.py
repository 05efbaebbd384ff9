"""Staging throughput of CUDA all-reduce: GB/s of an all-reduce of CUDA
tensors (staged through pinned host chunks, pccl_py._staging) between two
processes on one GPU, against the same all-reduce of CPU tensors, measured in
the same run.

Run on a machine with a CUDA GPU (with pccl_py importable)::

    python bench/gpu_staging.py                 # 1 GiB, 3 timed reps
    python bench/gpu_staging.py --mib 256 --reps 5 --chunk-mib 64

It prints one line per case (best of the reps) and the ratio CUDA / CPU
(1.0: staging costs nothing over the network work; the d2h/h2d copies of
each chunk overlap the next chunk's network work).
"""

import argparse
import multiprocessing as mp
import time


def peer(rank: int, args, addr_q, out_q) -> None:
    import torch

    import pccl_py as pc
    from pccl_py import _staging

    comm = pc.Communicator(bootstrap=None if rank == 0 else [addr_q.get(timeout=60)], run_key="gpu-bench",
                           timeout=30.0)
    if rank == 0:
        addr_q.put(comm.addrs[0])
    comm.wait_for_peers(2, timeout=120)
    n = args.mib * (1 << 20) // 4
    results = {}
    for name in ("cpu", "cuda"):
        x = torch.randn(n, device=name)
        kw = {"chunk_bytes": args.chunk_mib << 20} if name == "cuda" else {}
        run = (lambda: _staging.all_reduce(comm, x, "sum", **kw)) if name == "cuda" else \
            (lambda: comm.all_reduce(x, "sum"))
        run()  # warm-up: connections, pinned buffers
        best = float("inf")
        for _ in range(args.reps):
            if name == "cuda":
                torch.cuda.synchronize()
            t = time.perf_counter()
            run()
            if name == "cuda":
                torch.cuda.synchronize()
            best = min(best, time.perf_counter() - t)
        results[name] = n * 4 / best / 1e9
    out_q.put((rank, results))
    comm.close()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--mib", type=int, default=1024, help="tensor size in MiB (default 1024)")
    ap.add_argument("--reps", type=int, default=3, help="timed repetitions (best one reported)")
    ap.add_argument("--chunk-mib", type=int, default=64, help="staging chunk in MiB (default 64)")
    args = ap.parse_args()
    import torch
    if not torch.cuda.is_available():
        raise SystemExit("no CUDA device: this bench needs one")
    ctx = mp.get_context("spawn")
    addr_q, out_q = ctx.Queue(), ctx.Queue()
    procs = [ctx.Process(target=peer, args=(r, args, addr_q, out_q)) for r in range(2)]
    for p in procs:
        p.start()
    try:
        res = dict(out_q.get(timeout=1800) for _ in procs)
    finally:
        for p in procs:
            p.join(timeout=60)
            if p.is_alive():
                p.kill()
    cpu = min(r["cpu"] for r in res.values())
    cuda = min(r["cuda"] for r in res.values())
    print(f"all-reduce of {args.mib} MiB f32, 2 processes, {torch.cuda.get_device_name(0)}")
    print(f"cpu tensors   {cpu:7.2f} GB/s")
    print(f"cuda tensors  {cuda:7.2f} GB/s  (staged, {args.chunk_mib} MiB chunks)")
    print(f"ratio cuda/cpu {cuda / cpu:.2f}")


if __name__ == "__main__":
    main()
