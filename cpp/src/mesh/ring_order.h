// Ring order of a view: members whose link is relay-only (a symmetric NAT
// defeated hole punching) should not be ring neighbours when another order
// avoids it, since every ring hop carries the whole payload.
#pragma once

#include <set>
#include <string>
#include <utility>
#include <vector>

namespace pccl::mesh {

// Pairs (a, b) with a < b whose link goes through a relay.
using RelayedPairs = std::set<std::pair<std::string, std::string>>;

// A cyclic order of `ids` (sorted, distinct) with as few relayed neighbour
// pairs as possible, starting at the lowest id. Deterministic: every peer
// computing it from the same input gets the same order. Exhaustive up to 9
// members (ties: the lexicographically first), greedy beyond.
std::vector<std::string> ring_order(const std::vector<std::string> &ids, const RelayedPairs &relayed);

// The number of relayed neighbour pairs of the ring `order`.
size_t relayed_hops(const std::vector<std::string> &order, const RelayedPairs &relayed);

}  // namespace pccl::mesh
