"""DiLoCo across machines: run it in two (or more) terminals.

    terminal 1:  python examples/diloco_mlp.py
                 (prints the address to paste, then waits for a second peer)
    terminal 2:  python examples/diloco_mlp.py --bootstrap /ip4/127.0.0.1/tcp/PORT/p2p/ID

On real machines, listen on a routable address: --listen /ip4/0.0.0.0/tcp/4001.
Every peer trains its own data shard; every --sync-every steps the peers
average their progress (pseudo-gradients) and take an outer Nesterov step.
Every peer first waits (without spinning, up to --wait seconds) until --peers
peers are in; more may join later and any may die at any time: the others
carry on. Ctrl-C stops a peer at once, even while it waits.
"""

import argparse

import torch

import pccl_py as pc


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bootstrap", action="append", default=[], help="multiaddr of any peer of the run")
    ap.add_argument("--listen", default="/ip4/127.0.0.1/tcp/0")
    ap.add_argument("--key", default="diloco-example", help="run key shared by every peer")
    ap.add_argument("--steps", type=int, default=2000)
    ap.add_argument("--sync-every", type=int, default=100)
    ap.add_argument("--seed", type=int, default=None, help="data shard (default: random)")
    ap.add_argument("--peers", type=int, default=2, help="peers to wait for before training")
    ap.add_argument("--wait", type=float, default=600.0, help="seconds to wait for them")
    a = ap.parse_args()

    comm = pc.Communicator(listen=[a.listen], bootstrap=a.bootstrap, run_key=a.key)
    print("peer", comm.peer_id)
    for addr in comm.addrs:
        print("bootstrap others with:", addr, flush=True)
    print(f"waiting for {a.peers} peers ...", flush=True)
    comm.wait_for_peers(a.peers, timeout=a.wait)

    torch.manual_seed(0)  # same initial model everywhere (sync_state would fix it anyway)
    teacher = torch.nn.Sequential(torch.nn.Linear(32, 64), torch.nn.Tanh(), torch.nn.Linear(64, 1))
    model = torch.nn.Sequential(torch.nn.Linear(32, 128), torch.nn.ReLU(), torch.nn.Linear(128, 1))
    inner = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=0.01)
    opt = pc.DiLoCo(model, inner, comm, sync_every=a.sync_every)   # the one-line change

    gen = torch.Generator().manual_seed(a.seed if a.seed is not None else torch.seed() % 2**31)
    for step in range(1, a.steps + 1):
        x = torch.randn(64, 32, generator=gen)
        with torch.no_grad():
            y = teacher(x)
        loss = torch.nn.functional.mse_loss(model(x), y)
        loss.backward()
        opt.step()
        opt.zero_grad()
        if step % a.sync_every == 0:
            print(f"step {step:5d}  loss {loss.item():.5f}  peers {comm.world_size}", flush=True)
    comm.close()


if __name__ == "__main__":
    main()
