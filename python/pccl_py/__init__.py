"""pccl_py: fault-tolerant, decentralized collective communication."""
from . import _core

__all__ = ["_core"]
