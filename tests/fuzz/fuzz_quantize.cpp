// Quantizers (compress/quantize.h). The quantized all-reduce dequantizes
// whatever a neighbour sends, so the decoder must be safe on any bytes of the
// announced size; the encoder's promises are checked on arbitrary floats too.
//
// Input: options (kind, block, stochastic, seed) and a direction, then the
// payload: encoded bytes to decode, or f32 values to quantize and decode.
#include <cmath>
#include <cstring>
#include <vector>

#include <fuzzer/FuzzedDataProvider.h>

#include "common/half.h"
#include "compress/codec.h"
#include "compress/quantize.h"
#include "fuzz_check.h"

using namespace pccl;
using namespace pccl::compress;

namespace {

// The largest count whose encoding fits in `bytes` (encoded_size is monotone).
size_t count_fitting(const QuantOptions &o, size_t bytes) {
    size_t lo = 0, hi = 2 * bytes + 2;
    while (lo < hi) {
        const size_t mid = lo + (hi - lo + 1) / 2;
        if (encoded_size(o, mid) <= bytes)
            lo = mid;
        else
            hi = mid - 1;
    }
    return lo;
}

unsigned nibble(const uint8_t *codes, size_t i) { return (codes[i / 2] >> ((i & 1) * 4)) & 0xfu; }

void check_decode(const QuantOptions &o, const std::vector<uint8_t> &payload) {
    const size_t count = count_fitting(o, payload.size());
    const std::vector<uint8_t> in(payload.begin(), payload.begin() + encoded_size(o, count));  // exact size
    std::vector<float> out(count);
    dequantize(o, in.data(), count, out.data());

    switch (o.kind) {
    case PCCL_QUANT_NONE:
        FUZZ_CHECK(count == 0 || std::memcmp(out.data(), in.data(), 4 * count) == 0);
        return;
    case PCCL_QUANT_FP16:
    case PCCL_QUANT_BF16:
        for (size_t i = 0; i < count; ++i) {
            uint16_t h;
            std::memcpy(&h, in.data() + 2 * i, 2);
            const bool finite_code = o.kind == PCCL_QUANT_FP16 ? (h & 0x7c00u) != 0x7c00u : (h & 0x7f80u) != 0x7f80u;
            FUZZ_CHECK(std::isfinite(out[i]) == finite_code);
            if (finite_code)  // every finite code decodes exactly and encodes back to itself
                FUZZ_CHECK((o.kind == PCCL_QUANT_FP16 ? f32_to_f16(out[i]) : f32_to_bf16(out[i])) == h);
        }
        return;
    default:
        break;
    }

    const size_t nb = (count + o.block - 1) / o.block;
    const uint8_t *codes = in.data() + 4 * nb;
    // The encoder writes codes in [-127, 127] / [-7, 7]; hostile bytes can also
    // hold -128 / -8, which decode without harm, so the magnitude bound is 2^7 / 2^3.
    const float qmax = o.kind == PCCL_QUANT_INT8 ? 128.0f : o.kind == PCCL_QUANT_INT4 ? 8.0f : 1.0f;
    for (size_t b = 0; b < nb; ++b) {
        float s;
        std::memcpy(&s, in.data() + 4 * b, 4);
        const size_t begin = b * o.block, end = std::min(count, begin + size_t(o.block));
        bool has_max_code = false;
        for (size_t i = begin; i < end; ++i) {
            if (std::isfinite(s))  // |code| <= qmax and rounding is monotone (inf bound if it overflows)
                FUZZ_CHECK(!(std::fabs(out[i]) > qmax * std::fabs(s)));
            if (o.kind == PCCL_QUANT_E3M0)
                has_max_code = has_max_code || (nibble(codes, i) & 7u) == 7u;
        }
        // An e3m0 block whose scale is its largest magnitude re-quantizes to the
        // same scale and codes (a negative zero code becomes +0).
        if (o.kind == PCCL_QUANT_E3M0 && has_max_code && s >= 0x1.0p-100f && std::isfinite(s)) {
            QuantOptions ro = o;
            ro.stochastic = false;
            std::vector<uint8_t> re(encoded_size(ro, end - begin));
            quantize(ro, out.data() + begin, end - begin, re.data());
            float rs;
            std::memcpy(&rs, re.data(), 4);
            FUZZ_CHECK(rs == s);
            for (size_t i = begin; i < end; ++i) {
                const unsigned want = nibble(codes, i) == 8u ? 0u : nibble(codes, i);
                FUZZ_CHECK(nibble(re.data() + 4, i - begin) == want);
            }
        }
    }
}

void check_round_trip(const QuantOptions &o, const std::vector<uint8_t> &payload) {
    const size_t count = payload.size() / 4;
    std::vector<float> x(count);
    if (count)
        std::memcpy(x.data(), payload.data(), 4 * count);
    bool finite = true;
    for (float v : x)
        finite = finite && std::isfinite(v);
    std::vector<uint8_t> enc(encoded_size(o, count));
    // Non-finite input is refused before anything is written.
    FUZZ_CHECK(fuzz::accepts(PCCL_ERR_INVALID_ARGUMENT, [&] { quantize(o, x.data(), count, enc.data()); }) ==
               finite);
    if (!finite)
        return;
    std::vector<uint8_t> again(enc.size());
    quantize(o, x.data(), count, again.data());
    FUZZ_CHECK(enc == again);  // reproducible, stochastic rounding included
    std::vector<float> y(count);
    dequantize(o, enc.data(), count, y.data());
    const float bound = max_abs_error_bound(o, x.data(), count);
    for (size_t i = 0; i < count; ++i) {
        if (!std::isfinite(y[i]) || !(std::fabs(static_cast<double>(y[i]) - x[i]) <= bound)) {
            std::fprintf(stderr, "%s block %u stochastic %d: element %zu: %a decoded as %a, bound %a\n",
                         codec(o.kind).name, o.block, int(o.stochastic), i, x[i], y[i], bound);
            FUZZ_CHECK(!"finite and within max_abs_error_bound");
        }
    }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    FuzzedDataProvider fdp(data, size);
    QuantOptions o;
    o.kind = static_cast<pccl_quant_t>(fdp.ConsumeIntegralInRange<uint32_t>(0, static_cast<uint32_t>(codecs().size() - 1)));
    o.block = fdp.ConsumeBool() ? fdp.ConsumeIntegralInRange<uint32_t>(1, 64)
                                : fdp.ConsumeIntegralInRange<uint32_t>(1, 1u << 20);
    o.stochastic = fdp.ConsumeBool();
    o.seed = fdp.ConsumeIntegral<uint64_t>();
    const bool decode_side = fdp.ConsumeBool();
    const std::vector<uint8_t> payload = fdp.ConsumeRemainingBytes<uint8_t>();
    if (decode_side)
        check_decode(o, payload);
    else
        check_round_trip(o, payload);
    return 0;
}
