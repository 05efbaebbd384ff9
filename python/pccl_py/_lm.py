"""A real language-modelling task that ships with every Python installation:
a small GPT-style byte-level transformer trained on the bytes of the standard
library's own sources, evaluated on held-out files. Used by
examples/lm_diloco.py and bench/diloco.py."""

from __future__ import annotations

import math
import os
import sysconfig
from typing import Iterator, Tuple

import torch
import torch.nn.functional as F

VOCAB = 256  # bytes


class StdlibText:
    """The bytes of the standard library's top-level .py files, sorted by
    name; every ``eval_every``-th file is held out for evaluation. At most
    ``max_train_bytes`` of training text are kept (the first files)."""

    def __init__(self, ctx: int = 64, max_train_bytes: int = 4 << 20, eval_every: int = 10,
                 eval_windows: int = 128):
        root = sysconfig.get_paths()["stdlib"]
        names = sorted(n for n in os.listdir(root) if n.endswith(".py"))
        train, held = [], []
        size = 0
        for i, name in enumerate(names):
            with open(os.path.join(root, name), "rb") as f:
                data = f.read()
            if i % eval_every == eval_every - 1:
                held.append(data)
            elif size < max_train_bytes:
                train.append(data)
                size += len(data)
        if size < 16 * ctx or not held:
            raise RuntimeError(f"too little standard library source under {root}")
        self.ctx = ctx
        self.train = torch.frombuffer(bytearray(b"".join(train)[:max_train_bytes]), dtype=torch.uint8).long()
        self.held = torch.frombuffer(bytearray(b"".join(held)), dtype=torch.uint8).long()
        # Fixed eval windows, evenly spaced over the held-out bytes.
        n = min(eval_windows, (self.held.numel() - 1) // ctx)
        starts = torch.linspace(0, self.held.numel() - ctx - 2, n).long()
        self.eval_x = torch.stack([self.held[s:s + ctx] for s in starts])
        self.eval_y = torch.stack([self.held[s + 1:s + ctx + 1] for s in starts])

    def batches(self, stream: int, batch: int) -> Iterator[Tuple[torch.Tensor, torch.Tensor]]:
        """Random windows of the training bytes; each stream (worker) has its own seed."""
        g = torch.Generator().manual_seed(4242 + 7919 * stream)
        hi = self.train.numel() - self.ctx - 1
        while True:
            starts = torch.randint(0, hi, (batch,), generator=g)
            idx = starts[:, None] + torch.arange(self.ctx + 1)
            w = self.train[idx]
            yield w[:, :-1], w[:, 1:]

    @torch.no_grad()
    def eval_loss(self, model: torch.nn.Module) -> float:
        """Mean next-byte cross entropy (nats) on the held-out windows."""
        logits = model(self.eval_x)
        return float(F.cross_entropy(logits.reshape(-1, VOCAB), self.eval_y.reshape(-1)))


class _Block(torch.nn.Module):
    def __init__(self, d: int, heads: int):
        super().__init__()
        self.heads = heads
        self.ln1 = torch.nn.LayerNorm(d)
        self.qkv = torch.nn.Linear(d, 3 * d)
        self.proj = torch.nn.Linear(d, d)
        self.ln2 = torch.nn.LayerNorm(d)
        self.fc = torch.nn.Linear(d, 4 * d)
        self.out = torch.nn.Linear(4 * d, d)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, d = x.shape
        q, k, v = self.qkv(self.ln1(x)).split(d, dim=2)
        q, k, v = (z.view(b, t, self.heads, d // self.heads).transpose(1, 2) for z in (q, k, v))
        a = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        x = x + self.proj(a.transpose(1, 2).reshape(b, t, d))
        return x + self.out(F.gelu(self.fc(self.ln2(x))))


class TinyGPT(torch.nn.Module):
    """Byte-level GPT: token + position embeddings, ``layers`` pre-norm
    blocks (causal self-attention, GELU MLP), a final norm and a linear head.
    Initialised from its own generator (``seed``): deterministic and safe to
    build in several threads at once."""

    def __init__(self, ctx: int = 64, d: int = 64, layers: int = 2, heads: int = 4, seed: int = 0):
        super().__init__()
        self.tok = torch.nn.Embedding(VOCAB, d)
        self.pos = torch.nn.Embedding(ctx, d)
        self.blocks = torch.nn.ModuleList(_Block(d, heads) for _ in range(layers))
        self.ln = torch.nn.LayerNorm(d)
        self.head = torch.nn.Linear(d, VOCAB)
        g = torch.Generator().manual_seed(seed)
        with torch.no_grad():
            for name, p in self.named_parameters():
                if name.endswith("bias"):
                    p.zero_()
                elif p.dim() == 1:  # norm gains
                    p.fill_(1.0)
                else:
                    std = 0.02 / math.sqrt(2 * layers) if name.endswith(("proj.weight", "out.weight")) else 0.02
                    p.copy_(torch.randn(p.shape, generator=g) * std)

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        t = idx.shape[1]
        x = self.tok(idx) + self.pos(torch.arange(t))
        for b in self.blocks:
            x = b(x)
        return self.head(self.ln(x))
