// Wire frames: a fixed 32-byte little-endian header followed by `length`
// payload bytes. Every frame of every connection has this shape, so a reader
// can validate a header before it allocates anything for the payload.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>

#include "common/buffer_pool.h"

namespace pccl::net {

constexpr uint16_t kFrameMagic = 0x4350;            // bytes "PC"
constexpr uint8_t kProtocolVersion = 1;
constexpr size_t kHeaderSize = 32;
constexpr size_t kSealedHeaderSize = kHeaderSize + 16;  // a header record: ciphertext + AEAD tag
constexpr uint32_t kMaxPayload = 64u << 20;         // hard cap on any frame
constexpr uint32_t kMaxHandshakePayload = 4096;     // cap before a peer is authenticated

enum class FrameType : uint8_t {
    hello = 1,      // a Noise handshake message (sub = its number, 1..3; net/noise.h)
    auth = 2,       // the responder's first record: it accepted message 3 (empty)
    reject = 3,     // handshake refused, with a reason (msgpack); the sender closes
    control = 4,    // membership / op control message (msgpack)
    data = 5,       // collective payload addressed by (epoch, tag, seq, chunk, sub)
    heartbeat = 6,  // liveness; always empty (sub = kRttProbe / kRttEcho / kKeepAlive: see below)
    relay = 7,      // NAT traversal (reserve, circuits, autonat, DCUtR; msgpack), handled by the transport
};

// A heartbeat with sub = kRttProbe carries the prober's clock (microseconds)
// in `epoch`; the receiver echoes it at once with sub = kRttEcho.
constexpr uint32_t kRttProbe = 1;
constexpr uint32_t kRttEcho = 2;
// A heartbeat with sub = kKeepAlive keeps an idle TCP stream's congestion
// window (TransportOptions::keepalive_s); the receiver discards it.
constexpr uint32_t kKeepAlive = 3;

struct FrameHeader {
    FrameType type = FrameType::control;
    uint32_t tag = 0;     // collective tag (data frames)
    uint64_t epoch = 0;   // view epoch the frame belongs to
    uint32_t seq = 0;     // op sequence number within (epoch, tag)
    uint32_t chunk = 0;   // collective-defined coordinates of the payload
    uint32_t sub = 0;
    uint32_t length = 0;  // payload bytes
};

void encode_header(const FrameHeader &h, uint8_t out[kHeaderSize]);

// Throws Error(PCCL_ERR_PROTOCOL) on a bad magic, version, type or a length
// above `max_payload`.
FrameHeader decode_header(const uint8_t in[kHeaderSize], uint32_t max_payload);

// A received frame; owns its payload.
struct Frame {
    FrameHeader header;
    BufferPool::Ptr payload;  // empty when in_place
    bool in_place = false;    // the payload was written straight to a registered target
    const uint8_t *data() const { return payload.get(); }
    size_t size() const { return header.length; }
};

}  // namespace pccl::net
