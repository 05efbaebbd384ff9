// Peer identities: base58btc, peer ids as multihashes, persistent key files.
//
// A peer's identity is an Ed25519 key pair. Its peer id is libp2p's form of
// the public key: the identity multihash (0x00, 36) of the protobuf PublicKey
// {Type: Ed25519 = 1, Data: the 32 key bytes} (08 01 12 20 || key), in
// base58btc, so it starts with "12D3KooW" and is valid after /p2p/ for the
// Python `multiaddr` package. The id *is* the public key: whoever proves they
// hold the private key (a signature, see the handshake) is that peer, and
// nobody else can be. All functions are pure except the two that read the
// CSPRNG or a key file; none keeps global state.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include "common/crypto.h"

namespace pccl {

// Bitcoin alphabet; leading zero bytes map to leading '1's and back.
// base58_decode throws Error(PCCL_ERR_INVALID_ARGUMENT) naming a bad character.
std::string base58_encode(const uint8_t *data, size_t n);
std::string base58_decode(std::string_view text);

struct Identity {
    Key32 secret;      // the Ed25519 private seed
    Key32 public_key;  // its Ed25519 public key
    std::string peer_id;
};

std::string peer_id_from_public_key(const Key32 &public_key);
// The id of the key pair whose private seed is `secret`.
std::string peer_id_from_secret(const Key32 &secret);
// The Ed25519 public key an id names; false when the id is not an Ed25519
// identity id (e.g. a sha2-256 "Qm..." id, which names no verifiable key).
bool peer_public_key(std::string_view peer_id, Key32 &public_key);
// Signs / checks `msg` with a peer's identity key; verify_peer() is false for
// ids that name no Ed25519 key and for bad signatures.
Signature sign_as(const Identity &self, const void *msg, size_t n);
bool verify_peer(std::string_view peer_id, const void *msg, size_t n, const uint8_t *sig, size_t sig_len);

// True for the multihash bytes of any libp2p peer id: sha2-256 (0x12 0x20 +
// 32 bytes) or identity (0x00, len, len bytes with len <= 42 as libp2p
// specifies). Addresses may name such ids; a handshake accepts only ids
// peer_public_key() can read.
bool is_peer_id_multihash(const uint8_t *data, size_t n);
// base58-decodes and applies is_peer_id_multihash; never throws.
bool is_valid_peer_id(std::string_view text);

// A fresh identity from the kernel CSPRNG.
Identity generate_identity();

// Reads the key file at path, or creates it if missing. File format: the text
// "pccl-key-v1 <64 hex chars: the Ed25519 seed>\n" (the final newline is
// optional on read).
// Creation writes a 0600 temp file in the same directory and links it into
// place, so concurrent creators agree on one key and no reader ever sees a
// partial file. A malformed file throws Error(PCCL_ERR_INVALID_ARGUMENT) naming
// the path; an unreadable/unwritable one Error(PCCL_ERR_IO). Blocking file I/O.
Identity load_or_create_identity(const std::string &path);

}  // namespace pccl
