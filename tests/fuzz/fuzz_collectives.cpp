// Hostile members against the collectives (collectives/, state/sync.h). They
// run over the mesh::Channel seam, so a fake channel can hand them whatever
// frames the fuzzer makes up, as if other members sent them: addressing
// (chunk, sub) and payload each fabricated or copied from a frame this member
// sent, optionally with one byte changed (well-formed descriptors and
// sub-chunks of the right size, so the fuzzer gets past the first checks). Silence ends in PCCL_ERR_TIMEOUT, as
// on a real channel. Each input runs all_gather_bytes, ring_all_reduce (ring
// or direct, dense or quantized) or sync_state as member `rank` of 2..4.
// Checks: the op returns or throws pccl::Error, never an assertion
// (PCCL_ERR_INTERNAL) or another exception type; ASan/UBSan/libFuzzer catch
// overreads, in-place writes outside the expected targets, and allocations
// a peer's header drives beyond the 2 GiB limit; sends go to other members
// only, with readable bytes; on success all_gather returns our blob at our
// rank and sync_state counts no more tensors than exist; an all-reduce that
// fails gives the input back byte for byte after Backup::restore.
#include <cstring>
#include <map>
#include <string>
#include <utility>
#include <vector>

#include <fuzzer/FuzzedDataProvider.h>

#include "collectives/allgather.h"
#include "collectives/allreduce.h"
#include "collectives/backup.h"
#include "collectives/reduce.h"
#include "fuzz_check.h"
#include "mesh/channel.h"
#include "state/sync.h"

using namespace pccl;

namespace {

class FuzzChannel : public mesh::Channel {
public:
    FuzzChannel(FuzzedDataProvider &fdp, size_t n, size_t me) : fdp_(fdp), n_(n), me_(me) {}
    size_t size() const override { return n_; }
    size_t rank() const override { return me_; }
    uint64_t epoch() const override { return 7; }

    void send(size_t dst, uint32_t chunk, uint32_t sub, const void *data, size_t len) override {
        FUZZ_CHECK(dst < n_ && dst != me_ && (data != nullptr || len == 0));
        std::string bytes(static_cast<const char *>(data), len);  // reads every byte: ASan checks them
        record(dst, chunk, sub, std::move(bytes));
    }
    void send_owned(size_t dst, uint32_t chunk, uint32_t sub, std::string bytes) override {
        FUZZ_CHECK(dst < n_ && dst != me_);
        record(dst, chunk, sub, std::move(bytes));
    }

    mesh::Incoming recv() override {
        if (fdp_.remaining_bytes() == 0 || ++received_ > 1024)
            fail(PCCL_ERR_TIMEOUT, "fuzz: the other members fell silent");
        mesh::Incoming in;
        const size_t k = fdp_.ConsumeIntegralInRange<size_t>(0, n_ - 2);
        in.src = k >= me_ ? k + 1 : k;
        net::FrameHeader &h = in.frame.header;
        h.type = net::FrameType::data;
        h.epoch = 7;
        // Addressing and payload are each fabricated or taken from one of our
        // own frames (right sizes, well-formed descriptors), independently.
        const Sent *like = sent_.empty() || !fdp_.ConsumeBool()
                               ? nullptr
                               : &sent_[fdp_.ConsumeIntegralInRange<size_t>(0, sent_.size() - 1)];
        if (like && fdp_.ConsumeBool()) {
            h.chunk = like->chunk;
            h.sub = like->sub;
        } else {
            h.chunk = fdp_.ConsumeBool() ? fdp_.ConsumeIntegralInRange<uint32_t>(0, 8) : fdp_.ConsumeIntegral<uint32_t>();
            if (fdp_.ConsumeBool())
                h.chunk |= 0x80000000u;  // the all-gather bit
            h.sub = fdp_.ConsumeBool() ? fdp_.ConsumeIntegralInRange<uint32_t>(0, 8) : fdp_.ConsumeIntegral<uint32_t>();
        }
        std::string payload = like ? like->bytes : fdp_.ConsumeRandomLengthString(4096);
        if (like && !payload.empty() && fdp_.ConsumeBool())
            payload[fdp_.ConsumeIntegralInRange<size_t>(0, payload.size() - 1)] ^=
                static_cast<char>(fdp_.ConsumeIntegralInRange<uint8_t>(1, 255));
        h.length = static_cast<uint32_t>(payload.size());
        // The zero-copy path, as the mesh does it: an expected (chunk, sub) of
        // exactly the expected size is written straight to its target.
        auto it = expected_.find({h.chunk, h.sub});
        if (it != expected_.end() && it->second.second == payload.size()) {
            if (!payload.empty())
                std::memcpy(it->second.first, payload.data(), payload.size());
            in.frame.in_place = true;
            expected_.erase(it);
            return in;
        }
        in.frame.payload = BufferPool::Ptr(payload.empty() ? nullptr : new uint8_t[payload.size()],
                                           BufferPool::Deleter{0});  // exact size: ASan sees overreads
        if (!payload.empty())
            std::memcpy(in.frame.payload.get(), payload.data(), payload.size());
        return in;
    }

    void flush() override {}
    void abort(pccl_status_t, const std::string &) override {}
    void commit() override {}
    void expect(uint32_t chunk, uint32_t sub, void *dst, size_t len) override {
        FUZZ_CHECK(dst != nullptr || len == 0);
        expected_[{chunk, sub}] = {dst, len};
    }
    void quiesce() override { expected_.clear(); }

private:
    struct Sent {
        uint32_t chunk, sub;
        std::string bytes;
    };
    void record(size_t, uint32_t chunk, uint32_t sub, std::string bytes) {
        tx_bytes += bytes.size();
        if (sent_.size() < 256)
            sent_.push_back({chunk, sub, std::move(bytes)});
    }

    FuzzedDataProvider &fdp_;
    size_t n_, me_;
    size_t received_ = 0;
    std::vector<Sent> sent_;
    std::map<std::pair<uint32_t, uint32_t>, std::pair<void *, size_t>> expected_;
};

template <typename F>
void run_op(F &&op) {
    const pccl_status_t st = fuzz::status_of(std::forward<F>(op));
    if (st == PCCL_ERR_INTERNAL)
        std::fprintf(stderr, "a hostile peer reached an internal assertion\n");
    FUZZ_CHECK(st != PCCL_ERR_INTERNAL);
}

const pccl_dtype_t kDtypes[] = {PCCL_F32, PCCL_F64, PCCL_F16, PCCL_BF16, PCCL_I8, PCCL_I32, PCCL_U64};

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    FuzzedDataProvider fdp(data, size);
    const int which = fdp.ConsumeIntegralInRange<int>(0, 2);
    const size_t n = fdp.ConsumeIntegralInRange<size_t>(2, 4);
    const size_t me = fdp.ConsumeIntegralInRange<size_t>(0, n - 1);
    FuzzChannel ch(fdp, n, me);

    if (which == 0) {
        const std::string mine = fdp.ConsumeRandomLengthString(64);
        const size_t chunk_bytes = fdp.ConsumeIntegralInRange<size_t>(1, 64);
        std::vector<std::string> out;
        bool ok = false;
        run_op([&] {
            out = collectives::all_gather_bytes(ch, mine, chunk_bytes);
            ok = true;
        });
        if (ok)
            FUZZ_CHECK(out.size() == n && out[me] == mine);
    } else if (which == 1) {
        const pccl_dtype_t dtype = kDtypes[fdp.ConsumeIntegralInRange<size_t>(0, std::size(kDtypes) - 1)];
        pccl_allreduce_opts_t o;
        pccl_allreduce_opts_init(&o);
        o.op = static_cast<pccl_reduce_op_t>(fdp.ConsumeIntegralInRange<int>(PCCL_SUM, PCCL_PROD));
        const size_t chunk_bytes = fdp.ConsumeIntegralInRange<size_t>(1, 512);
        o.quant = static_cast<pccl_quant_t>(fdp.ConsumeIntegralInRange<int>(PCCL_QUANT_NONE, PCCL_QUANT_E3M0));
        o.quant_block = fdp.ConsumeIntegralInRange<uint32_t>(1, 64);
        o.stochastic = fdp.ConsumeBool();
        const uint64_t seed = fdp.ConsumeIntegral<uint64_t>();
        o.algorithm = static_cast<pccl_algorithm_t>(fdp.ConsumeIntegralInRange<int>(PCCL_ALGO_RING, PCCL_ALGO_AUTO));
        if (fuzz::status_of([&] { collectives::check_all_reduce_options(dtype, o); }) != PCCL_OK)
            return 0;  // refused locally before anything is sent: not what this harness is about
        const size_t count = fdp.ConsumeIntegralInRange<size_t>(0, 300);
        std::vector<uint8_t> buf(count * collectives::dtype_size(dtype));
        for (size_t i = 0; i < buf.size(); ++i)
            buf[i] = static_cast<uint8_t>(i * 7 % 61);  // finite in every dtype (a small positive pattern)
        // In place with the input kept, as Communicator::all_reduce runs it:
        // whatever a hostile peer sends, a failed op's restore gives the
        // input back byte for byte.
        const std::vector<uint8_t> input = buf;
        collectives::Backup keep(buf.data(), buf.size());
        const pccl_status_t st = fuzz::status_of(
            [&] { collectives::ring_all_reduce(ch, buf.data(), count, dtype, o, chunk_bytes, seed, &keep); });
        if (st == PCCL_ERR_INTERNAL) std::fprintf(stderr, "a hostile peer reached an internal assertion\n");
        FUZZ_CHECK(st != PCCL_ERR_INTERNAL);
        if (st != PCCL_OK) {
            keep.restore();
            FUZZ_CHECK(buf == input);
        }
    } else {
        std::vector<std::vector<uint8_t>> store(fdp.ConsumeIntegralInRange<size_t>(0, 3));
        std::vector<state::TensorRef> tensors;
        for (size_t i = 0; i < store.size(); ++i) {
            store[i].assign(fdp.ConsumeIntegralInRange<size_t>(0, 64), static_cast<uint8_t>(i + 1));
            tensors.push_back({std::string(1, static_cast<char>('a' + i)), store[i].data(), store[i].size()});
        }
        const uint64_t revision = fdp.ConsumeIntegralInRange<uint64_t>(0, 3);
        const size_t chunk_bytes = fdp.ConsumeIntegralInRange<size_t>(1, 64);
        state::SyncResult r;
        bool ok = false;
        run_op([&] {
            r = state::sync_state(ch, tensors, revision, chunk_bytes);
            ok = true;
        });
        if (ok)
            FUZZ_CHECK(r.tensors_received <= tensors.size());
    }
    return 0;
}
