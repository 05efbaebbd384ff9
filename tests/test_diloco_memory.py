"""Memory of the DiLoCo wrappers at model scale (the issue's bound): a blocking
DiLoCo adds at most two f32 copies of the model (the global copy and the outer
momentum) plus small exchange pieces; a delayed one adds the in-flight
buffer (one more copy) and the core's backups of its pieces on the wire.
Two real processes each train a ~40 MB model;
each measures its peak RSS before wrapping (model + grads + communicator,
after plain training steps) and after several outer syncs wrapped, so the
extra peak is what the wrapper and its syncs cost.

The gauge is checked in the same process: allocating one more model-sized
tensor must show up as one model copy (so a wrapper that kept, say, full-size
send and recv copies would fail the bound rather than hide under noise).

Run as ``test_diloco_memory.py run ARGS_JSON`` it is one peer (harness.Peer).
"""

import json
import os
import sys

import pytest

from harness import Peer

LAYERS = 10  # Linear(1024, 1024): 10 x 4.2 MB = 42 MB of f32
SYNC_EVERY = 2


def _peak_bytes() -> int:
    # VmHWM, this address space's peak. Not getrusage's ru_maxrss: Linux keeps
    # that across exec, so a peer started from a big pytest worker would
    # report the worker's peak.
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024  # kB
    raise RuntimeError("no VmHWM in /proc/self/status")


def _rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _peer(a: dict) -> None:
    import torch

    import pccl_py as pc
    torch.set_num_threads(1)
    comm = pc.Communicator(bootstrap=a["bootstrap"] or None, run_key="diloco-memory", timeout=30.0)
    print(json.dumps({"addrs": comm.addrs}), flush=True)
    comm.wait_for_peers(2, timeout=60)
    torch.manual_seed(0)
    model = torch.nn.Sequential(*[torch.nn.Linear(1024, 1024) for _ in range(LAYERS)])
    size = sum(p.numel() * 4 for p in model.parameters())
    inner = torch.optim.SGD(model.parameters(), lr=1e-4)  # no inner state

    def step(opt):
        model(torch.ones(2, 1024)).sum().backward()
        opt.step()
        opt.zero_grad(set_to_none=False)

    for _ in range(3):
        step(inner)
    peak0, rss0 = _peak_bytes(), _rss_bytes()
    opt = pc.DiLoCo(model, inner, comm, sync_every=SYNC_EVERY, delayed=a["delayed"],
                    outer_momentum=0.5 if a["delayed"] else 0.9)
    for _ in range(6 * SYNC_EVERY):
        step(opt)
    syncs = opt.outer_syncs
    opt.close()
    peak1, rss1 = _peak_bytes(), _rss_bytes()
    extra = torch.ones(size // 4)  # the gauge's check: one more model copy, touched
    rss2 = _rss_bytes()
    print(json.dumps({"size": size, "peak_extra": (peak1 - peak0) / size, "rss_extra": (rss1 - rss0) / size,
                      "gauge": (rss2 - rss1) / size, "syncs": syncs, "world": comm.world_size,
                      "n": extra.numel()}), flush=True)
    comm.close()


def _run_pair(delayed: bool) -> list:
    first = Peer("run", {"bootstrap": [], "delayed": delayed}, script=os.path.abspath(__file__))
    peers = [first]
    try:
        boot = first.read(60)["addrs"]
        peers.append(Peer("run", {"bootstrap": boot, "delayed": delayed}, script=os.path.abspath(__file__)))
        peers[1].read(60)
        return [p.read(120) for p in peers]
    finally:
        for p in peers:
            p.kill()


@pytest.mark.timeout(180)
# Bounds (measured 2.44-2.64 blocking, 3.65-3.75 delayed on a 42 MB model; at
# 4 MB pieces the pieces weigh more here than at scale): blocking DiLoCo is the
# global copy + momentum + pieces + the core's ring buffers; a third full copy
# would read >= 3. Delayed: global, momentum, the in-flight buffer, the backups
# of its two pieces on the wire + the same overhead; a whole-buffer backup
# (what one async op of the fragment would keep) read 4.24-4.84.
@pytest.mark.parametrize("delayed,bound", [(False, 2.9), (True, 4.05)])
def test_wrapper_adds_at_most_two_model_copies_plus_the_in_flight_buffer(delayed, bound):
    res = _run_pair(delayed)
    for r in res:
        print(f"\ndelayed={delayed}: model {r['size'] / 2**20:.0f} MB, extra peak RSS {r['peak_extra']:.2f} model "
              f"copies, extra RSS after close {r['rss_extra']:.2f}, gauge check {r['gauge']:.2f} (1 expected)")
        assert r["world"] == 2 and r["syncs"] >= 5, r
        assert 0.9 < r["gauge"] < 1.1, r  # the RSS gauge sees one model copy as one
        # The global copy and the outer momentum, and at the peak nothing but
        # the exchange pieces (blocking) or the in-flight buffer (delayed) on top.
        assert r["peak_extra"] > 1.5, r  # the wrapper's own two copies are seen
        assert r["peak_extra"] < bound, r


if __name__ == "__main__":
    _peer(json.loads(sys.argv[2]))
