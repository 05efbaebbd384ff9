"""The C99 contract: the header compiles pedantically, and a plain C program
embeds the library end to end (3 copies all-reduce together)."""

import os
import shutil
import subprocess

import pytest

import pccl_py

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CC = shutil.which("gcc") or shutil.which("cc")
pytestmark = pytest.mark.skipif(CC is None, reason="no C compiler on this machine")


def compile_c(src: str, out: str, link: bool) -> None:
    cmd = [CC, "-std=c99", "-pedantic", "-Wall", "-Wextra", "-Werror", "-I", pccl_py.c_include_dir(), src, "-o", out]
    if link:
        lib = pccl_py.c_library_dir()
        cmd += ["-L", lib, "-lpccl", f"-Wl,-rpath,{lib}"]
    else:
        cmd.insert(1, "-c")
    r = subprocess.run(cmd, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr


def test_header_is_strict_c99(tmp_path):
    src = tmp_path / "h.c"
    src.write_text("#include <pccl/pccl.h>\nint f(void) { pccl_config_t c; pccl_config_init(&c); "
                   "return (int)c.streams + (int)PCCL_ERR_INTERNAL; }\n")
    compile_c(str(src), str(tmp_path / "h.o"), link=False)


def test_status_strings_cover_every_code():
    names = [pccl_py._core.status_string(i) for i in range(11)]
    assert names[0] == "success" and names[3] == "peer lost" and names[5] == "authentication failed"
    assert len(set(names)) == 11
    assert pccl_py._core.status_string(99) == "unknown status"


def test_three_c_programs_all_reduce(tmp_path):
    exe = str(tmp_path / "allreduce")
    compile_c(os.path.join(ROOT, "examples", "c", "allreduce.c"), exe, link=True)
    procs = []
    try:
        first = subprocess.Popen([exe, "3"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        procs.append(first)
        line = first.stdout.readline().split()
        assert line and line[0] == "addr", first.stderr.read()
        for _ in range(2):
            procs.append(subprocess.Popen([exe, "3", line[1]], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                          text=True))
        outs = [p.communicate(timeout=60) for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
            p.wait()
    expected_total = 3 * sum(range(1001))
    for (out, err), p in zip(outs, procs):
        assert p.returncode == 0, err
        result = [ln for ln in out.splitlines() if ln.startswith("result")][0].split()
        assert float(result[1]) == expected_total
        assert float(result[2]) == 0.0 and float(result[3]) == 3000.0 and result[5] == "3"
        quant = [ln for ln in out.splitlines() if ln.startswith("quant")][0].split()
        # int8, 3 peers: each hop's error <= absmax/254 of its partial (last block absmax 3000).
        assert float(quant[1]) == 0.0 and abs(float(quant[2]) - 3000.0) <= 3 * 3000 / 254
        assert 3.5 < int(quant[4]) / int(quant[3]) < 4.0  # int8 + one f32 scale per 128 values
