// Hand-written IEEE half (fp16) and bfloat16 conversions with round-to-nearest-even.
// No dependence on compiler _Float16 / __bf16 support, so every build (and every
// peer) produces the same bits.
//
// Contract: inputs must be finite (callers validate). Values beyond the largest
// finite target value saturate to it (sign kept) instead of becoming Inf: an Inf
// on the wire would poison a whole all-reduce.
#pragma once

#include <cstdint>
#include <cstring>

namespace pccl::compress {

inline uint32_t f32_bits(float f) {
    uint32_t x;
    std::memcpy(&x, &f, sizeof x);
    return x;
}

inline float f32_from_bits(uint32_t x) {
    float f;
    std::memcpy(&f, &x, sizeof f);
    return f;
}

constexpr float kF16MaxFinite = 65504.0f;
constexpr uint16_t kF16MaxFiniteBits = 0x7bff;
constexpr uint16_t kBf16MaxFiniteBits = 0x7f7f;

// Both candidate results are computed and one is selected, so the loop has no
// data-dependent branches and vectorises.
inline uint16_t f32_to_f16(float f) {
    const uint32_t x = f32_bits(f);
    const uint32_t sign = (x >> 16) & 0x8000u;
    const uint32_t ax = x & 0x7fffffffu;
    // Below 2^-14 (fp16 subnormal or zero): adding 0.5 makes the FPU round |f| to
    // a multiple of 2^-24 (the ulp of 0.5) with round-to-nearest-even; the low
    // mantissa bits of the sum are then the fp16 subnormal code.
    const uint32_t sub = f32_bits(f32_from_bits(ax) + 0.5f) - 0x3f000000u;
    // Normal: rebias the exponent (127 -> 15) and round the 13 dropped mantissa
    // bits to nearest even; a carry into the exponent is the correct rounding.
    const uint32_t nrm = (ax + 0xc8000fffu + ((ax >> 13) & 1u)) >> 13;
    uint32_t h = ax < 0x38800000u ? sub : nrm;
    h = ax >= 0x477ff000u ? kF16MaxFiniteBits : h;  // >= 65520 would round to Inf: saturate
    return static_cast<uint16_t>(sign | h);
}

inline float f16_to_f32(uint16_t h) {
    const uint32_t sign = static_cast<uint32_t>(h & 0x8000u) << 16;
    const uint32_t a = h & 0x7fffu;
    const uint32_t e = a >> 10;
    // Subnormal or zero: m * 2^-24 = (0.5 + m * 2^-24) - 0.5, both steps exact.
    const uint32_t sub = f32_bits(f32_from_bits(0x3f000000u + a) - 0.5f);
    uint32_t v = (a << 13) + ((127u - 15u) << 23);
    v = e == 31 ? v + ((128u - 16u) << 23) : v;  // Inf / NaN keep an all-ones exponent
    v = e == 0 ? sub : v;
    return f32_from_bits(sign | v);
}

inline uint16_t f32_to_bf16(float f) {
    const uint32_t x = f32_bits(f);
    const uint32_t ax = x & 0x7fffffffu;
    if (ax >= 0x7f7f8000u)  // would round to Inf
        return static_cast<uint16_t>(((x >> 16) & 0x8000u) | kBf16MaxFiniteBits);
    const uint32_t rounded = x + 0x7fffu + ((x >> 16) & 1u);
    return static_cast<uint16_t>(rounded >> 16);
}

inline float bf16_to_f32(uint16_t b) { return f32_from_bits(static_cast<uint32_t>(b) << 16); }

}  // namespace pccl::compress
