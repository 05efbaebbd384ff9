// The relay side of relaying (a peer with options.relay): reservations,
// circuits and the byte splice between a circuit's two connections, within
// the configured limits (relay_max_reservations, relay_max_circuits,
// relay_max_circuit_bytes, relay_max_circuit_s, relay_reservation_ttl_s).
// The protocol is in nat/relay_client.h. A relay may also dial a peer
// reserved on it itself ("direct" circuit: the peer's stop connection
// carries the handshake, the relay as dialer).
#pragma once

#include <map>
#include <mutex>
#include <string>
#include <utility>

#include "nat/dispatcher.h"
#include "nat/self_dials.h"
#include "nat/wire.h"

namespace pccl::nat {

class RelayServer {
public:
    RelayServer(NatContext &ctx, SelfDials &self_dials);
    void register_handlers(Dispatcher &d);  // "reserve", "connect", "accept"

    // Caller thread: a link to `target`, which holds a reservation on us,
    // within timeout_s. Throws Error like Dialer::dial.
    ConnPtr dial_reserved(const std::string &target, double timeout_s, const std::string &purpose);

    // Event loop hooks: the splice (a circuit's raw connections), the end
    // of a connection, and the limits in time (reservation TTL, circuit
    // duration).
    bool on_raw_readable(const ConnPtr &c);
    void on_raw_drained(const ConnPtr &c);
    void on_finalize(const ConnPtr &c);
    void tick(double now);

private:
    void on_reserve(const ConnPtr &c);
    void on_connect(const ConnPtr &c, const MsgValue &m);
    void on_accept(const ConnPtr &c, const MsgValue &m);

    NatContext &ctx_;
    SelfDials &self_dials_;

    // Event loop only: the circuits being set up and the spliced connections.
    struct Spliced {
        ConnWeak self, other;  // this half and the other half of the circuit
        uint64_t bytes = 0;    // read from `self` and forwarded
        double ends = 0;       // the duration limit (monotonic; 0: none)
    };
    std::map<uint64_t, Spliced> spliced_;  // connection id -> its half of a circuit
    std::map<uint64_t, std::pair<ConnWeak, std::string>> pending_;  // cid -> (hop connection, target)
    uint64_t next_cid_ = 1;
    size_t active_circuits_ = 0;

    struct Reservation {
        ConnWeak conn;
        double expires;
    };
    mutable std::mutex mu_;  // guards reservations_ (dial_reserved reads it on a caller thread)
    std::map<std::string, Reservation> reservations_;  // reserving peer id -> its reservation
};

}  // namespace pccl::nat
