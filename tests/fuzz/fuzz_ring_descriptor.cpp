// The op descriptor a ring neighbour sends before any data
// (collectives/ring.h): decoded from msgpack, compared with ours, and printed
// in the mismatch error. Hostile field values must decode or be rejected with
// PCCL_ERR_PROTOCOL, print without crashing, and round-trip through encode().
#include <string>

#include "collectives/ring.h"
#include "fuzz_check.h"

using namespace pccl;
using namespace pccl::collectives;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    RingDescriptor d;
    if (!fuzz::accepts(PCCL_ERR_PROTOCOL, [&] { d = RingDescriptor::decode(data, size); }))
        return 0;
    FUZZ_CHECK(static_cast<uint64_t>(d.dtype) <= PCCL_U64 && static_cast<uint64_t>(d.op) <= PCCL_PROD);
    const std::string text = d.describe();
    FUZZ_CHECK(!text.empty() && text.find(std::to_string(d.count)) != std::string::npos);
    const std::string enc = d.encode();
    RingDescriptor back;
    FUZZ_CHECK(fuzz::accepts(PCCL_ERR_PROTOCOL, [&] {
        back = RingDescriptor::decode(reinterpret_cast<const uint8_t *>(enc.data()), enc.size());
    }));
    FUZZ_CHECK(back == d && back.encode() == enc && back.describe() == text);
    return 0;
}
