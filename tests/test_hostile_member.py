"""An authenticated peer that misbehaves (tests/hostile.py drives it by hand
over tests/wire.py): forged commits, votes from outside the view, forged
gossip, a fake second incarnation, a huge sync_state revision. Each is
refused; the run keeps its members and its next ops are exact."""

import threading
import time

import msgpack
import numpy as np
import pytest

import pccl_py as pc
from hostile import RawMember, identity_above
from local_group import close_all, make_group, run_all
from wire import COMMIT_CONTEXT, CONTROL, DATA, RawPeer

KEY = "hostile-key"
TIMEOUT = 5.0
SYNC_TAG = 0xFFFF0001  # the library's sync_state tag (Communicator::kReservedTags + 1)


@pytest.fixture
def pair():
    comms = make_group(2, key=KEY, timeout=TIMEOUT)
    yield sorted(comms, key=lambda c: c.peer_id)  # the first one coordinates
    close_all(comms)


@pytest.fixture
def trio(pair):
    """The pair plus a hostile member admitted through the real protocol."""
    raw = RawMember(pair, KEY.encode())
    try:
        raw.join(pair)
        assert [c.world_size for c in pair] == [3, 3]
        yield pair, raw
    finally:
        raw.close()


def drain(raw):
    while not raw.inbox.empty():
        raw.inbox.get_nowait()


def ping(raw, comm) -> dict:
    """A sync point: a ready of epoch 0 is answered with the peer's current
    commit once every frame we sent before it has been handled."""
    drain(raw)
    raw.send_msg(comm.peer_id, {"t": "ready", "epoch": 0, "members": []})
    return raw.wait_msg(lambda p, m: p == comm.peer_id and m.get("t") == "commit")[1]


def outsider_ping(peer: RawPeer) -> dict:
    peer.send_msg(CONTROL, {"t": "ready", "epoch": 0, "members": []})
    while True:
        ftype, m = peer.recv_msg()
        if ftype == CONTROL and m.get("t") == "commit":
            return m


def exact_all_reduce(comms, tag=0):
    xs = [np.arange(4096, dtype=np.float32) * (i + 1) for i in range(len(comms))]
    want = sum(np.arange(4096, dtype=np.float32) * (i + 1) for i in range(len(comms)))
    res = run_all(comms, lambda c, x: c.all_reduce(x, tag=tag), xs)
    assert not [r for r in res if isinstance(r, Exception)], res
    for x in xs:
        assert np.array_equal(x, want)


def without(raw, comms):
    """The hostile member leaves; the honest ones drop it and go on."""
    raw.close()
    deadline = time.monotonic() + 4 * TIMEOUT
    while any(c.world_size != len(comms) for c in comms):
        assert time.monotonic() < deadline, [c.members for c in comms]
        run_all(comms, lambda c: c.update_topology())
    assert all(c.members == sorted(x.peer_id for x in comms) for c in comms)


def honest_round(raw, comms):
    """An update_topology() round in which the hostile member behaves."""
    raw.ready(comms[0].peer_id)
    res = run_all(comms, lambda c: c.update_topology())
    assert res == [None] * len(comms), res


def signed_commit(raw, **fields) -> dict:
    msg = {"t": "commit", **fields}
    return {**msg, "sig": raw.identity.key.sign(COMMIT_CONTEXT + msgpack.packb(msg, use_bin_type=True))}


@pytest.mark.timeout(60)
def test_forged_commits_and_readies_are_refused(trio):
    comms, raw = trio
    coord, other = comms
    e = coord.epoch
    members = raw.commit["members"]
    ids = [m["id"] for m in members]
    me = [m for m in members if m["id"] == raw.id]
    alone = [m for m in members if m["id"] == other.peer_id]
    # The old unsigned form: used to shrink the victim's world to 1.
    raw.send_msg(other.peer_id, {"t": "commit", "epoch": e + 1, "members": alone})
    # Properly signed by us, a member, but not the coordinator (a lower id is alive).
    raw.send_msg(other.peer_id, signed_commit(raw, epoch=e + 1, members=alone + me, prev=e, prev_ids=ids,
                                              by=raw.id))
    # Claims the coordinator's name over our own signature.
    raw.send_msg(other.peer_id, signed_commit(raw, epoch=e + 1, members=alone + me, prev=e, prev_ids=ids,
                                              by=coord.peer_id))
    # A ready of a newer epoch made the coordinator install the view it carried.
    raw.send_msg(coord.peer_id, {"t": "ready", "epoch": e + 5, "members": me, "pending": [], "relayed": []})
    raw.send_msg(coord.peer_id, {"t": "ready", "epoch": e + 1, "members": alone + me, "pending": [], "relayed": [],
                                 "commit": signed_commit(raw, epoch=e + 1, members=alone + me, prev=e,
                                                         prev_ids=ids, by=raw.id)})
    for c in comms:
        commit = ping(raw, c)
        assert commit["epoch"] == e and commit["by"] == coord.peer_id
        assert c.epoch == e and c.world_size == 3 and c.members == sorted(ids)
    honest_round(raw, comms)  # the real coordinator's next commit still works
    assert [c.epoch for c in comms] == [e + 1, e + 1] and [c.world_size for c in comms] == [3, 3]
    without(raw, comms)
    exact_all_reduce(comms)


@pytest.mark.timeout(60)
def test_fail_votes_from_outside_the_view_fail_nothing(pair):
    e = pair[0].epoch
    outsiders = [RawPeer(c.addrs[0], KEY.encode()) for c in pair]
    try:
        for o in outsiders:
            o.handshake(purpose="control")
            for epoch in (e, e + 1, e + 2, e + 1000):
                for seq in range(20):
                    o.send_msg(CONTROL, {"t": "vote", "epoch": epoch, "tag": 0, "seq": seq, "done": [o.id],
                                         "nack": [c.peer_id for c in pair], "fail": True, "status": 7,
                                         "msg": "flood"})
            assert outsider_ping(o)["epoch"] == e
        for _ in range(3):  # this epoch's ops, then the next two epochs'
            exact_all_reduce(pair)
            exact_all_reduce(pair)
            assert run_all(pair, lambda c: c.update_topology()) == [None, None]
        assert [c.epoch for c in pair] == [e + 3, e + 3]
    finally:
        for o in outsiders:
            o.close()


@pytest.mark.timeout(60)
def test_forged_gossip_is_not_believed(pair):
    coord, other = pair
    outsider = RawPeer(coord.addrs[0], KEY.encode())
    try:
        outsider.handshake(purpose="control")
        commit = outsider_ping(outsider)
        rec_other = next(m for m in commit["members"] if m["id"] == other.peer_id)
        fake = identity_above([])
        # A joiner that does not exist: unsigned, then signed by the wrong key.
        outsider.send_msg(CONTROL, {"t": "pending", "id": fake.id, "inc": 1,
                                    "addrs": [f"/ip4/127.0.0.1/tcp/9/p2p/{fake.id}"]})
        forged = fake.record(1, [f"/ip4/127.0.0.1/tcp/9/p2p/{fake.id}"])
        outsider.send_msg(CONTROL, {"t": "pending", **forged,
                                    "rsig": outsider.identity.key.sign(b"pccl-record-v1\0" + b"x")})
        # New addresses for a real member, not signed by it.
        bogus = [f"/ip4/10.9.9.9/tcp/1/p2p/{other.peer_id}"]
        outsider.send_msg(CONTROL, {"t": "addrs", "id": other.peer_id, "inc": rec_other["inc"], "addrs": bogus,
                                    "av": 99})
        outsider.send_msg(CONTROL, {"t": "addrs", "id": other.peer_id, "inc": rec_other["inc"], "addrs": bogus,
                                    "av": 100, "rsig": rec_other.get("rsig", b"\0" * 64)})
        assert outsider_ping(outsider)["epoch"] == commit["epoch"]
        assert run_all(pair, lambda c: c.update_topology()) == [None, None]
        assert [c.members for c in pair] == [sorted([coord.peer_id, other.peer_id])] * 2
        after = outsider_ping(outsider)
        assert after["epoch"] == commit["epoch"] + 1
        assert next(m for m in after["members"] if m["id"] == other.peer_id)["addrs"] == other.addrs
    finally:
        outsider.close()
    exact_all_reduce(pair)


@pytest.mark.timeout(60)
def test_forged_done_votes_do_not_commit_an_op_for_another_member(trio):
    """We give the first member our blob and not the second, which times
    out; a done vote we forge for the second must not make the first report
    success (all or nothing)."""
    comms, raw = trio
    victim, starved = comms
    e, tag = victim.epoch, 11
    box = {}
    def gather(i):
        try:
            box[i] = comms[i].all_gather_bytes(b"blob%d" % i, tag=tag)
        except pc.PcclError as err:
            box[i] = err
    ts = [threading.Thread(target=gather, args=(i,)) for i in range(2)]
    for t in ts:
        t.start()
    mine = b"hostile"
    raw.send(victim.peer_id, DATA, mine, epoch=e, tag=tag, seq=0, chunk=len(mine), sub=0)
    time.sleep(0.5)  # the victim is in its commit now, waiting for the others' done votes
    raw.send_msg(victim.peer_id, raw.done_vote(e, tag, 0, also=[(starved.peer_id, b"\x01" * 64)]))
    for t in ts:
        t.join(timeout=3 * TIMEOUT)
    assert isinstance(box[1], pc.TimeoutError), box
    assert isinstance(box[0], pc.TimeoutError) and starved.peer_id in str(box[0]), box
    without(raw, comms)
    exact_all_reduce(comms)


@pytest.mark.timeout(60)
def test_second_incarnation_while_the_first_is_connected_is_refused(trio):
    comms, raw = trio
    coord = comms[0]
    second = RawPeer(coord.addrs[0], KEY.encode(), raw.identity)
    try:
        second.handshake(purpose="control", inc=raw.inc + 1)
        assert second.closed_by_peer(5.0)
    finally:
        second.close()
    honest_round(raw, comms)  # the coordinator did not declare the member dead
    assert [c.world_size for c in comms] == [3, 3]
    without(raw, comms)
    exact_all_reduce(comms)


@pytest.mark.timeout(60)
def test_one_member_claiming_a_huge_revision_does_not_win_sync_state(pair):
    names = ["b", "w"]
    states = [{"w": np.full(1000, 1.5, np.float32), "b": np.arange(7, dtype=np.float32)} for _ in pair]
    assert [i.revision for i in run_all(pair, lambda c, s: c.sync_state(s, 5), states)] == [5, 5]
    raw = RawMember(pair, KEY.encode())
    try:
        raw.join(pair)
        e = pair[0].epoch
        table = {"t": "state", "rev": 2**64 - 1,
                 "tensors": [[n, states[0][n].nbytes, 12345] for n in names], "crev": 2**64 - 2}
        for c in pair:
            raw.send(c.peer_id, 5, msgpack.packb(table), epoch=e, tag=SYNC_TAG, seq=0, chunk=0xFFFFFFFF, sub=0)
        for c in pair:  # our part of the commit: we say we are done
            raw.send_msg(c.peer_id, raw.done_vote(e, SYNC_TAG, 0))
        res = run_all(pair, lambda c, s: c.sync_state(s, 6), states)
        assert not [r for r in res if isinstance(r, Exception)], res
        assert [r.revision for r in res] == [6, 6] and [r.tensors_received for r in res] == [0, 0]
        for s in states:
            assert np.array_equal(s["w"], np.full(1000, 1.5, np.float32))
            assert np.array_equal(s["b"], np.arange(7, dtype=np.float32))
    finally:
        raw.close()
    without(raw, pair)
    exact_all_reduce(pair)


@pytest.mark.timeout(60)
def test_an_op_run_by_one_member_times_out_once_then_the_tag_works():
    comms = sorted(make_group(2, key=KEY, timeout=2.0), key=lambda c: c.peer_id)
    try:
        a = comms[0]
        t0 = time.monotonic()
        with pytest.raises(pc.TimeoutError):
            a.all_reduce(np.ones(64, np.float32), tag=3)
        assert time.monotonic() - t0 < 2 * 2.0 + 1.0
        exact_all_reduce(comms, tag=4)  # after a's abort vote (same control link)
        for _ in range(3):
            exact_all_reduce(comms, tag=3)
    finally:
        close_all(comms)


@pytest.mark.timeout(60)
def test_revision_rule_keeps_a_lone_members_progress_against_a_fresh_joiner():
    """The honest case the revision check must not break: a member that synced
    at revision 5, then trained alone (world size 1: no sync) up to revision
    9, meets a fresh joiner at revision 0: the member's state wins."""
    a, b = make_group(2, key=KEY, timeout=2.0)
    try:
        states = [{"w": np.full(64, 2.0, np.float32)}, {"w": np.full(64, 2.0, np.float32)}]
        assert [i.revision for i in run_all([a, b], lambda c, s: c.sync_state(s, 5), states)] == [5, 5]
        b.close()
        while a.world_size != 1:
            a.update_topology()
        states[0]["w"][:] = 9.0  # four outer steps alone
        j = pc.Communicator(bootstrap=a.addrs, run_key=KEY, timeout=2.0)
        try:
            fresh = {"w": np.zeros(64, np.float32)}
            run_all([a, j], lambda c: c.wait_for_peers(2, timeout=30))
            res = run_all([a, j], lambda c, s, r: c.sync_state(s, r), [states[0], fresh], [9, 0])
            assert [r.revision for r in res] == [9, 9] and [r.tensors_received for r in res] == [0, 1], res
            assert np.array_equal(fresh["w"], np.full(64, 9.0, np.float32))
        finally:
            j.close()
    finally:
        a.close()
        b.close()
