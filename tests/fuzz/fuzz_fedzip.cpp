// FedZip blobs (compress/fedzip.h), decoded from whatever a peer sends, and the
// encoder's promise fedzip_decode(fedzip_encode(x)) == fedzip_quantize(x).
// Input: a byte (bit 0: encode side; bit 1: decode with an explicit max_n read
// from the next two bytes, else fedzip_default_max_n), then either the blob,
// or options and f32 values. A blob announcing more than max_n values is
// refused before anything is allocated for them.
#include <cmath>
#include <cstring>
#include <set>
#include <string>
#include <string_view>
#include <vector>

#include <fuzzer/FuzzedDataProvider.h>

#include "compress/fedzip.h"
#include "compress/varint.h"
#include "fuzz_check.h"

using namespace pccl;
using namespace pccl::compress;

namespace {

void check_decode(std::string_view blob, uint64_t max_n) {
    std::vector<float> out;
    if (!fuzz::accepts(PCCL_ERR_PROTOCOL, [&] { out = fedzip_decode(blob, max_n); }))
        return;
    // The header announces n, kept and the centroids: the result has n values,
    // at most `kept` of them non-zero, each one of the (finite) centroids.
    ByteReader r(blob, "fedzip header");
    r.bytes(4);
    const uint64_t n = r.varint();
    const uint64_t kept = r.varint();
    const uint8_t nc = r.u8();
    std::set<uint32_t> centroid_bits;
    for (uint8_t c = 0; c < nc; ++c) {
        const float v = r.f32();
        FUZZ_CHECK(std::isfinite(v));
        uint32_t bits;
        std::memcpy(&bits, &v, 4);
        centroid_bits.insert(bits);
    }
    FUZZ_CHECK(out.size() == n && n <= max_n);
    if (n > 0)  // the same blob with a smaller bound is refused
        FUZZ_CHECK(!fuzz::accepts(PCCL_ERR_PROTOCOL, [&] { (void)fedzip_decode(blob, n - 1); }));
    uint64_t nonzero = 0;
    for (float v : out) {
        if (v == 0.0f)
            continue;  // a zero centroid is indistinguishable from a dropped entry
        ++nonzero;
        uint32_t bits;
        std::memcpy(&bits, &v, 4);
        FUZZ_CHECK(centroid_bits.count(bits));
    }
    FUZZ_CHECK(nonzero <= kept);
    FUZZ_CHECK(fedzip_mode(blob) == blob[3]);
}

void check_round_trip(FuzzedDataProvider &fdp) {
    FedZipOptions o;
    o.density = fdp.ConsumeIntegralInRange<uint32_t>(1, 1000) / 1000.0;
    o.clusters = fdp.ConsumeIntegralInRange<uint32_t>(1, 32);
    o.lloyd_iterations = fdp.ConsumeIntegralInRange<uint32_t>(0, 40);
    const std::vector<uint8_t> raw = fdp.ConsumeRemainingBytes<uint8_t>();
    std::vector<float> x(raw.size() / 4);
    if (!x.empty())
        std::memcpy(x.data(), raw.data(), 4 * x.size());
    bool finite = true;
    for (float v : x)
        finite = finite && std::isfinite(v);
    std::string blob;
    FUZZ_CHECK(fuzz::accepts(PCCL_ERR_INVALID_ARGUMENT, [&] { blob = fedzip_encode(o, x.data(), x.size()); }) ==
               finite);
    if (!finite)
        return;
    const std::vector<float> want = fedzip_quantize(o, x.data(), x.size());
    std::vector<float> got;
    FUZZ_CHECK(fuzz::accepts(PCCL_ERR_PROTOCOL, [&] { got = fedzip_decode(blob, x.size()); }));
    FUZZ_CHECK(got.size() == want.size() &&
               (got.empty() || std::memcmp(got.data(), want.data(), 4 * got.size()) == 0));
    // A blob that honestly describes x also fits the default bound.
    FUZZ_CHECK(x.size() <= fedzip_default_max_n(blob));
    check_decode(blob, x.size());
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size < 1)
        return 0;
    if (data[0] & 1) {
        FuzzedDataProvider fdp(data + 1, size - 1);
        check_round_trip(fdp);
        return 0;
    }
    size_t skip = 1;
    uint64_t max_n = 0;
    if (data[0] & 2) {
        if (size < 3)
            return 0;
        max_n = data[1] | uint64_t(data[2]) << 8;
        skip = 3;
    }
    const std::vector<char> blob(data + skip, data + size);  // exact size: ASan sees any overread
    const std::string_view view(blob.data(), blob.size());
    check_decode(view, (data[0] & 2) ? max_n : fedzip_default_max_n(view));
    return 0;
}
