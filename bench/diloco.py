"""Bytes sent and wall time to reach a target eval loss: data-parallel
all-reduce every step (the baseline, same run) vs DiLoCo vs Streaming DiLoCo,
4 peers on loopback (threads of this process; teacher-student MLP).

    python bench/diloco.py [--peers 4] [--steps 800] [--target 0.01]

Prints, per method, the first step at which peer 0's eval loss (measured
every 10 steps, on the global params for DiLoCo after each sync) is <= target,
the bytes sent per peer and the wall time until then, and ratios vs the
baseline. quant="e3m0" rows run only if the communicator supports quant=.
"""

import argparse
import inspect
import os
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests"))

import torch  # noqa: E402

import pccl_py as pc  # noqa: E402
from pccl_py._training import DataParallel, TeacherTask, make_student  # noqa: E402
from pccl_py.diloco import DiLoCo, StreamingDiLoCo  # noqa: E402

from _diloco_group import run_group  # noqa: E402


def run(kind, peers, steps, target, H, **kw):
    def body(rank, comm):
        task = TeacherTask(seed=2)
        model = make_student(seed=5)
        inner = torch.optim.AdamW(model.parameters(), lr=2e-3, weight_decay=0.0)
        if kind == "dp":
            opt = DataParallel(model, inner, comm)
        elif kind == "diloco":
            opt = DiLoCo(model, inner, comm, sync_every=H, **kw)
        else:
            opt = StreamingDiLoCo(model, inner, comm, sync_every=H, fragments=3, **{"overlap_steps": 1, **kw})
        data = task.batches(stream=rank, batch=32)
        t0, hit = time.perf_counter(), None
        for step in range(1, steps + 1):
            x, y = next(data)
            torch.nn.functional.mse_loss(model(x), y).backward()
            opt.step()
            opt.zero_grad()
            if rank == 0 and hit is None and step % 10 == 0 and task.eval_loss(model) <= target:
                hit = (step, opt.tx_bytes, time.perf_counter() - t0)
        if hasattr(opt, "close"):
            opt.close()
        return dict(hit=hit, tx=opt.tx_bytes, wall=time.perf_counter() - t0, final=task.eval_loss(model),
                    wait=getattr(opt, "comm_wait_s", float("nan")))
    return run_group(peers, body, timeout=300)[0]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--peers", type=int, default=4)
    ap.add_argument("--steps", type=int, default=800)
    ap.add_argument("--sync-every", type=int, default=48)
    ap.add_argument("--target", type=float, default=0.01)
    a = ap.parse_args()
    H = a.sync_every
    rows = [("data parallel (every step)", "dp", {}), (f"DiLoCo H={H}", "diloco", {}),
            (f"Streaming DiLoCo H={H} P=3 tau=1", "streaming", {}),
            (f"Streaming DiLoCo H={H} P=3 tau=0", "streaming", {"overlap_steps": 0})]
    if "quant" in inspect.signature(pc.Communicator.all_reduce).parameters:
        rows += [(f"DiLoCo H={H} e3m0", "diloco", {"quant": "e3m0"}),
                 (f"Streaming H={H} P=3 e3m0", "streaming", {"quant": "e3m0"})]
    res = {}
    for name, kind, kw in rows:
        res[name] = run(kind, a.peers, a.steps, a.target, H, **kw)
    base = res[rows[0][0]]
    print(f"{a.peers} peers, loopback, {a.steps} steps, target eval loss {a.target}")
    print(f"{'method':<36}{'final loss':>11}{'step@target':>12}{'MB@target':>11}{'bytes x':>9}{'time@target':>12}"
          f"{'time x':>8}{'total MB':>10}{'comm wait':>10}")
    for name, r in res.items():
        h, bh = r["hit"], base["hit"]
        if h:
            bx = f"{bh[1] / max(h[1], 1):.1f}" if bh else "-"
            tx = f"{bh[2] / h[2]:.2f}" if bh else "-"
            print(f"{name:<36}{r['final']:>11.5f}{h[0]:>12}{h[1] / 1e6:>11.3f}{bx:>9}{h[2]:>11.2f}s{tx:>8}"
                  f"{r['tx'] / 1e6:>10.3f}{r['wait']:>9.2f}s")
        else:
            print(f"{name:<36}{r['final']:>11.5f}{'not reached':>12}{'':>11}{'':>9}{'':>12}{'':>8}{r['tx'] / 1e6:>10.3f}")
    print("bytes x / time x: baseline's bytes (time) to reach the target divided by this method's")
    print("comm wait: seconds peer 0 spent blocked in communication inside step() (the overlap of tau=1 hides it)")


if __name__ == "__main__":
    main()
