// NAT traversal inside the transport: Identify-style observations, an
// AutoNAT-style dial-back, Circuit-Relay-v2-style reservations and circuits,
// and DCUtR-style hole punching, all TCP-only. They live inside TcpTransport
// (not yet in cpp/src/nat) because they need its event loop's sockets:
// splicing two streams, restarting the handshake end to end on a relayed
// stream, simultaneous open from a bound port. The policy knobs are
// TransportOptions.
//
// Relay protocol: `relay` frames (msgpack maps, field "t") on connections
// authenticated to the relay with the run key; such connections are "hidden"
// (never announced to the handler):
//   private peer B -> relay   reserve                 -> reserved | error
//   dialer A -> relay         connect {target}        (on a "relay-hop" connection)
//   relay -> B                incoming {cid, from}    (on B's reservation)
//   B -> relay                accept {cid}            (on a new "relay-stop" connection)
//   relay -> A and B          open; from then on the relay splices the two
//                             TCP streams byte for byte, and A and B run the
//                             normal hello/auth handshake end to end through
//                             it (the relay knows neither nonce: it cannot
//                             impersonate either side).
//   A -> server               dialback {addrs}        -> dialback {ok}: the server
//                             dials the first address from a fresh socket.
// Hole punching (over the end-to-end relayed connection, A = dialer):
//   A -> B dcutr-connect {addrs}; B -> A dcutr-connect {addrs}; A measures the
//   RTT, sends dcutr-sync, waits RTT/2 and connects; B connects on receiving
//   the sync. Each side punches from a freshly bound port P and advertises
//   where its NAT maps P: before answering, it connects a second socket bound
//   to P (SO_REUSEADDR/SO_REUSEPORT, neither listening) to the relay, a
//   "relay-observe" mapping probe whose hello carries the address the relay
//   saw. An endpoint-independent NAT (port-preserving or not) maps the punch
//   from P the same way. If the probe fails, the guess is (observed ip, P),
//   right for port-preserving NATs. Fresh ports, not the listen port, because
//   a mesh opens several connections (control + `streams`) to the same peer
//   and one local port can hold only one connection per remote endpoint;
//   the probe gives each punch port the observation a listen-port mapping
//   would have given.
#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <thread>

#include "common/clock.h"
#include "common/crypto.h"
#include "common/error.h"
#include "common/log.h"
#include "common/msgpack.h"
#include "net/tcp_transport.h"

namespace pccl::net {

namespace {
constexpr size_t kSpliceChunk = 256 << 10;
constexpr size_t kSpliceHighWater = 8 << 20;  // stop reading a side while the other has this much queued
constexpr double kPunchAttemptS = 3.0;
constexpr int kPunchAttempts = 3;
constexpr double kPunchRetryAfterS = 300.0;  // after a failed punch, relay only for this long
constexpr double kRetireRelayedS = 2.0;      // a replaced relayed link lives on this long (late frames)
constexpr size_t kTrustReporters = 2;        // distinct peers that must report an observed IP before we probe it
constexpr double kReachabilityIntervalS = 60.0;  // reachability is asked again this often

void send_relay(const ConnPtr &c, MsgValue m) {
    OutFrame f;
    f.header.type = FrameType::relay;
    f.owned = msgpack_encode(m);
    c->send(std::move(f));
}

// "ip:port" (ip4) -> sockaddr; false if it is not one.
bool parse_endpoint(const std::string &ep, sockaddr_storage &ss, socklen_t &len) {
    auto colon = ep.rfind(':');
    if (colon == std::string::npos) return false;
    std::memset(&ss, 0, sizeof(ss));
    auto *a = reinterpret_cast<sockaddr_in *>(&ss);
    a->sin_family = AF_INET;
    if (inet_pton(AF_INET, ep.substr(0, colon).c_str(), &a->sin_addr) != 1) return false;
    long port = std::strtol(ep.c_str() + colon + 1, nullptr, 10);
    if (port <= 0 || port > 65535) return false;
    a->sin_port = htons(static_cast<uint16_t>(port));
    len = sizeof(sockaddr_in);
    return true;
}

// A TCP socket bound to `port`, or to a fresh one when it is 0 (then `port`
// is set); -1 on failure. Sockets on one port may coexist (the punch and its
// mapping probe), each connected to a different remote endpoint.
int bound_socket(uint16_t &port) {
    int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) return -1;
    int one = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof(one));
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_port = htons(port);
    a.sin_addr.s_addr = htonl(INADDR_ANY);
    socklen_t len = sizeof(a);
    if (::bind(fd, reinterpret_cast<sockaddr *>(&a), sizeof(a)) < 0 ||
        getsockname(fd, reinterpret_cast<sockaddr *>(&a), &len) < 0) {
        ::close(fd);
        return -1;
    }
    port = ntohs(a.sin_port);
    return fd;
}

uint16_t local_port(int fd) {
    sockaddr_in a{};
    socklen_t len = sizeof(a);
    return getsockname(fd, reinterpret_cast<sockaddr *>(&a), &len) == 0 ? ntohs(a.sin_port) : 0;
}

MsgValue string_array(const std::vector<std::string> &v) {
    std::vector<MsgValue> out;
    for (const auto &s : v) out.emplace_back(s);
    return MsgValue::array(std::move(out));
}

std::vector<std::string> strings_of(const MsgValue &v) {
    std::vector<std::string> out;
    for (const auto &x : v.as_array()) out.push_back(x.as_str());
    return out;
}
}  // namespace

// ------------------------------------------------------------- observations

void TcpTransport::record_observation(const std::string &endpoint, const std::string &reporter) {
    std::lock_guard<std::mutex> lk(mu_);
    observations_[endpoint].insert(reporter);
    auto [ip, votes] = observed_ip_locked();
    if (votes >= kTrustReporters && ip != probed_ip_ && !reprobe_) {  // newly trusted: is it reachable?
        reprobe_ = true;
        keeper_cv_.notify_all();
    }
}

std::pair<std::string, size_t> TcpTransport::observed_ip_locked() const {
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

std::string TcpTransport::local_ip4_locked(uint16_t *port) const {
    for (const auto &b : bound_) {
        auto t = b.tcp_target();
        if (t && t->family == AF_INET && !t->is_dns) {
            if (port) *port = t->port;
            return t->host;
        }
    }
    return "";
}

std::vector<std::string> TcpTransport::punch_candidates(uint16_t port) const {
    // The observed IP most peers agree on, else our own. A single report is
    // enough here: a wrong guess costs only this punch attempt.
    std::lock_guard<std::mutex> lk(mu_);
    std::string ip = observed_ip_locked().first;
    if (ip.empty()) ip = local_ip4_locked(nullptr);
    if (ip.empty()) return {};
    return {ip + ":" + std::to_string(port)};
}

std::vector<std::string> TcpTransport::connection_lines() const {
    std::lock_guard<std::mutex> lk(mu_);
    std::vector<std::string> out;
    for (const auto &kv : conns_) {
        const ConnPtr &c = kv.second;
        if (!c->announced_ || c->state() != Connection::State::ready) continue;
        const double rtt = c->rtt_s_.load();
        char rtt_ms[32] = "-";
        if (rtt >= 0) std::snprintf(rtt_ms, sizeof(rtt_ms), "%.3f", rtt * 1e3);
        out.push_back(c->remote_id_ + " " + (c->relayed_ ? "relayed " + c->via_ : std::string("direct -")) + " " +
                      c->remote_endpoint_ + " " + rtt_ms + " " + c->purpose_);
    }
    return out;
}

std::vector<std::string> TcpTransport::reservations() const {
    std::lock_guard<std::mutex> lk(mu_);
    std::vector<std::string> out;
    for (const auto &h : held_)
        if (h.conn->state() != Connection::State::closed) out.push_back(config_.options.relays[h.relay]);
    return out;
}

void TcpTransport::expire_deadlines() {
    std::vector<ConnPtr> late, over;
    const double now = now_s();
    {
        std::lock_guard<std::mutex> lk(mu_);
        for (const auto &kv : conns_) {
            if (kv.second->deadline_ > 0 && now > kv.second->deadline_) late.push_back(kv.second);
            if (kv.second->circuit_ends_ > 0 && now > kv.second->circuit_ends_) over.push_back(kv.second);
        }
    }
    for (auto &c : late) {
        c->deadline_ = 0;
        c->close(PCCL_ERR_TIMEOUT, "connection to " + c->remote_endpoint_ + " timed out");
    }
    for (auto &c : over) c->close(PCCL_ERR_IO, "relay circuit duration limit reached");
    std::vector<ConnPtr> retired;
    {
        std::lock_guard<std::mutex> lk(mu_);
        for (const auto &kv : conns_) {
            const double at = kv.second->retire_at_.load();
            if (at > 0 && now > at) retired.push_back(kv.second);
        }
    }
    for (auto &c : retired) {
        c->retire_at_ = 0;
        c->close(PCCL_OK, c->hidden_ ? "mapping probe done" : "replaced by a direct connection");
    }
    for (auto it = reservations_.begin(); it != reservations_.end();) {
        ConnPtr r = it->second.conn.lock();
        if (r && now <= it->second.expires) {
            ++it;
            continue;
        }
        if (r) r->close(PCCL_ERR_TIMEOUT, "relay reservation expired (not refreshed)");
        it = reservations_.erase(it);
    }
}

// ------------------------------------------------------------ relay (event loop)

void TcpTransport::on_hidden_ready(const ConnPtr &c) {
    if (c->stop_cid_) {
        send_relay(c, MsgValue::map({{"t", "accept"}, {"cid", c->stop_cid_}}));
        return;
    }
    if (ConnPtr asker = c->dialback_for_.lock()) {  // our autonat probe got through
        c->dialback_for_.reset();
        send_relay(asker, MsgValue::map({{"t", "dialback"}, {"ok", true}}));
        c->close(PCCL_OK, "autonat probe done");
    }
    if (ConnPtr link = c->mapping_for_.lock()) {  // our mapping probe: now we know where to be punched
        c->mapping_for_.reset();
        answer_punch(link, c->observed_, c->mapping_started_);
        c->retire_at_ = now_s() + kPunchAttemptS + 2.0;  // holds the NAT mapping through the punch
    }
}

ConnPtr TcpTransport::start_mapping_probe(const ConnPtr &relayed, uint16_t port) {
    sockaddr_storage ss{};
    socklen_t len = sizeof(ss);
    if (getpeername(relayed->fd_, reinterpret_cast<sockaddr *>(&ss), &len) < 0 || ss.ss_family != AF_INET)
        return nullptr;
    int fd = bound_socket(port);
    if (fd < 0) return nullptr;
    try {
        ConnPtr probe = start_dial(ss, len, relayed->via_, "relay-observe", true, fd);
        probe->deadline_ = now_s() + kPunchAttemptS;
        return probe;
    } catch (const Error &) {
        return nullptr;  // start_dial closed fd
    }
}

void TcpTransport::answer_punch(const ConnPtr &relayed, const std::string &observed, double probe_started) {
    if (relayed->punch_fd_ < 0) return;  // closed meanwhile
    std::vector<std::string> mine;
    if (!observed.empty()) mine.push_back(observed);
    else mine = punch_candidates(local_port(relayed->punch_fd_));
    debug_log(config_.identity.peer_id.substr(0, 8), "dcutr: answering with " + (mine.empty() ? "-" : mine[0]) +
                                                (observed.empty() ? " (guessed)" : " (probed)"));
    send_relay(relayed, MsgValue::map({{"t", "dcutr-connect"}, {"addrs", string_array(mine)},
                                       {"wait", std::max(0.0, now_s() - probe_started)}}));
}

void TcpTransport::handle_relay(const ConnPtr &c, const Frame &f) {
    MsgValue m = msgpack_decode(f.data(), f.size());
    const std::string t = m.at("t").as_str();
    auto refuse = [&](const std::string &why) {
        send_relay(c, MsgValue::map({{"t", "error"}, {"reason", why}}));
        c->close(PCCL_ERR_IO, why);
    };
    if (t == "reserve") {  // a new reservation, or the refresh of one
        if (!config_.options.relay) return refuse("peer " + config_.identity.peer_id + " does not relay");
        auto mine = reservations_.find(c->remote_id_);
        const bool refresh = mine != reservations_.end() && mine->second.conn.lock() == c;
        size_t live = 0;
        for (auto &kv : reservations_) live += !kv.second.conn.expired();
        if (!refresh && live >= config_.options.relay_max_reservations)
            return refuse("relay reservations are full");
        const double ttl = config_.options.relay_reservation_ttl_s;
        reservations_[c->remote_id_] = Reservation{c, now_s() + ttl};
        send_relay(c, MsgValue::map({{"t", "reserved"}, {"ttl", ttl}}));
    } else if (t == "connect") {
        if (!config_.options.relay) return refuse("peer " + config_.identity.peer_id + " does not relay");
        const std::string target = m.at("target").as_str();
        auto it = reservations_.find(target);
        ConnPtr r = it == reservations_.end() ? nullptr : it->second.conn.lock();
        if (!r || r->state() != Connection::State::ready) return refuse("relay has no reservation for " + target);
        if (active_circuits_ + pending_circuits_.size() >= config_.options.relay_max_circuits)
            return refuse("relay circuits are full");
        uint64_t cid = next_cid_++;
        pending_circuits_[cid] = {c, target};
        send_relay(r, MsgValue::map({{"t", "incoming"}, {"cid", cid}, {"from", c->remote_id_}}));
    } else if (t == "incoming") {
        // Our relay has a dialer for us: open a stop connection back to it.
        sockaddr_storage ss{};
        socklen_t len = sizeof(ss);
        if (getpeername(c->fd_, reinterpret_cast<sockaddr *>(&ss), &len) < 0) return;
        try {
            ConnPtr s = start_dial(ss, len, c->remote_id_, "relay-stop", true);
            s->stop_cid_ = m.at("cid").as_uint();
            s->deadline_ = now_s() + 10.0;
        } catch (const Error &) {
            // The dialer's hop times out on its own.
        }
    } else if (t == "accept") {
        std::shared_ptr<SelfDial> sd;
        {
            std::lock_guard<std::mutex> lk(mu_);
            auto s = self_dials_.find(m.at("cid").as_uint());
            if (s != self_dials_.end()) sd = s->second;
        }
        if (sd) {  // we dialed a peer reserved on us: this connection is it
            if (c->remote_id_ != sd->target) return refuse("circuit accepted by the wrong peer");
            {  // "open" is our last record on this link: the handshake after it is in the clear
                OutFrame open;
                open.header.type = FrameType::relay;
                open.owned = msgpack_encode(MsgValue::map({{"t", "open"}, {"direct", true}}));
                open.switch_tx = true;
                c->send(std::move(open));
            }
            {
                std::lock_guard<std::mutex> lk(c->smu_);
                c->circuit_target_ = sd->target;
                c->circuit_purpose_ = sd->purpose;
            }
            restart_handshake(c, false, false);
            std::lock_guard<std::mutex> lk(mu_);
            sd->conn = c;
            self_dial_cv_.notify_all();
            return;
        }
        auto it = pending_circuits_.find(m.at("cid").as_uint());
        if (it == pending_circuits_.end()) return refuse("unknown circuit");
        ConnPtr hop = it->second.first.lock();
        const std::string target = it->second.second;
        pending_circuits_.erase(it);
        if (c->remote_id_ != target) return refuse("circuit accepted by the wrong peer");
        if (!hop || hop->state() != Connection::State::ready) return refuse("the dialer is gone");
        c->splice_ = hop;
        hop->splice_ = c;
        ++active_circuits_;
        if (config_.options.relay_max_circuit_s > 0)
            c->circuit_ends_ = hop->circuit_ends_ = now_s() + config_.options.relay_max_circuit_s;
        // Queued before any spliced byte, so each side sees "open" first.
        send_relay(hop, MsgValue::map({{"t", "open"}}));
        send_relay(c, MsgValue::map({{"t", "open"}}));
    } else if (t == "open") {
        // The circuit is spliced (or, "direct", the relay itself is the other
        // end): restart the handshake, end to end this time.
        const MsgValue *d = m.find("direct");
        restart_handshake(c, c->stop_cid_ != 0, !(d && d->as_bool()));
    } else if (t == "reserved") {
        std::lock_guard<std::mutex> lk(c->smu_);
        c->relay_reply_ = "reserved";
        const MsgValue *ttl = m.find("ttl");
        c->relay_ttl_ = ttl ? ttl->as_double() : 0;
        c->cv_.notify_all();
    } else if (t == "error") {
        const MsgValue *r = m.find("reason");
        c->close(PCCL_ERR_IO, "relay " + c->remote_id_ + ": " + (r ? r->as_str() : std::string("refused")));
    } else if (t == "dialback") {
        if (const MsgValue *ok = m.find("ok")) {  // the answer to our request
            std::lock_guard<std::mutex> lk(c->smu_);
            c->relay_reply_ = ok->as_bool() ? "public" : "private";
            c->cv_.notify_all();
            return;
        }
        auto answer_no = [&] { send_relay(c, MsgValue::map({{"t", "dialback"}, {"ok", false}})); };
        for (const auto &a : strings_of(m.at("addrs"))) {
            auto target = Multiaddr::parse(a).tcp_target();
            if (!target || target->is_dns || target->family != AF_INET) continue;
            sockaddr_storage ss{};
            socklen_t len = 0;
            if (!parse_endpoint(target->host + ":" + std::to_string(target->port), ss, len)) continue;
            try {
                ConnPtr probe = start_dial(ss, len, c->remote_id_, "autonat", true);
                probe->dialback_for_ = c;
                probe->deadline_ = now_s() + 3.0;
            } catch (const Error &) {
                answer_no();
            }
            return;
        }
        answer_no();
    } else if (t == "dcutr-connect") {
        std::vector<std::string> addrs = strings_of(m.at("addrs"));
        if (!c->inbound_) {  // the answer to our connect
            std::lock_guard<std::mutex> lk(c->smu_);
            c->punch_addrs_ = std::move(addrs);
            const MsgValue *w = m.find("wait");
            c->punch_wait_ = w ? std::max(0.0, w->as_double()) : 0.0;
            c->punch_reply_ = true;
            c->cv_.notify_all();
            return;
        }
        if (c->punch_fd_ >= 0) ::close(c->punch_fd_);
        uint16_t port = 0;
        c->punch_fd_ = bound_socket(port);
        c->punch_addrs_ = std::move(addrs);
        if (c->punch_fd_ < 0) {
            send_relay(c, MsgValue::map({{"t", "dcutr-connect"}, {"addrs", string_array({})}}));
            return;
        }
        // Answer once the probe tells where the NAT maps the punch port.
        if (ConnPtr probe = start_mapping_probe(c, port)) {
            probe->mapping_for_ = c;
            probe->mapping_started_ = now_s();
        } else {
            answer_punch(c, "", now_s());
        }
    } else if (t == "dcutr-reverse") {
        // The other end is public: dial it directly (an outbound connection
        // passes any NAT); its hello tells it which request this answers.
        for (const auto &a : strings_of(m.at("addrs"))) {
            auto target = Multiaddr::parse(a).tcp_target();
            sockaddr_storage ss{};
            socklen_t len = 0;
            if (!target || target->is_dns || target->family != AF_INET ||
                !parse_endpoint(target->host + ":" + std::to_string(target->port), ss, len))
                continue;
            try {
                ConnPtr d = start_dial(ss, len, c->remote_id_, m.at("purpose").as_str(), false);
                d->reverse_cid_ = m.at("cid").as_uint();
                d->deadline_ = now_s() + kPunchAttemptS + 2.0;
            } catch (const Error &) {
            }
            return;
        }
    } else if (t == "dcutr-sync") {
        int fd = c->punch_fd_;
        c->punch_fd_ = -1;
        sockaddr_storage ss{};
        socklen_t len = 0;
        if (fd < 0 || c->punch_addrs_.empty() || !parse_endpoint(c->punch_addrs_[0], ss, len)) {
            if (fd >= 0) ::close(fd);
            return;
        }
        try {
            ConnPtr d = start_dial(ss, len, c->remote_id_, "", false, fd);
            d->inbound_ = true;  // the dialer names the purpose, as if it had connected to us
            d->deadline_ = now_s() + kPunchAttemptS + 2.0;
        } catch (const Error &) {
        }
    }
}

void TcpTransport::restart_handshake(const ConnPtr &c, bool stop_side, bool relayed) {
    {
        std::lock_guard<std::mutex> lk(c->smu_);
        c->state_ = Connection::State::handshaking;
        c->relayed_ = relayed;
        c->via_ = relayed ? c->remote_id_ : std::string();
        c->hidden_ = false;
        c->inbound_ = stop_side;
        c->expected_id_ = stop_side ? std::string() : c->circuit_target_;
        c->purpose_ = stop_side ? std::string() : c->circuit_purpose_;
    }
    c->remote_id_.clear();
    c->remote_addrs_.clear();
    c->deadline_ = now_s() + 10.0;
    // The end-to-end handshake starts in the clear right after the relay's
    // last record ("open"): start_handshake drops both record keys (the
    // relay side of a "direct" open queued its "open" with a switch to the
    // clear, see handle_relay).
    start_handshake(c);
}

bool TcpTransport::splice_read(const ConnPtr &c) {
    ConnPtr o = c->splice_.lock();
    if (!o) {
        c->close(PCCL_ERR_PEER_LOST, "the other side of the relayed circuit closed");
        return false;
    }
    for (int iter = 0; iter < 16; ++iter) {
        {
            std::lock_guard<std::mutex> lo(o->wmu_);
            if (o->queued_ > kSpliceHighWater) {
                std::lock_guard<std::mutex> lc(c->wmu_);
                c->read_paused_ = true;  // resumed when `o` drains (handle_event)
                c->want_write(c->want_out_);
                return true;
            }
        }
        std::string buf(kSpliceChunk, '\0');
        ssize_t n = ::recv(c->fd_, buf.data(), buf.size(), 0);
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
        c->spliced_bytes_ += static_cast<uint64_t>(n);
        if (config_.options.relay_max_circuit_bytes && c->spliced_bytes_ > config_.options.relay_max_circuit_bytes) {
            c->close(PCCL_ERR_IO, "relay circuit byte limit reached");
            return false;
        }
        buf.resize(static_cast<size_t>(n));
        OutFrame f;
        f.raw = true;
        f.owned = std::move(buf);
        if (!o->send(std::move(f))) {
            c->close(PCCL_ERR_PEER_LOST, "the other side of the relayed circuit closed");
            return false;
        }
    }
    return true;
}

// ------------------------------------------------------------ caller threads

ConnPtr TcpTransport::dial_circuit(const Multiaddr &addr, double timeout_s, const std::string &purpose) {
    const std::string text = addr.to_string();
    const auto pos = text.find("/p2p-circuit");
    Multiaddr relay = Multiaddr::parse(text.substr(0, pos));
    const std::string target = addr.peer_id().value_or("");
    if (target.empty() || !relay.peer_id() || *relay.peer_id() == target)
        fail(PCCL_ERR_INVALID_ARGUMENT,
             "cannot dial '" + text + "': need /<relay addr>/p2p/<relay id>/p2p-circuit/p2p/<target id>");
    const double deadline = now_s() + timeout_s;
    if (*relay.peer_id() == config_.identity.peer_id) return dial_reserved(target, timeout_s, purpose);
    ConnPtr c = dial_direct(relay, timeout_s, "relay-hop", true);
    {
        std::lock_guard<std::mutex> lk(c->smu_);
        c->circuit_target_ = target;
        c->circuit_purpose_ = purpose;
    }
    send_relay(c, MsgValue::map({{"t", "connect"}, {"target", target}}));
    {
        std::unique_lock<std::mutex> lk(c->smu_);
        bool settled = c->cv_.wait_for(lk, std::chrono::duration<double>(std::max(0.0, deadline - now_s())), [&] {
            return c->state_ == Connection::State::closed || (c->state_ == Connection::State::ready && c->relayed_);
        });
        if (!settled) {
            lk.unlock();
            c->close(PCCL_ERR_TIMEOUT, "relayed handshake timed out");
            fail(PCCL_ERR_TIMEOUT, "connecting to " + text + " through the relay timed out");
        }
        if (c->state_ == Connection::State::closed) {
            pccl_status_t st = c->close_status_;
            fail(st == PCCL_OK ? PCCL_ERR_IO : st, "cannot connect to " + text + ": " + c->close_reason_);
        }
    }
    if (config_.options.hole_punch) {
        // A NAT that defeated punching once (symmetric) will again: later dials
        // to that peer (the data streams) take the relay at once instead of
        // stalling the op that needs them.
        const std::string target = c->remote_id();
        bool skip;
        {
            std::lock_guard<std::mutex> lk(mu_);
            auto it = punch_failed_until_.find(target);
            skip = it != punch_failed_until_.end() && it->second > now_s();
        }
        // Reversal first when we may be public (verified, or not known: a
        // peer without relays; one failure then stops the guessing).
        bool maybe_public;
        {
            std::lock_guard<std::mutex> lk(mu_);
            maybe_public = reachability_ == "public" || (reachability_ == "unknown" && !reversal_failed_);
        }
        if (maybe_public) {
            if (ConnPtr d = try_reversal(c, purpose, std::max(1.0, deadline - now_s()))) {
                c->retire_at_ = now_s() + kRetireRelayedS;
                return d;
            }
            std::lock_guard<std::mutex> lk(mu_);
            if (reachability_ == "unknown") reversal_failed_ = true;
        }
        if (!skip) {
            if (ConnPtr d = try_hole_punch(c, purpose, std::max(1.0, deadline - now_s()))) {
                c->retire_at_ = now_s() + kRetireRelayedS;
                return d;
            }
            std::lock_guard<std::mutex> lk(mu_);
            punch_failed_until_[target] = now_s() + kPunchRetryAfterS;
        }
    }
    return c;
}

ConnPtr TcpTransport::dial_reserved(const std::string &target, double timeout_s, const std::string &purpose) {
    // We are the relay of `target`: ask it (over its reservation) to connect
    // to us; that connection then carries the normal handshake, we as dialer.
    auto sd = std::make_shared<SelfDial>();
    sd->target = target;
    sd->purpose = purpose;
    ConnPtr r;
    uint64_t cid;
    {
        std::lock_guard<std::mutex> lk(mu_);
        cid = next_self_cid_++;
        self_dials_[cid] = sd;
        for (auto &kv : conns_)  // the reservation: a hidden connection from target on which it sent "reserve"
            if (kv.second->hidden_ && kv.second->inbound_ && kv.second->remote_id_ == target &&
                kv.second->purpose_ == "relay-reserve" && kv.second->state() == Connection::State::ready)
                r = kv.second;
    }
    auto forget = [&] {
        std::lock_guard<std::mutex> lk(mu_);
        self_dials_.erase(cid);
    };
    if (!r) {
        forget();
        fail(PCCL_ERR_IO, "cannot dial " + target + " through ourselves: it holds no reservation here");
    }
    send_relay(r, MsgValue::map({{"t", "incoming"}, {"cid", cid}, {"from", config_.identity.peer_id}}));
    ConnPtr c;
    {
        std::unique_lock<std::mutex> lk(mu_);
        self_dial_cv_.wait_for(lk, std::chrono::duration<double>(timeout_s), [&] { return sd->conn != nullptr; });
        c = sd->conn;
        self_dials_.erase(cid);
    }
    if (!c) fail(PCCL_ERR_TIMEOUT, "peer " + target + " did not connect back to us within the timeout");
    std::unique_lock<std::mutex> lk(c->smu_);
    c->cv_.wait_for(lk, std::chrono::duration<double>(timeout_s), [&] {
        return c->state_ == Connection::State::closed || c->state_ == Connection::State::ready;
    });
    if (c->state_ == Connection::State::ready) return c;
    lk.unlock();
    c->close(PCCL_ERR_TIMEOUT, "handshake timed out");
    fail(PCCL_ERR_TIMEOUT, "connecting to " + target + " (reserved on us) failed: " + c->close_reason());
}

ConnPtr TcpTransport::try_reversal(const ConnPtr &relayed, const std::string &purpose, double timeout_s) {
    auto sd = std::make_shared<SelfDial>();
    sd->target = relayed->remote_id();
    sd->purpose = purpose;
    std::vector<std::string> mine;
    uint64_t cid;
    {
        std::lock_guard<std::mutex> lk(mu_);
        cid = next_self_cid_++;
        self_dials_[cid] = sd;
        for (const auto &a : public_addrs_) mine.push_back(a.to_string());
        for (const auto &a : bound_) mine.push_back(a.to_string());
    }
    send_relay(relayed, MsgValue::map({{"t", "dcutr-reverse"}, {"cid", cid}, {"purpose", purpose},
                                       {"addrs", string_array(mine)}}));
    ConnPtr c;
    {
        std::unique_lock<std::mutex> lk(mu_);
        self_dial_cv_.wait_for(lk, std::chrono::duration<double>(std::min(timeout_s, kPunchAttemptS)),
                               [&] { return sd->conn != nullptr || relayed->state() == Connection::State::closed; });
        c = sd->conn;
        self_dials_.erase(cid);
    }
    debug_log(config_.identity.peer_id.substr(0, 8), std::string("dcutr reversal ") + (c ? "connected" : "failed"));
    return c;
}

ConnPtr TcpTransport::try_hole_punch(const ConnPtr &relayed, const std::string &purpose, double timeout_s) {
    const double deadline = now_s() + timeout_s;
    for (int attempt = 0; attempt < kPunchAttempts && now_s() < deadline; ++attempt) {
        uint16_t port = 0;
        int fd = bound_socket(port);
        if (fd < 0) return nullptr;
        std::vector<std::string> mine;
        ConnPtr probe = start_mapping_probe(relayed, port);
        if (probe) {
            std::unique_lock<std::mutex> lk(probe->smu_);
            probe->cv_.wait_for(lk, std::chrono::duration<double>(kPunchAttemptS), [&] {
                return probe->state_ == Connection::State::ready || probe->state_ == Connection::State::closed;
            });
            if (probe->state_ == Connection::State::ready && !probe->observed_.empty())
                mine.push_back(probe->observed_);
            probe->retire_at_ = now_s() + kPunchAttemptS + 2.0;  // holds the NAT mapping through the punch
        }
        if (mine.empty()) mine = punch_candidates(port);
        {
            std::lock_guard<std::mutex> lk(relayed->smu_);
            relayed->punch_reply_ = false;
            relayed->punch_addrs_.clear();
        }
        const double t0 = now_s();
        send_relay(relayed, MsgValue::map({{"t", "dcutr-connect"}, {"addrs", string_array(mine)}}));
        std::vector<std::string> theirs;
        {
            std::unique_lock<std::mutex> lk(relayed->smu_);
            relayed->cv_.wait_for(lk, std::chrono::duration<double>(kPunchAttemptS), [&] {
                return relayed->punch_reply_ || relayed->state_ == Connection::State::closed;
            });
            if (!relayed->punch_reply_) {
                ::close(fd);
                return nullptr;
            }
            theirs = relayed->punch_addrs_;
        }
        // What the other side spent on its own mapping probe is not path delay.
        const double rtt = std::max(0.0, now_s() - t0 - relayed->punch_wait_);
        debug_log(config_.identity.peer_id.substr(0, 8), "dcutr: mine " + (mine.empty() ? "-" : mine[0]) + " theirs " +
                                                    (theirs.empty() ? "-" : theirs[0]) + " rtt " + std::to_string(rtt));
        sockaddr_storage ss{};
        socklen_t len = 0;
        if (theirs.empty() || mine.empty() || !parse_endpoint(theirs[0], ss, len)) {
            ::close(fd);
            return nullptr;  // nothing to punch with
        }
        send_relay(relayed, MsgValue::map({{"t", "dcutr-sync"}}));
        std::this_thread::sleep_for(std::chrono::duration<double>(rtt / 2));
        ConnPtr d;
        try {
            d = start_dial(ss, len, relayed->remote_id(), purpose, false, fd);
        } catch (const Error &) {
            continue;
        }
        std::unique_lock<std::mutex> lk(d->smu_);
        d->cv_.wait_for(lk, std::chrono::duration<double>(kPunchAttemptS), [&] {
            return d->state_ == Connection::State::ready || d->state_ == Connection::State::closed;
        });
        if (d->state_ == Connection::State::ready) return d;
        debug_log(config_.identity.peer_id.substr(0, 8), "dcutr attempt failed: " + d->close_reason_);
        lk.unlock();
        d->close(PCCL_ERR_TIMEOUT, "hole punch did not connect");
    }
    return nullptr;
}

ConnPtr TcpTransport::reserve_on(const Multiaddr &relay) {
    constexpr double kRelayTimeoutS = 5.0;
    ConnPtr c = dial_direct(relay, kRelayTimeoutS, "relay-reserve", true);
    send_relay(c, MsgValue::map({{"t", "reserve"}}));
    std::unique_lock<std::mutex> lk(c->smu_);
    c->cv_.wait_for(lk, std::chrono::duration<double>(kRelayTimeoutS), [&] {
        return !c->relay_reply_.empty() || c->state_ == Connection::State::closed || stopping_;
    });
    if (c->relay_reply_ != "reserved") {
        const std::string why = c->state_ == Connection::State::closed ? c->close_reason_ : "no answer";
        lk.unlock();
        c->close(PCCL_ERR_IO, "no reservation");
        fail(PCCL_ERR_IO, "relay " + relay.to_string() + " refused a reservation: " + why);
    }
    c->relay_reply_.clear();
    return c;
}

void TcpTransport::keep_reservations(bool announce) {
    constexpr double kRetryAfterS = 5.0;
    const auto &relays = config_.options.relays;
    std::vector<size_t> candidates;
    bool changed = false;
    {
        std::lock_guard<std::mutex> lk(mu_);
        const double now = now_s();
        for (auto it = held_.begin(); it != held_.end();) {
            if (it->conn->state() == Connection::State::closed) {
                debug_log(config_.identity.peer_id.substr(0, 8), "lost the reservation on " + relays[it->relay] + ": " +
                                                            it->conn->close_reason());
                relay_retry_at_[it->relay] = now + kRetryAfterS;
                it = held_.erase(it);
                changed = true;
                continue;
            }
            if (now >= it->refresh_at) {  // the answer ("reserved") needs no waiting for
                send_relay(it->conn, MsgValue::map({{"t", "reserve"}}));
                it->refresh_at = now + std::max(0.25, it->ttl / 2);
            }
            ++it;
        }
        for (size_t i = 0; i < relays.size(); ++i) {
            bool held = std::any_of(held_.begin(), held_.end(), [&](const Held &h) { return h.relay == i; });
            auto r = relay_retry_at_.find(i);
            if (!held && (r == relay_retry_at_.end() || r->second <= now)) candidates.push_back(i);
        }
    }
    for (size_t i : candidates) {
        {
            std::lock_guard<std::mutex> lk(mu_);
            if (held_.size() >= config_.options.relay_slots || stopping_) break;
        }
        try {
            Multiaddr ra = Multiaddr::parse(relays[i]);
            if (!ra.peer_id()) continue;
            ConnPtr c = reserve_on(ra);
            double ttl;
            {
                std::lock_guard<std::mutex> lk(c->smu_);
                ttl = c->relay_ttl_ > 0 ? c->relay_ttl_ : 60.0;
            }
            std::lock_guard<std::mutex> lk(mu_);
            held_.push_back(Held{i, c, ttl, now_s() + std::max(0.25, ttl / 2)});
            changed = true;
            debug_log(config_.identity.peer_id.substr(0, 8), "reserved a slot on " + relays[i]);
        } catch (const Error &e) {
            // An unreachable or full relay is retried later; the others may do.
            debug_log(config_.identity.peer_id.substr(0, 8), e.what());
            std::lock_guard<std::mutex> lk(mu_);
            relay_retry_at_[i] = now_s() + kRetryAfterS;
        }
    }
    if (!changed) return;
    {
        std::lock_guard<std::mutex> lk(mu_);
        std::sort(held_.begin(), held_.end(), [](const Held &a, const Held &b) { return a.relay < b.relay; });
        circuit_addrs_.clear();
        for (const auto &h : held_) circuit_addrs_.push_back(Multiaddr::parse(relays[h.relay] + "/p2p-circuit"));
        ++addrs_version_;
    }
    if (announce) handler_->on_addrs_changed();
}

bool TcpTransport::learn_reachability() {
    // Ask a relay to dial us back from a fresh port: at our observed IP with
    // our listen port when enough distinct peers agree on that IP (a NAT with
    // that port forwarded makes us public there), else at the bound address.
    constexpr double kDialbackTimeoutS = 5.0;
    std::vector<std::string> mine;
    std::vector<ConnPtr> held;
    std::optional<Multiaddr> observed;
    {
        std::lock_guard<std::mutex> lk(mu_);
        uint16_t port = 0;
        const std::string local = local_ip4_locked(&port);
        auto [ip, votes] = observed_ip_locked();
        if (votes >= kTrustReporters && !ip.empty() && ip != local && port) {
            observed = Multiaddr::parse("/ip4/" + ip + "/tcp/" + std::to_string(port));
            mine.push_back(observed->with_peer_id(config_.identity.peer_id).to_string());
            probed_ip_ = ip;
        } else {
            for (const auto &b : bound_) mine.push_back(b.with_peer_id(config_.identity.peer_id).to_string());
        }
        for (const auto &h : held_) held.push_back(h.conn);
    }
    for (auto &c : held) {
        {
            std::lock_guard<std::mutex> lk(c->smu_);
            c->relay_reply_.clear();  // a refresh's "reserved" is not the verdict
        }
        send_relay(c, MsgValue::map({{"t", "dialback"}, {"addrs", string_array(mine)}}));
        std::unique_lock<std::mutex> lk(c->smu_);
        c->cv_.wait_for(lk, std::chrono::duration<double>(kDialbackTimeoutS), [&] {
            return c->relay_reply_ == "public" || c->relay_reply_ == "private" ||
                   c->state_ == Connection::State::closed || stopping_;
        });
        if (c->relay_reply_ == "public" || c->relay_reply_ == "private") {
            const std::string verdict = c->relay_reply_;
            c->relay_reply_.clear();
            lk.unlock();
            std::lock_guard<std::mutex> g(mu_);
            const std::string before = reachability_;
            const size_t before_public = public_addrs_.size();
            const std::string before_first = public_addrs_.empty() ? "" : public_addrs_[0].to_string();
            reachability_ = verdict;
            if (verdict == "public" && observed) public_addrs_ = {*observed};
            if (verdict == "private") public_addrs_.clear();  // a port forward that went away
            const bool changed = reachability_ != before || public_addrs_.size() != before_public ||
                                 (!public_addrs_.empty() && public_addrs_[0].to_string() != before_first);
            if (changed) {
                ++addrs_version_;
                debug_log(config_.identity.peer_id.substr(0, 8), "reachability: " + reachability_);
            }
            return changed;
        }
    }
    return false;
}

void TcpTransport::keeper_loop() {
    constexpr double kPeriodS = 0.25;
    double next_probe = now_s() + kReachabilityIntervalS;
    std::unique_lock<std::mutex> lk(mu_);
    while (!stopping_) {
        keeper_cv_.wait_for(lk, std::chrono::duration<double>(kPeriodS), [&] { return stopping_.load(); });
        if (stopping_) break;
        // Ask again now and then (a port forward may come or go, a NAT may
        // reboot), and at once when peers newly agree on an observed IP.
        const bool probe = reprobe_ || now_s() >= next_probe;
        reprobe_ = false;
        lk.unlock();
        keep_reservations(true);
        if (probe) {
            next_probe = now_s() + kReachabilityIntervalS;
            if (learn_reachability()) handler_->on_addrs_changed();
        }
        lk.lock();
    }
}

}  // namespace pccl::net
