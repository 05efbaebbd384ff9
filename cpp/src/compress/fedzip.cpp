#include "compress/fedzip.h"

#include <algorithm>
#include <cmath>
#include <queue>
#include <tuple>

#include "common/error.h"
#include "compress/topk.h"
#include "compress/varint.h"

namespace pccl::compress {
namespace {

constexpr uint8_t kFedZipVersion = 1;
constexpr uint32_t kMaxClusters = 32;
constexpr unsigned kMaxCodeLength = 32;

// Index of the centroid nearest to v (ties: the lower one). centroids ascending, non-empty.
size_t nearest(const std::vector<float> &centroids, float v) {
    const auto it = std::lower_bound(centroids.begin(), centroids.end(), v);
    if (it == centroids.begin())
        return 0;
    if (it == centroids.end())
        return centroids.size() - 1;
    const size_t hi = static_cast<size_t>(it - centroids.begin());
    const double dlo = static_cast<double>(v) - centroids[hi - 1];
    const double dhi = static_cast<double>(centroids[hi]) - v;
    return dhi < dlo ? hi : hi - 1;
}

struct Plan {
    uint64_t n = 0;
    std::vector<uint64_t> positions;  // ascending
    std::vector<uint8_t> symbols;     // cluster of each kept position
    std::vector<float> centroids;     // ascending, every one used
};

void check_options(const FedZipOptions &opts) {
    if (!(opts.density > 0.0 && opts.density <= 1.0))
        fail(PCCL_ERR_INVALID_ARGUMENT, "fedzip: density must be in (0, 1], got " + std::to_string(opts.density));
    if (opts.clusters < 1 || opts.clusters > kMaxClusters)
        fail(PCCL_ERR_INVALID_ARGUMENT,
             "fedzip: clusters must be in [1, 32], got " + std::to_string(opts.clusters));
}

Plan make_plan(const FedZipOptions &opts, const float *values, size_t n) {
    check_options(opts);
    TopKOptions t;
    t.density = opts.density;
    SparseSet kept = topk_select(t, values, n);  // also rejects NaN/Inf
    Plan p;
    p.n = n;
    p.positions = std::move(kept.indices);
    p.centroids = kmeans_1d(kept.values.data(), kept.values.size(), opts.clusters, opts.lloyd_iterations);
    p.symbols.resize(p.positions.size());
    for (size_t i = 0; i < kept.values.size(); ++i)
        p.symbols[i] = static_cast<uint8_t>(nearest(p.centroids, kept.values[i]));
    return p;
}

void put_positions(std::string &out, const uint64_t *pos, size_t count) {
    for (size_t i = 0; i < count; ++i)
        put_varint(out, i == 0 ? pos[0] : pos[i] - pos[i - 1]);
}

// Reads `count` positions (first, then gaps >= 1), each < n.
void read_positions(ByteReader &r, uint64_t count, uint64_t n, uint64_t *out) {
    uint64_t prev = 0;
    for (uint64_t i = 0; i < count; ++i) {
        const uint64_t d = r.varint();
        if (i > 0 && d == 0)
            r.malformed("positions not strictly ascending");
        if (i > 0 && d >= n - prev)
            r.malformed("position out of range");
        const uint64_t p = i == 0 ? d : prev + d;
        if (p >= n)
            r.malformed("position " + std::to_string(p) + " out of range (n = " + std::to_string(n) + ")");
        out[i] = p;
        prev = p;
    }
}

std::string header(const Plan &p, uint8_t mode) {
    std::string out;
    out.push_back('F');
    out.push_back('Z');
    put_u8(out, kFedZipVersion);
    put_u8(out, mode);
    put_varint(out, p.n);
    put_varint(out, p.positions.size());
    put_u8(out, static_cast<uint8_t>(p.centroids.size()));
    for (float c : p.centroids)
        put_f32(out, c);
    return out;
}

std::string encode_huffman(const Plan &p) {
    std::string out = header(p, 0);
    if (p.positions.size() < p.n)  // a fully kept tensor needs no positions
        put_positions(out, p.positions.data(), p.positions.size());
    std::vector<uint64_t> freqs(p.centroids.size(), 0);
    for (uint8_t s : p.symbols)
        ++freqs[s];
    const std::vector<uint8_t> lengths = huffman_code_lengths(freqs);
    const std::vector<uint64_t> codes = canonical_codes(lengths);
    for (uint8_t l : lengths)
        put_u8(out, l);
    uint64_t acc = 0;  // MSB-first bit accumulator
    unsigned nacc = 0;
    for (uint8_t s : p.symbols) {
        acc = (acc << lengths[s]) | codes[s];
        nacc += lengths[s];
        while (nacc >= 8) {
            nacc -= 8;
            out.push_back(static_cast<char>((acc >> nacc) & 0xff));
        }
        acc &= (uint64_t(1) << nacc) - 1;  // nacc < 8 here
    }
    if (nacc > 0)
        out.push_back(static_cast<char>((acc << (8 - nacc)) & 0xff));
    return out;
}

std::string encode_doa(const Plan &p) {
    std::string out = header(p, 1);
    std::vector<std::vector<uint64_t>> per(p.centroids.size());
    for (size_t i = 0; i < p.positions.size(); ++i)
        per[p.symbols[i]].push_back(p.positions[i]);
    for (const auto &list : per) {
        put_varint(out, list.size());
        put_positions(out, list.data(), list.size());
    }
    return out;
}

}  // namespace

std::vector<float> kmeans_1d(const float *values, size_t n, uint32_t k, uint32_t iterations) {
    if (n == 0 || k == 0)
        return {};
    std::vector<double> xs(values, values + n);
    std::sort(xs.begin(), xs.end());
    std::vector<double> prefix(n + 1, 0.0);  // prefix sums: cluster means in O(log n) each
    for (size_t i = 0; i < n; ++i)
        prefix[i + 1] = prefix[i] + xs[i];

    std::vector<double> c;
    for (uint32_t j = 0; j < k; ++j)
        c.push_back(xs[std::min(n - 1, static_cast<size_t>((j + 0.5) / k * static_cast<double>(n)))]);
    c.erase(std::unique(c.begin(), c.end()), c.end());

    for (uint32_t it = 0; it < iterations; ++it) {
        std::vector<double> next(c.size());
        size_t begin = 0;
        for (size_t j = 0; j < c.size(); ++j) {
            // Values up to the midpoint with the next centroid belong to cluster j.
            size_t end = n;
            if (j + 1 < c.size())
                end = static_cast<size_t>(
                    std::upper_bound(xs.begin(), xs.end(), 0.5 * (c[j] + c[j + 1])) - xs.begin());
            end = std::max(end, begin);
            next[j] = end > begin ? (prefix[end] - prefix[begin]) / static_cast<double>(end - begin) : c[j];
            begin = end;
        }
        if (next == c)
            break;
        c = std::move(next);
    }

    std::vector<float> cf;
    for (double v : c)
        cf.push_back(static_cast<float>(v));
    std::sort(cf.begin(), cf.end());
    cf.erase(std::unique(cf.begin(), cf.end()), cf.end());
    // Drop centroids that no value is nearest to (after the rounding to f32).
    std::vector<char> used(cf.size(), 0);
    for (size_t i = 0; i < n; ++i)
        used[nearest(cf, values[i])] = 1;
    std::vector<float> out;
    for (size_t j = 0; j < cf.size(); ++j)
        if (used[j])
            out.push_back(cf[j]);
    return out;
}

std::vector<uint8_t> huffman_code_lengths(const std::vector<uint64_t> &freqs) {
    const size_t ns = freqs.size();
    std::vector<uint8_t> lengths(ns, 0);
    // Node ids: leaves 0..ns-1, internal nodes after. Ties on frequency go to the
    // node created first, so the tree (and the code) is deterministic.
    using Item = std::tuple<uint64_t, size_t>;  // (frequency, node id)
    std::priority_queue<Item, std::vector<Item>, std::greater<Item>> heap;
    std::vector<size_t> parent;
    for (size_t s = 0; s < ns; ++s) {
        parent.push_back(SIZE_MAX);
        if (freqs[s] > 0)
            heap.emplace(freqs[s], s);
    }
    if (heap.empty())
        return lengths;
    if (heap.size() == 1) {
        lengths[std::get<1>(heap.top())] = 1;
        return lengths;
    }
    while (heap.size() > 1) {
        const auto [fa, a] = heap.top();
        heap.pop();
        const auto [fb, b] = heap.top();
        heap.pop();
        const size_t id = parent.size();
        parent.push_back(SIZE_MAX);
        parent[a] = id;
        parent[b] = id;
        heap.emplace(fa + fb, id);
    }
    for (size_t s = 0; s < ns; ++s) {
        if (freqs[s] == 0)
            continue;
        unsigned depth = 0;
        for (size_t v = s; parent[v] != SIZE_MAX; v = parent[v])
            ++depth;
        if (depth > kMaxCodeLength)
            fail(PCCL_ERR_INVALID_ARGUMENT, "huffman: code longer than 32 bits");
        lengths[s] = static_cast<uint8_t>(depth);
    }
    return lengths;
}

std::vector<uint64_t> canonical_codes(const std::vector<uint8_t> &lengths) {
    std::vector<size_t> order;
    for (size_t s = 0; s < lengths.size(); ++s)
        if (lengths[s] > 0)
            order.push_back(s);
    std::stable_sort(order.begin(), order.end(), [&](size_t a, size_t b) { return lengths[a] < lengths[b]; });
    std::vector<uint64_t> codes(lengths.size(), 0);
    uint64_t code = 0;
    unsigned prev = order.empty() ? 0 : lengths[order[0]];
    for (size_t s : order) {
        code <<= (lengths[s] - prev);
        prev = lengths[s];
        codes[s] = code++;
    }
    return codes;
}

std::vector<float> fedzip_quantize(const FedZipOptions &opts, const float *values, size_t n) {
    const Plan p = make_plan(opts, values, n);
    std::vector<float> out(n, 0.0f);
    for (size_t i = 0; i < p.positions.size(); ++i)
        out[p.positions[i]] = p.centroids[p.symbols[i]];
    return out;
}

std::string fedzip_encode(const FedZipOptions &opts, const float *values, size_t n) {
    const Plan p = make_plan(opts, values, n);
    std::string a = encode_huffman(p);
    std::string b = encode_doa(p);
    return b.size() < a.size() ? b : a;
}

int fedzip_mode(std::string_view data) {
    if (data.size() < 4 || data[0] != 'F' || data[1] != 'Z')
        fail(PCCL_ERR_PROTOCOL, "fedzip: bad magic");
    return static_cast<uint8_t>(data[3]);
}

uint64_t fedzip_default_max_n(std::string_view data) { return uint64_t(data.size()) * kFedZipMinDensityInv; }

std::vector<float> fedzip_decode(std::string_view data) { return fedzip_decode(data, fedzip_default_max_n(data)); }

std::vector<float> fedzip_decode(std::string_view data, uint64_t max_n) {
    ByteReader r(data, "fedzip");
    if (r.remaining() < 4 || data[0] != 'F' || data[1] != 'Z')
        r.malformed("bad magic (not a FedZip blob)");
    r.u8();
    r.u8();
    const uint8_t version = r.u8();
    if (version != kFedZipVersion)
        r.malformed("unsupported version " + std::to_string(version));
    const uint8_t mode = r.u8();
    if (mode > 1)
        r.malformed("unknown mode " + std::to_string(mode));
    const uint64_t n = r.varint();
    if (n > max_n)
        r.malformed("dense length " + std::to_string(n) + " exceeds the expected " + std::to_string(max_n));
    const uint64_t kept = r.varint();
    if (kept > n)
        r.malformed("kept count exceeds n");
    const uint8_t nc = r.u8();
    if (nc > kMaxClusters || (nc == 0) != (kept == 0))
        r.malformed("bad cluster count " + std::to_string(nc));
    std::vector<float> centroids(nc);
    for (auto &c : centroids) {
        c = r.f32();
        if (!std::isfinite(c))
            r.malformed("non-finite centroid");
    }
    // Every kept entry costs at least one position byte, or (mode 0, all kept) one code bit.
    if ((mode == 0 && kept == n ? (kept + 7) / 8 : kept) > r.remaining())
        r.malformed("truncated: " + std::to_string(kept) + " entries announced");
    std::vector<float> out(n, 0.0f);

    if (mode == 0) {
        std::vector<uint64_t> pos(kept);
        if (kept < n)
            read_positions(r, kept, n, pos.data());
        else
            for (uint64_t i = 0; i < kept; ++i)
                pos[i] = i;
        std::vector<uint8_t> lengths(nc);
        uint64_t kraft = 0;  // sum of 2^(32 - len): <= 2^32 for a prefix code
        for (auto &l : lengths) {
            l = r.u8();
            if (l > kMaxCodeLength)
                r.malformed("code length " + std::to_string(l) + " too long");
            if (l > 0)
                kraft += uint64_t(1) << (kMaxCodeLength - l);
        }
        if (kraft > (uint64_t(1) << kMaxCodeLength))
            r.malformed("code lengths do not form a prefix code");
        const std::vector<uint64_t> codes = canonical_codes(lengths);
        // Canonical decoding tables: per length, the first code and the symbols in order.
        std::vector<size_t> order;
        for (size_t s = 0; s < nc; ++s)
            if (lengths[s] > 0)
                order.push_back(s);
        std::stable_sort(order.begin(), order.end(), [&](size_t a, size_t b) { return lengths[a] < lengths[b]; });
        std::vector<uint64_t> first(kMaxCodeLength + 1, 0), count(kMaxCodeLength + 1, 0),
            start(kMaxCodeLength + 1, 0);
        for (size_t i = 0; i < order.size(); ++i) {
            const unsigned l = lengths[order[i]];
            if (count[l]++ == 0) {
                first[l] = codes[order[i]];
                start[l] = i;
            }
        }
        size_t byte = r.position();
        size_t bitpos = 0;  // bits consumed after `byte`
        auto next_bit = [&]() -> unsigned {
            const size_t b = byte + bitpos / 8;
            if (b >= data.size())
                r.malformed("truncated symbol stream");
            const unsigned bit = (static_cast<uint8_t>(data[b]) >> (7 - bitpos % 8)) & 1u;
            ++bitpos;
            return bit;
        };
        for (uint64_t i = 0; i < kept; ++i) {
            uint64_t code = 0;
            size_t sym = SIZE_MAX;
            for (unsigned l = 1; l <= kMaxCodeLength; ++l) {
                code = (code << 1) | next_bit();
                if (count[l] && code >= first[l] && code - first[l] < count[l]) {
                    sym = order[start[l] + (code - first[l])];
                    break;
                }
            }
            if (sym == SIZE_MAX)
                r.malformed("invalid Huffman code at entry " + std::to_string(i));
            out[pos[i]] = centroids[sym];
        }
        const size_t used = (bitpos + 7) / 8;
        if (bitpos % 8 && ((static_cast<uint8_t>(data[byte + used - 1]) << (bitpos % 8)) & 0xff))
            r.malformed("non-zero padding bits");
        r.bytes(used);
        r.expect_end();
        return out;
    }

    std::vector<char> seen(n, 0);
    uint64_t total = 0;
    std::vector<uint64_t> pos;
    for (size_t c = 0; c < nc; ++c) {
        const uint64_t cnt = r.varint();
        if (cnt > kept - total)
            r.malformed("cluster counts exceed the kept count");
        total += cnt;
        pos.resize(cnt);
        read_positions(r, cnt, n, pos.data());
        for (uint64_t p : pos) {
            if (seen[p])
                r.malformed("position " + std::to_string(p) + " in two clusters");
            seen[p] = 1;
            out[p] = centroids[c];
        }
    }
    if (total != kept)
        r.malformed("cluster counts do not add up to the kept count");
    r.expect_end();
    return out;
}

}  // namespace pccl::compress
