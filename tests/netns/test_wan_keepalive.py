"""The congestion-window keep-alive on an emulated long link (wanem, 100 ms
RTT, cubic, the kernel's default tcp_slow_start_after_idle=1): after an idle
gap several RTOs long, the sending data streams' windows (TCP_INFO) stay
where the last op left them with keep-alive on, and are back at the initial
window with it off."""

from __future__ import annotations

import json
import subprocess
import sys
import time

import pytest

pytestmark = pytest.mark.timeout(240)

PEER = r"""
import json, sys, time
import numpy as np
import pccl_py as pc
from pccl_py.tools import tcpinfo
rank, port, keepalive, gap = int(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3]), float(sys.argv[4])
boot = sys.argv[5:]
comm = pc.Communicator(listen=[f"/ip4/10.77.0.{rank + 1}/tcp/{port if rank == 0 else 0}"], bootstrap=boot,
                       run_key="wan-keepalive", timeout=60, tcp_congestion="cubic", keepalive=keepalive)
comm.wait_for_peers(2, timeout=60)
x = np.ones(4 << 20, np.float32)  # 16 MiB: every stream's window opens
for _ in range(2):
    comm.all_reduce(x)
after_op = [s["cwnd"] for s in tcpinfo.sending(tcpinfo.streams())]
time.sleep(gap)
streams = tcpinfo.sending(tcpinfo.streams())
print(json.dumps({"after_op": after_op, "after_gap": [s["cwnd"] for s in streams],
                  "rto_ms": [s["rto_ms"] for s in streams], "cc": sorted({s["cc"] for s in streams})}), flush=True)
comm.all_reduce(np.zeros(1, np.float32))  # neither leaves before the other has read its windows
comm.close()
"""


def run_pair(wan, port: int, keepalive: float, gap: float) -> list[dict]:
    pipes = {"stdout": subprocess.PIPE, "stderr": subprocess.PIPE, "text": True}
    first = wan.run(0, [sys.executable, "-c", PEER, "0", str(port), str(keepalive), str(gap)], **pipes)
    time.sleep(1.0)  # it listens before the other dials it
    second = wan.run(1, [sys.executable, "-c", PEER, "1", str(port), str(keepalive), str(gap),
                         f"/ip4/{wan.ips[0]}/tcp/{port}"], **pipes)
    out = []
    for p in (first, second):
        stdout, stderr = p.communicate(timeout=150)
        assert p.returncode == 0, stderr[-3000:]
        out.append(json.loads(stdout.strip().splitlines()[-1]))
    return out


def test_keepalive_holds_the_window_across_an_idle_gap(wanem):
    gap = 3.0
    with wanem.WanNet(2, rtt_ms=100.0, loss=0.0, rate_mbit=50) as wan:
        off = run_pair(wan, 7340, 0, gap)
        on = run_pair(wan, 7341, 60, gap)
    for r in off + on:
        assert r["cc"] == ["cubic"] and len(r["after_gap"]) >= 4, r
        assert max(r["rto_ms"]) * 3 < gap * 1e3, r  # the gap is several RTOs: the kernel would restart
    for r in off:
        # Restarted: the initial window (10), possibly a segment or two more.
        assert max(r["after_gap"]) <= 12, off
    for r in on:
        assert min(r["after_gap"]) >= 20, on  # what the op left (tens to hundreds), not 10
        assert sorted(r["after_gap"])[len(r["after_gap"]) // 2] >= 0.5 * sorted(r["after_op"])[len(r["after_op"]) // 2], on
