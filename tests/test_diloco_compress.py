"""Sparse outer gradients: DiLoCo(compressor=pc.TopK(...)) and the
quantized-values variant pc.QuantizedTopK keep every member's global copy
bit-identical (sets summed in rank order), train, and send a fraction of the
dense bytes; the QuantizedTopK wire codec is exact about what it sends."""

import numpy as np
import pytest
import torch

import pccl_py as pc
from pccl_py._training import TeacherTask, make_student
from pccl_py.diloco import DiLoCo

from _diloco_group import run_group


def train(rank, comm, compressor, steps=60):
    task = TeacherTask(seed=3)
    model = make_student(seed=4)
    opt = DiLoCo(model, torch.optim.AdamW(model.parameters(), lr=3e-3), comm, sync_every=10,
                 compressor=compressor() if compressor else None)
    data = task.batches(stream=rank, batch=16)
    parity = []
    for step in range(1, steps + 1):
        x, y = next(data)
        torch.nn.functional.mse_loss(model(x), y).backward()
        opt.step()
        opt.zero_grad()
        if step % 10 == 0:
            parity.append(opt.global_params()[0].clone())
    return dict(loss=task.eval_loss(model), tx=opt.tx_bytes, parity=parity)


@pytest.mark.timeout(90)
def test_topk_and_quantized_topk_outer_gradients_train_bit_identically():
    untrained = TeacherTask(seed=3).eval_loss(make_student(seed=4))
    dense = run_group(3, lambda r, c: train(r, c, None))
    for make in (lambda: pc.TopK(density=0.05), lambda: pc.QuantizedTopK(density=0.05, bits=2)):
        res = run_group(3, lambda r, c: train(r, c, make))
        for r in range(1, 3):
            assert len(res[r]["parity"]) == 6
            assert all(torch.equal(a, b) for a, b in zip(res[0]["parity"], res[r]["parity"]))
        ratio = sum(d["tx"] for d in dense) / sum(d["tx"] for d in res)
        print(f"{type(make()).__name__}: eval loss {res[0]['loss']:.5f} (dense {dense[0]['loss']:.5f}, "
              f"untrained {untrained:.5f}), {ratio:.1f}x fewer bytes than dense")
        assert res[0]["loss"] < 0.5 * untrained
        assert ratio > 4


def test_quantized_topk_sends_exactly_what_it_keeps_out_of_the_residual():
    rng = np.random.default_rng(1)
    x = rng.standard_normal(5000).astype(np.float32)
    q = pc.QuantizedTopK(density=0.04, bits=2, block=16)
    blob = q.compress(x, key="w")
    idx, vals, n = q.decode(blob)
    assert n == 5000 and idx.size == 200 and np.all(np.diff(idx) > 0)
    # 2 bits: every sent value is -s, -s/3, s/3 or s of its block's scale s (its largest magnitude).
    kept = x[idx]
    for b in range(0, 200, 16):
        s = np.abs(kept[b:b + 16]).max()
        assert np.allclose(np.abs(vals[b:b + 16]) / s, np.round(np.abs(vals[b:b + 16]) / s * 3) / 3, atol=1e-6)
    # error feedback: what was sent plus what is kept is the input, exactly
    dense = q.decompress(blob)
    assert np.array_equal(dense + q.residual("w"), x)
    # ~2.3 bytes per entry (2-byte gaps, 2-bit codes, a scale per 16) instead of ~5 for f32 TopK
    assert len(blob) == 4 + 22 + 200 * 2 + 13 * 4 + 50
    assert len(blob) < 0.55 * len(pc.TopK(density=0.04).compress(x))
    # the next call adds the residual back: what it sends plus what it keeps is the old residual
    res1 = q.residual("w").copy()
    blob2 = q.compress(np.zeros(5000, np.float32), key="w")
    assert np.array_equal(q.decompress(blob2) + q.residual("w"), res1)
    with pytest.raises(ValueError, match="header says"):
        q.decode(blob[:-1])
    with pytest.raises(ValueError, match="bits must be 2, 4 or 8"):
        pc.QuantizedTopK(bits=3)
