"""The README's Python and C snippets run as written, two processes each (the
second bootstraps from the address the first prints), so they cannot rot."""

import os
import re
import shutil
import subprocess
import sys

import pytest

import pccl_py
from harness import reap

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CC = shutil.which("gcc") or shutil.which("cc")


def snippet(section: str, lang: str) -> str:
    with open(os.path.join(ROOT, "README.md")) as f:
        text = f.read()
    body = text[text.index(f"## {section}"):]
    body = body[:body.index("\n## ", 4)]
    blocks = re.findall(rf"```{lang}\n(.*?)```", body, re.S)
    assert len(blocks) == 1, f"expected one ```{lang} block under '## {section}'"
    return blocks[0]


def run_pair(cmd, cwd, env=None, timeout=90):
    """Starts cmd, reads the address it prints first, starts cmd + [address];
    returns both (returncode, stdout, stderr); kills both whatever happens."""
    first = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=cwd, env=env)
    second = None
    try:
        addr = first.stdout.readline().strip()
        assert addr.startswith("/ip4/"), (addr, first.stderr.read() if first.poll() is not None else "")
        second = subprocess.Popen(cmd + [addr], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=cwd,
                                  env=env)
        out2, err2 = second.communicate(timeout=timeout)
        out1, err1 = first.communicate(timeout=timeout)
        return (first.returncode, addr + "\n" + out1, err1), (second.returncode, out2, err2)
    finally:
        reap(first, second)


@pytest.mark.timeout(120)
def test_readme_python_snippet_runs_as_two_processes(tmp_path):
    (tmp_path / "app.py").write_text(snippet("Python in", "python"))
    pkg_parent = os.path.dirname(os.path.dirname(os.path.abspath(pccl_py.__file__)))
    env = dict(os.environ, PYTHONPATH=pkg_parent)
    results = run_pair([sys.executable, "app.py"], str(tmp_path), env)
    for rc, out, err in results:
        assert rc == 0, err
        lines = out.strip().splitlines()
        world, tx, x0 = lines[1].split()
        assert world == "2" and x0 == "2.0" and 4_000_000 <= int(tx) < 4_001_000, lines  # 2 (n-1)/n of 4 MB
    assert sorted(os.listdir(tmp_path)) == ["app.py", "ckpt-0.pt", "ckpt-1.pt"]


@pytest.mark.timeout(120)
@pytest.mark.skipif(CC is None, reason="no C compiler on this machine")
def test_readme_c_snippet_compiles_and_runs_as_two_processes(tmp_path):
    src = tmp_path / "app.c"
    src.write_text(snippet("C in", "c"))
    lib = pccl_py.c_library_dir()
    exe = str(tmp_path / "app")
    r = subprocess.run([CC, "-std=c99", "-pedantic", "-Wall", "-Wextra", "-Werror", str(src), "-o", exe,
                        "-I", pccl_py.c_include_dir(), "-L", lib, "-lpccl", f"-Wl,-rpath,{lib}"],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    for rc, out, err in run_pair([exe], str(tmp_path)):
        assert rc == 0, (out, err)
        assert out.strip().splitlines()[-1] == "world 2 sum[0] 2.0", out
