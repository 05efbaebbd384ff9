#include "collectives/ring.h"

#include <algorithm>

#include "collectives/reduce.h"
#include "common/error.h"
#include "common/msgpack.h"
#include "compress/codec.h"
#include "compress/random.h"

namespace pccl::collectives {

RingLayout::RingLayout(size_t count, size_t n_, size_t esize, size_t chunk_bytes)
    : n(n_), sub_elems(std::max<size_t>(1, chunk_bytes / esize)) {
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

size_t RingLayout::sub_len(size_t c, size_t j) const { return std::min(sub_elems, len[c] - j * sub_elems); }

std::string RingDescriptor::encode() const {
    return msgpack_encode(MsgValue::map({{"t", "all_reduce"},
                                         {"dtype", uint64_t(dtype)},
                                         {"count", count},
                                         {"op", uint64_t(op)},
                                         {"world", world},
                                         {"quant", uint64_t(quant)},
                                         {"qblock", uint64_t(quant_block)},
                                         {"stoch", stochastic},
                                         {"algo", uint64_t(algorithm)}}));
}

RingDescriptor RingDescriptor::decode(const uint8_t *data, size_t len) {
    MsgValue d = msgpack_decode(data, len);
    RingDescriptor r;
    // A value outside a C enum's range is undefined behaviour once cast, so
    // codes no peer can send are refused before the cast.
    const uint64_t dtype = d.at("dtype").as_uint(), op = d.at("op").as_uint();
    if (dtype > PCCL_U64 || op > PCCL_PROD)
        fail(PCCL_ERR_PROTOCOL, "all_reduce descriptor: unknown dtype " + std::to_string(dtype) + " or op " +
                                    std::to_string(op));
    r.dtype = static_cast<pccl_dtype_t>(dtype);
    r.count = d.at("count").as_uint();
    r.op = static_cast<pccl_reduce_op_t>(op);
    r.world = d.at("world").as_uint();
    r.quant = static_cast<uint32_t>(d.at("quant").as_uint());
    r.quant_block = static_cast<uint32_t>(d.at("qblock").as_uint());
    r.stochastic = d.at("stoch").as_bool();
    r.algorithm = static_cast<uint32_t>(d.at("algo").as_uint());
    return r;
}

std::string RingDescriptor::describe() const {
    std::string s;
    try {
        s = dtype_name(dtype);
    } catch (const Error &) {
        s = "dtype#" + std::to_string(int(dtype));
    }
    s += " x " + std::to_string(count) + " (" + op_name(op);
    if (quant) {
        const compress::Codec *c = compress::find_codec(quant);
        s += std::string(", ") + (c ? c->name : "quant#" + std::to_string(quant));
        if (c && c->blocked) s += "/" + std::to_string(quant_block);
        if (stochastic) s += " stochastic";
    }
    // The algorithm as requested (auto, the default, is not named).
    switch (algorithm) {
        case PCCL_ALGO_RING: return s + ", ring)";
        case PCCL_ALGO_DIRECT: return s + ", direct)";
        case PCCL_ALGO_DOUBLING: return s + ", doubling)";
        case PCCL_ALGO_AUTO: return s + ")";
    }
    return s + ", algorithm#" + std::to_string(algorithm) + ")";
}

bool RingDescriptor::operator==(const RingDescriptor &o) const {
    return dtype == o.dtype && count == o.count && op == o.op && world == o.world && quant == o.quant &&
           quant_block == o.quant_block && stochastic == o.stochastic && algorithm == o.algorithm;
}

void run_ring(mesh::Channel &ch, const RingLayout &L, const RingDescriptor &desc, RingCodec &codec, uint64_t seed) {
    const size_t n = ch.size(), r = ch.rank();
    const size_t next = (r + 1) % n, prev = (r + n - 1) % n;
    // The descriptor lets the neighbour check that we agree on the op before
    // it reduces anything we send.
    ch.send_owned(next, kDescriptorChunk, 0, desc.encode());

    auto sub_seed = [&](size_t c, size_t j, bool gather) {
        return compress::hash2(seed ^ compress::mix64(r), (uint64_t(c) << 33) ^ (uint64_t(j) << 1) ^ gather);
    };
    auto send = [&](size_t c, size_t j, bool gather, WireBytes w) {
        const uint32_t chunk = static_cast<uint32_t>(c) | (gather ? kGatherBit : 0);
        if (w.data)
            ch.send(next, chunk, static_cast<uint32_t>(j), w.data, w.len);
        else
            ch.send_owned(next, chunk, static_cast<uint32_t>(j), std::move(w.owned));
    };

    const size_t owned = (r + 1) % n;  // the chunk we finish reducing
    // All-gather pieces may land straight in the result. Safe: a region is
    // overwritten only by its all-gather piece, which exists only after the
    // region's reduce-scatter trip (which read it here) has ended.
    for (size_t c = 0; c < n; ++c)
        for (size_t j = 0; c != owned && j < L.nsub[c]; ++j)
            if (uint8_t *t = codec.store_target(L.sub_start(c, j), L.sub_len(c, j)))
                ch.expect(static_cast<uint32_t>(c) | kGatherBit, static_cast<uint32_t>(j), t,
                          codec.wire_bytes(L.sub_len(c, j)));

    // Reduce-scatter step 0: our own chunk starts its trip.
    for (size_t j = 0; j < L.nsub[r]; ++j)
        send(r, j, false, codec.partial(L.sub_start(r, j), L.sub_len(r, j), sub_seed(r, j, false)));

    size_t rs_left = L.total_subs() - L.nsub[r];
    size_t ag_left = L.total_subs() - L.nsub[owned];
    std::vector<uint8_t> seen(2 * L.total_subs(), 0);
    bool have_descriptor = false;
    std::vector<mesh::Incoming> early;
    std::vector<net::Frame> forwarded;  // frames whose bytes we forward verbatim; alive until flush

    auto process = [&](mesh::Incoming &in) {
        const auto &h = in.frame.header;
        const bool gather = (h.chunk & kGatherBit) != 0;
        const size_t c = h.chunk & ~kGatherBit, j = h.sub;
        if (c >= n || j >= L.nsub[c] || in.frame.size() != codec.wire_bytes(L.sub_len(c, j)) ||
            (!gather && c == r) || (gather && c == owned))
            fail(PCCL_ERR_PROTOCOL, "all_reduce: unexpected piece (chunk " + std::to_string(c) + ", sub " +
                                        std::to_string(j) + ") from the previous peer");
        uint8_t &flag = seen[(gather ? L.total_subs() : 0) + L.sub_base[c] + j];
        if (flag) fail(PCCL_ERR_PROTOCOL, "all_reduce: duplicate piece from the previous peer");
        flag = 1;
        const size_t off = L.sub_start(c, j), len = L.sub_len(c, j);
        if (!gather) {
            codec.accumulate(off, len, in.frame.data());
            --rs_left;
            if (c == owned)
                send(c, j, true, codec.finalize(off, len, sub_seed(c, j, true)));
            else
                send(c, j, false, codec.partial(off, len, sub_seed(c, j, false)));
        } else {
            if (!in.frame.in_place) codec.store(off, len, in.frame.data());
            --ag_left;
            if (c == (r + 2) % n) return;  // the next member owns it: the trip ends here
            if (codec.forwards_wire()) {
                send(c, j, true, WireBytes{in.frame.data(), in.frame.size(), {}});
                forwarded.push_back(std::move(in.frame));
            } else {
                send(c, j, true, codec.forward(off, len));
            }
        }
    };

    while (!have_descriptor || rs_left > 0 || ag_left > 0) {
        mesh::Incoming in = ch.recv();
        if (in.frame.header.chunk == kDescriptorChunk) {
            // Compared before the sender is: a member that runs another
            // algorithm (it was asked for another) sends it to other ranks.
            const RingDescriptor theirs = RingDescriptor::decode(in.frame.data(), in.frame.size());
            if (!(theirs == desc))
                fail(PCCL_ERR_INVALID_USAGE, "all_reduce mismatch between peers: this peer has " + desc.describe() +
                                                 (in.src == prev ? ", its ring neighbour has " : ", another has ") +
                                                 theirs.describe());
        }
        if (in.src != prev) fail(PCCL_ERR_PROTOCOL, "all_reduce: data from a peer that is not our ring neighbour");
        if (in.frame.header.chunk == kDescriptorChunk) {
            if (have_descriptor) fail(PCCL_ERR_PROTOCOL, "all_reduce: duplicate descriptor from the previous peer");
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
