"""4 peers, teacher-student MLP: DiLoCo against data-parallel training on the
same samples (loss, bytes), Nesterov against FedAvg, parity of the global copy."""

import torch

from pccl_py._training import DataParallel, TeacherTask, make_student
from pccl_py.diloco import DiLoCo

from _diloco_group import run_group

BATCH, H = 32, 50


def train(rank, comm, kind, steps, **kw):
    task = TeacherTask(seed=2)
    model = make_student(seed=5)
    inner = torch.optim.AdamW(model.parameters(), lr=2e-3, weight_decay=0.0)
    if kind == "dp":
        opt = DataParallel(model, inner, comm)
    else:
        opt = DiLoCo(model, inner, comm, sync_every=H, **kw)
    data = task.batches(stream=rank, batch=BATCH)
    parity = []
    for step in range(1, steps + 1):
        x, y = next(data)
        torch.nn.functional.mse_loss(model(x), y).backward()
        opt.step()
        opt.zero_grad()
        if kind != "dp" and step % H == 0:
            parity.append(opt.global_params()[0].clone())
    return dict(loss=task.eval_loss(model), tx=opt.tx_bytes, parity=parity)


def test_diloco_h50_matches_data_parallel_with_40x_fewer_bytes():
    dp = run_group(4, lambda r, c: train(r, c, "dp", 800))
    dl = run_group(4, lambda r, c: train(r, c, "diloco", 800))
    dp_loss, dl_loss = dp[0]["loss"], dl[0]["loss"]
    ratio = sum(p["tx"] for p in dp) / sum(p["tx"] for p in dl)
    print(f"eval loss: data-parallel {dp_loss:.5f}, DiLoCo(H={H}) {dl_loss:.5f}; bytes ratio {ratio:.1f}x")
    for r in range(4):  # every member ends every outer step with the same global params (and model)
        assert dl[r]["loss"] == dl_loss and dp[r]["loss"] == dp_loss
        assert len(dl[r]["parity"]) == 800 // H
        for a, b in zip(dl[0]["parity"], dl[r]["parity"]):
            assert torch.equal(a, b)
    assert dl_loss <= 1.10 * dp_loss
    assert ratio >= 40


def test_nesterov_outer_beats_fedavg():
    nesterov = run_group(4, lambda r, c: train(r, c, "diloco", 400))
    fedavg = run_group(4, lambda r, c: train(r, c, "diloco", 400, outer_lr=1.0, outer_momentum=0.0, nesterov=False))
    print(f"eval loss: Nesterov outer {nesterov[0]['loss']:.5f}, FedAvg {fedavg[0]['loss']:.5f}")
    assert nesterov[0]["loss"] < 0.8 * fedavg[0]["loss"]


def test_e3m0_outer_gradients_within_10_percent_of_f32():
    """Streaming DiLoCo's 4-bit outer gradients: nearly the same loss, ~7.5x fewer bytes.
    The e3m0 loss depends on which peer owns (quantizes) which chunk, i.e. on
    the random peer ids: measured 1.088-1.102x of f32 over runs, hence 15%."""
    f32 = run_group(4, lambda r, c: train(r, c, "diloco", 300), timeout=100.0, comm_timeout=20.0)
    e3m0 = run_group(4, lambda r, c: train(r, c, "diloco", 300, quant="e3m0"), timeout=100.0, comm_timeout=20.0)
    ratio = sum(p["tx"] for p in f32) / sum(p["tx"] for p in e3m0)
    print(f"eval loss: f32 {f32[0]['loss']:.5f}, e3m0 {e3m0[0]['loss']:.5f}; bytes ratio {ratio:.2f}x")
    for r in range(4):
        for a, b in zip(e3m0[0]["parity"], e3m0[r]["parity"]):
            assert torch.equal(a, b)  # quantized exchange keeps the global copy bit-identical
    assert e3m0[0]["loss"] <= 1.15 * f32[0]["loss"]
    assert ratio >= 4


def test_delayed_outer_update_trains():
    """One-step-delayed outer update (PCCL's async DiLoCo), with the lowered
    outer momentum it needs: trains and keeps the global copy bit-identical."""
    untrained = TeacherTask(seed=2).eval_loss(make_student(seed=5))
    delayed = run_group(2, lambda r, c: train(r, c, "diloco", 400, delayed=True, outer_momentum=0.5),
                        timeout=100.0, comm_timeout=20.0)
    for a, b in zip(delayed[0]["parity"], delayed[1]["parity"]):
        assert torch.equal(a, b)
    print(f"eval loss: untrained {untrained:.5f}, delayed DiLoCo {delayed[0]['loss']:.5f}")
    assert delayed[0]["loss"] < 0.5 * untrained
