#include "compress/quantize.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <string>

#include "common/error.h"
#include "compress/half.h"
#include "compress/random.h"

namespace pccl::compress {
namespace {

constexpr float kTinySlack = 0x1.0p-148f;  // covers rounding of subnormal decode products
constexpr double kRelSlack = 0x1.0p-22;    // covers the f32 rounding of code * scale

void check_options(const QuantOptions &opts) {
    switch (opts.kind) {
    case QuantKind::none:
    case QuantKind::fp16:
    case QuantKind::bf16:
        return;
    case QuantKind::int8:
    case QuantKind::int4:
    case QuantKind::e3m0:
        if (opts.block == 0)
            fail(PCCL_ERR_INVALID_ARGUMENT, "quantize: block size must be >= 1");
        return;
    }
    fail(PCCL_ERR_INVALID_ARGUMENT,
         "quantize: unknown QuantKind " + std::to_string(static_cast<uint32_t>(opts.kind)));
}

void check_finite(const float *in, size_t count) {
    for (size_t i = 0; i < count; ++i)
        if (!std::isfinite(in[i]))
            fail(PCCL_ERR_INVALID_ARGUMENT, std::string("quantize: input element ") + std::to_string(i) +
                                                " is " + (std::isnan(in[i]) ? "NaN" : "Inf") +
                                                "; only finite values can be quantized");
}

size_t num_blocks(const QuantOptions &opts, size_t count) { return (count + opts.block - 1) / opts.block; }

// qmax for integer codes; e3m0 uses 1 (scale = absmax).
double qmax_of(QuantKind k) {
    switch (k) {
    case QuantKind::int8: return 127.0;
    case QuantKind::int4: return 7.0;
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
    return s;
}

// Integer code of v for scale s (s > 0). Result in [-qmax, qmax].
inline int int_code(float v, double inv, double qmax, bool stochastic, uint64_t seed, size_t i) {
    const double r = static_cast<double>(v) * inv;
    double q = stochastic ? std::floor(r + uniform01(seed, i)) : std::nearbyint(r);
    q = std::min(qmax, std::max(-qmax, q));
    return static_cast<int>(q);
}

// e3m0 magnitude index f (0 = zero, 1..7 = 2^(f-7)) of r = |x| / scale in [0, 1].
// `step` receives the grid gap around r (in units of the scale), for the bound.
inline unsigned e3m0_code(double r, bool stochastic, double u, double *step) {
    if (r >= 1.0) {
        *step = 0.0;
        return 7;
    }
    double lo, hi;
    unsigned flo;
    if (r < 0x1.0p-6) {
        lo = 0.0;
        hi = 0x1.0p-6;
        flo = 0;
    } else {
        int e;
        std::frexp(r, &e);  // r = m * 2^e, m in [0.5, 1): lo = 2^(e-1)
        lo = std::ldexp(1.0, e - 1);
        hi = 2.0 * lo;
        flo = static_cast<unsigned>(e - 1 + 7);
    }
    *step = hi - lo;
    bool up;
    if (stochastic)
        up = u < (r - lo) / (hi - lo);
    else
        up = (r - lo) > (hi - r);  // ties go down (toward zero)
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
    const size_t nb = num_blocks(opts, count);
    uint8_t *codes = out + 4 * nb;
    const double qmax = qmax_of(opts.kind);
    for (size_t b = 0; b < nb; ++b) {
        const size_t begin = b * opts.block;
        const size_t end = std::min(count, begin + opts.block);
        const float s = block_scale(in + begin, end - begin, qmax);
        std::memcpy(out + 4 * b, &s, 4);
        const double inv = s > 0.0f ? 1.0 / static_cast<double>(s) : 0.0;
        switch (opts.kind) {
        case QuantKind::int8:
            for (size_t i = begin; i < end; ++i) {
                const int q = s > 0.0f ? int_code(in[i], inv, qmax, opts.stochastic, opts.seed, i) : 0;
                codes[i] = static_cast<uint8_t>(static_cast<int8_t>(q));
            }
            break;
        case QuantKind::int4:
            for (size_t i = begin; i < end; ++i) {
                const int q = s > 0.0f ? int_code(in[i], inv, qmax, opts.stochastic, opts.seed, i) : 0;
                put_nibble(codes, i, static_cast<unsigned>(q) & 0xfu);
            }
            break;
        default:  // e3m0
            for (size_t i = begin; i < end; ++i) {
                unsigned nib = 0;
                if (s > 0.0f && in[i] != 0.0f) {
                    double step;
                    const double u = opts.stochastic ? uniform01(opts.seed, i) : 0.0;
                    const unsigned f =
                        e3m0_code(std::fabs(static_cast<double>(in[i])) * inv, opts.stochastic, u, &step);
                    nib = f == 0 ? 0u : (f | (in[i] < 0.0f ? 8u : 0u));
                }
                put_nibble(codes, i, nib);
            }
            break;
        }
    }
}

void dequantize_blocked(const QuantOptions &opts, const uint8_t *in, size_t count, float *out) {
    const size_t nb = num_blocks(opts, count);
    const uint8_t *codes = in + 4 * nb;
    for (size_t b = 0; b < nb; ++b) {
        const size_t begin = b * opts.block;
        const size_t end = std::min(count, begin + opts.block);
        float s;
        std::memcpy(&s, in + 4 * b, 4);
        switch (opts.kind) {
        case QuantKind::int8:
            for (size_t i = begin; i < end; ++i)
                out[i] = static_cast<float>(static_cast<int8_t>(codes[i])) * s;
            break;
        case QuantKind::int4:
            for (size_t i = begin; i < end; ++i) {
                const int q = static_cast<int>(get_nibble(codes, i) ^ 8u) - 8;  // sign-extend 4 bits
                out[i] = static_cast<float>(q) * s;
            }
            break;
        default:
            for (size_t i = begin; i < end; ++i)
                out[i] = e3m0_value(get_nibble(codes, i), s);
            break;
        }
    }
}

// Half the distance to the neighbouring representable value around |x| (fp16).
float f16_bound(float x) {
    const float a = std::fabs(x);
    if (a >= kF16MaxFinite)
        return std::max(a - kF16MaxFinite, 16.0f);
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
        return a - max_bf16;
    if (ex == 0)
        return 0x1.0p-134f;
    return std::ldexp(1.0f, static_cast<int>(ex) - 127 - 8);
}

}  // namespace

QuantKind parse_quant_kind(std::string_view name) {
    if (name == "none") return QuantKind::none;
    if (name == "fp16") return QuantKind::fp16;
    if (name == "bf16") return QuantKind::bf16;
    if (name == "int8") return QuantKind::int8;
    if (name == "int4") return QuantKind::int4;
    if (name == "e3m0") return QuantKind::e3m0;
    fail(PCCL_ERR_INVALID_ARGUMENT, "unknown quantization kind '" + std::string(name) +
                                        "' (expected none, fp16, bf16, int8, int4 or e3m0)");
}

const char *quant_kind_name(QuantKind kind) {
    switch (kind) {
    case QuantKind::none: return "none";
    case QuantKind::fp16: return "fp16";
    case QuantKind::bf16: return "bf16";
    case QuantKind::int8: return "int8";
    case QuantKind::int4: return "int4";
    case QuantKind::e3m0: return "e3m0";
    }
    return "?";
}

size_t encoded_size(const QuantOptions &opts, size_t count) {
    check_options(opts);
    switch (opts.kind) {
    case QuantKind::none: return 4 * count;
    case QuantKind::fp16:
    case QuantKind::bf16: return 2 * count;
    case QuantKind::int8: return 4 * num_blocks(opts, count) + count;
    case QuantKind::int4:
    case QuantKind::e3m0: return 4 * num_blocks(opts, count) + (count + 1) / 2;
    }
    return 0;
}

void quantize(const QuantOptions &opts, const float *in, size_t count, uint8_t *out) {
    check_options(opts);
    check_finite(in, count);
    switch (opts.kind) {
    case QuantKind::none:
        if (count)
            std::memcpy(out, in, 4 * count);
        return;
    case QuantKind::fp16:
        for (size_t i = 0; i < count; ++i) {
            const uint16_t h = f32_to_f16(in[i]);
            std::memcpy(out + 2 * i, &h, 2);
        }
        return;
    case QuantKind::bf16:
        for (size_t i = 0; i < count; ++i) {
            const uint16_t h = f32_to_bf16(in[i]);
            std::memcpy(out + 2 * i, &h, 2);
        }
        return;
    default:
        quantize_blocked(opts, in, count, out);
    }
}

void dequantize(const QuantOptions &opts, const uint8_t *in, size_t count, float *out) {
    check_options(opts);
    switch (opts.kind) {
    case QuantKind::none:
        if (count)
            std::memcpy(out, in, 4 * count);
        return;
    case QuantKind::fp16:
        for (size_t i = 0; i < count; ++i) {
            uint16_t h;
            std::memcpy(&h, in + 2 * i, 2);
            out[i] = f16_to_f32(h);
        }
        return;
    case QuantKind::bf16:
        for (size_t i = 0; i < count; ++i) {
            uint16_t h;
            std::memcpy(&h, in + 2 * i, 2);
            out[i] = bf16_to_f32(h);
        }
        return;
    default:
        dequantize_blocked(opts, in, count, out);
    }
}

float max_abs_error_bound(const QuantOptions &opts, const float *in, size_t count) {
    check_options(opts);
    check_finite(in, count);
    float bound = 0.0f;
    switch (opts.kind) {
    case QuantKind::none:
        return 0.0f;
    case QuantKind::fp16:
        for (size_t i = 0; i < count; ++i)
            bound = std::max(bound, f16_bound(in[i]));
        return bound;
    case QuantKind::bf16:
        for (size_t i = 0; i < count; ++i)
            bound = std::max(bound, bf16_bound(in[i]));
        return bound;
    default:
        break;
    }
    const size_t nb = num_blocks(opts, count);
    const double qmax = qmax_of(opts.kind);
    const double steps = opts.stochastic ? 1.0 : 0.5;  // fraction of the local grid step
    for (size_t b = 0; b < nb; ++b) {
        const size_t begin = b * opts.block;
        const size_t end = std::min(count, begin + opts.block);
        const float s = block_scale(in + begin, end - begin, qmax);
        if (s == 0.0f)
            continue;  // all-zero block: exact
        double local = 0.0;
        if (opts.kind == QuantKind::e3m0) {
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

}  // namespace pccl::compress
