// The codec table: every wire format of a quantized all-reduce, one entry
// each. Validation, names (in messages, in the descriptor's description, in
// Python's list and enum) and the encode/decode entry points all come from
// it. Adding a codec = its kernels in compress/ + one entry in kCodecs
// (codec.cpp) + its pccl_quant_t value in pccl.h.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "compress/quant_kernels.h"
#include "pccl/pccl.h"

namespace pccl::compress {

struct Codec {
    pccl_quant_t id;
    const char *name;          // "int8": the Python name and the one in messages
    bool blocked;              // per-block f32 scale: quant_block matters and must be >= 1
    bool stochastic;           // honours stochastic rounding (others ignore the flag)
    const char *summary;       // one line for docs and help
    const CodecKernels *kernels;
};

// Every codec, in id order (ids are 0..n-1: the table is indexed by them).
const std::vector<Codec> &codecs();

// The entry of a wire value, or nullptr (a peer's descriptor may carry anything).
const Codec *find_codec(uint64_t id);
// The entry of id; unknown: invalid argument naming the known codecs.
const Codec &codec(pccl_quant_t id);
// The entry called name; unknown: invalid argument naming the valid names.
const Codec &codec_by_name(std::string_view name);
// "none, fp16, bf16, int8, int4, e3m0": for messages.
std::string codec_names();

// The codec of opts after checking its options (known kind, block >= 1 when
// blocked); invalid argument otherwise. Every entry point of quantize.h
// goes through it: the one validation of a codec's options.
const Codec &checked_codec(const QuantOptions &opts);

}  // namespace pccl::compress
