#include "nat/relay_book.h"

namespace pccl::nat {

std::string RelayBook::reserve(ConnId conn, const std::string &peer, double now) {
    auto role = roles_.find(conn);
    if (role != roles_.end() && (role->second.role != Role::reservation || role->second.peer != peer))
        return "this connection already has another role on the relay";
    auto mine = reservations_.find(peer);
    if (mine == reservations_.end() && reservations_.size() >= limits_.max_reservations)
        return "relay reservations are full";
    if (mine != reservations_.end() && mine->second.conn != conn) roles_.erase(mine->second.conn);  // it moves here
    reservations_[peer] = Reservation{conn, now + limits_.reservation_ttl_s};
    roles_[conn] = RoleOf{Role::reservation, peer, 0};
    return "";
}

std::optional<RelayBook::ConnId> RelayBook::reservation(const std::string &peer) const {
    auto it = reservations_.find(peer);
    if (it == reservations_.end()) return std::nullopt;
    return it->second.conn;
}

RelayBook::Connected RelayBook::connect(ConnId hop, const std::string &dialer, const std::string &target,
                                        double now) {
    if (roles_.count(hop)) return {0, "this connection already has another role on the relay"};
    if (dialer == target) return {0, "a circuit to oneself"};
    if (!reservations_.count(target)) return {0, "relay has no reservation for " + target};
    if (pending_.size() + circuits_.size() >= limits_.max_circuits) return {0, "relay circuits are full"};
    const uint64_t cid = next_cid_++;
    pending_[cid] = Pending{hop, target, now + limits_.setup_s};
    roles_[hop] = RoleOf{Role::pending, "", cid};
    return {cid, ""};
}

RelayBook::Accepted RelayBook::accept(ConnId stop, const std::string &peer, uint64_t cid, double now) {
    auto it = pending_.find(cid);
    if (it == pending_.end()) return {0, "unknown circuit"};
    if (it->second.target != peer) return {0, "circuit accepted by the wrong peer"};
    // The dialer's own connection, a reservation or another circuit's side
    // cannot be a circuit's second side.
    if (roles_.count(stop)) return {0, "this connection already has another role on the relay"};
    const ConnId hop = it->second.hop;
    pending_.erase(it);
    Circuit c{{hop, stop}, {0, 0}, limits_.max_circuit_s > 0 ? now + limits_.max_circuit_s : 0};
    circuits_.emplace(cid, c);
    roles_[hop] = RoleOf{Role::spliced, "", cid};
    roles_[stop] = RoleOf{Role::spliced, "", cid};
    return {hop, ""};
}

std::optional<RelayBook::ConnId> RelayBook::other_side(ConnId conn) const {
    auto r = roles_.find(conn);
    if (r == roles_.end() || r->second.role != Role::spliced) return std::nullopt;
    const Circuit &c = circuits_.at(r->second.cid);
    return c.side[0] == conn ? c.side[1] : c.side[0];
}

bool RelayBook::count_bytes(ConnId conn, uint64_t n) {
    auto r = roles_.find(conn);
    if (r == roles_.end() || r->second.role != Role::spliced) return false;
    Circuit &c = circuits_.at(r->second.cid);
    uint64_t &b = c.bytes[c.side[0] == conn ? 0 : 1];
    b = n > UINT64_MAX - b ? UINT64_MAX : b + n;
    return limits_.max_circuit_bytes == 0 || b <= limits_.max_circuit_bytes;
}

bool RelayBook::has_role(ConnId conn) const { return roles_.count(conn) != 0; }

void RelayBook::forget_circuit(uint64_t cid) {
    auto it = circuits_.find(cid);
    if (it == circuits_.end()) return;
    roles_.erase(it->second.side[0]);
    roles_.erase(it->second.side[1]);
    circuits_.erase(it);
}

std::vector<RelayBook::ConnId> RelayBook::closed(ConnId conn) {
    auto r = roles_.find(conn);
    if (r == roles_.end()) return {};
    const RoleOf role = r->second;
    roles_.erase(r);
    switch (role.role) {
        case Role::reservation: reservations_.erase(role.peer); return {};
        case Role::pending: pending_.erase(role.cid); return {};
        case Role::spliced: {
            const Circuit &c = circuits_.at(role.cid);
            const ConnId other = c.side[0] == conn ? c.side[1] : c.side[0];
            forget_circuit(role.cid);
            return {other};
        }
    }
    return {};
}

RelayBook::Expired RelayBook::tick(double now) {
    Expired out;
    for (auto it = reservations_.begin(); it != reservations_.end();) {
        if (now <= it->second.expires) {
            ++it;
            continue;
        }
        out.reservations.push_back(it->second.conn);
        roles_.erase(it->second.conn);
        it = reservations_.erase(it);
    }
    for (auto it = pending_.begin(); it != pending_.end();) {
        if (now <= it->second.expires) {
            ++it;
            continue;
        }
        out.setups.push_back(it->second.hop);
        roles_.erase(it->second.hop);
        it = pending_.erase(it);
    }
    std::vector<uint64_t> over;
    for (const auto &kv : circuits_)
        if (kv.second.ends > 0 && now > kv.second.ends) {
            over.push_back(kv.first);
            out.circuits.push_back(kv.second.side[0]);
            out.circuits.push_back(kv.second.side[1]);
        }
    for (uint64_t cid : over) forget_circuit(cid);
    return out;
}

bool RelayBook::check(std::string *why) const {
    auto broken = [&](const std::string &w) {
        if (why) *why = w;
        return false;
    };
    if (reservations_.size() > limits_.max_reservations) return broken("over max_reservations");
    if (pending_.size() + circuits_.size() > limits_.max_circuits) return broken("over max_circuits");
    size_t named = 0;  // connections the entries name: each must have exactly the matching role
    for (const auto &kv : reservations_) {
        auto r = roles_.find(kv.second.conn);
        if (r == roles_.end() || r->second.role != Role::reservation || r->second.peer != kv.first)
            return broken("reservation without its role");
        ++named;
    }
    for (const auto &kv : pending_) {
        if (!(kv.first & kRelayCircuitBit)) return broken("circuit id without kRelayCircuitBit");
        auto r = roles_.find(kv.second.hop);
        if (r == roles_.end() || r->second.role != Role::pending || r->second.cid != kv.first)
            return broken("pending circuit without its role");
        ++named;
    }
    for (const auto &kv : circuits_) {
        if (!(kv.first & kRelayCircuitBit)) return broken("circuit id without kRelayCircuitBit");
        if (kv.second.side[0] == kv.second.side[1]) return broken("a circuit spliced to itself");
        for (ConnId s : kv.second.side) {
            auto r = roles_.find(s);
            if (r == roles_.end() || r->second.role != Role::spliced || r->second.cid != kv.first)
                return broken("circuit side without its role");
            ++named;
        }
    }
    if (named != roles_.size()) return broken("a connection with a role no entry names");
    return true;
}

}  // namespace pccl::nat
