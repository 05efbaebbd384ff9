// The secure channel's handshake and record keys: Noise_XXpsk0_25519_AESGCM_SHA256
// (Noise Protocol Framework, revision 34), with X25519, AES-256-GCM, SHA-256
// and HMAC from libcrypto (common/crypto.h). Pure: no I/O, no clock, no
// global state; one object per connection, used by one thread at a time.
//
//   -> psk, e            (payload: empty, sealed under a key only PSK holders derive)
//   <- e, ee, s, es      (payload: the responder's identity proof and hello)
//   -> s, se             (payload: the initiator's identity proof and hello)
//
// Why this pattern, and why it is safe here:
// - psk0 (the run key mixed in before the first message) lets the responder
//   check that the initiator holds the run key *before it says anything*:
//   message 1's empty payload carries an AEAD tag under a key derived from
//   the PSK. A stranger without the key gets one plaintext reject and
//   learns nothing else (not even the responder's static key). The
//   initiator learns the responder holds the key from message 2 (its tags).
// - XX authenticates both static X25519 keys (es, se) and gives forward
//   secrecy (ee, and the static keys alone never decrypt a session).
// - Identity: each side's payload carries its peer id (the Ed25519 public
//   key) and an Ed25519 signature over "pccl-noise-static:" || its X25519
//   static key, so only the holder of a peer id's private key can complete a
//   handshake as that id (the libp2p Noise binding). The X25519 static
//   keys are fresh per handshake; only the Ed25519 identity key persists.
// - Transcript: every byte of the three messages, the prologue (protocol
//   name and version) and both payloads (role-specific fields: version,
//   incarnation, addresses, purpose) is hashed into h, and each AEAD uses h
//   as associated data, so no field can be changed or moved, and a message
//   of one connection is useless on any other (different ephemeral keys).
//   The roles are fixed by the pattern (the initiator's and responder's
//   messages differ), so a reflected message fails.
// - Records after the handshake use the two Split() keys, one per
//   direction, with per-direction counters as nonces: replay, reordering,
//   truncation of a record and splicing between connections fail the tag.
#pragma once

#include <cstdint>
#include <memory>
#include <string>

#include "common/crypto.h"

namespace pccl::net {

// One direction of a record stream: a key and the next nonce.
class CipherState {
public:
    explicit CipherState(const Key32 &key) : aead_(key) {}
    // Seals `len` bytes (out may equal in) and writes the tag at `tag`.
    void seal(const uint8_t *in, size_t len, uint8_t *out, uint8_t tag[kAeadTag]);
    // Authenticates `len` bytes without encrypting them (AES-GCM with the
    // bytes as associated data): for encrypt=False connections.
    void mac(const uint8_t *in, size_t len, uint8_t tag[kAeadTag]);
    // False when the tag does not verify; the nonce is consumed either way
    // (the caller closes the connection).
    bool open(const uint8_t *in, size_t len, uint8_t *out, const uint8_t tag[kAeadTag]);
    bool check_mac(const uint8_t *in, size_t len, const uint8_t tag[kAeadTag]);
    uint64_t nonce() const { return n_; }

private:
    uint64_t next();  // throws before the counter could wrap
    AeadKey aead_;
    uint64_t n_ = 0;
};

class NoiseHandshake {
public:
    enum class Role { initiator, responder };
    // `psk` is any-length run key (hashed to the 32-byte Noise PSK);
    // `prologue` binds context both sides must agree on (the protocol version).
    NoiseHandshake(Role role, const std::string &psk, const std::string &prologue);
    ~NoiseHandshake();

    // Writes the next message of the pattern with `payload`. Throws
    // Error(PCCL_ERR_PROTOCOL) when it is not our turn.
    std::string write_message(const std::string &payload);
    // Reads the next message; returns its payload. Throws
    // Error(PCCL_ERR_AUTH_FAILED) when a tag fails (wrong run key, tampering)
    // or a DH result is invalid, Error(PCCL_ERR_PROTOCOL) when the message
    // is malformed or out of turn. Never allocates more than `n` bytes.
    std::string read_message(const uint8_t *data, size_t n);

    // Index of the next message (1..3), 4 when done; whether it is ours to write.
    int next_message() const { return next_; }
    bool our_turn() const;
    bool done() const { return next_ == 4; }
    // Our X25519 static public key, and the peer's once it has been read
    // (message 2 for the initiator, 3 for the responder).
    const Key32 &local_static() const { return s_pub_; }
    const Key32 &remote_static() const { return rs_; }
    // After done(): the handshake hash (h) and the two record directions.
    const Digest &handshake_hash() const { return h_; }
    std::unique_ptr<CipherState> take_sender();
    std::unique_ptr<CipherState> take_receiver();

    // The bytes each side signs with its identity key over its static key.
    static std::string static_key_statement(const Key32 &x25519_public);

private:
    void mix_hash(const uint8_t *data, size_t n);
    void mix_key(const uint8_t *ikm, size_t n);
    void mix_key_and_hash(const uint8_t *ikm, size_t n);
    void encrypt_and_hash(const std::string &plain, std::string &out);
    std::string decrypt_and_hash(const uint8_t *data, size_t n);
    void dh_mix(const Key32 &priv, const Key32 &pub);
    void split();

    Role role_;
    int next_ = 1;
    Digest h_{}, ck_{};
    std::unique_ptr<AeadKey> k_;  // null until the first MixKey
    uint64_t n_ = 0;
    Key32 psk_{};
    Key32 s_priv_{}, s_pub_{}, e_priv_{}, e_pub_{};
    Key32 rs_{}, re_{};
    std::unique_ptr<CipherState> send_, recv_;
};

}  // namespace pccl::net
