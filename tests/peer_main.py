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
    if op == "avg":  # the wrapped sum / n, rounded to nearest, ties away from zero
        wide = exact.astype(np.int64)
        neg = wide < 0
        mag = np.where(neg, (-(wide + 1)).astype(np.uint64) + np.uint64(1), exact.astype(np.uint64))
        q = mag // np.uint64(n) + (mag % np.uint64(n) * np.uint64(2) >= np.uint64(n)).astype(np.uint64)
        exact = np.where(neg, -(q.astype(np.int64)), q.astype(np.int64)).astype(exact.dtype) \
            if exact.dtype.kind == "i" else q.astype(exact.dtype)
    return 0.0 if np.array_equal(result, exact) else float("inf")


def scenario_allreduce_matrix(args: dict) -> None:
    comm = join(args)
    results = []
    for case, (dtype, op, count) in enumerate(args["cases"]):
        x = make_input(dtype, count, args["index"], case)
        info = comm.all_reduce(x, op=op, algorithm=args.get("algorithm", "ring"))
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


# -- quantized all-reduce ------------------------------------------------------
QUANT_QMAX = {"int8": 127.0, "int4": 7.0}


def quant_input(dist: str, count: int, index: int, case: int) -> np.ndarray:
    """Deterministic float32 input of one peer for the quantized all-reduce tests."""
    rng = np.random.default_rng(7000 * case + index)
    if dist == "normal":
        x = rng.normal(0.0, 1.0, count)
    elif dist == "uniform":
        x = rng.uniform(-3.0, 3.0, count)
    elif dist == "heavy":  # Student t, 2 degrees of freedom: infinite variance
        x = rng.standard_t(2.0, count)
    elif dist == "negative":
        x = rng.uniform(-5.0, -1.0, count)
    elif dist == "constant":
        x = np.full(count, 0.3 + index)
    else:
        raise ValueError(dist)
    return x.astype(np.float32)


def quant_error_bound(quant: str, op: str, stochastic: bool, inputs: list[np.ndarray]) -> float:
    """Analytic bound on max |result - exact| for the quantized ring.

    A = max_i sum_k |x_k[i]| bounds every partial sum (and every block's
    absmax). Each of the n-1 reduce-scatter hops quantizes a partial of
    magnitude <= A + E (E: error so far) with error <= rel * (A + E), and the
    owner quantizes the final value once more (divided by n for avg). rel:
    int8/int4 half a step of absmax/qmax (a full step when stochastic); e3m0
    half its largest gap (scale/2 .. scale) = 1/4 of absmax (stochastic 1/2);
    fp16/bf16 half an ulp relative plus fp16's subnormal half-ulp. A small term
    covers the f32 additions and decode multiplies."""
    n = len(inputs)
    a = float(np.max(np.sum([np.abs(x.astype(np.float64)) for x in inputs], axis=0)))
    if quant in QUANT_QMAX:
        rel, tiny = (1.0 if stochastic else 0.5) / QUANT_QMAX[quant], 0.0
    elif quant == "e3m0":
        rel, tiny = (0.5 if stochastic else 0.25), 0.0
    elif quant == "fp16":
        rel, tiny = 2.0 ** -11, 2.0 ** -25
    else:  # bf16
        rel, tiny = 2.0 ** -8, 2.0 ** -134
    e = 0.0
    for _ in range(n - 1):
        e += rel * (a + e) + tiny + 2.0 ** -23 * (a + e)
    div = n if op == "avg" else 1
    a, e = a / div, e / div
    return e + rel * (a + e) + tiny + 2.0 ** -22 * a * n


def scenario_quant_allreduce(args: dict) -> None:
    comm = join(args)
    results = []
    for case, (dist, quant, op, count, stochastic) in enumerate(args["cases"]):
        x = quant_input(dist, count, args["index"], case)
        info = comm.all_reduce(x, op=op, quant=quant, stochastic=stochastic, algorithm=args.get("algorithm", "ring"))
        exact = sum(quant_input(dist, count, i, case).astype(np.float64) for i in range(args["n"]))
        if op == "avg":
            exact = exact / args["n"]
        results.append({"digest": digest(x), "tx": info.tx_bytes, "rx": info.rx_bytes, "world": info.world_size,
                        "err": float(np.max(np.abs(x.astype(np.float64) - exact), initial=0.0))})
    say(results=results)
    comm.close()


def scenario_freezing_joiner(args: dict) -> None:
    """A DiLoCo joiner that freezes itself (SIGSTOP, the whole process) the
    moment it is admitted, i.e. as its state transfer starts. After the test
    sends SIGCONT it carries on (rejoining) until the step the test sends
    ({"stop": step}), then reports its global params."""
    import os
    import signal
    import threading
    import time

    import torch

    comm = pc.Communicator(bootstrap=args["bootstrap"], run_key=args["key"], timeout=args["timeout"],
                           heartbeat_timeout=args["heartbeat_timeout"])
    say(addrs=comm.addrs, peer_id=comm.peer_id)
    torch.manual_seed(5)
    model = torch.nn.Sequential(*[torch.nn.Linear(1024, 1024) for _ in range(args["layers"])])
    opt = pc.DiLoCo(model, torch.optim.SGD(model.parameters(), lr=1e-3), comm, sync_every=args["h"])
    stop = [1 << 62]

    def freeze_when_admitted():
        while comm.world_size == 0:
            time.sleep(0.001)
        os.kill(os.getpid(), signal.SIGSTOP)

    def read_stop():
        stop[0] = json.loads(sys.stdin.readline())["stop"]

    threading.Thread(target=freeze_when_admitted, daemon=True).start()
    threading.Thread(target=read_stop, daemon=True).start()
    worlds = []
    while opt.step_count < stop[0]:
        model(torch.ones(2, 1024)).sum().backward()
        opt.step()
        opt.zero_grad()
        if not worlds or worlds[-1][1] != comm.world_size:
            worlds.append((opt.step_count, comm.world_size))
            say(worlds=worlds)
    say(global_=digest(opt.global_params()[0].numpy()), world=comm.world_size, retries=opt.retries, worlds=worlds)
    comm.close()


def scenario_compiled_diloco(args: dict) -> None:
    """DiLoCo under torch.compile: the model and the whole training step
    (forward, backward, opt.step(), zero_grad, an LR scheduler) compiled;
    reports the global params' digest, the loss and the compiled graphs."""
    import torch

    from pccl_py._training import TeacherTask, make_student

    torch.set_num_threads(1)
    comm = join(args)
    model = make_student(1)
    opt = pc.DiLoCo(model, torch.optim.AdamW(model.parameters(), lr=2e-3), comm, sync_every=5)
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=7, gamma=0.5)
    backend = args["backend"]  # None: the same loop, eager
    fwd = torch.compile(model, backend=backend) if backend else model

    def train_step(x, y):
        loss = torch.nn.functional.mse_loss(fwd(x), y)
        loss.backward()
        opt.step()
        opt.zero_grad()
        sched.step()
        return loss

    if backend:
        train_step = torch.compile(train_step, backend=backend)

    data = TeacherTask(1).batches(args["index"], 16)
    losses = [float(train_step(*next(data))) for _ in range(23)]
    say(global_=digest(opt.global_params()[0].numpy()), params=opt.global_params()[0].tolist(),
        steps=opt.step_count, syncs=opt.outer_syncs, world=comm.world_size, lr=opt.param_groups[0]["lr"])
    comm.close()


if __name__ == "__main__":
    globals()["scenario_" + sys.argv[1]](json.loads(sys.argv[2]))
