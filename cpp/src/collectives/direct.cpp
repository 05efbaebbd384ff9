#include "collectives/direct.h"

#include <algorithm>
#include <string>
#include <vector>

#include "common/error.h"
#include "compress/random.h"

namespace pccl::collectives {

void run_direct(mesh::Channel &ch, const RingLayout &L, const RingDescriptor &desc, RingCodec &codec,
                uint64_t seed) {
    const size_t n = ch.size(), r = ch.rank();
    const std::string encoded = desc.encode();
    for (size_t p = 0; p < n; ++p)
        if (p != r) ch.send_owned(p, kDescriptorChunk, 0, encoded);

    auto sub_seed = [&](size_t c, size_t j, bool gather) {
        return compress::hash2(seed ^ compress::mix64(r), (uint64_t(c) << 33) ^ (uint64_t(j) << 1) ^ gather);
    };
    auto send = [&](size_t dst, size_t c, size_t j, bool gather, WireBytes w) {
        const uint32_t chunk = static_cast<uint32_t>(c) | (gather ? kGatherBit : 0);
        if (w.data)
            ch.send(dst, chunk, static_cast<uint32_t>(j), w.data, w.len);
        else
            ch.send_owned(dst, chunk, static_cast<uint32_t>(j), std::move(w.owned));
    };

    // The all-gather pieces of other owners' chunks land straight in the
    // result. Safe: our region of chunk c is overwritten only by c's final
    // value, which exists only after its owner received all of our
    // contribution to c (read from that region, and written out before).
    for (size_t c = 0; c < n; ++c)
        for (size_t j = 0; c != r && j < L.nsub[c]; ++j)
            if (uint8_t *t = codec.store_target(L.sub_start(c, j), L.sub_len(c, j)))
                ch.expect(static_cast<uint32_t>(c) | kGatherBit, static_cast<uint32_t>(j), t,
                          codec.wire_bytes(L.sub_len(c, j)));

    // Our contributions, interleaved over the owners so every flow starts at once.
    size_t most = 0;
    for (size_t c = 0; c < n; ++c) most = std::max(most, L.nsub[c]);
    for (size_t j = 0; j < most; ++j)
        for (size_t k = 1; k < n; ++k) {
            const size_t c = (r + k) % n;
            if (j < L.nsub[c]) send(c, c, j, false, codec.partial(L.sub_start(c, j), L.sub_len(c, j),
                                                                   sub_seed(c, j, false)));
        }

    // Reduce-scatter state of our chunk: per sub-chunk, the contributions
    // folded so far (in the order r+1, r+2, ..., r-1) and those that came early.
    const size_t mine = L.nsub[r];
    std::vector<size_t> folded(mine, 0);
    std::vector<std::vector<mesh::Incoming>> waiting(mine);
    std::vector<uint8_t> seen_rs(n * mine, 0), seen_ag(L.total_subs(), 0), have_descriptor(n, 0);
    size_t rs_left = mine, ag_left = L.total_subs() - mine, descriptors_left = n - 1;
    std::vector<std::vector<mesh::Incoming>> early(n);  // pieces that came before their sender's descriptor

    auto fold = [&](size_t j, mesh::Incoming &in) {
        codec.accumulate(L.sub_start(r, j), L.sub_len(r, j), in.frame.data());
        if (++folded[j] == n - 1) {
            --rs_left;
            const size_t off = L.sub_start(r, j), len = L.sub_len(r, j);
            WireBytes w = codec.finalize(off, len, sub_seed(r, j, true));
            for (size_t k = 1; k < n; ++k) {  // borrowed bytes are shared; owned ones copied per destination
                WireBytes each = w.data ? WireBytes{w.data, w.len, {}} : WireBytes{nullptr, 0, w.owned};
                send((r + k) % n, r, j, true, std::move(each));
            }
        }
    };
    auto process = [&](mesh::Incoming &in) {
        const auto &h = in.frame.header;
        const bool gather = (h.chunk & kGatherBit) != 0;
        const size_t c = h.chunk & ~kGatherBit, j = h.sub, src = in.src;
        if (c >= n || j >= L.nsub[c] || in.frame.size() != codec.wire_bytes(L.sub_len(c, j)) ||
            (!gather && c != r) || (gather && c != src))
            fail(PCCL_ERR_PROTOCOL, "all_reduce (direct): unexpected piece (chunk " + std::to_string(c) +
                                        ", sub " + std::to_string(j) + ") from rank " + std::to_string(src));
        uint8_t &flag = gather ? seen_ag[L.sub_base[c] + j] : seen_rs[src * mine + j];
        if (flag) fail(PCCL_ERR_PROTOCOL, "all_reduce (direct): duplicate piece from rank " + std::to_string(src));
        flag = 1;
        if (gather) {
            if (!in.frame.in_place) codec.store(L.sub_start(c, j), L.sub_len(c, j), in.frame.data());
            --ag_left;
            return;
        }
        // Fold in rank order after us: a contribution waits for those before it.
        waiting[j].push_back(std::move(in));
        for (bool progress = true; progress && folded[j] < n - 1;) {
            progress = false;
            const size_t want = (r + 1 + folded[j]) % n;
            for (size_t i = 0; i < waiting[j].size(); ++i)
                if (waiting[j][i].src == want) {
                    mesh::Incoming next = std::move(waiting[j][i]);
                    waiting[j].erase(waiting[j].begin() + static_cast<std::ptrdiff_t>(i));
                    fold(j, next);
                    progress = true;
                    break;
                }
        }
    };

    while (descriptors_left > 0 || rs_left > 0 || ag_left > 0) {
        mesh::Incoming in = ch.recv();
        if (in.src == r || in.src >= n) fail(PCCL_ERR_PROTOCOL, "all_reduce (direct): data from ourselves");
        if (in.frame.header.chunk == kDescriptorChunk) {
            if (have_descriptor[in.src]) fail(PCCL_ERR_PROTOCOL, "all_reduce (direct): duplicate descriptor");
            const RingDescriptor theirs = RingDescriptor::decode(in.frame.data(), in.frame.size());
            if (!(theirs == desc))
                fail(PCCL_ERR_INVALID_USAGE, "all_reduce mismatch between peers: this peer has " + desc.describe() +
                                                 ", rank " + std::to_string(in.src) + " has " + theirs.describe());
            have_descriptor[in.src] = 1;
            --descriptors_left;
            for (auto &e : early[in.src]) process(e);
            early[in.src].clear();
            continue;
        }
        if (!have_descriptor[in.src]) {
            early[in.src].push_back(std::move(in));
            continue;
        }
        process(in);
    }
    ch.flush();
}

}  // namespace pccl::collectives
