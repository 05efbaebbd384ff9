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

inline uint16_t f32_to_f16(float f) {
    const uint32_t x = f32_bits(f);
    const uint32_t sign = (x >> 16) & 0x8000u;
    const uint32_t ax = x & 0x7fffffffu;
    if (ax >= 0x477ff000u)  // >= 65520: round-to-nearest-even would give Inf
        return static_cast<uint16_t>(sign | kF16MaxFiniteBits);
    if (ax < 0x38800000u) {  // below 2^-14: fp16 subnormal (unit 2^-24) or zero
        if (ax < 0x33000000u)  // below 2^-25: rounds to zero
            return static_cast<uint16_t>(sign);
        const uint32_t e = ax >> 23;  // biased exponent, 102..112
        const uint32_t m = (ax & 0x7fffffu) | 0x800000u;
        const uint32_t shift = 126u - e;  // 14..24
        uint32_t q = m >> shift;
        const uint32_t rem = m & ((1u << shift) - 1u);
        const uint32_t half = 1u << (shift - 1u);
        if (rem > half || (rem == half && (q & 1u)))
            ++q;  // may carry into the smallest normal (0x400): still the right bits
        return static_cast<uint16_t>(sign | q);
    }
    const uint32_t e = (ax >> 23) - 127u + 15u;  // 1..30
    const uint32_t m = ax & 0x7fffffu;
    uint32_t h = (e << 10) | (m >> 13);
    const uint32_t rem = m & 0x1fffu;
    if (rem > 0x1000u || (rem == 0x1000u && (h & 1u)))
        ++h;  // a carry into the exponent is the correct rounding
    return static_cast<uint16_t>(sign | h);
}

inline float f16_to_f32(uint16_t h) {
    const uint32_t sign = static_cast<uint32_t>(h & 0x8000u) << 16;
    const uint32_t e = (h >> 10) & 0x1fu;
    const uint32_t m = h & 0x3ffu;
    if (e == 0) {
        // Subnormal or zero: m * 2^-24 is exact in f32.
        const float v = static_cast<float>(m) * 5.9604644775390625e-08f;
        return sign ? -v : v;
    }
    if (e == 31)
        return f32_from_bits(sign | 0x7f800000u | (m << 13));
    return f32_from_bits(sign | ((e - 15u + 127u) << 23) | (m << 13));
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
