// Top-k selection and the sparse (index, value) wire format of Deep Gradient
// Compression. Pure functions on buffers: no I/O, no threads, no state.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace pccl::compress {

struct TopKOptions {
    double density = 0.001;     // target k = ceil(density * n), in (0, 1]
    double sample_rate = 0.01;  // fraction of entries sampled to guess the threshold, in (0, 1]
    uint64_t seed = 0;          // sample positions are a hash of (seed, j): reproducible
};

struct SparseSet {
    uint64_t n = 0;                 // dense length
    std::vector<uint64_t> indices;  // strictly ascending, < n
    std::vector<float> values;      // same length as indices
};

// k = ceil(density * n), clamped to [1, n] (0 when n == 0).
size_t topk_target(double density, size_t n);

// Picks about k = topk_target(density, n) entries of largest |value|.
// Below an internal size (64 Ki entries) or when the sampled threshold cannot be
// refined, it selects exactly k by nth_element (ties broken by lower index).
// Otherwise it guesses a threshold from a hashed sample of max(sample_rate*n,
// 1024) entries, counts the entries at or above it, moves the guess along the
// sample (secant steps in rank) while too few or far too many are selected,
// and when more than 1.3k but at most 8k are selected runs the exact selection
// among those candidates. The number returned is always within [0.8k, 1.3k]
// (exactly k on the exact paths).
// Returns ascending indices and their signed values. NaN/Inf: invalid argument.
SparseSet topk_select(const TopKOptions &opts, const float *values, size_t n);

// Wire format (little-endian):
//   'P' 'S' version(=1) flags(bit 0: values are fp16; other bits 0)
//   varint n, varint count,
//   count varints: the first index, then the gaps to the previous index (>= 1),
//   count values: f32, or fp16 (round-to-nearest-even, saturating at 65504).
// Varints are unsigned LEB128. Indices must be strictly ascending and < n and
// values finite (invalid argument otherwise).
std::string sparse_encode(const uint64_t *indices, const float *values, size_t count, uint64_t n,
                          bool fp16_values);

// Validates everything: magic, version, flags, count <= n, every varint, strictly
// ascending in-range indices, finite values, exact length. Malformed input
// throws pccl::Error(PCCL_ERR_PROTOCOL) naming the problem; it never reads past
// the end of `data`.
SparseSet sparse_decode(std::string_view data);

// dense_out[0..n) = sum of the decoded sets, added in the order given, so every
// peer that passes the same sets in the same (rank) order gets bit-identical
// results. Every set must have dense length n. All sets are validated before
// dense_out is written: on error it is untouched.
void sparse_sum_into(const std::vector<std::string_view> &encoded_sets_in_rank_order, float *dense_out,
                     size_t n);

}  // namespace pccl::compress
