// Reachability (AutoNAT-style) and observed addresses (identify).
//
// Every direct outbound connection's acceptor tells us where it saw us
// ("obs" in its hello); peers vote on our public IP with these. A peer asks
// a relay it holds a reservation on to dial it back:
//   A -> relay   dialback {addrs}   the relay dials the first ip4 address
//                                   from a fresh socket ("autonat" purpose)
//   relay -> A   dialback {ok}      ok: that connection got ready in time
// at our observed IP with our listen port when enough distinct peers agree
// on that IP (a NAT with that port forwarded makes us public there), else at
// the bound address. The verdict: "public", "private" or "unknown" (nobody
// to ask).
#pragma once

#include <functional>
#include <map>
#include <mutex>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "nat/dispatcher.h"
#include "nat/link_table.h"
#include "nat/wire.h"

namespace pccl::nat {

class Reachability {
public:
    // wake_keeper: asks the NAT layer's keeper thread to run now (any thread).
    Reachability(NatContext &ctx, std::function<void()> wake_keeper);
    void register_handlers(Dispatcher &d);  // dialback (request and result)

    // Event loop: `reporter` saw us at `endpoint`.
    void record_observation(const std::string &endpoint, const std::string &reporter);
    // Where a NAT would map local `port` for others: the observed IP most
    // peers agree on, else our own bound IPv4 (empty if neither).
    std::vector<std::string> candidates(uint16_t port) const;
    // Keeper thread: asks the relays behind `reservations` (ours, ready)
    // for a dial-back, one after the other, until one answers; each answer
    // waited for at most waits.relay_request_s. True when the verdict or
    // the public addresses changed.
    bool learn(const std::vector<ConnPtr> &reservations);
    // True once if peers newly agree on an observed IP (ask again now).
    bool take_reprobe();
    std::string verdict() const;
    std::vector<Multiaddr> public_addrs() const;  // our observed address, verified by a dial-back

    // Event loop hooks. on_internal_ready: true if `c` was a dial-back probe
    // of ours (the asker gets ok, the probe closes).
    bool on_internal_ready(const ConnPtr &c);
    void on_finalize(const ConnPtr &c);  // a probe that never got ready: the asker gets "not ok"

private:
    void on_dialback_request(const ConnPtr &c, const DialbackRequest &m);
    // The observed IP most distinct peers report, and how many (mu_ held).
    std::pair<std::string, size_t> observed_ip_locked() const;
    std::string local_ip4(uint16_t *port) const;  // first bound IPv4 ("" if none)

    NatContext &ctx_;
    std::function<void()> wake_keeper_;
    // Relay side: a probe connection -> the reservation that asked (event loop).
    struct Probe {
        ConnWeak asker;
    };
    LinkTable<Probe> probes_;
    // Asking side: the answer on a reservation (guarded by that link's state lock).
    struct Ask {
        std::string verdict;  // "" until answered: "public" / "private"
    };
    LinkTable<Ask> asks_;

    mutable std::mutex mu_;  // guards the fields below
    std::map<std::string, std::set<std::string>> observations_;  // "ip:port" -> reporting peer ids
    std::string probed_ip_;  // the observed IP the last dial-back tried
    bool reprobe_ = false;   // peers newly agree on an observed IP
    std::string verdict_ = "unknown";
    std::vector<Multiaddr> public_addrs_;
};

}  // namespace pccl::nat
