// The recursive-doubling all-reduce, for small buffers: ceil(log2 n) (+2 when
// n is not a power of two) latency steps instead of the ring's 2(n-1).
//
// With p the largest power of two <= n and e = n - p: first the ranks below
// 2e pair up (2i, 2i+1) and the even one sends its buffer to the odd one,
// which folds it in (the "fold" step), so p members remain, numbered
// v = 0..p-1 in rank order. In step k = 1..log2 p, member v swaps its whole
// current value with member v ^ 2^(k-1) and both keep op(low, high), where
// `low` is the value of the half with the smaller numbers: both partners
// evaluate the same expression on the same bytes, so after the last step
// every member holds bit-identical bytes, whatever the op (min/max with NaN
// and signed zeros included, where op(a, b) != op(b, a)). Avg divides once,
// at the end, on those bytes. Last, each odd rank below 2e sends the result
// to its even partner, which stores it verbatim (the "spread" step).
//
// Each member sends its whole buffer once per step (log2 p buffers, the
// ring 2(n-1)/n), so it suits small buffers, where the steps' latency
// dominates; choose_algorithm() (allreduce.h) picks it by size and n.
// Dense only (the codec's wire format is the buffer's dtype).
//
// Frame addressing: chunk = step (0 fold, 1..log2 p, log2 p + 1 spread) or
// kDescriptorChunk, sub = the piece (the buffer cut in chunk_bytes pieces).
// Every frame is checked against the step's partner, the piece geometry and
// duplicates before it is used; nothing is reduced before the sender's
// descriptor matched ours.
#pragma once

#include <cstddef>
#include <cstdint>

#include "collectives/ring.h"
#include "mesh/channel.h"
#include "pccl/pccl.h"

namespace pccl::collectives {

// Reduces `count` elements of `buf` in place (dense; desc.quant must be 0).
// Blocking, on the calling thread; errors as run_ring (ring.h).
void run_doubling(mesh::Channel &ch, void *buf, size_t count, const RingDescriptor &desc, size_t chunk_bytes);

}  // namespace pccl::collectives
