// All-reduce (reduce-scatter + all-gather over a Channel, by the ring of
// ring.h or the direct exchange of direct.h), dense or quantized.
//
// Dense: every hop sends the partial reduction in the buffer's dtype; the
// owner of a chunk divides once for avg and its bytes travel verbatim.
// Quantized (f32 only, sum/avg): every reduce-scatter hop quantizes its partial
// sum of the sub-chunk and the receiver dequantizes and accumulates in f32; the
// owner quantizes the final value once, replaces its own copy with the decoded
// value, and those bytes travel verbatim, so every member decodes the same
// bytes and ends bit-identical. See compress/quantize.h for the wire formats.
#pragma once

#include <cstddef>
#include <cstdint>

#include "mesh/channel.h"
#include "pccl/pccl.h"

namespace pccl::collectives {

struct AllReduceOptions {
    pccl_reduce_op_t op = PCCL_SUM;
    size_t chunk_bytes = 256 * 1024;
    pccl_quant_t quant = PCCL_QUANT_NONE;
    uint32_t quant_block = 128;  // values per scale (int8, int4, e3m0)
    bool stochastic = false;     // stochastic rounding (int8, int4, e3m0)
    uint64_t seed = 0;           // varies stochastic rounding between calls (need not agree)
    pccl_algorithm_t algorithm = PCCL_ALGO_RING;  // ring.h or direct.h
};

// Throws Error(PCCL_ERR_INVALID_ARGUMENT) unless (dtype, opts) is a valid
// combination: quantization needs f32, sum or avg, a known format and a
// block of at least 1.
void check_all_reduce_options(pccl_dtype_t dtype, const AllReduceOptions &opts);

// Reduces `count` elements of `buf` in place across the channel's group
// (opts.algorithm chooses ring or direct; the wire formats are the same).
// Blocking, runs on the calling thread. On error throws pccl::Error and `buf`
// holds partial results (the caller restores it). Peers must pass the same
// dtype, count, op and quantization; a mismatch fails on every member with
// PCCL_ERR_INVALID_USAGE. A quantized op whose input holds NaN or Inf fails
// with PCCL_ERR_INVALID_ARGUMENT before anything is sent.
void ring_all_reduce(mesh::Channel &ch, void *buf, size_t count, pccl_dtype_t dtype,
                     const AllReduceOptions &opts);

}  // namespace pccl::collectives
