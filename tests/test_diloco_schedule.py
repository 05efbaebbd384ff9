"""The Streaming DiLoCo schedule and the outer-step kernels, through the
Python binding, through the C ABI (ctypes) and from a C99 program."""

import ctypes
import os
import shutil
import subprocess

import numpy as np
import pytest
import torch

import pccl_py
from pccl_py import diloco
from pccl_py.errors import InvalidArgumentError

LIB = os.path.join(os.path.dirname(pccl_py.__file__), "lib", "libpccl.so")


def reference_schedule(H, P, tau, steps):
    """Independent statement of the rule: fragment p starts after
    k*H + (p+1)*H/P and is applied tau steps later."""
    start, apply = {}, {}
    for k in range(steps // H + 2):
        for p in range(P):
            t = k * H + (p + 1) * (H // P)
            start[t] = p
            apply[t + tau] = p
    return start, apply


@pytest.mark.parametrize("H,P,tau", [(1, 1, 0), (10, 1, 0), (10, 1, 10), (100, 4, 1), (12, 3, 4), (8, 8, 0)])
def test_schedule_matches_reference(H, P, tau):
    s = diloco.DilocoSchedule(H, P, tau)
    start, apply = reference_schedule(H, P, tau, 5 * H)
    for t in range(0, 5 * H + 1):
        assert s.fragment_to_start(t) == start.get(t, -1), t
        assert s.fragment_to_apply(t) == apply.get(t, -1), t
    for p in range(P):
        assert [s.start_step(p, k) for k in range(3)] == [k * H + (p + 1) * (H // P) for k in range(3)]


def test_schedule_each_fragment_once_per_window():
    s = diloco.DilocoSchedule(100, 4, 1)
    starts = [s.fragment_to_start(t) for t in range(1, 101)]
    assert sorted(f for f in starts if f >= 0) == [0, 1, 2, 3]
    assert [t for t in range(1, 101) if starts[t - 1] >= 0] == [25, 50, 75, 100]


@pytest.mark.parametrize("H,P,tau,msg", [
    (0, 1, 0, "sync_every (H) must be >= 1"),
    (10, 0, 0, "fragments (P) must be >= 1"),
    (10, 3, 0, "must be a multiple of fragments (P=3)"),
    (100, 4, 26, "overlap_steps (tau=26) must be <= H/P = 25"),
])
def test_schedule_validation(H, P, tau, msg):
    with pytest.raises(InvalidArgumentError, match=msg.replace("(", r"\(").replace(")", r"\)")):
        diloco.DilocoSchedule(H, P, tau)


def test_start_step_rejects_bad_fragment():
    with pytest.raises(InvalidArgumentError, match=r"fragment 4 out of range \[0, 4\)"):
        diloco.DilocoSchedule(100, 4, 1).start_step(4, 0)


class CSchedule(ctypes.Structure):
    _fields_ = [("sync_every", ctypes.c_uint64), ("fragments", ctypes.c_uint32), ("overlap_steps", ctypes.c_uint32)]


@pytest.fixture(scope="module")
def lib():
    lib = ctypes.CDLL(LIB)
    lib.pccl_last_error.restype = ctypes.c_char_p
    lib.pccl_last_error.argtypes = [ctypes.c_void_p]
    lib.pccl_outer_step_f32.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_size_t,
                                        ctypes.c_float, ctypes.c_float, ctypes.c_int]
    lib.pccl_diloco_merge_f32.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_size_t, ctypes.c_float]
    return lib


def test_c_api_schedule(lib):
    s = CSchedule(100, 4, 1)
    f = ctypes.c_int64()
    assert lib.pccl_diloco_schedule_validate(ctypes.byref(s)) == 0
    assert lib.pccl_diloco_fragment_to_start(ctypes.byref(s), ctypes.c_uint64(50), ctypes.byref(f)) == 0
    assert f.value == 1
    assert lib.pccl_diloco_fragment_to_apply(ctypes.byref(s), ctypes.c_uint64(51), ctypes.byref(f)) == 0
    assert f.value == 1
    assert lib.pccl_diloco_fragment_to_apply(ctypes.byref(s), ctypes.c_uint64(50), ctypes.byref(f)) == 0
    assert f.value == -1
    t = ctypes.c_uint64()
    assert lib.pccl_diloco_start_step(ctypes.byref(s), ctypes.c_uint32(3), ctypes.c_uint64(2), ctypes.byref(t)) == 0
    assert t.value == 300
    bad = CSchedule(10, 3, 0)
    assert lib.pccl_diloco_schedule_validate(ctypes.byref(bad)) == 1  # PCCL_ERR_INVALID_ARGUMENT
    assert b"multiple of fragments" in lib.pccl_last_error(None)
    assert lib.pccl_diloco_schedule_validate(None) == 1
    assert lib.pccl_last_error(None) == b"schedule is NULL"
    assert lib.pccl_outer_step_f32(None, None, None, 4, 1.0, 0.0, 0) == 1


def torch_sgd(g0, grads, lr, momentum, nesterov):
    p = torch.nn.Parameter(g0.clone())
    opt = torch.optim.SGD([p], lr=lr, momentum=momentum, nesterov=nesterov)
    for g in grads:
        p.grad = g.clone()
        opt.step()
    return p.detach()


@pytest.mark.parametrize("momentum,nesterov", [(0.0, False), (0.9, False), (0.9, True)])
def test_outer_step_matches_torch_sgd(momentum, nesterov):
    gen = torch.Generator().manual_seed(0)
    g0 = torch.randn(1000, generator=gen)
    grads = [torch.randn(1000, generator=gen) * 0.1 for _ in range(5)]
    ref = torch_sgd(g0, grads, 0.7, momentum, nesterov)
    glob, buf = g0.clone(), torch.zeros(1000)
    for g in grads:
        diloco.outer_step_f32(glob, g, buf, 0.7, momentum, nesterov)
    assert torch.allclose(glob, ref, rtol=0, atol=1e-6)


def test_c_kernels_via_ctypes(lib):
    glob = np.array([1.0, 2.0, 3.0], np.float32)
    g = np.array([0.5, -1.0, 0.25], np.float32)
    buf = np.zeros(3, np.float32)
    ptr = lambda a: a.ctypes.data  # noqa: E731
    assert lib.pccl_outer_step_f32(ptr(glob), ptr(g), ptr(buf), 3, 1.0, 0.5, 1) == 0
    # buf = g; d = g + 0.5 g = 1.5 g
    np.testing.assert_array_equal(buf, g)
    np.testing.assert_array_equal(glob, np.array([1.0, 2.0, 3.0], np.float32) - 1.5 * g)
    local = np.array([4.0, 4.0, 4.0], np.float32)
    assert lib.pccl_diloco_merge_f32(ptr(local), ptr(glob), 3, 0.25) == 0
    np.testing.assert_allclose(local, 0.25 * 4.0 + 0.75 * glob, rtol=1e-7)
    assert lib.pccl_diloco_merge_f32(ptr(local), ptr(glob), 3, 0.0) == 0
    np.testing.assert_array_equal(local, glob)


C_PROGRAM = r"""
#include <stdio.h>
#include "pccl/pccl.h"
int main(void) {
    pccl_diloco_schedule_t s;
    int64_t f = 0;
    float glob[2] = {1.0f, 1.0f}, g[2] = {0.5f, 0.25f};
    s.sync_every = 100; s.fragments = 4; s.overlap_steps = 1;
    if (pccl_diloco_fragment_to_start(&s, 75, &f) != PCCL_OK || f != 2) return 1;
    if (pccl_outer_step_f32(glob, g, NULL, 2, 1.0f, 0.0f, 0) != PCCL_OK) return 2;
    s.fragments = 3;
    if (pccl_diloco_schedule_validate(&s) != PCCL_ERR_INVALID_ARGUMENT) return 3;
    printf("%g %g|%s\n", glob[0], glob[1], pccl_last_error(NULL));
    return 0;
}
"""


@pytest.mark.skipif(shutil.which("cc") is None, reason="no C compiler")
def test_c99_program_drives_schedule(tmp_path):
    src = tmp_path / "sched.c"
    src.write_text(C_PROGRAM)
    exe = tmp_path / "sched"
    libdir = os.path.dirname(LIB)
    subprocess.run(["cc", "-std=c99", "-pedantic", "-Wall", "-Werror", f"-I{pccl_py.c_include_dir()}", str(src),
                    f"-L{libdir}", "-lpccl", f"-Wl,-rpath,{libdir}", "-o", str(exe)], check=True, timeout=60)
    out = subprocess.run([str(exe)], capture_output=True, text=True, timeout=10, check=True).stdout
    assert out.startswith("0.5 0.75|sync_every (H=100) must be a multiple of fragments (P=3)")
