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
two emulators: with one RTT for every pair, each gets RTT/4 of one-way delay
and half the loss; with an RTT matrix (regions), the sender's emulator holds
each frame for its destination's one-way delay, in one FIFO per distinct
delay, and the receiver's adds none.

Library use (as root; bench/wan.py does this):

    with WanNet(n_peers=2, rtt_ms=50, loss=1e-4, rate_mbit=200, cc="cubic") as wan:
        wan.run(i, argv)          # a process inside peer i's namespace; wan.ips[i]

CLI (the forwarder, normally started by WanNet; it prints its counters to
stderr when terminated):

    python -m pccl_py.tools.wanem forward IF_A IF_B --delay-ms 12.5 --loss 0.00005 [--to IPV4=DELAY_MS:LOSS ...]

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

#define SLOTS 8192 /* frames held per queue (a power of two) */
#define SLOT_BYTES 2048
#define BATCH 64
#define MAX_CLASSES 8  /* distinct (delay, loss) pairs of one direction */
#define MAX_RULES 256  /* destination addresses with their own class */

/* One FIFO of frames that share a delay: its due times are in order. */
struct queue {
    int64_t delay_ns;
    uint64_t loss_threshold; /* drop when rng < threshold */
    unsigned char *buf;
    int64_t due[SLOTS];
    unsigned len[SLOTS];
    uint64_t head, tail; /* tail: next free slot; head: next to send */
};

struct dir {
    int rx, tx;
    int key_offset;        /* where the IPv4 address that picks the class sits (dst on the way out) */
    int n_classes, n_rules;
    struct queue q[MAX_CLASSES];
    uint32_t rule_ip[MAX_RULES]; /* network order */
    int rule_class[MAX_RULES];
    uint64_t rng;
    unsigned char stage[BATCH][SLOT_BYTES];
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

/* The class of a frame: the rule for its IPv4 address (ARP: the address it
   asks for or answers to), else class 0. */
static int class_of(const struct dir *d, const unsigned char *f, unsigned len) {
    if (!d->n_rules || len < 42) return 0;
    uint16_t type = (uint16_t)(f[12] << 8 | f[13]);
    uint32_t ip;
    if (type == 0x0800) memcpy(&ip, f + d->key_offset, 4);
    else if (type == 0x0806) memcpy(&ip, f + (d->key_offset == 30 ? 38 : 28), 4);
    else return 0;
    for (int i = 0; i < d->n_rules; ++i)
        if (d->rule_ip[i] == ip) return d->rule_class[i];
    return 0;
}

/* Sends the due frames of q; 0 when the socket is full (retry after poll). */
static int flush_queue(struct dir *d, struct queue *q, int64_t now) {
    struct mmsghdr m[BATCH];
    struct iovec iov[BATCH];
    while (q->head != q->tail && q->due[q->head % SLOTS] <= now) {
        int k = 0;
        while (k < BATCH && q->head + k != q->tail && q->due[(q->head + k) % SLOTS] <= now) {
            uint64_t i = (q->head + k) % SLOTS;
            iov[k].iov_base = q->buf + i * SLOT_BYTES;
            iov[k].iov_len = q->len[i];
            memset(&m[k], 0, sizeof m[k]);
            m[k].msg_hdr.msg_iov = &iov[k];
            m[k].msg_hdr.msg_iovlen = 1;
            ++k;
        }
        int r = sendmmsg(d->tx, m, (unsigned)k, 0);
        if (r < 0) {
            if (errno == EINTR) continue;
            if (errno == EAGAIN) return 0;
            r = 1, d->txdrop++; /* ENOBUFS: the tbf queue is full, a tail drop */
        } else {
            d->sent += (uint64_t)r;
        }
        q->head += (uint64_t)r;
    }
    return 1;
}

static void *run(void *arg) {
    struct dir *d = arg;
    struct mmsghdr m[BATCH];
    struct iovec iov[BATCH];
    struct sockaddr_ll from[BATCH];
    while (!stop) {
        int64_t now = now_ns();
        for (int c = 0; c < d->n_classes; ++c) flush_queue(d, &d->q[c], now);
        /* wait for input or the next due frame */
        int64_t next = -1;
        for (int c = 0; c < d->n_classes; ++c) {
            struct queue *q = &d->q[c];
            if (q->head != q->tail && (next < 0 || q->due[q->head % SLOTS] < next)) next = q->due[q->head % SLOTS];
        }
        struct timespec ts = {0, 50000000};
        if (next >= 0) {
            int64_t w = next - now_ns();
            if (w < 0) w = 0;
            ts.tv_sec = w / 1000000000, ts.tv_nsec = w % 1000000000;
        }
        struct pollfd p = {d->rx, POLLIN, 0};
        if (ppoll(&p, 1, &ts, NULL) <= 0) continue;
        for (int round = 0; round < 8; ++round) {
            for (int k = 0; k < BATCH; ++k) {
                iov[k].iov_base = d->stage[k];
                iov[k].iov_len = SLOT_BYTES;
                memset(&m[k], 0, sizeof m[k]);
                m[k].msg_hdr.msg_iov = &iov[k];
                m[k].msg_hdr.msg_iovlen = 1;
                m[k].msg_hdr.msg_name = &from[k];
                m[k].msg_hdr.msg_namelen = sizeof from[k];
            }
            int r = recvmmsg(d->rx, m, BATCH, MSG_TRUNC, NULL);
            if (r <= 0) break;
            int64_t t = now_ns();
            for (int j = 0; j < r; ++j) {
                if (from[j].sll_pkttype == PACKET_OUTGOING) continue; /* kernels without IGNORE_OUTGOING */
                if (m[j].msg_len > SLOT_BYTES) { d->big++; continue; }
                struct queue *q = &d->q[class_of(d, d->stage[j], m[j].msg_len)];
                if (q->loss_threshold && xorshift(&d->rng) < q->loss_threshold) { d->lost++; continue; }
                if (q->tail - q->head >= SLOTS) { d->qdrop++; continue; }
                uint64_t i = q->tail % SLOTS;
                memcpy(q->buf + i * SLOT_BYTES, d->stage[j], m[j].msg_len);
                q->len[i] = m[j].msg_len;
                q->due[i] = t + q->delay_ns;
                q->tail++;
            }
            if (r < BATCH) break;
        }
    }
    return NULL;
}

/* Adds a class (delay, loss) to d, or finds the same one; -1 when full. */
static int add_class(struct dir *d, double delay_ms, double loss) {
    int64_t delay_ns = (int64_t)(delay_ms * 1e6);
    uint64_t thr = loss > 0 ? (uint64_t)(loss * 18446744073709551615.0) : 0;
    for (int c = 0; c < d->n_classes; ++c)
        if (d->q[c].delay_ns == delay_ns && d->q[c].loss_threshold == thr) return c;
    if (d->n_classes == MAX_CLASSES) return -1;
    struct queue *q = &d->q[d->n_classes];
    q->delay_ns = delay_ns;
    q->loss_threshold = thr;
    q->buf = malloc((size_t)SLOTS * SLOT_BYTES);
    if (!q->buf) return -1;
    return d->n_classes++;
}

int main(int argc, char **argv) {
    if (argc < 5) {
        fprintf(stderr, "usage: %s IF_A IF_B DELAY_MS LOSS [IPV4=DELAY_MS:LOSS ...]\n"
                        "  DELAY_MS/LOSS apply both ways; each IPV4=... gives frames from IF_A to that\n"
                        "  destination their own delay and loss (and frames from it to IF_A none)\n", argv[0]);
        return 2;
    }
    signal(SIGTERM, on_signal);
    signal(SIGINT, on_signal);
    int a = open_if(argv[1]), b = open_if(argv[2]);
    if (a < 0 || b < 0) return 1;
    static struct dir d[2];
    for (int i = 0; i < 2; ++i) {
        d[i].rx = i ? b : a;
        d[i].tx = i ? a : b;
        d[i].key_offset = i ? 26 : 30; /* IF_A -> IF_B: by destination; back: by source */
        d[i].rng = 0x9E3779B97F4A7C15ull ^ ((uint64_t)getpid() << 20) ^ (uint64_t)i ^ (uint64_t)now_ns();
        if (add_class(&d[i], atof(argv[3]), atof(argv[4])) < 0) return 1;
    }
    for (int k = 5; k < argc; ++k) {
        char ip[64];
        double delay_ms, loss;
        struct in_addr addr;
        if (sscanf(argv[k], "%63[0-9.]=%lf:%lf", ip, &delay_ms, &loss) != 3 || !inet_aton(ip, &addr) ||
            d[0].n_rules == MAX_RULES) {
            fprintf(stderr, "bad rule %s (IPV4=DELAY_MS:LOSS, at most %d)\n", argv[k], MAX_RULES);
            return 2;
        }
        int c = add_class(&d[0], delay_ms, loss);
        if (c < 0) return fprintf(stderr, "more than %d classes\n", MAX_CLASSES), 2;
        d[0].rule_ip[d[0].n_rules] = addr.s_addr;
        d[0].rule_class[d[0].n_rules++] = c;
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


Matrix = Sequence[Sequence[float]]


def _matrix(v: float | Matrix, n: int, what: str) -> list[list[float]]:
    if isinstance(v, (int, float)):
        return [[0.0 if i == j else float(v) for j in range(n)] for i in range(n)]
    m = [[float(x) for x in row] for row in v]
    if len(m) != n or any(len(row) != n for row in m) or any(x < 0 for row in m for x in row):
        raise ValueError(f"{what}: one value or an {n} x {n} matrix of non-negative values")
    return m


def regions(sizes: Sequence[int], intra_ms: tuple[float, float] = (5, 10), inter_ms: tuple[float, float] = (80, 150),
            loss: tuple[float, float] = (1e-4, 1e-3), rate_mbit: tuple[float, float] = (50, 200),
            seed: int = 0, shuffle: bool = True) -> dict:
    """A multi-region network for WanNet: sizes[r] peers in region r; RTTs
    drawn uniformly from intra_ms inside a region and inter_ms per pair of
    regions (every pair of peers across two regions shares it, plus up to
    1 ms of access jitter); loss per pair from `loss`, access rates per peer
    from rate_mbit. shuffle: peers are numbered in random order of region (so
    the id order of a run crosses between regions more often than needed).
    Returns WanNet keyword arguments (rtt_ms, loss, rate_mbit) plus
    "region" (each peer's region)."""
    import random
    rng = random.Random(seed)
    region = [r for r, k in enumerate(sizes) for _ in range(k)]
    if shuffle:
        rng.shuffle(region)
    n = len(region)
    between = {}
    for a in range(len(sizes)):
        for b in range(a + 1, len(sizes)):
            between[a, b] = rng.uniform(*inter_ms)
    inside = [rng.uniform(*intra_ms) for _ in sizes]
    jitter = [rng.uniform(0, 1.0) for _ in range(n)]
    rtt = [[0.0] * n for _ in range(n)]
    lossm = [[0.0] * n for _ in range(n)]
    for i in range(n):
        for j in range(i + 1, n):
            a, b = sorted((region[i], region[j]))
            base = inside[a] if a == b else between[a, b]
            rtt[i][j] = rtt[j][i] = round(base + jitter[i] + jitter[j], 3)
            lossm[i][j] = lossm[j][i] = rng.uniform(*loss)
    rates = [round(rng.uniform(*rate_mbit), 1) for _ in range(n)]
    return {"rtt_ms": rtt, "loss": lossm, "rate_mbit": rates, "region": region}


class WanNet:
    """n peers, each in a namespace behind its own emulator, joined by a bridge.

    rtt_ms and loss are end to end (peer i <-> peer j), either one value for
    every pair or an n x n matrix (symmetric for rtt_ms; loss[i][j] is the
    loss from i to j); rate_mbit limits each peer's uplink and downlink, one
    value or one per peer; cc (optional) is the namespaces' default TCP
    congestion control, limited to what the root namespace allows; root
    processes can still set any per socket (TCP_CONGESTION).

    With one value the delay is split over both emulators of a path, both
    ways (RTT/4 each). With a matrix, emulator i holds a frame from peer i to
    peer j for rtt_ms[i][j]/2 (a queue per distinct delay, so a near peer's
    frames never wait behind a far one's) and frames to peer i not at all:
    i -> j -> i adds exactly rtt_ms[i][j]. See regions() for a matrix."""

    def __init__(self, n_peers: int, rtt_ms: float | Matrix, loss: float | Matrix, rate_mbit: float | Sequence[float],
                 cc: str | None = None, sysctls: dict[str, str] | None = None):
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
        self.rtt_ms = _matrix(rtt_ms, n_peers, "rtt_ms")
        self.loss = _matrix(loss, n_peers, "loss")
        self.rate_mbit = [float(rate_mbit)] * n_peers if isinstance(rate_mbit, (int, float)) else \
            [float(r) for r in rate_mbit]
        if len(self.rate_mbit) != n_peers or min(self.rate_mbit) <= 0:
            raise ValueError(f"rate_mbit: one positive rate or one per peer ({n_peers}), got {rate_mbit!r}")
        if any(abs(self.rtt_ms[i][j] - self.rtt_ms[j][i]) > 1e-9 for i in range(n_peers) for j in range(n_peers)):
            raise ValueError("rtt_ms: the matrix must be symmetric (a round trip crosses both ways)")
        uniform = isinstance(rtt_ms, (int, float)) and isinstance(loss, (int, float))
        try:
            self._build(n_peers, uniform, cc, sysctls or {})
        except BaseException:
            self.close()
            raise

    def _netns(self, name: str) -> str:
        ns = self.prefix + name
        _sh("ip", "netns", "add", ns)
        self.namespaces.append(ns)
        _sh("ip", "-n", ns, "link", "set", "lo", "up")
        return ns

    def _forwarder_args(self, i: int, uniform: bool) -> list[str]:
        """The forwarder's delay/loss arguments for emulator i (see the class docstring)."""
        if uniform:
            rtt, loss = self.rtt_ms[0][1 % len(self.ips)], self.loss[0][1 % len(self.ips)]
            return [str(rtt / 4.0), str(1.0 - (1.0 - loss) ** 0.5)]
        rules = [f"{self.ips[j]}={self.rtt_ms[i][j] / 2.0}:{self.loss[i][j]}" for j in range(len(self.ips)) if j != i]
        return ["0", "0", *rules]

    def _build(self, n, uniform, cc, sysctls) -> None:
        sw = self._netns("s")
        _sh("ip", "-n", sw, "link", "add", "br0", "type", "bridge")
        _sh("ip", "-n", sw, "link", "set", "br0", "up")
        max_rtt_ms = max(max(row) for row in self.rtt_ms)
        forwarder = forwarder_binary()
        for i in range(n):
            rate_bps = self.rate_mbit[i] * 1e6
            # The bottleneck buffer: one bandwidth-delay product of the longest path (at least 256 KiB).
            limit = max(256 << 10, int(rate_bps * max_rtt_ms / 1e3 / 8))
            burst = max(32 << 10, int(rate_bps / 8 / 250))  # ~4 ms of tokens
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
            fw = subprocess.Popen(["ip", "netns", "exec", e, forwarder, "vpeer", "vswitch",
                                   *self._forwarder_args(i, uniform)],
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
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
    f.add_argument("--to", nargs="*", default=[], metavar="IPV4=DELAY_MS:LOSS",
                   help="frames from IF_A to this address: their own delay and loss")
    a = ap.parse_args(argv)
    if a.cmd == "forward":
        exe = forwarder_binary()
        os.execv(exe, [exe, a.if_a, a.if_b, str(a.delay_ms), str(a.loss), *a.to])


if __name__ == "__main__":
    main()
