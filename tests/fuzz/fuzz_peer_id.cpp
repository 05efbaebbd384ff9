// Peer ids and base58btc (net/peer_id.h): ids arrive in every hello, control
// message and /p2p/ address. base58 is a bijection between byte strings and
// strings of its alphabet, so decode and encode must invert each other in both
// directions; is_valid_peer_id never throws and agrees with the multihash check.
// Ed25519 ids: an id names exactly one public key and back; signatures made
// with the key verify under its id and nothing else verifies (a hostile id or
// signature, a changed message).
#include <cstring>
#include <string>
#include <string_view>
#include <vector>

#include "fuzz_check.h"
#include "net/peer_id.h"

using namespace pccl;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size > 512)  // base58 is quadratic; ids are < 128 characters
        return 0;
    const std::string_view text(reinterpret_cast<const char *>(data), size);

    // As text.
    std::string raw;
    const bool decoded = fuzz::accepts(PCCL_ERR_INVALID_ARGUMENT, [&] { raw = base58_decode(text); });
    if (decoded)
        FUZZ_CHECK(base58_encode(reinterpret_cast<const uint8_t *>(raw.data()), raw.size()) == text);
    bool valid = false;
    FUZZ_CHECK(fuzz::accepts(PCCL_ERR_INVALID_ARGUMENT, [&] { valid = is_valid_peer_id(text); }));
    FUZZ_CHECK(valid == (decoded && !text.empty() && text.size() <= 128 &&
                         is_peer_id_multihash(reinterpret_cast<const uint8_t *>(raw.data()), raw.size())));

    // As bytes.
    const std::string enc = base58_encode(data, size);
    std::string back;
    FUZZ_CHECK(fuzz::accepts(PCCL_ERR_INVALID_ARGUMENT, [&] { back = base58_decode(enc); }));
    FUZZ_CHECK(back == std::string(reinterpret_cast<const char *>(data), size));
    if (is_peer_id_multihash(data, size))
        FUZZ_CHECK(enc.size() > 128 || is_valid_peer_id(enc));

    // Ed25519 ids, from the text.
    Key32 pub{};
    if (peer_public_key(text, pub))
        FUZZ_CHECK(peer_id_from_public_key(pub) == text);
    if (size >= 64)  // hostile id, message and signature: never verifies
        FUZZ_CHECK(!verify_peer(text.substr(0, size - 64), data, size - 64, data + size - 64, 64));
    // ... and from a key taken from the bytes.
    if (size >= 32) {
        Identity self{};
        std::memcpy(self.secret.data(), data, 32);
        self.public_key = ed25519_public_key(self.secret);
        self.peer_id = peer_id_from_public_key(self.public_key);
        FUZZ_CHECK(self.peer_id == peer_id_from_secret(self.secret));
        FUZZ_CHECK(self.peer_id.rfind("12D3KooW", 0) == 0 && is_valid_peer_id(self.peer_id));
        Key32 back{};
        FUZZ_CHECK(peer_public_key(self.peer_id, back) && back == self.public_key);
        const Signature sig = sign_as(self, data + 32, size - 32);
        FUZZ_CHECK(verify_peer(self.peer_id, data + 32, size - 32, sig.data(), sig.size()));
        FUZZ_CHECK(!verify_peer(self.peer_id, data + 32, size - 32, sig.data(), sig.size() - 1));
        if (size > 32) {
            std::vector<uint8_t> changed(data + 32, data + size);
            changed[changed.size() / 2] ^= 1;
            FUZZ_CHECK(!verify_peer(self.peer_id, changed.data(), changed.size(), sig.data(), sig.size()));
        }
    }
    return 0;
}
