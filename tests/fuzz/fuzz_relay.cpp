// The relay messages of the NAT layer (nat/relay_wire.h) and their
// dispatcher (nat/dispatcher.h).
//
// Byte 0 picks the side:
//   even: the rest is a relay payload from a peer. decode_relay either
//     accepts it, and then every field is within its bound, the message
//     re-encodes within kMaxRelayPayload and decodes to itself; or it says
//     why not. Dispatcher::route then calls exactly the handler of the
//     decoded type with that message (none for an unknown type, none for
//     malformed bytes: PROTOCOL), and a handler's Error or other exception
//     comes back as the outcome (Error's status, or INTERNAL), never thrown.
//   odd: the rest builds a message of our own (hostile sizes and numbers
//     included); encode_relay writes it within kMaxRelayPayload, and it
//     decodes (unless its ids are invalid: cid 0 or no peer id) to a
//     message that encodes to the same bytes.
#include <fuzzer/FuzzedDataProvider.h>

#include <limits>
#include <stdexcept>
#include <string>
#include <variant>

#include "fuzz_check.h"
#include "nat/dispatcher.h"
#include "net/peer_id.h"

using namespace pccl;
using namespace pccl::nat;

namespace {

bool addrs_ok(const std::vector<std::string> &a) {
    if (a.size() > kMaxRelayAddrs) return false;
    for (const auto &s : a)
        if (s.size() > kMaxRelayAddrLength) return false;
    return true;
}

// Every field of a decoded message within its bound.
bool within_bounds(const RelayMsg &m) {
    return std::visit(
        [](const auto &v) {
            using T = std::decay_t<decltype(v)>;
            if constexpr (std::is_same_v<T, RelayReserved>) return v.ttl >= kMinRelayTtlS && v.ttl <= kMaxRelayTtlS;
            else if constexpr (std::is_same_v<T, RelayRefusal>) return v.reason.size() <= kMaxRelayReasonLength;
            else if constexpr (std::is_same_v<T, RelayConnect>) return is_valid_peer_id(v.target);
            else if constexpr (std::is_same_v<T, RelayIncoming>) return v.cid != 0 && is_valid_peer_id(v.from);
            else if constexpr (std::is_same_v<T, RelayAccept>) return v.cid != 0;
            else if constexpr (std::is_same_v<T, DialbackRequest>) return addrs_ok(v.addrs);
            else if constexpr (std::is_same_v<T, PunchConnect>)
                return addrs_ok(v.addrs) && (!v.wait || (*v.wait >= 0 && *v.wait <= kMaxRelayWaitS));
            else if constexpr (std::is_same_v<T, PunchReverse>)
                return v.cid != 0 && v.purpose.size() <= kMaxRelayPurposeLength && addrs_ok(v.addrs);
            else if constexpr (std::is_same_v<T, UnknownRelayMsg>) return v.type.size() <= kMaxRelayTypeLength;
            else return true;
        },
        m);
}

RelayDecoded decode(const std::string &s) { return decode_relay(reinterpret_cast<const uint8_t *>(s.data()), s.size()); }

// A dispatcher whose handlers record what they got; `throw_kind` makes them
// throw (1: Error(IO), 2: std::runtime_error).
struct Recorder {
    Dispatcher d;
    int calls = 0;
    RelayMsg got;
    int throw_kind = 0;

    template <class M>
    void add() {
        d.on<M>([this](const net::ConnPtr &, const M &m) {
            ++calls;
            got = m;
            if (throw_kind == 1) fail(PCCL_ERR_IO, "handler failed");
            if (throw_kind == 2) throw std::runtime_error("handler broke");
        });
    }
    Recorder() {  // every type but UnknownRelayMsg (nobody handles those)
        add<RelayReserve>(), add<RelayReserved>(), add<RelayRefusal>(), add<RelayConnect>(), add<RelayIncoming>();
        add<RelayAccept>(), add<RelayOpen>(), add<DialbackRequest>(), add<DialbackResult>(), add<PunchConnect>();
        add<PunchReverse>(), add<PunchSync>();
    }
};

void peer_side(const uint8_t *data, size_t size, int throw_kind) {
    RelayDecoded d = decode_relay(data, size);
    Recorder r;
    r.throw_kind = throw_kind;
    Dispatcher::Outcome o = r.d.route(nullptr, data, size);
    if (!d.ok()) {
        FUZZ_CHECK(!d.error.empty() && o.status == PCCL_ERR_PROTOCOL && r.calls == 0 && !o.why.empty());
        return;
    }
    FUZZ_CHECK(within_bounds(d.msg));
    const bool unknown = std::holds_alternative<UnknownRelayMsg>(d.msg);
    FUZZ_CHECK(r.calls == (unknown ? 0 : 1));
    if (!unknown) FUZZ_CHECK(r.got == d.msg);
    const pccl_status_t want = unknown || throw_kind == 0 ? PCCL_OK : throw_kind == 1 ? PCCL_ERR_IO : PCCL_ERR_INTERNAL;
    FUZZ_CHECK(o.status == want);
    const std::string enc = encode_relay(d.msg);
    FUZZ_CHECK(enc.size() <= kMaxRelayPayload);
    RelayDecoded back = decode(enc);
    FUZZ_CHECK(back.ok() && back.msg == d.msg && encode_relay(back.msg) == enc);
    FUZZ_CHECK(relay_type_name(back.msg) == relay_type_name(d.msg));
}

std::vector<std::string> some_addrs(FuzzedDataProvider &p) {
    std::vector<std::string> out(p.ConsumeIntegralInRange<size_t>(0, 40));
    for (auto &a : out) a = p.ConsumeBool() ? std::string(p.ConsumeIntegralInRange<size_t>(500, 600), 'a')
                                            : p.ConsumeRandomLengthString(64);
    return out;
}

std::string some_text(FuzzedDataProvider &p) {
    return p.ConsumeBool() ? std::string(p.ConsumeIntegralInRange<size_t>(0, 2000), 'x') : p.ConsumeRandomLengthString(80);
}

RelayMsg build(FuzzedDataProvider &p) {
    static const std::string kId = "QmYyQSo1c1Ym7orWxLYvCrM2EmxFTANf8wXmmE7DWjhx5N";
    auto id = [&] { return p.ConsumeBool() ? kId : p.ConsumeRandomLengthString(140); };
    auto cid = [&] { return p.ConsumeBool() ? p.ConsumeIntegral<uint64_t>() : uint64_t(p.ConsumeIntegralInRange<int>(0, 3)); };
    auto num = [&] {
        switch (p.ConsumeIntegralInRange<int>(0, 4)) {
            case 0: return std::numeric_limits<double>::quiet_NaN();
            case 1: return std::numeric_limits<double>::infinity();
            case 2: return -p.ConsumeFloatingPoint<double>();
            default: return p.ConsumeFloatingPoint<double>();
        }
    };
    switch (p.ConsumeIntegralInRange<int>(0, 12)) {
        case 0: return RelayReserve{};
        case 1: return RelayReserved{num()};
        case 2: return RelayRefusal{some_text(p)};
        case 3: return RelayConnect{id()};
        case 4: return RelayIncoming{cid(), id()};
        case 5: return RelayAccept{cid()};
        case 6: return RelayOpen{p.ConsumeBool()};
        case 7: return DialbackRequest{some_addrs(p)};
        case 8: return DialbackResult{p.ConsumeBool()};
        case 9: {
            PunchConnect c{some_addrs(p), std::nullopt};
            if (p.ConsumeBool()) c.wait = num();
            return c;
        }
        case 10: return PunchReverse{cid(), some_text(p), some_addrs(p)};
        case 11: return PunchSync{};
        default: return UnknownRelayMsg{"x-" + some_text(p)};
    }
}

bool ids_valid(const RelayMsg &m) {
    if (auto *c = std::get_if<RelayConnect>(&m)) return is_valid_peer_id(c->target);
    if (auto *i = std::get_if<RelayIncoming>(&m)) return i->cid != 0 && is_valid_peer_id(i->from);
    if (auto *a = std::get_if<RelayAccept>(&m)) return a->cid != 0;
    if (auto *r = std::get_if<PunchReverse>(&m)) return r->cid != 0;
    return true;
}

void our_side(const uint8_t *data, size_t size) {
    FuzzedDataProvider p(data, size);
    const RelayMsg m = build(p);
    const std::string enc = encode_relay(m);
    FUZZ_CHECK(enc.size() <= kMaxRelayPayload);
    RelayDecoded d = decode(enc);
    FUZZ_CHECK(d.ok() == ids_valid(m));
    if (!d.ok()) return;
    FUZZ_CHECK(d.msg.index() == m.index() && within_bounds(d.msg) && encode_relay(d.msg) == enc);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size == 0) return 0;
    if (data[0] & 1) our_side(data + 1, size - 1);
    else peer_side(data + 1, size - 1, (data[0] >> 1) % 3);
    return 0;
}
