// Frame header decoder (net/frame.h): the first bytes any peer, authenticated
// or not, makes us parse. Input: one byte choosing the limit (handshake or
// full), then the 32 header bytes.
#include <cstring>
#include <vector>

#include "fuzz_check.h"
#include "net/frame.h"

using namespace pccl;
using namespace pccl::net;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size < 1 + kHeaderSize)
        return 0;
    const uint32_t limit = (data[0] & 1) ? kMaxPayload : kMaxHandshakePayload;
    const std::vector<uint8_t> in(data + 1, data + 1 + kHeaderSize);  // exactly 32 bytes: ASan sees any overread
    FrameHeader h;
    if (!fuzz::accepts(PCCL_ERR_PROTOCOL, [&] { h = decode_header(in.data(), limit); }))
        return 0;
    FUZZ_CHECK(h.length <= limit);
    FUZZ_CHECK(static_cast<uint8_t>(h.type) >= 1 && static_cast<uint8_t>(h.type) <= 7);
    // The header has no slack bytes, so an accepted header re-encodes to the
    // very bytes received (magic and version included).
    uint8_t out[kHeaderSize];
    encode_header(h, out);
    FUZZ_CHECK(std::memcmp(out, in.data(), kHeaderSize) == 0);
    return 0;
}
