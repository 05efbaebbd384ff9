// The ring shared by every all-reduce variant (dense, quantized): geometry,
// op descriptor, and the driver that moves sub-chunks around the ring. A
// variant only says how a sub-chunk goes on the wire and comes off it (a
// RingCodec); the driver owns ordering, validation and the protocol.
//
// The buffer is cut into size() chunks; chunk c starts at rank c, travels the
// ring once being reduced at every hop (in ring order), and ends fully reduced
// at rank c-1 (its owner), which finalises it once and sends it around; every
// other member stores what it receives and forwards it unchanged. Every member
// therefore ends with bit-identical bytes. Chunks are further cut into
// sub-chunks of `chunk_bytes`, each reduced and forwarded as soon as it
// arrives, so reduction overlaps receiving and sub-chunks spread over the
// channel's streams.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "mesh/channel.h"
#include "pccl/pccl.h"

namespace pccl::collectives {

// Chunk / sub-chunk geometry shared by every member (it depends only on
// count, world size and chunk_bytes). Offsets and lengths are in elements.
struct RingLayout {
    size_t n, sub_elems;
    std::vector<size_t> start, len, nsub, sub_base;
    RingLayout(size_t count, size_t n, size_t esize, size_t chunk_bytes);
    size_t total_subs() const { return sub_base.back() + nsub.back(); }
    size_t sub_start(size_t c, size_t j) const { return start[c] + j * sub_elems; }
    size_t sub_len(size_t c, size_t j) const;
};

// What every member must agree on before it reduces anything a neighbour
// sends. Sent first on every ring; a mismatch fails the op with
// PCCL_ERR_INVALID_USAGE (and, through the channel's abort, on every member).
struct RingDescriptor {
    pccl_dtype_t dtype = PCCL_F32;
    uint64_t count = 0;
    pccl_reduce_op_t op = PCCL_SUM;
    uint64_t world = 0;
    uint32_t quant = 0;  // pccl_quant_t; 0 = dense
    uint32_t quant_block = 0;
    bool stochastic = false;
    uint32_t algorithm = 0;  // pccl_algorithm_t as the caller asked (auto included), not as chosen

    std::string encode() const;
    static RingDescriptor decode(const uint8_t *data, size_t len);  // throws PCCL_ERR_PROTOCOL
    std::string describe() const;  // "f32 x 1000 (sum, int8/128, ring)"
    bool operator==(const RingDescriptor &o) const;
};

// Bytes to send: borrowed (`data`, valid until the ring's flush), or `owned`.
struct WireBytes {
    const void *data = nullptr;
    size_t len = 0;
    std::string owned;  // used when data == nullptr
};

// How one all-reduce variant encodes sub-chunks. Called only on the ring's
// thread, in arrival order. `off`/`len` address the user buffer in elements.
class RingCodec {
public:
    virtual ~RingCodec() = default;
    // Exact wire size of a sub-chunk of `len` elements (both phases).
    virtual size_t wire_bytes(size_t len) const = 0;
    // Reduce-scatter: this member's partial reduction of [off, off+len).
    // `seed` is unique per (member, sub-chunk, phase).
    virtual WireBytes partial(size_t off, size_t len, uint64_t seed) = 0;
    // Reduce-scatter: folds a neighbour's partial (wire bytes) into [off, off+len).
    virtual void accumulate(size_t off, size_t len, const uint8_t *wire) = 0;
    // Owner, after the last accumulate: turns [off, off+len) into its final
    // value (the one every member will hold) and returns its wire bytes.
    virtual WireBytes finalize(size_t off, size_t len, uint64_t seed) = 0;
    // All-gather: stores the final value from the wire into [off, off+len).
    virtual void store(size_t off, size_t len, const uint8_t *wire) = 0;
    // All-gather forwarding: true sends the received bytes verbatim (the
    // driver keeps the frame alive until flush); false sends what
    // forward() returns for the stored [off, off+len).
    virtual bool forwards_wire() const = 0;
    // Where the all-gather bytes of [off, off+len) may be received directly
    // (zero copy), when the wire format is the stored one; nullptr otherwise.
    virtual uint8_t *store_target(size_t off, size_t len) {
        (void)off, (void)len;
        return nullptr;
    }
    virtual WireBytes forward(size_t off, size_t len) = 0;
};

// Frame addressing shared by the ring and the direct algorithm.
constexpr uint32_t kDescriptorChunk = 0xffffffffu;  // the op descriptor frame
constexpr uint32_t kGatherBit = 0x80000000u;        // set in `chunk` during all-gather

// Runs the ring over `ch` with `codec`. Blocking, on the calling thread.
// Throws pccl::Error: PCCL_ERR_INVALID_USAGE when the neighbour's descriptor
// differs, PCCL_ERR_PROTOCOL on unexpected pieces, or what the channel throws.
// `seed` varies the codec's per-sub-chunk seeds between calls.
void run_ring(mesh::Channel &ch, const RingLayout &L, const RingDescriptor &desc, RingCodec &codec, uint64_t seed);

}  // namespace pccl::collectives
