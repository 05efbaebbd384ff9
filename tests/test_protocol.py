"""Wire protocol: the Noise handshake, records and control frames checked with
an independent Python implementation (tests/wire.py: `cryptography`, msgpack);
hostile input closes one connection."""

import threading

import numpy as np
import pytest

import pccl_py as pc
from wire import AUTH, CONTROL, HELLO, REJECT, RawPeer, pack

KEY = "wire-key"


@pytest.fixture
def comm():
    c = pc.Communicator(run_key=KEY, timeout=5.0)
    yield c
    c.close()


def test_handshake_and_control_frames_decode_with_msgpack(comm):
    raw = RawPeer(comm.addrs[0], KEY.encode())
    hello = raw.handshake()
    assert hello["id"] == comm.peer_id and hello["id"].startswith("12D3KooW") and len(hello["sig"]) == 64
    assert hello["addrs"] == comm.addrs and hello["enc"] is True
    raw.send_msg(CONTROL, {"t": "join", **raw.identity.record(7)})
    ftype, ack = raw.recv_msg()
    assert (ftype, ack) == (CONTROL, {"t": "join_ack"})
    t = threading.Thread(target=comm.update_topology)
    t.start()
    ftype, commit = raw.recv_msg()
    t.join(timeout=10)
    assert ftype == CONTROL and commit["t"] == "commit"
    assert commit["epoch"] == 2 and commit["by"] == comm.peer_id and len(commit["sig"]) == 64
    assert sorted(m["id"] for m in commit["members"]) == sorted([comm.peer_id, raw.id])
    assert comm.world_size == 2
    # Our fake member goes silent for good: it is declared dead and dropped.
    raw.close()
    comm.update_topology()
    assert comm.members == [comm.peer_id] and comm.epoch == 3


def test_wrong_key_is_rejected_with_a_reason(comm):
    raw = RawPeer(comm.addrs[0], b"not-the-key")
    with pytest.raises(PermissionError, match="run key mismatch"):
        raw.handshake()
    assert raw.closed_by_peer()
    raw.close()
    comm.update_topology()
    assert comm.world_size == 1


def test_communicator_with_wrong_or_missing_key_cannot_join(comm):
    for key in ("wrong", ""):
        with pytest.raises(pc.AuthError, match="run key|rejected"):
            pc.Communicator(bootstrap=comm.addrs, run_key=key, timeout=5.0)
    comm.update_topology()
    assert comm.world_size == 1


@pytest.mark.parametrize("garbage", [
    b"GET / HTTP/1.1\r\n\r\n" + b"x" * 20,                # not our protocol at all
    pack(HELLO, b"\x00" * 8000),                           # oversized before authentication
    pack(HELLO, b"\xc1\xc1\xc1", sub=1),                   # too short for Noise message 1
    pack(HELLO, b"\x00" * 48, sub=2),                      # a responder's message to a responder
    pack(AUTH, b""),                                       # a confirmation before any handshake
    pack(CONTROL, b"\x80"),                                # control before the handshake
    pack(9, b""),                                          # unknown frame type
])
def test_hostile_bytes_close_only_that_connection(comm, garbage):
    raw = RawPeer(comm.addrs[0], KEY.encode())
    raw.sock.sendall(garbage)
    assert raw.closed_by_peer()
    raw.close()
    # The peer still works: a real peer joins and all-reduces with it.
    other = pc.Communicator(bootstrap=comm.addrs, run_key=KEY, timeout=5.0)
    try:
        t = threading.Thread(target=other.wait_for_peers, args=(2, 10.0))
        t.start()
        assert comm.wait_for_peers(2, timeout=10.0) == 2
        t.join(timeout=10)
        x, y = np.ones(5, np.float32), np.full(5, 2, np.float32)
        t = threading.Thread(target=other.all_reduce, args=(y,))
        t.start()
        comm.all_reduce(x)
        t.join(timeout=10)
        assert x.tolist() == y.tolist() == [3.0] * 5
    finally:
        other.close()


def test_malformed_control_message_after_auth_closes_that_connection(comm):
    raw = RawPeer(comm.addrs[0], KEY.encode())
    raw.handshake()
    raw.send_msg(CONTROL, {"t": "no-such-message"})
    assert raw.closed_by_peer()
    raw.close()
    raw2 = RawPeer(comm.addrs[0], KEY.encode())
    raw2.handshake()
    raw2.send(CONTROL, b"\x81\xa1t")  # truncated msgpack
    assert raw2.closed_by_peer()
    raw2.close()
    assert comm.world_size == 1


def test_reject_frame_is_msgpack_and_says_nothing_else(comm):
    """A dialer without the run key gets one reject in the clear, and not the
    responder's static key, id or addresses (message 2 is never sent)."""
    from wire import Noise
    raw = RawPeer(comm.addrs[0], b"bad")
    raw.sock.sendall(pack(HELLO, Noise(True, b"bad").write(1, b""), sub=1))
    ftype, rej = raw.recv_msg()
    assert ftype == REJECT and rej == {"reason": "authentication failed: run key mismatch"}
    assert raw.closed_by_peer()
    raw.close()
