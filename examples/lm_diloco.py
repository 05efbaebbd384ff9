"""A small GPT trained with DiLoCo on real text: the bytes of Python's own
standard library sources (held-out files for evaluation), against
data-parallel training on the same samples. Starts its workers as threads of
this process (real communicators on loopback), so one command shows it all:

    python examples/lm_diloco.py --peers 4 --steps 600 --sync-every 50 [--compressor topk2]

--compressor: none (dense f32 outer gradients), e3m0 (4-bit quantized
all-reduce), topk (top 2% with error feedback), topk2 (top 2%, 2-bit values).
Prints the eval loss (nats per byte) and the bytes every worker sent.
"""

import argparse
import threading

import torch

import pccl_py as pc
from pccl_py._lm import StdlibText, TinyGPT
from pccl_py._training import DataParallel

COMPRESSORS = {
    "none": {},
    "e3m0": {"quant": "e3m0"},
    "topk": {"compressor": lambda: pc.TopK(density=0.02)},
    "topk2": {"compressor": lambda: pc.QuantizedTopK(density=0.02, bits=2)},
}


def worker(comm, rank, n, task, a, data_parallel, out):
    comm.wait_for_peers(n, timeout=60)
    model = TinyGPT(ctx=task.ctx, seed=1)  # the same init everywhere (sync_state would fix it anyway)
    inner = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=0.01)
    if data_parallel:
        opt = DataParallel(model, inner, comm)
    else:
        kw = {k: (v() if callable(v) else v) for k, v in COMPRESSORS[a.compressor].items()}
        opt = pc.DiLoCo(model, inner, comm, sync_every=a.sync_every, **kw)
    data = task.batches(stream=rank, batch=16)
    for step in range(1, a.steps + 1):
        x, y = next(data)
        loss = torch.nn.functional.cross_entropy(model(x).reshape(-1, 256), y.reshape(-1))
        loss.backward()
        opt.step()
        opt.zero_grad()
        if rank == 0 and step % a.sync_every == 0:
            print(f"  {'DDP' if data_parallel else 'DiLoCo'} step {step:4d}  train loss {loss.item():.3f}  "
                  f"eval loss {task.eval_loss(model):.3f}", flush=True)
    out[rank] = (task.eval_loss(model), opt.tx_bytes)


def run(a, task, data_parallel):
    first = pc.Communicator(run_key="lm-example")
    comms = [first] + [pc.Communicator(bootstrap=first.addrs, run_key="lm-example") for _ in range(a.peers - 1)]
    out = {}
    try:
        threads = [threading.Thread(target=worker, args=(c, r, a.peers, task, a, data_parallel, out))
                   for r, c in enumerate(comms)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    finally:
        for c in comms:
            c.close()
    if len(out) != a.peers:
        raise SystemExit("a worker failed")
    return out[0][0], sum(tx for _, tx in out.values())


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--peers", type=int, default=4)
    ap.add_argument("--steps", type=int, default=600)
    ap.add_argument("--sync-every", type=int, default=50)
    ap.add_argument("--compressor", choices=list(COMPRESSORS), default="none")
    a = ap.parse_args()
    torch.set_num_threads(1)
    task = StdlibText(ctx=64)
    print(f"{task.train.numel() / 1e6:.1f} MB of stdlib source to train on, {task.held.numel() / 1e6:.2f} MB "
          f"held out; untrained eval loss {task.eval_loss(TinyGPT(seed=1)):.3f}")
    dp_loss, dp_tx = run(a, task, True)
    dl_loss, dl_tx = run(a, task, False)
    print(f"data parallel: eval loss {dp_loss:.4f}, {dp_tx / 1e6:.2f} MB sent")
    print(f"DiLoCo H={a.sync_every} ({a.compressor}): eval loss {dl_loss:.4f}, {dl_tx / 1e6:.2f} MB sent")
    print(f"loss ratio {dl_loss / dp_loss:.3f}, {dp_tx / max(dl_tx, 1):.1f}x fewer bytes")


if __name__ == "__main__":
    main()
