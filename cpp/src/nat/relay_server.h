// The relay side of relaying (a peer with options.relay): reservations,
// circuits and the byte splice between a circuit's two connections, within
// the configured limits (relay_max_reservations, relay_max_circuits,
// relay_max_circuit_bytes, relay_max_circuit_s, relay_reservation_ttl_s;
// a circuit its target does not accept within waits.circuit_setup_s is
// dropped). The decisions are a RelayBook's (nat/relay_book.h); this class
// does the I/O around them. The protocol is in nat/relay_client.h. A relay
// may also dial a peer reserved on it itself ("direct" circuit: the peer's
// stop connection carries the handshake, the relay as dialer).
#pragma once

#include <map>
#include <mutex>
#include <string>

#include "nat/dispatcher.h"
#include "nat/relay_book.h"
#include "nat/self_dials.h"
#include "nat/wire.h"

namespace pccl::nat {

class RelayServer {
public:
    RelayServer(NatContext &ctx, SelfDials &self_dials);
    void register_handlers(Dispatcher &d);  // reserve, connect, accept

    // Caller thread: a link to `target`, which holds a reservation on us,
    // within timeout_s. Throws Error like Dialer::dial.
    ConnPtr dial_reserved(const std::string &target, double timeout_s, const std::string &purpose);

    // Event loop hooks: the splice (a circuit's raw connections), the end
    // of a connection, and the limits in time.
    bool on_raw_readable(const ConnPtr &c);
    void on_raw_drained(const ConnPtr &c);
    void on_finalize(const ConnPtr &c);
    void tick(double now);

private:
    void on_reserve(const ConnPtr &c);
    void on_connect(const ConnPtr &c, const RelayConnect &m);
    void on_accept(const ConnPtr &c, const RelayAccept &m);
    void on_direct_accept(const ConnPtr &c, uint64_t cid);
    // mu_ held: the connection the book calls `id` (null if closed).
    ConnPtr conn_locked(RelayBook::ConnId id) const;
    void track_locked(const ConnPtr &c) { conns_[c->id()] = c; }

    NatContext &ctx_;
    SelfDials &self_dials_;

    // Guards book_ and conns_: the event loop uses them, and dial_reserved
    // (a caller thread) looks up a reservation.
    mutable std::mutex mu_;
    RelayBook book_;
    std::map<RelayBook::ConnId, ConnWeak> conns_;  // every connection the book has named (until its on_finalize)
};

}  // namespace pccl::nat
