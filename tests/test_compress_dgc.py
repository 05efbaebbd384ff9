"""DGC and top-k with error feedback over an in-process fake communicator."""
import math

import numpy as np
import pytest
import torch

from fake_comm import FakeWorld
from pccl_py import _core
from pccl_py.compress import DGC, TopK, sparse_exchange_is_cheaper, sparse_sum

D = 200


def _lsq_problem(world, d=D, rows=1000, heterogeneity=0.3, seed=0):
    """Per-worker least squares with different local optima (so that local
    gradients do not vanish at the global optimum)."""
    rng = np.random.default_rng(seed)
    A = [rng.standard_normal((rows, d)) for _ in range(world)]
    xc = rng.standard_normal(d)
    b = [a @ (xc + heterogeneity * rng.standard_normal(d)) for a in A]
    H = [a.T @ a / rows for a in A]
    c = [a.T @ bb / rows for a, bb in zip(A, b)]
    xstar = np.linalg.solve(sum(H), sum(c))
    f = lambda x: sum(0.5 * np.mean((a @ x - bb) ** 2) for a, bb in zip(A, b)) / world
    fstar, f0 = f(xstar), f(np.zeros(d))
    return H, c, lambda x: (f(x) - fstar) / (f0 - fstar)


def _run_momentum_check(world, masking, nesterov, steps=30, lr=0.05, m=0.9):
    H, c, _ = _lsq_problem(world, d=50, rows=200)

    def worker(comm):
        x = torch.zeros(50, dtype=torch.float64, requires_grad=True)
        dgc = DGC([x], comm, density=1.0, momentum=m, nesterov=nesterov, momentum_masking=masking,
                  warmup_densities=())
        for _ in range(steps):
            x.grad = torch.from_numpy(H[comm.rank] @ x.detach().numpy() - c[comm.rank])
            info = dgc.step()
            assert info["mode"] == "dense"
            with torch.no_grad():
                x -= lr * x.grad
        return x.detach().numpy()

    got = FakeWorld(world).run(worker)
    # Reference: torch SGD on the averaged gradient (momentum SGD, or plain SGD with masking).
    x = torch.zeros(50, dtype=torch.float64, requires_grad=True)
    opt = torch.optim.SGD([x], lr=lr, momentum=0.0 if masking else m, nesterov=nesterov and not masking)
    for _ in range(steps):
        x.grad = torch.from_numpy(sum(h @ x.detach().numpy() - cc for h, cc in zip(H, c)) / world)
        opt.step()
    return got, x.detach().numpy()


@pytest.mark.parametrize("world", [1, 2, 4])
@pytest.mark.parametrize("nesterov", [False, True])
def test_density_one_without_masking_is_momentum_sgd(world, nesterov):
    got, ref = _run_momentum_check(world, masking=False, nesterov=nesterov)
    assert np.abs(ref).max() > 0.1
    for g in got:
        assert np.abs(g - ref).max() < 1e-12
        assert np.array_equal(g, got[0])


@pytest.mark.parametrize("world", [1, 4])
def test_density_one_with_masking_is_plain_sgd(world):
    got, ref = _run_momentum_check(world, masking=True, nesterov=False)
    for g in got:
        assert np.abs(g - ref).max() < 1e-12


def test_error_feedback_conservation_and_parity():
    """sum of everything sent + final residual == sum of all velocity increments."""
    world, n, steps, m = 3, 5000, 25, 0.9
    w = FakeWorld(world)

    def worker(comm):
        rng = np.random.default_rng(100 + comm.rank)
        p = torch.zeros(n, dtype=torch.float64, requires_grad=True)
        q = torch.zeros(7, 3, dtype=torch.float64, requires_grad=True)
        dgc = DGC([p, q], comm, density=0.01, momentum=m, warmup_densities=(), exchange="sparse",
                  fp16_values=comm.rank == 1)
        added = np.zeros(n + 21)
        sent = np.zeros(n + 21)
        grads = []
        for t in range(steps):
            u_before = np.concatenate([s["u"].numpy() for s in dgc.state])
            p.grad = torch.from_numpy(rng.standard_normal(n) * 10.0 ** rng.uniform(-2, 2))
            q.grad = torch.from_numpy(rng.standard_normal((7, 3)))
            g = np.concatenate([p.grad.numpy().ravel(), q.grad.numpy().ravel()])
            added += m * u_before + g  # the velocity increment u_t
            info = dgc.step()
            assert info["mode"] == "sparse" and info["n"] == n + 21
            idx, vals, _ = _core.sparse_decode(w.gathers[t][comm.rank])
            sent[idx] += vals
            grads.append(np.concatenate([p.grad.numpy().ravel(), q.grad.numpy().ravel()]))
        residual = np.concatenate([s["v"].numpy() for s in dgc.state])
        scale = np.abs(added).max()
        assert np.abs(sent + residual - added).max() <= 1e-12 * scale * steps
        assert np.abs(residual).max() > 0  # something was held back
        return np.array(grads)

    grads = w.run(worker)
    for g in grads[1:]:
        assert np.array_equal(g, grads[0])  # bit-identical global gradients on every member


def test_sparse_exchange_sums_what_was_sent():
    world, n = 4, 100_000
    w = FakeWorld(world)

    def worker(comm):
        p = torch.zeros(n, requires_grad=True)
        dgc = DGC([p], comm, density=0.001, momentum=0.0, warmup_densities=(), average=False)
        p.grad = torch.randn(n, generator=torch.Generator().manual_seed(comm.rank))
        info = dgc.step()
        assert info["mode"] == "sparse" and 80 <= info["selected"] <= 130
        return p.grad.numpy().copy()

    got = w.run(worker)
    dense = np.zeros(n, np.float32)
    for blob in w.gathers[0]:
        idx, vals, _ = _core.sparse_decode(blob)
        dense[idx] += vals
    for g in got:
        assert np.array_equal(g, dense)
    assert 300 <= np.count_nonzero(dense) <= 4 * 130


def test_warmup_schedule_and_auto_switch():
    w = FakeWorld(8)

    def worker(comm):
        p = torch.zeros(10_000, requires_grad=True)
        dgc = DGC([p], comm, density=0.001, warmup_epochs_each=2)
        modes = []
        for epoch in range(10):
            dgc.set_epoch(epoch)
            p.grad = torch.ones(10_000)
            info = dgc.step()
            modes.append((info["density"], info["mode"]))
        return modes

    modes = w.run(worker)[0]
    assert [d for d, _ in modes] == [0.25, 0.25, 0.0625, 0.0625, 0.015625, 0.015625, 0.004, 0.004, 0.001, 0.001]
    # 8 workers: at density 0.25 the all-gather would move more than the dense all-reduce.
    assert modes[0][1] == "dense" and modes[-1][1] == "sparse"
    assert not sparse_exchange_is_cheaper(10_000, 2_500, 8, 4)
    assert sparse_exchange_is_cheaper(10_000, 2_500, 4, 4)  # crossover density 1.33 / W
    assert not sparse_exchange_is_cheaper(10_000, 10_000, 2, 8) and not sparse_exchange_is_cheaper(100, 1, 1, 4)


def test_local_clipping_scaled_by_world_size():
    w = FakeWorld(4)

    def worker(comm):
        p = torch.zeros(100, dtype=torch.float64, requires_grad=True)
        dgc = DGC([p], comm, density=1.0, momentum=0.0, clip_norm=1.0, warmup_densities=())
        p.grad = torch.full((100,), 5.0, dtype=torch.float64)
        dgc.step()
        return float(p.grad.norm())

    # Every worker clips its gradient (norm 50) to 1 / sqrt(4); the average has that norm.
    assert all(abs(g - 0.5) < 1e-6 for g in w.run(worker))


def test_topk_error_feedback_residual():
    tk = TopK(density=0.1)
    x = np.arange(1, 21, dtype=np.float64)
    blob = tk.compress(x, "a")
    idx, vals, n = _core.sparse_decode(blob)
    assert n == 20 and idx.tolist() == [18, 19] and vals.tolist() == [19, 20]
    assert np.array_equal(tk.residual("a"), np.where(np.arange(20) >= 18, 0, x))
    blob = tk.compress(np.zeros(20), "a")
    assert _core.sparse_decode(blob)[0].tolist() == [16, 17]
    assert np.array_equal(TopK.decompress(blob)[16:18], [17, 18])
    assert TopK(0.1, error_feedback=False).residual("a") is None


def test_distributed_least_squares_convergence():
    """4 workers, d = 200, k = 1%: top-k without error feedback stalls; top-k
    with error feedback and DGC converge."""
    world = 4
    H, c, gap = _lsq_problem(world)
    lrs = [lr for lr in (0.02, 0.005, 0.001) for _ in range(500)]

    def run_topk(ef):
        tks = [TopK(0.01, error_feedback=ef) for _ in range(world)]
        x = np.zeros(D)
        for lr in lrs:
            blobs = [tks[r].compress(H[r] @ x - c[r]) for r in range(world)]
            x -= lr * sparse_sum(blobs, D) / world
        return gap(x)

    def dgc_worker(comm):
        x = torch.zeros(D, dtype=torch.float64, requires_grad=True)
        dgc = DGC([x], comm, density=0.01, momentum=0.9, warmup_densities=())
        for lr in lrs:
            x.grad = torch.from_numpy(H[comm.rank] @ x.detach().numpy() - c[comm.rank])
            assert dgc.step()["selected"] == 2
            with torch.no_grad():
                x -= lr / 10 * x.grad  # momentum 0.9 multiplies the step by ~10
        return x.detach().numpy()

    no_ef, ef = run_topk(False), run_topk(True)
    xs = FakeWorld(world).run(dgc_worker)
    assert no_ef >= 0.1
    assert ef <= 1e-3
    assert all(np.array_equal(x, xs[0]) for x in xs)
    assert gap(xs[0]) <= 1e-3
