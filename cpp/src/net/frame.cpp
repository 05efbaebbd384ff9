#include "net/frame.h"

#include <cstring>
#include <string>

#include "common/error.h"

namespace pccl::net {
namespace {
template <typename T>
void put(uint8_t *&p, T v) {
    for (size_t i = 0; i < sizeof(T); ++i) *p++ = static_cast<uint8_t>(static_cast<uint64_t>(v) >> (8 * i));
}
template <typename T>
T get(const uint8_t *&p) {
    uint64_t v = 0;
    for (size_t i = 0; i < sizeof(T); ++i) v |= static_cast<uint64_t>(*p++) << (8 * i);
    return static_cast<T>(v);
}
}  // namespace

void encode_header(const FrameHeader &h, uint8_t out[kHeaderSize]) {
    uint8_t *p = out;
    put<uint16_t>(p, kFrameMagic);
    put<uint8_t>(p, kProtocolVersion);
    put<uint8_t>(p, static_cast<uint8_t>(h.type));
    put<uint32_t>(p, h.tag);
    put<uint64_t>(p, h.epoch);
    put<uint32_t>(p, h.seq);
    put<uint32_t>(p, h.chunk);
    put<uint32_t>(p, h.sub);
    put<uint32_t>(p, h.length);
}

FrameHeader decode_header(const uint8_t in[kHeaderSize], uint32_t max_payload) {
    const uint8_t *p = in;
    if (get<uint16_t>(p) != kFrameMagic) fail(PCCL_ERR_PROTOCOL, "bad frame magic (not a pccl peer?)");
    uint8_t version = get<uint8_t>(p);
    if (version != kProtocolVersion)
        fail(PCCL_ERR_PROTOCOL, "unsupported protocol version " + std::to_string(version) + " (we speak " +
                                    std::to_string(kProtocolVersion) + ")");
    uint8_t type = get<uint8_t>(p);
    if (type < 1 || type > 7) fail(PCCL_ERR_PROTOCOL, "unknown frame type " + std::to_string(type));
    FrameHeader h;
    h.type = static_cast<FrameType>(type);
    h.tag = get<uint32_t>(p);
    h.epoch = get<uint64_t>(p);
    h.seq = get<uint32_t>(p);
    h.chunk = get<uint32_t>(p);
    h.sub = get<uint32_t>(p);
    h.length = get<uint32_t>(p);
    if (h.length > max_payload)
        fail(PCCL_ERR_PROTOCOL, "frame of " + std::to_string(h.length) + " bytes exceeds the limit of " +
                                    std::to_string(max_payload));
    return h;
}

}  // namespace pccl::net
