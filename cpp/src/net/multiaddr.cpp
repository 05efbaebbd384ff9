#include "net/multiaddr.h"

#include <cstring>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>

#include "common/error.h"
#include "net/peer_id.h"

namespace pccl {
namespace {

enum class Kind { Ip4, Ip6, Port, Dns, P2p, Flag, U64 };

struct Protocol {
    uint32_t code;
    const char *name;
    Kind kind;
};

constexpr uint32_t kP2p = 421;
constexpr uint32_t kCircuit = 290;
constexpr uint32_t kTcp = 6;
constexpr uint32_t kMemory = 777;  // libp2p's in-process transport: a u64, 8 bytes big-endian

constexpr Protocol kProtocols[] = {
    {4, "ip4", Kind::Ip4},     {6, "tcp", Kind::Port},     {273, "udp", Kind::Port},
    {41, "ip6", Kind::Ip6},    {53, "dns", Kind::Dns},     {54, "dns4", Kind::Dns},
    {55, "dns6", Kind::Dns},   {kP2p, "p2p", Kind::P2p},   {kCircuit, "p2p-circuit", Kind::Flag},
    {kMemory, "memory", Kind::U64},
};

const Protocol *by_name(std::string_view name) {
    if (name == "ipfs") name = "p2p";  // legacy alias, printed as p2p
    for (const auto &p : kProtocols)
        if (name == p.name) return &p;
    return nullptr;
}

const Protocol *by_code(uint64_t code) {
    for (const auto &p : kProtocols)
        if (code == p.code) return &p;
    return nullptr;
}

void put_varint(std::string &out, uint64_t v) {
    while (v >= 0x80) {
        out.push_back(char(uint8_t(v) | 0x80));
        v >>= 7;
    }
    out.push_back(char(v));
}

// Problems are reported as plain strings and wrapped with the text or binary
// context by the caller.
struct Bad {
    std::string why;
};

// A DNS name as the package's IDNA check would accept it, minus the Unicode
// tables: labels of 1..63 bytes of letters, digits, '-' (not first or last) or
// UTF-8 sequences, 253 bytes at most, one optional trailing dot.
void check_dns(const std::string &name) {
    if (name.empty()) throw Bad{"empty dns name"};
    std::string_view rest(name);
    if (rest.back() == '.') rest.remove_suffix(1);
    if (rest.empty() || rest.size() > 253) throw Bad{"bad dns name '" + name + "': length"};
    size_t start = 0;
    while (start <= rest.size()) {
        size_t dot = rest.find('.', start);
        if (dot == std::string_view::npos) dot = rest.size();
        std::string_view label = rest.substr(start, dot - start);
        if (label.empty() || label.size() > 63)
            throw Bad{"bad dns name '" + name + "': empty or over-long label"};
        if (label.front() == '-' || label.back() == '-')
            throw Bad{"bad dns name '" + name + "': label starts or ends with '-'"};
        for (size_t i = 0; i < label.size(); ++i) {
            unsigned char c = static_cast<unsigned char>(label[i]);
            if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                c == '-')
                continue;
            // UTF-8 multi-byte sequence: lead byte then continuation bytes.
            const int follow = (c & 0xe0) == 0xc0 ? 1 : (c & 0xf0) == 0xe0 ? 2 : (c & 0xf8) == 0xf0 ? 3 : 0;
            bool ok = c >= 0xc2 && c <= 0xf4 && follow > 0 && i + size_t(follow) < label.size();
            for (int k = 1; ok && k <= follow; ++k)
                ok = (static_cast<unsigned char>(label[i + size_t(k)]) & 0xc0) == 0x80;
            if (!ok) throw Bad{"bad dns name '" + name + "': character not allowed"};
            i += size_t(follow);
        }
        start = dot + 1;
    }
}

// Text value -> binary value (without the length prefix).
std::string value_to_bytes(const Protocol &p, std::string_view text) {
    switch (p.kind) {
        case Kind::Ip4: {
            std::string s(text);
            in_addr a{};
            if (inet_pton(AF_INET, s.c_str(), &a) != 1) throw Bad{"bad ip4 address '" + s + "'"};
            return std::string(reinterpret_cast<const char *>(&a), 4);
        }
        case Kind::Ip6: {
            std::string s(text);
            in6_addr a{};
            if (inet_pton(AF_INET6, s.c_str(), &a) != 1) throw Bad{"bad ip6 address '" + s + "'"};
            return std::string(reinterpret_cast<const char *>(&a), 16);
        }
        case Kind::Port: {
            if (text.empty() || text.size() > 5)
                throw Bad{"bad " + std::string(p.name) + " port '" + std::string(text) + "'"};
            uint32_t v = 0;
            for (char c : text) {
                if (c < '0' || c > '9')
                    throw Bad{"bad " + std::string(p.name) + " port '" + std::string(text) + "'"};
                v = v * 10 + uint32_t(c - '0');
            }
            if (v > 65535)
                throw Bad{std::string(p.name) + " port " + std::string(text) + " out of range"};
            return std::string{char(v >> 8), char(v & 0xff)};
        }
        case Kind::Dns: {
            std::string s(text);
            check_dns(s);
            return s;
        }
        case Kind::P2p: {
            std::string mh;
            try {
                mh = base58_decode(text);
            } catch (const Error &) {
                throw Bad{"bad peer id '" + std::string(text) + "': not base58btc"};
            }
            if (!is_peer_id_multihash(reinterpret_cast<const uint8_t *>(mh.data()), mh.size()))
                throw Bad{"bad peer id '" + std::string(text) +
                          "': not a sha2-256 or identity multihash"};
            return mh;
        }
        case Kind::U64: {
            if (text.empty() || text.size() > 20) throw Bad{"bad memory id '" + std::string(text) + "'"};
            uint64_t v = 0;
            for (char c : text) {
                if (c < '0' || c > '9') throw Bad{"bad memory id '" + std::string(text) + "'"};
                const uint64_t d = uint64_t(c - '0');
                if (v > (UINT64_MAX - d) / 10) throw Bad{"memory id " + std::string(text) + " out of range"};
                v = v * 10 + d;
            }
            std::string out(8, '\0');
            for (int i = 7; i >= 0; --i, v >>= 8) out[size_t(i)] = char(v & 0xff);
            return out;
        }
        case Kind::Flag: return {};
    }
    return {};
}

// Binary value -> canonical text value.
std::string value_to_text(const Protocol &p, const std::string &b) {
    switch (p.kind) {
        case Kind::Ip4:
        case Kind::Ip6: {
            char buf[INET6_ADDRSTRLEN];
            const int af = p.kind == Kind::Ip4 ? AF_INET : AF_INET6;
            if (!inet_ntop(af, b.data(), buf, sizeof(buf)))
                throw Bad{std::string("cannot print ") + p.name + " address"};
            return buf;
        }
        case Kind::Port: {
            const auto *u = reinterpret_cast<const uint8_t *>(b.data());
            return std::to_string(unsigned(u[0]) << 8 | u[1]);
        }
        case Kind::Dns: check_dns(b); return b;
        case Kind::P2p:
            if (!is_peer_id_multihash(reinterpret_cast<const uint8_t *>(b.data()), b.size()))
                throw Bad{"bad peer id: not a sha2-256 or identity multihash"};
            return base58_encode(reinterpret_cast<const uint8_t *>(b.data()), b.size());
        case Kind::U64: {
            uint64_t v = 0;
            for (unsigned char c : b) v = v << 8 | c;
            return std::to_string(v);
        }
        case Kind::Flag: return {};
    }
    return {};
}

size_t fixed_size(Kind k) {
    switch (k) {
        case Kind::Ip4: return 4;
        case Kind::Ip6: return 16;
        case Kind::Port: return 2;
        case Kind::Flag: return 0;
        case Kind::U64: return 8;
        default: return SIZE_MAX;  // length-prefixed
    }
}

MultiaddrPart make_part(const Protocol &p, std::string value) {
    return MultiaddrPart{p.code, p.name, std::move(value)};
}

}  // namespace

Multiaddr Multiaddr::parse(std::string_view text) {
    Multiaddr out;
    try {
        if (text.empty() || text == "/") return out;
        if (text.front() != '/') throw Bad{"must start with '/'"};
        std::string_view rest = text.substr(1);
        if (!rest.empty() && rest.back() == '/') rest.remove_suffix(1);  // one trailing '/'
        std::vector<std::string_view> tokens;
        for (size_t start = 0;;) {
            size_t slash = rest.find('/', start);
            tokens.push_back(rest.substr(start, slash == std::string_view::npos ? slash : slash - start));
            if (slash == std::string_view::npos) break;
            start = slash + 1;
        }
        for (size_t i = 0; i < tokens.size(); ++i) {
            if (tokens[i].empty()) throw Bad{"empty protocol name"};
            const Protocol *p = by_name(tokens[i]);
            if (!p) throw Bad{"unknown protocol '" + std::string(tokens[i]) + "'"};
            if (p->kind == Kind::Flag) {
                out.parts_.push_back(make_part(*p, {}));
                continue;
            }
            if (i + 1 >= tokens.size() || tokens[i + 1].empty())
                throw Bad{std::string("missing value for ") + p->name};
            std::string_view value = tokens[++i];
            // Canonicalise by a binary round trip (e.g. ip6 compression).
            out.parts_.push_back(make_part(*p, value_to_text(*p, value_to_bytes(*p, value))));
        }
    } catch (const Bad &bad) {
        fail(PCCL_ERR_INVALID_ARGUMENT,
             "invalid multiaddr '" + std::string(text) + "': " + bad.why);
    }
    return out;
}

Multiaddr Multiaddr::from_bytes(const uint8_t *data, size_t n) {
    Multiaddr out;
    size_t pos = 0;
    // Unsigned LEB128, at most 5 bytes (32 bits): codes and lengths.
    auto varint = [&](const char *what) -> uint64_t {
        uint64_t v = 0;
        for (int shift = 0; shift < 35; shift += 7) {
            if (pos >= n) throw Bad{std::string("bad varint (truncated ") + what + ")"};
            uint8_t b = data[pos++];
            v |= uint64_t(b & 0x7f) << shift;
            if (!(b & 0x80)) {
                if (v > 0xffffffffULL) break;
                return v;
            }
        }
        throw Bad{std::string("bad varint (") + what + " too large)"};
    };
    try {
        while (pos < n) {
            const size_t at = pos;
            uint64_t code = varint("protocol code");
            const Protocol *p = by_code(code);
            if (!p)
                throw Bad{"unknown protocol code " + std::to_string(code) + " at offset " +
                          std::to_string(at)};
            size_t len = fixed_size(p->kind);
            if (len == SIZE_MAX) len = size_t(varint("value length"));
            if (len > n - pos)
                throw Bad{std::string("truncated ") + p->name + " value: needs " +
                          std::to_string(len) + " bytes, " + std::to_string(n - pos) + " left"};
            std::string value(reinterpret_cast<const char *>(data + pos), len);
            pos += len;
            out.parts_.push_back(make_part(*p, value_to_text(*p, value)));
        }
    } catch (const Bad &bad) {
        fail(PCCL_ERR_PROTOCOL, "invalid binary multiaddr: " + bad.why);
    }
    return out;
}

std::string Multiaddr::to_string() const {
    std::string out;
    for (const auto &part : parts_) {
        out += '/';
        out += part.name;
        if (!part.value.empty()) {
            out += '/';
            out += part.value;
        }
    }
    return out;
}

std::string Multiaddr::to_bytes() const {
    std::string out;
    for (const auto &part : parts_) {
        const Protocol *p = by_code(part.code);
        PCCL_ASSERT(p != nullptr);
        put_varint(out, part.code);
        std::string value = value_to_bytes(*p, part.value);  // valid by construction
        if (fixed_size(p->kind) == SIZE_MAX) put_varint(out, value.size());
        out += value;
    }
    return out;
}

std::optional<std::string> Multiaddr::peer_id() const {
    for (auto it = parts_.rbegin(); it != parts_.rend(); ++it)
        if (it->code == kP2p) return it->value;
    return std::nullopt;
}

bool Multiaddr::is_relayed() const {
    for (const auto &part : parts_)
        if (part.code == kCircuit) return true;
    return false;
}

Multiaddr Multiaddr::with_peer_id(const std::string &id) const {
    if (!is_valid_peer_id(id))
        fail(PCCL_ERR_INVALID_ARGUMENT, "invalid peer id '" + id + "'");
    Multiaddr out = without_peer_id();
    out.parts_.push_back(make_part(*by_code(kP2p), id));
    return out;
}

Multiaddr Multiaddr::without_peer_id() const {
    Multiaddr out = *this;
    if (!out.parts_.empty() && out.parts_.back().code == kP2p) out.parts_.pop_back();
    return out;
}

std::optional<uint64_t> Multiaddr::memory_id() const {
    for (const auto &part : parts_)
        if (part.code == kMemory) return std::stoull(part.value);
    return std::nullopt;
}

std::optional<Multiaddr::TcpTarget> Multiaddr::tcp_target() const {
    for (size_t i = 0; i + 1 < parts_.size(); ++i) {
        const auto &host = parts_[i];
        if (parts_[i + 1].code != kTcp) continue;
        int family;
        bool is_dns = false;
        switch (host.code) {
            case 4: family = AF_INET; break;
            case 41: family = AF_INET6; break;
            case 53: family = AF_UNSPEC; is_dns = true; break;
            case 54: family = AF_INET; is_dns = true; break;
            case 55: family = AF_INET6; is_dns = true; break;
            default: continue;
        }
        return TcpTarget{host.value, uint16_t(std::stoul(parts_[i + 1].value)), family, is_dns};
    }
    return std::nullopt;
}

}  // namespace pccl
