// The Noise handshake and records (net/noise.h), the first bytes a stranger
// makes us decrypt. Each input runs a real initiator/responder handshake in
// process and lets the fuzzer replace, corrupt, truncate or extend one of the
// three messages (or one record after it). Checks:
// - a message that differs from the genuine one in any byte is refused with
//   PCCL_ERR_AUTH_FAILED or PCCL_ERR_PROTOCOL (everything is authenticated),
//   and a responder with another run key refuses message 1 with AUTH_FAILED;
// - unmodified, the handshake completes with the payloads intact, equal
//   handshake hashes and each side holding the other's static key;
// - records: the receiver opens exactly what the sender sealed, refuses a
//   modified record and a replayed one;
// - out-of-turn reads and writes are PCCL_ERR_PROTOCOL.
#include <cstring>
#include <string>
#include <vector>

#include <fuzzer/FuzzedDataProvider.h>

#include "fuzz_check.h"
#include "net/noise.h"

using namespace pccl;
using namespace pccl::net;

namespace {

enum class Mode : uint8_t { replace, flip, truncate, append, keep };

std::string mutate(const std::string &genuine, Mode mode, FuzzedDataProvider &fdp) {
    std::string m = genuine;
    switch (mode) {
    case Mode::replace:
        return fdp.ConsumeRandomLengthString(4200);
    case Mode::flip:
        if (!m.empty()) {
            const size_t at = fdp.ConsumeIntegralInRange<size_t>(0, m.size() - 1);
            m[at] = static_cast<char>(m[at] ^ fdp.ConsumeIntegralInRange<uint8_t>(1, 255));
        }
        return m;
    case Mode::truncate:
        m.resize(fdp.ConsumeIntegralInRange<size_t>(0, m.empty() ? 0 : m.size() - 1));
        return m;
    case Mode::append:
        return m + fdp.ConsumeRandomLengthString(64) + "x";
    case Mode::keep:
        return m;
    }
    return m;
}

bool refused(pccl_status_t st) { return st == PCCL_ERR_AUTH_FAILED || st == PCCL_ERR_PROTOCOL; }

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    FuzzedDataProvider fdp(data, size);
    const int target = fdp.ConsumeIntegralInRange<int>(1, 4);  // 4: a record after the handshake
    const Mode mode = static_cast<Mode>(fdp.ConsumeIntegralInRange<uint8_t>(0, 4));
    const bool wrong_key = fdp.ConsumeIntegralInRange<uint8_t>(0, 15) == 0;
    const std::string payload2 = fdp.ConsumeRandomLengthString(256);
    const std::string payload3 = fdp.ConsumeRandomLengthString(256);

    NoiseHandshake ini(NoiseHandshake::Role::initiator, "run key", "pccl/1");
    NoiseHandshake res(NoiseHandshake::Role::responder, wrong_key ? "another key" : "run key", "pccl/1");
    FUZZ_CHECK(fuzz::status_of([&] { ini.read_message(nullptr, 0); }) == PCCL_ERR_PROTOCOL);  // not its turn
    FUZZ_CHECK(fuzz::status_of([&] { res.write_message(""); }) == PCCL_ERR_PROTOCOL);

    // Delivers message `k` (genuine bytes) to `reader`; false when the run stops here.
    auto deliver = [&](int k, const std::string &genuine, NoiseHandshake &reader, const std::string &want) {
        const std::string wire = k == target ? mutate(genuine, mode, fdp) : genuine;
        std::vector<uint8_t> buf(wire.begin(), wire.end());  // exact size: ASan sees any overread
        std::string got;
        const pccl_status_t st = fuzz::status_of([&] { got = reader.read_message(buf.data(), buf.size()); });
        if (k == 1 && wrong_key) {
            FUZZ_CHECK(st == PCCL_ERR_AUTH_FAILED || (st == PCCL_ERR_PROTOCOL && wire.size() < 48));
            return false;
        }
        if (wire != genuine) {
            if (!refused(st))
                std::fprintf(stderr, "message %d modified (%zu -> %zu bytes) yet accepted\n", k, genuine.size(),
                             wire.size());
            FUZZ_CHECK(refused(st));
            return false;
        }
        FUZZ_CHECK(st == PCCL_OK && got == want);
        return true;
    };

    if (!deliver(1, ini.write_message(""), res, ""))
        return 0;
    if (!deliver(2, res.write_message(payload2), ini, payload2))
        return 0;
    if (!deliver(3, ini.write_message(payload3), res, payload3))
        return 0;

    FUZZ_CHECK(ini.done() && res.done());
    FUZZ_CHECK(ini.handshake_hash() == res.handshake_hash());
    FUZZ_CHECK(ini.remote_static() == res.local_static() && res.remote_static() == ini.local_static());
    FUZZ_CHECK(fuzz::status_of([&] { res.read_message(nullptr, 0); }) == PCCL_ERR_PROTOCOL);
    FUZZ_CHECK(fuzz::status_of([&] { ini.write_message(""); }) == PCCL_ERR_PROTOCOL);

    std::unique_ptr<CipherState> tx = ini.take_sender(), rx = res.take_receiver();
    std::unique_ptr<CipherState> back_tx = res.take_sender(), back_rx = ini.take_receiver();
    FUZZ_CHECK(tx && rx && back_tx && back_rx);

    // Seals `plain` with `from`, delivers the (possibly modified) record to
    // `to`; true when it opened, which must be exactly when it is unmodified.
    auto record = [&](CipherState &from, CipherState &to, bool modify) {
        const std::string plain = fdp.ConsumeRandomLengthString(512);
        std::string genuine(plain.size() + kAeadTag, '\0');
        auto *g = reinterpret_cast<uint8_t *>(genuine.data());
        from.seal(reinterpret_cast<const uint8_t *>(plain.data()), plain.size(), g, g + plain.size());
        const std::string wire = modify ? mutate(genuine, mode, fdp) : genuine;
        if (wire.size() < kAeadTag)
            return false;  // the transport never hands open() a record shorter than its tag
        std::vector<uint8_t> buf(wire.begin(), wire.end());
        const size_t len = buf.size() - kAeadTag;
        std::vector<uint8_t> out(len);
        const bool ok = to.open(buf.data(), len, out.data(), buf.data() + len);
        FUZZ_CHECK(ok == (wire == genuine));
        if (ok) {
            FUZZ_CHECK(std::string(out.begin(), out.end()) == plain);
            // The same record again (a replay) meets the next nonce: refused.
            std::vector<uint8_t> again(len);
            FUZZ_CHECK(!to.open(buf.data(), len, again.data(), buf.data() + len));
        }
        return ok;
    };
    record(*back_tx, *back_rx, false);  // responder -> initiator
    record(*tx, *rx, target == 4);      // initiator -> responder, maybe modified
    return 0;
}
