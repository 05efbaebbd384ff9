"""Exact reductions of DiLoCo to known algorithms."""

import pytest
import torch

import pccl_py as pc
from pccl_py._training import DataParallel, TeacherTask, make_student
from pccl_py.diloco import DiLoCo, StreamingDiLoCo

from _diloco_group import run_group

STEPS = 30


def train(rank, comm, make_opt, steps=STEPS, lr=0.05):
    task = TeacherTask(seed=1)
    model = make_student(seed=3)  # same init everywhere
    inner = torch.optim.SGD(model.parameters(), lr=lr)
    opt = make_opt(model, inner, comm)
    data = task.batches(stream=rank, batch=16)
    for _ in range(steps):
        x, y = next(data)
        torch.nn.functional.mse_loss(model(x), y).backward()
        opt.step()
        opt.zero_grad()
    if hasattr(opt, "close"):
        opt.close()
    return torch.cat([p.detach().reshape(-1) for p in model.parameters()])


def test_h1_outer_sgd_lr1_equals_data_parallel_sgd():
    dp = run_group(3, lambda r, c: train(r, c, lambda m, i, c: DataParallel(m, i, c)))
    dl = run_group(3, lambda r, c: train(r, c, lambda m, i, c: DiLoCo(m, i, c, sync_every=1, outer_lr=1.0,
                                                                      outer_momentum=0.0, nesterov=False)))
    for r in range(3):
        assert torch.equal(dl[r], dl[0])  # bit-identical on every member
        assert (dl[r] - dp[r]).abs().max().item() <= 1e-6
    assert (dl[0] - train(0, None, lambda m, i, c: i)).abs().max().item() > 1e-3  # averaging did something


def test_one_member_outer_sgd_lr1_equals_local_training():
    local = train(0, None, lambda m, i, c: i)
    with pc.Communicator(run_key="solo") as comm:
        solo = train(0, comm, lambda m, i, c: DiLoCo(m, i, c, sync_every=7, outer_lr=1.0, outer_momentum=0.0,
                                                     nesterov=False))
    assert (solo - local).abs().max().item() <= 1e-6


def test_streaming_p1_tau0_alpha0_equals_diloco():
    kw = dict(sync_every=5, outer_lr=0.7, outer_momentum=0.9, nesterov=True)
    a = run_group(2, lambda r, c: train(r, c, lambda m, i, c: DiLoCo(m, i, c, **kw)))
    b = run_group(2, lambda r, c: train(r, c, lambda m, i, c: StreamingDiLoCo(m, i, c, fragments=1, overlap_steps=0,
                                                                              alpha=0.0, **kw)))
    for r in range(2):
        assert torch.equal(a[r], b[r])


def test_streaming_fragments_stay_bit_identical_with_overlap():
    def run(r, c):
        task = TeacherTask(seed=1)
        model = make_student(seed=r)  # different inits: the first sync_state equalizes them
        opt = StreamingDiLoCo(model, torch.optim.AdamW(model.parameters(), lr=1e-3), c, sync_every=8, fragments=4,
                              overlap_steps=1, alpha=0.5)
        data = task.batches(stream=r, batch=16)
        globals_after = []
        for step in range(1, 41):
            x, y = next(data)
            torch.nn.functional.mse_loss(model(x), y).backward()
            opt.step()
            opt.zero_grad()
            if opt.schedule.fragment_to_apply(step) >= 0:
                globals_after.append(torch.cat([g.clone() for g in opt.global_params()]))
        applied_before_close = opt.outer_syncs
        opt.close()  # applies the sync started after step 40
        globals_after.append(torch.cat([g.clone() for g in opt.global_params()]))
        return globals_after, (applied_before_close, opt.outer_syncs)

    res = run_group(3, run)
    assert res[0][1] == (19, 20)  # 40 steps, H=8, P=4, tau=1: a fragment every 2 steps, the last one in flight
    for r in range(1, 3):
        assert len(res[r][0]) == len(res[0][0])
        for a, b in zip(res[0][0], res[r][0]):
            assert torch.equal(a, b)


def test_state_dict_round_trip():
    with pc.Communicator(run_key="sd") as comm:
        model = make_student(0)
        opt = DiLoCo(model, torch.optim.AdamW(model.parameters(), lr=1e-3), comm, sync_every=3)
        task = TeacherTask(0)
        data = task.batches(0, 8)
        for _ in range(4):
            x, y = next(data)
            torch.nn.functional.mse_loss(model(x), y).backward()
            opt.step()
            opt.zero_grad()
        sd = opt.state_dict()
        assert sd["diloco"]["step"] == 4 and sd["diloco"]["revision"] == 2 and set(sd) == {"state", "param_groups", "diloco"}
        model2 = make_student(1)
        opt2 = DiLoCo(model2, torch.optim.AdamW(model2.parameters(), lr=1e-3), comm, sync_every=3)
        opt2.load_state_dict(sd)
        assert opt2.step_count == 4
        assert torch.equal(opt2.global_params()[0], opt.global_params()[0])
        assert torch.equal(opt2.fragments[0].momentum, opt.fragments[0].momentum)
        assert opt2.param_groups[0]["lr"] == 1e-3


def test_rejects_bad_fragment_fn():
    model = make_student(0)
    with pytest.raises(pc.InvalidArgumentError, match="fragment_fn must return 2 non-empty"):
        StreamingDiLoCo(model, torch.optim.SGD(model.parameters(), lr=0.1), None, sync_every=4, fragments=2,
                        fragment_fn=lambda m, p: [list(m.parameters())])


def test_a_sync_in_pieces_is_bit_identical_to_one_exchange(monkeypatch):
    """Blocking syncs exchange their fragment piece by piece (memory: one
    piece of buffer); every operation is elementwise, so 6 pieces give the
    bits of one exchange."""
    from pccl_py import diloco
    make = lambda m, i, c: DiLoCo(m, i, c, sync_every=5)  # noqa: E731
    one = run_group(2, lambda r, c: train(r, c, make))
    monkeypatch.setattr(diloco, "_PIECE_MIN", 1000)
    six = run_group(2, lambda r, c: train(r, c, make))
    for r in range(2):
        assert torch.equal(one[r], six[r]) and torch.equal(six[r], six[0])
