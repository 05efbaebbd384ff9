// Peer identities: base58btc, peer ids as multihashes, persistent key files.
//
// A peer id is the base58btc text of a multihash, the form libp2p and the
// Python `multiaddr` package accept after /p2p/. Ours is the sha2-256
// multihash (0x12 0x20 || sha256(secret)) of a 32-byte random secret, so it
// starts with "Qm". All functions are pure except the two that read the
// CSPRNG or a key file; none keeps global state.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

namespace pccl {

// Bitcoin alphabet; leading zero bytes map to leading '1's and back.
// base58_decode throws Error(PCCL_ERR_INVALID_ARGUMENT) naming a bad character.
std::string base58_encode(const uint8_t *data, size_t n);
std::string base58_decode(std::string_view text);

struct Identity {
    std::array<uint8_t, 32> secret;
    std::string peer_id;
};

std::string peer_id_from_secret(const std::array<uint8_t, 32> &secret);

// True for the multihash bytes of a peer id: sha2-256 (0x12 0x20 + 32 bytes)
// or identity (0x00, len, len bytes with len <= 42 as libp2p specifies).
bool is_peer_id_multihash(const uint8_t *data, size_t n);
// base58-decodes and applies is_peer_id_multihash; never throws.
bool is_valid_peer_id(std::string_view text);

// A fresh identity from the kernel CSPRNG.
Identity generate_identity();

// Reads the key file at path, or creates it if missing. File format: the text
// "pccl-key-v1 <64 hex chars>\n" (the final newline is optional on read).
// Creation writes a 0600 temp file in the same directory and links it into
// place, so concurrent creators agree on one key and no reader ever sees a
// partial file. A malformed file throws Error(PCCL_ERR_INVALID_ARGUMENT) naming
// the path; an unreadable/unwritable one Error(PCCL_ERR_IO). Blocking file I/O.
Identity load_or_create_identity(const std::string &path);

}  // namespace pccl
