"""Ctrl-C in a blocking call: SIGINT raises KeyboardInterrupt in the caller
within half a second during update_topology(), wait_for_peers(), all_reduce,
sync_state and a DiLoCo step(), and the communicator then closes cleanly. A
real process is interrupted; the peer it waits for (this test process) is
alive and silent, so nothing but the signal can end the call."""

import os
import signal
import subprocess
import sys
import textwrap
import threading
import time

import pytest

import pccl_py as pc

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

CHILD = textwrap.dedent("""
    import sys, time
    import numpy as np
    import pccl_py as pc
    what, boot = sys.argv[1], sys.argv[2:]
    comm = pc.Communicator(bootstrap=boot, run_key="sigint", timeout=60.0)
    if what not in ("update_topology", "wait_for_peers"):
        comm.wait_for_peers(2, timeout=30)
    if what == "diloco_step":  # imported and built before "ready": the signal must find the step blocked
        import torch
        model = torch.nn.Linear(4, 4)
        opt = pc.DiLoCo(model, torch.optim.SGD(model.parameters(), lr=0.1), comm, sync_every=1)
        model(torch.ones(2, 4)).sum().backward()
    print("ready", flush=True)
    try:
        if what == "update_topology":
            comm.update_topology()  # the members never hold a round
        elif what == "wait_for_peers":
            comm.wait_for_peers(3, timeout=600)
        elif what == "all_reduce":
            comm.all_reduce(np.ones(1 << 20, np.float32))
        elif what == "sync_state":
            comm.sync_state({"w": np.ones(1000, np.float32)}, 1)
        elif what == "diloco_step":
            opt.step()  # its first sync_state: the other member never calls it
        print("returned", flush=True)
    except KeyboardInterrupt:
        print("interrupted", time.time(), flush=True)
        comm.close()
        print("closed", flush=True)
""")


@pytest.mark.timeout(60)
@pytest.mark.parametrize("what", ["update_topology", "wait_for_peers", "all_reduce", "sync_state", "diloco_step"])
def test_sigint_interrupts_a_blocking_call_within_half_a_second(what):
    member = pc.Communicator(run_key="sigint", timeout=60.0)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([os.path.join(ROOT, "python"), os.environ.get("PYTHONPATH", "")]))
    child = subprocess.Popen([sys.executable, "-c", CHILD, what] + ([] if what == "wait_for_peers" else member.addrs),
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        if what != "update_topology" and what != "wait_for_peers":
            threading.Thread(target=member.wait_for_peers, args=(2, 30.0), daemon=True).start()
        assert child.stdout.readline().strip() == "ready", child.stderr.read()
        time.sleep(1.0)  # well inside the blocking call
        sent = time.time()
        child.send_signal(signal.SIGINT)
        line = child.stdout.readline().split()
        assert line and line[0] == "interrupted", (line, child.stderr.read())
        latency = float(line[1]) - sent
        print(f"{what}: KeyboardInterrupt {latency * 1e3:.1f} ms after SIGINT")
        assert latency < 0.5
        assert child.stdout.readline().strip() == "closed"
        assert child.wait(10) == 0
    finally:
        if child.poll() is None:
            child.kill()
        child.wait()
        child.stdout.close()
        child.stderr.close()
        member.close()


def test_peer_lost_error_names_the_peer_and_says_what_to_do():
    from local_group import close_all, make_group, run_all
    comms = make_group(2, key="lost-msg", timeout=1.0)
    try:
        gone = comms[1].peer_id
        comms[1].close()
        import numpy as np
        with pytest.raises(pc.PeerLostError) as e:
            comms[0].all_reduce(np.ones(10, np.float32))
        msg = str(e.value)
        assert gone in msg and "update_topology()" in msg and "retry=True" in msg, msg
        comms[0].update_topology()
        assert comms[0].world_size == 1
        x = np.ones(10, np.float32)
        assert comms[0].all_reduce(x, retry=True).world_size == 1
    finally:
        close_all(comms)
