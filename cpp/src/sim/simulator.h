// A one-process, seeded, deterministic simulator of the membership and commit
// protocols: N simulated peers (8 ... 1,000) on simulated links, each running
// the real pure protocol objects of mesh/ (view.h: next view, coordinator,
// commit acceptance; commit.h: the topology round and the op vote) and a ring
// all-reduce (reduce-scatter + all-gather) with the real reduce kernels
// (collectives/reduce.h) over small f32 vectors of integers, so results are
// exact and comparable bit for bit. Faults: deaths, joins, freezes (found by
// the heartbeat bound), partitions and their heal, slow links. Every run
// checks the invariants listed at SimReport::violations; the same seed gives
// the same run (a failing seed is replayed with it).
//
// What it does not model (so its figures are protocol figures, not a
// benchmark of the implementation): heartbeats are not messages (a silence
// is noticed analytically: at its start + one-way delay + the bound + a tick
// phase), links are reliable FIFO pairs with a delay and a rate but no shared
// uplink, no loss and no congestion; a partition holds the frames crossing it
// until it heals (TCP retransmits); signatures, addresses, relays, the ring
// order's RTT input, the data-plane streams and the state sync are not
// simulated; CPU cost is modelled only for encoding a control broadcast and
// for checking signatures of what arrives.
//
// Test-only code: bound privately in _core (pccl_py._core._simulate), not
// part of the public API. Single-threaded; no I/O; no clocks.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "pccl/pccl.h"

namespace pccl::sim {

struct SimConfig {
    uint64_t seed = 1;
    size_t peers = 8;             // members of the first view
    size_t rounds = 3;            // all-reduces per view between two update_topology() calls
    size_t elements = 0;          // f32 elements per all-reduce (0: max(64, peers))
    double timeout_s = PCCL_DEFAULT_TIMEOUT_S;
    double heartbeat_s = PCCL_DEFAULT_HEARTBEAT_TIMEOUT_S;  // capped at timeout_s, as in the mesh
    double join_timeout_s = 60;
    double delay_min_s = 0.001;   // one-way delay of a pair, uniform in [min, max]
    double delay_max_s = 0.030;
    double rate_Bps = 12.5e6;     // per pair (100 Mbit/s)
    int faults = -1;              // faults per run (-1: 1..3, drawn from the seed)
    std::string kinds = "kill,freeze,partition,slow,join";  // the kinds drawn from
    // Test-only: the peer of index 0 returns success from its op as soon as
    // its own data phase is done, without waiting for the vote. The
    // checker must then find runs where it succeeded and the others failed.
    bool break_commit = false;
};

struct SimReport {
    uint64_t seed = 0;
    size_t peers = 0;
    // Each broken invariant, one line each:
    //  - an op (view, seq) succeeded on some members and failed on others
    //    (except across a partition: see partition_splits);
    //  - a result differs from the exact sum of the view's inputs (bit for bit);
    //  - a survivor's op took longer than its bound (the fault-free time of
    //    the op on the links it used + heartbeat + timeout);
    //  - two different views with one epoch held by members of both;
    //  - at the end (faults healed): a live member's view not held by every
    //    live member of it, a live peer outside every view, or a peer still
    //    running when the simulated time limit struck (a hang).
    std::vector<std::string> violations;
    std::vector<std::string> faults;      // what was injected, when (simulated seconds)
    std::vector<double> op_latency_s;     // every successful op of two or more members, start to return
    std::vector<double> recovery_s;       // death/freeze/partition -> a survivor's first success without the lost
    std::vector<double> admission_s;      // a join -> the joiner's first successful op
    size_t ops_ok = 0, ops_failed = 0, views = 0;
    // Ops that succeeded on one side of a partition and failed on the other
    // (every such pair of members was separated during the op): what the
    // design accepts of a partition (the sides continue apart), not counted
    // as violations.
    size_t partition_splits = 0;
    // Ops that succeeded on the members and failed on one they removed
    // meanwhile (it was frozen: the commit removing it raced its vote on
    // resume). Benign (it rejoins and sync_state gives it the state), counted.
    size_t removed_splits = 0;
    uint64_t events = 0, messages = 0;
    // Of `messages`: the op votes, and the done entries (id + signature) they named.
    uint64_t vote_messages = 0, vote_entries = 0;
    double sim_time_s = 0;
};

// Runs one seeded scenario. Deterministic: the same config gives the same report.
SimReport simulate(const SimConfig &config);

}  // namespace pccl::sim
