// Hashes and randomness for the core. Pure functions on caller-owned buffers:
// no allocation beyond the returned value, no global state, thread-safe.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>

namespace pccl {

using Digest = std::array<uint8_t, 32>;

// SHA-256 (FIPS 180-4) of n bytes at data (data may be null when n == 0).
Digest sha256(const void *data, size_t n);

// HMAC-SHA256 (RFC 2104): keys longer than the 64-byte block are hashed first.
Digest hmac_sha256(const void *key, size_t key_len, const void *msg, size_t msg_len);

// Compares n bytes in time that depends only on n (for MACs and tokens).
bool constant_time_equal(const uint8_t *a, const uint8_t *b, size_t n);

// Fills out with n bytes from the kernel CSPRNG (getrandom(2)); retries on
// EINTR and short reads. Throws Error(PCCL_ERR_IO) if the kernel refuses.
void random_bytes(void *out, size_t n);

// Fast non-cryptographic 64-bit hash: exactly XXH64 (xxHash, 64-bit variant),
// so values are stable across machines, builds and input alignment.
//   Primes P1..P5 = 0x9E3779B185EBCA87, 0xC2B2AE3D27D4EB4F, 0x165667B19E3779F9,
//                   0x85EBCA77C2B2AE63, 0x27D4EB2F165667C5.
//   round(a, x) = rotl64(a + x * P2, 31) * P1.  All words little-endian.
//   n >= 32: lanes v1..v4 = seed+P1+P2, seed+P2, seed, seed-P1; each 32-byte
//     stripe feeds four words through round(); then
//     h = rotl(v1,1)+rotl(v2,7)+rotl(v3,12)+rotl(v4,18) and for each v:
//     h = (h ^ round(0, v)) * P1 + P4.
//   n < 32: h = seed + P5.
//   h += n; then each remaining 8-byte word w: h = rotl(h ^ round(0, w), 27)*P1 + P4;
//   a remaining 4-byte word u: h = rotl(h ^ (u * P1), 23) * P2 + P3;
//   each remaining byte b: h = rotl(h ^ (b * P5), 11) * P1.
//   Final avalanche: h ^= h>>33; h *= P2; h ^= h>>29; h *= P3; h ^= h>>32.
uint64_t hash64(const void *data, size_t n, uint64_t seed = 0);

}  // namespace pccl
