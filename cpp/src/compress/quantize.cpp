#include "compress/quant_kernels.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <string>

#include "common/error.h"
#include "common/half.h"
#include "compress/random.h"

namespace pccl::compress {
namespace {

constexpr float kTinySlack = 0x1.0p-148f;  // covers rounding of subnormal decode products
constexpr double kRelSlack = 0x1.0p-22;    // covers the f32 rounding of code * scale

}  // namespace

void check_finite(const float *in, size_t count) {
    for (size_t i = 0; i < count; ++i)
        if (!std::isfinite(in[i]))
            fail(PCCL_ERR_INVALID_ARGUMENT, std::string("quantize: input element ") + std::to_string(i) +
                                                " is " + (std::isnan(in[i]) ? "NaN" : "Inf") +
                                                "; only finite values can be quantized");
}

namespace {

size_t num_blocks(uint32_t block, size_t count) { return (count + block - 1) / block; }

// qmax for integer codes; e3m0 uses 1 (scale = absmax).
double qmax_of(pccl_quant_t k) {
    switch (k) {
    case PCCL_QUANT_INT8: return 127.0;
    case PCCL_QUANT_INT4: return 7.0;
    default: return 1.0;
    }
}

float block_scale(const float *x, size_t len, double qmax) {
    float amax = 0.0f;
    for (size_t i = 0; i < len; ++i)
        amax = std::max(amax, std::fabs(x[i]));
    if (amax == 0.0f)
        return 0.0f;
    float s = static_cast<float>(static_cast<double>(amax) / qmax);
    // Round the scale up so |x| / s <= qmax holds exactly: codes never clip.
    while (static_cast<double>(s) * qmax < static_cast<double>(amax))
        s = std::nextafter(s, std::numeric_limits<float>::infinity());
    // Except near FLT_MAX: the decoder's code * s (in f32) must stay finite,
    // so the scale stays below that and the top code clips by a few ulps of
    // s (far inside the half-step error bound). Found by fuzz_quantize.
    while (std::isinf(static_cast<float>(qmax) * s)) s = std::nextafter(s, 0.0f);
    return s;
}

// Integer codes of x[0, len) for scale s > 0, each in [-qmax, qmax]. `first` is
// the global index of x[0] (the stochastic coin is keyed by it).
// Normal scales take a float path written to vectorise: x * (1/s) has at most
// ~qmax * 2^-23 error in code units, inside max_abs_error_bound's slack. Tiny
// scales (1/s would overflow f32) take the double path.
void int_codes(const QuantOptions &opts, const float *x, size_t len, size_t first, float s, float qmax,
               int8_t *q) {
    if (s >= 0x1.0p-100f) {
        const float inv = 1.0f / s;
        if (!opts.stochastic) {
            for (size_t i = 0; i < len; ++i) {
                float r = std::min(qmax, std::max(-qmax, x[i] * inv));
                r = (r + 0x1.8p23f) - 0x1.8p23f;  // round half to even, |r| < 2^22
                q[i] = static_cast<int8_t>(static_cast<int>(r));
            }
        } else {
            for (size_t i = 0; i < len; ++i) {
                const float u = static_cast<float>(hash2(opts.seed, first + i) >> 40) * 0x1.0p-24f;
                const float r = x[i] * inv + u;
                const int f = static_cast<int>(r + 256.0f) - 256;  // floor for r > -256
                q[i] = static_cast<int8_t>(std::min(static_cast<int>(qmax), std::max(-static_cast<int>(qmax), f)));
            }
        }
        return;
    }
    const double inv = 1.0 / static_cast<double>(s);
    for (size_t i = 0; i < len; ++i) {
        const double r = static_cast<double>(x[i]) * inv;
        double v = opts.stochastic ? std::floor(r + uniform01(opts.seed, first + i)) : std::nearbyint(r);
        v = std::min<double>(qmax, std::max<double>(-qmax, v));
        q[i] = static_cast<int8_t>(v);
    }
}

// e3m0 magnitude index f (0 = zero, 1..7 = 2^(f-7)) of r = |x| / scale in [0, 1],
// read off the bits of the double r: exponent e = floor(log2 r) selects the
// neighbours 2^e and 2^(e+1); the mantissa says where r lies between them.
// `step` (nullable) receives the grid gap around r (in units of the scale), for the bound.
inline unsigned e3m0_code(double r, bool stochastic, double u, double *step) {
    if (r >= 1.0) {
        if (step)
            *step = 0.0;
        return 7;
    }
    if (r < 0x1.0p-6) {
        if (step)
            *step = 0x1.0p-6;
        const double frac = r * 0x1.0p6;  // position between 0 and 2^-6
        return (stochastic ? u < frac : frac > 0.5) ? 1u : 0u;
    }
    uint64_t bits;
    std::memcpy(&bits, &r, 8);
    const int e = static_cast<int>((bits >> 52) & 0x7ff) - 1023;  // -6..-1
    const uint64_t mant = bits & ((uint64_t(1) << 52) - 1);
    if (step)
        *step = std::ldexp(1.0, e);
    const unsigned flo = static_cast<unsigned>(e + 7);
    bool up;
    if (stochastic)
        up = u < static_cast<double>(mant) * 0x1.0p-52;
    else
        up = mant > (uint64_t(1) << 51);  // ties go down (toward zero)
    return up ? flo + 1 : flo;
}

inline float e3m0_value(unsigned nibble, float scale) {
    const unsigned f = nibble & 7u;
    if (f == 0)
        return 0.0f;
    const float m = std::ldexp(scale, static_cast<int>(f) - 7);
    return (nibble & 8u) ? -m : m;
}

inline void put_nibble(uint8_t *codes, size_t i, unsigned nib) {
    if (i & 1)
        codes[i >> 1] = static_cast<uint8_t>(codes[i >> 1] | (nib << 4));
    else
        codes[i >> 1] = static_cast<uint8_t>(nib & 0xf);
}

inline unsigned get_nibble(const uint8_t *codes, size_t i) { return (codes[i >> 1] >> ((i & 1) * 4)) & 0xfu; }


void quantize_blocked(const QuantOptions &opts, const float *in, size_t count, uint8_t *out) {
    const size_t nb = num_blocks(opts.block, count);
    uint8_t *codes = out + 4 * nb;
    const double qmax = qmax_of(opts.kind);
    for (size_t b = 0; b < nb; ++b) {
        const size_t begin = b * opts.block;
        const size_t end = std::min(count, begin + opts.block);
        const float s = block_scale(in + begin, end - begin, qmax);
        std::memcpy(out + 4 * b, &s, 4);
        const size_t len = end - begin;
        if (opts.kind == PCCL_QUANT_E3M0) {
            const double inv = s > 0.0f ? 1.0 / static_cast<double>(s) : 0.0;
            for (size_t i = begin; i < end; ++i) {
                unsigned nib = 0;
                if (s > 0.0f && in[i] != 0.0f) {
                    const double u = opts.stochastic ? uniform01(opts.seed, i) : 0.0;
                    const unsigned f =
                        e3m0_code(std::fabs(static_cast<double>(in[i])) * inv, opts.stochastic, u, nullptr);
                    nib = f == 0 ? 0u : (f | (in[i] < 0.0f ? 8u : 0u));
                }
                put_nibble(codes, i, nib);
            }
            continue;
        }
        int8_t q[4096];  // codes of one chunk, then stored or packed
        for (size_t c = 0; c < len; c += sizeof q) {
            const size_t m = std::min(sizeof q, len - c);
            if (s > 0.0f)
                int_codes(opts, in + begin + c, m, begin + c, s, static_cast<float>(qmax), q);
            else
                std::memset(q, 0, m);
            if (opts.kind == PCCL_QUANT_INT8)
                std::memcpy(codes + begin + c, q, m);
            else
                for (size_t i = 0; i < m; ++i)
                    put_nibble(codes, begin + c + i, static_cast<unsigned>(q[i]) & 0xfu);
        }
    }
}

void dequantize_blocked(const QuantOptions &opts, const uint8_t *in, size_t count, float *out) {
    const size_t nb = num_blocks(opts.block, count);
    const uint8_t *codes = in + 4 * nb;
    for (size_t b = 0; b < nb; ++b) {
        const size_t begin = b * opts.block;
        const size_t end = std::min(count, begin + opts.block);
        float s;
        std::memcpy(&s, in + 4 * b, 4);
        switch (opts.kind) {
        case PCCL_QUANT_INT8:
            for (size_t i = begin; i < end; ++i)
                out[i] = static_cast<float>(static_cast<int8_t>(codes[i])) * s;
            break;
        case PCCL_QUANT_INT4:
            for (size_t i = begin; i < end; ++i) {
                const int q = static_cast<int>(get_nibble(codes, i) ^ 8u) - 8;  // sign-extend 4 bits
                out[i] = static_cast<float>(q) * s;
            }
            break;
        default: {
            float table[16];  // nibble -> value for this block's scale
            for (unsigned nib = 0; nib < 16; ++nib)
                table[nib] = e3m0_value(nib, s);
            for (size_t i = begin; i < end; ++i)
                out[i] = table[get_nibble(codes, i)];
            break;
        }
        }
    }
}


// The smallest f32 >= d.
float round_up_f32(double d) {
    float r = static_cast<float>(d);
    if (static_cast<double>(r) < d) r = std::nextafter(r, std::numeric_limits<float>::infinity());
    return r;
}

// Half the distance to the neighbouring representable value around |x| (fp16).
float f16_bound(float x) {
    const float a = std::fabs(x);
    if (a >= kF16MaxFinite)  // saturates: the distance, rounded up (f32 rounding could make it 1 ulp short)
        return std::max(round_up_f32(static_cast<double>(a) - kF16MaxFinite), 16.0f);
    if (a < 0x1.0p-14f)
        return 0x1.0p-25f;
    int e;
    std::frexp(a, &e);  // a in [2^(e-1), 2^e): ulp = 2^(e-1-10)
    return std::ldexp(1.0f, e - 12);
}

float bf16_bound(float x) {
    const float a = std::fabs(x);
    const uint32_t ex = (f32_bits(a) >> 23) & 0xffu;
    const float max_bf16 = bf16_to_f32(kBf16MaxFiniteBits);
    if (a > max_bf16)
        return round_up_f32(static_cast<double>(a) - max_bf16);
    if (ex == 0)
        return 0x1.0p-134f;
    return std::ldexp(1.0f, static_cast<int>(ex) - 127 - 8);
}


size_t blocked_size_8bit(size_t count, uint32_t block) { return 4 * num_blocks(block, count) + count; }
size_t blocked_size_4bit(size_t count, uint32_t block) { return 4 * num_blocks(block, count) + (count + 1) / 2; }

void copy_f32(const QuantOptions &, const float *in, size_t count, uint8_t *out) {
    if (count) std::memcpy(out, in, 4 * count);
}
void uncopy_f32(const QuantOptions &, const uint8_t *in, size_t count, float *out) {
    if (count) std::memcpy(out, in, 4 * count);
}

// fp16 and bf16: one 16-bit code per value, through the given conversions.
template <uint16_t (*to16)(float)>
void encode_16bit(const QuantOptions &, const float *in, size_t count, uint8_t *out) {
    for (size_t i = 0; i < count; ++i) {
        const uint16_t h = to16(in[i]);
        std::memcpy(out + 2 * i, &h, 2);
    }
}
template <float (*from16)(uint16_t)>
void decode_16bit(const QuantOptions &, const uint8_t *in, size_t count, float *out) {
    for (size_t i = 0; i < count; ++i) {
        uint16_t h;
        std::memcpy(&h, in + 2 * i, 2);
        out[i] = from16(h);
    }
}
template <float (*element_bound)(float)>
float bound_16bit(const QuantOptions &, const float *in, size_t count) {
    float bound = 0.0f;
    for (size_t i = 0; i < count; ++i) bound = std::max(bound, element_bound(in[i]));
    return bound;
}

float bound_blocked(const QuantOptions &opts, const float *in, size_t count) {
    float bound = 0.0f;
    const size_t nb = num_blocks(opts.block, count);
    const double qmax = qmax_of(opts.kind);
    const double steps = opts.stochastic ? 1.0 : 0.5;  // fraction of the local grid step
    for (size_t b = 0; b < nb; ++b) {
        const size_t begin = b * opts.block;
        const size_t end = std::min(count, begin + opts.block);
        const float s = block_scale(in + begin, end - begin, qmax);
        if (s == 0.0f)
            continue;  // all-zero block: exact
        double local = 0.0;
        if (opts.kind == PCCL_QUANT_E3M0) {
            const double inv = 1.0 / static_cast<double>(s);
            for (size_t i = begin; i < end; ++i) {
                double step;
                e3m0_code(std::fabs(static_cast<double>(in[i])) * inv, false, 0.0, &step);
                local = std::max(local, steps * step * s);
            }
        } else {
            local = steps * static_cast<double>(s);  // grid step of integer codes is the scale
        }
        local += static_cast<double>(s) * qmax * kRelSlack + kTinySlack;
        bound = std::max(bound, static_cast<float>(local * (1.0 + 0x1.0p-20)));
    }
    return bound;
}

}  // namespace

// The kernels of each codec, as the table in codec.cpp registers them.
const CodecKernels kNoneKernels{[](size_t count, uint32_t) { return 4 * count; }, copy_f32, uncopy_f32,
                                [](const QuantOptions &, const float *, size_t) { return 0.0f; }};
const CodecKernels kFp16Kernels{[](size_t count, uint32_t) { return 2 * count; }, encode_16bit<f32_to_f16>,
                                decode_16bit<f16_to_f32>, bound_16bit<f16_bound>};
const CodecKernels kBf16Kernels{[](size_t count, uint32_t) { return 2 * count; }, encode_16bit<f32_to_bf16>,
                                decode_16bit<bf16_to_f32>, bound_16bit<bf16_bound>};
const CodecKernels kInt8Kernels{blocked_size_8bit, quantize_blocked, dequantize_blocked, bound_blocked};
const CodecKernels kInt4Kernels{blocked_size_4bit, quantize_blocked, dequantize_blocked, bound_blocked};
const CodecKernels kE3m0Kernels{blocked_size_4bit, quantize_blocked, dequantize_blocked, bound_blocked};

}  // namespace pccl::compress
