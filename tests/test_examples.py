"""Every example runs, in a short mode."""

import os
import subprocess
import sys
from harness import reap

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run(args, timeout=120, **kw):
    return subprocess.run([sys.executable, *args], capture_output=True, text=True, timeout=timeout, cwd=ROOT, **kw)


def test_streaming_diloco_example():
    r = run(["examples/streaming_diloco.py", "--peers", "2", "--steps", "80", "--sync-every", "20"])
    assert r.returncode == 0, r.stderr
    assert "final loss per peer" in r.stdout


def test_diloco_mlp_example_two_terminals():
    # The first peer waits for the second (which starts after it printed its
    # address), then both train the same number of steps together.
    first = subprocess.Popen([sys.executable, "examples/diloco_mlp.py", "--steps", "150", "--sync-every", "50",
                              "--seed", "1"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT)
    second = None
    try:
        addr = None
        for line in first.stdout:
            if line.startswith("bootstrap others with:"):
                addr = line.split()[-1]
                break
        assert addr, first.stderr.read()
        second = subprocess.Popen([sys.executable, "examples/diloco_mlp.py", "--steps", "150", "--sync-every", "50",
                                   "--seed", "2", "--bootstrap", addr], stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE, text=True, cwd=ROOT)
        out2, err2 = second.communicate(timeout=120)
        out1, err1 = first.communicate(timeout=120)
        assert second.returncode == 0, err2
        assert first.returncode == 0, err1
        assert "peers 2" in out2 and "step   150" in out2
        assert "step    50  loss" in out1 and "peers 2" in out1.split("step    50")[1]  # it waited
    finally:
        reap(first, second)


def test_benches_run_against_the_importable_package_not_the_source_tree(tmp_path):
    """Each bench's docstring says `python bench/X.py`: it must import the
    pccl_py found on the path (installed in CI) and never put the source tree's
    python/ first; --help runs from another directory."""
    import pccl_py
    pkg_parent = os.path.dirname(os.path.dirname(os.path.abspath(pccl_py.__file__)))
    benches = sorted(f for f in os.listdir(os.path.join(ROOT, "bench")) if f.endswith(".py"))
    assert "diloco.py" in benches and "wan.py" in benches
    for name in benches:
        path = os.path.join(ROOT, "bench", name)
        with open(path) as f:
            text = f.read()
        assert "PYTHONPATH=python" not in text, name
        assert '"python")' not in text and "'python')" not in text, f"{name} puts python/ on sys.path"
        r = subprocess.run([sys.executable, path, "--help"], capture_output=True, text=True, timeout=60,
                           cwd=str(tmp_path), env=dict(os.environ, PYTHONPATH=pkg_parent))
        assert r.returncode == 0 and "usage" in r.stdout, (name, r.stderr)


def test_lm_example_trains_a_gpt_on_stdlib_text():
    r = run(["examples/lm_diloco.py", "--peers", "2", "--steps", "40", "--sync-every", "20",
             "--compressor", "topk2"], timeout=180)
    assert r.returncode == 0, r.stderr
    lines = r.stdout.strip().splitlines()
    untrained = float(lines[0].split()[-1])
    dl = float(next(line for line in lines if line.startswith("DiLoCo H=20")).split("eval loss ")[1].split(",")[0])
    assert untrained > 5.0 and dl < untrained - 1.0, r.stdout  # from ~ln(256) toward byte statistics
    assert "fewer bytes" in lines[-1]
