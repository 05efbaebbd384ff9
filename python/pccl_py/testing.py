"""Fault injection for communicators on the in-memory transport (tests only).

Communicators created with ``listen=["/memory/0"]`` talk through the
process's in-memory transport; these functions break it on purpose. Peers
are given as communicators or peer ids. Frames that a partition or a freeze
holds are delivered, in order, once it ends (as TCP would retransmit them).
"""

from __future__ import annotations

from typing import Iterable, Union

from . import _core
from .communicator import Communicator

Peer = Union[Communicator, str]

__all__ = ["set_delay", "drop_links", "partition", "heal", "kill", "freeze", "thaw", "inject", "reset",
           "hold_membership_lock"]


def _id(p: Peer) -> str:
    return p.peer_id if isinstance(p, Communicator) else str(p)


def set_delay(src: Peer, dst: Peer, seconds: float, *, both_ways: bool = False) -> None:
    """One-way delay of frames sent from ``src`` to ``dst`` from now on (0 removes it)."""
    _core.memnet.set_delay(_id(src), _id(dst), float(seconds))
    if both_ways:
        _core.memnet.set_delay(_id(dst), _id(src), float(seconds))


def drop_links(a: Peer, b: Peer) -> int:
    """Breaks every link between ``a`` and ``b`` (both ends see a reset); returns how many."""
    return _core.memnet.drop_links(_id(a), _id(b))


def partition(*groups: Iterable[Peer]) -> None:
    """Peers of different groups cannot reach each other until heal()."""
    _core.memnet.partition([[_id(p) for p in g] for g in groups])


def heal() -> None:
    _core.memnet.heal()


def kill(peer: Peer) -> None:
    """The peer dies as a killed process would: its links close at both ends."""
    _core.memnet.kill(_id(peer))


def freeze(peer: Peer) -> None:
    """The peer stops (SIGSTOP): nothing reaches it or leaves it; links stay open."""
    _core.memnet.freeze(_id(peer), True)


def thaw(peer: Peer) -> None:
    _core.memnet.freeze(_id(peer), False)


def inject(src: Peer, dst: Peer, data: bytes) -> bool:
    """Delivers ``data`` to ``dst`` as one frame (32-byte header, then payload)
    from ``src``, on a link between them, as a hostile peer could send it; the
    receiver checks it like any frame. False when they have no link."""
    return _core.memnet.inject(_id(src), _id(dst), bytes(data))


def reset() -> None:
    """Ends every delay, partition and freeze (killed peers stay dead)."""
    _core.memnet.reset()


def hold_membership_lock(comm: Communicator, seconds: float) -> None:
    """Blocks for ``seconds`` holding ``comm``'s membership lock, as a slow
    view change would (run it on a thread of its own). Data frames, votes and
    heartbeats must not wait for it: they take the router's and the links'
    locks only."""
    comm._core._testing_hold_membership_lock(float(seconds))
