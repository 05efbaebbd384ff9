// The bounds-checked reader under the compressed wire formats
// (compress/varint.h), driven by the input itself: each step reads a varint,
// a u8, a u16, an f32 or a counted byte run from the rest of the input. Every
// read either returns exactly the bytes it covers or throws PCCL_ERR_PROTOCOL,
// never reading or moving past the end; every varint re-encodes (minimally) to
// bytes that read back to it.
#include <cstring>
#include <string>
#include <string_view>
#include <vector>

#include "compress/varint.h"
#include "fuzz_check.h"

using namespace pccl;
using namespace pccl::compress;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size < 1)
        return 0;
    const std::vector<char> buf(data + 1, data + size);  // exact size
    const std::string_view in(buf.data(), buf.size());
    ByteReader r(in, "fuzz");
    uint8_t ops = data[0];
    for (int step = 0; step < 64 && r.remaining() > 0; ++step, ops = static_cast<uint8_t>(ops * 5 + 3)) {
        const size_t before = r.position();
        bool ok = false;
        switch (ops % 5) {
        case 0: {
            uint64_t v = 0;
            ok = fuzz::accepts(PCCL_ERR_PROTOCOL, [&] { v = r.varint(); });
            if (!ok)
                break;
            const size_t used = r.position() - before;
            FUZZ_CHECK(used >= varint_size(v) && used <= 10);
            std::string enc;
            put_varint(enc, v);
            FUZZ_CHECK(enc.size() == varint_size(v));
            if (used == enc.size())  // a minimal encoding is ours, byte for byte
                FUZZ_CHECK(in.substr(before, used) == enc);
            ByteReader back(enc, "re-encoded");
            FUZZ_CHECK(back.varint() == v && back.remaining() == 0);
            break;
        }
        case 1: {
            uint8_t v = 0;
            ok = fuzz::accepts(PCCL_ERR_PROTOCOL, [&] { v = r.u8(); });
            if (ok)
                FUZZ_CHECK(v == static_cast<uint8_t>(in[before]));
            break;
        }
        case 2: {
            uint16_t v = 0;
            ok = fuzz::accepts(PCCL_ERR_PROTOCOL, [&] { v = r.u16(); });
            if (ok) {
                std::string enc;
                put_u16(enc, v);
                FUZZ_CHECK(in.substr(before, 2) == enc);
            }
            break;
        }
        case 3: {
            float v = 0;
            ok = fuzz::accepts(PCCL_ERR_PROTOCOL, [&] { v = r.f32(); });
            if (ok)
                FUZZ_CHECK(std::memcmp(&v, in.data() + before, 4) == 0);
            break;
        }
        default: {
            const size_t n = static_cast<uint8_t>(in[before]);  // a length taken from the stream itself
            std::string_view got;
            ok = fuzz::accepts(PCCL_ERR_PROTOCOL, [&] { got = r.bytes(n); });
            if (ok)
                FUZZ_CHECK(got.size() == n && got.data() == in.data() + before);
            else
                FUZZ_CHECK(n > in.size() - before);
            break;
        }
        }
        if (!ok)
            FUZZ_CHECK(r.position() <= in.size());
        else
            FUZZ_CHECK(r.position() > before || (ops % 5 == 4 && static_cast<uint8_t>(in[before]) == 0));
    }
    FUZZ_CHECK(fuzz::accepts(PCCL_ERR_PROTOCOL, [&] { r.expect_end(); }) == (r.remaining() == 0));
    return 0;
}
