"""Gradient compression: quantizers, top-k with error feedback, Deep Gradient
Compression (DGC) and FedZip.

The codecs are pure C++ functions (``pccl_py._core``); this module adds the
stateful parts (residuals, momentum) and the exchange over a communicator.

Communicator contract used by :class:`DGC` (duck-typed, so tests can pass an
in-process fake):

- ``comm.world_size``: number of members (an int, or a method returning one);
- ``comm.all_gather_bytes(data: bytes) -> list[bytes]``: one blob per member,
  in rank order, identical on every member;
- ``comm.all_reduce(tensor, op="sum")``: in-place sum over members, the result
  bit-identical on every member.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Dict, Iterable, List, Mapping, Optional, Sequence, Tuple

import numpy as np

from . import _core
from .errors import InvalidArgumentError, ProtocolError

__all__ = [
    "QUANT_KINDS",
    "quantize",
    "dequantize",
    "encoded_size",
    "max_abs_error_bound",
    "topk_select",
    "sparse_encode",
    "sparse_decode",
    "sparse_sum",
    "fedzip_encode",
    "fedzip_decode",
    "TopK",
    "QuantizedTopK",
    "DGC",
    "FedZip",
    "FedZipPayload",
    "sparse_exchange_is_cheaper",
]

# The codec table's names (cpp/src/compress/codec.cpp), in id order.
QUANT_KINDS = tuple(c["name"] for c in _core.codecs())

# The codecs themselves (flat float32 in; other dtypes are converted).
quantize = _core.quantize
dequantize = _core.dequantize
encoded_size = _core.encoded_size
max_abs_error_bound = _core.max_abs_error_bound
topk_select = _core.topk_select
sparse_encode = _core.sparse_encode
sparse_decode = _core.sparse_decode
sparse_sum = _core.sparse_sum
fedzip_encode = _core.fedzip_encode
fedzip_decode = _core.fedzip_decode


def _flat_f32(values: Any) -> np.ndarray:
    """A contiguous 1-D float32 numpy view/copy of a numpy array or CPU torch tensor."""
    if hasattr(values, "detach"):  # torch.Tensor
        values = values.detach().cpu().float().numpy()
    return np.ascontiguousarray(np.asarray(values, dtype=np.float32).reshape(-1))


def _varint_size(v: float) -> int:
    return max(1, math.ceil(math.log2(v + 1.0) / 7.0))


def sparse_exchange_is_cheaper(n: int, k: int, world_size: int, dense_elem_bytes: int,
                               fp16_values: bool = False) -> bool:
    """Whether an all-gather of k-entry sparse sets moves fewer bytes than a
    dense ring all-reduce of n elements.

    Per peer, the ring all-reduce sends 2 (W-1)/W * n * elem bytes; the sparse
    all-gather makes every peer receive (and, over a ring, forward) the other
    W-1 sets of about k * (index varint + value) bytes, i.e. (W-1) * k * b.
    Sparse wins iff W * k * b < 2 * n * elem, i.e. density < 2 elem / (W b).
    With f32 values and ~2-byte index gaps (b = 6) the crossover density is
    1.33 / W: 0.33 at W = 4, 0.042 at W = 32. A world of one moves nothing and
    k == n is never sparse.
    """
    if world_size <= 1 or k >= n:
        return False
    b = _varint_size(n / max(k, 1)) + (2 if fp16_values else 4)
    return world_size * k * b + 16 * world_size < 2 * n * dense_elem_bytes


class TopK:
    """Top-k sparsifier with error feedback.

    ``compress(x, key)`` adds the residual kept for ``key`` to ``x``, selects
    about ``ceil(density * n)`` entries of largest magnitude (threshold from a
    ``sample_rate`` sample, see ``_core.topk_select``), encodes them as a sparse
    set (values f32, or fp16 with ``fp16_values``) and keeps everything not
    transmitted, including the fp16/f32 rounding of the sent values, as the new
    residual. With ``error_feedback=False`` the unsent part is dropped.
    """

    def __init__(self, density: float = 0.001, sample_rate: float = 0.01, fp16_values: bool = False,
                 error_feedback: bool = True, seed: int = 0):
        if not 0.0 < density <= 1.0:
            raise InvalidArgumentError(f"density must be in (0, 1], got {density}")
        self.density = density
        self.sample_rate = sample_rate
        self.fp16_values = fp16_values
        self.error_feedback = error_feedback
        self.seed = seed
        self._residual: Dict[Any, np.ndarray] = {}
        self._calls = 0

    def compress(self, values: Any, key: Any = 0) -> bytes:
        blob, commit = self.compress_pending(values, key)
        commit()
        return blob

    def compress_pending(self, values: Any, key: Any = 0) -> Tuple[bytes, Any]:
        """As compress(), but the residual (and the sampling seed) move on only
        when the returned ``commit()`` is called: a caller whose exchange
        failed (a lost peer) retries with the same set."""
        x = np.asarray(values.detach().cpu().numpy() if hasattr(values, "detach") else values)
        dtype = np.float64 if x.dtype == np.float64 else np.float32
        acc = x.reshape(-1).astype(dtype, copy=True)
        res = self._residual.get(key)
        if self.error_feedback and res is not None:
            if res.shape != acc.shape:
                raise InvalidArgumentError(f"{type(self).__name__}: key {key!r} was used with {res.size} elements, "
                                 f"now {acc.size}")
            acc += res
        idx, vals = _core.topk_select(_flat_f32(acc), self.density, self.seed + self._calls, self.sample_rate)
        blob, sent = self._encode(idx, vals, acc.size)

        def commit() -> None:
            self._calls += 1
            if self.error_feedback:
                acc[idx] -= sent.astype(dtype)
                self._residual[key] = acc
        return blob, commit

    def _encode(self, idx: np.ndarray, vals: np.ndarray, n: int) -> Tuple[bytes, np.ndarray]:
        """The wire set and the values it carries (what the receivers decode)."""
        blob = _core.sparse_encode(idx, vals, n, self.fp16_values)
        return blob, (_core.sparse_decode(blob)[1] if self.fp16_values else vals)

    def empty_set(self, n: int) -> bytes:
        """A set of n elements with no entries (a member that contributes nothing)."""
        return self._encode(np.empty(0, np.int64), np.empty(0, np.float32), n)[0]

    @staticmethod
    def decompress(blob: bytes, n: Optional[int] = None) -> np.ndarray:
        """The dense tensor of a sparse set. ``n``: its expected length,
        checked before allocating; without it a blob may describe at most
        4096 values per byte (the dense length is the sender's claim)."""
        idx, vals, claimed = _core.sparse_decode(blob)
        if n is not None and claimed != n:
            raise ProtocolError(f"TopK: the sparse set has dense length {claimed}, expected {n}")
        if n is None and claimed > 4096 * len(blob):
            raise ProtocolError(f"TopK: the sparse set claims {claimed} values from {len(blob)} bytes; pass n= "
                             f"to decode sets sparser than 1/4096")
        out = np.zeros(claimed, dtype=np.float32)
        out[idx] = vals
        return out

    def sum_sets(self, blobs: Sequence[bytes], n: int) -> np.ndarray:
        """Dense f32 sum of the sets in list order (the same on every member)."""
        return _core.sparse_sum(list(blobs), n)

    def residual(self, key: Any = 0) -> Optional[np.ndarray]:
        return self._residual.get(key)

    def reset(self) -> None:
        self._residual.clear()

    def state_dict(self) -> Dict[str, Any]:
        """Residuals and the call counter (it seeds the threshold sample)."""
        return {"residual": {k: v.copy() for k, v in self._residual.items()}, "calls": self._calls}

    def load_state_dict(self, sd: Mapping[str, Any]) -> None:
        self._residual = {k: np.array(v, copy=True) for k, v in sd["residual"].items()}
        self._calls = int(sd["calls"])


class QuantizedTopK(TopK):
    """Top-k with error feedback whose kept values are quantized to ``bits``
    (2, 4 or 8) bits, SparseLoCo-style: per block of ``block`` consecutive
    kept values one f32 scale s (their largest magnitude) and 2^bits levels
    evenly spaced over [-s, s] without zero (2 bits: -s, -s/3, s/3, s), round
    to nearest. The quantization error stays in the residual (error
    feedback), so it is sent later instead of lost.

    Wire set: b"QTK1", n (u64), k (u64), bits (u8), block (u32), index width
    (u8: 2 or 4 bytes), then the first index and the gaps between sorted
    indices at that width, the scales (f32) and the packed codes. With 2 bits
    and gaps below 65536 an entry costs 2.25 bytes + 4/block (f32 TopK: ~5).
    Decoding and summing are deterministic (numpy, list order), so every
    member gets the same bits.
    """

    _MAGIC = b"QTK1"
    _HEADER = np.dtype([("n", "<u8"), ("k", "<u8"), ("bits", "u1"), ("block", "<u4"), ("width", "u1")])

    def __init__(self, density: float = 0.02, bits: int = 2, block: int = 64, sample_rate: float = 0.01,
                 error_feedback: bool = True, seed: int = 0):
        if bits not in (2, 4, 8):
            raise InvalidArgumentError(f"QuantizedTopK: bits must be 2, 4 or 8, got {bits}")
        if block < 1:
            raise InvalidArgumentError(f"QuantizedTopK: block must be >= 1, got {block}")
        super().__init__(density=density, sample_rate=sample_rate, fp16_values=False,
                         error_feedback=error_feedback, seed=seed)
        self.bits = int(bits)
        self.block = int(block)

    def _encode(self, idx: np.ndarray, vals: np.ndarray, n: int) -> Tuple[bytes, np.ndarray]:
        order = np.argsort(idx, kind="stable")
        idx, vals = np.asarray(idx, np.int64)[order], np.asarray(vals, np.float32)[order]
        k, levels = idx.size, (1 << self.bits) - 1
        gaps = np.diff(idx, prepend=0) if k else np.empty(0, np.int64)
        width = 2 if k == 0 or int(gaps.max()) < 65536 else 4
        nb = -(-k // self.block)
        pad = np.zeros(nb * self.block, np.float32)
        pad[:k] = vals
        blocks = pad.reshape(nb, self.block)
        scales = np.abs(blocks).max(axis=1).astype(np.float32)
        safe = np.where(scales > 0, scales, np.float32(1))
        codes = np.clip(np.rint((blocks / safe[:, None] + 1) * (levels / 2)), 0, levels).astype(np.uint8)
        sent = np.empty(k, np.float32)
        sent[order] = self._levels(codes, scales).reshape(-1)[:k]  # in the caller's order
        per = 8 // self.bits
        flat = np.zeros(-(-k // per) * per, np.uint8)
        flat[:k] = codes.reshape(-1)[:k]
        packed = np.zeros(flat.size // per, np.uint8)
        for j in range(per):
            packed |= flat[j::per] << np.uint8(j * self.bits)
        head = np.array([(n, k, self.bits, self.block, width)], self._HEADER).tobytes()
        blob = b"".join([self._MAGIC, head, gaps.astype("<u2" if width == 2 else "<u4").tobytes(),
                         scales.astype("<f4").tobytes(), packed.tobytes()])
        return blob, sent

    def _levels(self, codes: np.ndarray, scales: np.ndarray) -> np.ndarray:
        levels = (1 << self.bits) - 1
        return ((codes.astype(np.float32) * np.float32(2.0 / levels) - np.float32(1)) * scales[:, None]).astype(
            np.float32)

    @classmethod
    def decode(cls, blob: bytes) -> Tuple[np.ndarray, np.ndarray, int]:
        """(indices int64, values float32, n) of a wire set."""
        mv = memoryview(blob)
        if bytes(mv[:4]) != cls._MAGIC:
            raise ProtocolError("QuantizedTopK: not a quantized top-k set")
        h = np.frombuffer(mv[4:4 + cls._HEADER.itemsize], cls._HEADER)[0]
        n, k, bits, block, width = int(h["n"]), int(h["k"]), int(h["bits"]), int(h["block"]), int(h["width"])
        if bits not in (2, 4, 8) or block < 1 or width not in (2, 4) or k > n:
            raise ProtocolError("QuantizedTopK: corrupt header")
        off = 4 + cls._HEADER.itemsize
        per, nb = 8 // bits, -(-k // block)
        need = off + k * width + 4 * nb + -(-k // per)
        if len(blob) != need:
            raise ProtocolError(f"QuantizedTopK: set of {len(blob)} bytes, its header says {need}")
        gaps = np.frombuffer(mv[off:off + k * width], "<u2" if width == 2 else "<u4").astype(np.int64)
        off += k * width
        scales = np.frombuffer(mv[off:off + 4 * nb], "<f4").astype(np.float32)
        off += 4 * nb
        packed = np.frombuffer(mv[off:], np.uint8)
        codes = np.empty(packed.size * per, np.uint8)
        mask = np.uint8((1 << bits) - 1)
        for j in range(per):
            codes[j::per] = (packed >> np.uint8(j * bits)) & mask
        pad = np.zeros(nb * block, np.uint8)
        pad[:k] = codes[:k]
        levels = (1 << bits) - 1
        vals = ((pad.reshape(nb, block).astype(np.float32) * np.float32(2.0 / levels) - np.float32(1))
                * scales[:, None]).astype(np.float32).reshape(-1)[:k]
        idx = np.cumsum(gaps)
        if k and (idx[-1] >= n or (k > 1 and np.any(gaps[1:] == 0))):
            raise ProtocolError("QuantizedTopK: indices out of range or repeated")
        return idx, vals, n

    @classmethod
    def decompress(cls, blob: bytes) -> np.ndarray:
        idx, vals, n = cls.decode(blob)
        out = np.zeros(n, dtype=np.float32)
        out[idx] = vals
        return out

    def sum_sets(self, blobs: Sequence[bytes], n: int) -> np.ndarray:
        out = np.zeros(n, np.float32)
        for b in blobs:
            idx, vals, m = self.decode(b)
            if m != n:
                raise ProtocolError(f"QuantizedTopK: a set of {m} elements, expected {n}")
            out[idx] += vals  # indices are unique within a set
        return out


def _world_size(comm: Any) -> int:
    ws = comm.world_size
    return int(ws() if callable(ws) else ws)


class DGC:
    """Deep Gradient Compression (Lin et al., 2018) as the gradient-sync step of
    a data-parallel loop, replacing DDP's dense all-reduce::

        dgc = DGC(model.parameters(), comm, density=0.001, momentum=0.9)
        opt = torch.optim.SGD(model.parameters(), lr=0.1)   # no momentum here:
        for epoch ...:                                       # DGC applies it
            dgc.set_epoch(epoch)
            for batch ...:
                loss.backward()
                dgc.step()          # p.grad <- global sparse sum (or average)
                opt.step(); opt.zero_grad()

    Per step and parameter, with local gradient g:

    - local clipping: if ``clip_norm`` is set, the local gradients (all
      parameters together) are clipped to ``clip_norm / sqrt(world_size)``;
    - momentum correction: ``u <- m u + g``; ``v <- v + u`` (Nesterov:
      ``v <- v + g + m u``);
    - selection: about ``ceil(d n)`` entries of largest ``|v|`` per parameter,
      d following the warm-up schedule;
    - error feedback: what was sent is subtracted from v (the unsent residual,
      and the f32/fp16 rounding of what was sent, stay in v);
    - momentum-factor masking: ``u`` is cleared where entries were sent;
    - exchange: one sparse set for all parameters, all-gathered and summed in
      rank order (bit-identical on every member), or a dense all-reduce of the
      same sparsified tensor when that moves fewer bytes (see
      :func:`sparse_exchange_is_cheaper`; ``exchange`` forces either);
    - ``p.grad`` becomes the global sum, divided by the world size when
      ``average``.

    With density 1 and no masking this is momentum SGD (Nesterov if asked);
    with masking it is plain SGD. Parameters may be float32 or float64; the
    sparse wire values are f32 (or fp16), the dense path keeps the dtype.
    """

    def __init__(self, params: Iterable[Any], comm: Any, density: float = 0.001, momentum: float = 0.9,
                 nesterov: bool = False, clip_norm: Optional[float] = None,
                 warmup_densities: Sequence[float] = (0.25, 0.0625, 0.015625, 0.004),
                 warmup_epochs_each: int = 1, momentum_masking: bool = True, average: bool = True,
                 sample_rate: float = 0.01, fp16_values: bool = False, exchange: str = "auto",
                 seed: int = 0):
        import torch  # torch is an optional dependency of the package

        self._torch = torch
        self.params = [p for p in params if p.requires_grad]
        if not self.params:
            raise InvalidArgumentError("DGC: no parameters that require grad")
        if not 0.0 < density <= 1.0:
            raise InvalidArgumentError(f"DGC: density must be in (0, 1], got {density}")
        if exchange not in ("auto", "sparse", "dense"):
            raise InvalidArgumentError(f"DGC: exchange must be 'auto', 'sparse' or 'dense', got {exchange!r}")
        if any(not 0.0 < d <= 1.0 for d in warmup_densities):
            raise InvalidArgumentError(f"DGC: warm-up densities must be in (0, 1], got {tuple(warmup_densities)}")
        if warmup_epochs_each < 1:
            raise InvalidArgumentError("DGC: warmup_epochs_each must be >= 1")
        for p in self.params:
            if p.dtype not in (torch.float32, torch.float64):
                raise InvalidArgumentError(f"DGC: parameters must be float32 or float64, got {p.dtype}")
        self.comm = comm
        self.density = density
        self.momentum = momentum
        self.nesterov = nesterov
        self.clip_norm = clip_norm
        self.warmup_densities = tuple(warmup_densities)
        self.warmup_epochs_each = warmup_epochs_each
        self.momentum_masking = momentum_masking
        self.average = average
        self.sample_rate = sample_rate
        self.fp16_values = fp16_values
        self.exchange = exchange
        self.seed = seed
        self.epoch = 0
        self.steps = 0
        # u: momentum, v: velocity accumulator (the error-feedback residual), flat, param dtype.
        self.state: List[Dict[str, Any]] = [
            {"u": torch.zeros(p.numel(), dtype=p.dtype, device=p.device),
             "v": torch.zeros(p.numel(), dtype=p.dtype, device=p.device)} for p in self.params]

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    @property
    def current_density(self) -> float:
        """The warm-up density of this epoch (never below the target density)."""
        i = self.epoch // self.warmup_epochs_each
        if i < len(self.warmup_densities):
            return max(self.warmup_densities[i], self.density)
        return self.density

    def step(self) -> Dict[str, Any]:
        """Synchronises gradients; every member must call it in the same step.
        Returns {"mode", "density", "selected", "n", "bytes"} (bytes: this
        member's payload: its sparse set, or the dense tensor)."""
        torch = self._torch
        ws = _world_size(self.comm)
        m = self.momentum
        grads = [p.grad.detach().reshape(-1) if p.grad is not None else torch.zeros_like(s["u"])
                 for p, s in zip(self.params, self.state)]
        if self.clip_norm is not None:
            total = math.sqrt(sum(float(g.double().pow(2).sum()) for g in grads))
            max_norm = self.clip_norm / math.sqrt(ws)
            if total > max_norm:
                coef = max_norm / (total + 1e-6)
                grads = [g * coef for g in grads]
        for g, s in zip(grads, self.state):
            u, v = s["u"], s["v"]
            u.mul_(m).add_(g)
            if self.nesterov:
                v.add_(g).add_(u, alpha=m)
            else:
                v.add_(u)

        d = self.current_density
        sizes = [p.numel() for p in self.params]
        n_total = sum(sizes)
        ks = [int(_core.topk_target(d, n)) for n in sizes]
        k_total = sum(ks)
        elem = max(p.element_size() for p in self.params)
        if self.exchange == "auto":
            sparse = sparse_exchange_is_cheaper(n_total, k_total, ws, elem, self.fp16_values)
        else:
            sparse = self.exchange == "sparse"

        # Selection per parameter (layer-wise top-k as in the paper).
        selected: List[Optional[torch.Tensor]] = []  # None: everything selected
        idx_np: List[np.ndarray] = []
        vals_np: List[np.ndarray] = []  # f32 values at idx_np (sparse wire values)
        for i, (s, k, n) in enumerate(zip(self.state, ks, sizes)):
            if k >= n:
                selected.append(None)
                idx_np.append(np.arange(n, dtype=np.int64))
                vals_np.append(_flat_f32(s["v"]) if sparse else np.empty(0, np.float32))
            else:
                idx, vals = _core.topk_select(_flat_f32(s["v"]), d, self.seed + 7919 * self.steps + i,
                                              self.sample_rate)
                idx_np.append(idx)
                vals_np.append(vals)
                selected.append(torch.from_numpy(idx).to(s["v"].device))
        self.steps += 1

        if sparse:
            offsets = np.cumsum([0] + sizes[:-1])
            all_idx = np.concatenate([ix + off for ix, off in zip(idx_np, offsets)])
            vals32 = np.concatenate(vals_np)
            blob = _core.sparse_encode(all_idx, vals32, n_total, self.fp16_values)
            sent_all = _core.sparse_decode(blob)[1] if self.fp16_values else vals32
            pos = 0
            for s, ix, sel in zip(self.state, idx_np, selected):
                sent = torch.from_numpy(sent_all[pos:pos + len(ix)]).to(s["v"])
                pos += len(ix)
                if sel is None:
                    s["v"].sub_(sent)
                    if self.momentum_masking:
                        s["u"].zero_()
                else:
                    s["v"].index_add_(0, sel, sent, alpha=-1)
                    if self.momentum_masking:
                        s["u"].index_fill_(0, sel, 0)
            blobs = self.comm.all_gather_bytes(blob)
            total = torch.from_numpy(_core.sparse_sum(list(blobs), n_total))
            payload = len(blob)
        else:
            sends = []
            for s, sel in zip(self.state, selected):
                if sel is None:
                    send = s["v"].clone()
                    s["v"].zero_()
                    if self.momentum_masking:
                        s["u"].zero_()
                else:
                    send = torch.zeros_like(s["v"])
                    send[sel] = s["v"][sel]
                    s["v"].index_fill_(0, sel, 0)
                    if self.momentum_masking:
                        s["u"].index_fill_(0, sel, 0)
                sends.append(send)
            dtype = torch.float64 if any(p.dtype == torch.float64 for p in self.params) else torch.float32
            total = torch.cat([x.to(dtype) for x in sends])
            self.comm.all_reduce(total, op="sum")
            payload = total.numel() * total.element_size()
        if self.average and ws > 1:
            total = total / ws
        pos = 0
        for p, n in zip(self.params, sizes):
            g = total[pos:pos + n].reshape(p.shape).to(device=p.device, dtype=p.dtype)
            pos += n
            if p.grad is None:
                p.grad = g.clone()
            else:
                p.grad.copy_(g)
        return {"mode": "sparse" if sparse else "dense", "density": d, "selected": k_total,
                "n": n_total, "bytes": payload}


@dataclass
class FedZipPayload:
    """Encoded tensors plus what decoding and the ratio report need."""

    blobs: Dict[str, bytes]
    shapes: Dict[str, Tuple[int, ...]]
    raw_bytes: Dict[str, int] = field(default_factory=dict)  # f32 size of each tensor

    @property
    def ratios(self) -> Dict[str, float]:
        """Per tensor: f32 bytes / encoded bytes."""
        return {k: self.raw_bytes[k] / max(1, len(b)) for k, b in self.blobs.items()}

    @property
    def ratio(self) -> float:
        """Overall: all f32 bytes / all encoded bytes."""
        return sum(self.raw_bytes.values()) / max(1, sum(len(b) for b in self.blobs.values()))

    @property
    def nbytes(self) -> int:
        return sum(len(b) for b in self.blobs.values())


class FedZip:
    """FedZip (Malekijoo et al., 2021): top-z sparsification per tensor,
    k-means of the kept values into ``clusters`` centroids, then Huffman-coded
    cluster symbols or per-cluster difference-of-address positions, whichever
    is smaller. Tensors with at most one dimension (biases, norms) are kept
    dense (z = 1) when ``dense_bias``; they are still clustered.
    """

    def __init__(self, density: float = 0.01, clusters: int = 3, dense_bias: bool = True):
        if not 0.0 < density <= 1.0:
            raise InvalidArgumentError(f"FedZip: density must be in (0, 1], got {density}")
        self.density = density
        self.clusters = clusters
        self.dense_bias = dense_bias

    def _density_for(self, shape: Tuple[int, ...]) -> float:
        return 1.0 if self.dense_bias and len(shape) <= 1 else self.density

    def encode(self, tensors: Mapping[str, Any]) -> FedZipPayload:
        blobs, shapes, raw = {}, {}, {}
        for name, t in tensors.items():
            shape = tuple(t.shape)
            flat = _flat_f32(t)
            blobs[name] = _core.fedzip_encode(flat, self._density_for(shape), self.clusters)
            shapes[name] = shape
            raw[name] = 4 * flat.size
        return FedZipPayload(blobs, shapes, raw)

    def quantized(self, tensors: Mapping[str, Any]) -> Dict[str, np.ndarray]:
        """What decode(encode(tensors)) gives, computed without encoding."""
        return {name: _core.fedzip_quantize(_flat_f32(t), self._density_for(tuple(t.shape)),
                                            self.clusters).reshape(tuple(t.shape))
                for name, t in tensors.items()}

    @staticmethod
    def decode(payload: FedZipPayload) -> Dict[str, np.ndarray]:
        out = {}
        for name, blob in payload.blobs.items():
            shape = payload.shapes[name]
            flat = _core.fedzip_decode(blob, int(np.prod(shape, dtype=np.int64)))
            if flat.size != int(np.prod(shape, dtype=np.int64)):
                raise ProtocolError(f"FedZip: tensor {name!r} decodes to {flat.size} values, shape is {shape}")
            out[name] = flat.reshape(shape)
        return out
