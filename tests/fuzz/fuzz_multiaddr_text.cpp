// Text multiaddrs (net/multiaddr.h), as they arrive in bootstrap lists, the
// CLI, and addresses gossiped inside control messages. Rejections must be
// PCCL_ERR_INVALID_ARGUMENT; accepted ones obey check_multiaddr.
#include <string_view>

#include "multiaddr_checks.h"

using namespace pccl;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    const std::string_view text(reinterpret_cast<const char *>(data), size);
    Multiaddr m;
    if (!fuzz::accepts(PCCL_ERR_INVALID_ARGUMENT, [&] { m = Multiaddr::parse(text); }))
        return 0;
    fuzz::check_multiaddr(m);
    return 0;
}
