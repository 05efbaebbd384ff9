// The two vote protocols of the mesh, pure: no sockets, threads, clocks or
// locks. The Mesh (mesh.cpp) and the simulator (sim/) feed them the messages
// they received and what they know of who is dead, and act on the answers
// (send a commit, broadcast a vote, return or fail the op). Signatures stay at
// the edge: a done vote reaches OpVote only after its signature checked out.
//
//  - TopologyRound: the view change. Every member in update_topology() sends
//    "ready" to the coordinator of its view; the coordinator commits the next
//    view (view.h: next_view) once every live member is ready.
//  - OpVote: the commit of one op (all or nothing across its view); see the
//    protocol note in mesh.h.
#pragma once

#include <cstdint>
#include <map>
#include <set>
#include <string>
#include <vector>

#include "mesh/view.h"
#include "pccl/pccl.h"

namespace pccl::mesh {

class TopologyRound {
public:
    // What a ready of `their_epoch` asks of a member holding `our_epoch`.
    enum class ReadyAction {
        answer_with_commit,  // the sender missed a commit we hold: send it ours
        adopt_their_commit,  // we missed one: install the sender's (if it verifies), then record
        record,              // same view: count it
    };
    static ReadyAction classify(uint64_t their_epoch, uint64_t our_epoch);

    void ready(uint64_t epoch, const std::string &from) { ready_[epoch].insert(from); }
    // True when `self` coordinates `v` (lowest live id) and every live member
    // of it is ready: the coordinator commits now.
    bool complete(const View &v, const DeadSet &dead, const std::string &self) const;
    // Whether some member other than `self` is in the round of `epoch` (then
    // we must take part, or it would wait for us).
    bool others_ready(uint64_t epoch, const std::string &self) const;
    // A view of `epoch` was installed: rounds of older views are over.
    void installed(uint64_t epoch);

private:
    std::map<uint64_t, std::set<std::string>> ready_;  // epoch -> members in update_topology
};

// A set of ranks of one op's view (bit per rank): votes merge by OR, so a
// round of gossip among 1,000 members stays cheap.
class RankSet {
public:
    RankSet() = default;
    explicit RankSet(size_t n) : n_(n), words_((n + 63) / 64, 0) {}
    size_t universe() const { return n_; }
    bool test(size_t r) const { return r < n_ && (words_[r / 64] >> (r % 64)) & 1; }
    bool set(size_t r);  // true if it was not set; ranks >= universe() are ignored
    bool reset(size_t r);
    size_t count() const { return count_; }
    // Adds every member of `o` (same universe); returns how many were new.
    size_t merge(const RankSet &o);
    // Removes every member of `o` (same universe); returns how many went.
    size_t subtract(const RankSet &o);
    bool covers(const RankSet &o) const;  // every rank of `o` is here
    std::vector<size_t> ranks() const;

private:
    size_t n_ = 0, count_ = 0;
    std::vector<uint64_t> words_;
};

// Done votes travel as gossip, cut to what each member may lack: a vote to
// member r names only the done members r has neither been sent by us nor
// shown us in its own votes (plus r itself once, its echo), so a round
// among n members costs O(n^2) entries, not the O(n^3) of re-broadcasting
// the whole set on every change. Forwarding news that is not urgent waits
// for the gossip gap, so a member learning the others one by one sends a
// few votes, not one per arrival; it is urgent (sent at once) when it
// carries our own done, when we know every member done (what ends the op),
// or when some member is declared dead (then a forward must beat the nacks).
// The gap must stay well below the heartbeat bound: a member that saw X done
// forwards it before anyone can declare X dead and nack it.
constexpr double kMaxGossipGapS = 0.2;
// The gossip gap for a heartbeat bound: far below it (a forward must come
// before the nacks it prevents), never above kMaxGossipGapS.
inline double gossip_gap_s(double heartbeat_bound_s) {
    return heartbeat_bound_s / 10 < kMaxGossipGapS ? heartbeat_bound_s / 10 : kMaxGossipGapS;
}

class OpVote {
public:
    OpVote() = default;
    // An op of a view of `size` members in which we hold rank `self`.
    OpVote(size_t size, size_t self, double gossip_gap_s)
        : size_(size), self_(self), gap_s_(gossip_gap_s), done_(size), my_nacks_(size),
          sent_(size, RankSet(size)), shown_(size, RankSet(size)) {}
    bool sized() const { return size_ > 0; }
    size_t size() const { return size_; }

    // Rank `r` is done with the data phase (its own signature checked, by the
    // caller). Returns true when that is news. Ignored for a rank we nacked:
    // a nack promises that we never saw it done, and the others' decision to
    // fail rests on that promise (see judge).
    bool add_done(size_t r);
    // The done set of a vote from rank `from`: add_done for each, and, when
    // it names us, note that our own done vote reached another member.
    void merge_done(const RankSet &s, size_t from);
    // Rank `from` named these ranks done in a vote to us: it holds their
    // signatures, so they need not be forwarded to it.
    void note_shown(size_t from, const RankSet &s);
    // A vote from another member named us done (merge_done does it for a RankSet).
    void note_echo() { echoed_ = true; }
    bool is_done(size_t r) const { return done_.test(r); }
    const RankSet &done() const { return done_; }
    // Rank `by` says it never saw dead rank `dead` done.
    void add_nack(size_t dead, size_t by);
    // A vote naming our whole done set went to every other member (a nack or
    // a failure, which go to all).
    void sent_to_all();

    struct Send {
        size_t to;     // rank
        RankSet done;  // the done members to name in the vote to it
    };
    struct Progress {
        std::vector<Send> sends;  // votes to send now
        double wake_s = 0;        // > 0: forwards wait for the gossip gap; call again at this time
        // Every member is known done and another member is known to have
        // seen us done. The echo matters for a member that was silent (frozen)
        // past the heartbeat bound: the others may have judged it dead, each
        // nacked it, and failed, while it resumes to find every done vote; a
        // member that saw it done never nacks it, so with an echo no
        // unanimous nack of it can exist. (Across a partition the sides may
        // still decide apart: no protocol without a quorum avoids that.)
        bool succeeded = false;
    };
    // After our own data phase (add_done(self) first): call whenever
    // something arrived, and at wake_s. `now_s` is any monotonic clock;
    // `someone_dead`: a member of the op's view is declared dead here.
    Progress progress(double now_s, bool someone_dead);

    struct Judgement {
        std::vector<size_t> nack;  // dead ranks to nack now (broadcast a vote naming each)
        bool failed = false;       // every live member nacked `lost`: nobody saw it done, all fail
        size_t lost = 0;
    };
    // `dead` are the ranks of this op's view declared dead here.
    Judgement judge(const std::vector<size_t> &dead);

private:
    size_t size_ = 0, self_ = 0;
    double gap_s_ = 0;
    RankSet done_;
    bool echoed_ = false;
    RankSet my_nacks_;
    std::map<size_t, RankSet> nacked_by_;  // dead rank -> who nacked it
    std::vector<RankSet> sent_;   // rank -> the done members our votes named to it
    std::vector<RankSet> shown_;  // rank -> the done members its votes named to us
    double last_forward_s_ = -1e300;
};

}  // namespace pccl::mesh
