"""``python -m pccl_py demo``: DiLoCo training of a small byte-level GPT on
the standard library's own sources (held-out files for eval) across N local
peer processes, with a peer killed halfway and a fresh one joining, against a
data-parallel baseline. Prints live progress and a final table; writes a PNG
of eval loss per peer against inner step and against bytes sent, the kill
and the join marked.

Process model: the parent starts ``python -m pccl_py peer ...`` children; each
prints one JSON line per event on stdout, which the parent reads. Children die
with the parent (PR_SET_PDEATHSIG on Linux, and EOF on their stdin anywhere),
and the parent kills every child on any exit path (normal end, exception,
Ctrl-C, SIGTERM).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import threading
import time
import zlib
from typing import Any, Dict, List, Optional

RUN_KEY = "pccl-py-demo"


# --------------------------------------------------------------------- a peer
def peer_main(argv: List[str]) -> int:
    ap = argparse.ArgumentParser(prog="pccl-py peer", description="one DiLoCo demo peer (started by the demo)")
    ap.add_argument("--name", required=True)
    ap.add_argument("--bootstrap", default="")
    ap.add_argument("--group", type=int, default=0, help="form a group of this many peers first (0: join a run)")
    ap.add_argument("--steps", type=int, default=600)
    ap.add_argument("--sync-every", type=int, default=50)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--lr", type=float, default=3e-3)
    ap.add_argument("--timeout", type=float, default=5.0)
    ap.add_argument("--width", type=int, default=64, help="TinyGPT model width")
    ap.add_argument("--layers", type=int, default=2, help="TinyGPT blocks")
    ap.add_argument("--mode", choices=["diloco", "dp"], default="diloco")
    ap.add_argument("--wait-go", action="store_true", help="start only after a line on stdin (a warm spare)")
    ap.add_argument("--hold-at", type=int, default=0, help="after this step, wait for a line on stdin")
    a = ap.parse_args(argv)

    import torch
    if a.wait_go and not sys.stdin.readline():
        return 3
    # The parent holds our stdin: each line is a "go" (see --hold-at); EOF means it is gone.
    go = threading.Semaphore(0)

    def watch_parent() -> None:
        for _ in sys.stdin:
            go.release()
        os._exit(3)

    threading.Thread(target=watch_parent, daemon=True).start()

    import pccl_py as pc
    from ._lm import StdlibText, TinyGPT
    from ._training import DataParallel
    from .diloco import DiLoCo

    torch.set_num_threads(1)

    def emit(**kv: Any) -> None:
        print(json.dumps(dict(peer=a.name, **kv)), flush=True)

    comm = pc.Communicator(bootstrap=[a.bootstrap] if a.bootstrap else [], run_key=RUN_KEY, timeout=a.timeout)
    emit(event="addr", addr=comm.addrs[0])
    if a.group:
        comm.wait_for_peers(a.group, timeout=60.0)
    task = StdlibText(ctx=64)
    seed = 1 if a.mode == "dp" else zlib.crc32(a.name.encode()) % 10_000  # DiLoCo's first sync equalizes inits
    model = TinyGPT(ctx=task.ctx, d=a.width, layers=a.layers, heads=4, seed=seed)
    inner = torch.optim.AdamW(model.parameters(), lr=a.lr, weight_decay=0.01)
    opt: Any = DataParallel(model, inner, comm) if a.mode == "dp" else DiLoCo(model, inner, comm,
                                                                              sync_every=a.sync_every)
    data = task.batches(stream=zlib.crc32(a.name.encode()) % 10_000, batch=a.batch)
    emit(event="ready", ready=True)  # model and data in hand: the first step asks to join (a joiner)
    step, t0 = 0, time.monotonic()
    while step < a.steps:
        x, y = next(data)
        loss = torch.nn.functional.cross_entropy(model(x).reshape(-1, 256), y.reshape(-1))
        loss.backward()
        opt.step()
        opt.zero_grad()
        step = opt.step_count if a.mode == "diloco" else step + 1
        if step % 10 == 0 or step == a.steps:
            emit(event="progress", step=step, loss=loss.item(), tx=opt.tx_bytes, world=comm.world_size)
        if step % a.sync_every == 0:
            emit(event="eval", step=step, eval=task.eval_loss(model), tx=opt.tx_bytes)
        if step == a.hold_at:  # the parent kills a peer and starts a joiner meanwhile
            emit(event="hold", step=step)
            go.acquire()
    final = task.eval_loss(model)
    digest = ""
    if a.mode == "diloco":
        import hashlib
        digest = hashlib.sha256(opt.global_params()[0].numpy().tobytes()).hexdigest()[:16]
    emit(event="done", step=step, eval=final, tx=opt.tx_bytes, digest=digest, wall=time.monotonic() - t0,
         retries=getattr(opt, "retries", 0))
    comm.close()
    return 0


# ------------------------------------------------------------------ the parent
def _die_with_parent() -> None:  # runs in the child before exec
    try:
        import ctypes
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except Exception:
        pass


class _Peer:
    def __init__(self, name: str, args: List[str], events: "_Board"):
        cmd = [sys.executable, "-m", "pccl_py", "peer", "--name", name] + args
        env = dict(os.environ)
        pkg_root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
        env["PYTHONPATH"] = pkg_root + os.pathsep + env.get("PYTHONPATH", "")
        self.name = name
        self.proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                     text=True, env=env,
                                     preexec_fn=_die_with_parent if sys.platform.startswith("linux") else None)
        self.stderr: List[str] = []
        threading.Thread(target=self._read, args=(events,), daemon=True).start()
        threading.Thread(target=lambda: self.stderr.extend(self.proc.stderr), daemon=True).start()

    def _read(self, board: "_Board") -> None:
        for line in self.proc.stdout:
            try:
                board.update(json.loads(line))
            except ValueError:
                pass

    def go(self) -> None:
        self.proc.stdin.write("go\n")
        self.proc.stdin.flush()

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(timeout=10)


class _Board:
    """What the parent knows about every peer (updated by reader threads)."""

    def __init__(self):
        self.lock = threading.Lock()
        self.peers: Dict[str, Dict[str, Any]] = {}
        self.curves: Dict[str, List[tuple]] = {}

    def update(self, ev: Dict[str, Any]) -> None:
        with self.lock:
            p = self.peers.setdefault(ev["peer"], {"status": "starting"})
            kind = ev.pop("event")
            if kind == "eval":
                self.curves.setdefault(ev["peer"], []).append((ev["step"], ev["eval"], ev["tx"]))
            elif kind == "done":
                p["status"] = "done"
            elif kind == "progress":
                p["status"] = "training"
            elif kind == "hold":
                p["held"] = True
            p.update(ev)

    def get(self, name: str, key: str, default: Any = None) -> Any:
        with self.lock:
            return self.peers.get(name, {}).get(key, default)

    def wait_for(self, name: str, key: str, timeout: float, procs: List[_Peer]) -> Any:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            v = self.get(name, key)
            if v is not None:
                return v
            for p in procs:
                if p.proc.poll() not in (None, 0, -9):
                    raise RuntimeError(f"peer {p.name} exited with {p.proc.returncode}:\n{''.join(p.stderr[-20:])}")
            time.sleep(0.05)
        raise TimeoutError(f"peer {name} did not report {key} within {timeout} s")


def _bar(frac: float, width: int = 24) -> str:
    n = int(max(0.0, min(1.0, frac)) * width)
    return "#" * n + "." * (width - n)


def _render(board: _Board, names: List[str], steps: int) -> List[str]:
    lines = []
    with board.lock:
        for n in names:
            p = board.peers.get(n, {})
            step = p.get("step", 0)
            lines.append(f"  {n:<8} [{_bar(step / steps)}] step {step:>5}/{steps}  loss {p.get('loss', float('nan')):8.5f}"
                         f"  sent {p.get('tx', 0) / 1e6:8.3f} MB  world {p.get('world', 0)}  {p.get('status', '')}")
    return lines


def _run(peers: List[_Peer], board: _Board, names: List[str], steps: int, live: bool, on_step=None,
         timeout: float = 900.0) -> None:
    """Shows progress until every peer in names is done; on_step(board) may act."""
    deadline = time.monotonic() + timeout
    shown = 0
    last_plain = 0.0
    while True:
        if on_step is not None:
            on_step(board, names)
        done = all(board.get(n, "status") in ("done", "killed") for n in names)
        lines = _render(board, names, steps)
        if live:
            if shown:
                sys.stdout.write(f"\x1b[{shown}F")
            sys.stdout.write("\n".join(l + "\x1b[K" for l in lines) + "\n")
            sys.stdout.flush()
            shown = len(lines)
        elif time.monotonic() - last_plain > 2.0 or done:
            with board.lock:
                print("  " + " | ".join(f"{n} {board.peers.get(n, {}).get('step', 0)}/{steps} "
                                        f"loss {board.peers.get(n, {}).get('loss', float('nan')):.4f}"
                                        for n in names), flush=True)
            last_plain = time.monotonic()
        if done:
            return
        for p in peers:
            if p.name in names and board.get(p.name, "status") != "killed" and p.proc.poll() not in (None, 0):
                raise RuntimeError(f"peer {p.name} exited with {p.proc.returncode}:\n{''.join(p.stderr[-20:])}")
        if time.monotonic() > deadline:
            tails = "".join(f"\n--- {p.name}:\n" + "".join(p.stderr[-10:]) for p in peers if p.name in names)
            raise TimeoutError(f"the demo run did not finish within {timeout} s: {board.peers}{tails}")
        time.sleep(0.2)


def demo_main(argv: List[str]) -> int:
    ap = argparse.ArgumentParser(prog="pccl-py demo", description=__doc__.split("\n\n")[0])
    ap.add_argument("--peers", type=int, default=4)
    ap.add_argument("--out", default=".", help="directory for diloco_demo.png")
    ap.add_argument("--steps", type=int, default=400, help="inner steps per peer")
    ap.add_argument("--sync-every", type=int, default=40, help="H: inner steps between outer syncs")
    ap.add_argument("--no-kill", action="store_true", help="do not kill a peer / add a joiner")
    ap.add_argument("--quick", action="store_true", help="short run (for tests)")
    a = ap.parse_args(argv)
    model_args = ["--width", "48", "--layers", "2"]
    if a.quick:  # a smaller GPT, fewer steps
        a.steps, a.sync_every = 120, 20
        model_args = ["--width", "32", "--layers", "1", "--batch", "8"]
    if a.peers < 2:
        ap.error("--peers must be >= 2")
    os.makedirs(a.out, exist_ok=True)
    live = sys.stdout.isatty()
    peers: List[_Peer] = []
    t_start = time.monotonic()

    def on_term(signum, frame):  # make SIGTERM run the finally below
        raise SystemExit(128 + signum)

    old_term = signal.signal(signal.SIGTERM, on_term)
    try:
        common = ["--steps", str(a.steps), "--sync-every", str(a.sync_every)] + model_args
        # 1. DiLoCo run: N peers, one killed halfway, a fresh one joins.
        board = _Board()
        names = [f"peer{i}" for i in range(a.peers)]
        print(f"DiLoCo: {a.peers} peers, H={a.sync_every}, {a.steps} inner steps each (byte-level GPT on stdlib sources)")
        # Halfway, every peer waits (so the chaos happens mid-run however fast
        # the machine): one is killed, a joiner starts, the others go on.
        hold = [] if a.no_kill else ["--hold-at", str(a.steps // 2)]
        peers.append(_Peer(names[0], common + ["--group", str(a.peers)] + hold, board))
        addr = board.wait_for(names[0], "addr", 60, peers)
        for n in names[1:]:
            peers.append(_Peer(n, common + ["--group", str(a.peers), "--bootstrap", addr] + hold, board))
        victim, joiner = names[-1], "joiner"
        state = {"killed": a.no_kill}
        spare = None if a.no_kill else _Peer(joiner, common + ["--bootstrap", addr, "--wait-go"], board)
        if spare is not None:
            peers.append(spare)

        def chaos(b: _Board, shown: List[str]) -> None:
            if not state["killed"] and all(b.get(n, "held") for n in names):
                state["killed"] = True
                state["kill_step"] = b.get(names[0], "step")
                next(p for p in peers if p.name == victim).kill()
                with b.lock:
                    b.peers[victim]["status"] = "killed"
                spare.go()  # a process started earlier (torch imported) creates its communicator now
                shown.append(joiner)
                if not live:
                    print(f"  -- killed {victim} (SIGKILL) at step {state['kill_step']}; started {joiner}", flush=True)
            elif state.get("kill_step") and not state.get("released") and b.get(joiner, "ready"):
                # The joiner loaded its model and asks to join in its first
                # step: the members go on and admit it at their next sync.
                state["released"] = True
                for p in peers:
                    if p.name in names and p.name != victim:
                        p.go()

        shown = list(names)
        _run(peers, board, shown, a.steps, live, on_step=chaos)
        diloco = {n: dict(board.peers[n]) for n in shown}
        curves = dict(board.curves)
        for p in peers:
            p.kill()
        # 2. Baseline: data parallel (all-reduce every step), same peers/steps/samples.
        print(f"data-parallel baseline: {a.peers} peers, all-reduce every step")
        dp_board = _Board()
        dp_names = [f"dp{i}" for i in range(a.peers)]
        dp_peers = [_Peer(dp_names[0], common + ["--group", str(a.peers), "--mode", "dp"], dp_board)]
        peers += dp_peers
        dp_addr = dp_board.wait_for(dp_names[0], "addr", 60, peers)
        for n in dp_names[1:]:
            p = _Peer(n, common + ["--group", str(a.peers), "--mode", "dp", "--bootstrap", dp_addr], dp_board)
            dp_peers.append(p)
            peers.append(p)
        _run(dp_peers, dp_board, dp_names, a.steps, live)
        dp = {n: dict(dp_board.peers[n]) for n in dp_names}
        dp_curve = dp_board.curves.get(dp_names[0], [])
    finally:
        signal.signal(signal.SIGTERM, old_term)
        for p in peers:
            try:
                p.kill()
            except Exception:
                pass

    # 3. Report.
    survivors = [n for n in shown if diloco[n].get("status") == "done"]
    dp_loss = sum(v["eval"] for v in dp.values()) / len(dp)
    dp_tx = sum(v["tx"] for v in dp.values()) / len(dp)
    dl_loss = sum(diloco[n]["eval"] for n in survivors) / len(survivors)
    dl_tx = sum(diloco[n]["tx"] for n in survivors if n != joiner) / max(1, len([n for n in survivors if n != joiner]))
    digests = {diloco[n]["digest"] for n in survivors}
    print()
    print(f"{'run':<28}{'final eval loss':>16}{'MB sent / peer':>16}{'vs data parallel':>18}")
    print(f"{'data parallel (every step)':<28}{dp_loss:>16.5f}{dp_tx / 1e6:>16.3f}{'1x':>18}")
    print(f"{'DiLoCo H=' + str(a.sync_every):<28}{dl_loss:>16.5f}{dl_tx / 1e6:>16.3f}"
          f"{f'{dp_tx / max(dl_tx, 1):.0f}x fewer bytes':>18}")
    print(f"survivors: {', '.join(survivors)}; global params identical on all of them: {len(digests) == 1}"
          + ("" if a.no_kill else f"; {victim} was killed, {joiner} joined"))
    png = os.path.join(a.out, "diloco_demo.png")
    joined = curves.get(joiner, [(None,)])[0][0]
    try:
        _plot(png, curves, dp_curve, a.sync_every, state.get("kill_step"), victim, joined, joiner)
        print(f"loss curves: {png}   (total {time.monotonic() - t_start:.0f} s)")
    except ImportError:
        print(f"no plot: matplotlib is not installed (pip install \"pccl_py[demo]\" or matplotlib for "
              f"{png})   (total {time.monotonic() - t_start:.0f} s)")
    return 0 if len(digests) == 1 else 1


def _plot(path: str, curves: Dict[str, List[tuple]], dp_curve: List[tuple], h: int, kill_step: Optional[int],
          victim: str, join_step: Optional[int], joiner: str) -> None:
    """Eval loss per peer against inner step (left) and bytes sent (right);
    each curve has its own colour, marker and line style."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, (ax, bx) = plt.subplots(1, 2, figsize=(11, 4.2))
    styles = ["o-", "s--", "^-.", "D:", "v-", "P--", "X-.", "*:"]
    for i, (name, pts) in enumerate(sorted(curves.items())):
        if not pts:
            continue
        steps, loss, tx = zip(*pts)
        label = f"DiLoCo {name}" + (" (killed)" if name == victim and kill_step else "") + \
            (" (joined)" if name == joiner else "")
        ax.plot(steps, loss, styles[i % len(styles)], ms=4, label=label)
        bx.plot([t / 1e6 for t in tx], loss, styles[i % len(styles)], ms=4, label=label)
    if dp_curve:
        steps, loss, tx = zip(*dp_curve)
        ax.plot(steps, loss, "k-", lw=2, label="data parallel")
        bx.plot([t / 1e6 for t in tx], loss, "k-", lw=2, label="data parallel")
    if kill_step:
        ax.axvline(kill_step, color="red", ls=":", lw=1)
        ax.annotate(f"{victim} killed", (kill_step, 0.98), xycoords=("data", "axes fraction"), color="red",
                    fontsize=8, ha="right", va="top", rotation=90)
    if join_step:
        ax.axvline(join_step, color="green", ls=":", lw=1)
        ax.annotate(f"{joiner} joined", (join_step, 0.98), xycoords=("data", "axes fraction"), color="green",
                    fontsize=8, ha="left", va="top", rotation=90)
    for x_, label in ((ax, "inner step"), (bx, "MB sent by the peer (log)")):
        x_.set_xlabel(label)
        x_.set_ylabel("held-out eval loss (nats / byte)")
    bx.set_xscale("log")
    ax.set_title(f"DiLoCo (H={h}) vs data parallel: per step")
    bx.set_title("per byte sent")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
