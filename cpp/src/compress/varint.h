// Unsigned LEB128 varints and a bounds-checked byte reader for the compressed
// wire formats. Decoding never reads past the end: malformed input throws
// pccl::Error(PCCL_ERR_PROTOCOL) naming what was wrong.
#pragma once

#include <cstdint>
#include <cstring>
#include <string>
#include <string_view>

#include "common/error.h"

namespace pccl::compress {

inline void put_varint(std::string &out, uint64_t v) {
    while (v >= 0x80) {
        out.push_back(static_cast<char>((v & 0x7f) | 0x80));
        v >>= 7;
    }
    out.push_back(static_cast<char>(v));
}

inline size_t varint_size(uint64_t v) {
    size_t n = 1;
    while (v >= 0x80) {
        v >>= 7;
        ++n;
    }
    return n;
}

inline void put_u8(std::string &out, uint8_t v) { out.push_back(static_cast<char>(v)); }

inline void put_f32(std::string &out, float v) {  // little-endian hosts only (x86-64, arm64)
    char b[4];
    std::memcpy(b, &v, 4);
    out.append(b, 4);
}

inline void put_u16(std::string &out, uint16_t v) {
    out.push_back(static_cast<char>(v & 0xff));
    out.push_back(static_cast<char>(v >> 8));
}

class ByteReader {
public:
    ByteReader(std::string_view data, const char *what) : data_(data), what_(what) {}

    size_t remaining() const { return data_.size() - pos_; }
    size_t position() const { return pos_; }

    [[noreturn]] void malformed(const std::string &why) const {
        fail(PCCL_ERR_PROTOCOL, std::string(what_) + ": " + why + " (at byte " +
                                    std::to_string(pos_) + " of " + std::to_string(data_.size()) + ")");
    }

    uint8_t u8() {
        if (remaining() < 1)
            malformed("truncated");
        return static_cast<uint8_t>(data_[pos_++]);
    }

    uint16_t u16() {
        if (remaining() < 2)
            malformed("truncated");
        const uint16_t v = static_cast<uint16_t>(static_cast<uint8_t>(data_[pos_]) |
                                                 (static_cast<uint8_t>(data_[pos_ + 1]) << 8));
        pos_ += 2;
        return v;
    }

    float f32() {
        if (remaining() < 4)
            malformed("truncated");
        float v;
        std::memcpy(&v, data_.data() + pos_, 4);
        pos_ += 4;
        return v;
    }

    uint64_t varint() {
        uint64_t v = 0;
        for (int shift = 0; shift < 64; shift += 7) {
            if (remaining() < 1)
                malformed("truncated varint");
            const uint8_t b = static_cast<uint8_t>(data_[pos_++]);
            if (shift == 63 && (b & 0xfe))
                malformed("varint overflows 64 bits");
            v |= static_cast<uint64_t>(b & 0x7f) << shift;
            if (!(b & 0x80))
                return v;
        }
        malformed("varint longer than 10 bytes");
    }

    std::string_view bytes(size_t n) {
        if (remaining() < n)
            malformed("truncated");
        std::string_view v = data_.substr(pos_, n);
        pos_ += n;
        return v;
    }

    void expect_end() const {
        if (remaining() != 0)
            malformed(std::to_string(remaining()) + " trailing bytes");
    }

private:
    std::string_view data_;
    const char *what_;
    size_t pos_ = 0;
};

}  // namespace pccl::compress
