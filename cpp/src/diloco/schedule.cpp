#include "diloco/schedule.h"

#include <string>

#include "common/error.h"

namespace pccl::diloco {

Schedule::Schedule(uint64_t sync_every, uint32_t fragments, uint32_t overlap_steps)
    : h_(sync_every), p_(fragments), tau_(overlap_steps) {
    if (h_ == 0) fail(PCCL_ERR_INVALID_ARGUMENT, "sync_every (H) must be >= 1, got 0");
    if (p_ == 0) fail(PCCL_ERR_INVALID_ARGUMENT, "fragments (P) must be >= 1, got 0");
    if (h_ % p_ != 0)
        fail(PCCL_ERR_INVALID_ARGUMENT,
             "sync_every (H=" + std::to_string(h_) + ") must be a multiple of fragments (P=" + std::to_string(p_) +
                 ") so the fragments are evenly staggered over H");
    if (tau_ > h_ / p_)
        fail(PCCL_ERR_INVALID_ARGUMENT,
             "overlap_steps (tau=" + std::to_string(tau_) + ") must be <= H/P = " + std::to_string(h_ / p_) +
                 " so that at most one fragment is in flight at a time");
}

int64_t Schedule::fragment_to_start(uint64_t step) const {
    if (step == 0) return -1;
    const uint64_t s = stride();
    if (step % s != 0) return -1;
    // Offsets (p+1)*s mod H: p = P-1 sits at 0 (multiples of H).
    const uint64_t slot = (step % h_) / s;  // 0..P-1
    return static_cast<int64_t>(slot == 0 ? p_ - 1 : slot - 1);
}

int64_t Schedule::fragment_to_apply(uint64_t step) const {
    if (step < tau_) return -1;
    return fragment_to_start(step - tau_);
}

uint64_t Schedule::start_step(uint32_t fragment, uint64_t round) const {
    if (fragment >= p_)
        fail(PCCL_ERR_INVALID_ARGUMENT,
             "fragment " + std::to_string(fragment) + " out of range [0, " + std::to_string(p_) + ")");
    return round * h_ + (static_cast<uint64_t>(fragment) + 1) * stride();
}

uint64_t Schedule::next_start_step(uint32_t fragment, uint64_t after) const {
    const uint64_t first = start_step(fragment, 0);
    if (after < first) return first;
    return first + ((after - first) / h_ + 1) * h_;
}

}  // namespace pccl::diloco
