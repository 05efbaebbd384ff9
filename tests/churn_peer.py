"""One peer process of a churn test (driven by tests/harness.py with
script=CHURN_PEER). Prints {"addrs", "peer_id"} first, then one JSON line per
event. Every input is a pure function of (peer id, epoch, op index) or of
(index, ...) so the test can recompute each member's contribution.

Times in messages are time.time() (one clock for every process of the
machine), so the test can measure from a kill to a survivor's reaction.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import sys
import threading
import time

import numpy as np

import pccl_py as pc

CHURN_PEER = os.path.abspath(__file__)


def say(**kw) -> None:
    print(json.dumps(kw), flush=True)


def digest(x: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(x).tobytes()).hexdigest()


def round_input(peer_id: str, epoch: int, op: int, count: int) -> np.ndarray:
    """The int64 input of `peer_id` for op `op` of view `epoch`."""
    seed = int.from_bytes(hashlib.sha256(f"{peer_id}/{epoch}/{op}".encode()).digest()[:8], "little")
    return np.random.default_rng(seed).integers(-1_000_000, 1_000_000, count, dtype=np.int64)


def big_input(index: int, count: int) -> np.ndarray:
    """Integer-valued f32 (|x| <= 1000): sums of a few peers are exact."""
    return np.random.default_rng(index).integers(-1000, 1001, count).astype(np.float32)


def state_of(seed: int, sizes: dict) -> dict:
    rng = np.random.default_rng(seed)
    return {name: rng.integers(0, 256, n, dtype=np.uint8).view(np.uint8) for name, n in sizes.items()}


def state_digest(state: dict) -> str:
    h = hashlib.sha256()
    for name in sorted(state):
        h.update(name.encode())
        h.update(np.ascontiguousarray(state[name]).tobytes())
    return h.hexdigest()


def communicator(args: dict, bootstrap=None) -> pc.Communicator:
    comm = pc.Communicator(bootstrap=args.get("bootstrap", []) if bootstrap is None else bootstrap,
                           run_key=args.get("key", "churn-key"), timeout=args.get("timeout", 3.0),
                           streams=args.get("streams", 2), key_file=args.get("key_file"),
                           join_timeout=args.get("join_timeout", 60.0))
    say(addrs=comm.addrs, peer_id=comm.peer_id)
    return comm


def form(comm: pc.Communicator, n: int) -> None:
    while comm.world_size < n:
        comm.update_topology()


def commands():
    for line in sys.stdin:
        yield json.loads(line)


# ------------------------------------------------------------------ scenarios

def scenario_big_kill(args: dict) -> None:
    """4 peers all-reduce a large f32 buffer in place; peer `victim` SIGKILLs
    itself `kill_after` s into the op. Survivors report the error, whether
    their input was restored, then retry on the survivors."""
    comm = communicator(args)
    form(comm, args["n"])
    me, count = args["index"], args["count"]
    algorithm = args.get("algorithm", "ring")
    x = big_input(me, count)
    comm.all_reduce(x.copy(), algorithm=algorithm)  # warm-up: every data link is up before the measured op
    say(formed=True, members=comm.members)
    x = big_input(me, count)
    orig = digest(x)
    if me == args["victim"]:
        def die():
            time.sleep(args["kill_after"])
            say(kill_at=time.time())
            os.kill(os.getpid(), signal.SIGKILL)
        threading.Thread(target=die, daemon=True).start()
    t0 = time.time()
    try:
        comm.all_reduce(x, algorithm=algorithm)
        say(error=None, t=time.time(), t0=t0)
        return
    except pc.PeerLostError as e:
        say(error="PeerLostError", msg=str(e), t=time.time(), t0=t0, restored=digest(x) == orig)
    comm.update_topology()
    info = comm.all_reduce(x, retry=True, algorithm=algorithm)
    exact = sum(big_input(i, count).astype(np.float64) for i in range(args["n"]) if i != args["victim"])
    say(world=info.world_size, digest=digest(x), exact=bool(np.array_equal(x.astype(np.float64), exact)))
    comm.close()


def scenario_rounds(args: dict) -> None:
    """The churn worker: all-reduces of round_input(...) forever (until
    `max_ok` successes or `duration` s), update_topology() every `topo_every`
    successes of a view and after every failure. A peer with "joiner" set
    waits to be admitted first."""
    if args.get("joiner"):
        try:
            comm = communicator(args)
            comm.update_topology()
        except (pc.NetworkError, pc.TimeoutError, pc.PeerLostError) as e:  # every bootstrap peer died meanwhile
            say(boot_failed=True, msg=str(e)[:300])
            return
    else:
        comm = communicator(args)
        form(comm, args["n"])
    say(formed=True, epoch=comm.epoch, members=comm.members)
    count, every = args.get("count", 1024), args.get("topo_every", 4)
    deadline = time.time() + args.get("duration", 50.0)
    epoch, op, oks = -1, 0, 0
    while time.time() < deadline and oks < args.get("max_ok", 10**9):
        if comm.epoch != epoch:
            epoch, op = comm.epoch, 0
        members = comm.members
        x = round_input(comm.peer_id, epoch, op, count)
        t0 = time.time()
        try:
            info = comm.all_reduce(x)
            assert info.epoch == epoch and info.world_size == len(members)
            say(ok=True, epoch=epoch, op=op, members=members, digest=digest(x), t=time.time())
            op, oks = op + 1, oks + 1
            if op % every == 0:
                comm.update_topology()
        except (pc.PeerLostError, pc.TimeoutError) as e:
            say(ok=False, epoch=epoch, op=op, err=type(e).__name__, msg=str(e)[:300], t0=t0, t=time.time())
            try:
                comm.update_topology()
            except pc.PeerLostError as e2:  # the others removed us
                say(removed=True, msg=str(e2)[:300], t=time.time())
                break
    say(done=True, oks=oks)
    comm.close()


def scenario_state_join(args: dict) -> None:
    """Members train a state (revision grows each round) and sync it after
    each update_topology that grows the world; a joiner (args["joiner"])
    starts with zeros and revision 0, receives the state, then takes part in
    `after` all-reduces."""
    comm = communicator(args)
    sizes = args["sizes"]
    if args.get("joiner"):
        comm.update_topology()
        state = {name: np.zeros(n, np.uint8) for name, n in sizes.items()}
        revision = 0
    else:
        form(comm, args["n"])
        state, revision = state_of(1234, sizes), 0
    world = comm.world_size
    after = 0
    while after < args["after"]:
        if comm.world_size != world or args.get("joiner") and revision == 0:
            info = comm.sync_state(state, revision)
            revision = info.revision
            say(synced=True, revision=revision, digest=state_digest(state), received=info.tensors_received,
                rx=info.rx_bytes, world=info.world_size)
            world = comm.world_size
        x = round_input(comm.peer_id, comm.epoch, revision, 256)
        members = comm.members
        comm.all_reduce(x)
        # "training": the state moves by the reduced value (same on every member)
        first = next(iter(sorted(state)))
        state[first][: 8] = np.frombuffer(x[:1].tobytes(), np.uint8)
        revision += 1
        if world > args["n"]:
            after += 1
            say(round=True, revision=revision, members=members, digest=digest(x), state=state_digest(state))
        comm.update_topology()
    comm.close()


def scenario_partition(args: dict) -> None:
    """A peer of one side of a partition: forms its group, holds `seed`'s
    state at `revision`, reports it; on {"merge": addrs} it restarts its
    communicator bootstrapping into the other group; then, or at once for the
    other side, it waits until the world has `total` members and syncs."""
    comm = communicator(args)
    form(comm, args["n"])
    state = state_of(args["seed"], args["sizes"])
    revision = args["revision"]
    info = comm.sync_state(state, revision)  # agree inside the group first
    say(group=True, members=comm.members, digest=state_digest(state), revision=info.revision)
    for cmd in commands():
        if "merge" in cmd:
            comm.close()
            comm = communicator(args, bootstrap=cmd["merge"])
            comm.update_topology()
        if "sync" in cmd:
            form(comm, cmd["sync"])
            info = comm.sync_state(state, revision)
            say(synced=True, members=comm.members, digest=state_digest(state), revision=info.revision,
                received=info.tensors_received, world=info.world_size)
            break
    comm.close()


if __name__ == "__main__":
    globals()["scenario_" + sys.argv[1]](json.loads(sys.argv[2]))
