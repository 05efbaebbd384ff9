// Invariants of a Multiaddr that parsed, shared by the text and the binary
// multiaddr harnesses: both forms round-trip through each other to the same
// canonical value, and the accessors the dialer uses agree with the parts.
#pragma once

#include <string>

#include "fuzz_check.h"
#include "net/multiaddr.h"
#include "net/peer_id.h"

namespace pccl::fuzz {

inline void check_multiaddr(const Multiaddr &m) {
    const std::string text = m.to_string();
    const std::string bytes = m.to_bytes();
    Multiaddr from_text, from_bytes;
    FUZZ_CHECK(accepts(PCCL_ERR_INVALID_ARGUMENT, [&] { from_text = Multiaddr::parse(text); }));
    FUZZ_CHECK(from_text.to_string() == text);  // canonical text is a fixed point
    FUZZ_CHECK(from_text.to_bytes() == bytes);
    FUZZ_CHECK(accepts(PCCL_ERR_PROTOCOL, [&] {
        from_bytes = Multiaddr::from_bytes(reinterpret_cast<const uint8_t *>(bytes.data()), bytes.size());
    }));
    FUZZ_CHECK(from_bytes.to_string() == text);
    FUZZ_CHECK(from_bytes == m);
    FUZZ_CHECK(m.empty() == m.parts().empty() && m.empty() == text.empty());

    bool relayed = false;
    const MultiaddrPart *last_p2p = nullptr;
    for (const auto &part : m.parts()) {
        relayed = relayed || part.name == "p2p-circuit";
        if (part.name == "p2p") {
            FUZZ_CHECK(is_valid_peer_id(part.value));
            last_p2p = &part;
        }
    }
    FUZZ_CHECK(m.is_relayed() == relayed);
    const auto pid = m.peer_id();
    FUZZ_CHECK(pid.has_value() == (last_p2p != nullptr));
    if (pid)
        FUZZ_CHECK(*pid == last_p2p->value);

    const Multiaddr bare = m.without_peer_id();
    const bool trailing_p2p = !m.empty() && m.parts().back().name == "p2p";
    FUZZ_CHECK(bare.parts().size() == m.parts().size() - (trailing_p2p ? 1 : 0));
    const std::string id = "QmYyQSo1c1Ym7orWxLYvCrM2EmxFTANf8wXmmE7DWjhx5N";
    const Multiaddr with = m.with_peer_id(id);
    FUZZ_CHECK(with.peer_id() == id && with.without_peer_id() == bare);

    if (const auto t = m.tcp_target()) {
        FUZZ_CHECK(!t->host.empty());
        FUZZ_CHECK(text.find("/tcp/" + std::to_string(t->port)) != std::string::npos);
    }
}

}  // namespace pccl::fuzz
