#include "collectives/reduce.h"

#include <algorithm>
#include <cstdint>
#include <string>
#include <type_traits>

#include "common/error.h"
#include "common/half.h"

namespace pccl::collectives {

size_t dtype_size(pccl_dtype_t dtype) {
    switch (dtype) {
        case PCCL_F64: case PCCL_I64: case PCCL_U64: return 8;
        case PCCL_F32: case PCCL_I32: case PCCL_U32: return 4;
        case PCCL_F16: case PCCL_BF16: case PCCL_I16: case PCCL_U16: return 2;
        case PCCL_I8: case PCCL_U8: return 1;
    }
    fail(PCCL_ERR_INVALID_ARGUMENT, "unknown dtype code " + std::to_string(static_cast<int>(dtype)));
}

const char *dtype_name(pccl_dtype_t dtype) {
    static const char *names[] = {"f32", "f64", "f16", "bf16", "i8", "i16", "i32", "i64", "u8", "u16", "u32", "u64"};
    int d = static_cast<int>(dtype);
    return d >= 0 && d < 12 ? names[d] : "unknown";
}

const char *op_name(pccl_reduce_op_t op) {
    static const char *names[] = {"sum", "avg", "min", "max", "prod"};
    int o = static_cast<int>(op);
    return o >= 0 && o < 5 ? names[o] : "unknown";
}

bool valid_op(pccl_reduce_op_t op) { return static_cast<int>(op) >= 0 && static_cast<int>(op) <= 4; }

namespace {

// Integer arithmetic goes through the unsigned type so overflow wraps instead
// of being undefined behaviour.
template <typename T>
T wrap_add(T a, T b) {
    using U = std::make_unsigned_t<T>;
    return static_cast<T>(static_cast<U>(static_cast<U>(a) + static_cast<U>(b)));
}
template <typename T>
T wrap_mul(T a, T b) {
    using U = std::conditional_t<(sizeof(T) < sizeof(unsigned)), unsigned, std::make_unsigned_t<T>>;
    return static_cast<T>(static_cast<U>(static_cast<U>(a) * static_cast<U>(b)));
}

template <typename T>
void reduce_native(pccl_reduce_op_t op, T *acc, const T *in, size_t n) {
    switch (op) {
        case PCCL_SUM:
        case PCCL_AVG:
            if constexpr (std::is_floating_point_v<T>) {
                for (size_t i = 0; i < n; ++i) acc[i] += in[i];
            } else {
                for (size_t i = 0; i < n; ++i) acc[i] = wrap_add(acc[i], in[i]);
            }
            return;
        case PCCL_PROD:
            if constexpr (std::is_floating_point_v<T>) {
                for (size_t i = 0; i < n; ++i) acc[i] *= in[i];
            } else {
                for (size_t i = 0; i < n; ++i) acc[i] = wrap_mul(acc[i], in[i]);
            }
            return;
        case PCCL_MIN:
            for (size_t i = 0; i < n; ++i) acc[i] = std::min(acc[i], in[i]);
            return;
        case PCCL_MAX:
            for (size_t i = 0; i < n; ++i) acc[i] = std::max(acc[i], in[i]);
            return;
    }
}

template <float (*ToF)(uint16_t), uint16_t (*FromF)(float)>
void reduce_16(pccl_reduce_op_t op, uint16_t *acc, const uint16_t *in, size_t n) {
    for (size_t i = 0; i < n; ++i) {
        float a = ToF(acc[i]), b = ToF(in[i]), r;
        switch (op) {
            case PCCL_SUM: case PCCL_AVG: r = a + b; break;
            case PCCL_PROD: r = a * b; break;
            case PCCL_MIN: r = std::min(a, b); break;
            default: r = std::max(a, b); break;
        }
        acc[i] = FromF(r);
    }
}

template <typename T>
void divide_native(T *acc, size_t count, size_t n) {
    for (size_t i = 0; i < count; ++i) {
        if constexpr (std::is_floating_point_v<T>)
            acc[i] = acc[i] / static_cast<T>(n);
        else if constexpr (std::is_signed_v<T>) {
            // Round to nearest, ties away from zero (in 128 bits: no overflow).
            const __int128 s = acc[i], h = static_cast<__int128>(n / 2), d = static_cast<__int128>(n);
            acc[i] = static_cast<T>(s >= 0 ? (s + h) / d : -((-s + h) / d));
        } else {
            const unsigned __int128 s = acc[i];
            acc[i] = static_cast<T>((s + n / 2) / n);
        }
    }
}

}  // namespace

void reduce_into(pccl_dtype_t dtype, pccl_reduce_op_t op, void *acc, const void *in, size_t n) {
    switch (dtype) {
        case PCCL_F32: return reduce_native(op, static_cast<float *>(acc), static_cast<const float *>(in), n);
        case PCCL_F64: return reduce_native(op, static_cast<double *>(acc), static_cast<const double *>(in), n);
        case PCCL_F16:
            return reduce_16<f16_to_f32, f32_to_f16_ieee>(op, static_cast<uint16_t *>(acc),
                                                           static_cast<const uint16_t *>(in), n);
        case PCCL_BF16:
            return reduce_16<bf16_to_f32, f32_to_bf16_ieee>(op, static_cast<uint16_t *>(acc),
                                                           static_cast<const uint16_t *>(in), n);
        case PCCL_I8: return reduce_native(op, static_cast<int8_t *>(acc), static_cast<const int8_t *>(in), n);
        case PCCL_I16: return reduce_native(op, static_cast<int16_t *>(acc), static_cast<const int16_t *>(in), n);
        case PCCL_I32: return reduce_native(op, static_cast<int32_t *>(acc), static_cast<const int32_t *>(in), n);
        case PCCL_I64: return reduce_native(op, static_cast<int64_t *>(acc), static_cast<const int64_t *>(in), n);
        case PCCL_U8: return reduce_native(op, static_cast<uint8_t *>(acc), static_cast<const uint8_t *>(in), n);
        case PCCL_U16: return reduce_native(op, static_cast<uint16_t *>(acc), static_cast<const uint16_t *>(in), n);
        case PCCL_U32: return reduce_native(op, static_cast<uint32_t *>(acc), static_cast<const uint32_t *>(in), n);
        case PCCL_U64: return reduce_native(op, static_cast<uint64_t *>(acc), static_cast<const uint64_t *>(in), n);
    }
    fail(PCCL_ERR_INVALID_ARGUMENT, "unknown dtype");
}

void divide_by(pccl_dtype_t dtype, void *acc, size_t count, size_t n) {
    switch (dtype) {
        case PCCL_F32: return divide_native(static_cast<float *>(acc), count, n);
        case PCCL_F64: return divide_native(static_cast<double *>(acc), count, n);
        case PCCL_F16: {
            auto *p = static_cast<uint16_t *>(acc);
            for (size_t i = 0; i < count; ++i) p[i] = f32_to_f16_ieee(f16_to_f32(p[i]) / static_cast<float>(n));
            return;
        }
        case PCCL_BF16: {
            auto *p = static_cast<uint16_t *>(acc);
            for (size_t i = 0; i < count; ++i) p[i] = f32_to_bf16_ieee(bf16_to_f32(p[i]) / static_cast<float>(n));
            return;
        }
        case PCCL_I8: return divide_native(static_cast<int8_t *>(acc), count, n);
        case PCCL_I16: return divide_native(static_cast<int16_t *>(acc), count, n);
        case PCCL_I32: return divide_native(static_cast<int32_t *>(acc), count, n);
        case PCCL_I64: return divide_native(static_cast<int64_t *>(acc), count, n);
        case PCCL_U8: return divide_native(static_cast<uint8_t *>(acc), count, n);
        case PCCL_U16: return divide_native(static_cast<uint16_t *>(acc), count, n);
        case PCCL_U32: return divide_native(static_cast<uint32_t *>(acc), count, n);
        case PCCL_U64: return divide_native(static_cast<uint64_t *>(acc), count, n);
    }
    fail(PCCL_ERR_INVALID_ARGUMENT, "unknown dtype");
}

}  // namespace pccl::collectives
