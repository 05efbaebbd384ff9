// The identity part of a handshake payload (net/noise.h messages 2 and 3),
// shared by every transport: who we are (peer id, incarnation, advertised
// addresses) and the proof that the holder of that peer id's Ed25519 key
// chose this handshake's X25519 static key. Transport-specific fields
// (purpose, observed address, ...) ride in the same msgpack map.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "common/msgpack.h"
#include "net/peer_id.h"

namespace pccl::net {

constexpr size_t kMaxAdvertised = 32;  // addresses taken from one peer's handshake
constexpr size_t kMaxAddrLength = 512;
constexpr size_t kMaxPurposeLength = 64;

// {id, sig, inc, addrs, enc}: `sig` signs NoiseHandshake::static_key_statement(local_static).
MsgValue hello_fields(const Identity &self, const Key32 &local_static, uint64_t incarnation,
                      const std::vector<std::string> &advertised, bool encrypt);

struct PeerHello {
    std::string id;
    uint64_t incarnation = 0;
    std::vector<std::string> addrs;
    bool encrypt = true;
    MsgValue fields;  // the whole decoded map (for the transport's own fields)
};

// Decodes and checks a peer's hello against the static key its handshake
// proved. Throws Error(PCCL_ERR_AUTH_FAILED) when the proof fails,
// PCCL_ERR_PROTOCOL when malformed or over the bounds above.
PeerHello verify_hello(const std::string &payload, const Key32 &remote_static);

}  // namespace pccl::net
