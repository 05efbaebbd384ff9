// Multiaddrs (https://github.com/multiformats/multiaddr), text and binary,
// byte-compatible with the Python `multiaddr` package (0.2.0) for the
// protocols we use: ip4, ip6, tcp, udp, dns, dns4, dns6, p2p, p2p-circuit,
// memory (code 777, a u64 as 8 big-endian bytes: the in-process transport).
//
// Contract: Multiaddr is an immutable value; every instance is valid
// (parse/from_bytes validate everything and throw on anything else), and
// to_string() is canonical: ip6 as inet_ntop prints it, ports without leading
// zeros, "/ipfs/" (accepted as an alias) printed as "/p2p/". Errors are
// Error(PCCL_ERR_INVALID_ARGUMENT, "invalid multiaddr '<text>': <problem>") for
// text and Error(PCCL_ERR_PROTOCOL, "invalid binary multiaddr: <problem>") for
// bytes (which arrive from peers). Pure functions: no DNS, no sockets.
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace pccl {

struct MultiaddrPart {
    uint32_t code;      // multicodec, e.g. 4 for ip4
    std::string name;   // e.g. "ip4"
    std::string value;  // canonical text form; empty for p2p-circuit
};

class Multiaddr {
public:
    Multiaddr() = default;  // the empty multiaddr, printed as ""

    static Multiaddr parse(std::string_view text);
    static Multiaddr from_bytes(const uint8_t *data, size_t n);

    std::string to_string() const;
    std::string to_bytes() const;
    const std::vector<MultiaddrPart> &parts() const { return parts_; }
    bool empty() const { return parts_.empty(); }

    // Value of the LAST /p2p part (for a relayed address: the target, not the relay).
    std::optional<std::string> peer_id() const;
    // Contains /p2p-circuit.
    bool is_relayed() const;
    // Appends /p2p/<id>, or replaces a trailing /p2p part. Throws on a bad id.
    Multiaddr with_peer_id(const std::string &id) const;
    // Strips a trailing /p2p/<id> (a no-op without one).
    Multiaddr without_peer_id() const;

    struct TcpTarget {
        std::string host;  // numeric address or DNS name (see is_dns)
        uint16_t port;
        int family;  // AF_INET (ip4, dns4), AF_INET6 (ip6, dns6), AF_UNSPEC (dns)
        bool is_dns;  // host must be resolved (family is then only a hint)
    };
    // The value of the first /memory part (net/memory_transport.h).
    std::optional<uint64_t> memory_id() const;
    // The first ip4|ip6|dns|dns4|dns6 part directly followed by tcp.
    std::optional<TcpTarget> tcp_target() const;

    bool operator==(const Multiaddr &o) const { return to_bytes() == o.to_bytes(); }
    bool operator!=(const Multiaddr &o) const { return !(*this == o); }

private:
    std::vector<MultiaddrPart> parts_;
};

}  // namespace pccl
