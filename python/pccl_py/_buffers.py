"""Turning numpy arrays and torch tensors into (pointer, count, dtype) for the
core, zero-copy. Only contiguous CPU memory crosses; anything else is refused
with an error naming the problem."""

from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np

from . import _core
from .errors import InvalidArgumentError

# C dtype codes (pccl_dtype_t, bound as _core.DType)
F32, F64, F16, BF16, I8, I16, I32, I64, U8, U16, U32, U64 = (_core.DType(i) for i in range(12))
_NUMPY = {
    np.dtype(np.float32): F32, np.dtype(np.float64): F64, np.dtype(np.float16): F16,
    np.dtype(np.int8): I8, np.dtype(np.int16): I16, np.dtype(np.int32): I32, np.dtype(np.int64): I64,
    np.dtype(np.uint8): U8, np.dtype(np.uint16): U16, np.dtype(np.uint32): U32, np.dtype(np.uint64): U64,
}
_TORCH_NAMES = {
    "float32": F32, "float64": F64, "float16": F16, "bfloat16": BF16, "int8": I8, "int16": I16,
    "int32": I32, "int64": I64, "uint8": U8, "uint16": U16, "uint32": U32, "uint64": U64,
}
DTYPE_NAMES = [d.name for d in (F32, F64, F16, BF16, I8, I16, I32, I64, U8, U16, U32, U64)]
OPS = {"sum": _core.ReduceOp.sum, "avg": _core.ReduceOp.avg, "mean": _core.ReduceOp.avg,
       "min": _core.ReduceOp.min, "max": _core.ReduceOp.max, "prod": _core.ReduceOp.prod}


class Buffer(NamedTuple):
    ptr: int
    count: int
    dtype: int
    owner: Any  # keeps the memory alive while the core uses it


def _is_torch(x: Any) -> bool:
    return type(x).__module__.startswith("torch") and hasattr(x, "data_ptr")


def as_buffer(x: Any, *, writable: bool, what: str = "tensor") -> Buffer:
    if _is_torch(x):
        if x.device.type != "cpu":
            raise InvalidArgumentError(
                f"unsupported device '{x.device}' for {what}: pccl_py exchanges CPU memory and stages "
                f"CUDA tensors in all_reduce(_async) and sync_state only; copy it with .cpu() (and back) first")
        if x.is_sparse if hasattr(x, "is_sparse") else False:
            raise InvalidArgumentError(f"sparse torch tensors are not supported ({what})")
        if not x.is_contiguous():
            raise InvalidArgumentError(f"{what} is not contiguous: pass x.contiguous()")
        name = str(x.dtype).replace("torch.", "")
        if name not in _TORCH_NAMES:
            raise InvalidArgumentError(f"unsupported dtype {x.dtype} for {what}")
        t = x.detach()
        # torch tracks no read-only flag: a tensor over a read-only memmap
        # (torch.from_numpy) would crash the process when written.
        if writable and not _core.memory_writable(t.data_ptr(), t.numel() * t.element_size()):
            raise InvalidArgumentError(f"{what} is read-only memory but the result must be written into it")
        return Buffer(t.data_ptr(), t.numel(), _TORCH_NAMES[name], t)
    if isinstance(x, np.ndarray):
        if not x.flags["C_CONTIGUOUS"]:
            raise InvalidArgumentError(f"{what} is not contiguous: pass np.ascontiguousarray(x)")
        if writable and not x.flags["WRITEABLE"]:
            raise InvalidArgumentError(f"{what} is read-only but the result must be written into it")
        if x.dtype not in _NUMPY:
            raise InvalidArgumentError(f"unsupported dtype {x.dtype} for {what}")
        return Buffer(x.ctypes.data, x.size, _NUMPY[x.dtype], x)
    raise InvalidArgumentError(
        f"{what} must be a numpy array or a torch CPU tensor, got {type(x).__name__}")


def op_code(op: str) -> "_core.ReduceOp":
    try:
        return OPS[op]
    except (KeyError, TypeError):
        raise InvalidArgumentError(f"unknown reduce op {op!r}; use one of sum, avg (or mean), min, max, prod") from None


def quant_code(quant: Any) -> "_core.Quant":
    """The codec of an all-reduce's ``quant`` (None: dense), by its name in
    the codec table (_core.Quant's members are the table's entries)."""
    if quant is None:
        return _core.Quant.none
    member = _core.Quant.__members__.get(quant) if isinstance(quant, str) else None
    if member is None:
        raise InvalidArgumentError(
            f"unknown quant {quant!r}; use None or one of {', '.join(_core.Quant.__members__)}")
    return member
