"""Small input defects found on the way (issue 10): read-only memory behind a
torch tensor, tags out of range. Each is a clear InvalidArgumentError on the
member that has it, before the op starts, and the pair works on."""

import warnings

import numpy as np
import pytest
import torch

import pccl_py as pc
from local_group import close_all, make_group, run_all


@pytest.fixture
def pair():
    comms = make_group(2, key="guards", timeout=5.0)
    yield comms
    close_all(comms)


def read_only_tensor(tmp_path, n=1024):
    path = tmp_path / "x.f32"
    np.arange(n, dtype=np.float32).tofile(path)
    mm = np.memmap(path, dtype=np.float32, mode="r")  # PROT_READ pages
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch warns that the array is not writable
        return torch.from_numpy(mm), mm


@pytest.mark.timeout(60)
def test_torch_tensor_over_read_only_memory_is_refused(pair, tmp_path):
    t, _mm = read_only_tensor(tmp_path)
    res = run_all(pair, lambda c: c.all_reduce(t))  # used to SIGSEGV in reduce.cpp
    assert all(isinstance(r, pc.InvalidArgumentError) and "read-only memory" in str(r) for r in res), res
    res = run_all(pair, lambda c: c.sync_state({"x": t}, 1))
    assert all(isinstance(r, pc.InvalidArgumentError) for r in res), res
    out = torch.zeros(1024)
    res = run_all(pair, lambda c: c.all_reduce(t, out=out.clone()))  # read-only input, writable out: fine
    assert not [r for r in res if isinstance(r, Exception)], res
    xs = [torch.full((8,), float(i + 1)) for i in range(2)]
    assert not [r for r in run_all(pair, lambda c, x: c.all_reduce(x), xs) if isinstance(r, Exception)]
    assert all(torch.equal(x, torch.full((8,), 3.0)) for x in xs)
    assert pc._core.memory_writable(xs[0].data_ptr(), 32) and not pc._core.memory_writable(t.data_ptr(), 4096)


@pytest.mark.parametrize("tag", [-1, 2**32, 0xFFFF0000, "3", 1.0, True, None])
def test_tag_out_of_range_is_a_clear_error(tag):
    c = pc.Communicator(run_key="guards")
    try:
        for call in (lambda: c.all_reduce(np.ones(4, np.float32), tag=tag),
                     lambda: c.all_reduce_async(np.ones(4, np.float32), tag=tag),
                     lambda: c.all_gather_bytes(b"x", tag=tag)):
            with pytest.raises(pc.InvalidArgumentError, match=r"tag must be an int in 0\.\.0xfffeffff"):
                call()
        assert c.all_reduce(np.ones(4, np.float32), tag=np.uint32(0xFFFEFFFF)).world_size == 1
    finally:
        c.close()
