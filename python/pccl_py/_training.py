"""Small training harness shared by the demo, the DiLoCo tests and
bench/diloco.py: a teacher-student regression task, the student model, group
formation and a data-parallel (all-reduce every step) baseline."""

from __future__ import annotations

from typing import Any, Iterator, List, Tuple

import torch

IN, HIDDEN, OUT = 16, 64, 1


class TeacherTask:
    """y = teacher(x) + noise with a fixed random teacher MLP; every peer
    draws its own stream of x (seeded by rank), the eval set is shared."""

    def __init__(self, seed: int = 0, noise: float = 0.01):
        g = torch.Generator().manual_seed(seed)
        self.w1 = torch.randn(IN, 32, generator=g) / IN ** 0.5
        self.w2 = torch.randn(32, OUT, generator=g) / 32 ** 0.5
        self.noise = noise
        self.seed = seed
        self.eval_x = torch.randn(2048, IN, generator=g)
        self.eval_y = self.teacher(self.eval_x)

    def teacher(self, x: torch.Tensor) -> torch.Tensor:
        return torch.tanh(x @ self.w1) @ self.w2

    def batches(self, stream: int, batch: int) -> Iterator[Tuple[torch.Tensor, torch.Tensor]]:
        g = torch.Generator().manual_seed(1000 + 7919 * stream + self.seed)
        while True:
            x = torch.randn(batch, IN, generator=g)
            y = self.teacher(x) + self.noise * torch.randn(batch, OUT, generator=g)
            yield x, y

    @torch.no_grad()
    def eval_loss(self, model: torch.nn.Module) -> float:
        return float(torch.nn.functional.mse_loss(model(self.eval_x), self.eval_y))


def make_student(seed: int = 0) -> torch.nn.Module:
    """The student MLP, initialised from its own generator (thread-safe: the
    tests build several peers' models concurrently)."""
    model = torch.nn.Sequential(torch.nn.Linear(IN, HIDDEN), torch.nn.Tanh(), torch.nn.Linear(HIDDEN, HIDDEN),
                                torch.nn.Tanh(), torch.nn.Linear(HIDDEN, OUT))
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model:
            if isinstance(m, torch.nn.Linear):
                bound = 1.0 / m.in_features ** 0.5
                m.weight.copy_(torch.rand(m.weight.shape, generator=g) * 2 * bound - bound)
                m.bias.copy_(torch.rand(m.bias.shape, generator=g) * 2 * bound - bound)
    return model


def form_group(comm: Any, n: int, timeout: float = 30.0) -> None:
    """Collective start of n peers that were created together (one without
    bootstrap, the others bootstrapping from it): every peer calls this."""
    comm.wait_for_peers(n, timeout=timeout)


class DataParallel:
    """The baseline: average the gradients over all members every step (one
    flat f32 all-reduce), then step the local optimizer."""

    def __init__(self, model: torch.nn.Module, inner: torch.optim.Optimizer, comm: Any, tag: int = 7):
        self.params: List[torch.nn.Parameter] = [p for p in model.parameters() if p.requires_grad]
        self.inner, self.comm, self.tag = inner, comm, tag
        self.tx_bytes = self.rx_bytes = 0

    def step(self) -> None:
        flat = torch.cat([p.grad.reshape(-1) for p in self.params])
        info = self.comm.all_reduce(flat, op="avg", tag=self.tag, retry=True)
        self.tx_bytes += info.tx_bytes
        self.rx_bytes += info.rx_bytes
        off = 0
        for p in self.params:
            p.grad.copy_(flat[off:off + p.numel()].view_as(p))
            off += p.numel()
        self.inner.step()

    def zero_grad(self) -> None:
        self.inner.zero_grad(set_to_none=True)
