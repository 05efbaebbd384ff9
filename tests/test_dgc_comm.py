"""DGC over the real Communicator: 3 in-process peers train a small torch
model in data parallel, DGC replacing the dense gradient all-reduce. Every
peer must end every step with bit-identical gradients and parameters."""

import pytest
import torch

from local_group import close_all, make_group, run_all
from pccl_py.compress import DGC

WORLD = 3
STEPS = 12


def _model():
    return torch.nn.Sequential(torch.nn.Linear(32, 64), torch.nn.ReLU(), torch.nn.Linear(64, 4))


def _train(comm, exchange: str, init: dict, teacher: torch.nn.Module):
    # The peers are threads sharing torch's global RNG: every random draw here
    # uses its own generator, and the initial model comes from the test.
    model = _model()
    model.load_state_dict(init)
    g = torch.Generator().manual_seed(100 + comm.rank)  # each peer its own data shard
    xs = torch.randn(STEPS, 64, 32, generator=g)
    dgc = DGC(model.parameters(), comm, density=0.05, momentum=0.9, clip_norm=5.0,
              warmup_densities=(0.25,), warmup_epochs_each=4, exchange=exchange)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    digests, modes, losses = [], set(), []
    for step in range(STEPS):
        dgc.set_epoch(step // 4)
        with torch.no_grad():
            y = teacher(xs[step]).argmax(dim=1)
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(model(xs[step]), y)
        loss.backward()
        info = dgc.step()
        modes.add(info["mode"])
        grads = b"".join(p.grad.numpy().tobytes() for p in model.parameters())
        opt.step()
        params = b"".join(p.detach().numpy().tobytes() for p in model.parameters())
        digests.append((grads, params))
        losses.append(float(loss.detach()))
    return digests, modes, losses


@pytest.mark.parametrize("exchange", ["sparse", "dense"])
def test_dgc_data_parallel_stays_bit_identical(exchange):
    torch.manual_seed(0)
    init, teacher = _model().state_dict(), torch.nn.Linear(32, 4)
    comms = make_group(WORLD, key="dgc")
    try:
        out = run_all(comms, _train, [exchange] * WORLD, [init] * WORLD, [teacher] * WORLD)
    finally:
        close_all(comms)
    for o in out:
        if isinstance(o, Exception):
            raise o
    for step in range(STEPS):
        grads = {o[0][step][0] for o in out}
        params = {o[0][step][1] for o in out}
        assert len(grads) == 1, f"step {step}: gradients differ across peers"
        assert len(params) == 1, f"step {step}: parameters differ across peers"
    assert all(o[1] == {exchange} for o in out)
    # The model moved: parameters changed from step 0 to the end.
    assert out[0][0][0][1] != out[0][0][-1][1]
    mean_loss = [sum(o[2][s] for o in out) / WORLD for s in range(STEPS)]
    assert sum(mean_loss[-3:]) / 3 < sum(mean_loss[:3]) / 3 - 0.05, mean_loss  # it learns
