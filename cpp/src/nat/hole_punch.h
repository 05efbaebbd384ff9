// Upgrading a relayed link to a direct one: connection reversal (we are
// public: the other side dials us) and DCUtR-style hole punching.
//
// Reversal (over the relayed link): dcutr-reverse {cid, purpose, addrs}; the
// other side dials the first ip4 address and names `cid` in its hello
// ("rev"), which tells us which request it answers.
//
// Hole punching (A = dialer): A -> B dcutr-connect {addrs}; B -> A
// dcutr-connect {addrs, wait}; A measures the RTT (less B's `wait`), sends
// dcutr-sync, waits RTT/2 and connects; B connects on receiving the sync.
// Each side punches from a freshly bound port P and advertises where its NAT
// maps P: before answering, it connects a second socket bound to P
// (SO_REUSEADDR/SO_REUSEPORT, neither listening) to the relay, a
// "relay-observe" mapping probe whose hello carries the address the relay
// saw. An endpoint-independent NAT (port-preserving or not) maps the punch
// from P the same way. If the probe fails, the guess is (observed ip, P),
// right for port-preserving NATs. Fresh ports, not the listen port, because
// a mesh opens several connections (control + `streams`) to the same peer
// and one local port can hold only one connection per remote endpoint.
//
// Every wait is waits.punch_attempt_s at most and ends at the upgrade's
// deadline (the dial's, capped at waits.upgrade_budget_s; nat/timeouts.h).
#pragma once

#include <map>
#include <mutex>
#include <string>
#include <utility>
#include <vector>

#include "nat/dispatcher.h"
#include "nat/link_table.h"
#include "nat/reachability.h"
#include "nat/self_dials.h"
#include "nat/wire.h"

namespace pccl::nat {

class HolePunch {
public:
    HolePunch(NatContext &ctx, Reachability &reach, SelfDials &self_dials);
    void register_handlers(Dispatcher &d);  // dcutr-connect, dcutr-reverse, dcutr-sync

    // Caller thread: a direct link replacing `relayed` if one can be made
    // by `deadline` (monotonic), else `relayed` itself. A replaced relayed
    // link is closed waits.retire_relayed_s later (frames still in flight
    // on it arrive; the mesh sends on direct links first).
    ConnPtr upgrade(const ConnPtr &relayed, const std::string &purpose, double deadline);

    // Event loop hooks.
    void on_observed(const ConnPtr &c, const std::string &endpoint);
    bool on_internal_ready(const ConnPtr &c);  // true if `c` was a mapping probe answered here
    void on_announced(const ConnPtr &c);       // a connection reversal a caller waits for
    void add_hello_fields(const ConnPtr &c, MsgValue &fields);
    void take_hello_fields(const ConnPtr &c, const MsgValue &fields);
    void on_finalize(const ConnPtr &c);
    void tick(double now);

private:
    enum class Outcome { direct, failed, out_of_time };
    ConnPtr try_reversal(const ConnPtr &relayed, const std::string &purpose, double deadline, Outcome &out);
    ConnPtr try_hole_punch(const ConnPtr &relayed, const std::string &purpose, double deadline, Outcome &out);
    // A connection from local `port` to the relay `relayed` runs through,
    // whose hello tells the NAT mapping of that port. Null if it cannot start.
    ConnPtr start_mapping_probe(const ConnPtr &relayed, uint16_t port);
    // The acceptor's dcutr-connect answer on `relayed`, once the probe
    // started at `probe_started` is done; `observed` "" = it failed.
    void answer_punch(const ConnPtr &relayed, const std::string &observed, double probe_started);
    void retire(const ConnPtr &c, double at, const std::string &why);
    void on_connect(const ConnPtr &c, const PunchConnect &m);
    void on_reverse(const ConnPtr &c, const PunchReverse &m);
    void on_sync(const ConnPtr &c);

    NatContext &ctx_;
    Reachability &reach_;
    SelfDials &self_dials_;

    struct PunchLink {
        uint64_t reverse_cid = 0;  // a reversal: its cid in the hello (event loop)
        std::string observed;      // a mapping probe: where the relay saw us (event loop, until ready)
        ConnWeak mapping_for;      // a mapping probe (acceptor side): the relayed link waiting for it
        double mapping_started = 0;
        int punch_fd = -1;  // acceptor side: bound, not yet connected (event loop)
        // Guarded by the link's state lock: the other side's candidates.
        std::vector<std::string> punch_addrs;
        bool punch_reply = false;
        double punch_wait = 0;  // with the reply: seconds the other side spent on its mapping probe
    };
    LinkTable<PunchLink> links_;

    mutable std::mutex mu_;  // guards the fields below
    std::map<std::string, double> failed_until_;  // peer id -> no punching before
    bool reversal_failed_ = false;  // not known public and a reversal failed: stop trying
    struct Retiring {
        ConnWeak conn;
        double at;
        std::string why;
    };
    std::map<uint64_t, Retiring> retiring_;  // connection id -> when it closes
};

}  // namespace pccl::nat
