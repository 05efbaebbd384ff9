"""Multiaddr text/binary forms match the Python `multiaddr` package; peer ids and key files."""
import os
import stat

import multiaddr
import pytest

from pccl_py import _core
from pccl_py.errors import NetworkError

KNOWN_ID = "QmNnooDu7bfjPFoTZYxMNLWUQJyrVwtbZg5gBMjTezGAJN"
OUR_ID = _core.peer_id_from_secret(bytes(range(32)))
RELAY_ID = _core.peer_id_from_secret(b"\x07" * 32)

ADDRS = [
    "/ip4/1.2.3.4/tcp/4001",
    "/ip4/0.0.0.0/tcp/0",
    "/ip4/255.255.255.255/udp/65535",
    "/ip4/127.0.0.1/udp/1234",
    "/ip6/::1/tcp/4001",
    "/ip6/::/udp/1",
    "/ip6/0:0:0:0:0:0:0:1/tcp/80",
    "/ip6/2001:DB8:0:0:1:0:0:1/tcp/1",
    "/ip6/2001:0db8:85a3:0000:0000:8a2e:0370:7334/tcp/443",
    "/ip6/fe80::1:0:0:0/tcp/1",
    "/ip6/1:0:2:3:4:5:6:7/tcp/1",
    "/ip6/::ffff:1.2.3.4/tcp/1",
    "/ip6/::1.2.3.4/tcp/1",
    "/dns/example.com/tcp/443",
    "/dns4/Example.COM/tcp/1",
    "/dns6/localhost/udp/53",
    "/dns/example.com./tcp/1",
    "/dns/é.example/tcp/1",
    f"/p2p/{KNOWN_ID}",
    f"/p2p/{OUR_ID}",
    f"/ip4/1.2.3.4/tcp/4001/p2p/{OUR_ID}",
    f"/ip6/::1/tcp/4001/p2p/{KNOWN_ID}",
    f"/dns4/relay.example.org/tcp/4001/p2p/{RELAY_ID}",
    f"/ip4/1.2.3.4/tcp/4001/p2p/{RELAY_ID}/p2p-circuit/p2p/{OUR_ID}",
    f"/ip4/1.2.3.4/tcp/4001/p2p/{RELAY_ID}/p2p-circuit",
    "/p2p-circuit",
    "/ip4/1.2.3.4/tcp/0080/",
]


@pytest.mark.parametrize("text", ADDRS)
def test_matches_python_multiaddr(text):
    ref = multiaddr.Multiaddr(text)
    b = _core.multiaddr_to_bytes(text)
    assert b == ref.to_bytes()
    assert _core.multiaddr_normalize(text) == str(ref)
    assert _core.multiaddr_from_bytes(b) == str(ref)
    assert _core.multiaddr_to_bytes(_core.multiaddr_from_bytes(b)) == b
    assert str(multiaddr.Multiaddr(b)) == str(ref)


def test_empty_multiaddr():
    assert _core.multiaddr_to_bytes("") == b""
    assert _core.multiaddr_from_bytes(b"") == ""


def test_ipfs_alias_prints_as_p2p():
    # The package (0.2.0) no longer accepts /ipfs/; we accept it as an alias.
    assert _core.multiaddr_normalize(f"/ipfs/{KNOWN_ID}") == f"/p2p/{KNOWN_ID}"
    assert _core.multiaddr_to_bytes(f"/ipfs/{KNOWN_ID}") == multiaddr.Multiaddr(f"/p2p/{KNOWN_ID}").to_bytes()


INVALID_TEXT = [
    ("/ip4/1.2.3/tcp/1", "bad ip4 address '1.2.3'"),
    ("/ip4/01.2.3.4/tcp/1", "bad ip4 address"),
    ("/ip4/256.1.1.1", "bad ip4 address"),
    ("/ip6/::1%eth0/tcp/1", "bad ip6 address"),
    ("/ip6/1.2.3.4", "bad ip6 address"),
    ("/ip4/1.2.3.4/tcp/65536", "out of range"),
    ("/ip4/1.2.3.4/tcp/-1", "bad tcp port"),
    ("/ip4/1.2.3.4/udp/x", "bad udp port"),
    ("/ip4/1.2.3.4/tcp", "missing value for tcp"),
    ("/ip4", "missing value for ip4"),
    ("/foo/1", "unknown protocol 'foo'"),
    ("ip4/1.2.3.4", "must start with '/'"),
    ("/ip4/1.2.3.4//tcp/1", "empty protocol name"),
    ("/dns/exa_mple.com/tcp/1", "bad dns name"),
    ("/dns/a..b/tcp/1", "bad dns name"),
    ("/dns/-a.com/tcp/1", "bad dns name"),
    ("/dns/" + "a" * 64 + ".com/tcp/1", "bad dns name"),
    ("/p2p/1", "bad peer id"),
    ("/p2p/Qm0OIl", "bad peer id"),
    (f"/p2p/{KNOWN_ID[:-1]}", "bad peer id"),
]


@pytest.mark.parametrize("text,message", INVALID_TEXT)
def test_invalid_text_raises_useful_error(text, message):
    with pytest.raises(ValueError) as info:
        _core.multiaddr_to_bytes(text)
    assert message in str(info.value)
    assert f"invalid multiaddr '{text}'" in str(info.value)


INVALID_BINARY = [
    (b"\x04\x01\x02\x03", "truncated ip4"),
    (b"\x06\x00", "truncated tcp"),
    (b"\x80", "bad varint"),
    (b"\xff\xff\xff\xff\xff\x01", "bad varint"),
    (b"\x7f", "unknown protocol code 127"),
    (b"\xa5\x03\x22\x12\x20", "truncated p2p"),
    (b"\xa5\x03\x03\x12\x01\x00", "bad peer id"),
    (b"\x35\x00", "empty dns name"),
    (b"\x35\xff\xff\xff\xff\x0f", "truncated dns"),
]


@pytest.mark.parametrize("data,message", INVALID_BINARY)
def test_invalid_binary_raises_useful_error(data, message):
    with pytest.raises(ValueError) as info:
        _core.multiaddr_from_bytes(data)
    assert "invalid binary multiaddr" in str(info.value)
    assert message in str(info.value)


def test_base58_roundtrip_and_errors():
    for data in (b"", b"\x00", b"\x00\x00\x01", b"hello world", bytes(range(256))):
        text = _core.base58_encode(data)
        assert _core.base58_decode(text) == data
    assert _core.base58_encode(b"hello world") == "StV1DL6CwTryKyV"
    with pytest.raises(ValueError, match="invalid base58 character '0'"):
        _core.base58_decode("abc0")


def test_peer_ids_are_libp2p_ed25519_ids_accepted_by_python_multiaddr():
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
    for i in range(20):
        seed = bytes([i]) * 32
        pid = _core.peer_id_from_secret(seed)
        assert pid.startswith("12D3KooW") and len(pid) == 52
        assert _core.is_valid_peer_id(pid)
        assert str(multiaddr.Multiaddr("/p2p/" + pid)) == "/p2p/" + pid
        # The id is the identity multihash of the protobuf Ed25519 key, computed independently.
        pub = Ed25519PrivateKey.from_private_bytes(seed).public_key().public_bytes(
            serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        assert _core.base58_decode(pid) == b"\x00\x24\x08\x01\x12\x20" + pub
    assert _core.is_valid_peer_id(KNOWN_ID)
    identity_id = _core.base58_encode(b"\x00\x04abcd")
    assert _core.is_valid_peer_id(identity_id)
    for bad in ("", "Qm", "0OIl", KNOWN_ID + "1", _core.base58_encode(b"\x12\x20" + b"x" * 31)):
        assert not _core.is_valid_peer_id(bad)


def test_key_file_persists_identity(tmp_path):
    path = tmp_path / "node.key"
    first = _core.load_or_create_identity(str(path))
    assert _core.is_valid_peer_id(first)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    content = path.read_text()
    assert content.startswith("pccl-key-v1 ") and content.endswith("\n") and len(content) == 12 + 64 + 1
    assert _core.load_or_create_identity(str(path)) == first
    secret = bytes.fromhex(content.split()[1])
    assert _core.peer_id_from_secret(secret) == first
    assert sorted(p.name for p in tmp_path.iterdir()) == ["node.key"]  # no temp file left
    other = _core.load_or_create_identity(str(tmp_path / "other.key"))
    assert other != first


@pytest.mark.parametrize(
    "content",
    ["", "garbage\n", "pccl-key-v1 abc\n", "pccl-key-v1 " + "zz" * 32 + "\n", "pccl-key-v2 " + "00" * 32 + "\n"],
)
def test_corrupt_key_file_is_a_clear_error(tmp_path, content):
    path = tmp_path / "bad.key"
    path.write_text(content)
    with pytest.raises(ValueError) as info:
        _core.load_or_create_identity(str(path))
    assert f"malformed key file '{path}'" in str(info.value)
    assert path.read_text() == content  # never overwritten


def test_key_file_in_missing_directory_is_an_error(tmp_path):
    # An I/O failure (PCCL_ERR_IO): the same NetworkError (an OSError) the
    # communicator raises, no longer a ValueError.
    with pytest.raises(NetworkError, match="cannot create key file"):
        _core.load_or_create_identity(str(tmp_path / "nope" / "k.key"))
