"""The WAN emulator (pccl_py.tools.wanem) really delays packets, and
connections() reports the round trip it adds, direct and end to end."""

from __future__ import annotations

import json
import subprocess
import sys
import time

import pytest

pytestmark = pytest.mark.timeout(120)

PEER = r"""
import json, sys, time
import pccl_py as pc
rank, boot = int(sys.argv[1]), sys.argv[2:]
comm = pc.Communicator(listen=[f"/ip4/10.77.0.{rank + 1}/tcp/{7300 if rank == 0 else 0}"], bootstrap=boot,
                       run_key="wan-rtt", timeout=30)
deadline = time.monotonic() + 60
while comm.world_size < 2:
    if time.monotonic() > deadline:
        sys.exit("the other peer did not join within 60 s")
    comm.update_topology()
time.sleep(4)  # a few RTT probes (one a second)
print(json.dumps(comm.connections()), flush=True)
sys.stdin.readline()  # stay until the test has read both peers (the other may be slower to get here)
comm.close()
"""



def test_connections_report_the_emulated_round_trip(wanem):
    rtt_ms = 80.0
    with wanem.WanNet(2, rtt_ms=rtt_ms, loss=0.0, rate_mbit=50) as wan:
        # The peers import pccl_py as this test does (installed, or PYTHONPATH=python).
        pipes = {"stdin": subprocess.PIPE, "stdout": subprocess.PIPE, "stderr": subprocess.PIPE, "text": True}
        first = wan.run(0, [sys.executable, "-c", PEER, "0"], **pipes)
        second = wan.run(1, [sys.executable, "-c", PEER, "1", f"/ip4/{wan.ips[0]}/tcp/7300"], **pipes)
        peers = (first, second)
        lines = [p.stdout.readline() for p in peers]  # each peer's connections, both still running
        done = [p.communicate(input="\n", timeout=60) for p in peers]  # releases them; closes the pipes
    outs = []
    for p, line, (_, err) in zip(peers, lines, done):
        assert p.returncode == 0 and line.strip(), err[-3000:]
        outs.append(json.loads(line))
    for conns in outs:
        assert conns, "no connections"
        for c in conns:
            assert c["kind"] == "direct"
            # The emulator adds rtt_ms; scheduling on a busy machine adds a little.
            assert c["rtt_ms"] is not None and rtt_ms * 0.95 <= c["rtt_ms"] <= rtt_ms + 150, c


IDLE_PEER = r"""
import sys, time
import numpy as np
import pccl_py as pc
rank, boot = int(sys.argv[1]), sys.argv[2:]
comm = pc.Communicator(listen=[f"/ip4/10.77.0.{rank + 1}/tcp/{7320 if rank == 0 else 0}"], bootstrap=boot,
                       run_key="wan-idle", timeout=30)
comm.wait_for_peers(2, timeout=60)
x = np.ones(1 << 16, np.float32)
comm.all_reduce(x)
time.sleep(2.5)  # idle (RTT probes meanwhile), then the next sync
comm.all_reduce(x)
print("slow start after idle:", pc.slow_start_after_idle(), flush=True)
comm.close()
"""


@pytest.mark.parametrize("restart", [1, 0])
def test_an_op_after_idle_on_a_long_link_says_when_tcp_restarts_its_window(wanem, restart):
    """With net.ipv4.tcp_slow_start_after_idle=1 (the kernel's default, per
    network namespace) the first op after an idle gap on a long link logs
    one warning naming the sysctl; with 0 it logs nothing."""
    sysctls = {"net.ipv4.tcp_slow_start_after_idle": str(restart)}
    with wanem.WanNet(2, rtt_ms=60.0, loss=0.0, rate_mbit=50, sysctls=sysctls) as wan:
        pipes = {"stdout": subprocess.PIPE, "stderr": subprocess.PIPE, "text": True}
        first = wan.run(0, [sys.executable, "-c", IDLE_PEER, "0"], **pipes)
        time.sleep(1.0)  # it listens before the other dials it
        second = wan.run(1, [sys.executable, "-c", IDLE_PEER, "1", f"/ip4/{wan.ips[0]}/tcp/7320"], **pipes)
        done = [p.communicate(timeout=90) for p in (first, second)]
    for p, (out, err) in zip((first, second), done):
        assert p.returncode == 0, err[-3000:]
        assert f"slow start after idle: {bool(restart)}" in out
        assert err.count("net.ipv4.tcp_slow_start_after_idle=1") == restart, err[-3000:]
