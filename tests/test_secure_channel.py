"""The secure channel against an active attacker on loopback: reflection,
claimed identities, replayed handshakes, tampered / replayed / reordered /
spliced records. Each attempt is refused, only the attacker's connection
closes, and the run's next all-reduce is exact."""

import socket
import subprocess
import threading
import time

import numpy as np
import pytest

import pccl_py as pc
from wire import AUTH, CONTROL, DATA, HEARTBEAT, HELLO, REJECT, Noise, RawPeer, pack

KEY = "secure-key"


@pytest.fixture
def run():
    """Two members P and Q of one run, in this process."""
    p = pc.Communicator(run_key=KEY, timeout=5.0)
    q = pc.Communicator(bootstrap=p.addrs, run_key=KEY, timeout=5.0)
    both(p, q, lambda c: c.wait_for_peers(2, timeout=30))
    assert p.world_size == q.world_size == 2
    yield p, q
    q.close()
    p.close()


def both(p, q, fn):
    t = threading.Thread(target=fn, args=(q,))
    t.start()
    fn(p)
    t.join(timeout=30)
    assert not t.is_alive()


def assert_run_unharmed(p, q):
    xs = {}

    def reduce(c):
        x = np.arange(1000, dtype=np.float32) + (1 if c is p else 2)
        c.all_reduce(x)
        xs[id(c)] = x

    both(p, q, reduce)
    want = 2 * np.arange(1000, dtype=np.float32) + 3
    assert np.array_equal(xs[id(p)], want) and np.array_equal(xs[id(q)], want)
    assert p.members == q.members and len(p.members) == 2


def test_reflection_attack_fails(run):
    """The old attack: claim to be Q to P and P to Q, and pass one's proof to
    the other. Each side's proof is a signature over its own static key for
    this handshake; reflected, it proves nothing."""
    p, q = run
    to_p = RawPeer(p.addrs[0], KEY.encode())
    to_q = RawPeer(q.addrs[0], KEY.encode())
    np_ = Noise(True, KEY.encode())
    nq = Noise(True, KEY.encode())
    to_p.sock.sendall(pack(HELLO, np_.write(1, b""), sub=1))
    to_q.sock.sendall(pack(HELLO, nq.write(1, b""), sub=1))
    _, msg2_p = to_p.recv()
    _, msg2_q = to_q.recv()
    import msgpack
    hello_p = msgpack.unpackb(np_.read(2, msg2_p))
    hello_q = msgpack.unpackb(nq.read(2, msg2_q))
    assert hello_p["id"] == p.peer_id and hello_q["id"] == q.peer_id
    # To P, claim Q's id with Q's own proof (reflected from the other connection).
    claim_q = msgpack.packb({"id": q.peer_id, "sig": hello_q["sig"], "inc": 1, "addrs": [], "enc": True,
                             "purpose": "mesh"}, use_bin_type=True)
    to_p.sock.sendall(pack(HELLO, np_.write(3, claim_q), sub=3))
    to_p.tx, to_p.rx = np_.split()
    ftype, payload = to_p.recv()
    assert ftype == REJECT and b"could not prove it holds that id's key" in payload
    assert to_p.closed_by_peer()
    # To Q, forward P's whole message 2 as if it were our message 3.
    to_q.sock.sendall(pack(HELLO, msg2_p[32:], sub=3))
    assert to_q.closed_by_peer()
    to_p.close()
    to_q.close()
    assert_run_unharmed(p, q)


def test_a_member_cannot_claim_another_members_id(run):
    p, q = run
    raw = RawPeer(p.addrs[0], KEY.encode())
    with pytest.raises(PermissionError, match="could not prove"):
        raw.handshake(id=q.peer_id)  # our own key signs, but the id names Q's
    raw.close()
    raw = RawPeer(p.addrs[0], KEY.encode())
    with pytest.raises(PermissionError, match="names no Ed25519 key"):
        raw.handshake(id="QmNnooDu7bfjPFoTZYxMNLWUQJyrVwtbZg5gBMjTezGAJN")
    raw.close()
    assert_run_unharmed(p, q)


def test_replayed_handshake_is_useless(run):
    """Messages 1 and 3 of a real handshake, replayed on a new connection:
    the responder's fresh ephemeral key makes the old message 3 fail."""
    p, q = run
    first = RawPeer(p.addrs[0], KEY.encode())
    noise = Noise(True, KEY.encode())
    msg1 = pack(HELLO, noise.write(1, b""), sub=1)
    first.sock.sendall(msg1)
    _, msg2 = first.recv()
    noise.read(2, msg2)
    msg3 = pack(HELLO, noise.write(3, first.hello_payload(noise, "mesh")), sub=3)
    first.sock.sendall(msg3)
    first.tx, first.rx = noise.split()
    assert first.recv()[0] == AUTH  # the real handshake succeeded
    first.close()
    replay = RawPeer(p.addrs[0], b"")
    replay.sock.sendall(msg1)
    ftype, _ = replay.recv()
    assert ftype == HELLO  # message 1 alone proves nothing but the key once held
    replay.sock.sendall(msg3)
    assert replay.closed_by_peer()
    replay.close()
    assert_run_unharmed(p, q)


@pytest.mark.parametrize("attack", ["replay", "reorder", "flip-header", "flip-payload", "truncate-tag",
                                    "splice", "clear-after-handshake"])
def test_tampered_records_close_that_connection_only(run, attack):
    p, q = run
    raw = RawPeer(p.addrs[0], KEY.encode())
    raw.handshake()
    heartbeat = raw.sealed(HEARTBEAT)
    if attack == "replay":
        raw.sock.sendall(heartbeat)
        raw.sock.sendall(heartbeat)
    elif attack == "reorder":
        second = raw.sealed(HEARTBEAT)
        raw.sock.sendall(second + heartbeat)
    elif attack == "flip-header":
        raw.sock.sendall(bytes([heartbeat[0] ^ 1]) + heartbeat[1:])
    elif attack == "flip-payload":
        rec = bytearray(raw.sealed(CONTROL, b"\x81\xa1t\xa3bye"))
        rec[50] ^= 0x40
        raw.sock.sendall(bytes(rec))
    elif attack == "truncate-tag":
        rec = raw.sealed(CONTROL, b"\x81\xa1t\xa3bye")
        raw.sock.sendall(rec[:-1] + b"\x00")
    elif attack == "splice":
        other = RawPeer(p.addrs[0], KEY.encode())
        other.handshake()
        raw.sock.sendall(other.sealed(HEARTBEAT))  # valid on the other connection only
        other.close()
    else:
        raw.sock.sendall(pack(CONTROL, b"\x81\xa1t\xa3bye" + b"\x00" * 20))  # past a sealed header's size
    assert raw.closed_by_peer()
    raw.close()
    assert_run_unharmed(p, q)


def test_wrong_key_learns_nothing_and_gets_auth_error(run):
    p, q = run
    with pytest.raises(pc.AuthError, match="run key mismatch"):
        pc.Communicator(bootstrap=p.addrs, run_key="wrong", timeout=5.0)
    raw = RawPeer(p.addrs[0], b"wrong")
    raw.sock.sendall(pack(HELLO, Noise(True, b"wrong").write(1, b""), sub=1))
    ftype, payload = raw.recv()
    assert ftype == REJECT and p.peer_id.encode() not in payload  # no id, no key, no address
    assert raw.closed_by_peer()
    raw.close()
    assert_run_unharmed(p, q)


def test_encrypt_false_keeps_frames_authenticated():
    p = pc.Communicator(run_key=KEY, timeout=5.0, encrypt=False)
    q = pc.Communicator(bootstrap=p.addrs, run_key=KEY, timeout=5.0, encrypt=False)
    try:
        both(p, q, lambda c: c.wait_for_peers(2, timeout=30))
        assert_run_unharmed(p, q)
        raw = RawPeer(p.addrs[0], KEY.encode(), encrypt=False)
        hello = raw.handshake()
        assert hello["enc"] is False and raw.rx_encrypted is False
        rec = bytearray(raw.sealed(CONTROL, b"\x81\xa1t\xa3bye"))
        assert bytes(rec[48:53]) == b"\x81\xa1t\xa3b"  # the payload travels in the clear...
        rec[50] ^= 0x40
        raw.sock.sendall(bytes(rec))
        assert raw.closed_by_peer()  # ...but a changed byte fails its tag
        raw.close()
        assert_run_unharmed(p, q)
    finally:
        q.close()
        p.close()


def test_one_side_asking_for_encryption_encrypts_the_link(run):
    p, q = run
    raw = RawPeer(p.addrs[0], KEY.encode(), encrypt=False)
    raw.handshake()
    assert raw.rx_encrypted is True
    rec = raw.sealed(CONTROL, b"\x81\xa1t\xa3bye")
    assert b"bye" not in rec
    raw.close()


# ---- the loopback fast path (tcp_transport.h): data payloads skip the AEAD
# only on a socket both ends verified to be loopback, with mirrored endpoints
# stated in both authenticated hellos.

def endpoints(raw: RawPeer) -> list[str]:
    """[local, peer] of the raw peer's socket, as the library prints them."""
    (lh, lp), (ph, pp) = raw.sock.getsockname()[:2], raw.sock.getpeername()[:2]
    return [f"{lh}:{lp}", f"{ph}:{pp}"]


def clear_data_accepted(raw: RawPeer) -> bool:
    """Sends a DATA frame without AEAD, then a sealed ping: True when the
    ping is answered (the peer read the payload as clear), False when the
    peer closed (it took the ping's first bytes for the payload's tag)."""
    was, raw.clear_data = raw.clear_data, True
    raw.send(DATA, b"\x5a" * 300, tag=5, epoch=1, seq=0)
    raw.clear_data = was
    try:
        return answered_ping(raw)
    except (ConnectionError, OSError):
        return False


def answered_ping(raw: RawPeer) -> bool:
    """A ready of epoch 0 is answered with a member's current commit once
    everything sent before it was read; raises if the peer closes."""
    raw.send_msg(CONTROL, {"t": "ready", "epoch": 0, "members": []})
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        ftype, m = raw.recv_msg()
        if ftype == CONTROL and m.get("t") == "commit":
            return True
    raise AssertionError("no answer to the ping within 10 s")


def sealed_data_accepted(raw: RawPeer) -> bool:
    was, raw.clear_data = raw.clear_data, False
    raw.send(DATA, b"\x5a" * 300, tag=5, epoch=1, seq=0)
    raw.clear_data = was
    return answered_ping(raw)


def test_mirrored_loopback_claims_turn_the_fast_path_on(run):
    p, q = run
    raw = RawPeer(p.addrs[0], KEY.encode())
    hello = raw.handshake(lo=endpoints(raw))
    assert hello["lo"] == list(reversed(endpoints(raw)))  # p states what its own socket shows
    assert raw.clear_data is True
    assert clear_data_accepted(raw)
    raw.close()
    assert_run_unharmed(p, q)


def test_claims_that_do_not_mirror_fall_back_to_sealed(run):
    p, q = run
    for claim in (None, "wrong port", "swapped"):
        raw = RawPeer(p.addrs[0], KEY.encode())
        local, peer = endpoints(raw)
        extra = {} if claim is None else {
            "lo": [local, peer.rsplit(":", 1)[0] + ":1"] if claim == "wrong port" else [peer, local]}
        hello = raw.handshake(**extra)
        assert hello["lo"] == [peer, local]  # p's socket is loopback: it claims...
        assert raw.clear_data is False
        assert sealed_data_accepted(raw)  # ...but without a mirrored claim the link stays sealed
        assert not clear_data_accepted(raw), claim
        raw.close()
    assert_run_unharmed(p, q)


def test_a_malformed_loopback_claim_is_refused(run):
    p, q = run
    raw = RawPeer(p.addrs[0], KEY.encode())
    with pytest.raises((PermissionError, ConnectionError)):
        raw.handshake(lo="127.0.0.1:1")
    raw.close()
    assert_run_unharmed(p, q)


def pair_on(listen=None, **kw):
    """Two members (only members answer the ping), both listening on `listen`."""
    p = pc.Communicator(listen=listen, run_key=KEY, timeout=5.0, **kw)
    q = pc.Communicator(listen=listen, bootstrap=p.addrs, run_key=KEY, timeout=5.0, **kw)
    both(p, q, lambda c: c.wait_for_peers(2, timeout=30))
    return p, q


def test_seal_loopback_true_never_claims_or_accepts_clear_data():
    p, q = pair_on(seal_loopback=True)
    try:
        raw = RawPeer(p.addrs[0], KEY.encode())
        hello = raw.handshake(lo=endpoints(raw))
        assert "lo" not in hello and raw.clear_data is False
        assert sealed_data_accepted(raw)
        assert not clear_data_accepted(raw)
        raw.close()
        assert_run_unharmed(p, q)
    finally:
        q.close()
        p.close()


def non_loopback_ipv4() -> str | None:
    out = subprocess.run(["ip", "-4", "-o", "addr", "show", "scope", "global"], capture_output=True, text=True)
    for line in out.stdout.splitlines():
        ip = line.split()[3].split("/")[0]
        try:
            with socket.create_server((ip, 0)):
                return ip
        except OSError:
            continue
    return None


def test_a_loopback_claim_over_a_non_loopback_link_stays_sealed():
    """A peer that claims the fast path with its true (mirrored) endpoints,
    on a socket that is not loopback: we make no claim and keep sealing."""
    ip = non_loopback_ipv4()
    if ip is None:
        pytest.skip("this host has no non-loopback IPv4 address to listen on")
    p, q = pair_on([f"/ip4/{ip}/tcp/0"])
    try:
        raw = RawPeer(p.addrs[0], KEY.encode())
        assert endpoints(raw)[1].startswith(ip + ":")
        hello = raw.handshake(lo=endpoints(raw))
        assert "lo" not in hello and raw.clear_data is False
        assert sealed_data_accepted(raw)
        assert not clear_data_accepted(raw)
        raw.close()
        assert_run_unharmed(p, q)
    finally:
        q.close()
        p.close()
