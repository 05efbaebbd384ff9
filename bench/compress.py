"""Compression bench on real gradients: a small torch MLP is trained a few
steps on generated data (labels from a random teacher), then its gradient is
fed to every codec. Prints per codec the compression ratio against f32 and
the encode+decode throughput (GB/s of f32 input), with a plain memory copy of
the same buffer measured in the same run as the baseline.

    python bench/compress.py [--steps 5] [--repeat 3]

(The end-to-end all-reduce timing against dense f32 is added with the
communicator.)

Runs against the installed pccl_py (`pip install .` first; the benches never
put the source tree on sys.path).
"""
from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import statistics
import time

import numpy as np
import torch

from pccl_py import _core
from pccl_py.compress import FedZip


def model_gradients(steps: int, seed: int = 0):
    torch.manual_seed(seed)
    model = torch.nn.Sequential(torch.nn.Linear(784, 1024), torch.nn.ReLU(), torch.nn.Linear(1024, 1024),
                                torch.nn.ReLU(), torch.nn.Linear(1024, 10))
    teacher = torch.nn.Linear(784, 10)
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    for _ in range(steps):
        x = torch.randn(256, 784)
        y = teacher(x).argmax(dim=1)
        opt.zero_grad()
        torch.nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
    return {name: p.grad.detach().numpy().copy() for name, p in model.named_parameters()}


EXCHANGES = (["dense f32"] + [f"quant {k}" for k in ("fp16", "bf16", "int8", "int4", "e3m0")]
             + ["quant int8 stochastic", "DGC sparse d=0.01", "DGC sparse d=0.001"])


def exchange_worker(rank: int, n: int, flat: np.ndarray, iters: int, boot_q, out_q) -> None:
    """One loopback peer: times every exchange of EXCHANGES on its gradient."""
    import pccl_py as pc
    comm = pc.Communicator(bootstrap=[] if rank == 0 else [boot_q.get()], run_key="bench", timeout=120)
    if rank == 0:
        for _ in range(n - 1):
            boot_q.put(comm.addrs[0])
    comm.wait_for_peers(n, timeout=120)
    grad = flat * np.float32(1.0 + 0.25 * rank)  # each peer its own gradient
    tiny = np.zeros(1, np.float32)
    res = {}
    for name in EXCHANGES:
        def op():
            if name.startswith("DGC"):
                d = float(name.split("d=")[1])
                idx, vals = _core.topk_select(grad, d, 0, 0.01)
                blob = _core.sparse_encode(idx, vals, grad.size, False)
                _core.sparse_sum(comm.all_gather_bytes(blob), grad.size)
                return len(blob) * (n - 1)  # all_gather_bytes sends our blob to each other member
            x = grad.copy()
            q = None if name == "dense f32" else name.split()[1]
            return comm.all_reduce(x, op="avg", quant=q, stochastic=name.endswith("stochastic")).tx_bytes
        times, tx = [], 0
        for it in range(iters + 1):
            comm.all_reduce(tiny)  # barrier
            t0 = time.perf_counter()
            tx = op()
            if it >= 1:  # the first op warms up
                times.append(time.perf_counter() - t0)
        res[name] = (statistics.median(times), tx)
    if rank == 0:
        out_q.put(res)
    comm.all_reduce(tiny)
    comm.close()


def run_exchanges(flat: np.ndarray, peers: int, iters: int) -> dict:
    ctx = mp.get_context("spawn")
    out_q, boot_q = ctx.Queue(), ctx.Queue()
    procs = [ctx.Process(target=exchange_worker, args=(r, peers, flat, iters, boot_q, out_q)) for r in range(peers)]
    for p in procs:
        p.start()
    try:
        return out_q.get(timeout=900)
    finally:
        for p in procs:
            p.join(timeout=60)
            if p.is_alive():
                p.kill()


def best_time(fn, repeat: int) -> float:
    best = float("inf")
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return best


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--peers", type=int, default=4)
    ap.add_argument("--iters", type=int, default=5)
    args = ap.parse_args()
    grads = model_gradients(args.steps)
    flat = np.concatenate([g.ravel() for g in grads.values()]).astype(np.float32)
    n = flat.size
    raw = 4 * n
    print(f"gradient of a {n / 1e6:.2f} M-parameter MLP after {args.steps} steps ({raw / 2**20:.1f} MiB f32)")

    t_copy = best_time(lambda: flat.copy(), args.repeat)
    copy_gbs = 2 * raw / t_copy / 1e9  # encode + decode moves the data twice
    rows = [("memcpy x2 (baseline)", 1.0, copy_gbs)]

    def add(name, enc, dec):
        blob = enc()
        t = best_time(lambda: dec(enc()), args.repeat)
        size = len(blob) if isinstance(blob, (bytes, bytearray)) else sum(len(b) for b in blob.blobs.values())
        rows.append((name, raw / size, raw / t / 1e9))

    for kind in ("fp16", "bf16", "int8", "int4", "e3m0"):
        add(kind, lambda k=kind: _core.quantize(flat, k, 128),
            lambda b, k=kind: _core.dequantize(b, n, k, 128))
    add("int8 stochastic", lambda: _core.quantize(flat, "int8", 128, True, 1),
        lambda b: _core.dequantize(b, n, "int8", 128))
    for density in (0.01, 0.001):
        for fp16 in (False, True):
            def enc(d=density, h=fp16):
                idx, vals = _core.topk_select(flat, d, 0, 0.01)
                return _core.sparse_encode(idx, vals, n, h)
            add(f"top-k d={density}{' fp16' if fp16 else ''}", enc, lambda b: _core.sparse_sum([b], n))
    for density in (0.01, 0.001):
        fz = FedZip(density=density, clusters=3)
        add(f"FedZip z={density} k=3", lambda f=fz: f.encode(grads), lambda p, f=fz: f.decode(p))

    print(f"{'codec':<24}{'ratio vs f32':>14}{'enc+dec GB/s':>14}{'vs memcpy':>11}")
    for name, ratio, gbs in rows:
        print(f"{name:<24}{ratio:>14.1f}{gbs:>14.2f}{gbs / copy_gbs:>11.3f}")

    res = run_exchanges(flat, args.peers, args.iters)
    t0, b0 = res["dense f32"]
    print(f"\n{args.peers} peers on loopback, {raw / 2**20:.1f} MiB f32 gradient each, median of {args.iters} ops "
          f"({os.cpu_count()} cores)")
    print(f"{'exchange':<24}{'ms':>9}{'time/dense':>12}{'MiB sent':>10}{'bytes/dense':>13}")
    for name in EXCHANGES:
        t, b = res[name]
        print(f"{name:<24}{t * 1e3:>9.1f}{t / t0:>12.3f}{b / 2**20:>10.2f}{b / b0:>13.4f}")


if __name__ == "__main__":
    main()
