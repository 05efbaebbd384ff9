// The relay messages of the NAT layer as typed values, and their codec.
//
// On the wire each message is the payload of a `relay` frame: a msgpack map
// whose "t" names the type (the protocols are in relay_client.h,
// reachability.h and hole_punch.h). decode_relay is the only reader of those
// bytes: it is pure (no I/O, no globals), never throws, and bounds
// everything a peer controls before it is stored: the payload
// (kMaxRelayPayload), the decoded tree (kMaxRelayTree), every string and
// every list (the kMaxRelay* constants below). A message that breaks a
// bound, misses a field or has a field of the wrong type is malformed: the
// result carries why, and the caller closes that connection only. Fields a
// type does not know are ignored and an unknown "t" decodes as
// UnknownRelayMsg (a newer peer's message), so the protocol can grow.
//
// encode_relay is the only writer. It writes what decode_relay accepts: a
// string over its bound is cut, a list keeps its first kMaxRelayAddrs
// entries that fit (addresses over kMaxRelayAddrLength are left out), and a
// number out of its range is clamped. Ids are the caller's to get right: a
// cid of 0 or a peer id that is none encodes, but does not decode. For
// every message decode_relay returns, decode_relay(encode_relay(m)) == m.
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <variant>
#include <vector>

namespace pccl::nat {

constexpr size_t kMaxRelayPayload = 32 << 10;    // bytes of one relay message
constexpr size_t kMaxRelayTree = 1 << 20;        // its decoded msgpack tree (msgpack_decode's max_memory)
constexpr size_t kMaxRelayAddrs = 32;            // addresses in one list (= net::kMaxAdvertised)
constexpr size_t kMaxRelayAddrLength = 512;      // one address (= net::kMaxAddrLength)
constexpr size_t kMaxRelayPeerIdLength = 128;    // a peer id (also checked as one: is_valid_peer_id)
constexpr size_t kMaxRelayPurposeLength = 64;    // a purpose (= net::kMaxPurposeLength)
constexpr size_t kMaxRelayReasonLength = 512;    // an error's reason
constexpr size_t kMaxRelayTypeLength = 64;       // the "t" of an unknown type
constexpr double kMinRelayTtlS = 1e-3;           // a reservation's TTL, in [this,
constexpr double kMaxRelayTtlS = 7 * 86400.0;    //   this]
constexpr double kMaxRelayWaitS = 3600.0;        // dcutr-connect's wait, [0, this]

// private peer -> relay: take (or refresh) a reservation.
struct RelayReserve {
    bool operator==(const RelayReserve &) const { return true; }
};
// relay -> private peer: the reservation holds for ttl seconds unrefreshed.
struct RelayReserved {
    double ttl = 0;
    bool operator==(const RelayReserved &o) const { return ttl == o.ttl; }
};
// Either way: a refusal; the sender closes the connection.
struct RelayRefusal {
    std::string reason;
    bool operator==(const RelayRefusal &o) const { return reason == o.reason; }
};
// dialer -> relay, on a relay-hop connection: a circuit to `target`.
struct RelayConnect {
    std::string target;
    bool operator==(const RelayConnect &o) const { return target == o.target; }
};
// relay -> reserved peer: `from` wants circuit `cid`; answer with an accept
// on a new relay-stop connection.
struct RelayIncoming {
    uint64_t cid = 0;
    std::string from;
    bool operator==(const RelayIncoming &o) const { return cid == o.cid && from == o.from; }
};
// reserved peer -> relay, on its relay-stop connection.
struct RelayAccept {
    uint64_t cid = 0;
    bool operator==(const RelayAccept &o) const { return cid == o.cid; }
};
// relay -> both ends: the circuit is spliced (direct: the relay is the other end).
struct RelayOpen {
    bool direct = false;
    bool operator==(const RelayOpen &o) const { return direct == o.direct; }
};
// peer -> relay: dial me back at the first ip4 address of `addrs`.
struct DialbackRequest {
    std::vector<std::string> addrs;
    bool operator==(const DialbackRequest &o) const { return addrs == o.addrs; }
};
// relay -> peer: whether that dial-back got through.
struct DialbackResult {
    bool ok = false;
    bool operator==(const DialbackResult &o) const { return ok == o.ok; }
};
// Hole punching: our candidates; the acceptor's answer adds `wait` (the
// seconds its mapping probe took, not path delay).
struct PunchConnect {
    std::vector<std::string> addrs;
    std::optional<double> wait;
    bool operator==(const PunchConnect &o) const { return addrs == o.addrs && wait == o.wait; }
};
// Connection reversal: dial me at `addrs`, naming `cid` in your hello.
struct PunchReverse {
    uint64_t cid = 0;
    std::string purpose;
    std::vector<std::string> addrs;
    bool operator==(const PunchReverse &o) const {
        return cid == o.cid && purpose == o.purpose && addrs == o.addrs;
    }
};
// Hole punching: connect now.
struct PunchSync {
    bool operator==(const PunchSync &) const { return true; }
};
// A type this version does not know (ignored by the dispatcher).
struct UnknownRelayMsg {
    std::string type;
    bool operator==(const UnknownRelayMsg &o) const { return type == o.type; }
};

using RelayMsg = std::variant<RelayReserve, RelayReserved, RelayRefusal, RelayConnect, RelayIncoming, RelayAccept,
                              RelayOpen, DialbackRequest, DialbackResult, PunchConnect, PunchReverse, PunchSync,
                              UnknownRelayMsg>;

// The wire name ("t") of a message's type; for UnknownRelayMsg its own.
std::string relay_type_name(const RelayMsg &m);

struct RelayDecoded {
    RelayMsg msg;       // valid when error is empty
    std::string error;  // why the bytes are malformed ("" = they are not)
    bool ok() const { return error.empty(); }
};

// Decodes one relay payload of n bytes (any bytes). Never reads past n and
// allocates within the bounds above; malformed input is a result, not an
// exception (only std::bad_alloc could escape, when memory is exhausted).
RelayDecoded decode_relay(const uint8_t *data, size_t n);
// The payload of `m`, within kMaxRelayPayload (see the header comment).
std::string encode_relay(const RelayMsg &m);

}  // namespace pccl::nat
