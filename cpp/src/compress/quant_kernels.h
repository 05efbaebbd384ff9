// The kernels behind each entry of the codec table (codec.cpp): internal to
// compress/. Callers go through codec.h / quantize.h, which validate first:
// a kernel may assume a known kind, block >= 1 when the codec is blocked,
// finite input when encoding, and buffers of encoded_size bytes.
#pragma once

#include <cstddef>
#include <cstdint>

#include "compress/quantize.h"

namespace pccl::compress {

struct CodecKernels {
    size_t (*encoded_size)(size_t count, uint32_t block);
    void (*encode)(const QuantOptions &opts, const float *in, size_t count, uint8_t *out);
    void (*decode)(const QuantOptions &opts, const uint8_t *in, size_t count, float *out);
    float (*error_bound)(const QuantOptions &opts, const float *in, size_t count);
};

// quantize.cpp
extern const CodecKernels kNoneKernels, kFp16Kernels, kBf16Kernels, kInt8Kernels, kInt4Kernels, kE3m0Kernels;

// Throws invalid argument naming the first NaN/Inf element.
void check_finite(const float *in, size_t count);

}  // namespace pccl::compress
