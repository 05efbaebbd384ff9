"""DiLoCo across nodes that each shard their model with FSDP2 inside.

A node runs k processes, the ranks of its own ``torch.distributed`` group
(NCCL on GPUs, Gloo on CPUs), which shard the model with ``fully_shard``.
Rank i of every node is a peer of ring i (its own ``Communicator``), which
carries the outer sync of shard i. ``ShardedDiLoCo`` is DiLoCo on the local
shards (``DTensor.to_local()``, the very storage FSDP updates), and its
communicator is wrapped in a ``NodeComm``, which makes every ring operation
atomic at the level of the node.

Why atomic: the k rings are independent meshes. If ring 0 admitted node C at
one round and ring 1 at the next, or dropped a dead node B at a different
round than ring 1 did, then shard 0 would average over a different set of
nodes than shard 1, and worse, C's rank 0 would take part in ring 0's
collectives while C's rank 1 waits to be admitted: the ranks of a node would
run different collectives (FSDP's, inside the node, and the rings') and
deadlock. PCCL's docs warn of exactly this.

The membership point (``NodeComm.update_topology``), for rank i of node N at
round t. Every ring's view is the same on all its members (the mesh's
guarantee), and a ring op either succeeds on every member or fails on every
survivor (its commit); everything below rests on these two facts.

1. ``update_topology()`` on ring i (the mesh admits joiners, drops the dead).
2. ``all_gather_bytes`` on ring i of each member's node record (node id, k, i,
   round t or -1 for a rank still joining): the set v_i(t) of nodes in ring i.
3. An *established* node (all its ranks were members when the point began)
   exchanges v_i(t) among its ranks and computes
   agree = "every ring's step 2 succeeded and v_0(t) = ... = v_{k-1}(t)".
   Every established node computes the same value: it depends only on ring
   facts, and every established node has a rank in every ring.
4. ``all_reduce(min)`` on ring i of agree; a rank still joining posts 1 (it
   knows nothing, so it is neutral). As every ring has an established member
   (assumed: a run is never made only of joiners), the result flag_i(t) is
   agree itself, the same in every ring that completes the op.
5. done = every rank of N completed step 4 with flag 1 (exchanged inside the
   node). A rank writes its outcome always, and waits for its siblings' only
   when its own flag is 1: then every ring holds all of N's ranks (v_i are
   equal), so every sibling is at this very round and will write soon. Done:
   the point ends for the whole node; otherwise it goes to round t+1.

So a node is in all rings or in none when any node leaves the point, and all
ranks of all nodes leave it at the same round: no shard ever trains with a
different set of nodes than another. A joining rank learns t from the
established records of step 2 and follows its ring alone until its siblings
are admitted too (it never waits for a sibling that may not be admitted yet).
Every collective after the point (``all_reduce``, ``sync_state``, ...) is
followed by an exchange inside the node: it succeeded only if it succeeded on
every rank, else every rank raises ``PeerLostError`` (restoring its input)
and DiLoCo redoes the point: all nodes see the same ring failures, so they
all redo it.

Node failures: the ranks of a node exchange through a ``torch.distributed``
store (non-blocking checks, so a wait is bounded) and each publishes a
heartbeat. A rank that waits on a sibling that is gone (no heartbeat for
``timeout`` s, or the store unreachable: its host, often node rank 0, died) raises
``NodeError``, closes its ring communicator (its ring drops it) and marks the
node failed, so every other rank of the node does the same at its next
exchange: the node leaves every ring. ``NodeGroup.guard()`` does the same for
an error raised by the node's own collectives (FSDP's), in the training
loop. A restarted node rejoins as a new node.

A ring op that fails with anything but PeerLostError (a timeout, a closed
communicator) fails the node the same way. Assumed: every ring keeps an
established member while a node joins (a run is never only joiners). Cost: a
few store round trips per ring op (ms), nothing per inner step; the store
keeps a few bytes per exchange for the life of the node.
"""

from __future__ import annotations

import contextlib
import json
import threading
import time
from typing import Any, Dict, List, Mapping, Optional

import numpy as np
import torch

from .communicator import AsyncOp, OpInfo, SyncInfo
from .diloco import StreamingDiLoCo
from .errors import ClosedError, InvalidArgumentError, InvalidUsageError, PcclError, PeerLostError

_TAG_RECORD = 0x4E4F0000  # "NO" << 16: node records of a membership point
_TAG_FLAG = _TAG_RECORD + 1  # its agreement flag
_RECORD_MAGIC = "pccl-node/1"
_MAX_RECORD = 512  # bytes of a member's node record we accept


class NodeError(PcclError):
    """This node lost one of its ranks (or its ranks disagree): every rank
    of it leaves every ring. Restart the whole node to rejoin the run."""

    status = 2


class NodeGroup:
    """The k ranks of one node, for ``NodeComm``/``ShardedDiLoCo``.

    ``rank``, ``size``: this process's rank in the node and the node's rank
    count (those of its FSDP process group). ``store``: a
    ``torch.distributed`` store all ranks of the node reach (default: the
    default process group's); the ranks exchange small records and
    heartbeats through it. ``timeout``: seconds without a heartbeat after
    which a sibling rank is declared gone. Creating one starts a daemon
    heartbeat thread (stopped by ``close()``).
    """

    def __init__(self, rank: int, size: int, store: Any = None, *, timeout: float = 30.0,
                 heartbeat: float = 0.5, prefix: str = "pccl_py.node/"):
        import torch.distributed as dist
        if not 0 <= int(rank) < int(size):
            raise InvalidArgumentError(f"NodeGroup: rank must be in 0..size-1, got rank {rank}, size {size}")
        if not float(timeout) > 2 * float(heartbeat) > 0:
            raise InvalidArgumentError(f"NodeGroup: need timeout > 2 * heartbeat > 0, got {timeout}, {heartbeat}")
        if store is None:
            store = dist.distributed_c10d._get_default_store()
        while isinstance(store, dist.PrefixStore):  # PrefixStore.clone() loses its prefix: clone the base
            store = store.underlying_store
        self.rank, self.size = int(rank), int(size)
        self.timeout, self.heartbeat = float(timeout), float(heartbeat)
        self._store = dist.PrefixStore(prefix, store)
        self._hb_store = dist.PrefixStore(prefix, store.clone())  # one client per thread
        self._stop = threading.Event()
        self._failed_here: Optional[str] = None
        self._store.add(f"hb/{self.rank}", 1)
        self._hb = threading.Thread(target=self._beat, name=f"pccl-node-hb-{self.rank}", daemon=True)
        self._hb.start()

    def _beat(self) -> None:
        while not self._stop.wait(self.heartbeat):
            try:
                self._hb_store.add(f"hb/{self.rank}", 1)
            except Exception:  # the store is gone (node rank 0 died): the main thread finds out
                return

    def close(self) -> None:
        self._stop.set()
        self._hb.join(timeout=5)

    # -- exchanges inside the node ---------------------------------------------
    def fail(self, reason: str) -> None:
        """Marks the node failed (every sibling's next exchange raises)."""
        self._failed_here = self._failed_here or reason
        try:
            self._store.set("failed", f"rank {self.rank}: {reason}")
        except Exception:
            pass

    def _raise_if_failed(self) -> None:
        if self._failed_here is not None:
            raise NodeError(f"this node already failed: {self._failed_here}")
        if self._store.check(["failed"]):
            raise NodeError(f"node failed ({self._store.get('failed').decode(errors='replace')}); "
                            f"this rank leaves every ring too")

    def publish(self, key: str, value: bytes) -> None:
        self._store.set(f"x/{key}/{self.rank}", value)

    def exchange(self, key: str, value: bytes, wait: bool = True) -> Optional[List[bytes]]:
        """Publishes ``value`` under ``key`` and, with ``wait``, returns every
        rank's value (in rank order) once all are there. Raises NodeError when
        the node failed, or a sibling that has not published stops beating
        (``timeout``) or the store is unreachable. Keys are used once; they
        stay in the store (a few bytes per ring op of the run)."""
        try:
            self._raise_if_failed()
            self.publish(key, value)
            if not wait:
                return None
            keys = [f"x/{key}/{r}" for r in range(self.size)]
            beats = {r: (-1, time.monotonic()) for r in range(self.size) if r != self.rank}
            pause, next_beat_check = 0.0005, 0.0
            # One store round trip per poll (backing off to 20 ms: a sibling may be
            # in a long ring op), the failure flag and heartbeats once a heartbeat.
            while not self._store.check(keys):
                now = time.monotonic()
                if now >= next_beat_check:
                    next_beat_check = now + self.heartbeat
                    self._raise_if_failed()
                    for r in list(beats):
                        if self._store.check([keys[r]]):
                            del beats[r]
                            continue
                        n = self._store.add(f"hb/{r}", 0)
                        seen, since = beats[r]
                        if n != seen:
                            beats[r] = (n, now)
                        elif now - since > self.timeout:
                            raise NodeError(f"rank {r} of this node sent no heartbeat for {self.timeout:.0f} s "
                                            f"(dead?); this node leaves every ring")
                time.sleep(pause)
                pause = min(0.02, pause * 2)
            return [self._store.get(k) for k in keys]
        except NodeError:
            raise
        except (RuntimeError, OSError) as e:  # DistStoreError, connection refused: node rank 0 (the store) died
            raise NodeError(f"the node's store is unreachable ({e}); a rank of this node is gone; "
                            f"this node leaves every ring") from e

    @contextlib.contextmanager
    def guard(self, comm: Any = None):
        """Wrap the training loop's step: an error of the node's own
        collectives (FSDP's Gloo/NCCL ops failing because a rank died) marks
        the node failed, closes ``comm`` (this rank leaves its ring) and is
        raised as NodeError."""
        try:
            yield
        except NodeError:
            raise
        except (RuntimeError, OSError) as e:
            import torch.distributed as dist
            if not isinstance(e, (dist.DistError,)) and "gloo" not in str(e).lower() and \
                    "nccl" not in str(e).lower() and "connection" not in str(e).lower():
                raise
            self.fail(f"a collective inside the node failed: {e}")
            if comm is not None:
                comm.close()
            raise NodeError(f"a rank of this node is gone (its collective failed: {e}); "
                            f"this rank leaves every ring") from e


def _node_epoch(epochs: List[int]) -> int:
    """One number for the k rings' epochs (it changes whenever any ring's view does)."""
    return sum(int(e) << (64 * i) for i, e in enumerate(epochs))


class NodeAsyncOp:
    """all_reduce_async of a NodeComm: wait() also agrees with the sibling ranks."""

    def __init__(self, ncomm: "NodeComm", op: AsyncOp, restore):
        self._ncomm, self._op, self._restore = ncomm, op, restore
        self._info: Optional[OpInfo] = None

    def wait(self) -> OpInfo:
        if self._info is None:
            self._info = self._ncomm._agree(self._op.wait, self._restore)
        return self._info

    @property
    def done(self) -> bool:
        return self._info is not None


class NodeComm:
    """The ring communicator of one shard, made atomic across the node (see
    the module doc). Offers what DiLoCo uses of a Communicator:
    update_topology, wait_for_peers, all_reduce(_async), sync_state,
    all_gather_bytes, world_size, epoch (of the node: it changes when any of
    the k rings' views does), members, peer_id, close.

    Every rank of the node must call the same methods in the same order
    (they do, in a training loop with ShardedDiLoCo). A joining node's ranks
    each create their Communicator with a bootstrap address of ring
    ``node.rank`` (any node's rank ``node.rank``)."""

    def __init__(self, comm: Any, node: NodeGroup):
        self.comm, self.node = comm, node
        self._round = 0  # membership rounds of the run (joiners adopt the members')
        self._calls = 0  # update_topology calls of this NodeComm (the same on every rank)
        self._seq = 0  # collectives since the last membership point
        self._epoch = 0
        self._closed = False
        self.rounds_retried = 0  # membership rounds that ended without agreement (views differed, a loss)
        ids = node.exchange("ids", comm.peer_id.encode())
        self.node_id = ids[0].decode()  # rank 0's peer id: unique, and every rank knows it
        self.peer_ids = [i.decode() for i in ids]

    # -- plain views -----------------------------------------------------------
    @property
    def peer_id(self) -> str:
        return self.comm.peer_id

    @property
    def world_size(self) -> int:
        """Nodes of the run (every ring has one member per node)."""
        return self.comm.world_size

    @property
    def members(self) -> List[str]:
        return self.comm.members

    @property
    def epoch(self) -> int:
        return self._epoch

    @property
    def addrs(self) -> List[str]:
        return self.comm.addrs

    # -- failure -----------------------------------------------------------------
    def _fatal(self, reason: str, cause: Optional[BaseException] = None) -> "NodeError":
        self.node.fail(reason)
        self.close()
        err = NodeError(f"node {self.node_id[:16]}.. leaves every ring: {reason}")
        if cause is not None:
            err.__cause__ = cause
        return err

    def _guarded(self, fn):
        """Runs a node step; a NodeError (or a store failure) closes this rank's ring."""
        if self._closed:
            raise ClosedError("this NodeComm was closed (its node left the run)")
        try:
            return fn()
        except NodeError as e:
            self.node.fail(str(e))
            self.close()
            raise

    # -- the membership point ----------------------------------------------------
    def update_topology(self) -> None:
        """The node-atomic membership point (module doc). Blocks like a
        ring's update_topology; a joining node returns once all its ranks are
        members of their rings at the same round."""
        self._guarded(self._update_topology)

    def _record(self, joining: bool, t: Optional[int]) -> bytes:
        return (_RECORD_MAGIC + json.dumps({"n": self.node_id, "k": self.node.size, "i": self.node.rank,
                                            "r": -1 if joining or t is None else t})).encode()

    def _parse(self, blob: bytes) -> dict:
        try:
            text = blob[:_MAX_RECORD].decode()
            if len(blob) > _MAX_RECORD or not text.startswith(_RECORD_MAGIC):
                raise ValueError("not a node record")
            rec = json.loads(text[len(_RECORD_MAGIC):])
            n, k, i, r = str(rec["n"]), int(rec["k"]), int(rec["i"]), int(rec["r"])
        except (ValueError, KeyError, TypeError, UnicodeDecodeError) as e:
            raise self._fatal(f"a member of ring {self.node.rank} is not a NodeComm peer ({e})")
        if (k, i) != (self.node.size, self.node.rank):
            raise self._fatal(f"node {n[:16]}.. has {k} ranks and sent its rank {i} to ring {self.node.rank}; "
                              f"this node has {self.node.size} ranks: every node must shard the same way")
        return {"n": n, "r": r}

    def _update_topology(self) -> None:
        calls = self._calls
        self._calls += 1
        starts = self.node.exchange(f"mp{calls}/start", b"1" if self.comm.world_size > 0 else b"0")
        if len(set(starts)) != 1:
            raise self._fatal("some ranks of this node are ring members and others are not")
        joining = starts[0] == b"0"
        t: Optional[int] = None if joining else self._round
        backoff = 0.0
        while True:
            if backoff:
                time.sleep(backoff)
            try:
                self.comm.update_topology()
            except KeyboardInterrupt:
                self.node.fail("interrupted")
                raise
            except PcclError as e:  # removed from the view, join timeout, closed: this rank is out
                raise self._fatal(f"ring {self.node.rank}: update_topology failed ({e})", e)
            ok, nodes = True, None
            try:
                recs = [self._parse(b) for b in self.comm.all_gather_bytes(self._record(joining, t), tag=_TAG_RECORD)]
                nodes = sorted({r["n"] for r in recs})
                if t is None:
                    known = [r["r"] for r in recs if r["r"] >= 0]
                    t = max(known) if known else 0
            except PeerLostError:
                ok = False
            if joining:
                agree = 1 if ok else 0
            else:
                views = self.node.exchange(f"r{t}/view", json.dumps([ok, nodes]).encode(), wait=ok)
                agree = int(ok and all(json.loads(v) == [True, nodes] for v in views)) if ok else 0
            flag = 0
            if ok:
                try:
                    a = np.array([agree], np.int32)
                    self.comm.all_reduce(a, op="min", tag=_TAG_FLAG)
                    flag = int(a[0])
                except PeerLostError:
                    ok = False
            if t is not None:
                mine = json.dumps([bool(ok and flag), int(self.comm.epoch)]).encode()
                outcomes = self.node.exchange(f"r{t}/done", mine, wait=bool(ok and flag))
                if outcomes is not None:
                    parsed = [json.loads(o) for o in outcomes]
                    if all(p[0] for p in parsed):
                        self._round = t + 1
                        self._seq = 0
                        self._epoch = _node_epoch([p[1] for p in parsed])
                        return
                t += 1
            # Views differ (a joiner is in some rings only, or a death is seen in some
            # rings only): the next round, after a pause so a slow ring catches up.
            self.rounds_retried += 1
            backoff = min(0.2, backoff * 2 or 0.01)

    def wait_for_peers(self, n: int, timeout: float = 300.0) -> int:
        """Membership points until the run has at least ``n`` nodes (or
        TimeoutError); every rank of every node calls it (a joining node's
        too: its ranks ask to join in it)."""
        from .errors import TimeoutError as PcclTimeout
        deadline = time.monotonic() + float(timeout)
        while True:
            self.update_topology()
            if self.world_size >= int(n):
                return self.world_size
            if time.monotonic() > deadline:
                raise PcclTimeout(f"wait_for_peers: {self.world_size} of {n} nodes after {timeout} s")
            time.sleep(0.05)

    # -- collectives, agreed across the node ---------------------------------------
    def _agree(self, run, restore=None, extra=None):
        """Runs one ring op, then agrees with the siblings: it succeeded only
        if it did on every rank. ``extra(result)`` adds a JSON value that the
        siblings combine (returned as the second element)."""
        def body():
            key = f"r{self._round}/c{self._calls}/op{self._seq}"
            self._seq += 1
            err: Optional[PeerLostError] = None
            result = None
            try:
                result = run()
            except PeerLostError as e:
                err = e
            except PcclError as e:  # timeout, closed, protocol: this rank cannot go on, nor can its node
                raise self._fatal(f"ring {self.node.rank}: {type(e).__name__}: {e}", e)
            mine = json.dumps([err is None, extra(result) if (extra and err is None) else None]).encode()
            parsed = [json.loads(v) for v in self.node.exchange(key, mine)]
            if all(p[0] for p in parsed):
                return (result, [p[1] for p in parsed]) if extra else result
            if err is None and restore is not None:
                restore()
            raise err or PeerLostError("a peer was lost in another ring of this node's shards during this op; "
                                       "update_topology() and retry (the node retries as a whole)")
        return self._guarded(body)

    @staticmethod
    def _backup(x: Any, out: Any, backup: bool):
        """Restores the input when this rank's op succeeded but a sibling's
        failed (the core restores it only after its own failure)."""
        if out is not None or not backup:
            return None
        if isinstance(x, np.ndarray):
            saved = x.copy()
            return lambda: np.copyto(x, saved)
        saved = x.detach().clone()
        return lambda: x.detach().copy_(saved)

    def all_reduce(self, x: Any, op: str = "sum", *, out: Any = None, tag: int = 0, retry: bool = False,
                   backup: bool = True, **kw) -> OpInfo:
        """Communicator.all_reduce on this shard's ring, agreed across the node."""
        attempts = 0
        while True:
            attempts += 1
            restore = self._backup(x, out, backup)
            try:
                return self._agree(lambda: self.comm.all_reduce(x, op, out=out, tag=tag, backup=backup, **kw),
                                   restore)
            except PeerLostError:
                if not retry:
                    raise
                self.update_topology()

    def all_reduce_async(self, x: Any, op: str = "sum", *, out: Any = None, tag: int = 0, backup: bool = True,
                         **kw) -> NodeAsyncOp:
        restore = self._backup(x, out, backup)
        h = self._guarded(lambda: self.comm.all_reduce_async(x, op, out=out, tag=tag, backup=backup, **kw))
        return NodeAsyncOp(self, h, restore)

    def all_gather_bytes(self, data: bytes, *, tag: int = 0, return_info: bool = False):
        return self._agree(lambda: self.comm.all_gather_bytes(data, tag=tag, return_info=return_info))

    def sync_state(self, state: Mapping[str, Any], revision: int, *, retry: bool = False,
                   versions: Optional[Mapping[str, int]] = None) -> SyncInfo:
        """Communicator.sync_state of this rank's shard on its ring (so a
        joining node's every rank receives its own shard), agreed across the
        node: the returned revision and tensors_received are the node's
        maximum, so every rank takes the same path afterwards."""
        while True:
            try:
                info, each = self._agree(lambda: self.comm.sync_state(state, revision, versions=versions),
                                         extra=lambda i: [int(i.revision), int(i.tensors_received)])
                return SyncInfo(info.tx_bytes, info.rx_bytes, max(e[0] for e in each), max(e[1] for e in each),
                                info.tensors_sent, info.world_size, info.attempts)
            except PeerLostError:
                if not retry:
                    raise
                self.update_topology()

    def close(self) -> None:
        self._closed = True
        self.comm.close()

    def __repr__(self) -> str:
        return (f"NodeComm(node={self.node_id[:16]}.., rank={self.node.rank}/{self.node.size}, "
                f"world_size={self.world_size})")


def local_shards(model: Any) -> List[torch.Tensor]:
    """The trainable parameters of ``model`` as this rank holds them: the
    local shard of each DTensor (FSDP2's storage, updated in place by the
    inner optimizer), plain tensors as they are."""
    ps = model.parameters() if isinstance(model, torch.nn.Module) else model
    out = []
    with torch.no_grad():
        for p in ps:
            if not p.requires_grad:
                continue
            out.append(p.to_local() if hasattr(p, "to_local") else p)
    return out


class ShardedDiLoCo(StreamingDiLoCo):
    """DiLoCo on the local shards of an FSDP2 model, one ring per shard,
    nodes joining and leaving all rings at once (module doc).

    ``comm``: this rank's Communicator on ring ``node.rank`` (or a NodeComm);
    ``node``: the NodeGroup of this process. Every rank of every node builds
    it the same way; the options are DiLoCo's. A joining node's ranks each
    receive their own shard of the global copy and outer momentum in their
    first step().
    """

    def __init__(self, model: Any, inner: torch.optim.Optimizer, comm: Any, node: Optional[NodeGroup] = None,
                 sync_every: int = 500, outer_lr: float = 0.7, outer_momentum: float = 0.9,
                 nesterov: bool = True, quant: Optional[str] = None, compressor: Any = None,
                 delayed: bool = False, outer_device: str = "cpu"):
        if not isinstance(comm, NodeComm):
            if node is None:
                raise InvalidUsageError("ShardedDiLoCo needs node=NodeGroup(...) (or a NodeComm as comm)")
            comm = NodeComm(comm, node)
        shards = local_shards(model)
        if not shards:
            raise InvalidArgumentError("the model has no trainable parameters")
        super().__init__(shards, inner, comm, sync_every=sync_every, fragments=1,
                         overlap_steps=sync_every if delayed else 0, alpha=0.0,
                         fragment_fn=lambda m, p: [shards], outer_lr=outer_lr, outer_momentum=outer_momentum,
                         nesterov=nesterov, quant=quant, compressor=compressor, outer_device=outer_device)
        self.delayed = bool(delayed)
        self.node_comm = comm


__all__ = ["NodeAsyncOp", "NodeComm", "NodeError", "NodeGroup", "ShardedDiLoCo", "local_shards"]
