// The bookkeeping of a relay, without sockets: reservations, circuits being
// set up, spliced circuits, and their limits in number, bytes and time.
// RelayServer (relay_server.h) owns one and does the I/O around it; the
// fuzzer (tests/fuzz/fuzz_relay_book.cpp) drives it with random operations.
//
// Connections are opaque ids (net::Connection::id(): unique, never reused)
// and peers are their ids; time is whatever monotonic clock the caller
// passes in. Every operation is a decision the caller carries out: a
// refusal (the reason to send before closing that connection), or the
// connections to close. A refused operation changes nothing.
//
// Invariants (check() verifies them; the fuzzer after every operation):
//   - at most limits.max_reservations reservations, and at most
//     limits.max_circuits circuits being set up and spliced together;
//   - a connection has at most one role: it holds one reservation, or is
//     the dialer's side of one circuit being set up, or one side of one
//     spliced circuit (so a circuit's two sides are two connections);
//   - nothing outlives its connection (closed() forgets it) nor its time
//     (tick(): a reservation not refreshed within reservation_ttl_s, a
//     circuit its target did not accept within setup_s, a spliced one
//     past max_circuit_s);
//   - circuit ids carry kRelayCircuitBit, so they never equal the ids of
//     the relay's own dials (SelfDials), which never do.
//
// Not thread-safe: the owner serialises calls (RelayServer's mutex).
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <vector>

namespace pccl::nat {

constexpr uint64_t kRelayCircuitBit = uint64_t(1) << 63;

struct RelayBookLimits {
    size_t max_reservations = 128;
    size_t max_circuits = 512;        // being set up + spliced
    uint64_t max_circuit_bytes = 0;   // per direction; 0: unlimited
    double max_circuit_s = 0;         // 0: unlimited
    double reservation_ttl_s = 600;
    double setup_s = 10;              // from connect to the target's accept
};

class RelayBook {
public:
    using ConnId = uint64_t;

    explicit RelayBook(const RelayBookLimits &limits) : limits_(limits) {}
    const RelayBookLimits &limits() const { return limits_; }

    // `peer` on `conn` takes a reservation, or refreshes the one it holds
    // (a reservation taken on a new connection moves there). "" = done,
    // else why not.
    std::string reserve(ConnId conn, const std::string &peer, double now);
    // The connection `peer`'s reservation is on.
    std::optional<ConnId> reservation(const std::string &peer) const;

    // `dialer` on `hop` asks for a circuit to `target`, who holds a
    // reservation. On success, the circuit's id (tell the target over its
    // reservation); else a refusal.
    struct Connected {
        uint64_t cid = 0;
        std::string refusal;
    };
    Connected connect(ConnId hop, const std::string &dialer, const std::string &target, double now);

    // `peer` on `stop` (a connection with no role yet) accepts circuit
    // `cid`: on success the circuit is spliced between `stop` and the
    // returned dialer's connection. A wrong peer or connection is refused
    // and leaves the circuit to its target.
    struct Accepted {
        ConnId hop = 0;
        std::string refusal;
    };
    Accepted accept(ConnId stop, const std::string &peer, uint64_t cid, double now);

    // A spliced circuit: the other side of `conn`'s.
    std::optional<ConnId> other_side(ConnId conn) const;
    // `n` bytes read from `conn` (a spliced side) to forward; false once
    // its direction is over limits.max_circuit_bytes (close it).
    bool count_bytes(ConnId conn, uint64_t n);
    // True if `conn` has a role (see above).
    bool has_role(ConnId conn) const;

    // `conn` closed: its role ends. Returns the connections to close now
    // (the other side of its spliced circuit).
    std::vector<ConnId> closed(ConnId conn);

    // What tick() ended, to be closed by the caller (each already forgotten).
    struct Expired {
        std::vector<ConnId> reservations;  // not refreshed in time
        std::vector<ConnId> setups;        // dialers whose target did not accept in time
        std::vector<ConnId> circuits;      // both sides of spliced circuits past max_circuit_s
    };
    Expired tick(double now);

    size_t reservation_count() const { return reservations_.size(); }
    size_t pending_count() const { return pending_.size(); }
    size_t circuit_count() const { return circuits_.size(); }
    // The invariants above; false (and why) if one is broken (a bug).
    bool check(std::string *why) const;

private:
    struct Reservation {
        ConnId conn;
        double expires;
    };
    struct Pending {
        ConnId hop;
        std::string target;
        double expires;
    };
    struct Circuit {
        ConnId side[2];
        uint64_t bytes[2] = {0, 0};  // read from side[i]
        double ends;                 // 0: no limit
    };
    enum class Role { reservation, pending, spliced };
    struct RoleOf {
        Role role;
        std::string peer;  // reservation: whose
        uint64_t cid;      // pending, spliced: which circuit
    };

    void forget_circuit(uint64_t cid);

    RelayBookLimits limits_;
    uint64_t next_cid_ = kRelayCircuitBit | 1;
    std::map<std::string, Reservation> reservations_;  // peer id -> its reservation
    std::map<uint64_t, Pending> pending_;              // cid -> circuit being set up
    std::map<uint64_t, Circuit> circuits_;             // cid -> spliced circuit
    std::map<ConnId, RoleOf> roles_;                   // every connection named above -> its role
};

}  // namespace pccl::nat
