// The links of a mesh: every ready connection by peer (control messages,
// heartbeats, the links' RTTs and relayed state for the ring order) and the
// stream pool, the `streams` data links we dial to a peer. Installing a view
// dials the ring neighbours' streams in the background (one job per peer,
// on its own thread); an op's thread never dials: data_links() starts the
// job for a peer that has none and waits for it, bounded by the op's
// deadline.
//
// Locking: its own lock, taken after the router's and the membership lock,
// never before; nothing is called out of this class with it held except
// Link::send and Link::close (which never call back synchronously).
#pragma once

#include <condition_variable>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "common/msgpack.h"
#include "mesh/view.h"
#include "net/transport.h"

namespace pccl::mesh {

class Links {
public:
    // Dials `peer` for `purpose` from a caller thread (Mesh::dial_member);
    // throws Error.
    using Dial = std::function<net::LinkPtr(const Member &peer, const std::string &purpose)>;
    Links(uint32_t streams, Dial dial);
    ~Links();
    Links(const Links &) = delete;
    Links &operator=(const Links &) = delete;

    // Ready connections (the transport's on_ready / on_closed).
    void add(const net::LinkPtr &c);
    void remove(const net::LinkPtr &c);
    bool connected(const std::string &peer) const;
    // A ready connection to `peer` whose remote incarnation is `inc`.
    bool connected_as(const std::string &peer, uint64_t inc) const;
    net::LinkPtr ready_link(const std::string &peer) const;
    std::vector<std::string> peers() const;
    // Sends to any ready connection of `peer` (a direct one first: a relayed
    // one may be retired). Returns false if there is none.
    bool send_control(const std::string &peer, const MsgValue &m);
    static bool send_on(const net::LinkPtr &c, const MsgValue &m);
    // One heartbeat frame on one connection of `peer` (a direct one if any).
    void heartbeat(const std::string &peer);
    // Peers we reach only through a relay (every connection to them is relayed).
    std::vector<std::string> relay_only() const;
    // Our measured RTT (seconds) to each peer we have a link to that reports
    // one: the least over its links.
    std::map<std::string, double> rtts() const;

    // `peer` (incarnation `inc`) was declared dead: its links close except
    // one control link (a peer that was only frozen finds there, when it
    // resumes, the commit that removed it instead of an empty socket).
    void close_dead(const std::string &peer, uint64_t inc, const std::string &why);
    // Closes the connections with these ids (an op abandoned mid-frame).
    void close_ids(const std::set<uint64_t> &ids, const std::string &why);
    // A view removed `peer`: `commit` goes out on its links ahead of queued
    // frames, and they close at `at` (monotonic seconds), see reap().
    void retire(const std::string &peer, const MsgValue &commit, double at);
    void reap(double now);

    // The stream pool. install(): `self`'s ring neighbours in `v` get their
    // streams dialed in the background: `streams` of them, or one when the
    // view is on one host (mesh::one_host: striping buys nothing there and
    // every socket costs CPU; MeshChannel then sends on one). Other members
    // (the direct algorithm sends to all) get theirs when an op first asks,
    // as many but at most kOtherStreamsTotal over all of them (at least
    // one each): a direct op among 32 members dials 2 per member, not 8.
    void install(const View &v, const std::string &self, bool one_host);
    static constexpr uint32_t kOtherStreamsTotal = 64;
    // The data links to `peer`, dialed by the pool if missing (at most until
    // `deadline`, monotonic seconds). `check` runs between waits without any
    // lock held and throws to give up (the peer died, the mesh closed).
    // Throws PEER_LOST (or the dial's error) when no link could be had.
    std::vector<net::LinkPtr> data_links(const Member &peer, double deadline, const std::function<void()> &check);
    // Wakes data_links() waiters (a death, a close).
    void notify();
    // Stops the pool (after the transport's shutdown, so dials under way
    // fail fast), joins its jobs and drops every link.
    void close();

private:
    struct Pool {
        std::vector<net::LinkPtr> out;  // data links we dialed
        bool dialing = false;
        std::thread job;
        pccl_status_t error = PCCL_OK;  // the last job's failure
        std::string why;
    };
    void start_locked(const Member &peer);
    uint32_t want_locked(const std::string &peer) const;
    void run_job(Member peer, size_t want);

    const uint32_t streams_;
    const Dial dial_;
    mutable std::mutex mu_;  // guards everything below
    uint32_t want_;           // streams per ring neighbour in the installed view
    uint32_t other_want_;     // streams per other member
    std::set<std::string> neighbours_;
    std::condition_variable cv_;  // a job ended
    bool closing_ = false;
    std::map<std::string, std::vector<net::LinkPtr>> conns_;  // ready connections by peer id
    std::map<std::string, Pool> pool_;
    std::vector<std::pair<net::LinkPtr, double>> retiring_;
};

}  // namespace pccl::mesh
