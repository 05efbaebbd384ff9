// Shared-state synchronisation: after sync_state every member's tensors are
// byte-identical to the most popular state at the highest revision.
//
// 1. Every member sends every other member its revision and, per tensor, the
//    name, size and a 64-bit hash (XXH64 of the bytes).
// 2. Everyone computes the same winner from the same table: highest revision,
//    then the state held by most members, then the one of the lowest rank.
// 3. Members holding the winning state push each differing tensor to each
//    member that lacks it (the source is spread deterministically over the
//    up-to-date members, so no requests are needed). The receiver stages the
//    pieces, verifies the hash, and only then overwrites its tensor.
// A member dying mid-transfer fails the op everywhere (commit protocol); a
// retry on the new view only moves the tensors still differing.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "mesh/channel.h"

namespace pccl::state {

struct TensorRef {
    std::string name;
    uint8_t *data;
    size_t nbytes;
    const uint64_t *known_hash = nullptr;  // the caller vouches for the bytes' hash: not re-hashed
};

struct SyncResult {
    uint64_t revision = 0;        // revision of the winning state
    uint32_t tensors_received = 0;
    uint32_t tensors_sent = 0;
    std::vector<uint64_t> hashes;  // per input tensor (input order): its hash now
};

// Blocking; runs on the calling thread. Names must be unique. Throws Error:
// INVALID_USAGE when this member's tensors do not match the winning state's
// names and sizes (every member fails the op), PEER_LOST, TIMEOUT, ...
SyncResult sync_state(mesh::Channel &ch, const std::vector<TensorRef> &tensors, uint64_t revision,
                      size_t chunk_bytes);

}  // namespace pccl::state
