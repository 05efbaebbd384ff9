// Low-bit quantizers for the quantized ring all-reduce: pure functions on
// buffers, no I/O, no threads, no state. The ring calls quantize() per hop and
// dequantize() on receipt; encoded_size() tells it the exact frame size.
//
// Wire layout (little-endian), for `count` values:
//   none : count x f32 (a copy)
//   fp16 : count x IEEE binary16, round-to-nearest-even, saturating at +-65504
//   bf16 : count x bfloat16,      round-to-nearest-even, saturating at the max finite
//   int8 : nblocks x f32 scale, then count x int8 code in [-127, 127]; x ~= code * scale
//   int4 : nblocks x f32 scale, then ceil(count/2) bytes of 4-bit two's-complement codes
//          in [-7, 7] (element i in byte i/2, low nibble when i is even); x ~= code * scale
//   e3m0 : nblocks x f32 scale, then ceil(count/2) bytes of 4-bit codes (same packing):
//          bit 3 = sign, bits 0-2 = f; f == 0 is zero, f in 1..7 is scale * 2^(f-7), so
//          magnitudes {0, s/64, s/32, ..., s/2, s}. The scale is the block's absmax.
//          Rounding goes to the nearest representable value in the linear domain
//          (not in the log domain): error <= half the gap around the value.
// nblocks = ceil(count / block). A block's scale is derived from max |x| over it
// (starting from 0, so all-negative blocks work); an all-zero block has scale 0.
// int scales are rounded up so that |x| / scale <= qmax: codes never clip.
//
// Stochastic rounding rounds up with probability equal to the fractional
// position between the two neighbours (unbiased); the coin for element i is a
// counter-based hash of (seed, i), so the output is reproducible.
#pragma once

#include <cstddef>
#include <cstdint>

#include "pccl/pccl.h"

namespace pccl::compress {

// The kind is the public pccl_quant_t itself; its name, validation and
// kernels come from the codec table (codec.h). Every function below
// validates opts there first (invalid argument for an unknown kind or a
// zero block of a blocked codec).
struct QuantOptions {
    pccl_quant_t kind = PCCL_QUANT_NONE;
    uint32_t block = PCCL_DEFAULT_QUANT_BLOCK;  // values per scale (int8, int4, e3m0); must be >= 1
    bool stochastic = false;  // int8, int4, e3m0 only; fp16/bf16/none ignore it
    uint64_t seed = 0;
};

// Defined in codec.cpp: each validates opts and dispatches to the codec's
// kernels through the table.

// Exact byte size of quantize()'s output for count values.
size_t encoded_size(const QuantOptions &opts, size_t count);

// Writes encoded_size(opts, count) bytes to out. A NaN or Inf in the input
// throws invalid argument (naming the element) before anything is written.
void quantize(const QuantOptions &opts, const float *in, size_t count, uint8_t *out);

// Reads encoded_size(opts, count) bytes from in and writes count floats.
void dequantize(const QuantOptions &opts, const uint8_t *in, size_t count, float *out);

// An upper bound on max_i |dequantize(quantize(in))_i - in_i|, computed from the
// per-block scales (or per element for fp16/bf16/e3m0) the quantizer would use.
// Round-to-nearest: half the local grid step; stochastic: one full step. Includes
// the last-ulp slack of the f32 decode multiply. Inputs must be finite.
float max_abs_error_bound(const QuantOptions &opts, const float *in, size_t count);

}  // namespace pccl::compress
