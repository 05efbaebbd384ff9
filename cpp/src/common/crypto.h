// Cryptographic primitives for the core, all from OpenSSL's libcrypto (no
// hand-written primitive), plus a fast non-cryptographic hash. Pure functions
// on caller-owned buffers, thread-safe; an AeadKey is used by one thread at a
// time (its owner serializes).
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>

typedef struct evp_cipher_ctx_st EVP_CIPHER_CTX;

namespace pccl {

using Digest = std::array<uint8_t, 32>;
using Key32 = std::array<uint8_t, 32>;
using Signature = std::array<uint8_t, 64>;
constexpr size_t kAeadTag = 16;

// SHA-256 of n bytes at data (data may be null when n == 0).
Digest sha256(const void *data, size_t n);

// HMAC-SHA256 (RFC 2104).
Digest hmac_sha256(const void *key, size_t key_len, const void *msg, size_t msg_len);

// Compares n bytes in time that depends only on n (for MACs and tokens).
bool constant_time_equal(const uint8_t *a, const uint8_t *b, size_t n);

// Fills out with n bytes from the kernel CSPRNG (getrandom(2)); retries on
// EINTR and short reads. Throws Error(PCCL_ERR_IO) if the kernel refuses.
void random_bytes(void *out, size_t n);

// Ed25519 (RFC 8032) from a 32-byte private seed. verify() is false for a
// bad signature, a wrong length or a public key that is not a curve point.
Key32 ed25519_public_key(const Key32 &seed);
Signature ed25519_sign(const Key32 &seed, const void *msg, size_t n);
bool ed25519_verify(const Key32 &pub, const void *msg, size_t n, const uint8_t *sig, size_t sig_len);

// X25519 (RFC 7748). x25519() is false when the peer's key is invalid or a
// low-order point (an all-zero shared secret), which a caller must refuse.
Key32 x25519_public_key(const Key32 &priv);
bool x25519(const Key32 &priv, const Key32 &peer_pub, Key32 &shared);

// AES-256-GCM with 64-bit message counters as nonces (Noise's AESGCM nonce
// layout). The caller guarantees a counter is never used twice with one key.
// `out` may equal `in` (in place); lengths are unbounded. open() is false
// when the tag does not verify (out then holds garbage the caller must drop).
class AeadKey {
public:
    explicit AeadKey(const Key32 &key);
    ~AeadKey();
    AeadKey(const AeadKey &) = delete;
    AeadKey &operator=(const AeadKey &) = delete;
    void seal(uint64_t n, const uint8_t *ad, size_t ad_len, const uint8_t *in, size_t len, uint8_t *out,
              uint8_t tag[kAeadTag]);
    bool open(uint64_t n, const uint8_t *ad, size_t ad_len, const uint8_t *in, size_t len, uint8_t *out,
              const uint8_t tag[kAeadTag]);

private:
    Key32 key_;
    EVP_CIPHER_CTX *seal_ = nullptr;  // created on first use, key set once
    EVP_CIPHER_CTX *open_ = nullptr;
};

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
