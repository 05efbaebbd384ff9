"""Streaming DiLoCo: the model is split into fragments that sync on staggered
steps, each all-reduce overlapping the next inner steps, with 4-bit outer
gradients when --quant e3m0 is given. Starts its own peers as threads, so
one command shows the whole thing:

    python examples/streaming_diloco.py --peers 3 --steps 400
"""

import argparse
import threading

import torch

import pccl_py as pc


def train(comm: pc.Communicator, n: int, shard: int, a, out: dict) -> None:
    comm.wait_for_peers(n, timeout=60)
    torch.manual_seed(0)
    teacher = torch.nn.Sequential(torch.nn.Linear(16, 32), torch.nn.Tanh(), torch.nn.Linear(32, 1))
    model = torch.nn.Sequential(torch.nn.Linear(16, 64), torch.nn.ReLU(), torch.nn.Linear(64, 64), torch.nn.ReLU(),
                                torch.nn.Linear(64, 1))
    inner = torch.optim.AdamW(model.parameters(), lr=3e-3)
    opt = pc.StreamingDiLoCo(model, inner, comm, sync_every=a.sync_every, fragments=a.fragments,
                             overlap_steps=1, alpha=0.5, quant=a.quant)
    gen = torch.Generator().manual_seed(100 + shard)
    for step in range(1, a.steps + 1):
        x = torch.randn(32, 16, generator=gen)
        with torch.no_grad():
            y = teacher(x)
        loss = torch.nn.functional.mse_loss(model(x), y)
        loss.backward()
        opt.step()
        opt.zero_grad()
        if shard == 0 and step % a.sync_every == 0:
            print(f"step {step:4d}  loss {loss.item():.5f}", flush=True)
    out[shard] = loss.item()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--peers", type=int, default=3)
    ap.add_argument("--steps", type=int, default=400)
    ap.add_argument("--sync-every", type=int, default=40)
    ap.add_argument("--fragments", type=int, default=4)
    ap.add_argument("--quant", default=None, help="e.g. e3m0, int8, fp16 (default: f32)")
    a = ap.parse_args()
    torch.set_num_threads(1)
    first = pc.Communicator(run_key="streaming-example")
    comms = [first] + [pc.Communicator(bootstrap=first.addrs, run_key="streaming-example")
                       for _ in range(a.peers - 1)]
    out: dict = {}
    threads = [threading.Thread(target=train, args=(c, a.peers, i, a, out)) for i, c in enumerate(comms)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for c in comms:
        c.close()
    print("final loss per peer:", {k: round(v, 5) for k, v in sorted(out.items())})


if __name__ == "__main__":
    main()
