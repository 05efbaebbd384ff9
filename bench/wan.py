"""All-reduce over emulated WAN links: pccl_py vs torch.distributed Gloo, same run.

    sudo python bench/wan.py [--peers 2] [--rate-mbit 100] [--size-mib 32] [--iters 2]
                             [--rtt-ms 50 100] [--loss 0.0001 0.001] [--cc bbr cubic] [--streams 8]

For every (RTT, loss, congestion control) it builds a fresh emulated network
(pccl_py.tools.wanem: one namespace per peer, each behind a packet-level
delay/loss emulator and a tbf rate limit), runs both libraries' all-reduce
(sum, f32) on it, one after the other, and prints each one's bus bandwidth
(2(n-1)/n * bytes / time) as a fraction of the link rate, and the ratio
ours / Gloo (> 1: pccl_py is faster). Both libraries get the same
congestion control, set per socket (see CC_SHIM). Needs root and a C compiler.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(HERE), "python"))

PCCL_PORT, GLOO_PORT = 29500, 29501

# A namespace may not change its default congestion control to one that the
# root namespace does not allow (and a bench must not touch the root's), but
# root may set any of them per socket. So both libraries get the congestion
# control per socket: pccl_py through its tcp_congestion knob, Gloo through
# this preloaded shim around socket().
CC_SHIM = r"""
#define _GNU_SOURCE
#include <dlfcn.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
int socket(int domain, int type, int protocol) {
    static int (*real)(int, int, int);
    if (!real) real = (int (*)(int, int, int))dlsym(RTLD_NEXT, "socket");
    int fd = real(domain, type, protocol);
    const char *cc = getenv("WAN_BENCH_CC");
    if (fd >= 0 && cc && (domain == AF_INET || domain == AF_INET6) && (type & 0xf) == SOCK_STREAM)
        setsockopt(fd, IPPROTO_TCP, TCP_CONGESTION, cc, strlen(cc));
    return fd;
}
"""


def build_cc_shim() -> str:
    import tempfile
    d = tempfile.mkdtemp(prefix="wan-bench-")
    src, lib = os.path.join(d, "cc_shim.c"), os.path.join(d, "cc_shim.so")
    with open(src, "w") as f:
        f.write(CC_SHIM)
    subprocess.run(["cc", "-shared", "-fPIC", "-O2", "-o", lib, src, "-ldl"], check=True)
    return lib


def worker(lib: str, rank: int, n: int, ip0: str, size: int, iters: int, streams: int, cc: str) -> None:
    """One peer (runs inside its namespace); rank 0 prints the per-op times as JSON."""
    import numpy as np
    x = np.ones(size // 4, np.float32)
    times = []
    if lib == "pccl":
        import pccl_py as pc
        me = f"10.77.0.{rank + 1}"
        comm = pc.Communicator(listen=[f"/ip4/{me}/tcp/{PCCL_PORT if rank == 0 else 0}"],
                               bootstrap=[] if rank == 0 else [f"/ip4/{ip0}/tcp/{PCCL_PORT}"],
                               run_key="wan-bench", timeout=60, join_timeout=60, streams=streams,
                               tcp_congestion=cc)
        deadline = time.monotonic() + 60
        while comm.world_size < n and time.monotonic() < deadline:
            comm.update_topology()
        tiny = np.zeros(1, np.float32)
        for it in range(iters + 1):
            comm.all_reduce(tiny)  # barrier
            t0 = time.perf_counter()
            comm.all_reduce(x)
            if it > 0:  # the first one opens the data streams
                times.append(time.perf_counter() - t0)
        comm.all_reduce(tiny)
        comm.close()
    else:
        os.environ["GLOO_SOCKET_IFNAME"] = "eth0"
        import torch
        import torch.distributed as dist
        dist.init_process_group("gloo", init_method=f"tcp://{ip0}:{GLOO_PORT}", rank=rank, world_size=n)
        t = torch.from_numpy(x)
        tiny = torch.zeros(1)
        for it in range(iters + 1):
            dist.all_reduce(tiny)
            t0 = time.perf_counter()
            dist.all_reduce(t)
            if it > 0:
                times.append(time.perf_counter() - t0)
        dist.all_reduce(tiny)
        dist.destroy_process_group()
    if rank == 0:
        print(json.dumps({"times": times}), flush=True)


def run_lib(wan, lib: str, n: int, size: int, iters: int, streams: int, timeout: float, cc: str,
            shim: str) -> float:
    procs = []
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    if lib == "gloo":
        env.update(LD_PRELOAD=shim, WAN_BENCH_CC=cc)
    for r in range(n):
        procs.append(wan.run(r, [sys.executable, os.path.abspath(__file__), "--worker", lib, str(r), str(n),
                                 wan.ips[0], str(size), str(iters), str(streams), cc],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env))
        if r == 0:
            time.sleep(0.5)  # rank 0 listens first
    try:
        out, err = procs[0].communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        for p in procs:
            p.kill()
        return float("nan")
    for p in procs[1:]:
        try:
            p.wait(timeout=30)
        except subprocess.TimeoutExpired:
            p.kill()
    for line in out.splitlines():
        if line.startswith("{"):
            return statistics.median(json.loads(line)["times"])
    print(f"{lib} failed: {err[-2000:]}", file=sys.stderr)
    return float("nan")


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--worker":
        a = sys.argv[2:]
        worker(a[0], int(a[1]), int(a[2]), a[3], int(a[4]), int(a[5]), int(a[6]), a[7])
        return
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--peers", type=int, default=2)
    ap.add_argument("--rate-mbit", type=float, default=100)
    ap.add_argument("--size-mib", type=float, default=32)
    ap.add_argument("--iters", type=int, default=2)
    ap.add_argument("--streams", type=int, default=8)
    ap.add_argument("--rtt-ms", type=float, nargs="+", default=[50, 100])
    ap.add_argument("--loss", type=float, nargs="+", default=[1e-4, 1e-3])
    ap.add_argument("--cc", nargs="+", default=["bbr", "cubic"])
    ap.add_argument("--timeout", type=float, default=120)
    a = ap.parse_args()
    from pccl_py.tools.wanem import WanNet

    shim = build_cc_shim()
    size = int(a.size_mib * (1 << 20))
    factor = 2 * (a.peers - 1) / a.peers
    link = a.rate_mbit * 1e6 / 8
    print(f"{a.peers} peers, {a.rate_mbit:g} Mbit/s links, {a.size_mib:g} MiB f32 sum, median of {a.iters}, "
          f"pccl_py streams={a.streams}")
    print(f"{'rtt':>6} {'loss':>7} {'cc':>6} {'pccl/link':>10} {'gloo/link':>10} {'ratio':>7}")
    for rtt in a.rtt_ms:
        for loss in a.loss:
            for cc in a.cc:
                with WanNet(a.peers, rtt_ms=rtt, loss=loss, rate_mbit=a.rate_mbit) as wan:
                    t_ours = run_lib(wan, "pccl", a.peers, size, a.iters, a.streams, a.timeout, cc, shim)
                    t_gloo = run_lib(wan, "gloo", a.peers, size, a.iters, a.streams, a.timeout, cc, shim)
                ours = factor * size / t_ours / link
                gloo = factor * size / t_gloo / link
                print(f"{rtt:>4g}ms {loss * 100:>6g}% {cc:>6} {ours:>10.2f} {gloo:>10.2f} {ours / gloo:>7.2f}",
                      flush=True)


if __name__ == "__main__":
    main()
