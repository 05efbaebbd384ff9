"""Compression bench on real gradients: a small torch MLP is trained a few
steps on generated data (labels from a random teacher), then its gradient is
fed to every codec. Prints per codec the compression ratio against f32 and
the encode+decode throughput (GB/s of f32 input), with a plain memory copy of
the same buffer measured in the same run as the baseline.

    PYTHONPATH=python python bench/compress.py [--steps 5] [--repeat 3]

(The end-to-end all-reduce timing against dense f32 is added with the
communicator.)
"""
from __future__ import annotations

import argparse
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


if __name__ == "__main__":
    main()
