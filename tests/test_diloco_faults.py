"""Membership changes during DiLoCo training (peers as threads): a peer
leaves mid-run and another joins; everyone left ends bit-identical, the joiner
adopts the run's step counter and global params at its first sync."""

import threading

import pytest
import torch

import pccl_py as pc
from pccl_py import diloco
from pccl_py._training import TeacherTask, form_group, make_student
from pccl_py.diloco import DiLoCo, StreamingDiLoCo
from local_group import run_peer_threads

STEPS, H = 200, 20


def test_leave_and_join_during_training():
    torch.set_num_threads(1)
    task = TeacherTask(seed=4)
    first = pc.Communicator(run_key="faults", timeout=2.0)
    comms = [first] + [pc.Communicator(bootstrap=first.addrs, run_key="faults", timeout=2.0) for _ in range(2)]
    joiner_go, results, errors = threading.Event(), {}, []

    def peer(name, comm, leave_at=None, joiner=False, streaming=False):
        try:
            if not joiner:
                form_group(comm, 3)
            model = make_student(seed=hash(name) % 1000)  # a joiner's own init is replaced at its first sync
            inner = torch.optim.AdamW(model.parameters(), lr=2e-3)
            opt = DiLoCo(model, inner, comm, sync_every=H)
            data = task.batches(stream=len(name), batch=16)
            first_sync = None
            while opt.step_count < STEPS:
                x, y = next(data)
                torch.nn.functional.mse_loss(model(x), y).backward()
                opt.step()
                opt.zero_grad()
                if joiner and first_sync is None:
                    flat = torch.cat([p.detach().reshape(-1) for p in model.parameters()])
                    first_sync = (opt.step_count, torch.equal(flat, opt.global_params()[0]))
                if name == "p0" and opt.step_count == 50:
                    joiner_go.set()
                if leave_at is not None and opt.step_count == leave_at:
                    comm.close()  # leaves mid-window: the others find it gone at their next sync
                    results[name] = None
                    return
            results[name] = dict(global_=opt.global_params()[0].clone(), first_sync=first_sync,
                                 syncs=opt.outer_syncs, world=comm.world_size, retries=opt.retries)
        except BaseException as e:  # reported below
            errors.append((name, e))

    def late_joiner():
        joiner_go.wait(30)
        c = pc.Communicator(bootstrap=first.addrs, run_key="faults", timeout=2.0)
        comms.append(c)
        peer("joiner", c, joiner=True)

    threads = [threading.Thread(target=peer, args=("p0", comms[0]), daemon=True),
               threading.Thread(target=peer, args=("p1", comms[1]), daemon=True),
               threading.Thread(target=peer, args=("p2", comms[2]), kwargs=dict(leave_at=110), daemon=True),
               threading.Thread(target=late_joiner, daemon=True)]
    run_peer_threads(threads, comms, errors)
    p0, p1, j = results["p0"], results["p1"], results["joiner"]
    assert torch.equal(p0["global_"], p1["global_"]) and torch.equal(p0["global_"], j["global_"])
    assert p0["syncs"] == STEPS // H and p0["world"] == 3
    step, same = j["first_sync"]
    assert same and step > 50 and step % H == 0  # it joined at a sync and took the members' step counter
    assert j["syncs"] == (STEPS - step) // H + 1  # it took part in the sync that admitted it


def test_streaming_alone_then_joined():
    """A world of one trains alone with Streaming DiLoCo (async fragments)."""
    with pc.Communicator(run_key="alone") as comm:
        model = make_student(0)
        opt = StreamingDiLoCo(model, torch.optim.SGD(model.parameters(), lr=0.05), comm, sync_every=8, fragments=2,
                              overlap_steps=2)
        data = TeacherTask(0).batches(0, 16)
        for _ in range(33):
            x, y = next(data)
            torch.nn.functional.mse_loss(model(x), y).backward()
            opt.step()
            opt.zero_grad()
        assert opt.outer_syncs == 7 and opt.step_count == 33  # syncs at 4..28 applied, the one from 32 in flight
        opt.close()
        assert opt.outer_syncs == 8


class _FailOnce:
    """A real communicator whose `at`-th in-place all-reduce without backup
    scribbles over the buffer and fails at wait(), as the core may on a lost
    peer (the next piece, already in flight, still completes)."""

    def __init__(self, comm, at):
        self._comm, self.at, self.calls, self.failed = comm, at, 0, 0

    def __getattr__(self, name):
        return getattr(self._comm, name)

    def all_reduce_async(self, x, op="sum", **kw):
        if not kw.get("backup", True):
            self.calls += 1
            if self.calls == self.at:
                self.failed += 1
                x.fill_(1e6)
                return _Failed()
        return self._comm.all_reduce_async(x, op=op, **kw)


class _Failed:
    def wait(self):
        raise pc.PeerLostError("peer Qmgone lost (injected)")


@pytest.mark.parametrize("pieces", [False, True])
def test_failed_sync_without_backup_resumes_at_the_failed_piece(pieces, monkeypatch):
    """A blocking sync exchanges its fragment piece by piece, in place,
    without the core's backup copy; a failed piece leaves its buffer
    undefined and the retry recomputes it (after the pieces before it were
    applied): bit-identical to a run without the failure and to a run in one
    piece."""
    torch.set_num_threads(1)
    out = []
    with pc.Communicator(run_key="fail-once") as real:
        for piece_min, comm in ((1 << 30, real), (1000 if pieces else 1 << 30, _FailOnce(real, 3 if pieces else 1))):
            monkeypatch.setattr(diloco, "_PIECE_MIN", piece_min)
            model = make_student(2)
            opt = DiLoCo(model, torch.optim.AdamW(model.parameters(), lr=2e-3), comm, sync_every=5)
            n_pieces = len(opt.fragments[0].pieces())
            data = TeacherTask(1).batches(0, 16)
            for _ in range(12):
                x, y = next(data)
                torch.nn.functional.mse_loss(model(x), y).backward()
                opt.step()
                opt.zero_grad()
            out.append((opt.global_params()[0].clone(), opt.retries, getattr(comm, "failed", 0), n_pieces,
                        torch.cat([p.detach().reshape(-1) for p in model.parameters()])))
    (plain, r0, _, n0, p0), (flaky, r1, failed, n1, p1) = out
    assert n0 == 1 and n1 == (6 if pieces else 1)  # 5313 elements in pieces of max(1000, 5313/8)
    assert failed == 1 and r0 == 0 and r1 == 1
    assert torch.equal(plain, flaky) and torch.equal(p0, p1)
