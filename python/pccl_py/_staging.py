"""Collectives on device (CUDA) tensors, staged through pinned host memory.

The core exchanges host memory only and knows nothing of CUDA or libtorch;
this module moves device data through it. An all-reduce of a device tensor
runs chunk by chunk: while the network reduces chunk k (one collective of the
core, on a pinned host buffer), the device-to-host copy of chunk k+1 runs on a
side CUDA stream, and chunk k's result is copied back on that stream while
the next chunk is reduced. Two pinned chunk buffers alternate; the copies are
issued on one stream, so the copy into a buffer is ordered after the copy out
of it that used it last.

The ordering lives in ``run_pipeline``, which takes the device operations as
an object (``CudaOps`` here; the unit tests pass a CPU stand-in whose
"stream" runs copies lazily, so a missing wait reads stale data and fails).

Results: every member gets bit-identical results (each chunk is one
collective of the core). A tensor of at most ``CHUNK_BYTES`` is one
collective, so it gets exactly the result of the same op on a CPU copy. A
larger one is reduced chunk by chunk: at world size 2, and for integer sums,
min and max at any size, still exactly the CPU op's result; a float sum or
average over 3 or more members may round differently from the single CPU op
(the ring's order of addition depends on where an element falls in the
buffer) while staying identical on every member.

Failure: a lost peer fails the chunk in flight on every member. In place with
``backup=True`` (the default) the input is restored from a host copy of the
original (like the core's own backup of a CPU op), so a retry sees it
unchanged; with ``backup=False`` it is undefined, as on the CPU.
"""

from __future__ import annotations

import threading
from typing import Any, Callable, List, Optional, Tuple

CHUNK_BYTES = 64 << 20  # bytes per staged collective (one core op each; an op costs a few round trips)


def is_device_tensor(x: Any) -> bool:
    """A torch tensor on a CUDA device (the devices staged here)."""
    return type(x).__module__.startswith("torch") and hasattr(x, "device") and x.device.type == "cuda"


class CudaOps:
    """Device operations of the pipeline on one CUDA device: copies on a side
    stream, which first waits for the work queued so far on the current
    stream (the producer of the input)."""

    def __init__(self, device: Any):
        import torch
        self.torch = torch
        self.device = device
        self.stream = torch.cuda.Stream(device=device)

    def host_buffer(self, count: int, dtype: Any) -> Any:
        return self.torch.empty(count, dtype=dtype, pin_memory=True)

    def begin(self) -> None:
        self.stream.wait_stream(self.torch.cuda.current_stream(self.device))

    def _copy(self, dst: Any, src: Any) -> Any:
        with self.torch.cuda.stream(self.stream):
            dst.copy_(src, non_blocking=True)
            ev = self.torch.cuda.Event()
            ev.record(self.stream)
        return ev

    def d2h(self, dst: Any, src: Any) -> Any:
        return self._copy(dst, src)

    def h2d(self, dst: Any, src: Any) -> Any:
        return self._copy(dst, src)

    def wait(self, token: Any) -> None:
        token.synchronize()

    def end(self) -> None:
        """All copies done; later work on the current stream sees the results."""
        self.stream.synchronize()
        self.torch.cuda.current_stream(self.device).wait_stream(self.stream)


def chunk_bounds(count: int, chunk: int) -> List[Tuple[int, int]]:
    if chunk < 1:
        raise ValueError("chunk must be >= 1 element")
    return [(lo, min(count, lo + chunk)) for lo in range(0, count, chunk)] or [(0, 0)]


def run_pipeline(ops: Any, src: Any, dst: Any, chunk: int, net: Callable[[Any], None],
                 backup: Optional[Any] = None, progress: Optional[List[int]] = None) -> None:
    """Stages flat device tensor ``src`` through two pinned host chunk
    buffers: d2h(k+1) is issued before net(k) runs, h2d(k) right after it,
    all copies on the ops' one stream. ``net(host_chunk)`` reduces a chunk in
    place (blocking); results land in flat ``dst`` (``src`` itself in place).
    ``backup`` (a host tensor like ``src``) receives the originals of the
    chunks as they arrive; ``progress[0]`` is then the end of what it holds.
    An exception from net() propagates after every
    copy issued so far completed (no copy is left reading or writing)."""
    bounds = chunk_bounds(src.numel(), chunk)
    width = bounds[0][1] - bounds[0][0]
    bufs = [ops.host_buffer(width, src.dtype) for _ in range(min(2, len(bounds)))]

    def into(k: int) -> Any:
        lo, hi = bounds[k]
        return bufs[k % 2][:hi - lo]

    ops.begin()
    try:
        ready = ops.d2h(into(0), src[bounds[0][0]:bounds[0][1]])
        for k, (lo, hi) in enumerate(bounds):
            # Buffer (k+1)%2 was last read by h2d(k-1), issued before on the same stream.
            nxt = ops.d2h(into(k + 1), src[bounds[k + 1][0]:bounds[k + 1][1]]) if k + 1 < len(bounds) else None
            ops.wait(ready)
            host = into(k)
            if backup is not None:
                backup[lo:hi].copy_(host)
                if progress is not None:
                    progress[0] = hi
            net(host)
            ops.h2d(dst[lo:hi], host)
            ready = nxt
    finally:
        ops.end()


def _flat(x: Any) -> Any:
    if not x.is_contiguous():
        from .errors import InvalidArgumentError
        raise InvalidArgumentError("device tensor is not contiguous: pass x.contiguous()")
    return x.detach().view(-1)


def all_reduce(comm: Any, x: Any, op: str = "sum", *, out: Any = None, tag: int = 0, retry: bool = False,
               backup: bool = True, chunk_bytes: Optional[int] = None, ops: Any = None, **kw) -> Any:
    """Communicator.all_reduce of a device tensor (module doc). ``ops``: the
    device operations (default CudaOps of x's device); ``chunk_bytes``:
    bytes per staged collective (default CHUNK_BYTES). Returns the OpInfo of
    the whole op (bytes summed over the chunks)."""
    from .communicator import OpInfo
    from .errors import InvalidArgumentError, PeerLostError
    if out is not None and not (is_device_tensor(out) and out.dtype == x.dtype and out.numel() == x.numel()
                                and out.device == x.device):
        raise InvalidArgumentError(f"out must match the input: {x.dtype} x {x.numel()} on {x.device}")
    src = _flat(x)
    dst = src if out is None else _flat(out)
    if retry and not backup and out is None:
        raise InvalidArgumentError("all_reduce: retry=True needs the input kept (backup=True) when in place")
    ops = ops if ops is not None else CudaOps(x.device)
    chunk = max(1, int(chunk_bytes or CHUNK_BYTES) // max(1, x.element_size()))
    saved = None
    if out is None and backup:
        import torch
        saved = torch.empty(src.numel(), dtype=src.dtype)  # the originals, restored after a failure
    totals = [0, 0, 0, 0]
    attempts = 0

    def net(host: Any) -> None:
        # The staged copy is ours: the core needs no backup of it (we keep the originals).
        info = comm.all_reduce(host, op, tag=tag, backup=False, **kw)
        totals[0] += info.tx_bytes
        totals[1] += info.rx_bytes
        totals[2], totals[3] = info.world_size, info.epoch

    while True:
        attempts += 1
        progress = [0]
        try:
            run_pipeline(ops, src, dst, chunk, net, saved, progress)
            return OpInfo(totals[0], totals[1], totals[2], totals[3], attempts)
        except PeerLostError:
            if saved is not None:  # chunks already written back get their originals again
                dst[:progress[0]].copy_(saved[:progress[0]])
            if not retry:
                raise
            comm.update_topology()


class StagedAsyncOp:
    """all_reduce_async of a device tensor: the staged op runs on a thread
    (the core and the copies release the GIL); wait() joins it."""

    def __init__(self, run: Callable[[], Any]):
        self._result: Any = None
        self._error: Optional[BaseException] = None
        self._thread = threading.Thread(target=self._body, args=(run,), name="pccl-staged-op", daemon=True)
        self._thread.start()

    def _body(self, run: Callable[[], Any]) -> None:
        try:
            self._result = run()
        except BaseException as e:  # re-raised on the caller's thread by wait()
            self._error = e

    def wait(self) -> Any:
        self._thread.join()
        if self._error is not None:
            err, self._error = self._error, None
            self._result = None
            raise err
        return self._result

    @property
    def done(self) -> bool:
        return not self._thread.is_alive()


def all_reduce_async(comm: Any, x: Any, op: str = "sum", **kw) -> StagedAsyncOp:
    import torch
    device = x.device
    ops = CudaOps(device)
    ops.begin()  # the side stream orders after what the caller queued so far, on the caller's stream

    def run() -> Any:
        with torch.cuda.device(device):
            return all_reduce(comm, x, op, ops=ops, **kw)
    return StagedAsyncOp(run)


class StateMirror:
    """Pinned host copies of a state dict's device tensors for sync_state:
    kept per name between calls (so the core's hash cache, keyed by memory
    and version, works for them too)."""

    def __init__(self) -> None:
        self._host: dict = {}
        self._seen: dict = {}  # name -> (device tensor data_ptr, version) last copied

    def sync_state(self, comm_sync: Callable[..., Any], state: Any, revision: int, versions: Optional[dict],
                   **kw) -> Any:
        import torch
        versions = dict(versions or {})
        staged, host_state = [], {}
        for name, t in state.items():
            if not is_device_tensor(t):
                host_state[name] = t
                continue
            flat = _flat(t)
            h = self._host.get(name)
            if h is None or h.dtype != flat.dtype or h.numel() != flat.numel():
                h = self._host[name] = torch.empty(flat.numel(), dtype=flat.dtype, pin_memory=True)
                self._seen.pop(name, None)
            v = int(versions.get(name, 0))
            if v == 0 or self._seen.get(name) != (flat.data_ptr(), v):  # unversioned or changed: copy it
                h.copy_(flat, non_blocking=True)
                staged.append(name)
            host_state[name] = h
        torch.cuda.synchronize()
        for name in staged:
            self._seen.pop(name, None)
        info = comm_sync(host_state, revision, versions=versions, **kw)
        if info.tensors_received:
            for name, t in state.items():
                if is_device_tensor(t):
                    _flat(t).copy_(self._host[name], non_blocking=True)
            torch.cuda.synchronize()
        for name, t in state.items():
            if is_device_tensor(t) and versions.get(name):
                self._seen[name] = (_flat(t).data_ptr(), int(versions[name]))
        return info
