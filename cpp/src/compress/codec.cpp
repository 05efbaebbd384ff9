#include "compress/codec.h"

#include "common/error.h"

namespace pccl::compress {

namespace {

// The registrations. Index == id (checked once, below).
const std::vector<Codec> kCodecs = {
    {PCCL_QUANT_NONE, "none", false, false, "dense f32 (a copy)", &kNoneKernels},
    {PCCL_QUANT_FP16, "fp16", false, false, "IEEE half, round to nearest even, saturating", &kFp16Kernels},
    {PCCL_QUANT_BF16, "bf16", false, false, "bfloat16, round to nearest even", &kBf16Kernels},
    {PCCL_QUANT_INT8, "int8", true, true, "per-block f32 scale (absmax/127) + int8 codes", &kInt8Kernels},
    {PCCL_QUANT_INT4, "int4", true, true, "per-block f32 scale (absmax/7) + 4-bit codes", &kInt4Kernels},
    {PCCL_QUANT_E3M0, "e3m0", true, true, "per-block f32 scale (absmax) + 4-bit sign/exponent", &kE3m0Kernels},
};

bool table_is_indexed_by_id() {
    for (size_t i = 0; i < kCodecs.size(); ++i)
        if (static_cast<size_t>(kCodecs[i].id) != i) return false;
    return true;
}

}  // namespace

const std::vector<Codec> &codecs() {
    static const bool indexed = table_is_indexed_by_id();
    PCCL_ASSERT(indexed);
    return kCodecs;
}

const Codec *find_codec(uint64_t id) { return id < codecs().size() ? &codecs()[id] : nullptr; }

std::string codec_names() {
    std::string out;
    for (const Codec &c : codecs()) out += (out.empty() ? "" : ", ") + std::string(c.name);
    return out;
}

const Codec &codec(pccl_quant_t id) {
    const auto raw = static_cast<int64_t>(id);
    if (const Codec *c = raw >= 0 ? find_codec(static_cast<uint64_t>(raw)) : nullptr) return *c;
    fail(PCCL_ERR_INVALID_ARGUMENT,
         "unknown quantization code " + std::to_string(raw) + " (known: " + codec_names() + ", codes 0.." +
             std::to_string(codecs().size() - 1) + ")");
}

const Codec &codec_by_name(std::string_view name) {
    for (const Codec &c : codecs())
        if (name == c.name) return c;
    fail(PCCL_ERR_INVALID_ARGUMENT,
         "unknown quantization kind '" + std::string(name) + "' (expected one of " + codec_names() + ")");
}

const Codec &checked_codec(const QuantOptions &opts) {
    const Codec &c = codec(opts.kind);
    if (c.blocked && opts.block == 0)
        fail(PCCL_ERR_INVALID_ARGUMENT, std::string("quantize: ") + c.name + " needs a block size >= 1");
    return c;
}

size_t encoded_size(const QuantOptions &opts, size_t count) {
    return checked_codec(opts).kernels->encoded_size(count, opts.block);
}

void quantize(const QuantOptions &opts, const float *in, size_t count, uint8_t *out) {
    const Codec &c = checked_codec(opts);
    check_finite(in, count);
    c.kernels->encode(opts, in, count, out);
}

void dequantize(const QuantOptions &opts, const uint8_t *in, size_t count, float *out) {
    checked_codec(opts).kernels->decode(opts, in, count, out);
}

float max_abs_error_bound(const QuantOptions &opts, const float *in, size_t count) {
    const Codec &c = checked_codec(opts);
    check_finite(in, count);
    return c.kernels->error_bound(opts, in, count);
}

}  // namespace pccl::compress
