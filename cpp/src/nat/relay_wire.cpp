#include "nat/relay_wire.h"

#include <algorithm>
#include <cmath>
#include <type_traits>

#include "common/error.h"
#include "common/msgpack.h"
#include "net/peer_id.h"

namespace pccl::nat {

namespace {

// Decoding: each reader throws Error(PROTOCOL) naming the field; decode_relay
// turns that into the result's error.
[[noreturn]] void malformed(const std::string &why) { fail(PCCL_ERR_PROTOCOL, why); }

std::string bounded_str(const MsgValue &m, const char *field, size_t max) {
    const std::string &s = m.at(field).as_str();
    if (s.size() > max) malformed(std::string("'") + field + "' longer than " + std::to_string(max) + " bytes");
    return s;
}

std::string peer_id_field(const MsgValue &m, const char *field) {
    std::string s = bounded_str(m, field, kMaxRelayPeerIdLength);
    if (!is_valid_peer_id(s)) malformed(std::string("'") + field + "' is not a peer id");
    return s;
}

std::vector<std::string> addrs_field(const MsgValue &m) {
    const MsgValue::Array &a = m.at("addrs").as_array();
    if (a.size() > kMaxRelayAddrs) malformed("more than " + std::to_string(kMaxRelayAddrs) + " addresses");
    std::vector<std::string> out;
    out.reserve(a.size());
    for (const MsgValue &x : a) {
        if (x.as_str().size() > kMaxRelayAddrLength) malformed("an address longer than " + std::to_string(kMaxRelayAddrLength) + " bytes");
        out.push_back(x.as_str());
    }
    return out;
}

uint64_t cid_field(const MsgValue &m) {
    const uint64_t cid = m.at("cid").as_uint();
    if (cid == 0) malformed("circuit id 0");
    return cid;
}

double ranged(const MsgValue &v, const char *field, double lo, double hi) {
    const double x = v.as_double();
    if (!(x >= lo && x <= hi))  // NaN too
        malformed(std::string("'") + field + "' out of range");
    return x;
}

RelayMsg decode_map(const MsgValue &m) {
    const std::string &t = m.at("t").as_str();
    if (t == "reserve") return RelayReserve{};
    if (t == "reserved") return RelayReserved{ranged(m.at("ttl"), "ttl", kMinRelayTtlS, kMaxRelayTtlS)};
    if (t == "error") return RelayRefusal{bounded_str(m, "reason", kMaxRelayReasonLength)};
    if (t == "connect") return RelayConnect{peer_id_field(m, "target")};
    if (t == "incoming") return RelayIncoming{cid_field(m), peer_id_field(m, "from")};
    if (t == "accept") return RelayAccept{cid_field(m)};
    if (t == "open") {
        const MsgValue *d = m.find("direct");
        return RelayOpen{d && d->as_bool()};
    }
    if (t == "dialback") {  // the answer carries "ok", the request "addrs"
        if (const MsgValue *ok = m.find("ok")) return DialbackResult{ok->as_bool()};
        return DialbackRequest{addrs_field(m)};
    }
    if (t == "dcutr-connect") {
        PunchConnect p{addrs_field(m), std::nullopt};
        if (const MsgValue *w = m.find("wait")) p.wait = ranged(*w, "wait", 0, kMaxRelayWaitS);
        return p;
    }
    if (t == "dcutr-reverse") {
        PunchReverse r;
        r.cid = cid_field(m);
        r.purpose = bounded_str(m, "purpose", kMaxRelayPurposeLength);
        r.addrs = addrs_field(m);
        return r;
    }
    if (t == "dcutr-sync") return PunchSync{};
    if (t.size() > kMaxRelayTypeLength) malformed("type name longer than " + std::to_string(kMaxRelayTypeLength) + " bytes");
    return UnknownRelayMsg{t};
}

// Encoding: cut to the bounds decode_relay checks.
std::string cut(const std::string &s, size_t max) { return s.size() <= max ? s : s.substr(0, max); }

MsgValue addrs_value(const std::vector<std::string> &addrs) {
    MsgValue::Array out;
    for (const auto &a : addrs) {
        if (out.size() == kMaxRelayAddrs) break;
        if (a.size() <= kMaxRelayAddrLength) out.emplace_back(a);
    }
    return MsgValue::array(std::move(out));
}

double clamp(double x, double lo, double hi) { return std::isfinite(x) ? std::min(hi, std::max(lo, x)) : lo; }

}  // namespace

std::string relay_type_name(const RelayMsg &m) {
    return std::visit(
        [](const auto &v) -> std::string {
            using T = std::decay_t<decltype(v)>;
            if constexpr (std::is_same_v<T, RelayReserve>) return "reserve";
            else if constexpr (std::is_same_v<T, RelayReserved>) return "reserved";
            else if constexpr (std::is_same_v<T, RelayRefusal>) return "error";
            else if constexpr (std::is_same_v<T, RelayConnect>) return "connect";
            else if constexpr (std::is_same_v<T, RelayIncoming>) return "incoming";
            else if constexpr (std::is_same_v<T, RelayAccept>) return "accept";
            else if constexpr (std::is_same_v<T, RelayOpen>) return "open";
            else if constexpr (std::is_same_v<T, DialbackRequest> || std::is_same_v<T, DialbackResult>) return "dialback";
            else if constexpr (std::is_same_v<T, PunchConnect>) return "dcutr-connect";
            else if constexpr (std::is_same_v<T, PunchReverse>) return "dcutr-reverse";
            else if constexpr (std::is_same_v<T, PunchSync>) return "dcutr-sync";
            else return cut(v.type, kMaxRelayTypeLength);
        },
        m);
}

RelayDecoded decode_relay(const uint8_t *data, size_t n) {
    RelayDecoded out;
    if (n > kMaxRelayPayload) {
        out.error = "relay message of " + std::to_string(n) + " bytes (limit " + std::to_string(kMaxRelayPayload) + ")";
        return out;
    }
    try {
        MsgValue m = msgpack_decode(data, n, kMaxRelayTree);
        out.msg = decode_map(m);
    } catch (const Error &e) {
        out.error = e.what();
    }
    return out;
}

std::string encode_relay(const RelayMsg &m) {
    MsgValue::Map f{{"t", relay_type_name(m)}};
    std::visit(
        [&](const auto &v) {
            using T = std::decay_t<decltype(v)>;
            if constexpr (std::is_same_v<T, RelayReserved>) {
                f.emplace_back("ttl", clamp(v.ttl, kMinRelayTtlS, kMaxRelayTtlS));
            } else if constexpr (std::is_same_v<T, RelayRefusal>) {
                f.emplace_back("reason", cut(v.reason, kMaxRelayReasonLength));
            } else if constexpr (std::is_same_v<T, RelayConnect>) {
                f.emplace_back("target", v.target);
            } else if constexpr (std::is_same_v<T, RelayIncoming>) {
                f.emplace_back("cid", v.cid);
                f.emplace_back("from", v.from);
            } else if constexpr (std::is_same_v<T, RelayAccept>) {
                f.emplace_back("cid", v.cid);
            } else if constexpr (std::is_same_v<T, RelayOpen>) {
                if (v.direct) f.emplace_back("direct", true);
            } else if constexpr (std::is_same_v<T, DialbackRequest>) {
                f.emplace_back("addrs", addrs_value(v.addrs));
            } else if constexpr (std::is_same_v<T, DialbackResult>) {
                f.emplace_back("ok", v.ok);
            } else if constexpr (std::is_same_v<T, PunchConnect>) {
                f.emplace_back("addrs", addrs_value(v.addrs));
                if (v.wait) f.emplace_back("wait", clamp(*v.wait, 0, kMaxRelayWaitS));
            } else if constexpr (std::is_same_v<T, PunchReverse>) {
                f.emplace_back("cid", v.cid);
                f.emplace_back("purpose", cut(v.purpose, kMaxRelayPurposeLength));
                f.emplace_back("addrs", addrs_value(v.addrs));
            }
        },
        m);
    return msgpack_encode(MsgValue::map(std::move(f)));
}

}  // namespace pccl::nat
