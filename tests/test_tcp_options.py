"""TCP options of the communicator: a congestion control the kernel refuses
is an InvalidArgumentError that says how to fix it (an allowed one really
lands on the sockets); the congestion-window keep-alive is validated, reaches
the sockets (idle data streams keep sending tiny records for keepalive_s,
none on loopback streams,
none with 0), its records are discarded by the receiver and a heartbeat
with a payload closes only that connection; and a C caller built before
keepalive_s was appended still works."""

from __future__ import annotations

import math
import os
import shutil
import subprocess
import sys
import threading
import time

import numpy as np
import pytest

import pccl_py as pc
from pccl_py import _core
from pccl_py.tools import tcpinfo
from test_c_api import CC, run_c
from wire import HEARTBEAT, RawPeer

pytestmark = pytest.mark.timeout(120)
KEY = "tcp-options"
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
needs_ss = pytest.mark.skipif(not tcpinfo.available(), reason="'ss' (iproute2) is missing: it reads TCP_INFO")


def proc_list(name: str) -> list[str]:
    with open(f"/proc/sys/net/ipv4/{name}") as f:
        return f.read().split()


def host_ip() -> str | None:
    """A non-loopback IPv4 address of this host (traffic to it stays on the
    host), or None."""
    try:
        out = subprocess.run(["ip", "-4", "-o", "addr", "show", "scope", "global"], capture_output=True, text=True,
                             timeout=10).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    for line in out.splitlines():
        addr = line.split()[3].split("/")[0]
        if not addr.startswith("127."):
            return addr
    return None


HOST_IP = host_ip()
# Links as any other: a view on loopback addresses dials one stream per
# neighbour and loopback streams send no keep-alive, so these tests listen on
# the host's own non-loopback address (traffic to it stays on this host).
needs_host_ip = pytest.mark.skipif(HOST_IP is None, reason="this host has no non-loopback IPv4 address")


def pair(on_host_ip: bool = False, **kw):
    listen = {"listen": [f"/ip4/{HOST_IP}/tcp/0"]} if on_host_ip else {}
    p = pc.Communicator(run_key=KEY, timeout=10.0, **listen, **kw)
    q = pc.Communicator(bootstrap=p.addrs, run_key=KEY, timeout=10.0, **listen, **kw)
    both(p, q, lambda c: c.wait_for_peers(2, timeout=30))
    return p, q


def both(p, q, fn):
    err = []

    def run():
        try:
            fn(q)
        except BaseException as e:  # surfaced below
            err.append(e)

    t = threading.Thread(target=run)
    t.start()
    fn(p)
    t.join(timeout=60)
    assert not t.is_alive()
    if err:
        raise err[0]


def port(c) -> int:
    return int(c.addrs[0].split("/tcp/")[1].split("/")[0])


# ---------------------------------------------------------------- congestion control

def test_an_unknown_congestion_control_is_refused_naming_it_and_the_fix():
    with pytest.raises(pc.InvalidArgumentError) as e:
        pc.Communicator(tcp_congestion="nosuchcc", run_key=KEY)
    msg = str(e.value)
    assert "tcp_congestion 'nosuchcc' was refused by the kernel" in msg, msg
    assert "modprobe tcp_nosuchcc" in msg and "net.ipv4.tcp_allowed_congestion_control" in msg, msg


def test_a_loaded_but_not_allowed_congestion_control_needs_cap_net_admin():
    allowed = proc_list("tcp_allowed_congestion_control")
    refused = [cc for cc in proc_list("tcp_available_congestion_control") if cc not in allowed]
    if not refused:
        pytest.skip(f"every loaded congestion control is allowed here ({' '.join(allowed)})")
    code = ("import pccl_py as pc\n"
            "try:\n"
            f"    pc.Communicator(tcp_congestion={refused[0]!r}, run_key='x')\n"
            "except pc.InvalidArgumentError as e:\n"
            "    print(e)\n")
    argv = [sys.executable, "-c", code]
    if os.geteuid() == 0:  # root may set any loaded one: drop CAP_NET_ADMIN, as an unprivileged process lacks it
        if shutil.which("setpriv") is None:
            pytest.skip("root, and 'setpriv' (util-linux) is missing to drop CAP_NET_ADMIN")
        argv = ["setpriv", "--bounding-set", "-net_admin", *argv]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}
    r = subprocess.run(argv, capture_output=True, text=True, timeout=60, env=env)
    assert r.returncode == 0, r.stderr[-2000:]
    assert f"tcp_congestion '{refused[0]}' was refused by the kernel (Operation not permitted)" in r.stdout, r.stdout
    assert f"sysctl -w net.ipv4.tcp_allowed_congestion_control=\"{' '.join(allowed)} {refused[0]}\"" in r.stdout


@needs_ss
@needs_host_ip
def test_an_allowed_congestion_control_is_set_on_every_socket():
    default = proc_list("tcp_congestion_control")[0]
    others = [cc for cc in proc_list("tcp_allowed_congestion_control") if cc != default]
    if not others:
        pytest.skip(f"only the default congestion control ({default}) is allowed here")
    cc = others[0]
    p, q = pair(on_host_ip=True, tcp_congestion=cc)
    try:
        x = np.ones(1 << 18, np.float32)
        both(p, q, lambda c: c.all_reduce(x.copy()))
        mine = tcpinfo.streams(ports={port(p), port(q)})
        assert len(mine) >= 2 * 8, mine  # 8 data streams (the default), both ends of each here
        assert {s["cc"] for s in mine} == {cc}, mine
    finally:
        q.close()
        p.close()


# ---------------------------------------------------------------- keep-alive option

def test_keepalive_default_and_validation():
    with open(os.path.join(ROOT, "cpp", "include", "pccl", "pccl.h")) as f:
        assert "#define PCCL_DEFAULT_KEEPALIVE_S 300.0" in f.read()
    assert _core.Config().keepalive_s == 300.0
    import inspect
    assert inspect.signature(pc.Communicator.__init__).parameters["keepalive"].default == 300.0
    for bad in (-1.0, 0.05, math.nan, math.inf):
        with pytest.raises(pc.InvalidArgumentError, match="keepalive_s must be 0 \\(off\\) or in 0.1..1e9"):
            pc.Communicator(keepalive=bad, run_key=KEY)
    for ok in (0, 0.1, 3600):
        pc.Communicator(keepalive=ok, run_key=KEY).close()


def segs_out(ports: set[int]) -> dict[tuple, int]:
    """data_segs_out of the sending ends of data streams among our connections."""
    return {(s["local"], s["remote"]): s["data_segs_out"] for s in tcpinfo.sending(tcpinfo.streams(ports=ports))}


def records_while_idle(keepalive: float, start: float, window: float, on_host_ip: bool = True) -> list[int]:
    """Two peers on this host run one 4 MiB all-reduce, then idle; per sending
    data stream, the segments it sent between `start` and `start + window`
    seconds into the idle time."""
    p, q = pair(on_host_ip=on_host_ip, keepalive=keepalive)
    try:
        x = np.ones(1 << 20, np.float32)
        both(p, q, lambda c: c.all_reduce(x.copy()))
        ports = {port(p), port(q)}
        t0 = time.monotonic()
        time.sleep(start)
        before = segs_out(ports)
        time.sleep(max(0.0, t0 + start + window - time.monotonic()))
        after = segs_out(ports)
        assert before, tcpinfo.streams(ports=ports)
        return [after[k] - before[k] for k in before if k in after]
    finally:
        q.close()
        p.close()


@needs_ss
@needs_host_ip
def test_idle_data_streams_send_keepalive_records_for_keepalive_s_only():
    # A link on this host: period max(50 ms, min(srtt, RTO/2)) = 50 ms, so ~20
    # records a second on every sending stream; without keep-alive only the
    # RTT probe (one a second) and the mesh heartbeat (a quarter of
    # heartbeat_timeout, on one link) travel.
    on = records_while_idle(60.0, 0.3, 1.0)
    assert len(on) >= 2 and min(on) >= 8, on
    off = records_while_idle(0, 0.3, 1.0)
    assert len(off) >= 2 and max(off) <= 6, off
    # keepalive 0.5 s: they stop half a second after the last data.
    late = records_while_idle(0.5, 1.0, 1.0)
    assert len(late) >= 2 and max(late) <= 6, late
    # Loopback streams (both ends 127.0.0.1) have no window worth keeping.
    lo = records_while_idle(60.0, 0.3, 1.0, on_host_ip=False)
    assert len(lo) >= 1 and max(lo) <= 6, lo


def test_keepalive_records_are_discarded_and_a_heartbeat_with_a_payload_closes_only_its_connection():
    p, q = pair()
    try:
        raw = RawPeer(p.addrs[0], KEY.encode())
        raw.handshake()
        for _ in range(200):
            raw.send(HEARTBEAT, sub=3)  # kKeepAlive
        raw.send(HEARTBEAT, sub=1, epoch=0)  # an RTT probe: answered, so the records before it were read
        deadline = time.monotonic() + 10
        while True:  # the echo (sub 2); P's own probes (sub 1) may come first
            h, _payload = raw.recv_frame()
            if h[2] == HEARTBEAT and h[7] == 2:
                break
            assert time.monotonic() < deadline
        raw.send(HEARTBEAT, b"x" * 64, sub=3)
        assert raw.closed_by_peer()
        raw.close()
        xs = {}

        def reduce(c):
            v = np.full(1000, 2.0 if c is p else 3.0, np.float32)
            c.all_reduce(v)
            xs[c.peer_id] = v

        both(p, q, reduce)
        assert all(np.array_equal(v, np.full(1000, 5.0, np.float32)) for v in xs.values())
    finally:
        q.close()
        p.close()


# ---------------------------------------------------------------- C layout

BEFORE_KEEPALIVE = r"""
#include <math.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>
#include <pccl/pccl.h>

int main(void) {
    pccl_config_t c;
    pccl_comm_t *comm = NULL;
    pccl_status_t st;
    pccl_config_init(&c);
    printf("default %.1f %d\n", c.keepalive_s, (int)(offsetof(pccl_config_t, keepalive_s) % 8));
    /* The release before keepalive_s: its bytes hold 0xff (a NaN the library would refuse). */
    c.struct_size = offsetof(pccl_config_t, keepalive_s);
    memset(&c.keepalive_s, 0xff, sizeof c.keepalive_s);
    st = pccl_comm_create(&c, &comm);
    printf("previous %d %s\n", (int)st, pccl_last_error(NULL));
    pccl_comm_destroy(comm);
    pccl_config_init(&c);
    c.keepalive_s = NAN;
    st = pccl_comm_create(&c, &comm);
    printf("nan %d %s\n", (int)st, pccl_last_error(NULL));
    if (comm) return 1;
    c.keepalive_s = 0;
    st = pccl_comm_create(&c, &comm);
    printf("off %d\n", (int)st);
    pccl_comm_destroy(comm);
    return 0;
}
"""


@pytest.mark.skipif(CC is None, reason="no C compiler on this machine")
def test_a_c_caller_built_before_keepalive_s_gets_the_default(tmp_path):
    out = run_c(tmp_path, "before_keepalive", BEFORE_KEEPALIVE, extra=("-lm",)).splitlines()
    assert out[0] == "default 300.0 0", out  # appended at a multiple of 8: the old size is a release's layout
    assert out[1] == "previous 0 ", out
    assert out[2].startswith("nan 1 keepalive_s must be 0 (off) or in 0.1..1e9 seconds"), out
    assert out[3] == "off 0", out
