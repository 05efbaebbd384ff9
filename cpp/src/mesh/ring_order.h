// Ring order of a view, chosen by the coordinator from what the members
// measured. Every ring hop carries the whole payload, so the order matters:
//  1. as few relay-only links (two symmetric NATs) as possible;
//  2. then the smallest bottleneck: the slowest hop (largest RTT) of the ring;
//  3. then the smallest total RTT around the ring (the latency of one lap).
// Links are directed (rank r sends to rank r + 1): costs may be asymmetric.
#pragma once

#include <cstddef>
#include <map>
#include <set>
#include <string>
#include <utility>
#include <vector>

namespace pccl::mesh {

// Pairs (a, b) with a < b whose link goes through a relay.
using RelayedPairs = std::set<std::pair<std::string, std::string>>;
// Measured RTT in seconds of the link a -> b, as a reported it ({a, b});
// a missing pair falls back to {b, a}, then to the median of the known ones.
using LinkCosts = std::map<std::pair<std::string, std::string>, double>;

struct RingCost {
    size_t relayed = 0;
    double bottleneck = 0;  // largest hop RTT
    double total = 0;       // sum of hop RTTs
};

// The cost of the ring `order` (two members: one link).
RingCost ring_cost(const std::vector<std::string> &order, const RelayedPairs &relayed, const LinkCosts &rtt);

// The best cyclic order of `ids` (sorted, distinct), starting at the lowest
// id: exact up to kExactMax members (Held-Karp per bottleneck threshold),
// nearest neighbour plus 2-opt above. `current` (the previous view's order
// of these ids, possibly empty), else the id order, is kept when it is within
// the hysteresis of the best (same relayed hops, bottleneck within 20% + 5 ms,
// total within 20% + 5 ms per hop), so noisy measurements do not reshuffle the ring every round
// and links that differ only by noise keep the id order. Deterministic:
// the same input gives the same order.
std::vector<std::string> ring_order(const std::vector<std::string> &ids, const RelayedPairs &relayed,
                                    const LinkCosts &rtt = {}, const std::vector<std::string> &current = {});

constexpr size_t kExactMax = 12;

// The number of relayed neighbour pairs of the ring `order`.
size_t relayed_hops(const std::vector<std::string> &order, const RelayedPairs &relayed);

}  // namespace pccl::mesh
