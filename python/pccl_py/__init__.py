"""pccl_py: fault-tolerant, decentralized collective communication for
training across the internet."""

from . import _core
from .communicator import AsyncOp, Communicator, OpInfo
from .errors import (AuthError, ClosedError, InternalError, InvalidArgumentError, InvalidUsageError,
                     NetworkError, PcclError, PeerLostError, ProtocolError, TimeoutError, TooFewPeersError)

__version__ = "0.1.0"

__all__ = [
    "AsyncOp", "AuthError", "ClosedError", "Communicator", "InternalError", "InvalidArgumentError",
    "InvalidUsageError", "NetworkError", "OpInfo", "PcclError", "PeerLostError", "ProtocolError",
    "TimeoutError", "TooFewPeersError", "build_info", "c_include_dir", "c_library_dir",
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
