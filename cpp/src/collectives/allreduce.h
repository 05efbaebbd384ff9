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
#include "collectives/backup.h"
#include "pccl/pccl.h"

namespace pccl::collectives {

// The options are the public struct itself (pccl.h), normalised by the C
// entry point (api/options.h); what is not the caller's choice comes apart:
// chunk_bytes (the communicator's pipelining granularity) and seed (varies
// stochastic rounding between calls; members need not agree on it).

// Throws Error(PCCL_ERR_INVALID_ARGUMENT) unless (dtype, opts) is a valid
// combination: a known op and algorithm; quantization needs f32, sum or avg,
// a codec of the table (compress/codec.h) and a block of at least 1. The one
// check of these options (the codec checks its own again when called
// directly).
void check_all_reduce_options(pccl_dtype_t dtype, const pccl_allreduce_opts_t &opts);

// The algorithm an all-reduce of `bytes` over `world` members runs:
// opts.algorithm unless it is PCCL_ALGO_AUTO; then recursive doubling
// (doubling.h) for dense buffers where its log2(n) (+2) steps save more
// latency than its extra bytes cost, under a simple cost model (a step costs
// what kAutoStepBytes take on the wire; at most kAutoDoublingMaxBytes), else
// the ring, or from kAutoDirectMinWorld members on the direct algorithm
// (direct.h: 2 latency steps instead of the ring's 2(n-1), the same bytes per
// member). Measured with 32 peers, 2 MiB (bench/wan.py, 100 ms RTT, 10
// Mbit/s): direct 8.7 s vs Gloo 10.1 s in one run, the ring 37 s vs Gloo
// 9.8 s in another; with 16 peers (20 Mbit/s, 4 MiB) the ring was still
// ahead (4.8 s vs Gloo 5.6 s; direct 5.5 s vs Gloo 5.8 s, two runs); on
// loopback (16 and 32 peers, 2 and 16 MiB) the two are within noise of each
// other. Pure:
// every member of an op evaluates it on the same arguments (which the op
// descriptor checks), so all run the same algorithm.
constexpr size_t kAutoStepBytes = 64 * 1024;
constexpr size_t kAutoDoublingMaxBytes = 1 << 20;
constexpr size_t kAutoDirectMinWorld = 24;
pccl_algorithm_t choose_algorithm(size_t bytes, size_t world, const pccl_allreduce_opts_t &opts);

// Reduces `count` elements of `buf` in place across the channel's group
// (the algorithm of choose_algorithm(); ring and direct share one wire
// format, doubling has its own).
// Blocking, runs on the calling thread. On error throws pccl::Error and `buf`
// holds partial results; `backup` (may be null) then holds what the caller
// needs to restore it (Backup::restore, once nothing writes into `buf`). Peers must pass the same
// dtype, count, op and quantization; a mismatch fails on every member with
// PCCL_ERR_INVALID_USAGE. A quantized op whose input holds NaN or Inf fails
// with PCCL_ERR_INVALID_ARGUMENT before anything is sent.
void ring_all_reduce(mesh::Channel &ch, void *buf, size_t count, pccl_dtype_t dtype,
                     const pccl_allreduce_opts_t &opts, size_t chunk_bytes, uint64_t seed, Backup *backup);

}  // namespace pccl::collectives
