// Counter-based pseudo-random numbers: the value for (seed, index) depends on
// nothing else, so stochastic rounding and sampling are reproducible on every
// peer and independent of how a buffer is cut into calls.
#pragma once

#include <cstdint>

namespace pccl::compress {

// SplitMix64 finaliser: a bijective 64-bit mixer with good avalanche.
inline uint64_t mix64(uint64_t z) {
    z += 0x9e3779b97f4a7c15ull;
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

inline uint64_t hash2(uint64_t seed, uint64_t index) { return mix64(seed ^ mix64(index)); }

// Uniform in [0, 1) with 53 random bits.
inline double uniform01(uint64_t seed, uint64_t index) {
    return static_cast<double>(hash2(seed, index) >> 11) * 0x1.0p-53;
}

}  // namespace pccl::compress
