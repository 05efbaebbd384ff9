"""CUDA tensors in the collectives and DiLoCo with a CUDA model (marked
``gpu``: they need a CUDA device and are skipped without one). Peers are
communicators in threads of this process, sharing the one GPU."""

import os
import subprocess
import sys
import threading

import pytest

torch = pytest.importorskip("torch")

import pccl_py as pc  # noqa: E402
from pccl_py import _staging  # noqa: E402
from local_group import close_all, make_group, run_all  # noqa: E402

pytestmark = [pytest.mark.gpu,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device on this machine")]
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _inputs(n, count, dtype, seed):
    g = torch.Generator().manual_seed(seed)
    if dtype.is_floating_point:
        return [(torch.randn(count, generator=g) * 100).to(dtype) for _ in range(n)]
    return [torch.randint(-1000, 1000, (count,), generator=g).to(dtype) for _ in range(n)]


@pytest.mark.parametrize("dtype,op", [(torch.float32, "avg"), (torch.float32, "sum"), (torch.bfloat16, "sum"),
                                      (torch.int32, "sum"), (torch.float64, "max")])
@pytest.mark.parametrize("chunk_bytes", [None, 40_000])
def test_cuda_all_reduce_is_bit_identical_to_the_cpu_op(dtype, op, chunk_bytes):
    comms = make_group(2)
    try:
        xs = _inputs(2, 100_003, dtype, 1)
        ref = [x.clone() for x in xs]
        run_all(comms, lambda c, x: c.all_reduce(x, op=op), ref)
        dev = [x.cuda() for x in xs]
        kw = {"chunk_bytes": chunk_bytes} if chunk_bytes else {}
        if kw:  # through the staging module, with many chunks
            res = run_all(comms, lambda c, x: _staging.all_reduce(c, x, op, **kw), dev)
        else:  # through the Communicator, as users call it
            res = run_all(comms, lambda c, x: c.all_reduce(x, op=op), dev)
        assert not any(isinstance(r, Exception) for r in res), res
        for d, r in zip(dev, ref):
            assert d.device.type == "cuda"
            assert torch.equal(d.cpu(), r)
    finally:
        close_all(comms)


def test_cuda_out_and_async_and_three_peers():
    comms = make_group(3)
    try:
        xs = _inputs(3, 50_000, torch.float32, 2)
        ref = [x.clone() for x in xs]
        run_all(comms, lambda c, x: c.all_reduce(x, op="sum"), ref)  # one chunk: exactly the CPU op
        dev = [x.cuda() for x in xs]
        outs = [torch.empty_like(d) for d in dev]
        run_all(comms, lambda c, x, o: c.all_reduce(x, op="sum", out=o), dev, outs)
        for d, x, o, r in zip(dev, xs, outs, ref):
            assert torch.equal(d.cpu(), x)  # input untouched
            assert torch.equal(o.cpu(), r)
        handles = run_all(comms, lambda c, x: c.all_reduce_async(x, op="sum", tag=3), dev)
        infos = [h.wait() for h in handles]
        assert all(i.world_size == 3 for i in infos)
        for d, r in zip(dev, ref):
            assert torch.equal(d.cpu(), r)
    finally:
        close_all(comms)


def test_cuda_sync_state_gives_a_joiner_the_members_tensors():
    comms = make_group(2)
    try:
        g = torch.Generator().manual_seed(5)
        w = torch.randn(1000, generator=g)
        states = [{"w": w.clone().cuda(), "step": torch.tensor([7])},
                  {"w": torch.zeros(1000, device="cuda"), "step": torch.tensor([0])}]
        revs = [3, 0]
        infos = run_all(comms, lambda c, s, r: c.sync_state(s, r), states, revs)
        assert not any(isinstance(i, Exception) for i in infos), infos
        assert torch.equal(states[1]["w"].cpu(), w) and int(states[1]["step"]) == 7
        assert infos[1].tensors_received == 2
    finally:
        close_all(comms)


def test_diloco_with_a_cuda_model_keeps_the_members_identical():
    from pccl_py._training import TeacherTask, make_student
    comms = make_group(2)
    task = TeacherTask()
    models = [make_student(seed=0).cuda() for _ in comms]
    opts = [pc.DiLoCo(m, torch.optim.AdamW(m.parameters(), lr=3e-3), c, sync_every=10)
            for m, c in zip(models, comms)]
    errors = []

    def train(r):
        try:
            data = task.batches(r, 32)
            for _ in range(40):
                x, y = next(data)
                loss = torch.nn.functional.mse_loss(models[r](x.cuda()), y.cuda())
                loss.backward()
                opts[r].step()
                opts[r].zero_grad()
        except Exception as e:  # noqa: BLE001 - reported below
            errors.append(e)
    threads = [threading.Thread(target=train, args=(r,)) for r in range(2)]
    try:
        for t in threads:
            t.start()
        for t in threads:
            t.join(120)
        assert not any(t.is_alive() for t in threads) and not errors, errors
        assert opts[0].outer_syncs == opts[1].outer_syncs == 4
        g0, g1 = (o.global_params()[0] for o in opts)
        assert g0.device.type == "cpu" and torch.equal(g0, g1)
        local = torch.cat([p.detach().reshape(-1).cpu() for p in models[0].parameters()])
        assert torch.equal(local, g0)  # reset to the global copy at the last sync
    finally:
        close_all(comms)


def test_staging_bench_runs():
    r = subprocess.run([sys.executable, os.path.join(ROOT, "bench", "gpu_staging.py"), "--mib", "64", "--reps",
                        "1", "--chunk-mib", "16"], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert "ratio cuda/cpu" in r.stdout
