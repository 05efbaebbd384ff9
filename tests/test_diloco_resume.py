"""Checkpoint and resume: a run saved at any step (mid-interval, mid-fragment,
with a sync in flight) and resumed from torch.save'd state continues exactly
as the uninterrupted run: bit-identical at world size 1 and when every peer of
a run resumes from its own checkpoint. Also: the wrappers are real torch
optimizers (LR schedulers, hooks)."""

import io

import pytest
import torch

import pccl_py as pc
from pccl_py._training import TeacherTask, make_student
from pccl_py.diloco import DiLoCo, StreamingDiLoCo

from _diloco_group import run_group
from local_group import run_peer_threads

STEPS = 30

CONFIGS = {
    # name: (factory(model, inner, comm), checkpoint step)
    "diloco-mid-interval": (lambda m, i, c: DiLoCo(m, i, c, sync_every=7), 10),
    "diloco-delayed-in-flight": (lambda m, i, c: DiLoCo(m, i, c, sync_every=6, delayed=True,
                                                        outer_momentum=0.5), 9),
    "streaming-sync-in-flight": (lambda m, i, c: StreamingDiLoCo(m, i, c, sync_every=8, fragments=2,
                                                                 overlap_steps=2, alpha=0.5), 13),
    "topk": (lambda m, i, c: DiLoCo(m, i, c, sync_every=5, compressor=pc.TopK(density=0.05)), 12),
    "topk-2bit": (lambda m, i, c: StreamingDiLoCo(m, i, c, sync_every=6, fragments=2, overlap_steps=1,
                                                  compressor=pc.QuantizedTopK(density=0.05, bits=2)), 10),
}


def _make(comm, factory, seed=3):
    model = make_student(seed)
    inner = torch.optim.AdamW(model.parameters(), lr=3e-3)
    opt = factory(model, inner, comm)
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=4, gamma=0.8)
    return model, opt, sched


def _train(model, opt, sched, data, steps):
    for _ in range(steps):
        x, y = next(data)
        torch.nn.functional.mse_loss(model(x), y).backward()
        opt.step()
        opt.zero_grad()
        sched.step()


def _flat(model):
    return torch.cat([p.detach().reshape(-1) for p in model.parameters()])


def _save(model, opt, sched):
    buf = io.BytesIO()
    torch.save({"model": model.state_dict(), "opt": opt.state_dict(), "sched": sched.state_dict()}, buf)
    return buf.getvalue()


def _resume(comm, factory, blob):
    ck = torch.load(io.BytesIO(blob), weights_only=False)
    model, opt, sched = _make(comm, factory, seed=99)  # another init: everything must come from the checkpoint
    model.load_state_dict(ck["model"])
    opt.load_state_dict(ck["opt"])
    sched.load_state_dict(ck["sched"])
    return model, opt, sched


def _run(comm, factory, rank, stop_at=None, blob=None):
    """Uninterrupted (stop_at None, blob None), first half (stop_at), or the
    second half from a checkpoint (blob)."""
    task = TeacherTask(seed=1)
    data = task.batches(stream=rank, batch=16)
    if blob is None:
        model, opt, sched = _make(comm, factory)
        _train(model, opt, sched, data, STEPS if stop_at is None else stop_at)
        if stop_at is not None:
            return _save(model, opt, sched)
    else:
        model, opt, sched = _resume(comm, factory, blob)
        for _ in range(opt.step_count):
            next(data)
        _train(model, opt, sched, data, STEPS - opt.step_count)
    opt.close()
    return dict(params=_flat(model), global_=[g.clone() for g in opt.global_params()], step=opt.step_count,
                lr=opt.param_groups[0]["lr"], syncs=opt.outer_syncs)


def _same(a, b):
    assert a["step"] == b["step"] == STEPS and a["lr"] == b["lr"] and a["syncs"] == b["syncs"]
    assert torch.equal(a["params"], b["params"])
    assert all(torch.equal(x, y) for x, y in zip(a["global_"], b["global_"]))


@pytest.mark.timeout(60)
@pytest.mark.parametrize("name", list(CONFIGS))
def test_resume_at_world_size_one_is_bit_identical(name):
    factory, at = CONFIGS[name]
    torch.set_num_threads(1)
    with pc.Communicator(run_key="resume1") as comm:
        whole = _run(comm, factory, 0)
        blob = _run(comm, factory, 0, stop_at=at)
        resumed = _run(comm, factory, 0, blob=blob)
    _same(whole, resumed)
    assert whole["syncs"] >= 3


@pytest.mark.timeout(90)
@pytest.mark.parametrize("name", ["diloco-mid-interval", "streaming-sync-in-flight", "topk"])
def test_every_peer_resuming_is_bit_identical(name):
    """Two peers (processes' worth of state, here threads) train, save at the
    same step and quit; a new run of two fresh communicators resumes from the
    checkpoints. (Two peers: the sum of two values does not depend on the
    ring order, which the random peer ids decide.)"""
    factory, at = CONFIGS[name]
    whole = run_group(2, lambda r, c: _run(c, factory, r))
    blobs = run_group(2, lambda r, c: _run(c, factory, r, stop_at=at))
    resumed = run_group(2, lambda r, c: _run(c, factory, r, blob=blobs[r]))
    for r in range(2):
        _same(whole[r], resumed[r])
    assert all(torch.equal(x, y) for x, y in zip(resumed[0]["global_"], resumed[1]["global_"]))


def test_wrappers_are_torch_optimizers_sharing_the_inner_param_groups():
    model = make_student(0)
    inner = torch.optim.SGD(model.parameters(), lr=0.1)
    with pc.Communicator(run_key="optim") as comm:
        for opt in (DiLoCo(model, inner, comm, sync_every=4),
                    StreamingDiLoCo(model, inner, comm, sync_every=4, fragments=2)):
            assert isinstance(opt, torch.optim.Optimizer)
            assert opt.param_groups is inner.param_groups and opt.state is inner.state
        opt = DiLoCo(model, inner, comm, sync_every=4)
        sched = torch.optim.lr_scheduler.StepLR(opt, step_size=3, gamma=0.5)
        calls = []
        opt.register_step_post_hook(lambda o, args, kw: calls.append(o.step_count))
        data = TeacherTask(0).batches(0, 8)
        for _ in range(7):
            x, y = next(data)
            torch.nn.functional.mse_loss(model(x), y).backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            opt.zero_grad()
            sched.step()
        assert inner.param_groups[0]["lr"] == pytest.approx(0.1 * 0.5 ** 2)  # the scheduler drove the inner LR
        assert calls == [1, 2, 3, 4, 5, 6, 7] and opt.outer_syncs == 1


def test_load_state_dict_rejects_another_schedule():
    model = make_student(0)
    with pc.Communicator(run_key="reject") as comm:
        sd = DiLoCo(model, torch.optim.SGD(model.parameters(), lr=0.1), comm, sync_every=4).state_dict()
        other = DiLoCo(model, torch.optim.SGD(model.parameters(), lr=0.1), comm, sync_every=5)
        with pytest.raises(pc.InvalidArgumentError, match="schedule"):
            other.load_state_dict(sd)
        with pytest.raises(pc.InvalidArgumentError, match="not a pccl_py DiLoCo state_dict"):
            other.load_state_dict(torch.optim.SGD(model.parameters(), lr=0.1).state_dict())


@pytest.mark.timeout(90)
def test_one_peer_restarting_from_its_checkpoint_rejoins_the_run():
    """Three peers; one saves a checkpoint, leaves (its process "dies"), and
    restarts from that checkpoint with a new communicator while the other two
    train on. It rejoins at their next sync, adopts the run's newer state
    (its old local progress is dropped) and ends bit-identical to them."""
    import threading
    import time
    torch.set_num_threads(1)
    factory = lambda m, i, c: DiLoCo(m, i, c, sync_every=10)  # noqa: E731
    first = pc.Communicator(run_key="restart", timeout=2.0)
    comms = [first] + [pc.Communicator(bootstrap=first.addrs, run_key="restart", timeout=2.0) for _ in range(2)]
    results, errors = {}, []

    def peer(i):
        try:
            comm = comms[i]
            comm.wait_for_peers(3, timeout=20)
            task = TeacherTask(seed=1)
            data = task.batches(stream=i, batch=16)
            model, opt, sched = _make(comm, factory)
            if i == 2:
                _train(model, opt, sched, data, 25)  # mid-interval
                blob = _save(model, opt, sched)
                comm.close()  # gone; the others drop it at their next sync
                time.sleep(0.5)
                comm = pc.Communicator(bootstrap=first.addrs, run_key="restart", timeout=2.0)
                comms.append(comm)
                model, opt, sched = _resume(comm, factory, blob)
                assert opt.step_count == 25
            while opt.step_count < 150:
                _train(model, opt, sched, data, 1)
                if i < 2:
                    time.sleep(0.02)  # keep the run going (~3 s) while the restarted peer comes back
            results[i] = dict(global_=opt.global_params()[0].clone(), world=comm.world_size,
                              syncs=opt.outer_syncs, params=_flat(model))
        except BaseException as e:  # reported below
            errors.append((i, e))

    threads = [threading.Thread(target=peer, args=(i,), daemon=True) for i in range(3)]
    run_peer_threads(threads, comms, errors, timeout=60)
    assert results[0]["world"] == results[1]["world"] == results[2]["world"] == 3
    for i in (1, 2):
        assert torch.equal(results[0]["global_"], results[i]["global_"])
        assert torch.equal(results[0]["params"], results[i]["params"])
    assert results[2]["syncs"] < results[0]["syncs"] == 15  # it missed at least one while away
