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
}  // namespace

RelayServer::RelayServer(NatContext &ctx, SelfDials &self_dials) : ctx_(ctx), self_dials_(self_dials) {}

void RelayServer::register_handlers(Dispatcher &d) {
    d.on("reserve", [this](const ConnPtr &c, const MsgValue &) { on_reserve(c); });
    d.on("connect", [this](const ConnPtr &c, const MsgValue &m) { on_connect(c, m); });
    d.on("accept", [this](const ConnPtr &c, const MsgValue &m) { on_accept(c, m); });
}

void RelayServer::on_reserve(const ConnPtr &c) {  // a new reservation, or the refresh of one
    if (!ctx_.options.relay) return refuse(c, "peer " + ctx_.self_id + " does not relay");
    const double ttl = ctx_.options.relay_reservation_ttl_s;
    bool taken;
    {
        std::lock_guard<std::mutex> lk(mu_);
        auto mine = reservations_.find(c->remote_id());
        const bool refresh = mine != reservations_.end() && mine->second.conn.lock() == c;
        size_t live = 0;
        for (auto &kv : reservations_) live += !kv.second.conn.expired();
        taken = refresh || live < ctx_.options.relay_max_reservations;
        if (taken) reservations_[c->remote_id()] = Reservation{c, now_s() + ttl};
    }
    if (!taken) return refuse(c, "relay reservations are full");
    send_relay(c, MsgValue::map({{"t", "reserved"}, {"ttl", ttl}}));
}

void RelayServer::on_connect(const ConnPtr &c, const MsgValue &m) {
    if (!ctx_.options.relay) return refuse(c, "peer " + ctx_.self_id + " does not relay");
    const std::string target = m.at("target").as_str();
    ConnPtr r;
    {
        std::lock_guard<std::mutex> lk(mu_);
        auto it = reservations_.find(target);
        if (it != reservations_.end()) r = it->second.conn.lock();
    }
    if (!r || r->state() != State::ready) return refuse(c, "relay has no reservation for " + target);
    if (active_circuits_ + pending_.size() >= ctx_.options.relay_max_circuits)
        return refuse(c, "relay circuits are full");
    const uint64_t cid = next_cid_++;
    pending_[cid] = {c, target};
    send_relay(r, MsgValue::map({{"t", "incoming"}, {"cid", cid}, {"from", c->remote_id()}}));
}

void RelayServer::on_accept(const ConnPtr &c, const MsgValue &m) {
    const uint64_t cid = m.at("cid").as_uint();
    SelfDials::Entry sd;
    if (self_dials_.find(cid, sd)) {  // we dialed a peer reserved on us: this connection is it
        if (c->remote_id() != sd.target) return refuse(c, "circuit accepted by the wrong peer");
        {  // "open" is our last record on this link: the handshake after it is in the clear
            net::OutFrame open;
            open.header.type = net::FrameType::relay;
            open.owned = msgpack_encode(MsgValue::map({{"t", "open"}, {"direct", true}}));
            open.switch_tx = true;
            c->send(std::move(open));
        }
        ctx_.tcp.restart_handshake(c, false, false, sd.target, sd.purpose, ctx_.waits.circuit_setup_s);
        self_dials_.answer(cid, c);
        return;
    }
    auto it = pending_.find(cid);
    if (it == pending_.end()) return refuse(c, "unknown circuit");
    ConnPtr hop = it->second.first.lock();
    const std::string target = it->second.second;
    pending_.erase(it);
    if (c->remote_id() != target) return refuse(c, "circuit accepted by the wrong peer");
    if (!hop || hop->state() != State::ready) return refuse(c, "the dialer is gone");
    const double ends = ctx_.options.relay_max_circuit_s > 0 ? now_s() + ctx_.options.relay_max_circuit_s : 0;
    spliced_[c->id()] = Spliced{c, hop, 0, ends};
    spliced_[hop->id()] = Spliced{hop, c, 0, ends};
    ++active_circuits_;
    // Queued before any spliced byte, so each side sees "open" first.
    send_relay(hop, MsgValue::map({{"t", "open"}}));
    send_relay(c, MsgValue::map({{"t", "open"}}));
    ctx_.tcp.set_raw(c);
    ctx_.tcp.set_raw(hop);
}

bool RelayServer::on_raw_readable(const ConnPtr &c) {
    auto s = spliced_.find(c->id());
    ConnPtr o = s == spliced_.end() ? nullptr : s->second.other.lock();
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
        s->second.bytes += static_cast<uint64_t>(n);
        if (ctx_.options.relay_max_circuit_bytes && s->second.bytes > ctx_.options.relay_max_circuit_bytes) {
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
    auto s = spliced_.find(c->id());
    if (s == spliced_.end()) return;
    if (ConnPtr other = s->second.other.lock()) other->set_read_paused(false);
}

void RelayServer::on_finalize(const ConnPtr &c) {
    auto s = spliced_.find(c->id());
    if (s == spliced_.end()) return;
    if (ConnPtr other = s->second.other.lock()) {
        other->close(PCCL_ERR_PEER_LOST, "the other side of the relayed circuit closed");
        if (active_circuits_ > 0) --active_circuits_;
    }
    spliced_.erase(s);
}

void RelayServer::tick(double now) {
    std::vector<ConnPtr> over;
    for (const auto &kv : spliced_)
        if (kv.second.ends > 0 && now > kv.second.ends)
            if (ConnPtr c = kv.second.self.lock()) over.push_back(c);
    for (auto &c : over) c->close(PCCL_ERR_IO, "relay circuit duration limit reached");
    std::vector<ConnPtr> expired;
    {
        std::lock_guard<std::mutex> lk(mu_);
        for (auto it = reservations_.begin(); it != reservations_.end();) {
            ConnPtr r = it->second.conn.lock();
            if (r && now <= it->second.expires) {
                ++it;
                continue;
            }
            if (r) expired.push_back(r);
            it = reservations_.erase(it);
        }
    }
    for (auto &r : expired) r->close(PCCL_ERR_TIMEOUT, "relay reservation expired (not refreshed)");
}

ConnPtr RelayServer::dial_reserved(const std::string &target, double timeout_s, const std::string &purpose) {
    // We are the relay of `target`: ask it (over its reservation) to connect
    // to us; that connection then carries the normal handshake, we as dialer.
    const double deadline = now_s() + timeout_s;
    ConnPtr r;
    {
        std::lock_guard<std::mutex> lk(mu_);
        auto it = reservations_.find(target);
        if (it != reservations_.end()) r = it->second.conn.lock();
    }
    if (!r || r->state() != State::ready)
        fail(PCCL_ERR_IO, "cannot dial " + target + " through ourselves: it holds no reservation here");
    const uint64_t cid = self_dials_.add(target, purpose);
    send_relay(r, MsgValue::map({{"t", "incoming"}, {"cid", cid}, {"from", ctx_.self_id}}));
    ConnPtr c = self_dials_.wait(cid, timeout_s, [] { return false; });
    if (!c) fail(PCCL_ERR_TIMEOUT, "peer " + target + " did not connect back to us within the timeout");
    if (c->wait_settled(deadline - now_s()) == State::ready) return c;
    c->close(PCCL_ERR_TIMEOUT, "handshake timed out");
    fail(PCCL_ERR_TIMEOUT, "connecting to " + target + " (reserved on us) failed: " + c->close_reason());
}

}  // namespace pccl::nat
