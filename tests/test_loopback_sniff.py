"""The loopback fast path as a packet sniffer sees it (a packet socket: needs
root). With the default, data payloads cross loopback in the clear (bytes of
the input are on the wire); with seal_loopback=True on either side, and on a
non-loopback link (a veth between two network namespaces), they never are."""

import os
import shutil
import socket
import subprocess
import sys
import threading
import time
import uuid

import numpy as np
import pytest

import pccl_py as pc
from local_group import close_all, run_all

HERE = os.path.dirname(os.path.abspath(__file__))
ETH_P_ALL = 0x0003

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="sniffing needs root (an AF_PACKET socket)")


class Sniffer:
    """Counts the packets on `ifname` (of this network namespace) and those
    holding `marker`, in a thread, until result()."""

    def __init__(self, ifname: str, marker: bytes):
        self.marker = marker
        self.sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
        self.sock.bind((ifname, 0))
        self.sock.settimeout(0.1)
        self.packets = self.seen = 0
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self):
        while not self.stop.is_set():
            try:
                p = self.sock.recv(1 << 17)
            except socket.timeout:
                continue
            self.packets += 1
            self.seen += self.marker in p

    def result(self) -> tuple[int, int]:
        """(packets, packets holding the marker); stops the sniffer."""
        self.stop.set()
        self.thread.join(timeout=5)
        self.sock.close()
        return self.packets, self.seen


def marked_all_reduce(seal_p: bool, seal_q: bool) -> tuple[int, int]:
    marker = uuid.uuid4().bytes  # 16 random bytes: nobody else's traffic holds them
    p = pc.Communicator(run_key="sniff", timeout=10.0, seal_loopback=seal_p)
    q = pc.Communicator(bootstrap=p.addrs, run_key="sniff", timeout=10.0, seal_loopback=seal_q)
    try:
        run_all([p, q], lambda c: c.wait_for_peers(2, timeout=30))
        sniffer = Sniffer("lo", marker)
        xs = [np.frombuffer(marker * (1 << 16), np.uint8).copy() for _ in range(2)]
        res = run_all([p, q], lambda c, x: c.all_reduce(x), xs)
        assert not [r for r in res if isinstance(r, Exception)], res
        for x in xs:  # 1 MiB, u8 sum: every byte doubled, bit-exact on both
            assert np.array_equal(x, np.frombuffer(marker * (1 << 16), np.uint8) * np.uint8(2))
        time.sleep(0.2)  # the last packets reach the sniffer
        return sniffer.result()
    finally:
        close_all([q, p])


@pytest.mark.timeout(120)
def test_loopback_payloads_are_visible_with_the_fast_path():
    packets, seen = marked_all_reduce(False, False)
    assert seen > 0, f"{packets} packets, none with the input's bytes"


@pytest.mark.timeout(120)
@pytest.mark.parametrize("seal_p,seal_q", [(True, True), (True, False), (False, True)])
def test_seal_loopback_on_either_side_keeps_every_payload_sealed(seal_p, seal_q):
    packets, seen = marked_all_reduce(seal_p, seal_q)
    assert packets > 16, packets  # the sniffer saw the op (1 MiB each way)...
    assert seen == 0  # ...and none of its bytes


@pytest.mark.timeout(180)
def test_a_veth_link_between_namespaces_stays_sealed():
    if shutil.which("ip") is None:
        pytest.skip("'ip' is missing (apt-get install iproute2)")
    tag = f"lo{os.getpid() % 100000}"
    a, b = f"{tag}a", f"{tag}b"
    sh = lambda *argv: subprocess.run(list(argv), check=True, capture_output=True, timeout=30)  # noqa: E731
    procs = []
    try:
        sh("ip", "netns", "add", a)
        sh("ip", "netns", "add", b)
        sh("ip", "-n", a, "link", "add", "va", "type", "veth", "peer", "name", "vb", "netns", b)
        for ns, dev, ip in ((a, "va", "10.231.0.1"), (b, "vb", "10.231.0.2")):
            sh("ip", "-n", ns, "addr", "add", f"{ip}/24", "dev", dev)
            sh("ip", "-n", ns, "link", "set", dev, "up")
            sh("ip", "-n", ns, "link", "set", "lo", "up")
        marker = uuid.uuid4().bytes
        sniff = subprocess.Popen(["ip", "netns", "exec", a, sys.executable, os.path.join(HERE, "packet_count.py"),
                                  "va", marker.hex()], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        procs.append(sniff)
        assert sniff.stdout.readline().strip() == "up"
        # the package this test imported (installed, or PYTHONPATH's in a developer build)
        env = dict(os.environ, PYTHONPATH=os.path.dirname(os.path.dirname(os.path.abspath(pc.__file__))))
        peer = lambda ns, listen, boot: subprocess.Popen(  # noqa: E731
            ["ip", "netns", "exec", ns, sys.executable, os.path.join(HERE, "loopback_peer.py"), listen, boot,
             marker.hex()], stdout=subprocess.PIPE, text=True, env=env)
        first = peer(a, "/ip4/10.231.0.1/tcp/0", "-")
        procs.append(first)
        addr = first.stdout.readline().strip()
        assert addr.startswith("/ip4/10.231.0.1/"), addr
        second = peer(b, "/ip4/10.231.0.2/tcp/0", addr)
        procs.append(second)
        assert second.stdout.readline().startswith("/ip4/10.231.0.2/")
        for p in (first, second):
            assert p.stdout.readline().strip() == "done"
            assert p.wait(timeout=60) == 0
        out, _ = sniff.communicate("stop\n", timeout=30)
        packets, seen = map(int, out.split())
        assert packets > 16, packets  # the op crossed the veth...
        assert seen == 0  # ...sealed
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
            p.wait(timeout=10)
            for f in (p.stdin, p.stdout):
                if f:
                    f.close()
        for ns in (a, b):
            subprocess.run(["ip", "netns", "del", ns], capture_output=True, timeout=30)
