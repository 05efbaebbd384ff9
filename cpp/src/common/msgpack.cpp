#include "common/msgpack.h"

#include <cstring>

#include "common/error.h"

namespace pccl {

// ---- value -----------------------------------------------------------------

MsgValue MsgValue::binary(std::string bytes) {
    MsgValue v(std::move(bytes));
    v.type_ = Type::Bin;
    return v;
}

MsgValue MsgValue::array(Array items) {
    MsgValue v;
    v.type_ = Type::Array;
    v.array_ = std::move(items);
    return v;
}

MsgValue MsgValue::map(Map entries) {
    MsgValue v;
    v.type_ = Type::Map;
    v.map_ = std::move(entries);
    return v;
}

const char *MsgValue::type_name(Type t) {
    switch (t) {
        case Type::Nil: return "nil";
        case Type::Bool: return "bool";
        case Type::Int: return "int";
        case Type::Uint: return "uint";
        case Type::Double: return "double";
        case Type::Str: return "str";
        case Type::Bin: return "bin";
        case Type::Array: return "array";
        case Type::Map: return "map";
    }
    return "?";
}

void MsgValue::wrong_type(const char *expected) const {
    fail(PCCL_ERR_PROTOCOL,
         std::string("msgpack value: expected ") + expected + ", got " + type_name(type_));
}

bool MsgValue::as_bool() const {
    if (type_ != Type::Bool) wrong_type("bool");
    return bool_;
}

int64_t MsgValue::as_int() const {
    if (type_ == Type::Int) return int_;
    if (type_ == Type::Uint) {
        if (uint_ > uint64_t(INT64_MAX))
            fail(PCCL_ERR_PROTOCOL, "msgpack value: uint " + std::to_string(uint_) +
                                        " does not fit in int64");
        return int64_t(uint_);
    }
    wrong_type("int");
}

uint64_t MsgValue::as_uint() const {
    if (type_ == Type::Uint) return uint_;
    if (type_ == Type::Int) {
        if (int_ < 0)
            fail(PCCL_ERR_PROTOCOL,
                 "msgpack value: expected uint, got negative int " + std::to_string(int_));
        return uint64_t(int_);
    }
    wrong_type("uint");
}

double MsgValue::as_double() const {
    if (type_ == Type::Double) return double_;
    if (type_ == Type::Int) return double(int_);
    if (type_ == Type::Uint) return double(uint_);
    wrong_type("double");
}

const std::string &MsgValue::as_str() const {
    if (type_ != Type::Str) wrong_type("str");
    return str_;
}

const std::string &MsgValue::as_bin() const {
    if (type_ != Type::Bin && type_ != Type::Str) wrong_type("bin");
    return str_;
}

const MsgValue::Array &MsgValue::as_array() const {
    if (type_ != Type::Array) wrong_type("array");
    return array_;
}

const MsgValue::Map &MsgValue::as_map() const {
    if (type_ != Type::Map) wrong_type("map");
    return map_;
}

MsgValue::Array &MsgValue::as_array() {
    if (type_ != Type::Array) wrong_type("array");
    return array_;
}

MsgValue::Map &MsgValue::as_map() {
    if (type_ != Type::Map) wrong_type("map");
    return map_;
}

const MsgValue *MsgValue::find(std::string_view key) const {
    for (const auto &[k, v] : as_map())
        if (k.type_ == Type::Str && k.str_ == key) return &v;
    return nullptr;
}

const MsgValue &MsgValue::at(std::string_view key) const {
    const MsgValue *v = find(key);
    if (!v) fail(PCCL_ERR_PROTOCOL, "msgpack value: missing field '" + std::string(key) + "'");
    return *v;
}

size_t MsgValue::size() const {
    switch (type_) {
        case Type::Str:
        case Type::Bin: return str_.size();
        case Type::Array: return array_.size();
        case Type::Map: return map_.size();
        default: wrong_type("array, map, str or bin");
    }
}

bool MsgValue::operator==(const MsgValue &o) const {
    const bool self_int = type_ == Type::Int || type_ == Type::Uint;
    const bool other_int = o.type_ == Type::Int || o.type_ == Type::Uint;
    if (self_int && other_int) {
        const bool self_neg = type_ == Type::Int && int_ < 0;
        const bool other_neg = o.type_ == Type::Int && o.int_ < 0;
        if (self_neg || other_neg) return self_neg && other_neg && int_ == o.int_;
        return as_uint() == o.as_uint();
    }
    if (type_ != o.type_) return false;
    switch (type_) {
        case Type::Nil: return true;
        case Type::Bool: return bool_ == o.bool_;
        case Type::Double: return double_ == o.double_;
        case Type::Str:
        case Type::Bin: return str_ == o.str_;
        case Type::Array: return array_ == o.array_;
        case Type::Map: return map_ == o.map_;
        default: return false;
    }
}

// ---- encoder ---------------------------------------------------------------

namespace {

void put_be(std::string &out, uint64_t v, int bytes) {
    for (int i = bytes - 1; i >= 0; --i) out.push_back(char(uint8_t(v >> (8 * i))));
}

void put_head(std::string &out, uint8_t tag, uint64_t v, int bytes) {
    out.push_back(char(tag));
    put_be(out, v, bytes);
}

void encode_uint(std::string &out, uint64_t v) {
    if (v < 0x80) out.push_back(char(v));
    else if (v <= 0xff) put_head(out, 0xcc, v, 1);
    else if (v <= 0xffff) put_head(out, 0xcd, v, 2);
    else if (v <= 0xffffffffULL) put_head(out, 0xce, v, 4);
    else put_head(out, 0xcf, v, 8);
}

void encode_int(std::string &out, int64_t v) {
    if (v >= 0) return encode_uint(out, uint64_t(v));
    if (v >= -32) out.push_back(char(uint8_t(0xe0 | (v + 32))));
    else if (v >= INT8_MIN) put_head(out, 0xd0, uint64_t(v), 1);
    else if (v >= INT16_MIN) put_head(out, 0xd1, uint64_t(v), 2);
    else if (v >= INT32_MIN) put_head(out, 0xd2, uint64_t(v), 4);
    else put_head(out, 0xd3, uint64_t(v), 8);
}

// tags: {fix base (0 = none), fix limit, 8-bit, 16-bit, 32-bit}
void encode_len(std::string &out, size_t n, uint8_t fix, size_t fix_limit, uint8_t t8,
                uint8_t t16, uint8_t t32) {
    if (fix && n < fix_limit) out.push_back(char(fix | uint8_t(n)));
    else if (t8 && n <= 0xff) put_head(out, t8, n, 1);
    else if (n <= 0xffff) put_head(out, t16, n, 2);
    else if (n <= 0xffffffffULL) put_head(out, t32, n, 4);
    else fail(PCCL_ERR_INVALID_ARGUMENT, "msgpack: value of " + std::to_string(n) +
                                             " elements/bytes exceeds the 2^32-1 limit");
}

void encode_into(std::string &out, const MsgValue &v) {
    using T = MsgValue::Type;
    switch (v.type()) {
        case T::Nil: out.push_back(char(0xc0)); break;
        case T::Bool: out.push_back(char(v.as_bool() ? 0xc3 : 0xc2)); break;
        case T::Int: encode_int(out, v.as_int()); break;
        case T::Uint: encode_uint(out, v.as_uint()); break;
        case T::Double: {
            double d = v.as_double();
            uint64_t bits;
            std::memcpy(&bits, &d, sizeof(bits));
            put_head(out, 0xcb, bits, 8);
            break;
        }
        case T::Str: {
            const std::string &s = v.as_str();
            encode_len(out, s.size(), 0xa0, 32, 0xd9, 0xda, 0xdb);
            out += s;
            break;
        }
        case T::Bin: {
            const std::string &s = v.as_bin();
            encode_len(out, s.size(), 0, 0, 0xc4, 0xc5, 0xc6);
            out += s;
            break;
        }
        case T::Array: {
            const auto &items = v.as_array();
            encode_len(out, items.size(), 0x90, 16, 0, 0xdc, 0xdd);
            for (const auto &item : items) encode_into(out, item);
            break;
        }
        case T::Map: {
            const auto &entries = v.as_map();
            encode_len(out, entries.size(), 0x80, 16, 0, 0xde, 0xdf);
            for (const auto &[key, value] : entries) {
                encode_into(out, key);
                encode_into(out, value);
            }
            break;
        }
    }
}

// ---- decoder ---------------------------------------------------------------

class Decoder {
public:
    Decoder(const uint8_t *p, size_t n, size_t max_memory)
        : begin_(p), p_(p), end_(p + n), limit_(max_memory), budget_(max_memory) {}

    MsgValue value(int depth) {
        charge(1, sizeof(MsgValue));
        const uint8_t tag = byte();
        if (tag <= 0x7f) return MsgValue(uint64_t(tag));
        if (tag >= 0xe0) return MsgValue(int64_t(int8_t(tag)));
        if ((tag & 0xe0) == 0xa0) return str(tag & 0x1f);
        if ((tag & 0xf0) == 0x90) return array(tag & 0x0f, depth);
        if ((tag & 0xf0) == 0x80) return map(tag & 0x0f, depth);
        switch (tag) {
            case 0xc0: return MsgValue();
            case 0xc2: return MsgValue(false);
            case 0xc3: return MsgValue(true);
            case 0xc4: return bin(be(1));
            case 0xc5: return bin(be(2));
            case 0xc6: return bin(be(4));
            case 0xca: {
                uint32_t bits = uint32_t(be(4));
                float f;
                std::memcpy(&f, &bits, sizeof(f));
                return MsgValue(double(f));
            }
            case 0xcb: {
                uint64_t bits = be(8);
                double d;
                std::memcpy(&d, &bits, sizeof(d));
                return MsgValue(d);
            }
            case 0xcc: return MsgValue(be(1));
            case 0xcd: return MsgValue(be(2));
            case 0xce: return MsgValue(be(4));
            case 0xcf: return MsgValue(be(8));
            case 0xd0: return MsgValue(int64_t(int8_t(be(1))));
            case 0xd1: return MsgValue(int64_t(int16_t(be(2))));
            case 0xd2: return MsgValue(int64_t(int32_t(be(4))));
            case 0xd3: return MsgValue(int64_t(be(8)));
            case 0xd9: return str(be(1));
            case 0xda: return str(be(2));
            case 0xdb: return str(be(4));
            case 0xdc: return array(be(2), depth);
            case 0xdd: return array(be(4), depth);
            case 0xde: return map(be(2), depth);
            case 0xdf: return map(be(4), depth);
            case 0xc7: case 0xc8: case 0xc9:
            case 0xd4: case 0xd5: case 0xd6: case 0xd7: case 0xd8:
                fail(PCCL_ERR_PROTOCOL, "msgpack: ext types (incl. timestamps) are not supported "
                                        "(tag " + hex(tag) + " at offset " + offset(-1) + ")");
            default:
                fail(PCCL_ERR_PROTOCOL, "msgpack: invalid tag " + hex(tag) + " at offset " +
                                            offset(-1));
        }
    }

    bool done() const { return p_ == end_; }
    size_t remaining() const { return size_t(end_ - p_); }

private:
    static std::string hex(uint8_t b) {
        const char *digits = "0123456789abcdef";
        return std::string("0x") + digits[b >> 4] + digits[b & 15];
    }
    std::string offset(long delta) const {
        return std::to_string(long(p_ - begin_) + delta);
    }

    void need(uint64_t n, const char *what) {
        if (n > remaining())
            fail(PCCL_ERR_PROTOCOL, std::string("msgpack: truncated input: ") + what + " needs " +
                                        std::to_string(n) + " bytes, " +
                                        std::to_string(remaining()) + " left at offset " +
                                        offset(0));
    }
    uint8_t byte() {
        need(1, "value");
        return *p_++;
    }
    uint64_t be(int bytes) {
        need(uint64_t(bytes), "header");
        uint64_t v = 0;
        for (int i = 0; i < bytes; ++i) v = (v << 8) | *p_++;
        return v;
    }
    // Takes `count` x `each` bytes of the decoded tree's memory budget
    // (charged before the memory is reserved).
    void charge(uint64_t count, uint64_t each) {
        if (count > budget_ / each)
            fail(PCCL_ERR_PROTOCOL, "msgpack: the decoded value would exceed the " +
                                        std::to_string(limit_) + " byte limit (offset " + offset(0) + ")");
        budget_ -= count * each;
    }
    // A container's elements are reserved before they are decoded: the
    // reservation must fit in what is left, but each element charges its own
    // sizeof when decoded, so the check takes nothing yet.
    void check_reserve(uint64_t count, uint64_t each) {
        charge(count, each);
        budget_ += count * each;
    }

    std::string take(uint64_t n, const char *what) {
        need(n, what);
        charge(n, 1);
        std::string s(reinterpret_cast<const char *>(p_), size_t(n));
        p_ += n;
        return s;
    }
    MsgValue str(uint64_t n) { return MsgValue(take(n, "str")); }
    MsgValue bin(uint64_t n) { return MsgValue::binary(take(n, "bin")); }

    void enter(int depth) {
        if (depth >= kMsgpackMaxDepth)
            fail(PCCL_ERR_PROTOCOL, "msgpack: nesting deeper than " +
                                        std::to_string(kMsgpackMaxDepth) + " levels");
    }
    // Every element takes at least one byte, so a count above the remaining
    // bytes is a lie: refuse before reserving memory for it.
    MsgValue array(uint64_t n, int depth) {
        enter(depth);
        if (n > remaining())
            fail(PCCL_ERR_PROTOCOL, "msgpack: array of " + std::to_string(n) +
                                        " elements exceeds the " + std::to_string(remaining()) +
                                        " bytes left");
        check_reserve(n, sizeof(MsgValue));
        MsgValue::Array items;
        items.reserve(size_t(n));
        for (uint64_t i = 0; i < n; ++i) items.push_back(value(depth + 1));
        return MsgValue::array(std::move(items));
    }
    MsgValue map(uint64_t n, int depth) {
        enter(depth);
        if (n > remaining() / 2)
            fail(PCCL_ERR_PROTOCOL, "msgpack: map of " + std::to_string(n) +
                                        " entries exceeds the " + std::to_string(remaining()) +
                                        " bytes left");
        check_reserve(n, 2 * sizeof(MsgValue));
        MsgValue::Map entries;
        entries.reserve(size_t(n));
        for (uint64_t i = 0; i < n; ++i) {
            MsgValue key = value(depth + 1);
            MsgValue val = value(depth + 1);
            entries.emplace_back(std::move(key), std::move(val));
        }
        return MsgValue::map(std::move(entries));
    }

    const uint8_t *begin_;
    const uint8_t *p_;
    const uint8_t *end_;
    const size_t limit_;
    size_t budget_;  // bytes of decoded tree still allowed
};

}  // namespace

std::string msgpack_encode(const MsgValue &value) {
    std::string out;
    encode_into(out, value);
    return out;
}

MsgValue msgpack_decode(const uint8_t *data, size_t n, size_t max_memory) {
    if (n == 0) fail(PCCL_ERR_PROTOCOL, "msgpack: empty input");
    Decoder dec(data, n, max_memory);
    MsgValue v = dec.value(0);
    if (!dec.done())
        fail(PCCL_ERR_PROTOCOL, "msgpack: " + std::to_string(dec.remaining()) +
                                    " trailing bytes after the value");
    return v;
}

}  // namespace pccl
