// Binary multiaddrs (net/multiaddr.h), the form peers send. Rejections must be
// PCCL_ERR_PROTOCOL; accepted ones obey check_multiaddr, and re-encode to no
// more bytes than were received (only non-minimal varints shrink).
#include "multiaddr_checks.h"

using namespace pccl;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    Multiaddr m;
    if (!fuzz::accepts(PCCL_ERR_PROTOCOL, [&] { m = Multiaddr::from_bytes(data, size); }))
        return 0;
    FUZZ_CHECK(m.to_bytes().size() <= size);
    fuzz::check_multiaddr(m);
    return 0;
}
