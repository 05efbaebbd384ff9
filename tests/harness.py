"""Runs pccl_py peers as real processes for multi-peer tests.

Each peer runs ``python tests/peer_main.py SCENARIO ARGS_JSON`` and talks to the
test over stdout: one JSON object per line. The first line of every peer is
``{"addrs": [...]}``; the first peer's address bootstraps the others. Every
process is killed on the way out, whatever happens.
"""

from __future__ import annotations

import json
import os
import queue
import subprocess
import sys
import threading
import time
from typing import Any

HERE = os.path.dirname(os.path.abspath(__file__))
PEER_MAIN = os.path.join(HERE, "peer_main.py")


class Peer:
    def __init__(self, scenario: str, args: dict, env: dict | None = None, *,
                 prefix: list[str] | None = None, script: str = PEER_MAIN):
        # prefix: e.g. ["ip", "netns", "exec", NS] to run the peer in a namespace.
        self.proc = subprocess.Popen(
            [*(prefix or []), sys.executable, "-u", script, scenario, json.dumps(args)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            env={**os.environ, **(env or {})})
        self.lines: queue.Queue = queue.Queue()
        self.stderr: list[str] = []
        self._pumps = [threading.Thread(target=self._pump, args=(self.proc.stdout, True), daemon=True),
                       threading.Thread(target=self._pump, args=(self.proc.stderr, False), daemon=True)]
        for t in self._pumps:
            t.start()

    def _pump(self, stream, is_out: bool) -> None:
        for line in stream:
            if is_out:
                try:
                    self.lines.put(json.loads(line))
                except json.JSONDecodeError:
                    self.stderr.append("stdout: " + line)
            else:
                self.stderr.append(line)
        if is_out:
            self.lines.put(None)

    def send(self, **kw) -> None:
        """One JSON line to the peer's stdin (for scenarios that take commands)."""
        self.proc.stdin.write(json.dumps(kw) + "\n")
        self.proc.stdin.flush()

    def read(self, timeout: float) -> dict:
        """The next JSON message; raises with the peer's stderr if it died."""
        try:
            msg = self.lines.get(timeout=timeout)
        except queue.Empty:
            raise AssertionError(f"peer sent nothing for {timeout} s; stderr:\n{''.join(self.stderr)[-3000:]}")
        if msg is None:
            self.proc.wait(timeout=5)
            raise AssertionError(f"peer exited ({self.proc.returncode}); stderr:\n{''.join(self.stderr)[-3000:]}")
        return msg

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            pass
        for t in self._pumps:
            t.join(timeout=5)
        for stream in (self.proc.stdin, self.proc.stdout, self.proc.stderr):
            try:
                stream.close()
            except OSError:  # stdin of a dead process: broken pipe on flush
                pass


class PeerGroup:
    """Context manager: starts n peers (the first one bootstraps the rest)."""

    def __init__(self, n: int, scenario: str, args: dict | None = None, timeout: float = 60.0):
        self.n, self.scenario, self.args, self.timeout = n, scenario, dict(args or {}), timeout
        self.peers: list[Peer] = []

    def __enter__(self) -> "PeerGroup":
        try:
            first = self.start({**self.args, "index": 0, "n": self.n, "bootstrap": []})
            boot = first.read(self.timeout)["addrs"]
            for i in range(1, self.n):
                self.start({**self.args, "index": i, "n": self.n, "bootstrap": boot}).read(self.timeout)
        except BaseException:
            self.close()
            raise
        self.bootstrap = boot
        return self

    def start(self, args: dict) -> Peer:
        p = Peer(self.scenario, args)
        self.peers.append(p)
        return p

    def results(self, peers: list[Peer] | None = None) -> list[dict]:
        """The next message of every peer (in index order)."""
        return [p.read(self.timeout) for p in (peers or self.peers)]

    def close(self) -> None:
        for p in self.peers:
            p.kill()

    def __exit__(self, *exc: Any) -> None:
        self.close()


def wait_until(cond, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


def reap(*procs) -> None:
    """Kills (if still running) and waits for each subprocess.Popen, closing
    its pipes; None entries (never started) are skipped."""
    for p in procs:
        if p is None:
            continue
        if p.poll() is None:
            p.kill()
        p.wait()
        for stream in (p.stdout, p.stderr):
            if stream is not None:
                stream.close()
