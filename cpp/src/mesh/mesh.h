// Membership without a master. Every member holds the whole view
// (epoch, member ids in ring order, their addresses); the coordinator is the lowest
// live id of the view, so coordination moves when members die. View changes
// happen only in update_topology(), a collective point of all members, and
// every installed view has a higher epoch than the one before.
//
// Control protocol (msgpack maps in control frames, field "t" is the type):
//   join    {id, inc, addrs, rsig}  joiner -> its bootstrap peer (answered by join_ack)
//   pending {id, inc, addrs, rsig}  member -> every member: someone wants in
//   ready   {epoch, members, pending, relayed}
//                                   member -> coordinator: I am in update_topology (with
//                                   its view, the joiners it knows of and the members it
//                                   reaches only through a relay, which the coordinator
//                                   keeps apart in the ring order of the next view;
//                                   re-sent every timeout/4 while waiting). A
//                                   receiver with a newer view answers with a commit of
//                                   it; one with an older view installs the sender's.
//   commit  {epoch, members, prev, prev_ids, by, sig}
//                                   coordinator -> members (and, from every member once
//                                   it is installed, -> the joiners it admits): install it.
//                                   Signed by its coordinator `by` (Ed25519, see
//                                   commit_bytes), so it can be forwarded verbatim and is
//                                   checked against the view it replaces (prev, prev_ids):
//                                   a member installs it only when `by` is in that view and
//                                   every lower id of it is dead here (then `by` is its
//                                   coordinator); "ready" carries the sender's commit as
//                                   "commit" so a coordinator that missed it can verify it.
//                                   A joiner has no view to check against: it accepts a
//                                   commit that admits its incarnation and whose signer is
//                                   the coordinator of the view it names, so a hostile
//                                   member could mislead a joiner (not any member) with a
//                                   view of its own making.
//   vote    {epoch, tag, seq, done, dsig, nack, fail, status, msg}
//                                   member -> members: the commit of one op; dsig[i] is
//                                   done[i]'s own signature of being done with the op, so
//                                   gossiped done votes cannot be forged by who passes them on
//
// Commit of an op (all or nothing across the view). A member that finished its
// data phase votes done; votes are gossiped, each member re-broadcasting the
// set of members it knows to be done whenever it grows. A member succeeds once
// every member of the view is known done (then all of them hold the result)
// and another member's vote carried its own done signature back (an echo: see
// OpVote in commit.h; the decisions live there, this class feeds them).
// A member that fails its data phase votes fail: nobody can then reach "all
// done", and everyone fails. A fail vote from a member that had voted done
// (its commit timed out) ends the op for those not yet holding every done and
// its echo; one that holds them has succeeded, as those that returned did. For a member X declared dead and not known done,
// each member votes nack X; when every live member has nacked X, nobody ever
// saw X done (whoever had would have gossiped it instead of nacking), so all
// fail (a nack is a promise: the nacked member is never taken as done
// afterwards). Either every member of the view reports success or all of them
// retry (across a partition each side decides alone: see DESIGN.md).
//   addrs   {id, inc, addrs, av, rsig}
//                                   a peer's new addresses (its relay changed), version av;
//                                   every member passes news on once (gossip)
// Records of a peer (join, pending, addrs) carry `rsig`, the peer's own
// signature of (id, inc, addrs, av) (record_bytes), and are passed on only if
// it verifies: a member cannot forge another peer's joiner or addresses.
//
// What a remote peer can make us hold is bounded: control frames at
// kMaxControlBytes; mailboxes only for this epoch and the next (frames and
// votes for others are dropped, mailboxes dropped with their epoch), only for
// ops less than kSeqWindow ahead of ours on a tag, at most kMaxUnclaimedOps of them
// not opened here, holding at most kMaxUnclaimedBytes of frames (beyond that
// the op fails here, and through the abort everywhere). Frames and votes come
// only from members of the op's view (for the next epoch: of ours or a
// pending joiner; entries from others are dropped when it is installed).
//   bye     {}                      a peer closing on purpose
// Liveness (mesh/liveness.h): heartbeat frames every heartbeat/4 (heartbeat =
// min(heartbeat_timeout, timeout)) on one connection per member, sent by the
// liveness thread from the routing snapshot (so a peer busy in Python, in a
// long op or in a slow view change still beats); a member silent for
// `heartbeat` or with no connection left is declared dead,
// except when its last connection was relayed (the relay died, not it): then
// the ops in flight fail and the member is redialed at its latest addresses.
//
// Responsibilities and locks. Mesh keeps the membership (views, joiners, the
// topology round, the commit of views, address gossip) under mu_. It hands
// routing an immutable snapshot of it (Routes, published under mu_ whenever
// it changes) and leaves the rest to three parts with their own locks, taken
// in this order: mu_ -> Router (mesh/router.h: mailboxes and zero-copy
// targets; data frames and votes go there without mu_) -> Links
// (mesh/links.h: ready links and the stream pool, dialed in the background
// when a view is installed; an op's thread never dials). Liveness's lock is a
// leaf. MeshChannel (mesh/mesh_channel.h) runs an op on Router and Links only.
#pragma once

#include <atomic>
#include <deque>
#include <tuple>
#include <condition_variable>
#include <map>
#include <memory>
#include <mutex>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "common/msgpack.h"
#include "mesh/channel.h"
#include "mesh/commit.h"
#include "mesh/links.h"
#include "mesh/liveness.h"
#include "mesh/mesh_channel.h"
#include "mesh/router.h"
#include "mesh/view.h"
#include "net/peer_id.h"
#include "net/transport.h"

namespace pccl::mesh {

struct MeshConfig {
    std::vector<std::string> listen;
    std::vector<std::string> bootstrap;
    std::string run_key;
    double timeout_s = PCCL_DEFAULT_TIMEOUT_S;  // defaults: pccl.h's, the one place
    double join_timeout_s = PCCL_DEFAULT_JOIN_TIMEOUT_S;
    double heartbeat_timeout_s = PCCL_DEFAULT_HEARTBEAT_TIMEOUT_S;  // capped at timeout_s (see the liveness note above)
    bool ring_by_id = false;  // ring in id order (relay-only links still avoided), not by measured RTTs
    uint32_t streams = PCCL_DEFAULT_STREAMS;
    std::string key_file;
    net::TransportOptions transport;  // congestion control, buffers, relays, hole punching
};

constexpr size_t kMaxControlBytes = size_t(4) << 20;
// Addresses a removed peer keeps to ask to join again.
constexpr size_t kMaxRejoinAddrs = 16;

class Mesh : public net::TransportHandler, private Liveness::Host {
public:
    // Listens, loads or creates the identity and, with a bootstrap, connects and
    // authenticates to the first reachable bootstrap peer. It asks to join only
    // in its first update_topology(): a joiner may take minutes to load its
    // model, and the members must never wait on that.
    explicit Mesh(MeshConfig config);
    ~Mesh() override;

    const std::string &self_id() const { return self_id_; }
    std::vector<std::string> addrs() const;
    View view() const;
    bool is_member() const;
    double timeout_s() const { return config_.timeout_s; }
    uint32_t streams() const { return config_.streams; }
    // The transport (diagnostics: reachability, links); valid while the mesh lives.
    net::Transport &transport() { return *transport_; }

    // See the header comment. Blocks until `deadline` (monotonic seconds; <= 0:
    // join_timeout_s from now); throws Error (TIMEOUT, CLOSED, ...).
    void update_topology(double deadline = 0);

    // Blocks until the view has at least n members or until timeout_s: runs
    // update_topology() (a joiner's asks to be admitted) whenever a joiner is
    // pending or another member is in a round, and sleeps on cv_ otherwise.
    // Returns the world size; throws TIMEOUT (or CLOSED, ...).
    size_t wait_for_peers(size_t n, double timeout_s);

    // A channel for the next op on `tag` in the current view.
    std::unique_ptr<Channel> open_channel(uint32_t tag);

    void close();
    bool closed() const { return closed_; }

    // TransportHandler (event-loop thread). Data frames, votes and
    // heartbeats never take the membership lock (router, liveness).
    void on_ready(const net::LinkPtr &c) override;
    void on_frame(const net::LinkPtr &c, net::Frame &&f) override;
    void on_closed(const net::LinkPtr &c) override;
    uint8_t *payload_target(const net::LinkPtr &c, const net::FrameHeader &h) override;
    void on_addrs_changed() override;

    // Test only: holds the membership lock for `seconds` on the calling
    // thread, as a slow view change would (tests/test_mesh_units.py).
    void testing_hold_membership_lock(double seconds);

private:
    void handle_control(const net::LinkPtr &c, const MsgValue &m);
    void add_pending_locked(const Member &m);
    void maybe_commit_locked();
    // Installs `v`; `commit` is its signed commit (nil only for the view a
    // bootstrap peer starts with), kept to be forwarded verbatim.
    void install_locked(View v, MsgValue commit);
    // The coordinator's signed commit of `nv`, the successor of view_.
    MsgValue sign_commit_locked(const View &nv) const;
    // True when `m` is a commit signed by the coordinator of the view it
    // replaces (for a joiner, which has no view yet: a commit admitting this
    // incarnation, consistent with the view it names); `out` then holds it.
    bool verify_commit_locked(const MsgValue &m, View &out, std::string &why) const;
    void sign_record(Member &m) const;
    std::string coordinator_locked() const { return coordinator_of(view_, dead_, self_id_); }
    bool alive_locked(const std::string &id) const;
    void declare_dead_locked(const std::string &id, const std::string &why);
    // The routing snapshot of the membership below, handed to the router
    // (and so to data frames, votes, ops and heartbeats). Called whenever
    // the view, the joiners, the dead or the admitting view change.
    void publish_locked();

    // Caller thread: dials `peer` when no connection is ready.
    net::LinkPtr control_conn(const Member &peer);
    net::LinkPtr dial_member(const Member &peer, const std::string &purpose);
    // Dials every member without a connection (declaring unreachable ones
    // dead) and sends the view to the members in `admitted`.
    void connect_all_members(const std::set<std::string> &admitted);
    // A joiner: sends "join" to a bootstrap peer and waits for its join_ack
    // (caller thread, lock held on entry and exit, released while dialing).
    void ask_to_join(std::unique_lock<std::mutex> &lk, double deadline);
    // Wakes every waiter: update_topology (cv_), every op (mailbox cvs) and
    // the ops waiting for data links.
    void notify_locked();

    // Our transport's addresses changed (a relay reservation was lost or
    // gained): adopt them and tell every member ("addrs").
    void readvertise();
    // The freshest addresses known of each peer override older copies
    // (a view committed by a coordinator that had not heard them yet).
    // Returns true when `m` was news; it is then passed on to the members.
    bool learn_addrs_locked(const Member &m, const std::string &from);
    void apply_fresh_addrs_locked(std::vector<Member> &members) const;
    // Sends `m` to every member of view_ but us and those in `skip`.
    void tell_members_locked(const MsgValue &m, const std::set<std::string> &skip = {});

    // Liveness::Host (its threads; see liveness.h)
    void liveness_tick(double now) override;
    std::vector<std::string> watched() override;
    void beat(const std::string &id) override;
    void silent(const std::vector<std::pair<std::string, std::string>> &who) override;
    std::vector<Member> unlinked() override;
    void relink(const Member &m) override;

    MeshConfig config_;
    Identity ident_;  // signs our commits and records
    std::string self_id_;
    uint64_t incarnation_;
    std::unique_ptr<net::Transport> transport_;

    mutable std::mutex mu_;  // the membership lock: guards everything below up to closed_; never held across a blocking dial or wait on I/O
    std::vector<std::string> addrs_;
    uint64_t addrs_version_ = 0;        // ours (Member::addrs_version)
    std::map<std::string, Member> fresh_addrs_;  // peer id -> its latest re-advertisement
    LinkReports reports_;  // what each member's ready said of its links (for the ring order)
    std::condition_variable cv_;  // view changes, deaths (ops wait on their mailbox's cv)
    bool member_ = false;
    bool removed_ = false;  // not a member because a view removed us (ops raise PEER_LOST, not INVALID_USAGE)
    bool join_acked_ = false;
    bool join_asked_ = false;  // a joiner: its "join" was acknowledged (update_topology sends it)
    std::vector<Multiaddr> boot_;  // a joiner: bootstrap addresses, dialed in update_topology
    net::LinkPtr boot_conn_;       // a joiner: the connection the constructor authenticated
    View admitted_;  // a joiner: the view that admits it, installed by its update_topology()
    MsgValue admitted_commit_;  // its signed commit
    View view_;
    bool view_one_host_ = false;  // one_host() of view_ as committed (before fresher addresses were applied)
    MsgValue commit_msg_;  // the signed commit that installed view_ (nil for a bootstrap peer's first view)
    std::map<std::string, Member> pending_;             // joiners waiting for admission
    std::map<std::string, net::LinkPtr> joiner_conns_;  // joiners that bootstrapped through us
    TopologyRound round_;  // the readys of the view changes under way
    std::set<std::string> leaving_;                     // said bye (closing on purpose)
    DeadSet dead_;                                      // members of view_ declared dead -> why

    std::atomic<bool> closed_{false};
    std::atomic<bool> started_{false};  // transport_ is set (callbacks may use it)
    std::atomic<uint64_t> transport_addrs_seen_{0};  // Transport::addrs_version() last adopted
    std::unique_ptr<Router> router_;  // op routing (its own lock, after mu_); made once self_id_ is known
    Links links_;        // ready links and the stream pool (its own lock, after the router's)
    Liveness liveness_;  // heartbeats, redials (its own threads and lock)
};

}  // namespace pccl::mesh
