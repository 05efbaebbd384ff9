"""The WAN emulator (pccl_py.tools.wanem) really delays packets, and
connections() reports the round trip it adds, direct and end to end."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import pytest

from netns import unavailable_reason

pytestmark = pytest.mark.timeout(120)

PEER = r"""
import json, sys, time
import pccl_py as pc
rank, boot = int(sys.argv[1]), sys.argv[2:]
comm = pc.Communicator(listen=[f"/ip4/10.77.0.{rank + 1}/tcp/{7300 if rank == 0 else 0}"], bootstrap=boot,
                       run_key="wan-rtt", timeout=30)
while comm.world_size < 2:
    comm.update_topology()
time.sleep(4)  # a few RTT probes (one a second)
print(json.dumps(comm.connections()), flush=True)
comm.close()
"""


@pytest.fixture
def wan_tools():
    reason = unavailable_reason()
    if reason:
        pytest.skip(reason)
    for tool, why in (("cc", "a C compiler for its forwarder"), ("ethtool", "ethtool to turn offloads off")):
        if shutil.which(tool) is None:
            pytest.skip(f"the WAN emulator needs {why} ('{tool}' is missing)")
    from pccl_py.tools.wanem import WanNet
    return WanNet


def test_connections_report_the_emulated_round_trip(wan_tools):
    rtt_ms = 80.0
    with wan_tools(2, rtt_ms=rtt_ms, loss=0.0, rate_mbit=50) as wan:
        # The peers import pccl_py as this test does (installed, or PYTHONPATH=python).
        first = wan.run(0, [sys.executable, "-c", PEER, "0"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                        text=True)
        second = wan.run(1, [sys.executable, "-c", PEER, "1", f"/ip4/{wan.ips[0]}/tcp/7300"],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        done = [p.communicate(timeout=60) for p in (first, second)]  # closes the pipes whatever happens next
    outs = []
    for p, (out, err) in zip((first, second), done):
        assert p.returncode == 0, err[-3000:]
        outs.append(json.loads(out.strip().splitlines()[-1]))
    for conns in outs:
        assert conns, "no connections"
        for c in conns:
            assert c["kind"] == "direct"
            # The emulator adds rtt_ms; scheduling on a busy machine adds a little.
            assert c["rtt_ms"] is not None and rtt_ms * 0.95 <= c["rtt_ms"] <= rtt_ms + 150, c
