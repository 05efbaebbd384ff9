#include "nat/relay_client.h"

#include <algorithm>

#include "common/clock.h"
#include "common/error.h"
#include "common/log.h"

namespace pccl::nat {

using State = net::Link::State;

RelayClient::RelayClient(NatContext &ctx) : ctx_(ctx) {}

void RelayClient::register_handlers(Dispatcher &d) {
    d.on<RelayReserved>([this](const ConnPtr &c, const RelayReserved &m) {
        auto e = links_.get(c);
        c->locked([&] {
            e->reserved = true;
            e->ttl = m.ttl;
        });
    });
    d.on<RelayRefusal>([](const ConnPtr &c, const RelayRefusal &m) {
        c->close(PCCL_ERR_IO, "relay " + c->remote_id() + ": " + (m.reason.empty() ? "refused" : m.reason));
    });
    d.on<RelayIncoming>([this](const ConnPtr &c, const RelayIncoming &m) {
        // Our relay has a dialer for us: open a stop connection back to it.
        const uint64_t cid = m.cid;
        sockaddr_storage ss{};
        socklen_t len = 0;
        if (!ip4_peer(c, ss, len)) return;
        try {
            ConnPtr s = ctx_.tcp.start_dial(ss, len, c->remote_id(), "relay-stop", true, -1,
                                            now_s() + ctx_.waits.circuit_setup_s);
            links_.get(s)->stop_cid = cid;  // before it can be ready: we are the event loop
        } catch (const Error &) {
            // The dialer's hop times out on its own.
        }
    });
    d.on<RelayOpen>([this](const ConnPtr &c, const RelayOpen &m) {
        // The circuit is spliced (or, "direct", the relay itself is the other
        // end): restart the handshake, end to end this time.
        auto e = links_.get(c);
        const bool stop_side = e->stop_cid != 0;
        std::string target, purpose;
        c->locked([&] {
            target = e->circuit_target;
            purpose = e->circuit_purpose;
        });
        ctx_.tcp.restart_handshake(c, stop_side, !m.direct, stop_side ? std::string() : target,
                                   stop_side ? std::string() : purpose, ctx_.waits.circuit_setup_s);
    });
}

bool RelayClient::on_internal_ready(const ConnPtr &c) {
    auto e = links_.find(c);
    if (!e || !e->stop_cid) return false;
    send_relay(c, RelayAccept{e->stop_cid});
    return true;
}

bool RelayClient::on_finalize(const ConnPtr &c) {
    links_.take(c);
    return !c->inbound() && c->purpose() == "relay-reserve";
}

ConnPtr RelayClient::dial_circuit(const Multiaddr &relay, const std::string &target, const std::string &text,
                                  double deadline, const std::string &purpose) {
    ConnPtr c = ctx_.tcp.dial_direct(relay, std::max(0.0, deadline - now_s()), "relay-hop", true);
    auto e = links_.get(c);
    c->locked([&] {
        e->circuit_target = target;
        e->circuit_purpose = purpose;
    });
    send_relay(c, RelayConnect{target});
    const bool settled = c->wait_for(deadline - now_s(), [&](State s) {
        return s == State::closed || (s == State::ready && c->relayed());
    });
    if (!settled) {
        c->close(PCCL_ERR_TIMEOUT, "relayed handshake timed out");
        fail(PCCL_ERR_TIMEOUT, "connecting to " + text + " through the relay timed out");
    }
    if (c->state() == State::closed) {
        links_.take(c);  // its on_finalize may have run already
        const pccl_status_t st = c->close_status();
        fail(st == PCCL_OK ? PCCL_ERR_IO : st, "cannot connect to " + text + ": " + c->close_reason());
    }
    return c;
}

ConnPtr RelayClient::reserve_on(const Multiaddr &relay) {
    const double wait_s = ctx_.waits.relay_request_s;
    ConnPtr c = ctx_.tcp.dial_direct(relay, wait_s, "relay-reserve", true);
    auto e = links_.get(c);
    send_relay(c, RelayReserve{});
    bool reserved = false;
    c->wait_for(wait_s, [&](State s) {
        reserved = e->reserved;
        return reserved || s == State::closed || ctx_.tcp.stopping();
    });
    if (!reserved) {
        const std::string why = c->state() == State::closed ? c->close_reason() : "no answer";
        c->close(PCCL_ERR_IO, "no reservation");
        links_.take(c);  // its on_finalize may have run already
        fail(PCCL_ERR_IO, "relay " + relay.to_string() + " refused a reservation: " + why);
    }
    return c;
}

bool RelayClient::keep() {
    const auto &relays = ctx_.options.relays;
    std::vector<size_t> candidates;
    bool changed = false;
    {
        std::lock_guard<std::mutex> lk(mu_);
        const double now = now_s();
        for (auto it = held_.begin(); it != held_.end();) {
            if (it->conn->state() == State::closed) {
                debug_log(ctx_.log_tag, "lost the reservation on " + relays[it->relay] + ": " + it->conn->close_reason());
                retry_at_[it->relay] = now + ctx_.waits.relay_retry_s;
                it = held_.erase(it);
                changed = true;
                continue;
            }
            if (now >= it->refresh_at) {  // the answer ("reserved") needs no waiting for
                send_relay(it->conn, RelayReserve{});
                it->refresh_at = now + std::max(0.25, it->ttl / 2);
            }
            ++it;
        }
        for (size_t i = 0; i < relays.size(); ++i) {
            bool held = std::any_of(held_.begin(), held_.end(), [&](const Held &h) { return h.relay == i; });
            auto r = retry_at_.find(i);
            if (!held && (r == retry_at_.end() || r->second <= now)) candidates.push_back(i);
        }
    }
    for (size_t i : candidates) {
        {
            std::lock_guard<std::mutex> lk(mu_);
            if (held_.size() >= ctx_.options.relay_slots || ctx_.tcp.stopping()) break;
        }
        try {
            Multiaddr ra = Multiaddr::parse(relays[i]);
            if (!ra.peer_id()) continue;
            ConnPtr c = reserve_on(ra);
            double ttl = 60.0;  // the relay did not say
            if (auto e = links_.find(c)) c->locked([&] { ttl = e->ttl > 0 ? e->ttl : ttl; });
            std::lock_guard<std::mutex> lk(mu_);
            held_.push_back(Held{i, c, ttl, now_s() + std::max(0.25, ttl / 2)});
            changed = true;
            debug_log(ctx_.log_tag, "reserved a slot on " + relays[i]);
        } catch (const Error &e) {
            // An unreachable or full relay is retried later; the others may do.
            debug_log(ctx_.log_tag, e.what());
            std::lock_guard<std::mutex> lk(mu_);
            retry_at_[i] = now_s() + ctx_.waits.relay_retry_s;
        }
    }
    if (!changed) return false;
    std::lock_guard<std::mutex> lk(mu_);
    std::sort(held_.begin(), held_.end(), [](const Held &a, const Held &b) { return a.relay < b.relay; });
    circuit_addrs_.clear();
    for (const auto &h : held_) circuit_addrs_.push_back(Multiaddr::parse(relays[h.relay] + "/p2p-circuit"));
    ++ctx_.addrs_version;
    return true;
}

std::vector<ConnPtr> RelayClient::held() const {
    std::lock_guard<std::mutex> lk(mu_);
    std::vector<ConnPtr> out;
    for (const auto &h : held_) out.push_back(h.conn);
    return out;
}

std::vector<Multiaddr> RelayClient::circuit_addrs() const {
    std::lock_guard<std::mutex> lk(mu_);
    return circuit_addrs_;
}

std::vector<std::string> RelayClient::reservations() const {
    std::lock_guard<std::mutex> lk(mu_);
    std::vector<std::string> out;
    for (const auto &h : held_)
        if (h.conn->state() != State::closed) out.push_back(ctx_.options.relays[h.relay]);
    return out;
}

}  // namespace pccl::nat
