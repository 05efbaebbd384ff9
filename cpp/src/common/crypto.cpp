#include "common/crypto.h"

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/rand.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <memory>
#include <string>

#include <sys/random.h>

#include "common/error.h"

// Every primitive here except XXH64 (not a cryptographic hash) is OpenSSL's
// libcrypto; this file only adapts its EVP interface to fixed-size arrays.
namespace pccl {
namespace {

[[noreturn]] void crypto_fail(const char *what) {
    fail(PCCL_ERR_INTERNAL, std::string("libcrypto: ") + what + " failed");
}

struct PkeyFree {
    void operator()(EVP_PKEY *k) const { EVP_PKEY_free(k); }
};
using Pkey = std::unique_ptr<EVP_PKEY, PkeyFree>;
struct MdCtxFree {
    void operator()(EVP_MD_CTX *c) const { EVP_MD_CTX_free(c); }
};
struct PkeyCtxFree {
    void operator()(EVP_PKEY_CTX *c) const { EVP_PKEY_CTX_free(c); }
};

Pkey private_key(int type, const Key32 &raw) {
    Pkey k(EVP_PKEY_new_raw_private_key(type, nullptr, raw.data(), raw.size()));
    if (!k) crypto_fail("EVP_PKEY_new_raw_private_key");
    return k;
}

Key32 raw_public(const Pkey &k) {
    Key32 out{};
    size_t len = out.size();
    if (EVP_PKEY_get_raw_public_key(k.get(), out.data(), &len) != 1 || len != out.size())
        crypto_fail("EVP_PKEY_get_raw_public_key");
    return out;
}

// The 12-byte AES-GCM nonce of message n (Noise's AESGCM: 4 zero bytes, then
// n big-endian).
void gcm_iv(uint64_t n, uint8_t iv[12]) {
    std::memset(iv, 0, 4);
    for (int i = 0; i < 8; ++i) iv[4 + i] = uint8_t(n >> (56 - 8 * i));
}

// ---- XXH64 ----------------------------------------------------------------

constexpr uint64_t P1 = 0x9E3779B185EBCA87ULL;
constexpr uint64_t P2 = 0xC2B2AE3D27D4EB4FULL;
constexpr uint64_t P3 = 0x165667B19E3779F9ULL;
constexpr uint64_t P4 = 0x85EBCA77C2B2AE63ULL;
constexpr uint64_t P5 = 0x27D4EB2F165667C5ULL;

inline uint64_t rotl64(uint64_t x, int r) { return (x << r) | (x >> (64 - r)); }

// Little-endian loads assembled byte by byte: any alignment, any host byte order.
inline uint64_t load64(const uint8_t *p) {
    uint64_t v = 0;
    for (int i = 7; i >= 0; --i) v = (v << 8) | p[i];
    return v;
}
inline uint32_t load32(const uint8_t *p) {
    return uint32_t(p[0]) | uint32_t(p[1]) << 8 | uint32_t(p[2]) << 16 | uint32_t(p[3]) << 24;
}

inline uint64_t xx_round(uint64_t acc, uint64_t lane) {
    return rotl64(acc + lane * P2, 31) * P1;
}

}  // namespace

Digest sha256(const void *data, size_t n) {
    Digest d{};
    unsigned int len = 0;
    if (EVP_Digest(n ? data : "", n, d.data(), &len, EVP_sha256(), nullptr) != 1) crypto_fail("EVP_Digest");
    return d;
}

Digest hmac_sha256(const void *key, size_t key_len, const void *msg, size_t msg_len) {
    Digest d{};
    unsigned int len = 0;
    static const uint8_t empty = 0;
    if (!HMAC(EVP_sha256(), key_len ? key : &empty, int(key_len),
              msg_len ? static_cast<const uint8_t *>(msg) : &empty, msg_len, d.data(), &len))
        crypto_fail("HMAC");
    return d;
}

bool constant_time_equal(const uint8_t *a, const uint8_t *b, size_t n) { return CRYPTO_memcmp(a, b, n) == 0; }

void random_bytes(void *out, size_t n) {
    auto *p = static_cast<uint8_t *>(out);
    while (n > 0) {
        ssize_t got = getrandom(p, n, 0);
        if (got < 0) {
            if (errno == EINTR) continue;
            fail(PCCL_ERR_IO, std::string("getrandom failed: ") + std::strerror(errno));
        }
        p += got;
        n -= size_t(got);
    }
}

Key32 ed25519_public_key(const Key32 &seed) { return raw_public(private_key(EVP_PKEY_ED25519, seed)); }

Signature ed25519_sign(const Key32 &seed, const void *msg, size_t n) {
    Pkey k = private_key(EVP_PKEY_ED25519, seed);
    std::unique_ptr<EVP_MD_CTX, MdCtxFree> ctx(EVP_MD_CTX_new());
    Signature sig{};
    size_t len = sig.size();
    if (!ctx || EVP_DigestSignInit(ctx.get(), nullptr, nullptr, nullptr, k.get()) != 1 ||
        EVP_DigestSign(ctx.get(), sig.data(), &len, static_cast<const uint8_t *>(n ? msg : ""), n) != 1 ||
        len != sig.size())
        crypto_fail("Ed25519 sign");
    return sig;
}

bool ed25519_verify(const Key32 &pub, const void *msg, size_t n, const uint8_t *sig, size_t sig_len) {
    if (sig_len != 64) return false;
    Pkey k(EVP_PKEY_new_raw_public_key(EVP_PKEY_ED25519, nullptr, pub.data(), pub.size()));
    if (!k) return false;  // not a valid curve point
    std::unique_ptr<EVP_MD_CTX, MdCtxFree> ctx(EVP_MD_CTX_new());
    if (!ctx || EVP_DigestVerifyInit(ctx.get(), nullptr, nullptr, nullptr, k.get()) != 1) return false;
    return EVP_DigestVerify(ctx.get(), sig, sig_len, static_cast<const uint8_t *>(n ? msg : ""), n) == 1;
}

Key32 x25519_public_key(const Key32 &priv) { return raw_public(private_key(EVP_PKEY_X25519, priv)); }

bool x25519(const Key32 &priv, const Key32 &peer_pub, Key32 &shared) {
    Pkey mine = private_key(EVP_PKEY_X25519, priv);
    Pkey theirs(EVP_PKEY_new_raw_public_key(EVP_PKEY_X25519, nullptr, peer_pub.data(), peer_pub.size()));
    if (!theirs) return false;
    std::unique_ptr<EVP_PKEY_CTX, PkeyCtxFree> ctx(EVP_PKEY_CTX_new(mine.get(), nullptr));
    size_t len = shared.size();
    // libcrypto refuses (derive fails) when the result is all zero, i.e. a
    // low-order point from a hostile peer.
    if (!ctx || EVP_PKEY_derive_init(ctx.get()) != 1 || EVP_PKEY_derive_set_peer(ctx.get(), theirs.get()) != 1 ||
        EVP_PKEY_derive(ctx.get(), shared.data(), &len) != 1 || len != shared.size())
        return false;
    static const Key32 zero{};
    return !constant_time_equal(shared.data(), zero.data(), zero.size());
}

// ------------------------------------------------------------------ AeadKey

AeadKey::AeadKey(const Key32 &key) : key_(key) {}

AeadKey::~AeadKey() {
    EVP_CIPHER_CTX_free(seal_);
    EVP_CIPHER_CTX_free(open_);
    OPENSSL_cleanse(key_.data(), key_.size());
}

void AeadKey::seal(uint64_t n, const uint8_t *ad, size_t ad_len, const uint8_t *in, size_t len, uint8_t *out,
                   uint8_t tag[kAeadTag]) {
    if (!seal_) {
        seal_ = EVP_CIPHER_CTX_new();
        if (!seal_ || EVP_EncryptInit_ex(seal_, EVP_aes_256_gcm(), nullptr, key_.data(), nullptr) != 1)
            crypto_fail("AES-256-GCM init");
    }
    uint8_t iv[12];
    gcm_iv(n, iv);
    int outl = 0;
    if (EVP_EncryptInit_ex(seal_, nullptr, nullptr, nullptr, iv) != 1 ||
        (ad_len && EVP_EncryptUpdate(seal_, nullptr, &outl, ad, int(ad_len)) != 1))
        crypto_fail("AES-256-GCM seal");
    // EVP lengths are int: feed large buffers in slices.
    for (size_t done = 0; done < len;) {
        const int step = int(std::min<size_t>(len - done, size_t(1) << 30));
        if (EVP_EncryptUpdate(seal_, out + done, &outl, in + done, step) != 1) crypto_fail("AES-256-GCM seal");
        done += size_t(step);
    }
    if (EVP_EncryptFinal_ex(seal_, out + len, &outl) != 1 ||
        EVP_CIPHER_CTX_ctrl(seal_, EVP_CTRL_GCM_GET_TAG, kAeadTag, tag) != 1)
        crypto_fail("AES-256-GCM seal");
}

bool AeadKey::open(uint64_t n, const uint8_t *ad, size_t ad_len, const uint8_t *in, size_t len, uint8_t *out,
                   const uint8_t tag[kAeadTag]) {
    if (!open_) {
        open_ = EVP_CIPHER_CTX_new();
        if (!open_ || EVP_DecryptInit_ex(open_, EVP_aes_256_gcm(), nullptr, key_.data(), nullptr) != 1)
            crypto_fail("AES-256-GCM init");
    }
    uint8_t iv[12];
    gcm_iv(n, iv);
    int outl = 0;
    if (EVP_DecryptInit_ex(open_, nullptr, nullptr, nullptr, iv) != 1 ||
        (ad_len && EVP_DecryptUpdate(open_, nullptr, &outl, ad, int(ad_len)) != 1))
        return false;
    for (size_t done = 0; done < len;) {
        const int step = int(std::min<size_t>(len - done, size_t(1) << 30));
        if (EVP_DecryptUpdate(open_, out + done, &outl, in + done, step) != 1) return false;
        done += size_t(step);
    }
    uint8_t t[kAeadTag];
    std::memcpy(t, tag, kAeadTag);
    return EVP_CIPHER_CTX_ctrl(open_, EVP_CTRL_GCM_SET_TAG, kAeadTag, t) == 1 &&
           EVP_DecryptFinal_ex(open_, out + len, &outl) == 1;
}

uint64_t hash64(const void *data, size_t n, uint64_t seed) {
    const auto *p = static_cast<const uint8_t *>(data);
    const uint8_t *end = p + n;
    uint64_t h;
    if (n >= 32) {
        uint64_t v1 = seed + P1 + P2, v2 = seed + P2, v3 = seed, v4 = seed - P1;
        for (; end - p >= 32; p += 32) {
            v1 = xx_round(v1, load64(p));
            v2 = xx_round(v2, load64(p + 8));
            v3 = xx_round(v3, load64(p + 16));
            v4 = xx_round(v4, load64(p + 24));
        }
        h = rotl64(v1, 1) + rotl64(v2, 7) + rotl64(v3, 12) + rotl64(v4, 18);
        for (uint64_t v : {v1, v2, v3, v4}) h = (h ^ xx_round(0, v)) * P1 + P4;
    } else {
        h = seed + P5;
    }
    h += uint64_t(n);
    for (; end - p >= 8; p += 8) h = rotl64(h ^ xx_round(0, load64(p)), 27) * P1 + P4;
    if (end - p >= 4) {
        h = rotl64(h ^ (uint64_t(load32(p)) * P1), 23) * P2 + P3;
        p += 4;
    }
    for (; p < end; ++p) h = rotl64(h ^ (uint64_t(*p) * P5), 11) * P1;
    h ^= h >> 33;
    h *= P2;
    h ^= h >> 29;
    h *= P3;
    h ^= h >> 32;
    return h;
}

}  // namespace pccl
