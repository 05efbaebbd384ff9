"""Packet-level WAN emulator: delay, loss and rate between network namespaces.

A TCP proxy is not a WAN: it terminates TCP, so endpoints never see the long
RTT or the loss. This tool delays and drops *frames*:

    peer i ns  --veth--  emulator i ns  --veth--  "switch" ns (bridge)  -- ... -- peer j

Each emulator namespace has ``ip_forward=0`` and no addresses; a small
forwarder (``FORWARDER_C`` below, one process per emulator) reads every frame
from one veth with an AF_PACKET socket, holds it for the one-way delay in a
FIFO per direction, drops it with probability p and writes it unchanged out of
the other veth (a transparent L2 hop, so no header rewrite is needed), where
``tc tbf`` limits the rate (its queue is the bottleneck buffer).

The forwarder is C (compiled on first use with ``cc``; batches of frames per
system call): a Python one cost ~17 us of CPU per frame, so four peers at
50 Mbit/s already needed a whole core, and on a busy 2-core machine its
scheduling delays, not the link, set the throughput. Checksum and
segmentation offloads are off on every veth: AF_PACKET would otherwise carry
unfinished checksums and 64 KiB super-frames. A path between two peers crosses
two emulators, so each gets RTT/4 of one-way delay and half the loss.

Library use (as root; bench/wan.py does this):

    with WanNet(n_peers=2, rtt_ms=50, loss=1e-4, rate_mbit=200, cc="cubic") as wan:
        wan.run(i, argv)          # a process inside peer i's namespace; wan.ips[i]

CLI (the forwarder, normally started by WanNet; it prints its counters to
stderr when terminated):

    python -m pccl_py.tools.wanem forward IF_A IF_B --delay-ms 12.5 --loss 0.00005

Only namespaces this object creates are touched, and ``close()`` (also on
errors and at exit of the ``with``) deletes exactly those.
"""

from __future__ import annotations

import argparse
import hashlib
import itertools
import os
import subprocess
import sys
import tempfile
from typing import Any, Sequence

SUBNET = "10.77.0"
_counter = itertools.count()


# ---------------------------------------------------------------- forwarder

FORWARDER_C = r"""/* wanem frame forwarder (see the module docstring): one thread per direction
   moves frames rx -> tx after a fixed delay, dropping each with probability
   `loss`. A frame's due time is fixed when it is read, so the FIFO order is
   the arrival order and the added delay is constant. A send refused by the
   tbf queue (ENOBUFS) is a tail drop, as in a router. */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <linux/if_packet.h>
#include <net/ethernet.h>
#include <net/if.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define SLOTS 32768 /* frames held per direction (a power of two) */
#define SLOT_BYTES 2048
#define BATCH 64

struct dir {
    int rx, tx;
    int64_t delay_ns;
    uint64_t loss_threshold; /* drop when rng < threshold */
    uint64_t rng;
    unsigned char *buf;
    int64_t due[SLOTS];
    unsigned len[SLOTS];
    uint64_t head, tail; /* tail: next free slot; head: next to send */
    uint64_t sent, lost, txdrop, qdrop, big;
};

static volatile sig_atomic_t stop;
static void on_signal(int s) { (void)s; stop = 1; }

static int64_t now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static uint64_t xorshift(uint64_t *s) {
    uint64_t x = *s;
    x ^= x << 13, x ^= x >> 7, x ^= x << 17;
    return *s = x;
}

static int open_if(const char *name) {
    int s = socket(AF_PACKET, SOCK_RAW | SOCK_NONBLOCK, htons(ETH_P_ALL));
    if (s < 0) return perror("socket"), -1;
    int big = 64 << 20, one = 1;
    if (setsockopt(s, SOL_SOCKET, SO_RCVBUFFORCE, &big, sizeof big) < 0)
        setsockopt(s, SOL_SOCKET, SO_RCVBUF, &big, sizeof big);
    if (setsockopt(s, SOL_SOCKET, SO_SNDBUFFORCE, &big, sizeof big) < 0)
        setsockopt(s, SOL_SOCKET, SO_SNDBUF, &big, sizeof big);
    setsockopt(s, SOL_PACKET, PACKET_IGNORE_OUTGOING, &one, sizeof one);
    struct sockaddr_ll sll = {0};
    sll.sll_family = AF_PACKET;
    sll.sll_protocol = htons(ETH_P_ALL);
    sll.sll_ifindex = (int)if_nametoindex(name);
    if (!sll.sll_ifindex || bind(s, (struct sockaddr *)&sll, sizeof sll) < 0) return perror(name), -1;
    return s;
}

static void *run(void *arg) {
    struct dir *d = arg;
    struct mmsghdr m[BATCH];
    struct iovec iov[BATCH];
    struct sockaddr_ll from[BATCH];
    while (!stop) {
        int64_t now = now_ns();
        /* send what is due */
        while (d->head != d->tail && d->due[d->head % SLOTS] <= now) {
            int k = 0;
            while (k < BATCH && d->head + k != d->tail && d->due[(d->head + k) % SLOTS] <= now) {
                uint64_t i = (d->head + k) % SLOTS;
                iov[k].iov_base = d->buf + i * SLOT_BYTES;
                iov[k].iov_len = d->len[i];
                memset(&m[k], 0, sizeof m[k]);
                m[k].msg_hdr.msg_iov = &iov[k];
                m[k].msg_hdr.msg_iovlen = 1;
                ++k;
            }
            int r = sendmmsg(d->tx, m, (unsigned)k, 0);
            if (r < 0) {
                if (errno == EINTR) continue;
                if (errno == EAGAIN) break; /* socket buffer full: retry after poll */
                r = 1, d->txdrop++;           /* ENOBUFS: the tbf queue is full, a tail drop */
            } else {
                d->sent += (uint64_t)r;
            }
            d->head += (uint64_t)r;
        }
        /* wait for input or the next due frame */
        struct timespec ts = {0, 50000000};
        if (d->head != d->tail) {
            int64_t w = d->due[d->head % SLOTS] - now_ns();
            if (w < 0) w = 0;
            ts.tv_sec = w / 1000000000, ts.tv_nsec = w % 1000000000;
        }
        struct pollfd p = {d->rx, POLLIN, 0};
        if (ppoll(&p, 1, &ts, NULL) <= 0) continue;
        for (int round = 0; round < 8; ++round) {
            int k = 0;
            for (; k < BATCH; ++k) {
                if (d->tail + k - d->head >= SLOTS) break;
                uint64_t i = (d->tail + k) % SLOTS;
                iov[k].iov_base = d->buf + i * SLOT_BYTES;
                iov[k].iov_len = SLOT_BYTES;
                memset(&m[k], 0, sizeof m[k]);
                m[k].msg_hdr.msg_iov = &iov[k];
                m[k].msg_hdr.msg_iovlen = 1;
                m[k].msg_hdr.msg_name = &from[k];
                m[k].msg_hdr.msg_namelen = sizeof from[k];
            }
            if (k == 0) { /* queue full: read and drop one frame */
                char junk[SLOT_BYTES];
                if (recv(d->rx, junk, sizeof junk, 0) > 0) d->qdrop++;
                break;
            }
            int r = recvmmsg(d->rx, m, (unsigned)k, MSG_TRUNC, NULL);
            if (r <= 0) break;
            int64_t due = now_ns() + d->delay_ns;
            for (int j = 0; j < r; ++j) {
                if (from[j].sll_pkttype == PACKET_OUTGOING) continue; /* kernels without IGNORE_OUTGOING */
                if (m[j].msg_len > SLOT_BYTES) { d->big++; continue; }
                if (d->loss_threshold && xorshift(&d->rng) < d->loss_threshold) { d->lost++; continue; }
                /* frames were read into consecutive slots from tail on; dropped ones leave gaps to close */
                uint64_t dst = d->tail % SLOTS;
                if (iov[j].iov_base != d->buf + dst * SLOT_BYTES)
                    memmove(d->buf + dst * SLOT_BYTES, iov[j].iov_base, m[j].msg_len);
                d->len[dst] = m[j].msg_len;
                d->due[dst] = due;
                d->tail++;
            }
            if (r < k) break;
        }
    }
    return NULL;
}

int main(int argc, char **argv) {
    if (argc != 5) {
        fprintf(stderr, "usage: %s IF_A IF_B DELAY_MS LOSS\n", argv[0]);
        return 2;
    }
    signal(SIGTERM, on_signal);
    signal(SIGINT, on_signal);
    int a = open_if(argv[1]), b = open_if(argv[2]);
    if (a < 0 || b < 0) return 1;
    double delay_ms = atof(argv[3]), loss = atof(argv[4]);
    static struct dir d[2];
    for (int i = 0; i < 2; ++i) {
        d[i].rx = i ? b : a;
        d[i].tx = i ? a : b;
        d[i].delay_ns = (int64_t)(delay_ms * 1e6);
        d[i].loss_threshold = loss > 0 ? (uint64_t)(loss * 18446744073709551615.0) : 0;
        d[i].rng = 0x9E3779B97F4A7C15ull ^ ((uint64_t)getpid() << 20) ^ (uint64_t)i ^ (uint64_t)now_ns();
        d[i].buf = malloc((size_t)SLOTS * SLOT_BYTES);
        if (!d[i].buf) return 1;
    }
    pthread_t t[2];
    for (int i = 0; i < 2; ++i) pthread_create(&t[i], NULL, run, &d[i]);
    printf("forwarding\n");
    fflush(stdout);
    for (int i = 0; i < 2; ++i) pthread_join(t[i], NULL);
    for (int i = 0; i < 2; ++i)
        fprintf(stderr, "%s->%s sent %llu lost %llu txdrop %llu qdrop %llu oversize %llu\n", i ? argv[2] : argv[1],
                i ? argv[1] : argv[2], (unsigned long long)d[i].sent, (unsigned long long)d[i].lost,
                (unsigned long long)d[i].txdrop, (unsigned long long)d[i].qdrop, (unsigned long long)d[i].big);
    return 0;
}
"""


def forwarder_binary() -> str:
    """Path of the compiled forwarder (built once per source version, then cached)."""
    digest = hashlib.sha256(FORWARDER_C.encode()).hexdigest()[:16]
    d = os.path.join(tempfile.gettempdir(), f"pccl-wanem-{digest}")
    exe = os.path.join(d, "forward")
    if os.path.exists(exe):
        return exe
    os.makedirs(d, exist_ok=True)
    src = os.path.join(d, "forward.c")
    with open(src, "w") as f:
        f.write(FORWARDER_C)
    tmp = f"{exe}.{os.getpid()}"
    r = subprocess.run(["cc", "-O2", "-pthread", "-o", tmp, src], capture_output=True, text=True)
    if r.returncode != 0:
        raise RuntimeError(f"cannot build the wanem forwarder: {r.stderr.strip()}")
    os.replace(tmp, exe)  # atomic: concurrent builders all end with a complete binary
    return exe


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
        self.forwarders: list[subprocess.Popen] = []
        # After close(): each forwarder's counters, e.g. "vpeer->vswitch sent 123 lost 0 txdrop 4 ...".
        self.forwarder_stats: list[str] = []
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
        forwarder = forwarder_binary()
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
            fw = subprocess.Popen(["ip", "netns", "exec", e, forwarder, "vpeer", "vswitch", str(one_way_ms),
                                   str(hop_loss)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            self.procs.append(fw)
            self.forwarders.append(fw)
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
        for i, fw in enumerate(self.forwarders):
            self.forwarder_stats += [f"e{i} {line}" for line in fw.stderr.read().splitlines()]
            fw.stderr.close()
            fw.stdout.close()
        self.procs.clear()
        self.forwarders.clear()
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
        exe = forwarder_binary()
        os.execv(exe, [exe, a.if_a, a.if_b, str(a.delay_ms), str(a.loss)])


if __name__ == "__main__":
    main()
