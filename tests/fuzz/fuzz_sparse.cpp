// Sparse (index, value) sets of the top-k exchange (compress/topk.h): every
// member decodes every other member's set. Accepted sets are well formed
// (ascending in-range indices, finite values), re-encode to no more bytes than
// were received (only non-minimal varints shrink) and decode back to the same
// set; sparse_sum_into adds them exactly where they say. Rejections are
// PCCL_ERR_PROTOCOL.
#include <cmath>
#include <cstring>
#include <string>
#include <string_view>
#include <vector>

#include "common/half.h"
#include "compress/topk.h"
#include "fuzz_check.h"

using namespace pccl;
using namespace pccl::compress;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    const std::string_view in(reinterpret_cast<const char *>(data), size);
    SparseSet s;
    if (!fuzz::accepts(PCCL_ERR_PROTOCOL, [&] { s = sparse_decode(in); }))
        return 0;
    FUZZ_CHECK(s.indices.size() == s.values.size() && s.indices.size() <= s.n);
    for (size_t i = 0; i < s.indices.size(); ++i) {
        FUZZ_CHECK(s.indices[i] < s.n && (i == 0 || s.indices[i] > s.indices[i - 1]));
        FUZZ_CHECK(std::isfinite(s.values[i]));
    }
    const bool fp16 = (data[3] & 1) != 0;
    if (fp16)
        for (float v : s.values)
            FUZZ_CHECK(f16_to_f32(f32_to_f16(v)) == v);  // fp16 values are exact fp16 numbers

    const std::string re = sparse_encode(s.indices.data(), s.values.data(), s.indices.size(), s.n, fp16);
    FUZZ_CHECK(re.size() <= size);
    SparseSet t;
    FUZZ_CHECK(fuzz::accepts(PCCL_ERR_PROTOCOL, [&] { t = sparse_decode(re); }));
    FUZZ_CHECK(t.n == s.n && t.indices == s.indices);
    FUZZ_CHECK(t.values.size() == s.values.size() &&
               (s.values.empty() || std::memcmp(t.values.data(), s.values.data(), 4 * s.values.size()) == 0));

    if (s.n <= (1u << 16)) {  // dense sums of the set, twice (in rank order)
        std::vector<float> dense(s.n, 1.0f);
        sparse_sum_into({in, re}, dense.data(), s.n);
        size_t k = 0;
        for (uint64_t j = 0; j < s.n; ++j) {
            const float want = k < s.indices.size() && s.indices[k] == j ? s.values[k++] * 2.0f : 0.0f;
            FUZZ_CHECK(std::memcmp(&dense[j], &want, 4) == 0 || (dense[j] == 0.0f && want == 0.0f));
        }
        // A set of another dense length is refused before dense_out is touched.
        std::vector<float> other(s.n + 1, 7.0f);
        FUZZ_CHECK(!fuzz::accepts(PCCL_ERR_PROTOCOL, [&] { sparse_sum_into({in}, other.data(), s.n + 1); }));
        for (float v : other)
            FUZZ_CHECK(v == 7.0f);
    }
    return 0;
}
