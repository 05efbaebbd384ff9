// Shared-state synchronisation: after sync_state every member's tensors are
// byte-identical to the most popular state at the highest revision.
//
// 1. Every member sends every other member its revision and, per tensor, the
//    name, size and a 64-bit hash (XXH64 of the bytes).
// 2. Everyone computes the same winner from the same table: the highest
//    acceptable revision, then the state held by most members, then the one of
//    the lowest rank. A revision is acceptable when it is the committed
//    revision + 1 or less (as PCCL's master allows), or when a strict majority
//    of the members that synced before, or of all members, holds it. The
//    committed revision C is what the members that synced before report as
//    their last sync's result: the value a strict majority of them reports,
//    else the lowest one reported (a liar can lower it, never raise it). So one
//    member claiming 2^64-1 cannot overwrite everyone (it is neither C + 1 nor
//    a majority's), while members that trained on without syncing (their
//    revision grew by more than one, e.g. alone at world size 1) still win as a
//    majority. In a run where nobody synced yet there is nothing to measure
//    against: every revision is acceptable (the first sync anchors the run).
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

// What this member's earlier syncs committed (kept by its communicator).
struct StateHistory {
    bool synced = false;  // a sync_state succeeded here before (a joiner: not yet)
    uint64_t revision = 0;  // the revision it agreed on
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
// `history`: what this member committed before (the default: nothing, as
// for a joiner). The caller records {true, result.revision} once the op
// committed.
SyncResult sync_state(mesh::Channel &ch, const std::vector<TensorRef> &tensors, uint64_t revision,
                      size_t chunk_bytes, const StateHistory &history = StateHistory{});

}  // namespace pccl::state
