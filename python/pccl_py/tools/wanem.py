"""Packet-level WAN emulator: delay, loss and rate between network namespaces.

A TCP proxy is not a WAN: it terminates TCP, so endpoints never see the long
RTT or the loss. This tool delays and drops *frames*:

    peer i ns  --veth--  emulator i ns  --veth--  "switch" ns (bridge)  -- ... -- peer j

Each emulator namespace has ``ip_forward=0`` and no addresses; a small
forwarder (``forward()`` below, one process per emulator) reads every frame
from one veth with an AF_PACKET socket, holds it for the one-way delay in a
FIFO per direction, drops it with probability p and writes it unchanged out of
the other veth (a transparent L2 hop, so no header rewrite is needed), where
``tc tbf`` limits the rate (its queue is the bottleneck buffer). Checksum and
segmentation offloads are off on every veth: AF_PACKET would otherwise carry
unfinished checksums and 64 KiB super-frames. A path between two peers crosses
two emulators, so each gets RTT/4 of one-way delay and half the loss.

Library use (as root; bench/wan.py does this):

    with WanNet(n_peers=2, rtt_ms=50, loss=1e-4, rate_mbit=200, cc="cubic") as wan:
        wan.run(i, argv)          # a process inside peer i's namespace; wan.ips[i]

CLI (the forwarder, normally started by WanNet):

    python -m pccl_py.tools.wanem forward IF_A IF_B --delay-ms 12.5 --loss 0.00005

Only namespaces this object creates are touched, and ``close()`` (also on
errors and at exit of the ``with``) deletes exactly those.
"""

from __future__ import annotations

import argparse
import collections
import itertools
import os
import random
import select
import socket
import subprocess
import sys
import threading
import time
from typing import Any, Sequence

ETH_P_ALL = 0x0003
PACKET_OUTGOING = 4
SUBNET = "10.77.0"
_counter = itertools.count()


# ---------------------------------------------------------------- forwarder

def _open(ifname: str) -> socket.socket:
    s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
    for opt, force in ((socket.SO_RCVBUF, 33), (socket.SO_SNDBUF, 32)):  # SO_RCVBUFFORCE / SO_SNDBUFFORCE
        try:
            s.setsockopt(socket.SOL_SOCKET, force, 64 << 20)
        except OSError:
            s.setsockopt(socket.SOL_SOCKET, opt, 64 << 20)
    s.bind((ifname, ETH_P_ALL))
    s.setblocking(False)
    return s


def _direction(rx: socket.socket, tx: socket.socket, delay_s: float, loss: float, stop: threading.Event,
               stats: dict) -> None:
    """Moves frames rx -> tx after delay_s, dropping each with probability loss.

    One thread per direction; a frame's due time is fixed when it is read, so
    the FIFO order is the arrival order and the added delay is constant."""
    fifo: collections.deque = collections.deque()
    rnd = random.Random(os.getpid() ^ rx.fileno())
    while not stop.is_set():
        now = time.monotonic()
        while fifo and fifo[0][0] <= now:
            _, frame = fifo.popleft()
            try:
                tx.send(frame)
                stats["sent"] += 1
            except (BlockingIOError, OSError):
                stats["txdrop"] += 1  # tbf queue full: a tail drop, as in a router
        wait = min(0.05, max(0.0, fifo[0][0] - time.monotonic())) if fifo else 0.05
        r, _, _ = select.select([rx], [], [], wait)
        if not r:
            continue
        for _ in range(256):
            try:
                frame, addr = rx.recvfrom(65536)
            except BlockingIOError:
                break
            if addr[2] == PACKET_OUTGOING:
                continue  # our own transmissions on this interface
            if loss > 0 and rnd.random() < loss:
                stats["lost"] += 1
                continue
            fifo.append((time.monotonic() + delay_s, frame))


def forward(if_a: str, if_b: str, delay_ms: float, loss: float) -> None:
    """Runs the forwarder until SIGTERM/SIGINT (inside the emulator namespace)."""
    a, b = _open(if_a), _open(if_b)
    stop = threading.Event()
    stats = [collections.Counter(), collections.Counter()]
    threads = [threading.Thread(target=_direction, args=(a, b, delay_ms / 1e3, loss, stop, stats[0]), daemon=True),
               threading.Thread(target=_direction, args=(b, a, delay_ms / 1e3, loss, stop, stats[1]), daemon=True)]
    for t in threads:
        t.start()
    print("forwarding", flush=True)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        pass
    finally:
        stop.set()


# ---------------------------------------------------------------- topology

def _sh(*argv: str, check: bool = True) -> subprocess.CompletedProcess:
    r = subprocess.run(list(argv), capture_output=True, text=True, timeout=30)
    if check and r.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} failed ({r.returncode}): {r.stderr.strip()}")
    return r


def _offloads_off(ns: str, ifname: str) -> None:
    _sh("ip", "netns", "exec", ns, "ethtool", "-K", ifname, "tx", "off", "rx", "off", "tso", "off", "gso", "off",
        "gro", "off", check=False)


class WanNet:
    """n peers, each in a namespace behind its own emulator, joined by a bridge.

    rtt_ms and loss are end to end (peer i <-> peer j); rate_mbit limits each
    peer's uplink and downlink; cc (optional) is the namespaces' default TCP
    congestion control, limited to what the root namespace allows; root
    processes can still set any per socket (TCP_CONGESTION)."""

    def __init__(self, n_peers: int, rtt_ms: float, loss: float, rate_mbit: float, cc: str | None = None,
                 sysctls: dict[str, str] | None = None):
        if os.geteuid() != 0:
            raise PermissionError("wanem needs root (network namespaces, tc, AF_PACKET)")
        self.prefix = f"wan{os.getpid()}x{next(_counter)}"
        self.namespaces: list[str] = []
        self.procs: list[subprocess.Popen] = []
        self.ips = [f"{SUBNET}.{i + 1}" for i in range(n_peers)]
        self.peers: list[str] = []
        try:
            self._build(n_peers, rtt_ms, loss, rate_mbit, cc, sysctls or {})
        except BaseException:
            self.close()
            raise

    def _netns(self, name: str) -> str:
        ns = self.prefix + name
        _sh("ip", "netns", "add", ns)
        self.namespaces.append(ns)
        _sh("ip", "-n", ns, "link", "set", "lo", "up")
        return ns

    def _build(self, n, rtt_ms, loss, rate_mbit, cc, sysctls) -> None:
        sw = self._netns("s")
        _sh("ip", "-n", sw, "link", "add", "br0", "type", "bridge")
        _sh("ip", "-n", sw, "link", "set", "br0", "up")
        one_way_ms = rtt_ms / 4.0  # a path crosses two emulators, each way
        hop_loss = 1.0 - (1.0 - loss) ** 0.5
        rate_bps = rate_mbit * 1e6
        # The bottleneck buffer: one bandwidth-delay product (at least 256 KiB).
        limit = max(256 << 10, int(rate_bps * rtt_ms / 1e3 / 8))
        burst = max(32 << 10, int(rate_bps / 8 / 250))  # ~4 ms of tokens
        for i in range(n):
            p = self._netns(f"p{i}")
            e = self._netns(f"e{i}")
            _sh("ip", "-n", p, "link", "add", "eth0", "type", "veth", "peer", "name", "vpeer", "netns", e)
            _sh("ip", "-n", e, "link", "add", "vswitch", "type", "veth", "peer", "name", f"q{i}", "netns", sw)
            _sh("ip", "-n", sw, "link", "set", f"q{i}", "master", "br0")
            for ns, ifname in ((p, "eth0"), (e, "vpeer"), (e, "vswitch"), (sw, f"q{i}")):
                _offloads_off(ns, ifname)
                _sh("ip", "-n", ns, "link", "set", ifname, "up")
            for ifname in ("vpeer", "vswitch"):
                _sh("ip", "-n", e, "link", "set", ifname, "promisc", "on")
                _sh("ip", "netns", "exec", e, "tc", "qdisc", "add", "dev", ifname, "root", "tbf", "rate",
                    f"{int(rate_bps)}bit", "burst", str(burst), "limit", str(limit))
            _sh("ip", "netns", "exec", e, "sysctl", "-qw", "net.ipv4.ip_forward=0")
            _sh("ip", "netns", "exec", e, "sysctl", "-qw", "net.ipv6.conf.all.disable_ipv6=1")
            _sh("ip", "-n", p, "addr", "add", f"{self.ips[i]}/24", "dev", "eth0")
            if cc:  # only those the root namespace allows (tcp_allowed_congestion_control)
                _sh("ip", "netns", "exec", p, "sysctl", "-qw", f"net.ipv4.tcp_congestion_control={cc}")
            for k, v in sysctls.items():
                _sh("ip", "netns", "exec", p, "sysctl", "-qw", f"{k}={v}")
            fw = subprocess.Popen(["ip", "netns", "exec", e, sys.executable, "-m", "pccl_py.tools.wanem", "forward",
                                   "vpeer", "vswitch", "--delay-ms", str(one_way_ms), "--loss", str(hop_loss)],
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                  env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
            self.procs.append(fw)
            if fw.stdout.readline().strip() != "forwarding":
                raise RuntimeError(f"wanem forwarder failed: {fw.stderr.read()}")
            self.peers.append(p)

    def run(self, i: int, argv: Sequence[str], **kw: Any) -> subprocess.Popen:
        """Starts argv inside peer i's namespace (killed by close())."""
        p = subprocess.Popen(["ip", "netns", "exec", self.peers[i], *argv], **kw)
        self.procs.append(p)
        return p

    def close(self) -> None:
        for p in self.procs:
            if p.poll() is None:
                p.terminate()
        for p in self.procs:
            try:
                p.wait(timeout=5)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(timeout=5)
        self.procs.clear()
        for ns in reversed(self.namespaces):
            _sh("ip", "netns", "del", ns, check=False)
        self.namespaces.clear()

    def __enter__(self) -> "WanNet":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def main(argv: Sequence[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m pccl_py.tools.wanem", description=__doc__.split("\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    f = sub.add_parser("forward", help="run the frame forwarder (inside an emulator namespace)")
    f.add_argument("if_a")
    f.add_argument("if_b")
    f.add_argument("--delay-ms", type=float, default=0.0)
    f.add_argument("--loss", type=float, default=0.0)
    a = ap.parse_args(argv)
    if a.cmd == "forward":
        import signal
        signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))
        forward(a.if_a, a.if_b, a.delay_ms, a.loss)


if __name__ == "__main__":
    main()
