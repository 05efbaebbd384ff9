"""The Communicator: one peer of a run."""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass
from typing import Any, Mapping, Optional, Sequence

import numpy as np

from . import _core, _staging
from ._buffers import DTYPE_NAMES, as_buffer, op_code, quant_code
from .errors import ClosedError, InvalidArgumentError, PeerLostError


# all_reduce(algorithm=...): pccl_algorithm_t values.
ALGORITHMS = {"auto": _core.Algorithm.auto, "ring": _core.Algorithm.ring, "direct": _core.Algorithm.direct,
              "doubling": _core.Algorithm.doubling}
# Communicator(ring_order=...): pccl_ring_order_t values.
RING_ORDERS = {"measured": _core.RingOrder.measured, "id": _core.RingOrder.id}
# The core's defaults (pccl_config_init, pccl_allreduce_opts_init; their
# values are pccl.h's PCCL_DEFAULT_*): the one place they are defined.
_DEFAULTS = _core.Config()
_OPT_DEFAULTS = _core.AllReduceOpts()
_USER_TAGS = 0xFFFF0000  # tags at or above are the library's own (pccl.h)
_log = logging.getLogger("pccl_py")
# An op that starts this long after the last one ended is "after idle" (Linux
# restarts the congestion window after one RTO, >= 200 ms, of idle), and links
# at least this long make that restart cost real time.
_IDLE_GAP_S, _LONG_LINK_MS = 1.0, 20.0


def slow_start_after_idle() -> bool:
    """Whether this process's network namespace restarts TCP's congestion
    window after idle (net.ipv4.tcp_slow_start_after_idle, default 1). On
    long links an all-reduce after an idle gap (one sync every few minutes)
    then reaches a fraction of the link; 0 keeps the window (see the README's
    WAN tuning)."""
    try:
        with open("/proc/sys/net/ipv4/tcp_slow_start_after_idle") as f:
            return f.read().strip() != "0"
    except OSError:
        return False


@dataclass(frozen=True)
class OpInfo:
    """What a finished collective reports."""

    tx_bytes: int  # payload bytes this peer sent
    rx_bytes: int  # payload bytes this peer received
    world_size: int  # members that took part
    epoch: int  # view epoch it ran on
    attempts: int = 1  # runs it took (retry=True)


@dataclass(frozen=True)
class SyncInfo:
    """What sync_state reports."""

    tx_bytes: int
    rx_bytes: int
    revision: int  # revision of the state every member now holds
    tensors_received: int
    tensors_sent: int
    world_size: int
    attempts: int = 1


def _info(t: tuple, attempts: int = 1) -> OpInfo:
    return OpInfo(int(t[0]), int(t[1]), int(t[2]), int(t[3]), attempts)


class AsyncOp:
    """Handle of an all_reduce_async. Keeps its buffers alive until wait()."""

    def __init__(self, comm: "Communicator", handle: int, keep: tuple):
        self._comm = comm
        self._handle: Optional[int] = handle
        self._keep = keep
        self._info: Optional[OpInfo] = None

    def wait(self) -> OpInfo:
        """Blocks until the op ends; returns its OpInfo or raises its error."""
        if self._handle is None:
            if self._info is None:
                raise ClosedError("this op was already waited for and failed")
            return self._info
        handle, self._handle = self._handle, None
        self._comm._pending.discard(self)
        try:
            self._info = _info(self._comm._core.wait(handle))
        finally:
            self._keep = ()
        return self._info

    @property
    def done(self) -> bool:
        return self._handle is None


@dataclass(frozen=True)
class RelayLimits:
    """What a relaying peer (``Communicator(relay=RelayLimits(...))``) grants.

    ``max_circuit_bytes`` (per direction) and ``max_circuit_seconds`` bound
    each relayed connection, 0 meaning unlimited (the default, so that peers
    behind symmetric NATs can train through the relay); a circuit over a
    limit is closed, and so is a reservation not refreshed within
    ``reservation_ttl`` seconds (peers refresh theirs at half of it).
    """

    max_reservations: int = _DEFAULTS.relay_max_reservations
    max_circuits: int = _DEFAULTS.relay_max_circuits
    max_circuit_bytes: int = _DEFAULTS.relay_max_circuit_bytes
    max_circuit_seconds: float = _DEFAULTS.relay_max_circuit_s
    reservation_ttl: float = _DEFAULTS.relay_reservation_ttl_s

    def _apply(self, cfg: "_core.Config") -> None:
        if min(self.max_reservations, self.max_circuits, self.max_circuit_bytes) < 0 or \
                self.max_circuit_seconds < 0 or self.reservation_ttl < 1:
            raise InvalidArgumentError(f"invalid relay limits {self}")
        cfg.relay_max_reservations = int(self.max_reservations)
        cfg.relay_max_circuits = int(self.max_circuits)
        cfg.relay_max_circuit_bytes = int(self.max_circuit_bytes)
        cfg.relay_max_circuit_s = float(self.max_circuit_seconds)
        cfg.relay_reservation_ttl_s = float(self.reservation_ttl)


class Communicator:
    """A peer of a fault-tolerant run.

    Start the first peer without ``bootstrap``; start every other one with any
    existing peer's address (from ``addrs``). Creating one only connects and
    authenticates; a peer asks to join in its first ``update_topology()`` (or
    ``wait_for_peers()``) and becomes a member at the members' next
    ``update_topology()``, which all members call together.

    Failure detection: an op that receives nothing for ``timeout`` seconds
    fails with TimeoutError (raise it for long transfers on slow links); a
    member from which nothing arrives for ``heartbeat_timeout`` seconds (not
    even the heartbeats its communicator's own thread sends every quarter of
    that) is declared dead, so a frozen or vanished peer makes the ops in
    flight raise PeerLostError within that bound (values above ``timeout``
    act as ``timeout``).

    Blocking calls (update_topology, wait_for_peers, all_reduce, sync_state,
    all_gather_bytes, AsyncOp.wait) made from the main thread react to Ctrl-C
    within ~50 ms: the communicator is closed (this peer leaves the run; the
    others see it lost) and KeyboardInterrupt is raised. A PeerLostError names
    the lost peer: call update_topology() and retry, or pass ``retry=True``.

    Long fat pipes: ``streams`` TCP connections per neighbour carry each
    all-reduce (sub-chunks of ``chunk_bytes`` go to whichever stream drains
    first, so one stream in loss recovery does not stall the op); ``tcp_congestion`` sets the congestion control of every socket
    (e.g. ``"bbr"``; None keeps the system default; one the kernel refuses
    raises InvalidArgumentError saying how to allow or load it); ``socket_buffer`` fixes
    SO_SNDBUF/SO_RCVBUF in bytes (0 keeps kernel autotuning, usually better).
    ``keepalive``: for this many seconds after a stream last carried an op's
    data, while idle it sends an empty authenticated record every
    max(50 ms, min(srtt, RTO/2)), so Linux keeps its congestion window
    instead of restarting it after one RTO of idle (the DiLoCo pattern of
    one big sync every few minutes); ~1.1 kB/s up and ~0.7 kB/s down per idle
    stream at 100 ms RTT, at most ~2.3 kB/s on short links. 0 turns it off.

    NAT traversal: ``relay=True`` (or a ``RelayLimits``) offers relaying to
    private peers of the run. ``relays`` lists relay multiaddrs
    (``/ip4/R/tcp/P/p2p/<relay id>``): the peer holds a reservation on
    ``relay_slots`` of them (the first that accept), asks one to dial it back
    (``reachability``), and when private advertises
    ``/…/p2p/<relay>/p2p-circuit/p2p/<self>`` first in ``addrs``. When a relay
    dies the peer reserves on the next one and tells the run its new
    addresses. Dialing a circuit address goes through the relay
    (authenticated end to end with the run key), then tries a direct
    connection by hole punching (``hole_punch``).

    Ring order: every ring hop carries the whole payload, so on links of
    different lengths the order sets an op's time. Members report the RTTs
    they measure on their links, and the coordinator of each view orders the
    ring for the smallest slowest hop, then the shortest lap
    (``ring_order="measured"``, exact up to 12 members); ``"id"`` orders it
    by peer id. Both avoid links that only a relay carries.

    Security: every connection runs a Noise handshake (XXpsk0: ``run_key`` is
    the pre-shared key, both peers prove their Ed25519 peer ids) and every
    frame is an AES-256-GCM record. ``encrypt=False`` (trusted networks only)
    sends payloads in the clear but keeps every frame authenticated; a link
    is encrypted unless both ends pass False. On loopback (both socket
    addresses loopback, checked by each end and stated by both in the
    authenticated handshake) collective data payloads skip the AEAD: those
    bytes never leave the host, and only root or local processes that could
    read this process's memory anyway can see them; ``seal_loopback=True``
    seals them too. ``key_file`` keeps the peer's
    identity key (and so its ``peer_id``) across restarts.
    """

    def __init__(self, listen: Optional[Sequence[str]] = None, bootstrap: Optional[Sequence[str]] = None,
                 run_key: str | bytes = "", timeout: float = _DEFAULTS.timeout_s, *,
                 join_timeout: float = _DEFAULTS.join_timeout_s, streams: int = _DEFAULTS.streams,
                 chunk_bytes: int = _DEFAULTS.chunk_bytes, key_file: Optional[str | os.PathLike] = None,
                 tcp_congestion: Optional[str] = None, socket_buffer: int = _DEFAULTS.socket_buffer,
                 relay: bool | RelayLimits = False, relays: Optional[Sequence[str]] = None,
                 hole_punch: bool = _DEFAULTS.hole_punch, relay_slots: int = _DEFAULTS.relay_slots,
                 encrypt: bool = _DEFAULTS.encrypt, heartbeat_timeout: float = _DEFAULTS.heartbeat_timeout_s,
                 ring_order: str = _DEFAULTS.ring_order.name, keepalive: float = _DEFAULTS.keepalive_s,
                 seal_loopback: bool = _DEFAULTS.seal_loopback):
        if isinstance(listen, str) or isinstance(bootstrap, str):
            raise InvalidArgumentError("listen and bootstrap take lists of multiaddrs, not a single string")
        key = run_key.decode("latin-1") if isinstance(run_key, bytes) else str(run_key)
        self._pending: set[AsyncOp] = set()
        if isinstance(relays, str):
            raise InvalidArgumentError("relays takes a list of multiaddrs, not a single string")
        limits = relay if isinstance(relay, RelayLimits) else RelayLimits()
        if int(relay_slots) < 1:
            raise InvalidArgumentError(f"relay_slots must be at least 1, got {relay_slots}")
        cfg = _core.Config()
        cfg.listen = list(listen or ["/ip4/127.0.0.1/tcp/0"])
        cfg.bootstrap = list(bootstrap or [])
        cfg.run_key = key
        cfg.timeout_s = float(timeout)
        cfg.join_timeout_s = float(join_timeout)
        cfg.streams = int(streams)
        cfg.chunk_bytes = int(chunk_bytes)
        cfg.key_file = os.fspath(key_file) if key_file else None
        cfg.tcp_congestion = tcp_congestion or None
        cfg.socket_buffer = int(socket_buffer)
        cfg.relay = bool(relay)
        cfg.relays = list(relays or [])
        cfg.hole_punch = bool(hole_punch)
        cfg.relay_slots = int(relay_slots)
        cfg.encrypt = bool(encrypt)
        cfg.seal_loopback = bool(seal_loopback)
        cfg.heartbeat_timeout_s = float(heartbeat_timeout)
        if ring_order not in RING_ORDERS:
            raise InvalidArgumentError(f"ring_order must be one of {', '.join(RING_ORDERS)}, got {ring_order!r}")
        cfg.ring_order = RING_ORDERS[ring_order]
        cfg.keepalive_s = float(keepalive)
        limits._apply(cfg)
        self._core = _core.Comm(cfg)
        self.timeout = float(timeout)
        self._last_op_end: Optional[float] = None
        self._idle_warned = False

    # -- identity and membership -------------------------------------------------
    @property
    def peer_id(self) -> str:
        return self._core.peer_id()

    @property
    def addrs(self) -> list[str]:
        """Multiaddrs ending in /p2p/<peer_id>; any of them bootstraps others."""
        return self._core.addrs()

    @property
    def reservations(self) -> list[str]:
        """The relays (from ``relays``) this peer holds a reservation on now."""
        return self._core.reservations()

    @property
    def reachability(self) -> str:
        """"public", "private" (a relay could not dial us back) or "unknown" (no relays)."""
        return self._core.reachability()

    def connections(self) -> list[dict]:
        """Open connections: peer id, "direct" or "relayed", relay id, endpoint,
        rtt_ms (smoothed end-to-end round trip, through the relay when relayed;
        None until the first probe, sent every second, is answered), purpose."""
        out = []
        for line in self._core.connections():
            peer, kind, via, endpoint, rtt, *purpose = line.split(" ")
            out.append({"peer": peer, "kind": kind, "via": None if via == "-" else via, "endpoint": endpoint,
                        "rtt_ms": None if rtt == "-" else float(rtt), "purpose": purpose[0] if purpose else ""})
        return out

    @property
    def world_size(self) -> int:
        """Members of the current view (0 before this peer is admitted)."""
        return self._core.world_size()

    def algorithm_for(self, nbytes: int, *, quant: Optional[str] = None, algorithm: str = "auto",
                      world_size: Optional[int] = None) -> str:
        """The algorithm ("ring", "direct" or "doubling") an all_reduce of
        ``nbytes`` with these options runs over ``world_size`` members (the
        current view's by default): ``algorithm`` resolved when "auto"."""
        opts = self._opts("sum", 0, quant, _OPT_DEFAULTS.quant_block, False, algorithm)
        world = self.world_size if world_size is None else int(world_size)
        return _core.choose_algorithm(int(nbytes), world, opts).name

    @property
    def members(self) -> list[str]:
        """Peer ids of the current view in ring order (rank order): by id
        unless the coordinator found a clearly better ring from the links'
        measured RTTs, or one avoiding relay-only links."""
        return self._core.members()

    @property
    def epoch(self) -> int:
        return self._core.epoch()

    @property
    def rank(self) -> int:
        return self.members.index(self.peer_id)

    def update_topology(self) -> None:
        """Collective point of all members: admits joiners, drops dead peers,
        installs the next view. A peer not yet admitted asks to join here (its
        first call; creating the Communicator only connects) and blocks until
        the members' next update_topology() admits it. Ctrl-C interrupts it
        (KeyboardInterrupt; the communicator is then closed)."""
        self._core.update_topology()

    def wait_for_peers(self, n: int, timeout: float = 300.0) -> int:
        """Blocks until the run has at least ``n`` members (this peer
        included) and returns the world size, or raises TimeoutError after
        ``timeout`` seconds. Meanwhile joiners that ask are admitted (every
        current member must be in wait_for_peers or update_topology for
        that); a joiner calling it first asks to join. It sleeps in the core
        between rounds: no busy wait. Start every peer of a run with it::

            comm = pc.Communicator(bootstrap=..., run_key=...)
            comm.wait_for_peers(2, timeout=600)
        """
        if int(n) < 1:
            raise InvalidArgumentError(f"wait_for_peers: n must be at least 1, got {n}")
        if not float(timeout) >= 0:
            raise InvalidArgumentError(f"wait_for_peers: timeout must be >= 0, got {timeout}")
        return self._core.wait_for_peers(int(n), float(timeout))

    # -- collectives ---------------------------------------------------------------
    def _prepare(self, x: Any, out: Any):
        src = as_buffer(x, writable=out is None, what="input")
        if out is None:
            return src, src
        dst = as_buffer(out, writable=True, what="out")
        if dst.dtype != src.dtype or dst.count != src.count:
            raise InvalidArgumentError(
                f"out must match the input: input is {DTYPE_NAMES[src.dtype]} x {src.count}, "
                f"out is {DTYPE_NAMES[dst.dtype]} x {dst.count}")
        return src, dst

    @staticmethod
    def _tag(tag: Any) -> int:
        # The core takes a uint32 and keeps the top 2**16 for itself; pybind
        # would answer anything else with a bare TypeError.
        if isinstance(tag, bool) or not isinstance(tag, (int, np.integer)) or not 0 <= int(tag) < _USER_TAGS:
            raise InvalidArgumentError(f"tag must be an int in 0..{_USER_TAGS - 1:#x}, got {tag!r}")
        return int(tag)

    @staticmethod
    def _staged_kw(op: str, quant: Optional[str], quant_block: int, stochastic: bool, algorithm: str) -> dict:
        """The per-chunk options of a staged (CUDA) op, checked before any copy."""
        Communicator._opts(op, 0, quant, quant_block, stochastic, algorithm)
        return {"quant": quant, "quant_block": quant_block, "stochastic": stochastic, "algorithm": algorithm}

    @staticmethod
    def _opts(op: str, tag: int, quant: Optional[str], quant_block: int, stochastic: bool, algorithm: str,
              backup: bool = True) -> "_core.AllReduceOpts":
        # Names become the C enums here; the core checks the combination
        # (f32, sum/avg, block >= 1) once, for C callers too.
        op_value, tag = op_code(op), Communicator._tag(tag)
        if not 0 <= int(quant_block) < 2**32:
            raise InvalidArgumentError(f"all_reduce: quant_block must be >= 1, got {quant_block}")
        if algorithm not in ALGORITHMS:
            raise InvalidArgumentError(f"all_reduce: unknown algorithm {algorithm!r} (use {', '.join(ALGORITHMS)})")
        return _core.AllReduceOpts(op=op_value, tag=tag, quant=quant_code(quant),
                                   quant_block=int(quant_block), stochastic=bool(stochastic),
                                   algorithm=ALGORITHMS[algorithm], no_backup=not backup)

    def all_reduce(self, x: Any, op: str = "sum", *, out: Any = None, tag: int = 0,
                   retry: bool = False, quant: Optional[str] = None,
                   quant_block: int = _OPT_DEFAULTS.quant_block, stochastic: bool = False,
                   algorithm: str = "auto", backup: bool = True) -> OpInfo:
        """Reduces ``x`` across all members, in place (or into ``out``).

        ``x`` may be a CUDA tensor (``out`` then on the same device): it is
        staged through pinned host memory in chunks, the copy of the next
        chunk overlapping the network work on this one (see ``_staging`` for
        when chunked results equal the CPU op's bit for bit).

        ``op``: "sum", "avg" (alias "mean"), "min", "max", "prod". Integer
        sums wrap around in the dtype; integer "avg" is that sum divided by
        the world size, rounded to nearest with ties away from zero (7/2 -> 4,
        -7/2 -> -4, 5/3 -> 2); float "avg" is one IEEE division of the sum.

        Results are bit-identical on every member. With ``retry=True`` a
        PeerLostError is answered by update_topology() and a new attempt on the
        survivors, until it succeeds (at world size 1 it always does).

        ``quant`` ("fp16", "bf16", "int8", "int4", "e3m0"; float32 data, op
        "sum" or "avg") sends every hop quantized (per-block scale of
        ``quant_block`` values for int8/int4/e3m0, ``stochastic`` rounding if
        asked) and accumulates in f32; the result is still bit-identical on
        every member, with the error of one quantization per hop. NaN/Inf in
        any member's input fail the op on every member (InvalidArgumentError
        on the member that has them). Every member must pass the same options.

        ``algorithm``: "auto" (the default: "doubling" for small dense
        buffers, where its fewer steps save more than its extra bytes cost,
        else "ring"; ``algorithm_for`` tells which), "ring" (n links, 2(n-1)
        latency steps), "direct" (every member sends each chunk straight to
        its owner, which sends the result straight to all: n(n-1) links, 2
        latency steps, and a slow link delays only what crosses it; for small
        groups on long links; ring and direct move the same bytes per member)
        or "doubling" (recursive doubling: log2(n) steps, +2 when n is not a
        power of two, each sending the whole buffer; no ``quant``).

        ``backup=False`` (in place only): the core does not keep a copy of
        the input to restore it when the op fails, saving one buffer of
        memory; after a failure ``x`` is then undefined (for callers that can
        recompute it, like the DiLoCo wrappers).
        """
        if _staging.is_device_tensor(x):  # CUDA: staged through pinned host chunks (_staging)
            return _staging.all_reduce(self, x, op, out=out, tag=self._tag(tag), retry=retry, backup=backup,
                                       **self._staged_kw(op, quant, quant_block, stochastic, algorithm))
        src, dst = self._prepare(x, out)
        opts = self._opts(op, tag, quant, quant_block, stochastic, algorithm, backup)
        if retry and not backup and out is None:
            raise InvalidArgumentError("all_reduce: retry=True needs the input kept (backup=True) when in place")
        self._after_idle()
        attempts = 0
        try:
            while True:
                attempts += 1
                try:
                    return _info(self._core.all_reduce(src.ptr, dst.ptr, src.count, src.dtype, opts), attempts)
                except PeerLostError:
                    if not retry:
                        raise
                    self.update_topology()
        finally:
            self._last_op_end = time.monotonic()

    def _after_idle(self) -> None:
        """Says once in the log when ops follow idle gaps on long links while
        the kernel restarts TCP's window after idle (the DiLoCo pattern's
        hidden cost: see slow_start_after_idle())."""
        last = self._last_op_end
        if self._idle_warned or last is None or time.monotonic() - last < _IDLE_GAP_S:
            return
        self._idle_warned = True  # checked once: the first op after a gap decides
        if not slow_start_after_idle():
            return
        rtts = [c["rtt_ms"] for c in self.connections() if c["rtt_ms"] is not None]
        if rtts and max(rtts) >= _LONG_LINK_MS:
            _log.warning(
                "net.ipv4.tcp_slow_start_after_idle=1 in this network namespace: after an idle gap TCP restarts "
                "its congestion window, so an all-reduce after idle on these links (RTT up to %.0f ms) reaches "
                "a fraction of their rate. As root: sysctl -w net.ipv4.tcp_slow_start_after_idle=0 (per network "
                "namespace; see the README's WAN tuning).", max(rtts))

    def sync_state(self, state: Mapping[str, Any], revision: int, *, retry: bool = False,
                   versions: Optional[Mapping[str, int]] = None) -> SyncInfo:
        """Makes every member's ``state`` byte-identical to the most popular
        state at the highest revision (ties: the lowest rank). Values are numpy
        arrays or torch tensors (CUDA ones go through pinned host copies kept
        between calls), overwritten in place when this peer is behind; every member passes the same names and shapes (a joiner passes
        freshly allocated tensors and receives everything).

        ``versions`` (name -> int > 0, optional): your version of a tensor's
        content. A tensor passed with the same memory and version as at this
        communicator's last successful sync_state is not hashed again (its
        hash from then is reused); bump the version whenever you change it.
        Tensors without a version are hashed every time."""
        if not isinstance(state, Mapping):
            raise InvalidArgumentError("sync_state takes a dict of name -> tensor")
        if any(_staging.is_device_tensor(t) for t in state.values()):  # CUDA: through pinned host mirrors
            if getattr(self, "_mirror", None) is None:
                self._mirror = _staging.StateMirror()
            return self._mirror.sync_state(self._sync_state_host, state, revision, versions, retry=retry)
        return self._sync_state_host(state, revision, retry=retry, versions=versions)

    def _sync_state_host(self, state: Mapping[str, Any], revision: int, *, retry: bool = False,
                         versions: Optional[Mapping[str, int]] = None) -> SyncInfo:
        versions = versions or {}
        bufs = []
        for name, t in state.items():
            b = as_buffer(t, writable=True, what=f"state[{name!r}]")
            v = int(versions.get(name, 0))
            if not 0 <= v < 2**64:
                raise InvalidArgumentError(f"versions[{name!r}] must be in 0..2**64-1, got {v}")
            bufs.append((str(name), b.ptr, b.count * _core.dtype_size(b.dtype), v, b.owner))
        if not 0 <= int(revision) < 2**64:
            raise InvalidArgumentError(f"revision must be in 0..2**64-1, got {revision}")
        attempts = 0
        while True:
            attempts += 1
            try:
                t = self._core.sync_state([b[:4] for b in bufs], int(revision))
                return SyncInfo(*(int(v) for v in t), attempts=attempts)
            except PeerLostError:
                if not retry:
                    raise
                self.update_topology()

    def all_gather_bytes(self, data: bytes, *, tag: int = 0, return_info: bool = False):
        """Every member's ``data``, in rank order (the order of ``members``);
        with ``return_info`` a pair (blobs, OpInfo)."""
        blobs, info_t = self._core.all_gather_bytes(bytes(data), self._tag(tag))
        return (blobs, _info(info_t)) if return_info else blobs

    def all_reduce_async(self, x: Any, op: str = "sum", *, out: Any = None, tag: int = 0,
                         quant: Optional[str] = None, quant_block: int = _OPT_DEFAULTS.quant_block,
                         stochastic: bool = False, algorithm: str = "auto", backup: bool = True) -> AsyncOp:
        """Starts an all-reduce and returns a handle; ops with distinct tags may
        be in flight at once. The buffers must not be touched until wait().
        ``quant``, ``quant_block``, ``stochastic``, ``algorithm``, ``backup``: as in all_reduce.
        A CUDA tensor is staged on a thread of its own (same handle surface)."""
        if _staging.is_device_tensor(x):
            return _staging.all_reduce_async(self, x, op, out=out, tag=self._tag(tag), backup=backup,
                                             **self._staged_kw(op, quant, quant_block, stochastic, algorithm))
        src, dst = self._prepare(x, out)
        opts = self._opts(op, tag, quant, quant_block, stochastic, algorithm, backup)
        self._after_idle()
        self._last_op_end = time.monotonic()
        handle = self._core.all_reduce_async(src.ptr, dst.ptr, src.count, src.dtype, opts)
        h = AsyncOp(self, handle, (src.owner, dst.owner))
        self._pending.add(h)
        return h

    # -- lifetime -----------------------------------------------------------------
    def close(self) -> None:
        """Leaves the run: ops in flight fail with ClosedError."""
        core = getattr(self, "_core", None)
        if core is None:
            return
        for h in list(self._pending):
            try:
                h.wait()
            except Exception:
                pass
        core.close()

    def __enter__(self) -> "Communicator":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Communicator(peer_id={self.peer_id!r}, world_size={self.world_size})"
