// The direct all-reduce: every member sends each chunk straight to the member
// that owns it (reduce-scatter in one step) and every owner sends its reduced
// chunk straight to all the others (all-gather in one step).
//
// Each member's uplink and downlink carry the same bytes as in the ring,
// 2(n-1)/n of the buffer, but a byte crosses two links instead of up to
// 2(n-1), so an op costs 2 one-way latencies instead of 2(n-1), and one slow
// link delays only what crosses it instead of every member behind it in the
// ring. It needs a link between every pair of members (n(n-1) flows): meant
// for small groups on long links. Quantized, each member's own contribution
// is quantized once (the ring requantizes a growing partial sum per hop).
//
// Chunk c is owned by rank c. The owner folds the contributions of a
// sub-chunk in a fixed rank order (those that arrive early wait), so results
// do not depend on arrival order; every member then holds the owner's bytes.
// The same RingLayout, RingDescriptor and RingCodec as the ring (ring.h).
#pragma once

#include "collectives/ring.h"

namespace pccl::collectives {

// Blocking, on the calling thread; errors as run_ring.
void run_direct(mesh::Channel &ch, const RingLayout &L, const RingDescriptor &desc, RingCodec &codec,
                uint64_t seed);

}  // namespace pccl::collectives
