// FedZip (Malekijoo et al. 2021) for one tensor: keep the top-z entries by
// magnitude, cluster the kept values with 1-D k-means, and encode positions and
// cluster symbols compactly. Pure functions on buffers.
//
// Decoding restores exactly the quantized tensor: the float centroid of its
// cluster at every kept position, 0 elsewhere.
//
// Wire format (little-endian):
//   'F' 'Z' version(=1) mode
//   varint n, varint kept, u8 clusters (0 iff kept == 0), clusters x f32 centroid (ascending)
//   mode 0 (Huffman): kept varint positions (first index, then gaps >= 1; omitted
//                     when kept == n),
//                     clusters x u8 code length, then the canonical Huffman code of
//                     each kept entry's cluster, MSB first, zero-padded to a byte.
//   mode 1 (difference of address): per cluster, varint count, then its positions
//                     (first index, then gaps >= 1).
// The encoder writes both and keeps the smaller; the decoder validates either.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace pccl::compress {

struct FedZipOptions {
    double density = 0.01;  // top-z fraction kept, in (0, 1]
    uint32_t clusters = 3;  // k of k-means, in [1, 32]
    uint32_t lloyd_iterations = 30;
};

// The quantized tensor FedZip transmits: what fedzip_decode(fedzip_encode(x)) returns.
std::vector<float> fedzip_quantize(const FedZipOptions &opts, const float *values, size_t n);

std::string fedzip_encode(const FedZipOptions &opts, const float *values, size_t n);

// Malformed input throws pccl::Error(PCCL_ERR_PROTOCOL); never reads out of bounds.
// The dense length n the blob announces must be at most `max_n` (callers that
// know the tensor pass its size), checked before the output is allocated: the
// blob's own counts bound only the kept entries, not n (11 bytes can claim
// n = 2^28).
std::vector<float> fedzip_decode(std::string_view data, uint64_t max_n);
// The max_n to use when the caller does not know the size: what a blob of
// data.size() bytes can honestly describe at density >= 1/kFedZipMinDensityInv
// (each kept entry costs at least one byte).
constexpr uint64_t kFedZipMinDensityInv = 4096;
uint64_t fedzip_default_max_n(std::string_view data);
// fedzip_decode(data, fedzip_default_max_n(data)).
std::vector<float> fedzip_decode(std::string_view data);

// Which layout an encoded blob uses (0 Huffman, 1 difference of address).
int fedzip_mode(std::string_view data);

// 1-D k-means with Lloyd iterations over `values`, initialised at the
// (j + 0.5) / k quantiles; deterministic. Returns ascending, distinct, non-empty
// centroids (fewer than k when there are fewer distinct values).
std::vector<float> kmeans_1d(const float *values, size_t n, uint32_t k, uint32_t iterations);

// Huffman code lengths for symbol frequencies (0 for unused symbols; a single
// used symbol gets length 1). Deterministic tie-breaking.
std::vector<uint8_t> huffman_code_lengths(const std::vector<uint64_t> &freqs);

// Canonical codes for the lengths (symbols ordered by (length, symbol));
// code i is the low lengths[i] bits of result[i].
std::vector<uint64_t> canonical_codes(const std::vector<uint8_t> &lengths);

}  // namespace pccl::compress
