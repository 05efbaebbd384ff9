"""All-reduce over emulated WAN links: pccl_py vs torch.distributed Gloo, same run.

    sudo python bench/wan.py [--peers 4] [--rate-mbit 50] [--size-mib 16 ...] [--iters 2]
                             [--rtt-ms 50 100] [--loss 0.0001 0.001] [--cc bbr cubic]
                             [--gap-s 0 3] [--sysctl net.ipv4.tcp_slow_start_after_idle=0]
                             [--streams 0] [--libs tcp pccl pccl-ka0 pccl-id direct gloo] [--cwnd] [-v]
                             [--heartbeat-s 30]
    sudo python bench/wan.py --regions 2 2 2 [--intra-ms 5 10] [--inter-ms 80 150]
                             [--region-rate-mbit 25 50] [--region-loss 0.0001 0.001] [--seed 1] ...

--gap-s: every timed op follows that many seconds of idle (all peers sleep,
then a 1-element barrier), the DiLoCo pattern of one big sync every few
minutes; 0 times ops back to back. Linux restarts a connection's congestion
window after an idle period longer than its RTO, and shrinks it while the
sender is application-limited, unless net.ipv4.tcp_slow_start_after_idle=0
(per network namespace: --sysctl sets it in every peer's). pccl_py's
congestion-window keep-alive (Communicator(keepalive=300), the default)
sends a tiny record on idle streams so the kernel keeps their windows; the
"pccl-ka0" column is the same ring with keepalive=0 (the kernel's
behaviour), and is in the default columns whenever a gap is not 0. --cwnd
prints, before every timed op, rank 0's sending streams' windows (TCP_INFO
via ss: connections that sent >= 64 KiB).

Every line ends with the 1-minute load average of the machine when it was
printed (the emulators share the CPUs with the peers: a loaded machine
lowers every column, Gloo's too).

--regions: a multi-region network (wanem.regions(): per-pair RTTs inside a
region and between regions, per-pair loss, per-peer access rates, drawn from
--seed; peers numbered in shuffled region order). Columns: "pccl" (ring
ordered by the RTTs the members measure), "pccl-id" (ring in peer-id order),
"direct" and Gloo, as fractions of the bottleneck (the slowest access link),
the ratios to Gloo, and each ring's lap (sum of its hops' RTTs, from the
matrix).

For every (RTT, loss, congestion control) it builds a fresh emulated network
(pccl_py.tools.wanem: one namespace per peer, each behind a packet-level
delay/loss emulator and a tbf rate limit), runs both libraries' all-reduce
(sum, f32) on it, one after the other, and prints each one's bus bandwidth
(2(n-1)/n * bytes / time) as a fraction of the link rate, and the ratio
ours / Gloo (> 1: pccl_py is faster). "pccl" is pccl_py's ring, "pccl-id" the
same in peer-id order, "direct" its direct exchange (all_reduce(algorithm="direct")). Both libraries get the same
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
HEARTBEAT_S = float(os.environ.get("WAN_BENCH_HEARTBEAT_S", "0"))  # pccl_py heartbeat_timeout (0: its default)
RTT_PROBE_S = 4.0  # pccl_py probes RTT once a second; the ring is ordered after this
SAMPLE_CWND = os.environ.get("WAN_BENCH_CWND") == "1"  # --cwnd (inherited by the workers)
LIBS = ["tcp", "pccl", "pccl-ka0", "pccl-id", "direct", "gloo"]
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


def cwnd_segments() -> list[int]:
    """Congestion windows (segments) of this namespace's sending TCP streams
    (those that sent >= 64 KiB; what --cwnd prints before each timed op)."""
    from pccl_py.tools import tcpinfo
    return sorted(s["cwnd"] for s in tcpinfo.sending(tcpinfo.streams()))


def worker(lib: str, rank: int, n: int, ip0: str, size: int, iters: int, streams: int, cc: str,
           gap_s: float) -> None:
    """One peer (runs inside its namespace); rank 0 prints the per-op times (and for
    pccl_py the ring it used, as peer indices) as JSON. Every timed op follows
    gap_s seconds of idle (the DiLoCo pattern: compute, then one big sync) and a
    1-element barrier."""
    import numpy as np
    x = np.ones(size // 4, np.float32)
    times = []
    tiny_times = []  # the 1-element barrier before every timed op: an op's latency without payload
    ring = None
    cwnds = []  # per timed op: the windows right before it (--cwnd)
    if lib == "tcp":
        # The time bulk data at the measured rate would take to move one op's bus bytes.
        print(json.dumps({"times": [2 * (n - 1) / n * size / tcp_ring(rank, n, cc)]}), flush=True)
        os._exit(0)  # sender threads may still block in send()
    if lib in ("pccl", "pccl-ka0", "pccl-id", "direct"):
        import pccl_py as pc
        algorithm = "direct" if lib == "direct" else "ring"
        me = f"10.77.0.{rank + 1}"
        comm = pc.Communicator(listen=[f"/ip4/{me}/tcp/{PCCL_PORT if rank == 0 else 0}"],
                               bootstrap=[] if rank == 0 else [f"/ip4/{ip0}/tcp/{PCCL_PORT}"],
                               run_key="wan-bench", timeout=60, join_timeout=60, tcp_congestion=cc,
                               ring_order="id" if lib == "pccl-id" else "measured",
                               **({"keepalive": 0} if lib == "pccl-ka0" else {}),
                               **({"streams": streams} if streams else {}),
                               **({"chunk_bytes": CHUNK_BYTES} if CHUNK_BYTES else {}),
                               **({"heartbeat_timeout": HEARTBEAT_S} if HEARTBEAT_S else {}))
        t_start = time.perf_counter()

        def say(what: str) -> None:  # rank 0's progress, printed when the run fails or times out
            if rank == 0:
                print(f"[{time.perf_counter() - t_start:.1f} s] {what}", file=sys.stderr, flush=True)
        comm.wait_for_peers(n, timeout=60)
        say(f"{n} peers joined")
        time.sleep(RTT_PROBE_S)  # RTT probes on every link, then the ring is ordered by them
        comm.update_topology()
        say("ring ordered")
        ring = [int(ip.decode().rsplit(".", 1)[1]) - 1 for ip in comm.all_gather_bytes(me.encode())]
        tiny = np.zeros(1, np.float32)
        for it in range(iters + 1):
            if it > 0:
                time.sleep(gap_s)
            t0 = time.perf_counter()
            comm.all_reduce(tiny)  # barrier
            if it > 0:
                tiny_times.append(time.perf_counter() - t0)
            if it > 0 and SAMPLE_CWND:
                cwnds.append(cwnd_segments())
            t0 = time.perf_counter()
            comm.all_reduce(x, algorithm=algorithm)
            say(f"op {it}: {time.perf_counter() - t0:.2f} s")
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
            if it > 0:
                time.sleep(gap_s)
            t0 = time.perf_counter()
            dist.all_reduce(tiny)
            if it > 0:
                tiny_times.append(time.perf_counter() - t0)
            if it > 0 and SAMPLE_CWND:
                cwnds.append(cwnd_segments())
            t0 = time.perf_counter()
            dist.all_reduce(t)
            if it > 0:
                times.append(time.perf_counter() - t0)
        dist.all_reduce(tiny)
        dist.destroy_process_group()
    if rank == 0:
        print(json.dumps({"times": times, "tiny": tiny_times, "ring": ring, "cwnds": cwnds}), flush=True)


def run_lib(wan, lib: str, n: int, size: int, iters: int, streams: int, timeout: float, cc: str,
            shim: str, gap_s: float = 0.0) -> tuple[float, list | None]:
    """(median seconds of one op (for "tcp": what one op's bytes take at the bulk rate), the ring
    pccl_py used); NaN on failure."""
    procs = []
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    if lib == "gloo":
        env.update(LD_PRELOAD=shim, WAN_BENCH_CC=cc)
    for r in range(n):
        procs.append(wan.run(r, [sys.executable, os.path.abspath(__file__), "--worker", lib, str(r), str(n),
                                 wan.ips[0], str(size), str(iters), str(streams), cc, str(gap_s)],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env))
        if r == 0:
            time.sleep(0.5)  # rank 0 listens first
    try:
        out, err = procs[0].communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        for p in procs:
            p.kill()
        out, err = procs[0].communicate()
        print(f"{lib} timed out after {timeout:g} s (--timeout); rank 0 said: {(out + err)[-2000:]}",
              file=sys.stderr)
        return float("nan"), None
    for p in procs[1:]:
        try:
            p.wait(timeout=30)
        except subprocess.TimeoutExpired:
            p.kill()
    for line in out.splitlines():
        if line.startswith("{"):
            r = json.loads(line)
            for w in r.get("cwnds") or []:
                print(f"    {lib}: cwnd before an op, {len(w)} sending streams: min {min(w, default=0)} "
                      f"median {statistics.median(w) if w else 0:g} max {max(w, default=0)} segments", flush=True)
            if r.get("tiny"):
                print(f"    {lib}: 1-element op before it (the barrier): median "
                      f"{statistics.median(r['tiny']) * 1e3:.0f} ms; the timed ops: "
                      + " ".join(f"{t * 1e3:.0f}" for t in r["times"]) + " ms", flush=True)
            return statistics.median(r["times"]), r.get("ring")
    print(f"{lib} failed: {err[-2000:]}", file=sys.stderr)
    return float("nan"), None


def load_avg() -> str:
    return f"   load {os.getloadavg()[0]:.1f}"


def fraction(t: float, factor: float, size: int, link: float) -> str:
    return f"{factor * size / t / link:.2f}" if t == t else "fail"


def lap_ms(ring: list | None, rtt: list) -> str:
    if not ring:
        return "-"
    return f"{sum(rtt[a][b] for a, b in zip(ring, ring[1:] + ring[:1])):.0f}"


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--worker":
        a = sys.argv[2:]
        worker(a[0], int(a[1]), int(a[2]), a[3], int(a[4]), int(a[5]), int(a[6]), a[7], float(a[8]))
        return
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--peers", type=int, default=4)
    ap.add_argument("--rate-mbit", type=float, default=50)
    ap.add_argument("--size-mib", type=float, nargs="+", default=[16])
    ap.add_argument("--iters", type=int, default=2)
    ap.add_argument("--gap-s", type=float, nargs="+", default=[0.0],
                    help="idle seconds before every timed op (0: back to back)")
    ap.add_argument("--streams", type=int, default=0, help="pccl_py streams per neighbour (0: its default)")
    ap.add_argument("--chunk-kib", type=int, default=0, help="pccl_py sub-chunk KiB (0: its default)")
    ap.add_argument("--heartbeat-s", type=float, default=0,
                    help="pccl_py heartbeat_timeout (0: its default, 3 s): 32 peers and their emulators on 2 "
                         "cores go silent for seconds, which the default takes for death")
    ap.add_argument("--sysctl", nargs="*", default=[], metavar="KEY=VALUE",
                    help="set in every peer namespace, e.g. net.ipv4.tcp_slow_start_after_idle=0")
    ap.add_argument("--libs", nargs="+", default=None, choices=LIBS,
                    help="default: tcp pccl direct gloo (and pccl-ka0 when a gap is not 0); with --regions pccl pccl-id direct gloo")
    ap.add_argument("-v", "--verbose", action="store_true", help="print the emulators' frame counters")
    ap.add_argument("--cwnd", action="store_true",
                    help="print rank 0's TCP congestion windows (ss -tin) right before every timed op")
    ap.add_argument("--rtt-ms", type=float, nargs="+", default=[50, 100])
    ap.add_argument("--loss", type=float, nargs="+", default=[1e-4, 1e-3])
    ap.add_argument("--cc", nargs="+", default=["bbr", "cubic"])
    ap.add_argument("--regions", type=int, nargs="+", default=None, metavar="PEERS",
                    help="peers per region, e.g. 2 2 2: a multi-region network instead of --peers/--rtt-ms/--loss")
    ap.add_argument("--intra-ms", type=float, nargs=2, default=[5, 10], help="RTT range inside a region")
    ap.add_argument("--inter-ms", type=float, nargs=2, default=[80, 150], help="RTT range between regions")
    ap.add_argument("--region-loss", type=float, nargs=2, default=[1e-4, 1e-3], help="loss range per pair")
    ap.add_argument("--region-rate-mbit", type=float, nargs=2, default=[25, 50],
                    help="access rate range per peer (the issue's 50-200 needs more CPU than 2 cores)")
    ap.add_argument("--seed", type=int, default=1, help="draws the regions' matrix")
    ap.add_argument("--timeout", type=float, default=300)
    a = ap.parse_args()
    from pccl_py.tools import wanem
    if a.chunk_kib:
        os.environ["WAN_BENCH_CHUNK_BYTES"] = str(a.chunk_kib << 10)  # inherited by the workers
    if a.heartbeat_s:
        os.environ["WAN_BENCH_HEARTBEAT_S"] = str(a.heartbeat_s)
    if a.cwnd:
        os.environ["WAN_BENCH_CWND"] = "1"
    shim = build_cc_shim()
    sysctls = dict(kv.split("=", 1) for kv in a.sysctl)
    print(f"pccl_py streams={a.streams or 'default'}, median of {a.iters} ops, sysctls {sysctls or 'stock'}")

    if a.regions:
        libs = a.libs or ["pccl", *(["pccl-ka0"] if any(a.gap_s) else []), "pccl-id", "direct", "gloo"]
        net = wanem.regions(a.regions, tuple(a.intra_ms), tuple(a.inter_ms), tuple(a.region_loss),
                            tuple(a.region_rate_mbit), seed=a.seed)
        n = len(net["region"])
        link = min(net["rate_mbit"]) * 1e6 / 8  # every ring and the direct exchange cross the slowest access link
        print(f"{n} peers in regions {net['region']} (peer i's region), rates {net['rate_mbit']} Mbit/s; "
              f"RTT ms:")
        for row in net["rtt_ms"]:
            print("   " + " ".join(f"{x:6.1f}" for x in row))
        print("fractions of the bottleneck (the slowest access link, "
              f"{min(net['rate_mbit']):g} Mbit/s); lap: the ring's RTT sum in ms")
        ours = [lib for lib in ("pccl", "pccl-ka0", "pccl-id", "direct") if lib in libs and "gloo" in libs]
        print(f"{'MiB':>5} {'cc':>6} {'gap':>4} " + " ".join(f"{lib + '/link':>13}" for lib in libs) +
              "".join(f" {lib + '/gloo':>13}" for lib in ours) + "   median op times   lap(pccl) lap(pccl-id)")
        for cc in a.cc:
            with wanem.WanNet(n, rtt_ms=net["rtt_ms"], loss=net["loss"], rate_mbit=net["rate_mbit"],
                              sysctls=sysctls) as wan:
                for mib in a.size_mib:
                    size = int(mib * (1 << 20))
                    for gap in a.gap_s:
                        r = {lib: run_lib(wan, lib, n, size, a.iters, a.streams, a.timeout, cc, shim, gap)
                             for lib in libs}
                        t = {lib: v[0] for lib, v in r.items()}
                        line = f"{mib:>5g} {cc:>6} {gap:>4g} " + " ".join(
                            f"{fraction(t[lib], 2 * (n - 1) / n, size, link):>13}" for lib in libs)
                        line += "".join(f" {t['gloo'] / t[lib]:>13.2f}" for lib in ours)
                        line += "   ms: " + " ".join(f"{lib} {t[lib] * 1e3:.0f}" for lib in libs)
                        line += f"   {lap_ms(r.get('pccl', (0, None))[1], net['rtt_ms']):>9} " \
                                f"{lap_ms(r.get('pccl-id', (0, None))[1], net['rtt_ms']):>12}" + load_avg()
                        print(line, flush=True)
                if a.verbose:
                    wan.close()
                    print("\n".join("    " + x for x in wan.forwarder_stats), flush=True)
        return

    libs = a.libs or ["tcp", "pccl", *(["pccl-ka0"] if any(a.gap_s) else []), "direct", "gloo"]
    factor = 2 * (a.peers - 1) / a.peers
    link = a.rate_mbit * 1e6 / 8
    print(f"{a.peers} peers, {a.rate_mbit:g} Mbit/s links, f32 sum, tcp = {TCP_STREAMS} plain streams per neighbour")
    ours = [lib for lib in ("pccl", "pccl-ka0", "pccl-id", "direct") if lib in libs and "gloo" in libs]
    print(f"{'rtt':>6} {'loss':>7} {'cc':>6} {'MiB':>5} {'gap':>4} " + " ".join(f"{lib + '/link':>11}" for lib in libs) +
          "".join(f" {lib + '/gloo':>11}" for lib in ours))
    for rtt in a.rtt_ms:
        for loss in a.loss:
            for cc in a.cc:
                with wanem.WanNet(a.peers, rtt_ms=rtt, loss=loss, rate_mbit=a.rate_mbit, sysctls=sysctls) as wan:
                    for mib in a.size_mib:
                        size = int(mib * (1 << 20))
                        for gap in a.gap_s:
                            t = {lib: run_lib(wan, lib, a.peers, size, a.iters, a.streams, a.timeout, cc, shim,
                                              gap)[0] for lib in libs}
                            line = f"{rtt:>4g}ms {loss * 100:>6g}% {cc:>6} {mib:>5g} {gap:>4g} " + " ".join(
                                f"{fraction(t[lib], factor, size, link):>11}" for lib in libs)
                            line += "".join(f" {t['gloo'] / t[lib]:>11.2f}" for lib in ours)
                            line += "   ms: " + " ".join(f"{lib} {t[lib] * 1e3:.0f}" for lib in libs if lib != "tcp")
                            line += load_avg()
                            print(line, flush=True)
                    if a.verbose:
                        wan.close()
                        print("\n".join("    " + x for x in wan.forwarder_stats), flush=True)


if __name__ == "__main__":
    main()
