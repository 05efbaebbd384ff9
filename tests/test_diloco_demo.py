"""The one-command demo, in its short mode, as a user runs it."""

import os
import subprocess
import sys

import pytest


@pytest.mark.timeout(150)
def test_demo_quick_mode(tmp_path):
    env = dict(os.environ)  # runs the installed package (or PYTHONPATH's, in a developer build)
    proc = subprocess.Popen([sys.executable, "-m", "pccl_py", "demo", "--quick", "--peers", "3", "--out",
                             str(tmp_path)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env,
                            start_new_session=True)
    try:
        out, _ = proc.communicate(timeout=140)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, 9)  # the demo and every peer it started
            proc.wait()
    assert proc.returncode == 0, out
    assert "global params identical on all of them: True; peer2 was killed, joiner joined" in out
    assert "survivors: peer0, peer1, joiner" in out
    assert (tmp_path / "diloco_demo.png").stat().st_size > 10_000
    # every peer process it started is gone (they share the demo's session)
    ps = subprocess.run(["pgrep", "-s", str(proc.pid)], capture_output=True, text=True)
    assert ps.stdout == ""
