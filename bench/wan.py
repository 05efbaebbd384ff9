"""All-reduce over emulated WAN links: pccl_py vs torch.distributed Gloo, same run.

    sudo python bench/wan.py [--peers 4] [--rate-mbit 50] [--size-mib 16] [--iters 2]
                             [--rtt-ms 50 100] [--loss 0.0001 0.001] [--cc bbr cubic]
                             [--streams 0] [--libs tcp pccl direct gloo] [-v]

For every (RTT, loss, congestion control) it builds a fresh emulated network
(pccl_py.tools.wanem: one namespace per peer, each behind a packet-level
delay/loss emulator and a tbf rate limit), runs both libraries' all-reduce
(sum, f32) on it, one after the other, and prints each one's bus bandwidth
(2(n-1)/n * bytes / time) as a fraction of the link rate, and the ratio
ours / Gloo (> 1: pccl_py is faster). "pccl" is pccl_py's ring, "direct" its
direct exchange (all_reduce(algorithm="direct")). Both libraries get the same
congestion control, set per socket (see CC_SHIM). Needs root and a C compiler.

The "tcp" column is a calibration, not a library: every peer sends bulk data
to its ring neighbour over TCP_STREAMS plain connections for a few seconds
(no all-reduce, no pipeline), i.e. what this emulated network and this
machine deliver to a ring at all. A link fraction of 1.0 is not reachable:
a 1500-byte frame carries 1448 bytes of TCP payload and tbf counts all 1514
(so ~0.956 is the ceiling).

Link rate: 50 Mbit/s by default because on a 2-core machine the kernel's
per-frame work (veth, bridge, tbf, AF_PACKET copies) for 4 peers at 100
Mbit/s took ~1 core and the plain-TCP ring fell to ~0.5 of the link; at
50 Mbit/s it keeps up (see the tcp column).

Runs against the installed pccl_py (`pip install .` first; the benches never
put the source tree on sys.path).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time


PCCL_PORT, GLOO_PORT, TCP_PORT = 29500, 29501, 29502
TCP_STREAMS = 8
CHUNK_BYTES = int(os.environ.get("WAN_BENCH_CHUNK_BYTES", "0"))  # pccl_py sub-chunk size (0: its default)
TCP_WARMUP_S, TCP_MEASURE_S = 3.0, 5.0

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


def tcp_ring(rank: int, n: int, cc: str) -> float:
    """Calibration: bulk TCP to the ring neighbour; returns the received rate (bytes/s) over the measured window."""
    import socket
    import threading
    me, nxt = f"10.77.0.{rank + 1}", f"10.77.0.{(rank + 1) % n + 1}"
    ls = socket.create_server((me, TCP_PORT), backlog=64)
    got = [0]
    lock = threading.Lock()
    stop = threading.Event()

    def sink(c: socket.socket) -> None:
        while not stop.is_set():
            b = c.recv(1 << 20)
            if not b:
                break
            with lock:
                got[0] += len(b)

    def accept() -> None:
        for _ in range(TCP_STREAMS):
            threading.Thread(target=sink, args=(ls.accept()[0],), daemon=True).start()

    def source() -> None:
        s = socket.socket()
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_CONGESTION, cc.encode())
        deadline = time.monotonic() + 30
        while True:
            try:
                s.connect((nxt, TCP_PORT))
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                s.close()
                time.sleep(0.1)
                s = socket.socket()
                s.setsockopt(socket.IPPROTO_TCP, socket.TCP_CONGESTION, cc.encode())
        buf = bytes(1 << 20)
        try:
            while not stop.is_set():
                s.send(buf)
        except OSError:
            pass

    threading.Thread(target=accept, daemon=True).start()
    for _ in range(TCP_STREAMS):
        threading.Thread(target=source, daemon=True).start()
    while got[0] == 0:
        time.sleep(0.01)
    time.sleep(TCP_WARMUP_S)
    b0, t0 = got[0], time.monotonic()
    time.sleep(TCP_MEASURE_S)
    b1, t1 = got[0], time.monotonic()
    stop.set()
    return (b1 - b0) / (t1 - t0)


def worker(lib: str, rank: int, n: int, ip0: str, size: int, iters: int, streams: int, cc: str) -> None:
    """One peer (runs inside its namespace); rank 0 prints the per-op times as JSON."""
    import numpy as np
    x = np.ones(size // 4, np.float32)
    times = []
    if lib == "tcp":
        # The time bulk data at the measured rate would take to move one op's bus bytes.
        print(json.dumps({"times": [2 * (n - 1) / n * size / tcp_ring(rank, n, cc)]}), flush=True)
        os._exit(0)  # sender threads may still block in send()
    if lib in ("pccl", "direct"):
        import pccl_py as pc
        algorithm = "direct" if lib == "direct" else "ring"
        me = f"10.77.0.{rank + 1}"
        comm = pc.Communicator(listen=[f"/ip4/{me}/tcp/{PCCL_PORT if rank == 0 else 0}"],
                               bootstrap=[] if rank == 0 else [f"/ip4/{ip0}/tcp/{PCCL_PORT}"],
                               run_key="wan-bench", timeout=60, join_timeout=60, tcp_congestion=cc,
                               **({"streams": streams} if streams else {}),
                               **({"chunk_bytes": CHUNK_BYTES} if CHUNK_BYTES else {}))
        comm.wait_for_peers(n, timeout=60)
        tiny = np.zeros(1, np.float32)
        for it in range(iters + 1):
            comm.all_reduce(tiny)  # barrier
            t0 = time.perf_counter()
            comm.all_reduce(x, algorithm=algorithm)
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
    """Median seconds of one op (for "tcp": what one op's bytes take at the bulk rate); NaN on failure."""
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


def fraction(t: float, factor: float, size: int, link: float) -> str:
    return f"{factor * size / t / link:.2f}" if t == t else "fail"


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--worker":
        a = sys.argv[2:]
        worker(a[0], int(a[1]), int(a[2]), a[3], int(a[4]), int(a[5]), int(a[6]), a[7])
        return
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--peers", type=int, default=4)
    ap.add_argument("--rate-mbit", type=float, default=50)
    ap.add_argument("--size-mib", type=float, default=16)
    ap.add_argument("--iters", type=int, default=2)
    ap.add_argument("--streams", type=int, default=0, help="pccl_py streams per neighbour (0: its default)")
    ap.add_argument("--chunk-kib", type=int, default=0, help="pccl_py sub-chunk KiB (0: its default)")
    ap.add_argument("--sysctl", nargs="*", default=[], metavar="KEY=VALUE",
                    help="set in every peer namespace, e.g. net.ipv4.tcp_slow_start_after_idle=0")
    ap.add_argument("--libs", nargs="+", default=["tcp", "pccl", "direct", "gloo"],
                    choices=["tcp", "pccl", "direct", "gloo"])
    ap.add_argument("-v", "--verbose", action="store_true", help="print the emulators' frame counters")
    ap.add_argument("--rtt-ms", type=float, nargs="+", default=[50, 100])
    ap.add_argument("--loss", type=float, nargs="+", default=[1e-4, 1e-3])
    ap.add_argument("--cc", nargs="+", default=["bbr", "cubic"])
    ap.add_argument("--timeout", type=float, default=300)
    a = ap.parse_args()
    from pccl_py.tools.wanem import WanNet
    if a.chunk_kib:
        os.environ["WAN_BENCH_CHUNK_BYTES"] = str(a.chunk_kib << 10)  # inherited by the workers

    shim = build_cc_shim()
    size = int(a.size_mib * (1 << 20))
    factor = 2 * (a.peers - 1) / a.peers
    link = a.rate_mbit * 1e6 / 8
    print(f"{a.peers} peers, {a.rate_mbit:g} Mbit/s links, {a.size_mib:g} MiB f32 sum, median of {a.iters}, "
          f"pccl_py streams={a.streams or 'default'}, tcp = {TCP_STREAMS} plain streams per neighbour")
    ours = [lib for lib in ("pccl", "direct") if lib in a.libs and "gloo" in a.libs]
    print(f"{'rtt':>6} {'loss':>7} {'cc':>6} " + " ".join(f"{lib + '/link':>11}" for lib in a.libs) +
          "".join(f" {lib + '/gloo':>11}" for lib in ours))
    for rtt in a.rtt_ms:
        for loss in a.loss:
            for cc in a.cc:
                with WanNet(a.peers, rtt_ms=rtt, loss=loss, rate_mbit=a.rate_mbit,
                            sysctls=dict(kv.split("=", 1) for kv in a.sysctl)) as wan:
                    t = {lib: run_lib(wan, lib, a.peers, size, a.iters, a.streams, a.timeout, cc, shim)
                         for lib in a.libs}
                line = f"{rtt:>4g}ms {loss * 100:>6g}% {cc:>6} " + " ".join(
                    f"{fraction(t[lib], factor, size, link):>11}" for lib in a.libs)
                line += "".join(f" {t['gloo'] / t[lib]:>11.2f}" for lib in ours)
                print(line, flush=True)
                if a.verbose:
                    print("\n".join("    " + x for x in wan.forwarder_stats), flush=True)


if __name__ == "__main__":
    main()
