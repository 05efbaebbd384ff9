// Op routing: the mailboxes of ops (their frames and votes) and the zero-copy
// receive targets, under the router's own lock. What routing needs of the
// membership (the view, pending joiners, the dead) is an immutable snapshot,
// Routes, that the mesh publishes under its membership lock whenever that
// changes; data frames and votes read it under the router's lock only, so
// they never wait on a view change, a dial or a membership message.
//
// Locking: the mesh's membership lock (Mesh::mu_) may be held when the
// router's is taken, never the other way round; the router's lock may be
// held when the stream pool's (Links) is taken. A MeshChannel waits on its
// mailbox's cv with the router's lock (mutex()).
//
// What a remote peer can make us hold is bounded (see mesh.h): mailboxes only
// for this epoch and the next, for ops less than kSeqWindow ahead of ours on
// a tag, at most kMaxUnclaimedOps not opened here, holding at most
// kMaxUnclaimedBytes of early frames.
#pragma once

#include <condition_variable>
#include <cstdint>
#include <deque>
#include <map>
#include <memory>
#include <mutex>
#include <set>
#include <string>
#include <tuple>
#include <vector>

#include "common/msgpack.h"
#include "mesh/commit.h"
#include "mesh/view.h"
#include "net/transport.h"

namespace pccl::mesh {

struct OpKey {
    uint64_t epoch;
    uint32_t tag;
    uint32_t seq;
    bool operator<(const OpKey &o) const {
        return std::tie(epoch, tag, seq) < std::tie(o.epoch, o.tag, o.seq);
    }
};

// Frames and votes of one op, filled by the event loop, drained by the op's
// thread (under the router's lock).
struct Mailbox {
    std::deque<std::pair<std::string, net::Frame>> frames;  // (sender id, frame)
    bool aborted = false;  // some member failed the op
    pccl_status_t abort_status = PCCL_OK;
    std::string abort_message;
    OpVote vote;                         // sized once the op's view is known
    std::vector<std::string> done_sigs;  // rank -> its signature of done (done_bytes), gossiped with it
    // Votes that arrived before the op's view was known here (an op of the
    // next epoch): kept by id, replayed into `vote` when that view is installed.
    std::map<std::string, std::string> early_done;             // member id -> its signature of done
    std::map<std::string, std::set<std::string>> early_nacks;  // dead id -> who nacked it
    std::condition_variable cv;  // the op's thread waits here (with Router::mutex())
    // Zero-copy destinations (Channel::expect), keyed by (chunk, sub).
    struct Target {
        uint8_t *ptr;
        size_t len;
        uint64_t writer = 0;  // id of the connection writing into it now (0: none)
        bool done = false;
    };
    std::map<std::pair<uint32_t, uint32_t>, Target> targets;
    size_t writing = 0;  // targets with a writer
    bool opened = false;       // an op of ours drains it (before: frames count as unclaimed)
    size_t early_bytes = 0;    // bytes of `frames` that arrived before it was opened
    std::string abort_from;    // who failed the op (a vote), to drop it if not a member of the view
};

constexpr size_t kMaxUnclaimedBytes = size_t(1) << 30;
constexpr size_t kMaxUnclaimedOps = 4096;
constexpr uint32_t kSeqWindow = 64;

// What a member signs when it is done with an op's data phase.
std::string done_bytes(const OpKey &k, const std::string &id);

// The membership as routing sees it (one immutable snapshot).
struct Routes {
    bool member = false;
    View view;                      // ours (valid when member)
    View admitted;                  // a joiner: the view that admits it (empty: none yet)
    std::set<std::string> pending;  // joiners we know of
    DeadSet dead;                   // members of `view` declared dead -> why
    bool closed = false;
};

class Router {
public:
    // gossip_gap_s: OpVote's gossip gap (kept well below the heartbeat bound).
    Router(std::string self_id, double gossip_gap_s);

    // Swaps in a new snapshot (caller: the mesh, under its membership lock)
    // and wakes every op. When it installs a view (a new epoch, or the first
    // as a member), the ops of other epochs fail, early news of this epoch's
    // ops keeps only what its members said, and the sequence numbers restart.
    void publish(std::shared_ptr<const Routes> routes);
    std::shared_ptr<const Routes> routes() const;

    // Event-loop side (never takes the membership lock).
    void on_data(const net::LinkPtr &c, net::Frame &&f);
    void on_vote(const std::string &from, const MsgValue &m);
    uint8_t *payload_target(const net::LinkPtr &c, const net::FrameHeader &h);
    // The frame connection `conn` was writing into a target is complete (or
    // will never be): the target is free again, its op may go on.
    void release_target(uint64_t conn, bool completed);

    // Caller side. open(): the next op on `tag` in the snapshot's view (the
    // caller checked that we are a member). release(): the op is over; its
    // late frames are dropped.
    struct Opened {
        OpKey key;
        std::shared_ptr<Mailbox> mailbox;
    };
    Opened open(uint32_t tag);
    void release(const OpKey &k);
    // Whether an op of `epoch` is in flight (its mailbox is held by a channel).
    bool busy(uint64_t epoch) const;
    // Fails every op of the current view not failed yet (PEER_LOST).
    void abort_epoch(const std::string &why);
    void notify_all();

    // The lock MeshChannel holds while it reads its mailbox (and waits on
    // its cv); routes_locked() is the snapshot then.
    std::mutex &mutex() const { return mu_; }
    const Routes &routes_locked() const { return *routes_; }

private:
    bool accept_op_locked(const OpKey &k, const std::string &from) const;
    const View *op_view_locked(uint64_t epoch) const;
    void size_vote_locked(Mailbox &mb, const View &v) const;
    std::shared_ptr<Mailbox> mailbox_locked(const OpKey &k);
    void drop_mailbox_locked(std::map<OpKey, std::shared_ptr<Mailbox>>::iterator it);
    void installed_locked();
    void release_target_locked(uint64_t conn, bool completed);
    void notify_locked();

    const std::string self_id_;
    const double gossip_gap_s_;
    mutable std::mutex mu_;  // guards everything below and every Mailbox
    std::shared_ptr<const Routes> routes_;
    std::map<uint32_t, uint32_t> next_seq_;  // tag -> next op sequence in this epoch
    std::map<OpKey, std::shared_ptr<Mailbox>> mailboxes_;
    // connection id -> the op (mailbox) and (chunk, sub) it is writing into
    std::map<uint64_t, std::pair<std::shared_ptr<Mailbox>, std::pair<uint32_t, uint32_t>>> writing_;
    std::set<OpKey> finished_;    // ops of this epoch whose late frames are dropped
    size_t unclaimed_bytes_ = 0;  // sum of Mailbox::early_bytes
    size_t unclaimed_ops_ = 0;    // mailboxes not opened here
};

}  // namespace pccl::mesh
