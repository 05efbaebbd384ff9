#include "mesh/ring_order.h"

#include <algorithm>
#include <cstdint>
#include <limits>

namespace pccl::mesh {

namespace {

// Hysteresis: an order is kept while within 20% + 5 ms (per hop) of the best,
// above the noise of probe RTTs on a loaded host, well below the gap between
// links inside a region (5-10 ms) and across oceans (80-150 ms).
constexpr double kKeepRatio = 1.2;
constexpr double kKeepSlackS = 5e-3;

bool is_relayed(const RelayedPairs &relayed, const std::string &a, const std::string &b) {
    return a < b ? relayed.count({a, b}) > 0 : relayed.count({b, a}) > 0;
}

// Directed costs between the ids by index: c[i * n + j] for i -> j.
struct Matrix {
    size_t n = 0;
    std::vector<double> c;
    std::vector<uint8_t> r;  // relayed
    double at(size_t i, size_t j) const { return c[i * n + j]; }
    bool relayed(size_t i, size_t j) const { return r[i * n + j] != 0; }
};

Matrix build(const std::vector<std::string> &ids, const RelayedPairs &relayed, const LinkCosts &rtt) {
    Matrix m;
    m.n = ids.size();
    m.c.assign(m.n * m.n, -1);
    m.r.assign(m.n * m.n, 0);
    std::vector<double> known;
    for (size_t i = 0; i < m.n; ++i)
        for (size_t j = 0; j < m.n; ++j) {
            if (i == j) continue;
            m.r[i * m.n + j] = is_relayed(relayed, ids[i], ids[j]);
            auto it = rtt.find({ids[i], ids[j]});
            if (it == rtt.end()) it = rtt.find({ids[j], ids[i]});
            if (it != rtt.end() && it->second >= 0) {
                m.c[i * m.n + j] = it->second;
                known.push_back(it->second);
            }
        }
    double fill = 0;
    if (!known.empty()) {
        std::nth_element(known.begin(), known.begin() + known.size() / 2, known.end());
        fill = known[known.size() / 2];
    }
    for (auto &x : m.c)
        if (x < 0) x = fill;
    return m;
}

RingCost cost_of(const Matrix &m, const std::vector<size_t> &order) {
    RingCost k;
    const size_t n = order.size();
    for (size_t i = 0; i < n; ++i) {
        if (n == 2 && i == 1) break;  // two members: one link, not two
        const size_t a = order[i], b = order[(i + 1) % n];
        k.relayed += m.relayed(a, b);
        k.bottleneck = std::max(k.bottleneck, m.at(a, b));
        k.total += m.at(a, b);
    }
    return k;
}

bool better(const RingCost &a, const RingCost &b) {
    if (a.relayed != b.relayed) return a.relayed < b.relayed;
    if (a.bottleneck != b.bottleneck) return a.bottleneck < b.bottleneck;
    return a.total < b.total;
}

// Held-Karp from node 0 over edges costing at most `limit`: the cycle of
// least (relayed hops, then total RTT). Empty when no cycle qualifies.
std::vector<size_t> held_karp(const Matrix &m, double limit) {
    const size_t n = m.n, full = (size_t(1) << (n - 1)) - 1;
    constexpr double kInf = std::numeric_limits<double>::infinity();
    constexpr double kRelayWeight = 1e9;  // seconds: above any sum of RTTs
    auto w = [&](size_t a, size_t b) {
        return m.at(a, b) > limit ? kInf : m.at(a, b) + (m.relayed(a, b) ? kRelayWeight : 0.0);
    };
    // dp[mask][j]: least cost of a path 0 -> ... -> j visiting exactly the
    // nodes of mask (bit k-1 = node k).
    std::vector<double> dp((full + 1) * n, kInf);
    std::vector<uint8_t> from((full + 1) * n, 0);
    for (size_t j = 1; j < n; ++j) dp[(size_t(1) << (j - 1)) * n + j] = w(0, j);
    for (size_t mask = 1; mask <= full; ++mask)
        for (size_t j = 1; j < n; ++j) {
            const double here = dp[mask * n + j];
            if (!(mask >> (j - 1) & 1) || here == kInf) continue;
            for (size_t k = 1; k < n; ++k) {
                if (mask >> (k - 1) & 1) continue;
                const size_t next = mask | (size_t(1) << (k - 1));
                const double v = here + w(j, k);
                if (v < dp[next * n + k]) dp[next * n + k] = v, from[next * n + k] = static_cast<uint8_t>(j);
            }
        }
    double best = kInf;
    size_t last = 0;
    for (size_t j = 1; j < n; ++j) {
        const double v = dp[full * n + j] + (n == 2 ? 0.0 : w(j, 0));
        if (v < best) best = v, last = j;
    }
    if (best == kInf) return {};
    std::vector<size_t> order(n);
    size_t mask = full;
    for (size_t pos = n - 1; pos > 0; --pos) {
        order[pos] = last;
        const size_t prev = from[mask * n + last];
        mask &= ~(size_t(1) << (last - 1));
        last = prev;
    }
    order[0] = 0;
    return order;
}

std::vector<size_t> exact(const Matrix &m) {
    std::vector<size_t> best = held_karp(m, std::numeric_limits<double>::infinity());
    const RingCost target = cost_of(m, best);
    // The smallest bottleneck that keeps the fewest relayed hops, then the
    // least total under it. Feasibility grows with the threshold.
    std::vector<double> levels(m.c.begin(), m.c.end());
    std::sort(levels.begin(), levels.end());
    levels.erase(std::unique(levels.begin(), levels.end()), levels.end());
    size_t lo = 0, hi = levels.size();
    while (lo < hi) {
        const size_t mid = (lo + hi) / 2;
        std::vector<size_t> o = held_karp(m, levels[mid]);
        if (!o.empty() && cost_of(m, o).relayed == target.relayed) {
            best = std::move(o);
            hi = mid;
        } else {
            lo = mid + 1;
        }
    }
    return best;
}

std::vector<size_t> heuristic(const Matrix &m) {
    const size_t n = m.n;
    std::vector<size_t> order{0};
    std::vector<uint8_t> used(n, 0);
    used[0] = 1;
    while (order.size() < n) {
        size_t pick = n;
        for (size_t k = 1; k < n; ++k) {
            if (used[k]) continue;
            const size_t a = order.back();
            if (pick == n || m.relayed(a, k) < m.relayed(a, pick) ||
                (m.relayed(a, k) == m.relayed(a, pick) && m.at(a, k) < m.at(a, pick)))
                pick = k;
        }
        used[pick] = 1;
        order.push_back(pick);
    }
    // 2-opt (segment reversals, whole-ring cost: links are directed) while
    // the group is small enough for O(n^3) per pass.
    if (n > 64) return order;
    RingCost cur = cost_of(m, order);
    for (int pass = 0; pass < 20; ++pass) {
        bool improved = false;
        for (size_t i = 1; i + 1 < n; ++i)
            for (size_t j = i + 1; j < n; ++j) {
                std::reverse(order.begin() + i, order.begin() + j + 1);
                const RingCost c = cost_of(m, order);
                if (better(c, cur)) {
                    cur = c;
                    improved = true;
                } else {
                    std::reverse(order.begin() + i, order.begin() + j + 1);
                }
            }
        if (!improved) break;
    }
    return order;
}

std::vector<size_t> indices(const std::vector<std::string> &ids, const std::vector<std::string> &order) {
    std::vector<size_t> out;
    for (const auto &id : order) {
        auto it = std::lower_bound(ids.begin(), ids.end(), id);
        if (it == ids.end() || *it != id) return {};
        out.push_back(static_cast<size_t>(it - ids.begin()));
    }
    return out;
}

}  // namespace

size_t relayed_hops(const std::vector<std::string> &order, const RelayedPairs &relayed) {
    return ring_cost(order, relayed, {}).relayed;
}

RingCost ring_cost(const std::vector<std::string> &order, const RelayedPairs &relayed, const LinkCosts &rtt) {
    std::vector<std::string> ids = order;
    std::sort(ids.begin(), ids.end());
    const Matrix m = build(ids, relayed, rtt);
    return cost_of(m, indices(ids, order));
}

std::vector<std::string> ring_order(const std::vector<std::string> &ids, const RelayedPairs &relayed,
                                    const LinkCosts &rtt, const std::vector<std::string> &current) {
    if (ids.size() <= 2 || (relayed.empty() && rtt.empty())) return ids;  // nothing to choose from
    const Matrix m = build(ids, relayed, rtt);
    const std::vector<size_t> best = ids.size() <= kExactMax ? exact(m) : heuristic(m);
    const RingCost bc = cost_of(m, best);
    // Kept when about as good: the current order, else the id order (so
    // links that differ by noise, e.g. all on one LAN, keep the ring stable).
    std::vector<size_t> sorted(ids.size());
    for (size_t i = 0; i < sorted.size(); ++i) sorted[i] = i;
    for (std::vector<size_t> cur : {current.size() == ids.size() ? indices(ids, current) : std::vector<size_t>{},
                                    sorted}) {
        if (cur.empty() || !std::is_permutation(cur.begin(), cur.end(), best.begin())) continue;
        std::rotate(cur.begin(), std::find(cur.begin(), cur.end(), size_t(0)), cur.end());
        const RingCost cc = cost_of(m, cur);
        const double hops = double(ids.size());
        if (cc.relayed == bc.relayed && cc.bottleneck <= kKeepRatio * bc.bottleneck + kKeepSlackS &&
            cc.total <= kKeepRatio * bc.total + kKeepSlackS * hops) {
            std::vector<std::string> kept;
            for (size_t i : cur) kept.push_back(ids[i]);
            return kept;
        }
    }
    std::vector<std::string> out;
    for (size_t i : best) out.push_back(ids[i]);
    return out;
}

}  // namespace pccl::mesh
