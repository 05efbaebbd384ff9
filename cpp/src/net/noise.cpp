#include "net/noise.h"

#include <cstring>

#include "common/error.h"

namespace pccl::net {
namespace {

constexpr char kProtocolName[] = "Noise_XXpsk0_25519_AESGCM_SHA256";  // exactly 32 bytes: h = name
static_assert(sizeof(kProtocolName) - 1 == 32, "protocol name must be HASHLEN bytes");
constexpr uint64_t kMaxNonce = ~uint64_t(0) - 1;  // 2^64-1 is reserved by Noise

// Noise's HKDF (section 4.3) over HMAC-SHA256: up to three 32-byte outputs.
void hkdf(const Digest &ck, const uint8_t *ikm, size_t n, Digest *o1, Digest *o2, Digest *o3) {
    const Digest temp = hmac_sha256(ck.data(), ck.size(), ikm, n);
    const uint8_t one = 1;
    *o1 = hmac_sha256(temp.data(), temp.size(), &one, 1);
    uint8_t buf[33];
    std::memcpy(buf, o1->data(), 32);
    buf[32] = 2;
    *o2 = hmac_sha256(temp.data(), temp.size(), buf, sizeof(buf));
    if (o3) {
        std::memcpy(buf, o2->data(), 32);
        buf[32] = 3;
        *o3 = hmac_sha256(temp.data(), temp.size(), buf, sizeof(buf));
    }
}

Key32 random_key() {
    Key32 k{};
    random_bytes(k.data(), k.size());
    return k;
}

}  // namespace

// ---------------------------------------------------------------- CipherState

uint64_t CipherState::next() {
    if (n_ >= kMaxNonce) fail(PCCL_ERR_PROTOCOL, "record counter exhausted: reconnect");
    return n_++;
}

void CipherState::seal(const uint8_t *in, size_t len, uint8_t *out, uint8_t tag[kAeadTag]) {
    aead_.seal(next(), nullptr, 0, in, len, out, tag);
}

void CipherState::mac(const uint8_t *in, size_t len, uint8_t tag[kAeadTag]) {
    aead_.seal(next(), in, len, nullptr, 0, nullptr, tag);
}

bool CipherState::open(const uint8_t *in, size_t len, uint8_t *out, const uint8_t tag[kAeadTag]) {
    return aead_.open(next(), nullptr, 0, in, len, out, tag);
}

bool CipherState::check_mac(const uint8_t *in, size_t len, const uint8_t tag[kAeadTag]) {
    return aead_.open(next(), in, len, nullptr, 0, nullptr, tag);
}

// ------------------------------------------------------------- NoiseHandshake

NoiseHandshake::NoiseHandshake(Role role, const std::string &psk, const std::string &prologue) : role_(role) {
    std::memcpy(h_.data(), kProtocolName, 32);
    ck_ = h_;
    mix_hash(reinterpret_cast<const uint8_t *>(prologue.data()), prologue.size());
    // Any run key becomes a 32-byte PSK; the label keeps it apart from other
    // uses of the same secret.
    const std::string labelled = std::string("pccl-run-key-v1") + '\0' + psk;
    psk_ = sha256(labelled.data(), labelled.size());
    s_priv_ = random_key();
    s_pub_ = x25519_public_key(s_priv_);
}

NoiseHandshake::~NoiseHandshake() {
    for (Key32 *k : {&psk_, &s_priv_, &e_priv_}) std::memset(k->data(), 0, k->size());
}

std::string NoiseHandshake::static_key_statement(const Key32 &x25519_public) {
    return std::string("pccl-noise-static:") + std::string(x25519_public.begin(), x25519_public.end());
}

bool NoiseHandshake::our_turn() const {
    if (done()) return false;
    const bool odd = next_ % 2 == 1;  // messages 1 and 3 are the initiator's
    return odd == (role_ == Role::initiator);
}

void NoiseHandshake::mix_hash(const uint8_t *data, size_t n) {
    std::string buf(h_.begin(), h_.end());
    buf.append(reinterpret_cast<const char *>(data), n);
    h_ = sha256(buf.data(), buf.size());
}

void NoiseHandshake::mix_key(const uint8_t *ikm, size_t n) {
    Digest k{};
    hkdf(ck_, ikm, n, &ck_, &k, nullptr);
    k_ = std::make_unique<AeadKey>(k);
    n_ = 0;
}

void NoiseHandshake::mix_key_and_hash(const uint8_t *ikm, size_t n) {
    Digest th{}, k{};
    hkdf(ck_, ikm, n, &ck_, &th, &k);
    mix_hash(th.data(), th.size());
    k_ = std::make_unique<AeadKey>(k);
    n_ = 0;
}

void NoiseHandshake::encrypt_and_hash(const std::string &plain, std::string &out) {
    PCCL_ASSERT(k_);  // psk0: a key exists from the first token on
    const size_t at = out.size();
    out.resize(at + plain.size() + kAeadTag);
    auto *dst = reinterpret_cast<uint8_t *>(&out[at]);
    k_->seal(n_++, h_.data(), h_.size(), reinterpret_cast<const uint8_t *>(plain.data()), plain.size(), dst,
             dst + plain.size());
    mix_hash(dst, plain.size() + kAeadTag);
}

std::string NoiseHandshake::decrypt_and_hash(const uint8_t *data, size_t n) {
    PCCL_ASSERT(k_);
    if (n < kAeadTag) fail(PCCL_ERR_PROTOCOL, "handshake message too short");
    std::string plain(n - kAeadTag, '\0');
    if (!k_->open(n_++, h_.data(), h_.size(), data, n - kAeadTag, reinterpret_cast<uint8_t *>(plain.data()),
                  data + n - kAeadTag))
        fail(PCCL_ERR_AUTH_FAILED, "handshake message failed authentication (wrong run key, or tampered with)");
    mix_hash(data, n);
    return plain;
}

void NoiseHandshake::dh_mix(const Key32 &priv, const Key32 &pub) {
    Key32 shared{};
    if (!x25519(priv, pub, shared)) fail(PCCL_ERR_AUTH_FAILED, "peer sent an invalid X25519 key");
    mix_key(shared.data(), shared.size());
    std::memset(shared.data(), 0, shared.size());
}

void NoiseHandshake::split() {
    Digest k1{}, k2{};
    hkdf(ck_, nullptr, 0, &k1, &k2, nullptr);
    auto c1 = std::make_unique<CipherState>(k1);  // initiator -> responder
    auto c2 = std::make_unique<CipherState>(k2);
    if (role_ == Role::initiator) {
        send_ = std::move(c1);
        recv_ = std::move(c2);
    } else {
        send_ = std::move(c2);
        recv_ = std::move(c1);
    }
    k_.reset();
    std::memset(ck_.data(), 0, ck_.size());
}

std::unique_ptr<CipherState> NoiseHandshake::take_sender() { return std::move(send_); }
std::unique_ptr<CipherState> NoiseHandshake::take_receiver() { return std::move(recv_); }

std::string NoiseHandshake::write_message(const std::string &payload) {
    if (!our_turn()) fail(PCCL_ERR_PROTOCOL, "handshake message out of turn");
    std::string out;
    auto put_e = [&] {
        e_priv_ = random_key();
        e_pub_ = x25519_public_key(e_priv_);
        out.append(e_pub_.begin(), e_pub_.end());
        mix_hash(e_pub_.data(), e_pub_.size());
        mix_key(e_pub_.data(), e_pub_.size());  // PSK modes mix e into the key too
    };
    if (next_ == 1) {  // psk, e
        mix_key_and_hash(psk_.data(), psk_.size());
        put_e();
    } else if (next_ == 2) {  // e, ee, s, es
        put_e();
        dh_mix(e_priv_, re_);
        encrypt_and_hash(std::string(s_pub_.begin(), s_pub_.end()), out);
        dh_mix(s_priv_, re_);
    } else {  // s, se
        encrypt_and_hash(std::string(s_pub_.begin(), s_pub_.end()), out);
        dh_mix(s_priv_, re_);
    }
    encrypt_and_hash(payload, out);
    if (++next_ == 4) split();
    return out;
}

std::string NoiseHandshake::read_message(const uint8_t *data, size_t n) {
    if (done() || our_turn()) fail(PCCL_ERR_PROTOCOL, "handshake message out of turn");
    size_t off = 0;
    auto take_key = [&](Key32 &k) {
        if (n - off < 32) fail(PCCL_ERR_PROTOCOL, "handshake message too short");
        std::memcpy(k.data(), data + off, 32);
        off += 32;
    };
    auto read_e = [&] {
        take_key(re_);
        mix_hash(re_.data(), re_.size());
        mix_key(re_.data(), re_.size());
    };
    auto read_s = [&] {
        if (n - off < 32 + kAeadTag) fail(PCCL_ERR_PROTOCOL, "handshake message too short");
        const std::string s = decrypt_and_hash(data + off, 32 + kAeadTag);
        std::memcpy(rs_.data(), s.data(), 32);
        off += 32 + kAeadTag;
    };
    if (next_ == 1) {  // psk, e
        mix_key_and_hash(psk_.data(), psk_.size());
        read_e();
    } else if (next_ == 2) {  // e, ee, s, es
        read_e();
        dh_mix(e_priv_, re_);
        read_s();
        dh_mix(e_priv_, rs_);
    } else {  // s, se
        read_s();
        dh_mix(e_priv_, rs_);
    }
    std::string payload = decrypt_and_hash(data + off, n - off);
    if (++next_ == 4) split();
    return payload;
}

}  // namespace pccl::net
