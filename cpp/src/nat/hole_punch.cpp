#include "nat/hole_punch.h"

#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <thread>

#include "common/clock.h"
#include "common/error.h"
#include "common/log.h"

namespace pccl::nat {

using State = net::Link::State;

namespace {
constexpr double kPunchRetryAfterS = 300.0;  // after a failed punch, relay only for this long (a policy, not a wait)
}  // namespace

HolePunch::HolePunch(NatContext &ctx, Reachability &reach, SelfDials &self_dials)
    : ctx_(ctx), reach_(reach), self_dials_(self_dials) {}

void HolePunch::register_handlers(Dispatcher &d) {
    d.on<PunchConnect>([this](const ConnPtr &c, const PunchConnect &m) { on_connect(c, m); });
    d.on<PunchReverse>([this](const ConnPtr &c, const PunchReverse &m) { on_reverse(c, m); });
    d.on<PunchSync>([this](const ConnPtr &c, const PunchSync &) { on_sync(c); });
}

// ------------------------------------------------------------ caller threads

ConnPtr HolePunch::upgrade(const ConnPtr &relayed, const std::string &purpose, double deadline) {
    if (!ctx_.options.hole_punch) return relayed;
    // A NAT that defeated punching once (symmetric) will again: later dials
    // to that peer (the data streams) take the relay at once instead of
    // stalling the op that needs them.
    const std::string target = relayed->remote_id();
    const std::string verdict = reach_.verdict();
    bool skip, maybe_public;
    {
        std::lock_guard<std::mutex> lk(mu_);
        auto it = failed_until_.find(target);
        skip = it != failed_until_.end() && it->second > now_s();
        // Reversal first when we may be public (verified, or not known: a
        // peer without relays; one failure then stops the guessing).
        maybe_public = verdict == "public" || (verdict == "unknown" && !reversal_failed_);
    }
    const double retire_at = ctx_.waits.retire_relayed_s;
    if (maybe_public) {
        Outcome out;
        if (ConnPtr d = try_reversal(relayed, purpose, deadline, out)) {
            retire(relayed, now_s() + retire_at, "replaced by a direct connection");
            return d;
        }
        std::lock_guard<std::mutex> lk(mu_);
        if (out == Outcome::failed && reach_.verdict() == "unknown") reversal_failed_ = true;
    }
    if (!skip) {
        Outcome out;
        if (ConnPtr d = try_hole_punch(relayed, purpose, deadline, out)) {
            retire(relayed, now_s() + retire_at, "replaced by a direct connection");
            return d;
        }
        std::lock_guard<std::mutex> lk(mu_);
        if (out == Outcome::failed) failed_until_[target] = now_s() + kPunchRetryAfterS;
    }
    return relayed;
}

ConnPtr HolePunch::try_reversal(const ConnPtr &relayed, const std::string &purpose, double deadline, Outcome &out) {
    const double wait_s = std::min(ctx_.waits.punch_attempt_s, deadline - now_s());
    if (wait_s <= 0) {
        out = Outcome::out_of_time;
        return nullptr;
    }
    std::vector<std::string> mine;
    for (const auto &a : reach_.public_addrs()) mine.push_back(a.to_string());
    for (const auto &a : ctx_.tcp.bound_addrs()) mine.push_back(a.to_string());
    const uint64_t cid = self_dials_.add(SelfDials::Kind::reversal, relayed->remote_id(), purpose);
    send_relay(relayed, PunchReverse{cid, purpose, mine});
    ConnPtr c = self_dials_.wait(cid, wait_s, [&] { return relayed->state() == State::closed; });
    out = c ? Outcome::direct : wait_s < ctx_.waits.punch_attempt_s ? Outcome::out_of_time : Outcome::failed;
    debug_log(ctx_.log_tag, std::string("dcutr reversal ") + (c ? "connected" : "failed"));
    return c;
}

ConnPtr HolePunch::try_hole_punch(const ConnPtr &relayed, const std::string &purpose, double deadline,
                                  Outcome &out) {
    const double attempt_s = ctx_.waits.punch_attempt_s;
    // Each wait: a full attempt's, cut at the dial's deadline. Only a wait
    // that ran in full and saw no success counts as the NAT defeating us.
    auto stage = [&] { return std::min(attempt_s, deadline - now_s()); };
    bool defeated = false;
    auto give_up = [&](int fd) {
        if (fd >= 0) ::close(fd);
        out = defeated ? Outcome::failed : Outcome::out_of_time;
        return nullptr;
    };
    auto pl = links_.get(relayed);
    struct Tidy {  // a relayed link that closed meanwhile may have had its on_finalize already
        LinkTable<PunchLink> &table;
        const ConnPtr &link;
        ~Tidy() {
            if (link->state() == State::closed) table.take(link);
        }
    } tidy{links_, relayed};
    for (int attempt = 0; attempt < kPunchAttempts; ++attempt) {
        if (stage() <= 0) return give_up(-1);
        uint16_t port = 0;
        int fd = bound_socket(port);
        if (fd < 0) {
            out = Outcome::failed;
            return nullptr;
        }
        std::vector<std::string> mine;
        if (ConnPtr probe = start_mapping_probe(relayed, port)) {
            if (probe->wait_settled(stage()) == State::ready)
                if (auto e = links_.find(probe); e && !e->observed.empty()) mine.push_back(e->observed);
            // Holds the NAT mapping of `port` through the punch.
            retire(probe, now_s() + attempt_s + ctx_.waits.punch_linger_s, "mapping probe done");
        }
        if (mine.empty()) mine = reach_.candidates(port);
        relayed->locked([&] {
            pl->punch_reply = false;
            pl->punch_addrs.clear();
        });
        const double t0 = now_s();
        send_relay(relayed, PunchConnect{mine, std::nullopt});
        std::vector<std::string> theirs;
        double their_wait = 0;
        bool replied = false;
        const double reply_s = stage();
        relayed->wait_for(reply_s, [&](State s) {
            replied = pl->punch_reply;
            if (replied) {
                theirs = pl->punch_addrs;
                their_wait = pl->punch_wait;
            }
            return replied || s == State::closed;
        });
        if (!replied) {
            defeated = defeated || reply_s >= attempt_s || relayed->state() == State::closed;
            return give_up(fd);
        }
        // What the other side spent on its own mapping probe is not path delay.
        const double rtt = std::max(0.0, now_s() - t0 - their_wait);
        debug_log(ctx_.log_tag, "dcutr: mine " + (mine.empty() ? "-" : mine[0]) + " theirs " +
                                    (theirs.empty() ? "-" : theirs[0]) + " rtt " + std::to_string(rtt));
        sockaddr_storage ss{};
        socklen_t len = 0;
        if (theirs.empty() || mine.empty() || !parse_endpoint(theirs[0], ss, len)) {
            defeated = true;  // nothing to punch with
            return give_up(fd);
        }
        send_relay(relayed, PunchSync{});
        std::this_thread::sleep_for(std::chrono::duration<double>(std::max(0.0, std::min(rtt / 2, stage()))));
        ConnPtr d;
        try {
            d = ctx_.tcp.start_dial(ss, len, relayed->remote_id(), purpose, false, fd);
        } catch (const Error &) {
            continue;  // start_dial closed fd
        }
        const double connect_s = stage();
        if (d->wait_settled(connect_s) == State::ready) {
            out = Outcome::direct;
            return d;
        }
        defeated = defeated || connect_s >= attempt_s;
        debug_log(ctx_.log_tag, "dcutr attempt failed: " + d->close_reason());
        d->close(PCCL_ERR_TIMEOUT, "hole punch did not connect");
    }
    defeated = true;  // every attempt ran
    return give_up(-1);
}

ConnPtr HolePunch::start_mapping_probe(const ConnPtr &relayed, uint16_t port) {
    sockaddr_storage ss{};
    socklen_t len = 0;
    if (!ip4_peer(relayed, ss, len)) return nullptr;
    int fd = bound_socket(port);
    if (fd < 0) return nullptr;
    try {
        return ctx_.tcp.start_dial(ss, len, relayed->via(), "relay-observe", true, fd,
                                   now_s() + ctx_.waits.punch_attempt_s);
    } catch (const Error &) {
        return nullptr;  // start_dial closed fd
    }
}

void HolePunch::retire(const ConnPtr &c, double at, const std::string &why) {
    std::lock_guard<std::mutex> lk(mu_);
    retiring_[c->id()] = Retiring{c, at, why};
}

// --------------------------------------------------------------- event loop

void HolePunch::answer_punch(const ConnPtr &relayed, const std::string &observed, double probe_started) {
    auto e = links_.find(relayed);
    if (!e || e->punch_fd < 0) return;  // closed meanwhile
    std::vector<std::string> mine;
    if (!observed.empty()) mine.push_back(observed);
    else mine = reach_.candidates(local_port(e->punch_fd));
    debug_log(ctx_.log_tag, "dcutr: answering with " + (mine.empty() ? "-" : mine[0]) +
                                (observed.empty() ? " (guessed)" : " (probed)"));
    send_relay(relayed, PunchConnect{mine, std::max(0.0, now_s() - probe_started)});
}

void HolePunch::on_connect(const ConnPtr &c, const PunchConnect &m) {
    std::vector<std::string> addrs = m.addrs;
    auto e = links_.get(c);
    if (!c->inbound()) {  // the answer to our connect
        const double wait = m.wait.value_or(0.0);
        c->locked([&] {
            e->punch_addrs = std::move(addrs);
            e->punch_wait = wait;
            e->punch_reply = true;
        });
        return;
    }
    if (e->punch_fd >= 0) ::close(e->punch_fd);
    uint16_t port = 0;
    e->punch_fd = bound_socket(port);
    c->locked([&] { e->punch_addrs = std::move(addrs); });
    if (e->punch_fd < 0) {
        send_relay(c, PunchConnect{{}, std::nullopt});
        return;
    }
    // Answer once the probe tells where the NAT maps the punch port.
    if (ConnPtr probe = start_mapping_probe(c, port)) {
        auto pe = links_.get(probe);  // before the probe can be ready: we are the event loop
        pe->mapping_for = c;
        pe->mapping_started = now_s();
    } else {
        answer_punch(c, "", now_s());
    }
}

void HolePunch::on_reverse(const ConnPtr &c, const PunchReverse &m) {
    // The other end is public: dial it directly (an outbound connection
    // passes any NAT); our hello tells it which request this answers.
    for (const auto &a : m.addrs) {
        sockaddr_storage ss{};
        socklen_t len = 0;
        if (!ip4_target(a, ss, len)) continue;
        try {
            ConnPtr d = ctx_.tcp.start_dial(ss, len, c->remote_id(), m.purpose, false, -1,
                                            now_s() + ctx_.waits.punch_attempt_s + ctx_.waits.punch_linger_s);
            links_.get(d)->reverse_cid = m.cid;
        } catch (const Error &) {
        }
        return;
    }
}

void HolePunch::on_sync(const ConnPtr &c) {
    auto e = links_.find(c);
    if (!e) return;
    int fd = e->punch_fd;
    e->punch_fd = -1;
    std::string first;
    c->locked([&] {
        if (!e->punch_addrs.empty()) first = e->punch_addrs[0];
    });
    sockaddr_storage ss{};
    socklen_t len = 0;
    if (fd < 0 || !parse_endpoint(first, ss, len)) {
        if (fd >= 0) ::close(fd);
        return;
    }
    try {
        // The dialer names the purpose, as if it had connected to us.
        ctx_.tcp.start_dial(ss, len, c->remote_id(), "", false, fd,
                            now_s() + ctx_.waits.punch_attempt_s + ctx_.waits.punch_linger_s, true);
    } catch (const Error &) {
    }
}

void HolePunch::on_observed(const ConnPtr &c, const std::string &endpoint) {
    if (c->purpose() == "relay-observe") links_.get(c)->observed = endpoint;
}

bool HolePunch::on_internal_ready(const ConnPtr &c) {
    auto e = links_.find(c);
    ConnPtr link = e ? e->mapping_for.lock() : nullptr;
    if (!link) return false;
    e->mapping_for.reset();  // now we know where to be punched
    answer_punch(link, e->observed, e->mapping_started);
    retire(c, now_s() + ctx_.waits.punch_attempt_s + ctx_.waits.punch_linger_s, "mapping probe done");
    return true;
}

void HolePunch::on_announced(const ConnPtr &c) {
    if (!c->inbound()) return;
    auto e = links_.find(c);
    if (!e || !e->reverse_cid) return;
    SelfDials::Entry want;
    if (self_dials_.find(e->reverse_cid, SelfDials::Kind::reversal, want) && want.target == c->remote_id()) self_dials_.answer(e->reverse_cid, c);
}

void HolePunch::add_hello_fields(const ConnPtr &c, MsgValue &fields) {
    if (auto e = links_.find(c); e && e->reverse_cid) fields.as_map().emplace_back("rev", e->reverse_cid);
}

void HolePunch::take_hello_fields(const ConnPtr &c, const MsgValue &fields) {
    if (const MsgValue *r = fields.find("rev")) links_.get(c)->reverse_cid = r->as_uint();  // a reversal we asked for
}

void HolePunch::on_finalize(const ConnPtr &c) {
    {
        std::lock_guard<std::mutex> lk(mu_);
        retiring_.erase(c->id());
    }
    auto e = links_.take(c);
    if (!e) return;
    if (ConnPtr link = e->mapping_for.lock())  // a mapping probe that never got ready: answer with a guess
        answer_punch(link, "", e->mapping_started);
    if (e->punch_fd >= 0) ::close(e->punch_fd);
}

void HolePunch::tick(double now) {
    std::vector<std::pair<ConnPtr, std::string>> due;
    {
        std::lock_guard<std::mutex> lk(mu_);
        for (auto it = retiring_.begin(); it != retiring_.end();) {
            if (now <= it->second.at) {
                ++it;
                continue;
            }
            if (ConnPtr c = it->second.conn.lock()) due.emplace_back(c, it->second.why);
            it = retiring_.erase(it);
        }
    }
    for (auto &d : due) d.first->close(PCCL_OK, d.second);
}

}  // namespace pccl::nat
