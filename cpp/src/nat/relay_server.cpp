#include "nat/relay_server.h"

#include <cerrno>
#include <cstring>

#include "common/clock.h"
#include "common/error.h"

namespace pccl::nat {

using State = net::Link::State;

namespace {
constexpr size_t kSpliceChunk = 256 << 10;
constexpr size_t kSpliceHighWater = 8 << 20;  // stop reading a side while the other has this much queued

RelayBookLimits limits_of(const NatContext &ctx) {
    RelayBookLimits l;
    l.max_reservations = ctx.options.relay_max_reservations;
    l.max_circuits = ctx.options.relay_max_circuits;
    l.max_circuit_bytes = ctx.options.relay_max_circuit_bytes;
    l.max_circuit_s = ctx.options.relay_max_circuit_s;
    l.reservation_ttl_s = ctx.options.relay_reservation_ttl_s;
    l.setup_s = ctx.waits.circuit_setup_s;
    return l;
}
}  // namespace

RelayServer::RelayServer(NatContext &ctx, SelfDials &self_dials)
    : ctx_(ctx), self_dials_(self_dials), book_(limits_of(ctx)) {}

void RelayServer::register_handlers(Dispatcher &d) {
    d.on<RelayReserve>([this](const ConnPtr &c, const RelayReserve &) { on_reserve(c); });
    d.on<RelayConnect>([this](const ConnPtr &c, const RelayConnect &m) { on_connect(c, m); });
    d.on<RelayAccept>([this](const ConnPtr &c, const RelayAccept &m) { on_accept(c, m); });
}

ConnPtr RelayServer::conn_locked(RelayBook::ConnId id) const {
    auto it = conns_.find(id);
    return it == conns_.end() ? nullptr : it->second.lock();
}

void RelayServer::on_reserve(const ConnPtr &c) {  // a new reservation, or the refresh of one
    if (!ctx_.options.relay) return refuse(c, "peer " + ctx_.self_id + " does not relay");
    if (c->purpose() != "relay-reserve") return refuse(c, "a reservation on a connection for something else");
    std::string refusal;
    {
        std::lock_guard<std::mutex> lk(mu_);
        refusal = book_.reserve(c->id(), c->remote_id(), now_s());
        if (refusal.empty()) track_locked(c);
    }
    if (!refusal.empty()) return refuse(c, refusal);
    send_relay(c, RelayReserved{ctx_.options.relay_reservation_ttl_s});
}

void RelayServer::on_connect(const ConnPtr &c, const RelayConnect &m) {
    if (!ctx_.options.relay) return refuse(c, "peer " + ctx_.self_id + " does not relay");
    if (c->purpose() != "relay-hop") return refuse(c, "a circuit on a connection for something else");
    ConnPtr r;
    RelayBook::Connected got;
    {
        std::lock_guard<std::mutex> lk(mu_);
        if (auto rid = book_.reservation(m.target)) r = conn_locked(*rid);
        if (r && r->state() == State::ready) {
            got = book_.connect(c->id(), c->remote_id(), m.target, now_s());
            if (got.refusal.empty()) track_locked(c);
        } else {
            got.refusal = "relay has no reservation for " + m.target;
        }
    }
    if (!got.refusal.empty()) return refuse(c, got.refusal);
    send_relay(r, RelayIncoming{got.cid, c->remote_id()});
}

void RelayServer::on_accept(const ConnPtr &c, const RelayAccept &m) {
    if (c->purpose() != "relay-stop") return refuse(c, "an accept on a connection for something else");
    if (!(m.cid & kRelayCircuitBit)) return on_direct_accept(c, m.cid);
    RelayBook::Accepted got;
    ConnPtr hop;
    {
        std::lock_guard<std::mutex> lk(mu_);
        got = book_.accept(c->id(), c->remote_id(), m.cid, now_s());
        if (got.refusal.empty()) {
            track_locked(c);
            hop = conn_locked(got.hop);
        }
    }
    if (!got.refusal.empty()) return refuse(c, got.refusal);
    // The circuit is in the book now: closing `c` (its on_finalize) closes the hop too.
    if (!hop || hop->state() != State::ready) return refuse(c, "the dialer is gone");
    // Queued before any spliced byte, so each side sees "open" first.
    send_relay(hop, RelayOpen{false});
    send_relay(c, RelayOpen{false});
    ctx_.tcp.set_raw(c);
    ctx_.tcp.set_raw(hop);
}

void RelayServer::on_direct_accept(const ConnPtr &c, uint64_t cid) {
    // We dialed a peer reserved on us (dial_reserved): this connection is it.
    SelfDials::Entry sd;
    if (!self_dials_.find(cid, SelfDials::Kind::circuit, sd)) return refuse(c, "unknown circuit");
    if (c->remote_id() != sd.target) return refuse(c, "circuit accepted by the wrong peer");
    {
        std::lock_guard<std::mutex> lk(mu_);
        if (book_.has_role(c->id())) return refuse(c, "this connection already has another role on the relay");
    }
    {  // "open" is our last record on this link: the handshake after it is in the clear
        net::OutFrame open;
        open.header.type = net::FrameType::relay;
        open.owned = encode_relay(RelayOpen{true});
        open.switch_tx = true;
        c->send(std::move(open));
    }
    ctx_.tcp.restart_handshake(c, false, false, sd.target, sd.purpose, ctx_.waits.circuit_setup_s);
    self_dials_.answer(cid, c);
}

bool RelayServer::on_raw_readable(const ConnPtr &c) {
    ConnPtr o;
    {
        std::lock_guard<std::mutex> lk(mu_);
        if (auto other = book_.other_side(c->id())) o = conn_locked(*other);
    }
    if (!o) {
        c->close(PCCL_ERR_PEER_LOST, "the other side of the relayed circuit closed");
        return false;
    }
    for (int iter = 0; iter < 16; ++iter) {
        if (o->queued_bytes() > kSpliceHighWater) {
            c->set_read_paused(true);  // resumed when `o` drains (on_raw_drained)
            return true;
        }
        std::string buf(kSpliceChunk, '\0');
        ssize_t n = ::recv(c->fd(), buf.data(), buf.size(), 0);
        if (n < 0) {
            if (errno == EINTR) continue;
            if (errno == EAGAIN || errno == EWOULDBLOCK) return true;
            c->close(PCCL_ERR_IO, "relayed circuit broke: " + std::string(std::strerror(errno)));
            return false;
        }
        if (n == 0) {
            c->close(PCCL_ERR_PEER_LOST, "relayed peer closed the circuit");
            return false;
        }
        bool within;
        {
            std::lock_guard<std::mutex> lk(mu_);
            within = book_.count_bytes(c->id(), static_cast<uint64_t>(n));
        }
        if (!within) {
            c->close(PCCL_ERR_IO, "relay circuit byte limit reached");
            return false;
        }
        buf.resize(static_cast<size_t>(n));
        net::OutFrame f;
        f.raw = true;
        f.owned = std::move(buf);
        if (!o->send(std::move(f))) {
            c->close(PCCL_ERR_PEER_LOST, "the other side of the relayed circuit closed");
            return false;
        }
    }
    return true;
}

void RelayServer::on_raw_drained(const ConnPtr &c) {
    ConnPtr o;
    {
        std::lock_guard<std::mutex> lk(mu_);
        if (auto other = book_.other_side(c->id())) o = conn_locked(*other);
    }
    if (o) o->set_read_paused(false);
}

void RelayServer::on_finalize(const ConnPtr &c) {
    std::vector<ConnPtr> close;
    {
        std::lock_guard<std::mutex> lk(mu_);
        for (RelayBook::ConnId id : book_.closed(c->id()))
            if (ConnPtr o = conn_locked(id)) close.push_back(o);
        conns_.erase(c->id());
    }
    for (auto &o : close) o->close(PCCL_ERR_PEER_LOST, "the other side of the relayed circuit closed");
}

void RelayServer::tick(double now) {
    RelayBook::Expired ended;
    std::vector<ConnPtr> reservations, setups, circuits;
    {
        std::lock_guard<std::mutex> lk(mu_);
        ended = book_.tick(now);
        auto resolve = [&](const std::vector<RelayBook::ConnId> &ids, std::vector<ConnPtr> &out) {
            for (RelayBook::ConnId id : ids)
                if (ConnPtr c = conn_locked(id)) out.push_back(c);
        };
        resolve(ended.reservations, reservations);
        resolve(ended.setups, setups);
        resolve(ended.circuits, circuits);
    }
    for (auto &r : reservations) r->close(PCCL_ERR_TIMEOUT, "relay reservation expired (not refreshed)");
    for (auto &h : setups) refuse(h, "the target did not accept the circuit in time");
    for (auto &c : circuits) c->close(PCCL_ERR_IO, "relay circuit duration limit reached");
}

ConnPtr RelayServer::dial_reserved(const std::string &target, double timeout_s, const std::string &purpose) {
    // We are the relay of `target`: ask it (over its reservation) to connect
    // to us; that connection then carries the normal handshake, we as dialer.
    const double deadline = now_s() + timeout_s;
    ConnPtr r;
    {
        std::lock_guard<std::mutex> lk(mu_);
        if (auto rid = book_.reservation(target)) r = conn_locked(*rid);
    }
    if (!r || r->state() != State::ready)
        fail(PCCL_ERR_IO, "cannot dial " + target + " through ourselves: it holds no reservation here");
    const uint64_t cid = self_dials_.add(SelfDials::Kind::circuit, target, purpose);
    send_relay(r, RelayIncoming{cid, ctx_.self_id});
    ConnPtr c = self_dials_.wait(cid, timeout_s, [] { return false; });
    if (!c) fail(PCCL_ERR_TIMEOUT, "peer " + target + " did not connect back to us within the timeout");
    if (c->wait_settled(deadline - now_s()) == State::ready) return c;
    c->close(PCCL_ERR_TIMEOUT, "handshake timed out");
    fail(PCCL_ERR_TIMEOUT, "connecting to " + target + " (reserved on us) failed: " + c->close_reason());
}

}  // namespace pccl::nat
