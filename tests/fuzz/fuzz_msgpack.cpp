// MessagePack decoder (common/msgpack.h), which parses every control, relay
// and handshake message. Checks: accepted input re-encodes to bytes that decode
// to a value with the same encoding; the encoding is the smallest (no longer
// than the input, allowing for float32 widened to float64); nesting stays
// within kMsgpackMaxDepth; the typed accessors the message handlers use accept
// exactly the documented types and reject the rest with PCCL_ERR_PROTOCOL;
// the memory budget is exact: the value decodes with a max_memory of its
// documented cost (sizeof(MsgValue) per value plus the str/bin bytes) and is
// refused with one byte less.
#include <cmath>
#include <string>

#include "common/msgpack.h"
#include "fuzz_check.h"

using namespace pccl;
using T = MsgValue::Type;

namespace {

struct Stats {
    size_t doubles = 0;
    size_t values = 0;     // every value, map keys included
    size_t str_bytes = 0;  // bytes of every Str and Bin
    bool nan = false;
    int container_depth = -1;  // deepest array/map (the root is depth 0)
};

// Each accessor either agrees with type() or throws PCCL_ERR_PROTOCOL.
void check_accessors(const MsgValue &v) {
    const T t = v.type();
    FUZZ_CHECK(fuzz::accepts(PCCL_ERR_PROTOCOL, [&] { (void)v.as_bool(); }) == (t == T::Bool));
    FUZZ_CHECK(fuzz::accepts(PCCL_ERR_PROTOCOL, [&] { (void)v.as_str(); }) == (t == T::Str));
    FUZZ_CHECK(fuzz::accepts(PCCL_ERR_PROTOCOL, [&] { (void)v.as_bin(); }) == (t == T::Bin || t == T::Str));
    FUZZ_CHECK(fuzz::accepts(PCCL_ERR_PROTOCOL, [&] { (void)v.as_array(); }) == (t == T::Array));
    FUZZ_CHECK(fuzz::accepts(PCCL_ERR_PROTOCOL, [&] { (void)v.as_map(); }) == (t == T::Map));
    FUZZ_CHECK(fuzz::accepts(PCCL_ERR_PROTOCOL, [&] { (void)v.as_double(); }) ==
               (t == T::Double || t == T::Int || t == T::Uint));
    int64_t i = 0;
    uint64_t u = 0;
    const bool has_int = fuzz::accepts(PCCL_ERR_PROTOCOL, [&] { i = v.as_int(); });
    const bool has_uint = fuzz::accepts(PCCL_ERR_PROTOCOL, [&] { u = v.as_uint(); });
    if (t != T::Int && t != T::Uint)
        FUZZ_CHECK(!has_int && !has_uint);
    if (t == T::Int)
        FUZZ_CHECK(has_int && has_uint == (i >= 0));
    if (t == T::Uint)
        FUZZ_CHECK(has_uint && has_int == (u <= uint64_t(INT64_MAX)));
    if (has_int && has_uint)
        FUZZ_CHECK(uint64_t(i) == u);
    if (t == T::Str || t == T::Bin)
        FUZZ_CHECK(v.size() == v.as_bin().size());
}

void walk(const MsgValue &v, int depth, Stats &s) {
    check_accessors(v);
    ++s.values;
    if (v.type() == T::Str || v.type() == T::Bin)
        s.str_bytes += v.as_bin().size();
    if (v.type() == T::Array || v.type() == T::Map)
        s.container_depth = std::max(s.container_depth, depth);
    switch (v.type()) {
    case T::Double:
        ++s.doubles;
        s.nan = s.nan || std::isnan(v.as_double());
        break;
    case T::Array:
        FUZZ_CHECK(v.size() == v.as_array().size());
        for (const auto &item : v.as_array())
            walk(item, depth + 1, s);
        break;
    case T::Map: {
        FUZZ_CHECK(v.size() == v.as_map().size());
        size_t looked_up = 0;
        for (const auto &[key, val] : v.as_map()) {
            walk(key, depth + 1, s);
            walk(val, depth + 1, s);
            if (key.type() == T::Str && looked_up++ < 64) {  // quadratic: a few per map
                // Lookups return the first entry with that key, as handlers expect.
                const MsgValue *hit = v.find(key.as_str());
                FUZZ_CHECK(hit != nullptr && hit == &v.at(key.as_str()));
                for (const auto &[k2, v2] : v.as_map())
                    if (k2.type() == T::Str && k2.as_str() == key.as_str()) {
                        FUZZ_CHECK(hit == &v2);
                        break;
                    }
            }
        }
        break;
    }
    default:
        break;
    }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    MsgValue v;
    if (!fuzz::accepts(PCCL_ERR_PROTOCOL, [&] { v = msgpack_decode(data, size); }))
        return 0;
    Stats s;
    walk(v, 0, s);
    FUZZ_CHECK(s.container_depth < kMsgpackMaxDepth);
    if (v.type() == T::Map)
        FUZZ_CHECK(fuzz::accepts(PCCL_ERR_PROTOCOL, [&] { (void)v.at("t"); }) == (v.find("t") != nullptr));
    const size_t cost = s.values * sizeof(MsgValue) + s.str_bytes;
    FUZZ_CHECK(fuzz::accepts(PCCL_ERR_PROTOCOL, [&] { (void)msgpack_decode(data, size, cost); }));
    FUZZ_CHECK(!fuzz::accepts(PCCL_ERR_PROTOCOL, [&] { (void)msgpack_decode(data, size, cost - 1); }));

    const std::string enc = msgpack_encode(v);
    FUZZ_CHECK(enc.size() <= size + 4 * s.doubles);  // smallest encoding (float32 input becomes float64)
    MsgValue w;
    FUZZ_CHECK(fuzz::accepts(PCCL_ERR_PROTOCOL, [&] {
        w = msgpack_decode(reinterpret_cast<const uint8_t *>(enc.data()), enc.size());
    }));
    FUZZ_CHECK(msgpack_encode(w) == enc);
    if (!s.nan)  // NaN != NaN under structural equality
        FUZZ_CHECK(w == v);
    return 0;
}
