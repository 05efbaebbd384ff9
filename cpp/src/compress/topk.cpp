#include "compress/topk.h"

#include <algorithm>
#include <cmath>
#include <numeric>

#include "common/error.h"
#include "common/half.h"
#include "compress/random.h"
#include "compress/varint.h"

namespace pccl::compress {
namespace {

constexpr size_t kExactBelow = size_t(1) << 16;  // exact nth_element is cheap enough below this
constexpr size_t kMinSample = 1024;
constexpr int kMaxRefinements = 8;
constexpr uint8_t kSparseVersion = 1;
constexpr uint8_t kFlagFp16 = 1;

// Exactly k of the candidates with the largest |v| (ties: lower index first),
// returned in ascending index order.
std::vector<uint64_t> exact_topk(const float *v, std::vector<uint64_t> cand, size_t k) {
    if (k < cand.size()) {
        auto larger = [v](uint64_t a, uint64_t b) {
            const float fa = std::fabs(v[a]), fb = std::fabs(v[b]);
            return fa > fb || (fa == fb && a < b);
        };
        std::nth_element(cand.begin(), cand.begin() + static_cast<std::ptrdiff_t>(k), cand.end(), larger);
        cand.resize(k);
    }
    std::sort(cand.begin(), cand.end());
    return cand;
}

std::vector<uint64_t> at_or_above(const float *v, size_t n, float t) {
    std::vector<uint64_t> out;
    for (size_t i = 0; i < n; ++i)
        if (std::fabs(v[i]) >= t)
            out.push_back(i);
    return out;
}

size_t count_at_or_above(const float *v, size_t n, float t) {
    size_t c = 0;
    for (size_t i = 0; i < n; ++i)
        c += std::fabs(v[i]) >= t;
    return c;
}

std::vector<uint64_t> select_indices(const TopKOptions &opts, const float *v, size_t n, size_t k) {
    if (k >= n) {
        std::vector<uint64_t> all(n);
        std::iota(all.begin(), all.end(), uint64_t(0));
        return all;
    }
    auto exact_all = [&] {
        std::vector<uint64_t> all(n);
        std::iota(all.begin(), all.end(), uint64_t(0));
        return exact_topk(v, std::move(all), k);
    };
    if (n < kExactBelow)
        return exact_all();

    const size_t lo = static_cast<size_t>(std::ceil(0.8 * static_cast<double>(k)));
    const size_t hi = static_cast<size_t>(std::floor(1.3 * static_cast<double>(k)));
    const size_t m = std::min(n, std::max(kMinSample, static_cast<size_t>(std::ceil(opts.sample_rate * n))));
    std::vector<float> sample(m);
    for (size_t j = 0; j < m; ++j)
        sample[j] = std::fabs(v[hash2(opts.seed, j) % n]);
    std::sort(sample.begin(), sample.end(), std::greater<float>());

    // `want` is how many entries of the full array we aim to have at or above
    // the threshold; the sample rank proportional to it gives the threshold.
    double want = static_cast<double>(k);
    size_t last_rank = SIZE_MAX;
    for (int iter = 0; iter < kMaxRefinements; ++iter) {
        size_t rank = static_cast<size_t>(want / static_cast<double>(n) * static_cast<double>(m));
        if (rank == last_rank)
            ++rank;  // make progress even when the sample is coarse
        if (rank >= m)
            break;
        last_rank = rank;
        const float t = sample[rank];
        if (t <= 0.0f)
            break;  // fewer nonzeros than wanted in the sample: let the exact path decide
        const size_t c = count_at_or_above(v, n, t);
        if (c >= lo && c <= hi)
            return at_or_above(v, n, t);
        if (c > hi) {
            if (c <= 8 * k)  // few enough candidates: exact among them (hierarchical selection)
                return exact_topk(v, at_or_above(v, n, t), k);
            want *= static_cast<double>(k) / static_cast<double>(c);
            last_rank = SIZE_MAX;
            continue;
        }
        want *= c == 0 ? 8.0 : static_cast<double>(k) / static_cast<double>(c);
    }
    return exact_all();
}

}  // namespace

size_t topk_target(double density, size_t n) {
    if (n == 0)
        return 0;
    const double k = std::ceil(density * static_cast<double>(n));
    if (k >= static_cast<double>(n))
        return n;
    return std::max<size_t>(1, static_cast<size_t>(k));
}

SparseSet topk_select(const TopKOptions &opts, const float *values, size_t n) {
    if (!(opts.density > 0.0 && opts.density <= 1.0))
        fail(PCCL_ERR_INVALID_ARGUMENT, "topk: density must be in (0, 1], got " + std::to_string(opts.density));
    if (!(opts.sample_rate > 0.0 && opts.sample_rate <= 1.0))
        fail(PCCL_ERR_INVALID_ARGUMENT,
             "topk: sample_rate must be in (0, 1], got " + std::to_string(opts.sample_rate));
    for (size_t i = 0; i < n; ++i)
        if (!std::isfinite(values[i]))
            fail(PCCL_ERR_INVALID_ARGUMENT,
                 "topk: input element " + std::to_string(i) + " is " + (std::isnan(values[i]) ? "NaN" : "Inf"));
    SparseSet out;
    out.n = n;
    out.indices = select_indices(opts, values, n, topk_target(opts.density, n));
    out.values.resize(out.indices.size());
    for (size_t i = 0; i < out.indices.size(); ++i)
        out.values[i] = values[out.indices[i]];
    return out;
}

std::string sparse_encode(const uint64_t *indices, const float *values, size_t count, uint64_t n,
                          bool fp16_values) {
    if (count > n)
        fail(PCCL_ERR_INVALID_ARGUMENT, "sparse_encode: " + std::to_string(count) +
                                            " entries do not fit a dense length of " + std::to_string(n));
    std::string out;
    out.reserve(4 + 20 + count * (fp16_values ? 4 : 6));
    out.push_back('P');
    out.push_back('S');
    put_u8(out, kSparseVersion);
    put_u8(out, fp16_values ? kFlagFp16 : 0);
    put_varint(out, n);
    put_varint(out, count);
    for (size_t i = 0; i < count; ++i) {
        if (indices[i] >= n)
            fail(PCCL_ERR_INVALID_ARGUMENT, "sparse_encode: index " + std::to_string(indices[i]) +
                                                " at position " + std::to_string(i) + " is >= n = " +
                                                std::to_string(n));
        if (i > 0 && indices[i] <= indices[i - 1])
            fail(PCCL_ERR_INVALID_ARGUMENT, "sparse_encode: indices must be strictly ascending (position " +
                                                std::to_string(i) + ")");
        put_varint(out, i == 0 ? indices[0] : indices[i] - indices[i - 1]);
    }
    for (size_t i = 0; i < count; ++i) {
        if (!std::isfinite(values[i]))
            fail(PCCL_ERR_INVALID_ARGUMENT, "sparse_encode: value at position " + std::to_string(i) +
                                                " is " + (std::isnan(values[i]) ? "NaN" : "Inf"));
        if (fp16_values)
            put_u16(out, f32_to_f16(values[i]));
        else
            put_f32(out, values[i]);
    }
    return out;
}

SparseSet sparse_decode(std::string_view data) {
    ByteReader r(data, "sparse set");
    if (r.remaining() < 4 || data[0] != 'P' || data[1] != 'S')
        r.malformed("bad magic (not a sparse set)");
    r.u8();
    r.u8();
    const uint8_t version = r.u8();
    if (version != kSparseVersion)
        r.malformed("unsupported version " + std::to_string(version));
    const uint8_t flags = r.u8();
    if (flags & ~kFlagFp16)
        r.malformed("unknown flags " + std::to_string(flags));
    const size_t width = (flags & kFlagFp16) ? 2 : 4;
    SparseSet s;
    s.n = r.varint();
    const uint64_t count = r.varint();
    if (count > s.n)
        r.malformed("count " + std::to_string(count) + " exceeds n " + std::to_string(s.n));
    if (count > r.remaining() / (1 + width))  // every entry needs >= 1 index byte + a value
        r.malformed("truncated: " + std::to_string(count) + " entries announced");
    s.indices.resize(count);
    s.values.resize(count);
    uint64_t prev = 0;
    for (uint64_t i = 0; i < count; ++i) {
        const uint64_t d = r.varint();
        uint64_t idx;
        if (i == 0) {
            idx = d;
        } else {
            if (d == 0)
                r.malformed("indices not strictly ascending at entry " + std::to_string(i));
            if (d >= s.n - prev)
                r.malformed("index out of range at entry " + std::to_string(i));
            idx = prev + d;
        }
        if (idx >= s.n)
            r.malformed("index " + std::to_string(idx) + " out of range (n = " + std::to_string(s.n) + ")");
        s.indices[i] = idx;
        prev = idx;
    }
    if (r.remaining() != count * width)
        r.malformed("value section has " + std::to_string(r.remaining()) + " bytes, expected " +
                    std::to_string(count * width));
    for (uint64_t i = 0; i < count; ++i) {
        const float v = width == 2 ? f16_to_f32(r.u16()) : r.f32();
        if (!std::isfinite(v))
            r.malformed("non-finite value at entry " + std::to_string(i));
        s.values[i] = v;
    }
    return s;
}

void sparse_sum_into(const std::vector<std::string_view> &encoded_sets_in_rank_order, float *dense_out,
                     size_t n) {
    std::vector<SparseSet> sets;
    sets.reserve(encoded_sets_in_rank_order.size());
    for (size_t r = 0; r < encoded_sets_in_rank_order.size(); ++r) {
        sets.push_back(sparse_decode(encoded_sets_in_rank_order[r]));
        if (sets.back().n != n)
            fail(PCCL_ERR_PROTOCOL, "sparse_sum: set " + std::to_string(r) + " has dense length " +
                                        std::to_string(sets.back().n) + ", expected " + std::to_string(n));
    }
    std::fill(dense_out, dense_out + n, 0.0f);
    for (const SparseSet &s : sets)
        for (size_t i = 0; i < s.indices.size(); ++i)
            dense_out[s.indices[i]] += s.values[i];
}

}  // namespace pccl::compress
