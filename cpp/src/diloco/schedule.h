// Streaming DiLoCo schedule: which parameter fragment starts its outer sync
// after which inner step, and when its result must be applied.
//
// Steps are counted as completed inner steps: after the t-th call of the inner
// optimizer, t = 1, 2, ... . With H = sync_every, P = fragments and
// tau = overlap_steps, fragment p (0-based) starts its sync after the steps
//     t = k*H + (p+1)*H/P,  k = 0, 1, ...
// so the P fragments are evenly staggered over every window of H steps, each
// fragment syncs once per H steps, and fragment P-1 syncs at the multiples of H
// (P = 1 is plain DiLoCo). Its all-reduce runs in the background during the next
// tau inner steps; the result is applied after step t + tau.
//
// Rules (checked by the constructor, which throws pccl::Error with status
// PCCL_ERR_INVALID_ARGUMENT and a message naming the rule):
// - H >= 1, P >= 1, H % P == 0 (fragments evenly staggered over H);
// - tau <= H/P: at most one fragment is in flight at any moment. tau == H/P is
//   the fully delayed variant (with P = 1: the one-step-delayed outer update of
//   PCCL's async DiLoCo): a fragment's result is applied at the very step the
//   next fragment starts; a driver applies first, then starts.
//
// Pure arithmetic: no I/O, no allocation, safe to use from any thread.
#pragma once

#include <cstdint>

namespace pccl::diloco {

class Schedule {
public:
    Schedule(uint64_t sync_every, uint32_t fragments, uint32_t overlap_steps);

    uint64_t sync_every() const { return h_; }
    uint32_t fragments() const { return p_; }
    uint32_t overlap_steps() const { return tau_; }
    // Inner steps between two consecutive fragment syncs (H/P).
    uint64_t stride() const { return h_ / p_; }

    // Fragment that starts its sync after step t, or -1 (never for t == 0).
    int64_t fragment_to_start(uint64_t step) const;
    // Fragment whose sync result must be applied after step t, or -1.
    int64_t fragment_to_apply(uint64_t step) const;
    // Step after which fragment p starts its k-th sync (k = 0, 1, ...).
    uint64_t start_step(uint32_t fragment, uint64_t round) const;
    // First step > after at which fragment p starts a sync.
    uint64_t next_start_step(uint32_t fragment, uint64_t after) const;

private:
    uint64_t h_;
    uint32_t p_;
    uint32_t tau_;
};

}  // namespace pccl::diloco
