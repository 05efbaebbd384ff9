"""The WAN emulator (pccl_py.tools.wanem) really delays packets, and
connections() reports the round trip it adds, direct and end to end."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pytest

from netns import unavailable_reason

pytestmark = pytest.mark.timeout(120)

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

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
    if shutil.which("cc") is None:
        pytest.skip("the WAN emulator's forwarder needs a C compiler (cc)")
    from pccl_py.tools.wanem import WanNet
    return WanNet


def test_connections_report_the_emulated_round_trip(wan_tools):
    rtt_ms = 80.0
    env = {**os.environ, "PYTHONPATH": os.path.join(ROOT, "python")}
    with wan_tools(2, rtt_ms=rtt_ms, loss=0.0, rate_mbit=50) as wan:
        first = wan.run(0, [sys.executable, "-c", PEER, "0"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                        text=True, env=env)
        second = wan.run(1, [sys.executable, "-c", PEER, "1", f"/ip4/{wan.ips[0]}/tcp/7300"],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
        outs = []
        for p in (first, second):
            out, err = p.communicate(timeout=60)
            assert p.returncode == 0, err[-3000:]
            outs.append(json.loads(out.strip().splitlines()[-1]))
    for conns in outs:
        assert conns, "no connections"
        for c in conns:
            assert c["kind"] == "direct"
            # The emulator adds rtt_ms; scheduling on a busy machine adds a little.
            assert c["rtt_ms"] is not None and rtt_ms * 0.95 <= c["rtt_ms"] <= rtt_ms + 150, c
