// Ring all-reduce = reduce-scatter + all-gather over a Channel.
//
// The buffer is cut into size() chunks; chunk c starts at rank c, travels the
// ring once being reduced at every hop (in ring order), and ends fully reduced
// at rank c-1, which then sends it around verbatim. Every member therefore ends
// with bit-identical bytes. Chunks are further cut into sub-chunks of
// `chunk_bytes`, each reduced and forwarded as soon as it arrives, so reduction
// overlaps receiving and sub-chunks spread over the channel's streams.
#pragma once

#include <cstddef>

#include "mesh/channel.h"
#include "pccl/pccl.h"

namespace pccl::collectives {

struct AllReduceOptions {
    pccl_reduce_op_t op = PCCL_SUM;
    size_t chunk_bytes = 256 * 1024;
};

// Reduces `count` elements of `buf` in place across the channel's group.
// Blocking, runs on the calling thread. On error throws pccl::Error and `buf`
// holds partial results (the caller restores it). Peers must pass the same
// dtype, count and op; a mismatch fails on every member with
// PCCL_ERR_INVALID_USAGE.
void ring_all_reduce(mesh::Channel &ch, void *buf, size_t count, pccl_dtype_t dtype,
                     const AllReduceOptions &opts);

}  // namespace pccl::collectives
