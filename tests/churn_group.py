"""Test-side driver of churn peers (tests/churn_peer.py): starts, kills,
freezes and restarts peer processes by slot, multiplexes their messages, and
checks every successful round against the exact reduction of its members'
inputs. Every process is killed on close(), whatever happened."""

from __future__ import annotations

import os
import queue
import signal
import time
from collections import defaultdict

import numpy as np

from churn_peer import CHURN_PEER, round_input
from harness import Peer


class ChurnGroup:
    def __init__(self, scenario: str, args: dict, key_dir: str | None = None, env: dict | None = None):
        self.scenario, self.args, self.key_dir, self.env = scenario, dict(args), key_dir, env
        self.peers: dict[int, Peer] = {}  # slot -> live process
        self.ids: dict[int, str] = {}     # slot -> peer id of its latest process
        self.addrs: dict[int, list] = {}
        self.dead: list[Peer] = []        # killed processes (kept to close their pipes)
        self.log: list[tuple[int, dict]] = []  # every (slot, message) in arrival order
        self.exited: set = set()          # processes that ended on their own
        self.on_message = None            # called once per message: on_message(slot, msg)

    # -- processes ------------------------------------------------------------
    def start(self, slot: int, bootstrap: list | None = None, timeout: float = 30.0, wait: bool = True,
              **extra) -> None:
        """Starts a process in `slot`; with wait, until it said hello (its
        addrs), else its hello arrives through poll()."""
        args = {**self.args, "index": slot, "bootstrap": bootstrap or [], **extra}
        if self.key_dir:
            args["key_file"] = os.path.join(self.key_dir, f"peer{slot}.key")
        p = Peer(self.scenario, args, env=self.env, script=CHURN_PEER)
        self.peers[slot] = p
        self.addrs.pop(slot, None)
        if wait:
            hello = p.read(timeout)
            self.ids[slot], self.addrs[slot] = hello["peer_id"], hello["addrs"]

    def start_group(self, n: int, **extra) -> None:
        self.start(0, n=n, **extra)
        for s in range(1, n):
            self.start(s, bootstrap=self.addrs[0], n=n, **extra)

    def kill(self, slot: int) -> float:
        """SIGKILLs the slot's process; returns the time.time() of the kill."""
        p = self.peers.pop(slot)
        self.addrs.pop(slot, None)
        t = time.time()
        p.proc.send_signal(signal.SIGKILL)
        self.dead.append(p)
        return t

    def signal(self, slot: int, sig: int) -> float:
        t = time.time()
        self.peers[slot].proc.send_signal(sig)
        return t

    def close(self) -> None:
        for p in list(self.peers.values()):
            try:  # a frozen process would ignore SIGKILL until continued? No, but be sure it can exit
                p.proc.send_signal(signal.SIGCONT)
            except ProcessLookupError:
                pass
            p.kill()
        for p in self.dead:
            p.kill()
        self.peers.clear()

    def __enter__(self) -> "ChurnGroup":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- messages -------------------------------------------------------------
    def poll(self, timeout: float) -> tuple[int, dict] | None:
        """The next message of any live peer (also passed to on_message), or
        None after `timeout` s. A peer that exits with a failure raises."""
        deadline = time.monotonic() + timeout
        while True:
            for slot, p in list(self.peers.items()):
                if p in self.exited:
                    continue
                try:
                    msg = p.lines.get_nowait()
                except queue.Empty:
                    continue
                if msg is None:
                    self.exited.add(p)
                    if p.proc.wait(10) != 0:
                        raise AssertionError(f"peer {slot} exited ({p.proc.returncode}); stderr:\n"
                                             f"{''.join(p.stderr)[-3000:]}")
                    continue
                if "addrs" in msg:  # hello of a process started without wait
                    self.ids[slot], self.addrs[slot] = msg["peer_id"], msg["addrs"]
                self.log.append((slot, msg))
                if self.on_message:
                    self.on_message(slot, msg)
                return slot, msg
            if time.monotonic() >= deadline:
                return None
            time.sleep(0.002)

    def mark(self) -> int:
        return len(self.log)

    def wait_for(self, pred, timeout: float, what: str, since: int | None = None) -> tuple[int, dict]:
        """The first message from log[since:] (default: only new ones) for
        which pred(slot, msg) holds, polling for more up to `timeout` s."""
        i = len(self.log) if since is None else since
        deadline = time.monotonic() + timeout
        while True:
            while i < len(self.log):
                if pred(*self.log[i]):
                    return self.log[i]
                i += 1
            if self.poll(max(0.0, deadline - time.monotonic())) is None:
                tails = {s: "".join(p.stderr)[-1500:] for s, p in self.peers.items()}
                raise AssertionError(f"timed out after {timeout} s waiting for {what}; stderr tails: {tails}")

    def stderr(self, slot: int) -> str:
        return "".join(self.peers[slot].stderr)


class RoundChecker:
    """Every round reported successful must be bit-identical across its
    reporters and equal the exact int64 sum of the members' round_input()s.
    A round is (epoch, op, members): the two sides of a partition (a thawed
    peer alone, say) count epochs independently, so an epoch number alone
    does not name a view."""

    def __init__(self, count: int):
        self.count = count
        self.rounds: dict[tuple, dict] = {}
        self.reporters: dict[tuple, set] = defaultdict(set)

    def add(self, peer_id: str, msg: dict) -> bool:
        """Records one ok message; returns True the first time a round is seen."""
        key = (msg["epoch"], msg["op"], tuple(msg["members"]))
        first = key not in self.rounds
        if first:
            exact = sum(round_input(m, msg["epoch"], msg["op"], self.count) for m in msg["members"])
            import hashlib
            want = hashlib.sha256(np.ascontiguousarray(exact.astype(np.int64)).tobytes()).hexdigest()
            assert msg["digest"] == want, f"round {key} is not the exact sum of its members' inputs"
            self.rounds[key] = msg
        r = self.rounds[key]
        assert msg["digest"] == r["digest"], f"round {key}: results differ between reporters"
        assert peer_id in msg["members"], f"round {key}: reported by a non-member"
        self.reporters[key].add(peer_id)
        return first
