// IEEE binary16 and bfloat16 <-> binary32 conversions, round to nearest even,
// written out so every build (and every peer) produces the same bits with no
// dependence on compiler _Float16 / __bf16 support.
//
// Two encoders per format, for two contracts:
// - f32_to_f16 / f32_to_bf16 (codecs): inputs must be finite (callers
//   validate); values beyond the largest finite target saturate to it (sign
//   kept) instead of becoming Inf, which would poison a whole all-reduce.
// - f32_to_f16_ieee / f32_to_bf16_ieee (reductions of user data): plain IEEE,
//   overflow gives Inf and NaN stays NaN.
// The decoders are exact for every code (Inf and NaN included).
#pragma once

#include <cstdint>
#include <cstring>

namespace pccl {

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

inline uint16_t f32_to_f16_ieee(float f) {
    uint32_t x;
    std::memcpy(&x, &f, 4);
    const uint32_t sign = (x >> 16) & 0x8000u;
    const uint32_t exp = (x >> 23) & 0xffu;
    uint32_t mant = x & 0x7fffffu;
    if (exp == 0xff) return static_cast<uint16_t>(sign | 0x7c00u | (mant ? 0x200u | (mant >> 13) : 0));
    const int e = static_cast<int>(exp) - 127 + 15;
    if (e >= 31) return static_cast<uint16_t>(sign | 0x7c00u);
    if (e <= 0) {  // a half subnormal (or zero)
        if (e < -10) return static_cast<uint16_t>(sign);
        mant |= 0x800000u;
        const uint32_t shift = static_cast<uint32_t>(14 - e);
        uint32_t h = mant >> shift;
        const uint32_t rem = mant & ((1u << shift) - 1);
        const uint32_t halfway = 1u << (shift - 1);
        if (rem > halfway || (rem == halfway && (h & 1))) ++h;
        return static_cast<uint16_t>(sign | h);
    }
    uint32_t h = sign | (static_cast<uint32_t>(e) << 10) | (mant >> 13);
    const uint32_t rem = mant & 0x1fffu;
    if (rem > 0x1000u || (rem == 0x1000u && (h & 1))) ++h;  // a carry may round up to inf: correct
    return static_cast<uint16_t>(h);
}

inline uint16_t f32_to_bf16_ieee(float f) {
    uint32_t x;
    std::memcpy(&x, &f, 4);
    if ((x & 0x7fffffffu) > 0x7f800000u) return static_cast<uint16_t>((x >> 16) | 0x40u);  // quiet NaN
    x += 0x7fffu + ((x >> 16) & 1u);
    return static_cast<uint16_t>(x >> 16);
}

}  // namespace pccl
