// Peer ids and base58btc (net/peer_id.h): ids arrive in every hello, control
// message and /p2p/ address. base58 is a bijection between byte strings and
// strings of its alphabet, so decode and encode must invert each other in both
// directions; is_valid_peer_id never throws and agrees with the multihash check.
#include <string>
#include <string_view>

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
    return 0;
}
