"""One rank of an FSDP node for tests/test_fsdp_diloco.py: FSDP2 over Gloo
inside the node (the test hosts the node's TCPStore), DiLoCo across nodes on
ring ``rank`` (pccl_py.ShardedDiLoCo), the LM task of pccl_py._lm.

Run as ``fsdp_node.py run ARGS_JSON`` (harness.Peer). Prints JSON lines:
{"addrs"} (after the store key "go" when ``gated``), then {"ready"} before its first step, {"joined"} after it, one
{"sync"} per outer sync (revision, world, sha of its global shard), and
{"done"} or {"error"} at the end. The node stops at the first outer sync
boundary after the test sets the store key "stop" (its ranks agree on it
with a Gloo all-reduce, so both stop at the same step)."""

import datetime
import hashlib
import json
import os
import signal
import sys
import time

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch.distributed.device_mesh import init_device_mesh
from torch.distributed.fsdp import fully_shard

import pccl_py as pc
from pccl_py._lm import VOCAB, StdlibText, TinyGPT
from pccl_py.sharded import NodeError


def say(**kw):
    print(json.dumps(kw), flush=True)


def main():
    a = json.loads(sys.argv[2])
    torch.set_num_threads(1)  # 4-6 of these share the test machine's cores
    rank, size = a["rank"], a["size"]
    store = dist.TCPStore("127.0.0.1", a["store_port"], is_master=False, timeout=datetime.timedelta(seconds=30))
    dist.init_process_group("gloo", store=dist.PrefixStore("pg/", store), rank=rank, world_size=size,
                            timeout=datetime.timedelta(seconds=30))
    node = pc.NodeGroup(rank, size, store, timeout=a.get("node_timeout", 8.0), heartbeat=0.25)
    torch.manual_seed(0)
    model = TinyGPT(ctx=32, d=32, layers=2, heads=2, seed=0)  # the same init on every node
    mesh = init_device_mesh("cpu", (size,))
    for block in model.blocks:
        fully_shard(block, mesh=mesh)
    fully_shard(model, mesh=mesh)
    inner = torch.optim.AdamW(model.parameters(), lr=3e-3)
    data = StdlibText(ctx=32, max_train_bytes=1 << 20).batches(stream=a["seed"] * 16 + rank, batch=4)
    if a.get("gated"):  # started early so its start-up overlaps the others'; joins once the test says "go"
        store.wait(["go"], datetime.timedelta(seconds=120))
    comm = pc.Communicator(bootstrap=a["bootstrap"] or None, run_key="fsdp-test", timeout=a.get("timeout", 5.0))
    if a.get("ask_late"):
        # Fault injection: rank 1 asks ring 1 to admit it only after rank 0 took part in its
        # first agreement of ring 0 (so ring 1's update_topology of that round is over): the
        # rings admit this node at different rounds, the split NodeComm must absorb.
        if rank == 0:
            first_all_reduce = comm.all_reduce

            def all_reduce_then_tell(*args, **kw):
                comm.all_reduce = first_all_reduce
                info = first_all_reduce(*args, **kw)
                store.set("rank0-agreed", "1")
                return info
            comm.all_reduce = all_reduce_then_tell
        else:
            first_update_topology = comm.update_topology

            def late_update_topology():
                comm.update_topology = first_update_topology
                store.wait(["rank0-agreed"], datetime.timedelta(seconds=120))
                first_update_topology()
            comm.update_topology = late_update_topology
    say(addrs=comm.addrs)
    opt = pc.ShardedDiLoCo(model, inner, comm, node=node, sync_every=a["sync_every"], outer_lr=0.7,
                           outer_momentum=0.9)
    if a.get("wait_nodes"):
        opt.node_comm.wait_for_peers(a["wait_nodes"], timeout=60)
    syncs = opt.outer_syncs
    t_ready = time.time()
    say(ready=t_ready)
    stop = torch.zeros(1)
    try:
        for step in range(a.get("max_steps", 3000)):
            with node.guard(comm):
                x, y = next(data)
                loss = F.cross_entropy(model(x).reshape(-1, VOCAB), y.reshape(-1))
                loss.backward()
                opt.step()
                opt.zero_grad()
                if step == 0:
                    say(joined=time.time(), world=opt.node_comm.world_size, step=opt.step_count,
                        revision=opt._revision)
                if opt.outer_syncs != syncs:
                    syncs = opt.outer_syncs
                    shard = opt.global_params()[0]
                    say(sync=syncs, revision=opt._revision, step=opt.step_count, world=opt.node_comm.world_size,
                        sha=hashlib.sha256(shard.numpy().tobytes()).hexdigest(), numel=shard.numel(),
                        retried=opt.node_comm.rounds_retried, comm_wait=round(opt.comm_wait_s, 3),
                        loss=float(loss), t=time.time())
                    if a.get("die_at_sync") == syncs:
                        os.kill(os.getpid(), signal.SIGKILL)
                    stop.fill_(1.0 if store.check(["stop"]) else 0.0)
                    dist.all_reduce(stop, op=dist.ReduceOp.MAX)
                    if stop.item():
                        break
            time.sleep(a.get("pause", 0.0))
    except NodeError as e:
        say(error="NodeError", msg=str(e), t=time.time())
        # The node's process group lost a rank: its teardown at interpreter exit can
        # block on the dead peer, so leave at once (the rings already dropped us).
        os._exit(3)
    opt.close()
    comm.close()
    node.close()
    dist.destroy_process_group()
    say(done=True)


if __name__ == "__main__":
    main()
