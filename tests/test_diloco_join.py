"""Joiners never stall the run: a peer that connects and then spends 3x the
timeout loading its model before its first step() is admitted only once it
asks; the members' steps never raise and never take longer than a normal sync
plus the state transfer; the joiner then matches the members bit for bit. A
joiner that calls update_topology() itself before wrapping joins too."""

import threading
import time

import pytest
import torch

import pccl_py as pc
from pccl_py import diloco
from pccl_py._training import TeacherTask, make_student
from pccl_py.diloco import DiLoCo
from local_group import run_peer_threads

TIMEOUT, H, STEPS = 1.0, 10, 200


def _loop(comm, opt, model, data, steps, times, syncs):
    while opt.step_count < steps:
        x, y = next(data)
        torch.nn.functional.mse_loss(model(x), y).backward()
        t0 = time.perf_counter()
        before = opt.outer_syncs
        opt.step()
        dt = time.perf_counter() - t0
        opt.zero_grad()
        (syncs if opt.outer_syncs != before else times).append((opt.step_count, dt, comm.world_size))


@pytest.mark.timeout(60)
@pytest.mark.parametrize("joiner_calls_update_topology,piece_min", [(False, None), (True, 1000)])
def test_slow_joiner_never_stalls_the_members(joiner_calls_update_topology, piece_min, monkeypatch):
    """(The second case also exchanges each sync in 6 pieces: the joiner
    enters the members' blocking sync at its first piece.)"""
    if piece_min is not None:
        monkeypatch.setattr(diloco, "_PIECE_MIN", piece_min)
    torch.set_num_threads(1)
    task = TeacherTask(seed=4)
    first = pc.Communicator(run_key="slow-join", timeout=TIMEOUT)
    comms = [first, pc.Communicator(bootstrap=first.addrs, run_key="slow-join", timeout=TIMEOUT)]
    results, errors, started = {}, [], threading.Event()

    def member(i):
        try:
            comms[i].wait_for_peers(2, timeout=20)
            model = make_student(seed=1)
            opt = DiLoCo(model, torch.optim.AdamW(model.parameters(), lr=2e-3), comms[i], sync_every=H)
            data = task.batches(stream=i, batch=16)
            times, syncs = [], []
            _loop(comms[i], opt, model, data, 20, times, syncs)
            started.set()
            # Pace the run so that the joiner's 3 s of "loading" span several syncs.
            while opt.step_count < STEPS:
                _loop(comms[i], opt, model, data, opt.step_count + 1, times, syncs)
                time.sleep(0.03)
            results[i] = dict(times=times, syncs=syncs, global_=opt.global_params()[0].clone(),
                              world=comms[i].world_size)
        except BaseException as e:  # reported below
            errors.append((i, e))

    def joiner():
        try:
            started.wait(20)
            c = pc.Communicator(bootstrap=first.addrs, run_key="slow-join", timeout=TIMEOUT)  # connects
            comms.append(c)
            connected = time.monotonic()
            time.sleep(3 * TIMEOUT)  # "loading a checkpoint": the members must not notice
            if joiner_calls_update_topology:
                c.update_topology()  # asks to join; returns at the members' next sync
            model = make_student(seed=77)
            opt = DiLoCo(model, torch.optim.AdamW(model.parameters(), lr=2e-3), c, sync_every=H)
            data = task.batches(stream=9, batch=16)
            t0 = time.monotonic()
            _loop(c, opt, model, data, STEPS, [], [])
            results["joiner"] = dict(global_=opt.global_params()[0].clone(), waited=t0 - connected,
                                     world=c.world_size, params=torch.cat([p.detach().reshape(-1)
                                                                           for p in model.parameters()]))
        except BaseException as e:  # reported below
            errors.append(("joiner", e))

    threads = [threading.Thread(target=member, args=(i,), daemon=True) for i in range(2)]
    threads.append(threading.Thread(target=joiner, daemon=True))
    run_peer_threads(threads, comms, errors)
    m0, m1, j = results[0], results[1], results["joiner"]
    assert torch.equal(m0["global_"], m1["global_"]) and torch.equal(m0["global_"], j["global_"])
    assert torch.equal(j["params"], m0["global_"])  # the last sync reset everyone's local params to it
    assert m0["world"] == m1["world"] == j["world"] == 3
    normal = [dt for _, dt, w in m0["syncs"] + m1["syncs"] if w == 2]  # syncs before the joiner asked
    admitting = [dt for s, dt, w in m0["syncs"] + m1["syncs"] if w == 3]
    worst_sync = max(normal + admitting)
    worst_inner = max(dt for _, dt, _ in m0["times"] + m1["times"])
    print(f"members: normal sync {max(normal) * 1e3:.1f} ms, worst sync incl. admission + state transfer "
          f"{max(admitting) * 1e3:.1f} ms, worst inner step {worst_inner * 1e3:.1f} ms")
    assert len(normal) >= 4 and admitting
    # A member never waits on the joiner's loading: no step comes near the timeout.
    assert worst_inner < 0.25 and worst_sync < 0.5 * TIMEOUT
