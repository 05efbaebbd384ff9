"""DiLoCo on a real task, and its memory at model scale.

    python bench/diloco.py [--peers 4] [--steps 600] [--sync-every 50] [--only dense topk ...]
    python bench/diloco.py --model-mb 200 [--delayed]

Default: a small byte-level GPT (pccl_py._lm.TinyGPT) trained on the bytes of
the standard library's own sources, eval loss on held-out files; `--peers`
workers (threads of this process, real communicators on loopback) each train
on their own random windows. Rows, each against data-parallel training (an
f32 all-reduce of the gradients every step; the baseline, same run, same
samples): DiLoCo (dense f32 outer gradients), Streaming DiLoCo with 4-bit
e3m0 outer gradients, DiLoCo with top-k outer gradients (2%, error
feedback) and top-k with 2-bit values (QuantizedTopK), both with outer SGD
lr 1 without momentum (the error feedback plays its role). Prints peer 0's final
eval loss (the last step is a sync: every peer holds the global params), its
ratio to the baseline's, the bytes all peers sent and the baseline's bytes
divided by them.

`--model-mb N`: memory and sync time of a blocking DiLoCo at model scale, one
process per peer: peak RSS (ru_maxrss) of a process training an N MB f32 MLP
alone (params + grads, SGD without momentum) and of 2 peers training it
wrapped in DiLoCo (sync every 2 steps), the ratio and the extra memory in
model copies; the time of a normal outer sync, of the sync that admits a
joiner (its state transfer: global copy + outer momentum) and the joiner's
first step. `--delayed`: the same with DiLoCo(delayed=True) (each sync's
exchange runs during the next 2 inner steps; the times are those of the steps
that apply one sync and start the next, which wait for what 2 short steps
did not hide).

Runs against the installed pccl_py (`pip install .` first; the benches never
put the source tree on sys.path).
"""

import argparse
import json
import os
import resource
import subprocess
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests"))

import torch  # noqa: E402

import pccl_py as pc  # noqa: E402
from pccl_py._lm import StdlibText, TinyGPT  # noqa: E402
from pccl_py._training import DataParallel  # noqa: E402

from _diloco_group import run_group  # noqa: E402

SPARSE_OUTER = dict(outer_lr=1.0, outer_momentum=0.0, nesterov=False)
ROWS = {  # name: (label, wrapper factory or None for data parallel)
    "ddp": ("data parallel (every step)", None),
    "dense": ("DiLoCo f32", lambda m, i, c, H: pc.DiLoCo(m, i, c, sync_every=H)),
    "e3m0": ("Streaming DiLoCo P=5 tau=1 e3m0",
             lambda m, i, c, H: pc.StreamingDiLoCo(m, i, c, sync_every=H, fragments=5, overlap_steps=1,
                                                   quant="e3m0")),
    # Top-k rows: outer SGD with lr 1 and no momentum (SparseLoCo: the error
    # feedback accumulator takes the momentum's role; with Nesterov 0.9 on top
    # the same run ended at 2.45 instead of 2.29 for top-k + 2-bit).
    "topk": ("DiLoCo top-k 2%", lambda m, i, c, H: pc.DiLoCo(m, i, c, sync_every=H, **SPARSE_OUTER,
                                                               compressor=pc.TopK(density=0.02))),
    "topk2": ("DiLoCo top-k 2% + 2-bit values",
              lambda m, i, c, H: pc.DiLoCo(m, i, c, sync_every=H, **SPARSE_OUTER,
                                           compressor=pc.QuantizedTopK(density=0.02, bits=2))),
}


def lm_run(row, peers, steps, H, task):
    factory = ROWS[row][1]

    def body(rank, comm):
        model = TinyGPT(ctx=task.ctx, seed=1)
        inner = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=0.01)
        opt = DataParallel(model, inner, comm) if factory is None else factory(model, inner, comm, H)
        data = task.batches(stream=rank, batch=16)
        for _ in range(steps):
            x, y = next(data)
            torch.nn.functional.cross_entropy(model(x).reshape(-1, 256), y.reshape(-1)).backward()
            opt.step()
            opt.zero_grad()
        if hasattr(opt, "close"):
            opt.close()
        return dict(loss=task.eval_loss(model), tx=opt.tx_bytes)

    res = run_group(peers, body, timeout=3600, comm_timeout=30.0)
    return dict(loss=res[0]["loss"], tx=sum(r["tx"] for r in res))


def lm_main(a):
    task = StdlibText(ctx=64)
    print(f"{a.peers} workers, TinyGPT ({sum(p.numel() for p in TinyGPT().parameters())} params) on "
          f"{task.train.numel() / 1e6:.1f} MB of stdlib source, {a.steps} steps, batch 16 x 64 bytes, "
          f"H={a.sync_every}; untrained eval loss {task.eval_loss(TinyGPT(seed=1)):.3f}", flush=True)
    res = {}
    for row in ["ddp"] + [r for r in a.only if r != "ddp"]:
        t0 = time.perf_counter()
        res[row] = lm_run(row, a.peers, a.steps, a.sync_every, task)
        res[row]["wall"] = time.perf_counter() - t0
        print(f"  {ROWS[row][0]}: eval loss {res[row]['loss']:.4f}, {res[row]['tx'] / 1e6:.2f} MB sent "
              f"({res[row]['wall']:.0f} s)", flush=True)
    base = res["ddp"]
    print(f"{'method':<36}{'eval loss':>10}{'loss / DDP':>12}{'MB sent':>10}{'DDP bytes / bytes':>19}")
    for row, r in res.items():
        print(f"{ROWS[row][0]:<36}{r['loss']:>10.4f}{r['loss'] / base['loss']:>12.3f}{r['tx'] / 1e6:>10.2f}"
              f"{base['tx'] / max(r['tx'], 1):>19.1f}")


# ------------------------------------------------------------------ --model-mb

def n_layers(mb):
    return max(1, round(mb * 2**20 / (4 * (1024 * 1024 + 1024))))


def big_model(mb):
    torch.manual_seed(0)
    return torch.nn.Sequential(*[torch.nn.Linear(1024, 1024) for _ in range(n_layers(mb))])


def peak_mb():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def train_step(model, opt):
    model(torch.ones(2, 1024)).sum().backward()
    opt.step()
    opt.zero_grad(set_to_none=False)


def worker(role, mb, boot, delayed):
    """One process: prints JSON lines."""
    torch.set_num_threads(1)
    model = big_model(mb)
    size = sum(p.numel() * 4 for p in model.parameters()) / 2**20
    inner = torch.optim.SGD(model.parameters(), lr=1e-4)
    if role == "alone":
        for _ in range(6):
            train_step(model, inner)
        print(json.dumps({"model_mb": size, "peak_mb": peak_mb()}), flush=True)
        return
    comm = pc.Communicator(bootstrap=boot, run_key="bench-mem", timeout=60.0)
    print(json.dumps({"addr": comm.addrs[0]}), flush=True)
    if role == "joiner":
        sys.stdin.readline()  # go
        opt = pc.DiLoCo(model, inner, comm, sync_every=2, **outer_kw(delayed))
        t0 = time.perf_counter()
        train_step(model, opt)  # asks to join; blocks until the members' next sync, receives the state
        print(json.dumps({"first_step_s": time.perf_counter() - t0, "rx_mb": opt.rx_bytes / 2**20}), flush=True)
        train_step(model, opt)
        comm.close()
        return
    comm.wait_for_peers(2, timeout=120)
    opt = pc.DiLoCo(model, inner, comm, sync_every=2, **outer_kw(delayed))
    syncs = []
    for step in range(1, 11):
        if step == 7:
            print(json.dumps({"joiner_go": True}), flush=True)
            time.sleep(2.0)  # the joiner asks meanwhile; admitted at the sync after step 8
        t0 = time.perf_counter()
        train_step(model, opt)
        if step % 2 == 0:
            syncs.append((step, time.perf_counter() - t0, comm.world_size))
    print(json.dumps({"model_mb": size, "peak_mb": peak_mb(), "syncs": syncs}), flush=True)
    comm.close()


def outer_kw(delayed):
    return {"delayed": True, "outer_momentum": 0.5} if delayed else {}


def memory_main(a):
    me = [sys.executable, os.path.abspath(__file__), "--model-mb", str(a.model_mb)] + \
        (["--delayed"] if a.delayed else []) + ["--worker"]

    def start(role, boot=()):
        return subprocess.Popen(me + [role] + list(boot), stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)

    def line(p):
        out = p.stdout.readline()
        if not out:
            raise RuntimeError(f"a worker died (exit {p.wait()})")
        return json.loads(out)

    procs = []
    try:
        alone = start("alone")
        procs.append(alone)
        base = line(alone)
        alone.wait(60)
        m0 = start("member")
        procs.append(m0)
        addr = line(m0)["addr"]
        m1, j = start("member", [addr]), start("joiner", [addr])
        procs += [m1, j]
        line(m1)
        line(j)
        line(m0)  # joiner_go
        j.stdin.write("go\n")
        j.stdin.flush()
        line(m1)
        res = [line(m0), line(m1)]
        joined = line(j)
        for p in procs:
            p.wait(120)
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
            p.wait()
    size = base["model_mb"]
    peak = max(r["peak_mb"] for r in res)
    normal = [dt for r in res for s, dt, w in r["syncs"] if w == 2]
    admit = [dt for r in res for s, dt, w in r["syncs"] if w == 3]
    print(f"model {size:.0f} MB f32 ({n_layers(a.model_mb)} Linear(1024, 1024) layers), SGD inner")
    kind = "DiLoCo(delayed=True)" if a.delayed else "DiLoCo"
    print(f"peak RSS alone (params + grads): {base['peak_mb']:.0f} MB; wrapped in {kind}, 2 peers: {peak:.0f} MB")
    print(f"ratio {peak / base['peak_mb']:.2f}; extra {peak - base['peak_mb']:.0f} MB = "
          f"{(peak - base['peak_mb']) / size:.2f} model copies")
    print(f"outer sync (2 peers): median {sorted(normal)[len(normal) // 2]:.2f} s, max {max(normal):.2f} s; "
          f"the sync admitting a joiner (which receives {joined['rx_mb']:.0f} MB: state + that all-reduce): {max(admit):.2f} s; "
          f"the joiner's first step (from asking until trained state in hand): {joined['first_step_s']:.2f} s")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--peers", type=int, default=4)
    ap.add_argument("--steps", type=int, default=600)
    ap.add_argument("--sync-every", type=int, default=50)
    ap.add_argument("--only", nargs="+", default=["dense", "e3m0", "topk", "topk2"], choices=list(ROWS))
    ap.add_argument("--model-mb", type=float, default=0.0, help="memory mode: model size in MB")
    ap.add_argument("--delayed", action="store_true", help="memory mode: DiLoCo(delayed=True)")
    ap.add_argument("--worker", nargs="+", help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.worker:
        worker(a.worker[0], a.model_mb, a.worker[1:], a.delayed)
    elif a.model_mb > 0:
        memory_main(a)
    else:
        torch.set_num_threads(1)
        lm_main(a)


if __name__ == "__main__":
    main()
