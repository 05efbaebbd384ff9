// A small MessagePack value and codec for control messages.
//
// Contract: MsgValue is a plain value type (copyable, no sharing, not
// thread-safe to mutate concurrently). Maps keep insertion order and may hold
// duplicate keys; lookups return the first match. Accessors that find the wrong
// type or a missing key throw Error(PCCL_ERR_PROTOCOL) naming what was
// expected, so message handlers can read fields without checking types first.
// msgpack_decode is strict and safe on hostile input: it never reads past n,
// allocates no more than the input can describe, and throws
// Error(PCCL_ERR_PROTOCOL, "msgpack: ...") on anything malformed.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace pccl {

class MsgValue {
public:
    enum class Type { Nil, Bool, Int, Uint, Double, Str, Bin, Array, Map };
    using Array = std::vector<MsgValue>;
    using Map = std::vector<std::pair<MsgValue, MsgValue>>;

    // Implicit constructors keep building terse. Every built-in integer type
    // has an exact overload so size_t, int64_t, unsigned etc. never clash;
    // signed types become Int, unsigned types Uint.
    MsgValue() = default;
    MsgValue(std::nullptr_t) {}
    MsgValue(bool v) : type_(Type::Bool), bool_(v) {}
    MsgValue(int v) : MsgValue(static_cast<long long>(v)) {}
    MsgValue(long v) : MsgValue(static_cast<long long>(v)) {}
    MsgValue(long long v) : type_(Type::Int), int_(static_cast<int64_t>(v)) {}
    MsgValue(unsigned v) : MsgValue(static_cast<unsigned long long>(v)) {}
    MsgValue(unsigned long v) : MsgValue(static_cast<unsigned long long>(v)) {}
    MsgValue(unsigned long long v) : type_(Type::Uint), uint_(static_cast<uint64_t>(v)) {}
    MsgValue(double v) : type_(Type::Double), double_(v) {}
    MsgValue(float v) : MsgValue(static_cast<double>(v)) {}
    MsgValue(const char *s) : type_(Type::Str), str_(s) {}
    MsgValue(std::string s) : type_(Type::Str), str_(std::move(s)) {}
    MsgValue(std::string_view s) : type_(Type::Str), str_(s) {}

    static MsgValue binary(std::string bytes);
    static MsgValue array(Array items);
    static MsgValue map(Map entries);

    Type type() const { return type_; }
    static const char *type_name(Type t);

    bool is_nil() const { return type_ == Type::Nil; }
    bool as_bool() const;
    int64_t as_int() const;        // Int, or Uint that fits in int64
    uint64_t as_uint() const;      // Uint, or non-negative Int
    double as_double() const;      // Double, Int or Uint
    const std::string &as_str() const;
    const std::string &as_bin() const;  // Bin or Str
    const Array &as_array() const;
    const Map &as_map() const;
    Array &as_array();
    Map &as_map();

    // Map lookup by string key. at() throws "missing field 'key'".
    const MsgValue &at(std::string_view key) const;
    const MsgValue *find(std::string_view key) const;
    // Element count of an Array or Map, byte count of a Str or Bin.
    size_t size() const;

    // Structural equality; Int and Uint holding the same number compare equal.
    bool operator==(const MsgValue &other) const;
    bool operator!=(const MsgValue &other) const { return !(*this == other); }

private:
    [[noreturn]] void wrong_type(const char *expected) const;

    Type type_ = Type::Nil;
    bool bool_ = false;
    int64_t int_ = 0;
    uint64_t uint_ = 0;
    double double_ = 0;
    std::string str_;  // Str and Bin
    Array array_;
    Map map_;
};

// Smallest encoding of each value: positive numbers (Int or Uint) use the
// fixint/uint family, negative ones the int family, Str the str family, Bin
// the bin family, Double float64.
std::string msgpack_encode(const MsgValue &value);

// Decodes exactly one value spanning all n bytes. Accepts every type but ext
// (and timestamps); float32 becomes Double. Nesting deeper than
// kMsgpackMaxDepth containers, truncation, trailing bytes, lengths beyond
// the input, or a decoded tree that would take more than `max_memory` bytes
// (sizeof(MsgValue) per value plus the str/bin bytes: a 1-byte nil costs
// ~100x its size once decoded, so the input size alone does not bound memory)
// throw Error(PCCL_ERR_PROTOCOL, "msgpack: ...") before that memory is taken.
constexpr int kMsgpackMaxDepth = 32;
constexpr size_t kMsgpackMaxMemory = size_t(64) << 20;
MsgValue msgpack_decode(const uint8_t *data, size_t n, size_t max_memory = kMsgpackMaxMemory);

}  // namespace pccl
