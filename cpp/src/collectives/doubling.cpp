#include "collectives/doubling.h"

#include <algorithm>
#include <cstring>
#include <string>
#include <vector>

#include "collectives/reduce.h"
#include "common/error.h"

namespace pccl::collectives {

void run_doubling(mesh::Channel &ch, void *bufv, size_t count, const RingDescriptor &desc, size_t chunk_bytes) {
    if (desc.quant != 0) fail(PCCL_ERR_INVALID_ARGUMENT, "all_reduce: the doubling algorithm is dense only");
    const size_t n = ch.size(), r = ch.rank();
    const size_t esize = dtype_size(desc.dtype);
    uint8_t *buf = static_cast<uint8_t *>(bufv);

    size_t p = 1, steps = 0;
    while (p * 2 <= n) p *= 2, ++steps;
    const size_t e = n - p;              // ranks 2i (i < e) fold into 2i+1
    const bool spare = r < 2 * e && r % 2 == 0;  // folds in, takes no part in the steps
    const bool folds = r < 2 * e && r % 2 == 1;  // receives a spare's buffer first
    const size_t v = folds ? r / 2 : r - e;      // number among the p members (unused when spare)
    auto rank_of = [&](size_t u) { return u < e ? 2 * u + 1 : u + e; };
    const uint32_t kFold = 0, kSpread = static_cast<uint32_t>(steps + 1);

    const size_t piece = std::max<size_t>(1, chunk_bytes / esize);
    const size_t npieces = (count + piece - 1) / piece;
    auto piece_len = [&](size_t j) { return std::min(piece, count - j * piece); };

    // Who sends us what: the one source of each step we take part in.
    std::vector<uint32_t> my_steps;
    if (spare) {
        my_steps.push_back(kSpread);
    } else {
        if (folds) my_steps.push_back(kFold);
        for (uint32_t k = 1; k <= steps; ++k) my_steps.push_back(k);
    }
    auto source_of = [&](uint32_t step) -> size_t {
        if (step == kFold) return r - 1;
        if (step == kSpread) return r + 1;
        return rank_of(v ^ (size_t(1) << (step - 1)));
    };
    std::vector<uint8_t> partner(n, 0);
    for (uint32_t s : my_steps) partner[source_of(s)] = 1;

    const std::string encoded = desc.encode();
    for (size_t q = 0; q < n; ++q)
        if (partner[q]) ch.send_owned(q, kDescriptorChunk, 0, encoded);

    // Frames: validated as they come (once the sender's descriptor matched),
    // kept per (step, piece) until their step runs.
    std::vector<std::vector<net::Frame>> held(kSpread + 1);
    std::vector<std::vector<uint8_t>> seen(kSpread + 1);
    for (uint32_t s : my_steps) {
        held[s].resize(npieces);
        seen[s].assign(npieces, 0);
    }
    std::vector<uint8_t> have_descriptor(n, 0);
    size_t descriptors_left = 0;
    for (size_t q = 0; q < n; ++q) descriptors_left += partner[q];
    // Before its descriptor: a sender's frames wait (at most what one
    // partner may send us, one step's pieces, or a few when we expect none).
    std::vector<std::vector<mesh::Incoming>> early(n);

    auto accept = [&](mesh::Incoming &in) {
        const auto &h = in.frame.header;
        const size_t j = h.sub;
        const bool ok = h.chunk <= kSpread && !held[h.chunk].empty() && in.src == source_of(h.chunk) &&
                        j < npieces && in.frame.size() == piece_len(j) * esize;
        if (!ok)
            fail(PCCL_ERR_PROTOCOL, "all_reduce (doubling): unexpected piece (step " + std::to_string(h.chunk) +
                                        ", piece " + std::to_string(j) + ") from rank " + std::to_string(in.src));
        if (seen[h.chunk][j])
            fail(PCCL_ERR_PROTOCOL, "all_reduce (doubling): duplicate piece from rank " + std::to_string(in.src));
        seen[h.chunk][j] = 1;
        held[h.chunk][j] = std::move(in.frame);
    };
    // Receives one frame of this op and files it. Blocking.
    auto receive = [&] {
        mesh::Incoming in = ch.recv();
        const size_t src = in.src;
        if (src >= n || src == r) fail(PCCL_ERR_PROTOCOL, "all_reduce (doubling): data from ourselves");
        if (in.frame.header.chunk == kDescriptorChunk) {
            const RingDescriptor theirs = RingDescriptor::decode(in.frame.data(), in.frame.size());
            if (!(theirs == desc))
                fail(PCCL_ERR_INVALID_USAGE, "all_reduce mismatch between peers: this peer has " + desc.describe() +
                                                 ", rank " + std::to_string(src) + " has " + theirs.describe());
            if (!partner[src] || have_descriptor[src])
                fail(PCCL_ERR_PROTOCOL, "all_reduce (doubling): unexpected descriptor from rank " + std::to_string(src));
            have_descriptor[src] = 1;
            --descriptors_left;
            for (auto &f : early[src]) accept(f);
            early[src].clear();
            return;
        }
        if (have_descriptor[src]) return accept(in);
        if (early[src].size() >= std::max<size_t>(npieces, 4))
            fail(PCCL_ERR_PROTOCOL, "all_reduce (doubling): too many pieces from rank " + std::to_string(src));
        early[src].push_back(std::move(in));
    };
    // Runs `use` on every piece of `step` as it arrives (any order).
    auto each_piece = [&](uint32_t step, auto &&use) {
        size_t left = npieces;
        std::vector<uint8_t> done(npieces, 0);
        while (left > 0) {
            for (size_t j = 0; j < npieces; ++j)
                if (!done[j] && held[step][j].payload) {
                    use(j, held[step][j].payload.get());
                    held[step][j] = net::Frame{};
                    done[j] = 1;
                    --left;
                }
            if (left > 0) receive();
        }
    };
    auto send_pieces = [&](size_t dst, uint32_t step, bool copy) {
        for (size_t j = 0; j < npieces; ++j) {
            const uint8_t *at = buf + j * piece * esize;
            const size_t len = piece_len(j) * esize;
            if (copy)
                ch.send_owned(dst, step, static_cast<uint32_t>(j), std::string(reinterpret_cast<const char *>(at), len));
            else
                ch.send(dst, step, static_cast<uint32_t>(j), at, len);
        }
    };
    // buf[j] = op(theirs, buf[j]) with `theirs` the lower-numbered side:
    // computed in the frame's buffer, then copied, so the operand order is
    // the same on both partners.
    auto fold_low_first = [&](size_t j, uint8_t *theirs) {
        uint8_t *mine = buf + j * piece * esize;
        reduce_into(desc.dtype, desc.op, theirs, mine, piece_len(j));
        std::memcpy(mine, theirs, piece_len(j) * esize);
    };

    if (spare) {
        // Borrowed: our buffer changes only when the spread arrives, which
        // exists only after our partner received every piece we sent.
        send_pieces(r + 1, kFold, false);
        each_piece(kSpread, [&](size_t j, uint8_t *data) {
            std::memcpy(buf + j * piece * esize, data, piece_len(j) * esize);
        });
    } else {
        if (folds) each_piece(kFold, fold_low_first);  // the spare (rank r-1) is the low side
        for (uint32_t k = 1; k <= steps; ++k) {
            const size_t pv = v ^ (size_t(1) << (k - 1));
            // Copied: our buffer changes while these may still be queued.
            send_pieces(rank_of(pv), k, true);
            if (v < pv)
                each_piece(k, [&](size_t j, uint8_t *data) {
                    reduce_into(desc.dtype, desc.op, buf + j * piece * esize, data, piece_len(j));
                });
            else
                each_piece(k, fold_low_first);
        }
        if (desc.op == PCCL_AVG) divide_by(desc.dtype, buf, count, n);
        if (folds) send_pieces(r - 1, kSpread, false);  // the final bytes: not changed any more
    }
    while (descriptors_left > 0) receive();
    ch.flush();
}

}  // namespace pccl::collectives
