#include "collectives/allreduce.h"

#include <cstring>
#include <string>
#include <vector>

#include "collectives/reduce.h"
#include "common/error.h"
#include "common/msgpack.h"

namespace pccl::collectives {

namespace {

constexpr uint32_t kDescriptorChunk = 0xffffffffu;  // the op descriptor frame
constexpr uint32_t kGatherBit = 0x80000000u;        // set in `chunk` during all-gather

// Chunk / sub-chunk geometry shared by every member (it depends only on
// count, size and chunk_bytes).
struct Layout {
    size_t n, esize, sub_elems;
    std::vector<size_t> start, len, nsub, sub_base;
    Layout(size_t count, size_t n_, size_t esize_, size_t chunk_bytes)
        : n(n_), esize(esize_), sub_elems(std::max<size_t>(1, chunk_bytes / esize_)) {
        size_t base = count / n, extra = count % n, off = 0, subs = 0;
        for (size_t c = 0; c < n; ++c) {
            size_t l = base + (c < extra ? 1 : 0);
            start.push_back(off);
            len.push_back(l);
            nsub.push_back((l + sub_elems - 1) / sub_elems);
            sub_base.push_back(subs);
            off += l;
            subs += nsub.back();
        }
    }
    size_t total_subs() const { return sub_base.back() + nsub.back(); }
    size_t sub_start(size_t c, size_t j) const { return start[c] + j * sub_elems; }
    size_t sub_len(size_t c, size_t j) const { return std::min(sub_elems, len[c] - j * sub_elems); }
};

std::string describe(pccl_dtype_t dtype, size_t count, pccl_reduce_op_t op) {
    return std::string(dtype_name(dtype)) + " x " + std::to_string(count) + " (" + op_name(op) + ")";
}

}  // namespace

void ring_all_reduce(mesh::Channel &ch, void *buf, size_t count, pccl_dtype_t dtype,
                     const AllReduceOptions &opts) {
    const size_t n = ch.size(), r = ch.rank();
    if (n == 1) return;  // the input already is the result (avg of one value)
    const size_t next = (r + 1) % n, prev = (r + n - 1) % n;
    const size_t esize = dtype_size(dtype);
    auto *bytes = static_cast<uint8_t *>(buf);
    const Layout L(count, n, esize, opts.chunk_bytes);

    // The descriptor lets the neighbour check that we agree on the op before
    // it reduces anything we send.
    ch.send_owned(next, kDescriptorChunk, 0,
                  msgpack_encode(MsgValue::map({{"t", "all_reduce"},
                                                {"dtype", uint64_t(dtype)},
                                                {"count", uint64_t(count)},
                                                {"op", uint64_t(opts.op)},
                                                {"world", uint64_t(n)}})));

    auto ptr = [&](size_t c, size_t j) { return bytes + L.sub_start(c, j) * esize; };
    auto send_sub = [&](size_t c, size_t j, bool gather) {
        ch.send(next, static_cast<uint32_t>(c) | (gather ? kGatherBit : 0), static_cast<uint32_t>(j), ptr(c, j),
                L.sub_len(c, j) * esize);
    };

    // Reduce-scatter step 0: our own chunk starts its trip.
    for (size_t j = 0; j < L.nsub[r]; ++j) send_sub(r, j, false);

    const size_t owned = (r + 1) % n;  // the chunk we finish reducing
    size_t rs_left = L.total_subs() - L.nsub[r];
    size_t ag_left = L.total_subs() - L.nsub[owned];
    std::vector<uint8_t> seen(2 * L.total_subs(), 0);
    bool have_descriptor = false;
    std::vector<mesh::Incoming> early;

    auto process = [&](mesh::Incoming &in) {
        const auto &h = in.frame.header;
        const bool gather = (h.chunk & kGatherBit) != 0;
        const size_t c = h.chunk & ~kGatherBit, j = h.sub;
        if (c >= n || j >= L.nsub[c] || in.frame.size() != L.sub_len(c, j) * esize ||
            (!gather && c == r) || (gather && c == owned))
            fail(PCCL_ERR_PROTOCOL, "all_reduce: unexpected piece (chunk " + std::to_string(c) + ", sub " +
                                        std::to_string(j) + ") from the previous peer");
        uint8_t &flag = seen[(gather ? L.total_subs() : 0) + L.sub_base[c] + j];
        if (flag) fail(PCCL_ERR_PROTOCOL, "all_reduce: duplicate piece from the previous peer");
        flag = 1;
        const size_t elems = L.sub_len(c, j);
        if (!gather) {
            reduce_into(dtype, opts.op, ptr(c, j), in.frame.data(), elems);
            --rs_left;
            if (c == owned) {
                if (opts.op == PCCL_AVG) divide_by(dtype, ptr(c, j), elems, n);
                send_sub(c, j, true);
            } else {
                send_sub(c, j, false);
            }
        } else {
            std::memcpy(ptr(c, j), in.frame.data(), elems * esize);
            --ag_left;
            if (c != (r + 2) % n) send_sub(c, j, true);
        }
    };

    while (!have_descriptor || rs_left > 0 || ag_left > 0) {
        mesh::Incoming in = ch.recv();
        if (in.src != prev) fail(PCCL_ERR_PROTOCOL, "all_reduce: data from a peer that is not our ring neighbour");
        if (in.frame.header.chunk == kDescriptorChunk) {
            MsgValue d = msgpack_decode(in.frame.data(), in.frame.size());
            const auto pd = static_cast<pccl_dtype_t>(d.at("dtype").as_uint());
            const size_t pc = d.at("count").as_uint();
            const auto po = static_cast<pccl_reduce_op_t>(d.at("op").as_uint());
            if (pd != dtype || pc != count || po != opts.op || d.at("world").as_uint() != n) {
                std::string msg = "all_reduce mismatch between peers: this peer has " + describe(dtype, count, opts.op) +
                                  ", its ring neighbour has " + describe(pd, pc, po);
                fail(PCCL_ERR_INVALID_USAGE, msg);
            }
            have_descriptor = true;
            for (auto &e : early) process(e);
            early.clear();
            continue;
        }
        if (!have_descriptor) {
            early.push_back(std::move(in));
            continue;
        }
        process(in);
    }
    ch.flush();
}

}  // namespace pccl::collectives
