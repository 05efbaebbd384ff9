"""Exceptions raised by pccl_py. Every one carries the core's message.

One mapping for every binding (communicator, codecs, utilities): a C status
code becomes the class whose ``status`` it is (``error_for_status``). The
classes for bad values are also the matching builtin exceptions, so code that
catches ``ValueError`` around a codec keeps working: ``InvalidArgumentError``
(a bad value passed in) and ``ProtocolError`` (malformed bytes: a corrupt
blob, a message from a broken peer) are ``ValueError``s.
"""

from __future__ import annotations

import builtins


class PcclError(Exception):
    """Base class of every pccl_py error. ``status`` is the C status code."""

    status = 10

    def __init__(self, message: str = ""):
        super().__init__(message)
        self.message = message


class InvalidArgumentError(PcclError, ValueError):
    status = 1


class InvalidUsageError(PcclError):
    status = 2


class PeerLostError(PcclError):
    """A member died during the op. Retryable: the next update_topology()
    removes it and the op can run again on the survivors."""

    status = 3


class TimeoutError(PcclError, builtins.TimeoutError):
    status = 4


class AuthError(PcclError):
    status = 5


class NetworkError(PcclError, OSError):
    status = 6


class ProtocolError(PcclError, ValueError):
    """Malformed or unexpected bytes (from a peer, or a blob given to a decoder)."""

    status = 7


class ClosedError(PcclError):
    status = 9


class InternalError(PcclError):
    status = 10


# Status 8 is retired (PCCL_ERR_TOO_FEW_PEERS was never produced).
_BY_STATUS = {cls.status: cls for cls in (
    InvalidArgumentError, InvalidUsageError, PeerLostError, TimeoutError, AuthError,
    NetworkError, ProtocolError, ClosedError, InternalError)}


def error_for_status(status: int, message: str) -> PcclError:
    """The exception instance for a C status code (used by the extension)."""
    return _BY_STATUS.get(status, InternalError)(message)
