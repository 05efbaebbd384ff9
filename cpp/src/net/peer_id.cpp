#include "net/peer_id.h"

#include <cerrno>
#include <cstring>
#include <vector>

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/crypto.h"
#include "common/error.h"

namespace pccl {
namespace {

constexpr char kAlphabet[] = "123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz";
constexpr char kKeyMagic[] = "pccl-key-v1 ";
constexpr size_t kKeyFileMax = 4096;

int alphabet_index(char c) {
    const char *hit = std::strchr(kAlphabet, c);
    return (c != '\0' && hit) ? int(hit - kAlphabet) : -1;
}

int hex_value(char c) {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

std::string errno_text() { return std::strerror(errno); }

// Reads up to kKeyFileMax + 1 bytes; nullopt-like false if the file is absent.
bool read_small_file(const std::string &path, std::string &out) {
    int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        if (errno == ENOENT) return false;
        fail(PCCL_ERR_IO, "cannot open key file '" + path + "': " + errno_text());
    }
    out.clear();
    char buf[512];
    while (out.size() <= kKeyFileMax) {
        ssize_t got = ::read(fd, buf, sizeof(buf));
        if (got < 0) {
            if (errno == EINTR) continue;
            std::string why = errno_text();
            ::close(fd);
            fail(PCCL_ERR_IO, "cannot read key file '" + path + "': " + why);
        }
        if (got == 0) break;
        out.append(buf, size_t(got));
    }
    ::close(fd);
    return true;
}

Identity parse_key_file(const std::string &path, const std::string &text) {
    const size_t magic_len = sizeof(kKeyMagic) - 1;
    std::string body = text;
    if (!body.empty() && body.back() == '\n') body.pop_back();
    auto bad = [&](const std::string &why) -> Identity {
        fail(PCCL_ERR_INVALID_ARGUMENT, "malformed key file '" + path + "': " + why +
                                            " (expected \"pccl-key-v1 <64 hex chars>\\n\")");
    };
    if (body.compare(0, magic_len, kKeyMagic) != 0) return bad("missing 'pccl-key-v1 ' header");
    if (body.size() != magic_len + 64)
        return bad("key has " + std::to_string(body.size() - magic_len) + " characters, not 64");
    Identity id{};
    for (size_t i = 0; i < 32; ++i) {
        int hi = hex_value(body[magic_len + 2 * i]);
        int lo = hex_value(body[magic_len + 2 * i + 1]);
        if (hi < 0 || lo < 0) return bad("non-hex character in key");
        id.secret[i] = uint8_t(hi << 4 | lo);
    }
    id.peer_id = peer_id_from_secret(id.secret);
    return id;
}

void write_all(int fd, const std::string &data, const std::string &path) {
    size_t done = 0;
    while (done < data.size()) {
        ssize_t put = ::write(fd, data.data() + done, data.size() - done);
        if (put < 0) {
            if (errno == EINTR) continue;
            fail(PCCL_ERR_IO, "cannot write key file '" + path + "': " + errno_text());
        }
        done += size_t(put);
    }
}

}  // namespace

std::string base58_encode(const uint8_t *data, size_t n) {
    size_t zeros = 0;
    while (zeros < n && data[zeros] == 0) ++zeros;
    // Base-58 digits, least significant first; log(256)/log(58) < 1.37.
    std::vector<uint8_t> digits;
    digits.reserve((n - zeros) * 137 / 100 + 1);
    for (size_t i = zeros; i < n; ++i) {
        uint32_t carry = data[i];
        for (auto &d : digits) {
            carry += uint32_t(d) << 8;
            d = uint8_t(carry % 58);
            carry /= 58;
        }
        while (carry > 0) {
            digits.push_back(uint8_t(carry % 58));
            carry /= 58;
        }
    }
    std::string out(zeros, '1');
    for (auto it = digits.rbegin(); it != digits.rend(); ++it) out.push_back(kAlphabet[*it]);
    return out;
}

std::string base58_decode(std::string_view text) {
    size_t ones = 0;
    while (ones < text.size() && text[ones] == '1') ++ones;
    std::vector<uint8_t> bytes;  // least significant first
    bytes.reserve(text.size());
    for (size_t i = ones; i < text.size(); ++i) {
        int v = alphabet_index(text[i]);
        if (v < 0) {
            unsigned char c = static_cast<unsigned char>(text[i]);
            std::string shown = (c >= 0x20 && c < 0x7f) ? std::string(1, char(c))
                                                        : "\\x" + std::to_string(c);
            fail(PCCL_ERR_INVALID_ARGUMENT, "invalid base58 character '" + shown +
                                                "' at position " + std::to_string(i));
        }
        uint32_t carry = uint32_t(v);
        for (auto &b : bytes) {
            carry += uint32_t(b) * 58;
            b = uint8_t(carry & 0xff);
            carry >>= 8;
        }
        while (carry > 0) {
            bytes.push_back(uint8_t(carry & 0xff));
            carry >>= 8;
        }
    }
    std::string out(ones, '\0');
    for (auto it = bytes.rbegin(); it != bytes.rend(); ++it) out.push_back(char(*it));
    return out;
}

// Identity multihash of the protobuf-wrapped Ed25519 public key.
constexpr uint8_t kEd25519IdPrefix[6] = {0x00, 0x24, 0x08, 0x01, 0x12, 0x20};

std::string peer_id_from_public_key(const Key32 &public_key) {
    uint8_t mh[sizeof(kEd25519IdPrefix) + 32];
    std::memcpy(mh, kEd25519IdPrefix, sizeof(kEd25519IdPrefix));
    std::memcpy(mh + sizeof(kEd25519IdPrefix), public_key.data(), public_key.size());
    return base58_encode(mh, sizeof(mh));
}

std::string peer_id_from_secret(const Key32 &secret) { return peer_id_from_public_key(ed25519_public_key(secret)); }

bool peer_public_key(std::string_view peer_id, Key32 &public_key) {
    if (peer_id.size() != 52 || !is_valid_peer_id(peer_id)) return false;
    const std::string mh = base58_decode(peer_id);
    if (mh.size() != sizeof(kEd25519IdPrefix) + 32 ||
        std::memcmp(mh.data(), kEd25519IdPrefix, sizeof(kEd25519IdPrefix)) != 0)
        return false;
    std::memcpy(public_key.data(), mh.data() + sizeof(kEd25519IdPrefix), 32);
    return true;
}

Signature sign_as(const Identity &self, const void *msg, size_t n) { return ed25519_sign(self.secret, msg, n); }

bool verify_peer(std::string_view peer_id, const void *msg, size_t n, const uint8_t *sig, size_t sig_len) {
    Key32 pub{};
    return peer_public_key(peer_id, pub) && ed25519_verify(pub, msg, n, sig, sig_len);
}

bool is_peer_id_multihash(const uint8_t *data, size_t n) {
    if (n < 2) return false;
    if (data[0] == 0x12) return data[1] == 0x20 && n == 34;
    if (data[0] == 0x00) return data[1] <= 42 && n == size_t(data[1]) + 2;
    return false;
}

bool is_valid_peer_id(std::string_view text) {
    if (text.empty() || text.size() > 128) return false;
    for (char c : text)
        if (alphabet_index(c) < 0) return false;
    std::string mh = base58_decode(text);
    return is_peer_id_multihash(reinterpret_cast<const uint8_t *>(mh.data()), mh.size());
}

Identity generate_identity() {
    Identity id{};
    random_bytes(id.secret.data(), id.secret.size());
    id.peer_id = peer_id_from_secret(id.secret);
    return id;
}

Identity load_or_create_identity(const std::string &path) {
    if (path.empty()) fail(PCCL_ERR_INVALID_ARGUMENT, "key file path is empty");
    std::string text;
    if (read_small_file(path, text)) return parse_key_file(path, text);

    Identity id = generate_identity();
    static const char *hex = "0123456789abcdef";
    std::string content = kKeyMagic;
    for (uint8_t b : id.secret) {
        content.push_back(hex[b >> 4]);
        content.push_back(hex[b & 15]);
    }
    content.push_back('\n');

    uint8_t nonce[8];
    random_bytes(nonce, sizeof(nonce));
    std::string tmp = path + ".tmp-" + base58_encode(nonce, sizeof(nonce));
    int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    if (fd < 0) fail(PCCL_ERR_IO, "cannot create key file '" + tmp + "': " + errno_text());
    try {
        write_all(fd, content, tmp);
        if (::fsync(fd) != 0)
            fail(PCCL_ERR_IO, "cannot sync key file '" + tmp + "': " + errno_text());
    } catch (...) {
        ::close(fd);
        ::unlink(tmp.c_str());
        throw;
    }
    ::close(fd);
    // link() refuses to replace an existing file, so if another process created
    // the key meanwhile we use theirs; filesystems without hard links fall
    // back to rename().
    if (::link(tmp.c_str(), path.c_str()) == 0) {
        ::unlink(tmp.c_str());
        return id;
    }
    const int link_errno = errno;
    if (link_errno == EEXIST) {
        ::unlink(tmp.c_str());
        if (!read_small_file(path, text))
            fail(PCCL_ERR_IO, "key file '" + path + "' vanished while being created");
        return parse_key_file(path, text);
    }
    if (::rename(tmp.c_str(), path.c_str()) != 0) {
        std::string why = errno_text();
        ::unlink(tmp.c_str());
        fail(PCCL_ERR_IO, "cannot install key file '" + path + "': " + why);
    }
    return id;
}

}  // namespace pccl
