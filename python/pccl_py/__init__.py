"""pccl_py: fault-tolerant, decentralized collective communication for
training across the internet."""

from . import _core, compress
from .communicator import AsyncOp, Communicator, OpInfo, RelayLimits, SyncInfo, slow_start_after_idle
from .compress import DGC, FedZip, FedZipPayload, QuantizedTopK, TopK
from .errors import (AuthError, ClosedError, InternalError, InvalidArgumentError, InvalidUsageError,
                     NetworkError, PcclError, PeerLostError, ProtocolError, TimeoutError)

__version__ = "0.1.0"

__all__ = [
    "DGC", "DiLoCo", "DilocoSchedule", "FedZip", "FedZipPayload", "QuantizedTopK", "StreamingDiLoCo", "TopK", "outer_step_f32",
    "AsyncOp", "AuthError", "ClosedError", "Communicator", "InternalError", "InvalidArgumentError",
    "InvalidUsageError", "NetworkError", "NodeComm", "NodeError", "NodeGroup", "ShardedDiLoCo", "OpInfo", "SyncInfo",
    "PcclError", "PeerLostError", "ProtocolError", "RelayLimits", "TimeoutError", "build_info", "c_include_dir",
    "c_library_dir", "slow_start_after_idle",
]


def build_info() -> str:
    return _core.build_info()


def c_include_dir() -> str:
    """Directory holding pccl/pccl.h, for C embedders (-I)."""
    import os
    return os.path.join(os.path.dirname(__file__), "include")


def c_library_dir() -> str:
    """Directory holding libpccl.so, for C embedders (-L, rpath)."""
    import os
    return os.path.join(os.path.dirname(__file__), "lib")


_TORCH_API = {"DiLoCo", "StreamingDiLoCo", "DilocoSchedule", "outer_step_f32"}
_SHARDED_API = {"NodeComm", "NodeError", "NodeGroup", "ShardedDiLoCo"}


def __getattr__(name: str):
    # The DiLoCo wrappers need torch, an optional dependency: import on first use.
    if name in _TORCH_API:
        from . import diloco
        return getattr(diloco, name)
    if name in _SHARDED_API:
        from . import sharded
        return getattr(sharded, name)
    raise AttributeError(f"module 'pccl_py' has no attribute {name!r}")
