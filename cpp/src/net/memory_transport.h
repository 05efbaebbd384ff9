// The in-memory transport: peers of one process reach each other at
// /memory/<n> (libp2p's memory protocol; /memory/0 picks a free n), so a
// whole group can run on threads of one test process, with faults injected
// through memnet:: below.
//
// What it keeps of the TCP transport: the Noise handshake runs message by
// message between the two ends (both peer ids proven, the run key as PSK,
// a dialer without it fails with AUTH_FAILED and the acceptor announces
// nothing), and every delivered frame goes through decode_header() with
// kMaxPayload. What it drops: encryption of frames (they never leave the
// process), relays and hole punching (reachability is "unknown").
//
// Threads: each transport has one delivery thread; every handler callback
// runs there (TransportHandler's contract). A send copies the payload at
// once (a borrowed buffer is free when send() returns; its tracker is done
// then) and queues it on the receiver with its due time (now + the injected
// one-way delay, never before an earlier frame of the same link). A link's
// rtt_s() is the sum of the delays injected both ways (what a probe would
// measure; none injected: -1, nothing measured), so the ring order sees them.
//
// Locking: one process-wide mutex (memnet's) guards the registry, the
// faults and every transport's inbox; a link's own smu_ is taken after it,
// never before. No lock is held while a handler runs.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "net/transport.h"

namespace pccl::net {

struct MemoryCore;  // a transport's state that links and the registry reach (memory_transport.cpp)

class MemoryTransport final : public Transport {
public:
    // Binds every config.listen (/memory/<n>; 0 picks a free n). Throws
    // Error(PCCL_ERR_IO) when an n is taken.
    MemoryTransport(TransportConfig config, TransportHandler *handler);
    ~MemoryTransport() override;
    MemoryTransport(const MemoryTransport &) = delete;
    MemoryTransport &operator=(const MemoryTransport &) = delete;

    LinkPtr dial(const Multiaddr &addr, double timeout_s, const std::string &purpose) override;
    void abort_dials(const std::string &peer_id, const std::string &why) override;
    std::vector<Multiaddr> listen_addrs() const override;
    uint64_t addrs_version() const override { return 0; }  // never changes
    void set_advertised(std::vector<std::string> addrs) override;
    void shutdown() override;
    std::vector<std::string> connection_lines() const override;

private:
    std::shared_ptr<MemoryCore> core_;
};

// Test-only fault injection on the memory transports of this process.
// Peers are named by peer id; every function is thread-safe and takes
// effect at once for frames sent afterwards (delay) or for everything
// queued (partition, freeze). Frames held by a partition or a freeze are
// delivered in order once it ends, as TCP would retransmit them.
namespace memnet {
// One-way delay of frames from `from` to `to` (seconds; 0 removes it).
void set_delay(const std::string &from, const std::string &to, double seconds);
// Breaks every link between a and b, as a reset connection would: both
// ends see the link closed (PCCL_ERR_IO). New dials still work.
size_t drop_links(const std::string &a, const std::string &b);
// Peers in different groups cannot reach each other (frames held, dials
// time out); peers in no group reach everyone. Replaces any partition.
void partition(const std::vector<std::vector<std::string>> &groups);
void heal();  // ends the partition
// The peer's process died: its links close at both ends (its peers see
// PCCL_ERR_PEER_LOST), it can no longer dial or be dialed.
void kill(const std::string &peer);
// The peer stopped (SIGSTOP) or went on (SIGCONT): while frozen nothing is
// delivered to or from it and nobody can dial it; its links stay open.
void freeze(const std::string &peer, bool frozen);
// Hostile input: queues `bytes` as one frame (a 32-byte header, then its
// payload) on a ready link from `from` to `to`, as if that peer had sent
// it; the receiver checks it like any frame (decode_header, the length)
// and closes the link when it is malformed. Returns false when no link.
bool inject(const std::string &from, const std::string &to, const std::string &bytes);
// Ends every fault (delays, partition, freezes; the dead stay dead).
void reset();
}  // namespace memnet

}  // namespace pccl::net
