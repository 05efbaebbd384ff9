// The client side of relaying (Circuit-Relay-v2-style): reservations on the
// configured relays and dials through a relay.
//
//   private peer B -> relay   reserve                 -> reserved {ttl} | error
//   dialer A -> relay         connect {target}        (on a "relay-hop" connection)
//   relay -> B                incoming {cid, from}    (on B's reservation)
//   B -> relay                accept {cid}            (on a new "relay-stop" connection)
//   relay -> A and B          open; from then on the relay splices the two
//                             TCP streams byte for byte (nat/relay_server.h),
//                             and A and B run the normal handshake end to end
//                             through it (the relay knows neither side's
//                             keys: it cannot impersonate either).
// A peer keeps `relay_slots` reservations: a dead relay is replaced by the
// next configured one, a failed one retried after waits.relay_retry_s, each
// refreshed at half the relay's TTL.
#pragma once

#include <map>
#include <mutex>
#include <string>
#include <vector>

#include "nat/dispatcher.h"
#include "nat/link_table.h"
#include "nat/wire.h"

namespace pccl::nat {

class RelayClient {
public:
    explicit RelayClient(NatContext &ctx);
    void register_handlers(Dispatcher &d);  // reserved, error, incoming, open

    // Keeper thread (and the transport's constructor): one pass of keeping
    // the reservations (drop closed ones, refresh, replace from the list).
    // Blocks up to waits.relay_request_s per relay it tries. True when our
    // circuit addresses changed.
    bool keep();
    std::vector<ConnPtr> held() const;  // the reservations' connections
    std::vector<Multiaddr> circuit_addrs() const;  // ours, via relays that took our reservation
    std::vector<std::string> reservations() const;  // the configured relays we hold one on now

    // Caller thread: a link to `target` through `relay` (not us),
    // authenticated end to end, by `deadline` (monotonic). Throws Error
    // like Dialer::dial.
    ConnPtr dial_circuit(const Multiaddr &relay, const std::string &target, const std::string &text,
                         double deadline, const std::string &purpose);

    // Event loop hooks. on_internal_ready: true if `c` was our stop
    // connection (it sends accept). on_finalize: true if `c` was one of
    // our reservations (the keeper should replace it now).
    bool on_internal_ready(const ConnPtr &c);
    bool on_finalize(const ConnPtr &c);

private:
    ConnPtr reserve_on(const Multiaddr &relay);

    NatContext &ctx_;
    struct ClientLink {
        uint64_t stop_cid = 0;  // a stop connection: the circuit to accept once ready (event loop)
        // Guarded by the link's state lock:
        std::string circuit_target, circuit_purpose;  // a hop connection: whom it reaches, for what
        bool reserved = false;  // the relay answered "reserved"
        double ttl = 0;         // ... for this long unrefreshed
    };
    LinkTable<ClientLink> links_;

    mutable std::mutex mu_;  // guards the fields below
    struct Held {            // a reservation of ours
        size_t relay;        // index in options.relays
        ConnPtr conn;
        double ttl;  // the relay's
        double refresh_at;
    };
    std::vector<Held> held_;
    std::map<size_t, double> retry_at_;  // relay index -> not before (after a failure)
    std::vector<Multiaddr> circuit_addrs_;
};

}  // namespace pccl::nat
