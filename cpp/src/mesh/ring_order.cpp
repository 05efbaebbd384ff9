#include "mesh/ring_order.h"

#include <algorithm>

namespace pccl::mesh {

namespace {
bool is_relayed(const RelayedPairs &relayed, const std::string &a, const std::string &b) {
    return a < b ? relayed.count({a, b}) > 0 : relayed.count({b, a}) > 0;
}
}  // namespace

size_t relayed_hops(const std::vector<std::string> &order, const RelayedPairs &relayed) {
    if (order.size() < 2) return 0;
    size_t n = 0;
    for (size_t i = 0; i < order.size(); ++i) {
        if (order.size() == 2 && i == 1) break;  // two members: one link, not two
        n += is_relayed(relayed, order[i], order[(i + 1) % order.size()]);
    }
    return n;
}

std::vector<std::string> ring_order(const std::vector<std::string> &ids, const RelayedPairs &relayed) {
    if (ids.size() <= 3 || relayed.empty()) return ids;  // three or fewer: every pair is adjacent anyway
    constexpr size_t kExhaustiveMax = 9;
    if (ids.size() <= kExhaustiveMax) {
        // The first member stays first (a ring has no start); permute the rest
        // in lexicographic order and keep the first strictly better order.
        std::vector<std::string> cur = ids, best = ids;
        size_t best_hops = relayed_hops(best, relayed);
        while (best_hops > 0 && std::next_permutation(cur.begin() + 1, cur.end())) {
            size_t h = relayed_hops(cur, relayed);
            if (h < best_hops) best = cur, best_hops = h;
        }
        return best;
    }
    // Greedy: from the lowest id, always to the lowest remaining id reachable directly.
    std::vector<std::string> order{ids.front()};
    std::vector<std::string> rest(ids.begin() + 1, ids.end());
    while (!rest.empty()) {
        auto next = std::find_if(rest.begin(), rest.end(),
                                 [&](const std::string &r) { return !is_relayed(relayed, order.back(), r); });
        if (next == rest.end()) next = rest.begin();
        order.push_back(*next);
        rest.erase(next);
    }
    return order;
}

}  // namespace pccl::mesh
