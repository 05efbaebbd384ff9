"""Churn soak: 6 peer processes; a driver SIGKILLs a random peer every few
rounds and restarts dead ones (same key file: a new incarnation of the same
id) bootstrapping from a random live peer. Every round any peer reports as
successful must be exact and bit-identical across its reporters; survivors
keep progressing; no peer hangs."""

from __future__ import annotations

import os
import random
import time

import pytest

from churn_group import ChurnGroup, RoundChecker

N, TARGET, COUNT, TIMEOUT = 6, 600, 65536, 2.0


@pytest.mark.timeout(90)
def test_churn_soak(tmp_path):
    rng = random.Random(int(os.environ.get("CHURN_SEED", "3")))
    check = RoundChecker(COUNT)
    args = {"timeout": TIMEOUT, "count": COUNT, "topo_every": 3, "duration": 80, "join_timeout": 30.0}
    kills, recoveries = [], []
    last_heard: dict[int, float] = {}
    with ChurnGroup("rounds", args, key_dir=str(tmp_path)) as g:
        multi = [0]  # rounds of at least 2 members (a lone peer's rounds prove nothing)

        members: set[int] = set()  # slots whose current process was admitted

        def on_message(slot, m):
            last_heard[slot] = time.monotonic()
            if m.get("formed"):
                members.add(slot)
            if m.get("ok") and check.add(g.ids[slot], m) and len(m["members"]) >= 2:
                multi[0] += 1
        g.on_message = on_message
        g.start_group(N)
        t_start = time.monotonic()
        g.wait_for(lambda s, m: m.get("ok") and len(m["members"]) == N, 40, "a round of all 6", since=0)
        dead: dict[int, int] = {}  # slot -> rounds it stays dead
        pending_kill = None        # (time of kill, victim id): waiting for the survivors' next round
        next_event = multi[0] + rng.randint(3, 6)
        last_event = time.monotonic()
        while multi[0] < TARGET:
            if time.monotonic() - t_start > 55:
                raise AssertionError(f"only {multi[0]} rounds in 55 s; last messages: {g.log[-30:]}; "
                                     f"stderr: { {s: g.stderr(s)[-2500:] for s in g.peers} }")
            got = g.poll(10.0)
            if got is None:
                last = {s: [m for s2, m in g.log if s2 == s][-2:] for s in g.peers}
                raise AssertionError(f"no peer made progress for 10 s; last messages: {last}; "
                                     f"stderr: { {s: g.stderr(s)[-2500:] for s in g.peers} }")
            slot, m = got
            if m.get("boot_failed"):  # its bootstrap peers all died before it got in: try again later
                g.kill(slot)
                members.discard(slot)
                dead[slot] = 1
                continue
            if pending_kill and m.get("ok") and pending_kill[1] not in m["members"] and m["t"] > pending_kill[0]:
                recoveries.append(m["t"] - pending_kill[0])
                pending_kill = None
            # an event every few rounds, or after a quiet second (restarts
            # must go on when the world is too small to make rounds)
            if (multi[0] < next_event or pending_kill) and time.monotonic() - last_event < 1.0:
                continue
            last_event = time.monotonic()
            next_event = multi[0] + rng.randint(3, 6)
            for s in list(dead):  # restarts
                dead[s] -= 1
                if dead[s] <= 0 and g.addrs:
                    del dead[s]
                    boot = [a for live in rng.sample(sorted(g.addrs), len(g.addrs)) for a in g.addrs[live]]
                    members.discard(s)
                    g.start(s, bootstrap=boot, joiner=True, wait=False)
                    print(f"t={time.monotonic() - t_start:.2f} rounds={multi[0]} restart {s}")
            if len(members & set(g.peers)) >= 3:  # a kill, leaving at least 2 members
                # mostly members; sometimes a joiner that may not be in yet
                pool = sorted(members & set(g.peers)) if rng.random() < 0.8 else sorted(g.peers)
                victim = rng.choice(pool)
                was_member = victim in members
                members.discard(victim)
                t_kill = g.kill(victim)
                pending_kill = (t_kill, g.ids[victim]) if was_member else None
                kills.append(was_member)
                print(f"t={time.monotonic() - t_start:.2f} rounds={multi[0]} kill {victim} (member: {was_member})")
                dead[victim] = rng.randint(1, 2)
        # no live peer hangs: every one reported something recently
        now = time.monotonic()
        for s in g.peers:
            assert now - last_heard.get(s, 0) < 4 * TIMEOUT + 5, f"peer {s} silent for {now - last_heard.get(s, 0):.1f} s"
        took = time.monotonic() - t_start
    mean = sum(recoveries) / max(1, len(recoveries))
    print(f"\nchurn soak: {multi[0]} rounds of >= 2 members in {took:.1f} s, "
          f"{len(kills)} kills survived ({sum(kills)} of members), recovery mean {mean:.3f} s, max {max(recoveries, default=0):.3f} s")
    assert sum(kills) >= 20 and len(recoveries) >= sum(kills) - 1
