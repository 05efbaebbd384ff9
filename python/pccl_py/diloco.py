"""DiLoCo and Streaming DiLoCo: wrap any torch optimizer (the inner one) and
train across unreliable machines, syncing every ``sync_every`` steps.

Every ``H`` inner steps (per fragment, on the schedule computed in C++ by
``_core.DilocoSchedule``):

1. pseudo-gradient = global - local (f32, on the CPU, into the fragment's one
   exchange buffer);
2. membership point: ``update_topology()`` admits joiners that asked and drops
   the dead, then ``sync_state`` on {global params, outer momentum, sync
   descriptor} at the current revision, so a newcomer receives everything;
3. average of the pseudo-gradient over the current members, in place in the
   same buffer: a dense all-reduce (optionally quantized, ``quant=``), or with
   ``compressor=`` a sparse all-gather of each member's top-k set, summed in
   rank order (bit-identical everywhere); in the background for
   ``overlap_steps`` inner steps when > 0 (dense only, piece by piece on a
   thread of the wrapper: the sparse exchange is blocking, the result is still
   applied ``overlap_steps`` later);
4. outer SGD (Nesterov) step on the global copy (C kernel, one rounding per op:
   members stay bit-identical), local params := alpha*local + (1-alpha)*global.

A peer lost during 2-3 makes every survivor redo 2-3 on the new view (the
pseudo-gradient snapshot is kept; an overlapped sync redoes only the pieces it
had not finished); a world of one keeps training alone.

Joining mid-run: a peer that is not yet a member asks to be admitted in its
first ``step()`` (creating the Communicator only connects, so a joiner may load
its model for as long as it likes) and blocks until the members' next sync
admits it, receives the state, adopts the members' step counter and takes part
in the sync in progress with weight 0 (its pseudo-gradient is zero and the
average is rescaled to the contributing members, using one tiny extra
all-reduce only when the view changed). A peer that is already a member when it
wraps (``comm.wait_for_peers(n)`` or its own ``update_topology()`` first) syncs
the state with the others at its first ``step()``.

Checkpoints: ``state_dict()`` follows torch's layout ("state" and
"param_groups" of the inner optimizer) plus a "diloco" entry (global copy,
outer momentum, step, revision, a completed sync not yet applied, the
compressor's residuals). Save it with the model at any step; a wrapper built
the same way, after ``model.load_state_dict`` and ``opt.load_state_dict``,
continues exactly as the uninterrupted run would (bit-identical at world size
1 and when every peer of the run resumes from its checkpoint of the same step;
a single restarted peer rejoins the run and adopts its state).

Threading: a wrapper is used from one thread (the training loop). It borrows
the communicator; nothing else may run collectives on it with tags
``TAG_BASE .. TAG_BASE + fragments`` meanwhile.
"""

from __future__ import annotations

import collections
import itertools
import threading
from dataclasses import dataclass
from typing import Any, Callable, Dict, Iterable, List, Optional, Sequence

import numpy as np
import torch

from . import _core
from .communicator import SyncInfo
from .errors import InvalidArgumentError, PeerLostError

DilocoSchedule = _core.DilocoSchedule
TAG_BASE = 0x44490000  # "DI" << 16: all-reduce tags of the wrapper (one per fragment)
_COUNT_TAG = TAG_BASE - 1
_STATE_VERSION = 1
_VERSIONS = itertools.count(1)  # content versions of global copies (never reused in a process)
# A blocking sync exchanges a fragment in pieces of about 1/_PIECES of it,
# between _PIECE_MIN and _PIECE_MAX elements (4 and 64 MB of f32), with
# _IN_FLIGHT pieces on the wire at once so one piece's round trips overlap
# the next one's transfer. Its extra memory is _IN_FLIGHT pieces.
_PIECES = 32
_PIECE_MIN = 1 << 20
_PIECE_MAX = 16 << 20
_IN_FLIGHT = 2
_PIECE_TAG = TAG_BASE + 0x8000  # the second tag of a fragment's blocking sync (odd pieces)
# The descriptor's "piece" of an overlapped sync redone at its apply step (a
# peer was lost): the pieces it had finished are the set bits of "diloco.done".
_REDO = -1


def outer_step_f32(global_: torch.Tensor, pseudograd: torch.Tensor, momentum_buf: Optional[torch.Tensor],
                   lr: float, momentum: float, nesterov: bool) -> None:
    """In-place outer SGD step on flat f32 CPU tensors (the C kernel
    ``pccl_outer_step_f32``); same math as torch.optim.SGD without dampening."""
    n = global_.numel()
    for name, t in (("global", global_), ("pseudograd", pseudograd), ("momentum_buf", momentum_buf)):
        if t is None:
            continue
        if t.dtype != torch.float32 or t.device.type != "cpu" or not t.is_contiguous() or t.numel() != n:
            raise InvalidArgumentError(f"{name} must be a contiguous f32 CPU tensor of {n} elements")
    if momentum != 0.0 and momentum_buf is None:
        raise InvalidArgumentError("momentum_buf is required when momentum != 0")
    _core.outer_step_f32(global_.data_ptr(), pseudograd.data_ptr(),
                         momentum_buf.data_ptr() if momentum_buf is not None else 0, n, float(lr), float(momentum),
                         bool(nesterov))


class _Removed(Exception):
    """The other members removed this peer (it was frozen or cut off for
    longer than their heartbeat timeout): it rejoins like a joiner."""


def _sync_state(comm: Any, state: Dict[str, torch.Tensor], revision: int,
                versions: Optional[Dict[str, int]] = None) -> SyncInfo:
    if comm.world_size == 0:  # removed by the others (e.g. while frozen): the caller asks to join again
        raise PeerLostError("sync_state: this peer is not a member of the run; call update_topology() to join")
    if comm.world_size == 1:
        return SyncInfo(0, 0, revision, 0, 0, 1)
    return comm.sync_state(state, revision, versions=versions)


def strided_fragments(model: Any, fragments: int) -> List[List[torch.nn.Parameter]]:
    """Default split: layer i (a module owning parameters directly) goes to
    fragment i % P, so every fragment spans the whole depth (Streaming DiLoCo's
    strided pattern). With fewer layers than fragments, tensors are strided."""
    if isinstance(model, torch.nn.Module):
        layers = [[p for p in m.parameters(recurse=False) if p.requires_grad] for m in model.modules()]
        layers = [ps for ps in layers if ps]
    else:
        layers = [[p] for p in model if p.requires_grad]
    if len(layers) < fragments:
        layers = [[p] for ps in layers for p in ps]
    if len(layers) < fragments:
        raise InvalidArgumentError(
            f"cannot split {len(layers)} parameter tensors into {fragments} non-empty fragments; "
            f"use fewer fragments or pass fragment_fn")
    out: List[List[torch.nn.Parameter]] = [[] for _ in range(fragments)]
    for i, ps in enumerate(layers):
        out[i % fragments].extend(ps)
    return out


class _Fragment:
    """The global copy (and outer momentum) of one group of parameters, and
    the exchange buffer of its sync while one is in flight (None otherwise)."""

    def __init__(self, params: List[torch.nn.Parameter], device: torch.device, momentum: float):
        self.params = params
        self.numel = sum(p.numel() for p in params)
        # Device hook: params on CUDA with the global copy on the host get it in
        # pinned memory, so that resetting them is an asynchronous copy (below).
        self._async_reset = device.type == "cpu" and any(p.device.type == "cuda" for p in params)
        self._reset_done: Any = None  # CUDA event of the last asynchronous reset
        self.global_ = torch.empty(self.numel, dtype=torch.float32, device=device, pin_memory=self._async_reset)
        self._each(self.global_, lambda g, p: g.copy_(p.detach()))
        self.momentum = torch.zeros(self.numel, dtype=torch.float32, device=device) if momentum != 0.0 else None
        self.buf: Optional[torch.Tensor] = None  # pseudo-gradient, then (in place) its average
        # Of global_ and momentum: a new process-wide number whenever they change
        # (sync_state skips re-hashing a tensor whose memory and version it saw).
        self.version = next(_VERSIONS)

    def _each(self, flat: torch.Tensor, fn: Callable[[torch.Tensor, torch.Tensor], Any]) -> None:
        off = 0
        for p in self.params:
            n = p.numel()
            fn(flat[off:off + n].view(p.shape), p)
            off += n

    def pseudo_gradient(self) -> torch.Tensor:
        """global - local of the whole fragment into a fresh CPU f32 buffer."""
        return self.pseudo_gradient_range(0, self.numel)

    @torch.no_grad()
    def reset_local(self) -> None:
        self._each(self.global_, lambda g, p: p.copy_(g, non_blocking=self._async_reset))
        self._record_reset()

    def _record_reset(self) -> None:
        """After host-to-device resets from the pinned global copy: they run
        behind the work queued on the stream while the CPU goes on (the next
        inner steps queue after them)."""
        if self._async_reset:
            self._reset_done = torch.cuda.Event()
            self._reset_done.record()

    def fence(self) -> None:
        """Waits for the asynchronous resets still reading the global copy;
        called before anything writes it (outer step, sync_state, loading)."""
        if self._reset_done is not None:
            self._reset_done.synchronize()
            self._reset_done = None

    def pieces(self) -> List[tuple]:
        """(lo, hi) ranges of the flat fragment that a blocking sync exchanges
        in order: about _PIECES of them, each of _PIECE_MIN.._PIECE_MAX
        elements (one range when a parameter is not contiguous)."""
        if not all(p.is_contiguous() for p in self.params):
            return [(0, self.numel)]
        return self.buf_pieces()

    def buf_pieces(self) -> List[tuple]:
        """The same ranges for an exchange that only touches the fragment's
        own buffer (an overlapped sync): any parameter layout."""
        size = min(_PIECE_MAX, max(_PIECE_MIN, -(-self.numel // _PIECES)))
        return [(lo, min(self.numel, lo + size)) for lo in range(0, self.numel, size)] or [(0, 0)]

    def _segments(self, lo: int, hi: int):
        """(flat view of a parameter's part, its offset in the fragment) for [lo, hi)."""
        off = 0
        for p in self.params:
            n = p.numel()
            a, b = max(lo, off), min(hi, off + n)
            if a < b:  # a view for contiguous params (pieces() guarantees them for writing)
                yield p.detach().reshape(-1)[a - off:b - off], a
            off += n

    @torch.no_grad()
    def pseudo_gradient_range(self, lo: int, hi: int, out: Optional[torch.Tensor] = None) -> torch.Tensor:
        """global - local of [lo, hi) into ``out`` (hi - lo f32 elements) or a new buffer."""
        buf = torch.empty(hi - lo, dtype=torch.float32) if out is None else out
        for local, a in self._segments(lo, hi):
            g = self.global_[a:a + local.numel()]
            out = buf[a - lo:a - lo + local.numel()]
            if g.device.type == "cpu":
                torch.sub(g, local.to("cpu", torch.float32), out=out)
            else:
                out.copy_(g - local.to(g.device, torch.float32))
        return buf

    @torch.no_grad()
    def reset_local_range(self, lo: int, hi: int) -> None:
        if (lo, hi) == (0, self.numel):
            return self.reset_local()
        for local, a in self._segments(lo, hi):
            local.copy_(self.global_[a:a + local.numel()], non_blocking=self._async_reset)
        self._record_reset()

    @torch.no_grad()
    def merge_local(self, alpha: float) -> None:
        """local = alpha*local + (1-alpha)*global (the C kernel, per parameter)."""
        glob = self.global_.cpu()
        off = 0
        for p in self.params:
            n = p.numel()
            local = p.detach().reshape(-1).to("cpu", torch.float32).clone()
            _core.diloco_merge_f32(local.data_ptr(), glob[off:off + n].data_ptr(), n, alpha)
            p.copy_(local.view(p.shape))
            off += n


@dataclass
class _InFlight:
    fragment: int
    apply_at: int
    handle: Any  # _PieceExchange, or None once the average is in the fragment's buf
    scale: float  # applied to the average at _apply: world / contributing members
    weight: float  # 1: our pseudo-gradient counts; 0: we joined during this sync
    done: Optional[List[bool]] = None  # per buf_pieces() range of a dense sync: averaged (and scaled)


class _PieceExchange:
    """In-place average of the pieces ``todo`` of a fragment's exchange buffer
    (``buf_pieces`` ranges), _IN_FLIGHT of them on the wire at once, each
    scaled by ``scale`` as it completes and marked in ``done``. On a thread of
    its own when ``background`` (an overlapped sync: training goes on), else
    on the caller's.

    Each piece keeps the core's backup of its input (the pseudo-gradient
    cannot be recomputed: the local params have moved on), so the extra
    memory is _IN_FLIGHT pieces, not a second copy of the fragment. Every op
    is all or nothing on every member, so ``done`` is the same everywhere; a
    lost peer fails the pieces in flight (the core restores their input),
    no further piece starts, and wait() raises the PeerLostError: a redo
    exchanges the pieces not done."""

    def __init__(self, comm: Any, buf: torch.Tensor, pieces: List[tuple], todo: List[int], fragment: int,
                 scale: float, quant: Optional[str], done: List[bool], background: bool):
        self._comm, self._buf, self._pieces, self._todo = comm, buf, pieces, list(todo)
        self._fragment, self._scale, self._quant, self.done = fragment, scale, quant, done
        self.tx_bytes = self.rx_bytes = 0
        self._error: Optional[BaseException] = None
        self._thread: Optional[threading.Thread] = None
        if background:
            self._thread = threading.Thread(target=self._run, name="pccl-diloco-sync", daemon=True)
            self._thread.start()
        else:
            self._run()

    def _run(self) -> None:
        kw = {"quant": self._quant} if self._quant is not None else {}
        inflight: collections.deque = collections.deque()
        todo = collections.deque(self._todo)
        issued = 0
        while todo or inflight:
            while todo and len(inflight) < _IN_FLIGHT and self._error is None:
                k = todo.popleft()
                lo, hi = self._pieces[k]
                tag = (_PIECE_TAG if issued % 2 else TAG_BASE) + self._fragment  # same sequence on every member
                issued += 1
                try:
                    inflight.append((k, self._comm.all_reduce_async(self._buf[lo:hi], op="avg", tag=tag, **kw)))
                except BaseException as e:  # reported by wait(); the ops in flight are still waited for
                    self._error = e
            if not inflight:
                break
            k, handle = inflight.popleft()
            try:
                info = handle.wait()
            except BaseException as e:
                self._error = self._error or e
                continue
            self.tx_bytes += int(info.tx_bytes)
            self.rx_bytes += int(info.rx_bytes)
            lo, hi = self._pieces[k]
            if self._scale != 1.0:
                self._buf[lo:hi].mul_(self._scale)
            self.done[k] = True

    def wait(self) -> None:
        """Until every piece ended; raises the first error (PeerLostError: a
        peer was lost, ``done`` marks the pieces that completed)."""
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        if self._error is not None:
            err, self._error = self._error, None
            raise err


class StreamingDiLoCo(torch.optim.Optimizer):
    """Streaming DiLoCo around an inner torch optimizer (see module doc).

    A ``torch.optim.Optimizer`` sharing the inner optimizer's ``param_groups``
    and ``state``: LR schedulers (``StepLR(opt, ...)``), optimizer hooks and
    gradient-clipping code see one optimizer, and a scheduler drives the inner
    LR. ``fragments`` P groups of parameters (``fragment_fn(model, P)`` or
    strided over layers) sync on staggered offsets, each every ``sync_every``
    inner steps; a fragment's all-reduce overlaps ``overlap_steps`` (tau) inner
    steps; the result is merged into the local params by ``alpha`` (0: take
    the global).

    Outer-gradient compression (one of them): ``quant`` ("fp16", "bf16",
    "int8", "int4", "e3m0") quantizes every hop of the dense all-reduce;
    ``compressor`` (``pc.TopK(density=...)``, ``pc.QuantizedTopK(...)``) sends
    only each member's top-k entries of its pseudo-gradient (plus its
    error-feedback residual, kept locally and added next sync), exchanged by a
    sparse all-gather and summed in rank order on every member.

    Memory: the global copy and the outer momentum (f32, on ``outer_device``)
    for the whole run, plus, while a fragment's sync is in flight, its f32
    pseudo-gradient (averaged in place, freed once applied) and the core's
    backup of the two pieces of it on the wire (to redo them on the
    survivors if a peer is lost); a blocking sync needs only two pieces.
    """

    def __init__(self, model: Any, inner: torch.optim.Optimizer, comm: Any, sync_every: int = 100,
                 fragments: int = 4, overlap_steps: int = 1, alpha: float = 0.0,
                 fragment_fn: Optional[Callable[[Any, int], Sequence[Sequence[torch.nn.Parameter]]]] = None,
                 outer_lr: float = 0.7, outer_momentum: float = 0.9, nesterov: bool = True,
                 quant: Optional[str] = None, compressor: Any = None, outer_device: str = "cpu"):
        if not 0.0 <= alpha <= 1.0:
            raise InvalidArgumentError(f"alpha must be in [0, 1], got {alpha}")
        if quant is not None and compressor is not None:
            raise InvalidArgumentError("pass quant= or compressor=, not both")
        if compressor is not None and not (hasattr(compressor, "compress") and hasattr(compressor, "sum_sets")):
            raise InvalidArgumentError(
                f"compressor must be a pccl_py TopK or QuantizedTopK (compress/sum_sets), got {type(compressor).__name__}")
        if not isinstance(inner, torch.optim.Optimizer):
            raise InvalidArgumentError(f"inner must be a torch.optim.Optimizer, got {type(inner).__name__}")
        self.schedule = DilocoSchedule(int(sync_every), int(fragments), int(overlap_steps))
        # The base class sets up hooks and the profiled step(); then the groups
        # and the state are the inner optimizer's own objects (shared, not copied).
        torch.optim.Optimizer.__init__(self, inner.param_groups, inner.defaults)
        self.param_groups = inner.param_groups
        self.state = inner.state
        self.inner = inner
        self.comm = comm
        self.alpha = float(alpha)
        self.outer_lr = float(outer_lr)
        self.outer_momentum = float(outer_momentum)
        self.nesterov = bool(nesterov)
        self.quant = quant
        self.compressor = compressor
        self.outer_device = torch.device(outer_device)
        groups = fragment_fn(model, fragments) if fragment_fn is not None else strided_fragments(model, fragments)
        groups = [list(g) for g in groups]
        if len(groups) != fragments or any(not g for g in groups):
            raise InvalidArgumentError(f"fragment_fn must return {fragments} non-empty parameter lists")
        seen = set()
        for g in groups:
            for p in g:
                if id(p) in seen:
                    raise InvalidArgumentError("a parameter appears in two fragments")
                seen.add(id(p))
        self.fragments = [_Fragment(g, self.outer_device, self.outer_momentum) for g in groups]
        # Sync descriptor shared through sync_state: [step, fragment in flight or -1, apply_at,
        # first piece still to exchange (blocking syncs), or _REDO], and with _REDO the
        # buf_pieces() of the fragment that its first attempt finished (1) in "diloco.done".
        self._meta = torch.tensor([0, -1, 0, 0], dtype=torch.int64)
        self._done = torch.zeros(max(len(f.buf_pieces()) for f in self.fragments), dtype=torch.uint8)
        self._step = 0  # completed inner steps
        self._revision = 0  # applied outer syncs + 1 once joined (0: fresh)
        self._joined = False
        self._epoch_seen: Optional[int] = None
        self._inflight: Optional[_InFlight] = None
        self.tx_bytes = 0  # payload bytes this peer sent / received for DiLoCo (all-reduces + state sync)
        self.rx_bytes = 0
        self.outer_syncs = 0  # fragment syncs applied here
        self.retries = 0  # sync attempts redone after a lost peer
        self.comm_wait_s = 0.0  # time blocked in communication inside step()

    # -- optimizer surface ---------------------------------------------------------
    @property
    def step_count(self) -> int:
        return self._step

    def zero_grad(self, set_to_none: bool = True) -> None:
        self.inner.zero_grad(set_to_none=set_to_none)

    def step(self, closure: Optional[Callable[[], Any]] = None) -> Any:
        """One inner step, then whatever outer work the schedule puts after it.
        A peer that is not yet a member first asks to join and blocks until
        admitted; if it then received the run's state it drops this step's
        gradient (its params were replaced)."""
        if not self._joined and self._join():
            return None
        loss = self.inner.step(closure) if closure is not None else self.inner.step()
        self._step += 1
        try:
            self._after_inner_step()
        except _Removed:
            # Whatever was in flight is void: ask to join again, then adopt
            # the run's state and step counter (and its sync in progress).
            self._inflight = None
            for f in self.fragments:
                f.buf = None
            self._epoch_seen = None
            self._join()
        return loss

    def state_dict(self) -> Dict[str, Any]:
        """torch's optimizer layout ("state", "param_groups": the inner
        optimizer's) plus "diloco": everything needed to resume exactly. A
        sync in flight is waited for (not applied: it is saved and applied at
        its step after loading)."""
        self._settle()
        sd = dict(self.inner.state_dict())
        inf = self._inflight
        sd["diloco"] = {
            "version": _STATE_VERSION,
            "schedule": (int(self.schedule.sync_every), int(self.schedule.fragments),
                         int(self.schedule.overlap_steps)),
            "step": self._step,
            "revision": self._revision,
            "meta": self._meta.clone(),
            "global": [f.global_.detach().cpu().clone() for f in self.fragments],
            "momentum": [None if f.momentum is None else f.momentum.detach().cpu().clone() for f in self.fragments],
            "inflight": None if inf is None else {
                "fragment": inf.fragment, "apply_at": inf.apply_at, "scale": inf.scale, "weight": inf.weight,
                "average": self.fragments[inf.fragment].buf.clone()},
            "compressor": self.compressor.state_dict() if self.compressor is not None else None,
            "outer_syncs": self.outer_syncs,
        }
        return sd

    def load_state_dict(self, state_dict: Dict[str, Any]) -> None:
        """Restores a state_dict() of a wrapper built the same way (same model,
        fragments and schedule). Load the model's own state_dict too: the local
        params are the model's. The next step() syncs with the run."""
        d = state_dict.get("diloco")
        if d is None or d.get("version") != _STATE_VERSION:
            raise InvalidArgumentError("not a pccl_py DiLoCo state_dict (no 'diloco' entry of a known version)")
        sched = (int(self.schedule.sync_every), int(self.schedule.fragments), int(self.schedule.overlap_steps))
        if tuple(d["schedule"]) != sched:
            raise InvalidArgumentError(f"state_dict has schedule {tuple(d['schedule'])}, this wrapper {sched}")
        if len(d["global"]) != len(self.fragments) or any(
                g.numel() != f.numel for g, f in zip(d["global"], self.fragments)):
            raise InvalidArgumentError("state_dict global params do not match the model's fragments")
        if (d["compressor"] is None) != (self.compressor is None):
            raise InvalidArgumentError("state_dict and wrapper differ in having a compressor")
        self._settle()
        self.inner.load_state_dict({"state": state_dict["state"], "param_groups": state_dict["param_groups"]})
        # torch's load_state_dict installs new group and state objects: share those.
        self.param_groups = self.inner.param_groups
        self.state = self.inner.state
        for f, g, m in zip(self.fragments, d["global"], d["momentum"]):
            f.version = next(_VERSIONS)
            f.fence()
            f.global_.copy_(g)
            if f.momentum is not None:
                if m is None:
                    raise InvalidArgumentError("state_dict has no outer momentum but this wrapper uses one")
                f.momentum.copy_(m)
            f.buf = None
        self._meta.copy_(d["meta"])
        self._step = int(d["step"])
        self._revision = int(d["revision"])
        self.outer_syncs = int(d["outer_syncs"])
        self._inflight = None
        inf = d["inflight"]
        if inf is not None:
            f = self.fragments[int(inf["fragment"])]
            f.buf = inf["average"].clone()
            self._inflight = _InFlight(int(inf["fragment"]), int(inf["apply_at"]), None, float(inf["scale"]),
                                       float(inf["weight"]))
        if self.compressor is not None:
            self.compressor.load_state_dict(d["compressor"])
        self._joined = False
        self._epoch_seen = None

    def global_params(self) -> List[torch.Tensor]:
        """The global copy, one flat f32 tensor per fragment (read-only use)."""
        return [f.global_ for f in self.fragments]

    def close(self) -> None:
        """Waits for a sync in flight and applies it."""
        self._drain()

    # -- internals -----------------------------------------------------------------
    def _versions(self) -> Dict[str, int]:
        """Content versions of the shared state (the meta changes every time)."""
        v: Dict[str, int] = {}
        for i, f in enumerate(self.fragments):
            v[f"diloco.global.{i}"] = v[f"diloco.momentum.{i}"] = f.version
        return v

    def _state(self) -> Dict[str, torch.Tensor]:
        """The shared state, for a sync_state (which may overwrite it)."""
        for f in self.fragments:
            f.fence()
        st: Dict[str, torch.Tensor] = {"diloco.meta": self._meta, "diloco.done": self._done}
        for i, f in enumerate(self.fragments):
            st[f"diloco.global.{i}"] = f.global_
            if f.momentum is not None:
                st[f"diloco.momentum.{i}"] = f.momentum
        return st

    def _count(self, info: Any) -> None:
        """Adds the bytes of an op (its OpInfo, SyncInfo or _PieceExchange)."""
        self.tx_bytes += int(info.tx_bytes)
        self.rx_bytes += int(info.rx_bytes)

    # The outer work (membership, network, outer step) is never traced by
    # torch.compile: a compiled training step compiles the inner optimizer's
    # step and runs this eagerly (one graph break), instead of recompiling
    # on every schedule branch or tracing into the communicator.
    @torch.compiler.disable
    def _join(self) -> bool:
        """First step() (also after load_state_dict): become a member if
        needed and sync the shared state. Returns True when this peer adopted
        the run's state (and so drops the step's gradient)."""
        import time
        t0 = time.perf_counter()
        # Not a member yet (world size 0): ask to be admitted; this blocks
        # until the members' next sync (its membership point) lets us in.
        round_needed, failures = self.comm.world_size == 0, 0
        while True:
            try:
                if round_needed:
                    self.comm.update_topology()
                info = _sync_state(self.comm, self._state(), self._revision, self._versions())
                break
            except PeerLostError:
                # A member died meanwhile (the members redo their membership
                # point), or they removed us while we were frozen (we ask again).
                self.retries += 1
                failures += 1
                if failures > 50:
                    raise
                round_needed = True
        self._count(info)
        self._joined = True
        self._revision = max(1, info.revision)
        adopted = info.tensors_received > 0
        if adopted:
            # The run's state replaced ours: local params := global, the
            # members' step counter and the sync they are in, if any.
            for f in self.fragments:
                f.reset_local()
                f.buf = None
            if self.compressor is not None:
                self.compressor.reset()
            self._inflight = None
            step, frag, apply_at, piece = (int(v) for v in self._meta.tolist())
            self._step = step
            if frag >= 0 and piece == _REDO:
                # The members redo an overlapped sync at its apply step (a peer
                # was lost): take the pieces they had finished, join the ops of
                # the others, then do what they do next at this step (apply,
                # maybe start a sync).
                f = self.fragments[frag]
                f.buf = torch.zeros(f.numel, dtype=torch.float32)
                done = [bool(v) for v in self._done[:len(f.buf_pieces())].tolist()]
                inf = _InFlight(frag, apply_at, None, 1.0, 0.0, done)
                self._outer_work(self._redo(inf, synced=True, fresh=True), weight=0.0)
            elif frag >= 0 and self._piecewise(apply_at):  # the members are in a blocking sync: join it
                self._blocking_sync(frag, first_piece=piece, weight=0.0, synced=True)
            elif frag >= 0:  # in the middle of an overlapped sync: take part with weight 0
                self.fragments[frag].buf = torch.zeros(self.fragments[frag].numel, dtype=torch.float32)
                self._launch(frag, apply_at, weight=0.0, synced=True)
        self.comm_wait_s += time.perf_counter() - t0
        return adopted and (self._step > 0 or self._inflight is not None)

    @torch.compiler.disable
    def _after_inner_step(self) -> None:
        import time
        t0 = time.perf_counter()
        ready = None
        if self._inflight is not None and self._inflight.apply_at == self._step:
            ready, self._inflight = self._complete(self._inflight), None
        self._outer_work(ready, weight=1.0)
        self.comm_wait_s += time.perf_counter() - t0

    def _outer_work(self, ready: Optional[_InFlight], weight: float) -> None:
        """What the schedule puts after inner step self._step, once the sync
        due now (``ready``) has completed: apply it, start the next one with
        this peer's ``weight`` (0 for a joiner that adopted the state at this
        step: its pseudo-gradient is void)."""
        t = self._step
        start = self.schedule.fragment_to_start(t)
        overlapped = start >= 0 and not self._piecewise(t + self.schedule.overlap_steps)
        if ready is not None and overlapped and ready.fragment == start and self.alpha == 0.0:
            # Delayed DiLoCo (and tau = H): the fragment's next sync starts as
            # its last one is applied; the new pseudo-gradient takes the
            # average's buffer, piece by piece (one buffer in flight, not two).
            self._apply_into_snapshot(ready)
            self._launch(start, t + self.schedule.overlap_steps, weight=weight)
            return
        snapshot = None  # the pseudo-gradient of an overlapped sync, taken before the apply below
        if overlapped:
            snapshot = self.fragments[start].pseudo_gradient()
        if ready is not None:
            self._apply(ready)
        if start >= 0 and self._piecewise(t + self.schedule.overlap_steps):
            self._blocking_sync(start, weight=weight)
        elif start >= 0:
            self.fragments[start].buf = snapshot
            self._launch(start, t + self.schedule.overlap_steps, weight=weight)

    def _membership(self, fragment: int, apply_at: int, piece: int = 0,
                    done: Optional[List[bool]] = None) -> float:
        """Membership point of a sync attempt; returns this peer's weight
        (0 when it just received the state: its pseudo-gradient is void).
        ``done``: of a redo (piece _REDO), the pieces finished before; on
        return it holds the group's (the winning state's). Raises _Removed
        when the others removed this peer."""
        if self.comm.world_size == 0:
            raise _Removed()
        try:
            self.comm.update_topology()
        except PeerLostError:
            if self.comm.world_size == 0:
                raise _Removed() from None
            raise
        self._meta.copy_(torch.tensor([self._step, fragment, apply_at, piece], dtype=torch.int64))
        self._done.zero_()
        if done is not None:
            self._done[:len(done)] = torch.tensor(done, dtype=torch.uint8)
        info = _sync_state(self.comm, self._state(), self._revision, self._versions())
        self._count(info)
        if done is not None:
            done[:] = [bool(v) for v in self._done[:len(done)].tolist()]
        if info.revision != self._revision:  # we were behind (a healed partition): start over from the winner
            self._revision = info.revision
            for f in self.fragments:
                f.reset_local()
            if self.fragments[fragment].buf is not None:
                self.fragments[fragment].buf.zero_()
            return 0.0
        return 1.0

    def _piecewise(self, apply_at: int) -> bool:
        """Dense syncs applied at the step they start run piece by piece."""
        return self.compressor is None and apply_at == self._step

    def _blocking_sync(self, fragment: int, first_piece: int = 0, weight: float = 1.0,
                       synced: bool = False) -> None:
        """A dense sync applied at once, piece by piece (``_Fragment.pieces``):
        pseudo-gradient of the piece (from the global copy and the local
        params) into one of _IN_FLIGHT reused buffers, in-place average
        without the core's backup copy (two pieces on the wire at once), outer
        step of that piece, its local params := global. Extra memory:
        _IN_FLIGHT pieces. A lost peer fails a piece on every member (each op
        is all or nothing); the pieces after it that were in flight are
        waited for and discarded, and after the membership point the attempt
        resumes at the failed piece, recomputed (the global copy and local
        params of a piece move only once it is applied)."""
        f = self.fragments[fragment]
        pieces = f.pieces()
        left = pieces[first_piece:]
        size = max((hi - lo for lo, hi in left), default=0)
        bufs = [torch.empty(size, dtype=torch.float32) for _ in range(min(_IN_FLIGHT, len(left)))]
        done = [first_piece]  # pieces [first_piece, done[0]) are applied
        while done[0] < len(pieces):
            try:
                if not synced:
                    weight *= self._membership(fragment, self._step, piece=done[0])
                synced = False
                self._exchange_pieces(f, fragment, pieces, done, bufs, weight, self._scale(weight))
            except PeerLostError:
                self.retries += 1
        if self.alpha != 0.0:
            f.merge_local(self.alpha)
        self._revision += 1
        self.outer_syncs += 1

    def _exchange_pieces(self, f: _Fragment, fragment: int, pieces: List[tuple], done: List[int],
                         bufs: List[torch.Tensor], weight: float, scale: float) -> None:
        """Pieces done[0].. of a blocking sync, len(bufs) in flight; done[0]
        advances as each is applied. Raises PeerLostError once the ops in
        flight have ended."""
        kw = {"quant": self.quant} if self.quant is not None else {}
        inflight: collections.deque = collections.deque()
        nxt = done[0]
        try:
            while done[0] < len(pieces):
                while nxt < len(pieces) and len(inflight) < len(bufs):
                    lo, hi = pieces[nxt]
                    buf = bufs[nxt % len(bufs)][:hi - lo]
                    if weight > 0:
                        f.pseudo_gradient_range(lo, hi, out=buf)
                    else:
                        buf.zero_()
                    tag = (_PIECE_TAG if nxt % 2 else TAG_BASE) + fragment
                    inflight.append((nxt, buf, self.comm.all_reduce_async(buf, op="avg", tag=tag, backup=False,
                                                                          **kw)))
                    nxt += 1
                k, buf, handle = inflight.popleft()
                self._count(handle.wait())
                if scale != 1.0:
                    buf.mul_(scale)
                lo, hi = pieces[k]
                self._outer_update_range(f, buf, lo, hi)
                if self.alpha == 0.0:
                    f.reset_local_range(lo, hi)
                done[0] = k + 1
        except PeerLostError:
            for _, _, handle in inflight:  # their results are discarded: the attempt resumes at done[0]
                try:
                    handle.wait()
                except PeerLostError:
                    pass
            raise

    def _attempts(self, fragment: int, apply_at: int, weight: float, synced: bool = False) -> _InFlight:
        """Sync attempts of an overlapped (or compressed) fragment sync until
        one starts (async, when apply_at is ahead) or completes; each attempt
        re-runs the membership point so a lost peer is dropped and a retry
        runs on the survivors (the core restores the buffer of a failed
        all-reduce; a failed sparse exchange leaves it untouched)."""
        f = self.fragments[fragment]
        while True:
            try:
                if not synced:
                    weight *= self._membership(fragment, apply_at)
                synced = False
                scale = self._scale(weight)
                if self.compressor is not None:
                    self._sparse_average(f, fragment, weight, TAG_BASE + fragment)
                    return _InFlight(fragment, apply_at, None, scale, weight)
                pieces = f.buf_pieces()
                done = [False] * len(pieces)
                op = _PieceExchange(self.comm, f.buf, pieces, list(range(len(pieces))), fragment, scale, self.quant,
                                    done, background=True)
                return _InFlight(fragment, apply_at, op, 1.0, weight, done)
            except PeerLostError:
                self.retries += 1

    def _redo(self, inf: _InFlight, synced: bool = False, fresh: bool = False) -> _InFlight:
        """An overlapped dense sync that lost a peer, redone now (blocking) on
        the survivors: membership point (descriptor piece _REDO and the
        pieces done), then the pieces done before are shared with whoever
        lacks them (a joiner admitted here, a peer that was behind: ``fresh``,
        its copy loses), then the other pieces are exchanged over the new
        view. Each element ends averaged over the members of the one attempt
        that completed its piece, the same on every member."""
        f = self.fragments[inf.fragment]
        pieces = f.buf_pieces()
        while True:
            try:
                if not synced:
                    w = self._membership(inf.fragment, inf.apply_at, piece=_REDO, done=inf.done)
                    fresh = fresh or w == 0.0
                    inf.weight *= w
                synced = False
                finished = {f"diloco.piece.{k}": f.buf[lo:hi] for k, (lo, hi) in enumerate(pieces) if inf.done[k]}
                if finished:
                    self._count(_sync_state(self.comm, finished, self._revision - 1 if fresh else self._revision))
                todo = [k for k in range(len(pieces)) if not inf.done[k]]
                op = _PieceExchange(self.comm, f.buf, pieces, todo, inf.fragment, self._scale(inf.weight),
                                    self.quant, inf.done, background=False)
                try:
                    op.wait()
                finally:
                    self._count(op)
                inf.handle = None
                return inf
            except PeerLostError:
                self.retries += 1

    def _sparse_average(self, f: _Fragment, fragment: int, weight: float, tag: int) -> None:
        """buf := (sum over members of their top-k sets) / world, in place.
        The residual is updated only once the exchange succeeded, so a retry
        after a lost peer sends the same set again."""
        comp = self.compressor
        if weight > 0:
            blob, commit = comp.compress_pending(f.buf.numpy(), key=fragment)
        else:
            blob, commit = comp.empty_set(f.numel), None
        if self.comm.world_size <= 1:
            blobs = [blob]
        else:
            blobs, info = self.comm.all_gather_bytes(blob, tag=tag, return_info=True)
            self._count(info)
        if commit is not None:
            commit()
        total = comp.sum_sets(blobs, f.numel)
        world = max(1, len(blobs))
        f.buf.copy_(torch.from_numpy(total))
        if world > 1:
            f.buf.div_(float(world))

    def _launch(self, fragment: int, apply_at: int, weight: float, synced: bool = False) -> None:
        inf = self._attempts(fragment, apply_at, weight, synced)
        if inf.apply_at <= self._step:
            self._apply(self._complete(inf))
        else:
            self._inflight = inf

    def _complete(self, inf: _InFlight) -> _InFlight:
        """Waits for an async sync; on a lost peer redoes it synchronously."""
        if inf.handle is not None:
            op = inf.handle
            try:
                op.wait()
                inf.handle = None
            except PeerLostError:
                self.retries += 1
                inf = self._redo(inf)
            finally:
                self._count(op)
        return inf

    def _settle(self) -> None:
        """Waits for the sync in flight to finish its exchange (not applied)."""
        if self._inflight is not None:
            self._inflight = self._complete(self._inflight)

    def _scale(self, weight: float) -> float:
        """Average over contributing members: needs their count only when the
        view changed since our last sync (a joiner may be in it)."""
        epoch = self.comm.epoch
        changed = epoch != self._epoch_seen
        self._epoch_seen = epoch
        world = max(1, self.comm.world_size)
        if not changed or world == 1:
            return 1.0 if weight > 0 else 0.0
        n = np.array([weight], np.float32)
        self._count(self.comm.all_reduce(n, op="sum", tag=_COUNT_TAG))
        return float(world) / float(n[0]) if n[0] > 0 else 0.0

    def _apply(self, inf: _InFlight) -> None:
        """Outer step of a completed fragment sync, then the merge into local;
        frees the exchange buffer."""
        f = self.fragments[inf.fragment]
        g = f.buf
        if inf.scale != 1.0:
            g.mul_(inf.scale)
        self._outer_update(f, g)
        f.buf = None
        if self.alpha == 0.0:
            f.reset_local()
        else:
            f.merge_local(self.alpha)
        self._revision += 1
        self.outer_syncs += 1

    def _apply_into_snapshot(self, inf: _InFlight) -> None:
        """_apply (alpha 0) of a completed sync of fragment f, and the
        pseudo-gradient of f's next sync, in f's one buffer: per piece, the
        new pseudo-gradient (old global - local) into a piece-sized scratch,
        outer step and reset of that piece, then the piece of the consumed
        average := the scratch. Elementwise, so the same bits as a snapshot of
        the whole fragment before the whole apply; extra memory one piece."""
        f = self.fragments[inf.fragment]
        g = f.buf
        pieces = f.pieces()
        scratch = torch.empty(max(hi - lo for lo, hi in pieces), dtype=torch.float32)
        for lo, hi in pieces:
            avg = g[lo:hi]
            if inf.scale != 1.0:
                avg.mul_(inf.scale)
            snap = f.pseudo_gradient_range(lo, hi, out=scratch[:hi - lo])
            self._outer_update_range(f, avg, lo, hi)
            f.reset_local_range(lo, hi)
            avg.copy_(snap)
        self._revision += 1
        self.outer_syncs += 1

    def _outer_update_range(self, f: _Fragment, g: torch.Tensor, lo: int, hi: int) -> None:
        f.fence()
        f.version = next(_VERSIONS)
        if f.global_.device.type == "cpu":
            outer_step_f32(f.global_[lo:hi], g, None if f.momentum is None else f.momentum[lo:hi], self.outer_lr,
                           self.outer_momentum, self.nesterov)
            return
        g = g.to(f.global_.device)
        d = g
        if f.momentum is not None:
            m = f.momentum[lo:hi]
            m.mul_(self.outer_momentum).add_(g)
            d = g.add(m, alpha=self.outer_momentum) if self.nesterov else m
        f.global_[lo:hi].sub_(d * self.outer_lr)

    def _outer_update(self, f: _Fragment, g: torch.Tensor) -> None:
        self._outer_update_range(f, g, 0, f.numel)

    def _drain(self) -> None:
        if self._inflight is not None:
            inf, self._inflight = self._inflight, None
            self._apply(self._complete(inf))


class DiLoCo(StreamingDiLoCo):
    """DiLoCo (Douillard et al. 2023): every ``sync_every`` inner steps all
    parameters sync at once. ``delayed=True`` is the one-step-delayed outer
    update (PCCL's async DiLoCo): the all-reduce runs during the next H inner
    steps and is applied one outer step late; use a lower outer momentum with
    it (e.g. 0.5-0.7) since the stale update compounds with momentum.
    ``quant`` / ``compressor``: as in StreamingDiLoCo."""

    def __init__(self, model: Any, inner: torch.optim.Optimizer, comm: Any, sync_every: int = 500,
                 outer_lr: float = 0.7, outer_momentum: float = 0.9, nesterov: bool = True,
                 quant: Optional[str] = None, compressor: Any = None, delayed: bool = False,
                 outer_device: str = "cpu"):
        super().__init__(model, inner, comm, sync_every=sync_every, fragments=1,
                         overlap_steps=sync_every if delayed else 0, alpha=0.0,
                         fragment_fn=lambda m, p: [_all_params(m)], outer_lr=outer_lr,
                         outer_momentum=outer_momentum, nesterov=nesterov, quant=quant, compressor=compressor,
                         outer_device=outer_device)
        self.delayed = bool(delayed)


def _all_params(model: Any) -> List[torch.nn.Parameter]:
    ps = model.parameters() if isinstance(model, torch.nn.Module) else model
    return [p for p in ps if p.requires_grad]


__all__ = ["DiLoCo", "DilocoSchedule", "StreamingDiLoCo", "SyncInfo", "outer_step_f32", "strided_fragments"]
