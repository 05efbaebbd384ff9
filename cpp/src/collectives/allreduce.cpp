#include "collectives/allreduce.h"

#include <cmath>
#include <cstring>
#include <string>
#include <vector>

#include "collectives/direct.h"
#include "collectives/doubling.h"
#include "collectives/reduce.h"
#include "collectives/ring.h"
#include "common/error.h"
#include "compress/codec.h"
#include "compress/quantize.h"

namespace pccl::collectives {

namespace {

// Dense: sub-chunks travel in the buffer's own dtype, straight from the buffer.
class DenseCodec final : public RingCodec {
public:
    DenseCodec(uint8_t *buf, pccl_dtype_t dtype, pccl_reduce_op_t op, size_t n)
        : buf_(buf), dtype_(dtype), op_(op), n_(n), esize_(dtype_size(dtype)) {}
    size_t wire_bytes(size_t len) const override { return len * esize_; }
    WireBytes partial(size_t off, size_t len, uint64_t) override { return forward(off, len); }
    void accumulate(size_t off, size_t len, const uint8_t *wire) override {
        reduce_into(dtype_, op_, at(off), wire, len);
    }
    WireBytes finalize(size_t off, size_t len, uint64_t) override {
        if (op_ == PCCL_AVG) divide_by(dtype_, at(off), len, n_);
        return forward(off, len);
    }
    void store(size_t off, size_t len, const uint8_t *wire) override { std::memcpy(at(off), wire, len * esize_); }
    bool forwards_wire() const override { return false; }  // forward from the buffer: no frame kept
    uint8_t *store_target(size_t off, size_t) override { return at(off); }
    WireBytes forward(size_t off, size_t len) override { return WireBytes{at(off), len * esize_, {}}; }

private:
    uint8_t *at(size_t off) { return buf_ + off * esize_; }
    uint8_t *buf_;
    pccl_dtype_t dtype_;
    pccl_reduce_op_t op_;
    size_t n_, esize_;
};

// Quantized: f32 buffer, sum/avg; partial sums are quantized per hop and
// accumulated in f32; the owner's final quantization is what everyone keeps.
class QuantCodec final : public RingCodec {
public:
    QuantCodec(float *buf, const pccl_allreduce_opts_t &o, size_t n) : buf_(buf), avg_(o.op == PCCL_AVG), n_(n) {
        q_.kind = o.quant;
        q_.block = o.quant_block;
        q_.stochastic = o.stochastic != 0;
    }
    size_t wire_bytes(size_t len) const override { return compress::encoded_size(q_, len); }
    WireBytes partial(size_t off, size_t len, uint64_t seed) override { return encode(off, len, seed); }
    void accumulate(size_t off, size_t len, const uint8_t *wire) override {
        tmp_.resize(len);
        compress::dequantize(q_, wire, len, tmp_.data());
        check_decoded(tmp_.data(), len, off);
        float *acc = buf_ + off;
        for (size_t i = 0; i < len; ++i) acc[i] += tmp_[i];
    }
    WireBytes finalize(size_t off, size_t len, uint64_t seed) override {
        if (avg_) divide_by(PCCL_F32, buf_ + off, len, n_);
        WireBytes w = encode(off, len, seed);
        // Keep exactly what the others will decode.
        compress::dequantize(q_, reinterpret_cast<const uint8_t *>(w.owned.data()), len, buf_ + off);
        return w;
    }
    void store(size_t off, size_t len, const uint8_t *wire) override {
        compress::dequantize(q_, wire, len, buf_ + off);
        check_decoded(buf_ + off, len, off);
    }
    bool forwards_wire() const override { return true; }
    WireBytes forward(size_t, size_t) override { fail(PCCL_ERR_INTERNAL, "quantized ring forwards wire bytes"); }

private:
    // Every member checked its own input finite and every encoder refuses a
    // non-finite partial, so a NaN/Inf decoded from the wire (a non-finite
    // block scale, an fp16/bf16 NaN pattern) came from a broken or hostile
    // peer: the op fails (the caller's abort fails it on every member)
    // instead of returning success with NaNs, and the piece is not forwarded.
    static void check_decoded(const float *x, size_t len, size_t off) {
        for (size_t i = 0; i < len; ++i)
            if (!std::isfinite(x[i]))
                fail(PCCL_ERR_PROTOCOL, "quantized all_reduce: a piece from a peer decodes to " +
                                            std::string(std::isnan(x[i]) ? "NaN" : "Inf") + " at element " +
                                            std::to_string(off + i) + " (non-finite scale or value on the wire)");
    }

    WireBytes encode(size_t off, size_t len, uint64_t seed) {
        compress::QuantOptions q = q_;
        q.seed = seed;
        WireBytes w;
        w.owned.resize(compress::encoded_size(q, len));
        try {
            compress::quantize(q, buf_ + off, len, reinterpret_cast<uint8_t *>(w.owned.data()));
        } catch (const Error &e) {
            // Inputs were checked finite up front, so this is an f32 overflow of a partial sum.
            fail(PCCL_ERR_INVALID_ARGUMENT, std::string("quantized all_reduce: a partial sum is not finite "
                                                        "(the f32 sum overflowed): ") + e.what());
        }
        return w;
    }
    float *buf_;
    bool avg_;
    size_t n_;
    compress::QuantOptions q_;
    std::vector<float> tmp_;
};

void check_finite_f32(const float *x, size_t count) {
    for (size_t i = 0; i < count; ++i)
        if (!std::isfinite(x[i]))
            fail(PCCL_ERR_INVALID_ARGUMENT, "quantized all_reduce: input element " + std::to_string(i) + " is " +
                                                (std::isnan(x[i]) ? "NaN" : "Inf") +
                                                "; only finite values can be quantized");
}

}  // namespace

void check_all_reduce_options(pccl_dtype_t dtype, const pccl_allreduce_opts_t &o) {
    if (!valid_op(o.op))
        fail(PCCL_ERR_INVALID_ARGUMENT, "unknown reduce op code " + std::to_string(static_cast<int>(o.op)));
    if (o.algorithm != PCCL_ALGO_RING && o.algorithm != PCCL_ALGO_DIRECT && o.algorithm != PCCL_ALGO_DOUBLING &&
        o.algorithm != PCCL_ALGO_AUTO)
        fail(PCCL_ERR_INVALID_ARGUMENT, "all_reduce: unknown algorithm code " + std::to_string(int(o.algorithm)));
    if (o.quant == PCCL_QUANT_NONE) return;
    if (o.algorithm == PCCL_ALGO_DOUBLING)
        fail(PCCL_ERR_INVALID_ARGUMENT, "all_reduce: the doubling algorithm does not quantize (use ring, direct or auto)");
    const compress::Codec &codec = compress::codec(o.quant);
    const char *name = codec.name;
    if (dtype != PCCL_F32)
        fail(PCCL_ERR_INVALID_ARGUMENT, std::string("all_reduce: quant=") + name + " needs f32 data, got " +
                                            dtype_name(dtype));
    if (o.op != PCCL_SUM && o.op != PCCL_AVG)
        fail(PCCL_ERR_INVALID_ARGUMENT, std::string("all_reduce: quant=") + name + " supports only sum and avg, got " +
                                            op_name(o.op));
    // Every quantized all-reduce needs a block (members compare it in the
    // descriptor even for codecs that ignore it), as before the table.
    if (o.quant_block == 0)
        fail(PCCL_ERR_INVALID_ARGUMENT, std::string("all_reduce: quant_block must be >= 1 for quant=") + name);
}

pccl_algorithm_t choose_algorithm(size_t bytes, size_t world, const pccl_allreduce_opts_t &opts) {
    if (opts.algorithm != PCCL_ALGO_AUTO) return opts.algorithm;
    const pccl_algorithm_t wide = world >= kAutoDirectMinWorld ? PCCL_ALGO_DIRECT : PCCL_ALGO_RING;
    if (opts.quant != PCCL_QUANT_NONE || world < 2 || bytes > kAutoDoublingMaxBytes) return wide;
    // Cost in bytes on the wire of the busiest member, a step counted as
    // kAutoStepBytes: doubling log2(p) (+2) steps of the whole buffer, the
    // ring 2(n-1) steps moving 2(n-1)/n of it.
    size_t p = 1, steps = 0;
    while (p * 2 <= world) p *= 2, ++steps;
    const double d_steps = double(steps + (world > p ? 2 : 0));
    const double r_steps = 2.0 * double(world - 1);
    const double doubling = d_steps * double(kAutoStepBytes) + d_steps * double(bytes);
    const double ring = r_steps * double(kAutoStepBytes) + r_steps / double(world) * double(bytes);
    return doubling < ring ? PCCL_ALGO_DOUBLING : wide;
}

void ring_all_reduce(mesh::Channel &ch, void *buf, size_t count, pccl_dtype_t dtype,
                     const pccl_allreduce_opts_t &opts, size_t chunk_bytes, uint64_t seed, Backup *backup) {
    check_all_reduce_options(dtype, opts);
    const bool quant = opts.quant != PCCL_QUANT_NONE;
    // Checked on every member before anything is sent, so the error names the
    // member's own element; the abort then fails the op on the others.
    if (quant) check_finite_f32(static_cast<const float *>(buf), count);
    const size_t n = ch.size();
    if (n == 1) return;  // the input already is the result (nothing travels, so nothing is rounded)
    RingDescriptor d;
    d.dtype = dtype;
    d.count = count;
    d.op = opts.op;
    d.world = n;
    d.algorithm = static_cast<uint32_t>(opts.algorithm);
    if (quant) {
        d.quant = static_cast<uint32_t>(opts.quant);
        d.quant_block = opts.quant_block;
        d.stochastic = opts.stochastic != 0;
    }
    const pccl_algorithm_t algo = choose_algorithm(count * dtype_size(dtype), n, opts);
    // Before anything is sent: a hostile or broken peer can make any region
    // be written first (an all-gather piece ahead of its reduce-scatter, landing
    // in place), so keeping regions as the ring reaches them would not do.
    if (backup) backup->keep();
    if (algo == PCCL_ALGO_DOUBLING) return run_doubling(ch, buf, count, d, chunk_bytes);
    const RingLayout L(count, n, dtype_size(dtype), chunk_bytes);
    auto run = [&](RingCodec &codec) {
        if (algo == PCCL_ALGO_DIRECT)
            run_direct(ch, L, d, codec, seed);
        else
            run_ring(ch, L, d, codec, seed);
    };
    if (quant) {
        QuantCodec codec(static_cast<float *>(buf), opts, n);
        run(codec);
    } else {
        DenseCodec codec(static_cast<uint8_t *>(buf), dtype, opts.op, n);
        run(codec);
    }
}

}  // namespace pccl::collectives
