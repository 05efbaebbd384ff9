"""One peer process of a multi-peer test (driven by tests/harness.py).

Usage: peer_main.py SCENARIO ARGS_JSON. Prints {"addrs": [...]} first, then
one JSON line per result. Inputs are derived from (index, case) so the test
can recompute every member's contribution.
"""

from __future__ import annotations

import hashlib
import json
import sys

import numpy as np

import pccl_py as pc


def say(**kw) -> None:
    print(json.dumps(kw), flush=True)


def join(args: dict) -> pc.Communicator:
    comm = pc.Communicator(bootstrap=args["bootstrap"], run_key=args.get("key", "test-key"),
                           timeout=args.get("timeout", 20.0), streams=args.get("streams", 2))
    say(addrs=comm.addrs, peer_id=comm.peer_id)
    while comm.world_size < args["n"]:
        comm.update_topology()
    return comm


def make_input(dtype: str, count: int, index: int, case: int):
    """Deterministic per-peer input; small integers so sums stay exact."""
    rng = np.random.default_rng(1000 * case + index)
    if dtype in ("f32", "f64", "f16"):
        return rng.uniform(-4, 4, count).astype({"f32": np.float32, "f64": np.float64, "f16": np.float16}[dtype])
    if dtype == "bf16":
        import torch
        return torch.from_numpy(rng.uniform(-4, 4, count).astype(np.float32)).to(torch.bfloat16)
    np_dtype = np.dtype({"i8": "int8", "i16": "int16", "i32": "int32", "i64": "int64",
                         "u8": "uint8", "u16": "uint16", "u32": "uint32", "u64": "uint64"}[dtype])
    lo = -3 if np_dtype.kind == "i" else 0
    return rng.integers(lo, 4, count).astype(np_dtype)


def digest(x) -> str:
    if hasattr(x, "view") and not isinstance(x, np.ndarray):  # torch
        import torch
        x = x.view(torch.int16).numpy()
    return hashlib.sha256(np.ascontiguousarray(x).tobytes()).hexdigest()


def as_f64(x) -> np.ndarray:
    if isinstance(x, np.ndarray):
        return x.astype(np.float64)
    return x.float().numpy().astype(np.float64)


def max_error(dtype: str, op: str, count: int, n: int, case: int, result) -> float:
    """Max abs deviation of `result` from the exact reduction of all n inputs
    (0.0 means exact). Integers must match exactly, with wrap-around."""
    inputs = [make_input(dtype, count, i, case) for i in range(n)]
    if dtype in ("f32", "f64", "f16", "bf16"):
        vals = [as_f64(x) for x in inputs]
        exact = {"sum": sum(vals), "avg": sum(vals) / n, "min": np.minimum.reduce(vals),
                 "max": np.maximum.reduce(vals), "prod": np.multiply.reduce(vals)}[op]
        return float(np.max(np.abs(as_f64(result) - exact), initial=0.0))
    ufunc = {"sum": np.add, "avg": np.add, "min": np.minimum, "max": np.maximum, "prod": np.multiply}[op]
    with np.errstate(over="ignore"):
        exact = ufunc.reduce(np.stack(inputs), axis=0).astype(inputs[0].dtype)
    if op == "avg":
        wide = exact.astype(np.int64) if exact.dtype.kind == "i" else exact.astype(np.uint64)
        q = np.abs(wide) // n if exact.dtype.kind == "i" else wide // n
        exact = (np.sign(wide) * q if exact.dtype.kind == "i" else q).astype(exact.dtype)
    return 0.0 if np.array_equal(result, exact) else float("inf")


def scenario_allreduce_matrix(args: dict) -> None:
    comm = join(args)
    results = []
    for case, (dtype, op, count) in enumerate(args["cases"]):
        x = make_input(dtype, count, args["index"], case)
        info = comm.all_reduce(x, op=op)
        results.append({"digest": digest(x), "world": info.world_size, "tx": info.tx_bytes,
                        "err": max_error(dtype, op, count, args["n"], case, x)})
    say(results=results, members=comm.members)
    comm.close()


def scenario_async(args: dict) -> None:
    comm = join(args)
    xs = [make_input("f32", 100_000 + 17 * t, args["index"], t) for t in range(4)]
    handles = [comm.all_reduce_async(x, op="sum", tag=t) for t, x in enumerate(xs)]
    infos = [h.wait() for h in handles]
    say(digests=[digest(x) for x in xs], worlds=[i.world_size for i in infos])
    comm.close()


if __name__ == "__main__":
    globals()["scenario_" + sys.argv[1]](json.loads(sys.argv[2]))
