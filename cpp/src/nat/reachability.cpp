#include "nat/reachability.h"

#include "common/clock.h"
#include "common/error.h"
#include "common/log.h"

namespace pccl::nat {

namespace {
constexpr size_t kTrustReporters = 2;  // distinct peers that must report an observed IP before we probe it
}  // namespace

Reachability::Reachability(NatContext &ctx, std::function<void()> wake_keeper)
    : ctx_(ctx), wake_keeper_(std::move(wake_keeper)) {}

void Reachability::register_handlers(Dispatcher &d) {
    d.on<DialbackRequest>([this](const ConnPtr &c, const DialbackRequest &m) { on_dialback_request(c, m); });
    d.on<DialbackResult>([this](const ConnPtr &c, const DialbackResult &m) {  // the answer to our request
        auto ask = asks_.get(c);
        c->locked([&] { ask->verdict = m.ok ? "public" : "private"; });
    });
}

void Reachability::record_observation(const std::string &endpoint, const std::string &reporter) {
    bool wake = false;
    {
        std::lock_guard<std::mutex> lk(mu_);
        observations_[endpoint].insert(reporter);
        auto [ip, votes] = observed_ip_locked();
        if (votes >= kTrustReporters && ip != probed_ip_ && !reprobe_) {  // newly trusted: is it reachable?
            reprobe_ = true;
            wake = true;
        }
    }
    if (wake) wake_keeper_();
}

std::pair<std::string, size_t> Reachability::observed_ip_locked() const {
    // Ports differ per outbound connection (fresh ephemeral ports), so peers
    // vote on the IP; each reporting peer counts once.
    std::map<std::string, std::set<std::string>> by_ip;
    for (const auto &kv : observations_) {
        auto colon = kv.first.rfind(':');
        if (colon == std::string::npos || kv.first[0] == '[') continue;
        by_ip[kv.first.substr(0, colon)].insert(kv.second.begin(), kv.second.end());
    }
    std::pair<std::string, size_t> best{"", 0};
    for (const auto &kv : by_ip)
        if (kv.second.size() > best.second) best = {kv.first, kv.second.size()};
    return best;
}

std::string Reachability::local_ip4(uint16_t *port) const {
    for (const auto &b : ctx_.tcp.bound_addrs()) {
        auto t = b.tcp_target();
        if (t && t->family == AF_INET && !t->is_dns) {
            if (port) *port = t->port;
            return t->host;
        }
    }
    return "";
}

std::vector<std::string> Reachability::candidates(uint16_t port) const {
    // A single report is enough here: a wrong guess costs only one punch attempt.
    std::string ip;
    {
        std::lock_guard<std::mutex> lk(mu_);
        ip = observed_ip_locked().first;
    }
    if (ip.empty()) ip = local_ip4(nullptr);
    if (ip.empty()) return {};
    return {ip + ":" + std::to_string(port)};
}

bool Reachability::take_reprobe() {
    std::lock_guard<std::mutex> lk(mu_);
    const bool r = reprobe_;
    reprobe_ = false;
    return r;
}

std::string Reachability::verdict() const {
    std::lock_guard<std::mutex> lk(mu_);
    return verdict_;
}

std::vector<Multiaddr> Reachability::public_addrs() const {
    std::lock_guard<std::mutex> lk(mu_);
    return public_addrs_;
}

bool Reachability::learn(const std::vector<ConnPtr> &reservations) {
    std::vector<std::string> mine;
    std::optional<Multiaddr> observed;
    {
        uint16_t port = 0;
        const std::string local = local_ip4(&port);
        std::lock_guard<std::mutex> lk(mu_);
        auto [ip, votes] = observed_ip_locked();
        if (votes >= kTrustReporters && !ip.empty() && ip != local && port) {
            observed = Multiaddr::parse("/ip4/" + ip + "/tcp/" + std::to_string(port));
            mine.push_back(observed->with_peer_id(ctx_.self_id).to_string());
            probed_ip_ = ip;
        } else {
            for (const auto &b : ctx_.tcp.bound_addrs()) mine.push_back(b.with_peer_id(ctx_.self_id).to_string());
        }
    }
    for (const auto &c : reservations) {
        auto ask = asks_.get(c);
        c->locked([&] { ask->verdict.clear(); });
        send_relay(c, DialbackRequest{mine});
        std::string verdict;
        c->wait_for(ctx_.waits.relay_request_s, [&](net::Link::State s) {
            verdict = ask->verdict;
            return !verdict.empty() || s == net::Link::State::closed || ctx_.tcp.stopping();
        });
        if (c->state() == net::Link::State::closed) asks_.take(c);  // its on_finalize may have run already
        if (verdict.empty()) continue;
        std::lock_guard<std::mutex> g(mu_);
        const std::string before = verdict_;
        const size_t before_public = public_addrs_.size();
        const std::string before_first = public_addrs_.empty() ? "" : public_addrs_[0].to_string();
        verdict_ = verdict;
        if (verdict == "public" && observed) public_addrs_ = {*observed};
        if (verdict == "private") public_addrs_.clear();  // a port forward that went away
        const bool changed = verdict_ != before || public_addrs_.size() != before_public ||
                             (!public_addrs_.empty() && public_addrs_[0].to_string() != before_first);
        if (changed) {
            ++ctx_.addrs_version;
            debug_log(ctx_.log_tag, "reachability: " + verdict_);
        }
        return changed;
    }
    return false;
}

void Reachability::on_dialback_request(const ConnPtr &c, const DialbackRequest &m) {
    // Dial the first ip4 address back from a fresh socket.
    auto answer_no = [&] { send_relay(c, DialbackResult{false}); };
    for (const auto &a : m.addrs) {
        sockaddr_storage ss{};
        socklen_t len = 0;
        if (!ip4_target(a, ss, len)) continue;
        try {
            ConnPtr probe = ctx_.tcp.start_dial(ss, len, c->remote_id(), "autonat", true, -1,
                                                now_s() + ctx_.waits.autonat_probe_s);
            probes_.get(probe)->asker = c;  // before the probe can be ready: we are the event loop
        } catch (const Error &) {
            answer_no();
        }
        return;
    }
    answer_no();
}

bool Reachability::on_internal_ready(const ConnPtr &c) {
    auto probe = probes_.take(c);
    if (!probe) return false;
    if (ConnPtr asker = probe->asker.lock()) send_relay(asker, DialbackResult{true});
    c->close(PCCL_OK, "autonat probe done");
    return true;
}

void Reachability::on_finalize(const ConnPtr &c) {
    asks_.take(c);
    if (auto probe = probes_.take(c))  // a probe that never got ready
        if (ConnPtr asker = probe->asker.lock()) send_relay(asker, DialbackResult{false});
}

}  // namespace pccl::nat
