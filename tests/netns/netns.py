"""Real NATs on one machine, for tests: network namespaces, veth pairs, iptables.

    with Internet() as net:                       # one per test; names are pid-unique
        pub = net.public_host()                   # 198.51.100.100+i, on the "internet" bridge
        a = net.nat_host(symmetric=False)         # 10.i.0.2 behind router 198.51.100.10+i
        peer = a.spawn("scenario", {...})         # tests/netns/nat_peer.py inside a's namespace

Topology: namespace ``<p>i`` holds the bridge ``br0`` (the internet). A public
host has a veth on the bridge. A NAT host sits in its own namespace behind a
router namespace (``wan`` on the bridge, ``lan`` to the host) that
MASQUERADEs (Linux keeps the source port when it is free: endpoint-independent
and port-preserving, i.e. punchable), MASQUERADEs ``--random-fully`` (a fresh
random port per destination: symmetric, not punchable), or SNATs each host
port to a fixed other one (endpoint-independent but translating: punchable
only by a peer that learns its mapping, as a CGNAT or a cloud NAT gateway).

Pitfalls this handles (see DESIGN.md "NAT traversal"): ip_forward is per
namespace and on for routers only; conntrack entries outlive rule changes
(``conntrack -F`` after the rules are in); routers DROP unsolicited inbound
packets (a RST from the router would kill the other side's half of a
simultaneous open); rp_filter is off. Every interface is created directly
inside a namespace, never in the root namespace, and ``close()`` deletes
exactly the namespaces this object created, even after a failure.

Addresses are RFC 5737 / RFC 1918 ranges and exist only inside these
namespaces: no traffic leaves them.
"""

from __future__ import annotations

import itertools
import os
import shutil
import subprocess
import sys
from typing import Any

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))
from harness import Peer  # noqa: E402

NAT_PEER = os.path.join(HERE, "nat_peer.py")
_counter = itertools.count()


def unavailable_reason() -> str | None:
    """Why these tests cannot run here, or None."""
    if os.geteuid() != 0:
        return "network-namespace NAT tests need root (ip netns, iptables)"
    for tool in ("ip", "iptables", "conntrack"):
        if shutil.which(tool) is None:
            return f"'{tool}' is missing (apt-get install iproute2 iptables conntrack)"
    return None


def sh(*argv: str, check: bool = True) -> subprocess.CompletedProcess:
    r = subprocess.run(list(argv), capture_output=True, text=True, timeout=30)
    if check and r.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} failed ({r.returncode}): {r.stderr.strip()}")
    return r


class Host:
    """A namespace with one address; runs processes with ``ip netns exec``."""

    def __init__(self, net: "Internet", ns: str, ip: str, public: bool, router: str | None = None,
                 wan_ip: str | None = None):
        # wan_ip: the router's public address (what others observe), None for a public host.
        self.net, self.ns, self.ip, self.public, self.router, self.wan_ip = net, ns, ip, public, router, wan_ip

    def exec(self, *argv: str, check: bool = True) -> subprocess.CompletedProcess:
        return sh("ip", "netns", "exec", self.ns, *argv, check=check)

    def prefix(self) -> list[str]:
        return ["ip", "netns", "exec", self.ns]

    def python(self, code: str, timeout: float = 20) -> subprocess.Popen:
        """Runs `python -c code` in this namespace (stdout piped); killed by net.close()."""
        p = subprocess.Popen([*self.prefix(), sys.executable, "-c", code], stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True)
        self.net.raw_procs.append(p)
        return p

    def spawn(self, scenario: str, args: dict[str, Any], script: str = NAT_PEER) -> Peer:
        """Starts ``script scenario args`` in this namespace; killed by net.close()."""
        env = {"PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}
        p = Peer(scenario, args, env=env, prefix=self.prefix(), script=script)
        self.net.procs.append(p)
        return p


class Internet:
    """One test's namespaces. Use as a context manager (cleanup is guaranteed)."""

    SUBNET = "198.51.100"

    def __init__(self):
        self.prefix = f"pn{os.getpid()}x{next(_counter)}"
        self.namespaces: list[str] = []
        self.procs: list[Peer] = []
        self.raw_procs: list[subprocess.Popen] = []
        self._idx = 0
        try:
            self.inet = self._netns("i")
            self._ip(self.inet, "link", "add", "br0", "type", "bridge")
            self._ip(self.inet, "link", "set", "br0", "up")
        except BaseException:
            self.close()
            raise

    # -- building ------------------------------------------------------------
    def _netns(self, suffix: str) -> str:
        name = self.prefix + suffix
        sh("ip", "netns", "add", name)
        self.namespaces.append(name)
        self._ip(name, "link", "set", "lo", "up")
        for key in ("net.ipv4.conf.all.rp_filter", "net.ipv4.conf.default.rp_filter", "net.ipv4.ip_forward"):
            sh("ip", "netns", "exec", name, "sysctl", "-qw", f"{key}=0")
        return name

    @staticmethod
    def _ip(ns: str, *argv: str) -> None:
        sh("ip", "-n", ns, *argv)

    def _wire(self, ns: str, ifname: str, addr: str | None) -> None:
        """A veth from `ns` (named ifname) to the internet bridge."""
        port = f"p{self._idx}"
        self._ip(ns, "link", "add", ifname, "type", "veth", "peer", "name", port, "netns", self.inet)
        self._ip(self.inet, "link", "set", port, "master", "br0")
        self._ip(self.inet, "link", "set", port, "up")
        if addr:
            self._ip(ns, "addr", "add", addr, "dev", ifname)
        self._ip(ns, "link", "set", ifname, "up")

    def public_host(self) -> Host:
        self._idx += 1
        ns = self._netns(f"h{self._idx}")
        ip = f"{self.SUBNET}.{100 + self._idx}"
        self._wire(ns, "eth0", f"{ip}/24")
        return Host(self, ns, ip, public=True)

    # A translating NAT maps host port TRANSLATE_LOW + k to TRANSLATE_SHIFT + k.
    TRANSLATE_LOW, TRANSLATE_PORTS, TRANSLATE_SHIFT = 40000, 512, 50000

    def nat_host(self, symmetric: bool = False, forward_port: int | None = None, translating: bool = False) -> Host:
        """A host behind its own NAT router: port-preserving (the default), symmetric
        (a random port per connection), or translating (endpoint-independent
        but not port-preserving: host port 40000+k always leaves as 50000+k,
        whatever the destination; the host's ephemeral ports are 40000..40511).
        Optionally with one TCP port forwarded to it (a "port forward" rule)."""
        self._idx += 1
        i = self._idx
        router = self._netns(f"r{i}")
        host = self._netns(f"h{i}")
        wan_ip = f"{self.SUBNET}.{10 + i}"
        self._wire(router, "wan", f"{wan_ip}/24")
        self._ip(router, "link", "add", "lan", "type", "veth", "peer", "name", "eth0", "netns", host)
        self._ip(router, "addr", "add", f"10.{i}.0.1/24", "dev", "lan")
        self._ip(router, "link", "set", "lan", "up")
        self._ip(host, "addr", "add", f"10.{i}.0.2/24", "dev", "eth0")
        self._ip(host, "link", "set", "eth0", "up")
        self._ip(host, "route", "add", "default", "via", f"10.{i}.0.1")
        ipt = ["ip", "netns", "exec", router, "iptables", "-w"]
        if translating:
            lo, k, shift = self.TRANSLATE_LOW, self.TRANSLATE_PORTS, self.TRANSLATE_SHIFT
            sh("ip", "netns", "exec", host, "sysctl", "-qw", f"net.ipv4.ip_local_port_range={lo} {lo + k - 1}")
            rules = ["*nat"] + [f"-A POSTROUTING -o wan -p tcp --sport {lo + j} -j SNAT --to-source "
                                f"{wan_ip}:{shift + j}" for j in range(k)] + ["COMMIT", ""]
            subprocess.run(["ip", "netns", "exec", router, "iptables-restore", "-w", "--noflush"],
                           input="\n".join(rules), text=True, check=True, capture_output=True)
        masq = ["-t", "nat", "-A", "POSTROUTING", "-o", "wan", "-j", "MASQUERADE"]
        sh(*ipt, *masq, *(["--random-fully"] if symmetric else []))
        sh(*ipt, "-P", "FORWARD", "DROP")
        sh(*ipt, "-A", "FORWARD", "-i", "lan", "-o", "wan", "-j", "ACCEPT")
        sh(*ipt, "-A", "FORWARD", "-i", "wan", "-o", "lan", "-m", "conntrack", "--ctstate",
           "ESTABLISHED,RELATED", "-j", "ACCEPT")
        if forward_port:
            sh(*ipt, "-t", "nat", "-A", "PREROUTING", "-i", "wan", "-p", "tcp", "--dport", str(forward_port),
               "-j", "DNAT", "--to-destination", f"10.{i}.0.2:{forward_port}")
            sh(*ipt, "-A", "FORWARD", "-i", "wan", "-o", "lan", "-p", "tcp", "-d", f"10.{i}.0.2",
               "--dport", str(forward_port), "-j", "ACCEPT")
        # Unsolicited inbound: DROP, never RST (a RST kills simultaneous open).
        sh(*ipt, "-A", "INPUT", "-i", "wan", "-m", "conntrack", "--ctstate", "ESTABLISHED,RELATED", "-j", "ACCEPT")
        sh(*ipt, "-A", "INPUT", "-i", "wan", "-j", "DROP")
        sh("ip", "netns", "exec", router, "sysctl", "-qw", "net.ipv4.ip_forward=1")
        sh("ip", "netns", "exec", router, "conntrack", "-F", check=False)  # state from before the rules
        return Host(self, host, f"10.{i}.0.2", public=False, router=router, wan_ip=wan_ip)

    # -- cleanup -------------------------------------------------------------
    def close(self) -> None:
        for p in self.procs:
            p.kill()
        self.procs.clear()
        for rp in self.raw_procs:
            if rp.poll() is None:
                rp.kill()
            rp.communicate(timeout=10)
        self.raw_procs.clear()
        for ns in reversed(self.namespaces):
            sh("ip", "netns", "del", ns, check=False)
        self.namespaces.clear()

    def __enter__(self) -> "Internet":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()
