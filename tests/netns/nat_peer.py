"""One peer process of a NAT test, run inside a namespace (tests/netns/netns.py).

Usage: nat_peer.py SCENARIO ARGS_JSON; prints one JSON object per line, the
first being {"addrs": [...], "peer_id": ...}.

Scenario "ring": join (or start) a run of args["n"] peers, all-reduce a
deterministic f32 vector (input of peer i = i + 1 + arange/1024), print the
result's sha256, the seconds the all-reduce took and the per-neighbour connection kinds (again after
args["settle"] seconds, if given), then linger
args["linger"] seconds (so that no peer leaves while another still needs it).
"""

from __future__ import annotations

import hashlib
import json
import sys
import time

import numpy as np

import pccl_py as pc


def say(**kw) -> None:
    print(json.dumps(kw), flush=True)


def make_comm(args: dict) -> pc.Communicator:
    kw = dict(args.get("comm", {}))
    return pc.Communicator(listen=args["listen"], bootstrap=args.get("bootstrap", []),
                           run_key=args.get("key", "netns-key"), timeout=args.get("timeout", 10.0),
                           join_timeout=args.get("join_timeout", 30.0), streams=args.get("streams", 2), **kw)


def ring(args: dict) -> None:
    t0 = time.monotonic()
    try:
        comm = make_comm(args)
    except pc.PcclError as e:
        say(error=type(e).__name__, message=str(e))
        return
    info = {"addrs": comm.addrs, "peer_id": comm.peer_id}
    if hasattr(comm, "reachability"):
        info["reachability"] = comm.reachability
    say(**info)
    try:
        comm.wait_for_peers(args["n"], timeout=args.get("join_timeout", 30.0))
        say(joined=comm.world_size, members=comm.members, join_s=time.monotonic() - t0)
        x = (np.arange(args.get("count", 1 << 16), dtype=np.float32) / 1024 + args["index"] + 1).astype(np.float32)
        t1 = time.monotonic()
        comm.all_reduce(x)
        out = {"digest": hashlib.sha256(x.tobytes()).hexdigest(), "world": comm.world_size,
               "first": float(x[0]), "op_s": time.monotonic() - t1}
        if hasattr(comm, "connections"):
            out["connections"] = comm.connections()
        say(**out)
        if args.get("settle"):  # the connections once relayed links replaced by direct ones are retired
            time.sleep(args["settle"])
            say(connections=comm.connections())
    except Exception as e:  # noqa: BLE001  (the test asserts on the message)
        say(error=type(e).__name__, message=str(e))
    time.sleep(args.get("linger", 3.0))
    comm.close()


def relay(args: dict) -> None:
    """A relay only (its own run of one): serves reservations until killed."""
    comm = make_comm({**args, "comm": {"relay": True}})
    say(addrs=comm.addrs, peer_id=comm.peer_id)
    for _ in sys.stdin:
        pass
    comm.close()


def rounds(args: dict) -> None:
    """Joins a run of args["n"] peers, then on each {"round": k} from stdin
    all-reduces (with retry; after an update_topology() with "topo") and reports
    the digest, the world size, the members in ring order, its connections,
    addresses and reservations; {"state": 1} reports the last three and the
    reachability."""
    comm = make_comm(args)
    say(addrs=comm.addrs, peer_id=comm.peer_id, reachability=comm.reachability)
    try:
        comm.wait_for_peers(args["n"], timeout=args.get("join_timeout", 60.0))
        say(joined=comm.world_size)
        for line in sys.stdin:
            cmd = json.loads(line)
            state = {"connections": comm.connections(), "addrs": comm.addrs, "reservations": comm.reservations,
                     "reachability": comm.reachability}
            if cmd.get("topo"):
                comm.update_topology()
            if "round" in cmd:
                x = (np.arange(args.get("count", 1 << 16), dtype=np.float32) / 1024 + args["index"] + 1)
                info = comm.all_reduce(x, retry=True)
                state = {"digest": hashlib.sha256(x.tobytes()).hexdigest(), "world": info.world_size,
                         "attempts": info.attempts, "connections": comm.connections(), "addrs": comm.addrs,
                         "reservations": comm.reservations, "members": comm.members}
            say(**state)
    except Exception as e:  # noqa: BLE001  (the test asserts on the message)
        say(error=type(e).__name__, message=str(e))
    comm.close()


if __name__ == "__main__":
    {"ring": ring, "relay": relay, "rounds": rounds}[sys.argv[1]](json.loads(sys.argv[2]))
