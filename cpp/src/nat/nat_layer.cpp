#include "nat/nat_layer.h"

#include "common/clock.h"
#include "common/error.h"
#include "common/log.h"

namespace pccl::nat {

namespace {
constexpr double kKeeperPeriodS = 0.25;          // reservations are checked this often
constexpr double kReachabilityIntervalS = 60.0;  // reachability is asked again this often

std::unique_ptr<net::NatHooks> make_layer(net::TcpTransport &tcp, const net::TransportConfig &config) {
    return std::make_unique<NatLayer>(tcp, config);
}
// Every TcpTransport of the process gets the NAT layer (net/nat_hooks.h).
[[maybe_unused]] const bool registered = (net::register_nat_layer(&make_layer), true);
}  // namespace

NatLayer::NatLayer(net::TcpTransport &tcp, const net::TransportConfig &config)
    : ctx_{tcp, config.options, config.identity.peer_id, config.identity.peer_id.substr(0, 8),
           NatTimeouts::derive(config.options.op_timeout_s)},
      reach_(ctx_, [this] { wake_keeper(); }),
      client_(ctx_),
      server_(ctx_, self_dials_),
      punch_(ctx_, reach_, self_dials_) {
    reach_.register_handlers(dispatcher_);
    client_.register_handlers(dispatcher_);
    server_.register_handlers(dispatcher_);
    punch_.register_handlers(dispatcher_);
}

NatLayer::~NatLayer() { stop(); }

void NatLayer::start() {
    if (ctx_.options.relays.empty()) return;  // nobody to reserve on or to ask: reachability stays "unknown"
    client_.keep();
    reach_.learn(client_.held());
    keeper_ = std::thread([this] { keeper_loop(); });
}

void NatLayer::stop() {
    {
        std::lock_guard<std::mutex> lk(mu_);
        if (stopping_) return;
        stopping_ = true;
        keeper_cv_.notify_all();
    }
    // A reservation or dial-back in progress fails at once.
    for (auto &c : ctx_.tcp.connections_with_purpose("relay-reserve")) c->close(PCCL_ERR_CLOSED, "communicator closed");
    if (keeper_.joinable()) keeper_.join();
}

void NatLayer::wake_keeper() {
    std::lock_guard<std::mutex> lk(mu_);
    wake_ = true;
    keeper_cv_.notify_all();
}

void NatLayer::keeper_loop() {
    double next_probe = now_s() + kReachabilityIntervalS;
    std::unique_lock<std::mutex> lk(mu_);
    while (!stopping_) {
        keeper_cv_.wait_for(lk, std::chrono::duration<double>(kKeeperPeriodS), [&] { return stopping_ || wake_; });
        if (stopping_) break;
        wake_ = false;
        lk.unlock();
        // Ask again now and then (a port forward may come or go, a NAT may
        // reboot), and at once when peers newly agree on an observed IP.
        const bool probe = reach_.take_reprobe() || now_s() >= next_probe;
        if (client_.keep()) ctx_.tcp.notify_addrs_changed();
        if (probe) {
            next_probe = now_s() + kReachabilityIntervalS;
            if (reach_.learn(client_.held())) ctx_.tcp.notify_addrs_changed();
        }
        lk.lock();
    }
}

net::LinkPtr NatLayer::dial_relayed(const Multiaddr &addr, double timeout_s, const std::string &purpose) {
    const std::string text = addr.to_string();
    const auto pos = text.find("/p2p-circuit");
    Multiaddr relay = Multiaddr::parse(text.substr(0, pos));
    const std::string target = addr.peer_id().value_or("");
    if (target.empty() || !relay.peer_id() || *relay.peer_id() == target)
        fail(PCCL_ERR_INVALID_ARGUMENT,
             "cannot dial '" + text + "': need /<relay addr>/p2p/<relay id>/p2p-circuit/p2p/<target id>");
    if (*relay.peer_id() == ctx_.self_id) return server_.dial_reserved(target, timeout_s, purpose);
    const double deadline = now_s() + timeout_s;
    ConnPtr c = client_.dial_circuit(relay, target, text, deadline, purpose);
    return punch_.upgrade(c, purpose, std::min(deadline, now_s() + ctx_.waits.upgrade_budget_s));
}

std::vector<Multiaddr> NatLayer::addrs_first() const {
    std::vector<Multiaddr> out;
    if (reach_.verdict() == "private") out = client_.circuit_addrs();
    for (auto &a : reach_.public_addrs()) out.push_back(std::move(a));
    return out;
}

bool NatLayer::internal_purpose(const std::string &purpose) const {
    return purpose.rfind("relay-", 0) == 0 || purpose == "autonat";
}

void NatLayer::on_internal_ready(const ConnPtr &c) {
    if (client_.on_internal_ready(c)) return;  // our stop connection: accept the circuit
    if (reach_.on_internal_ready(c)) return;   // our dial-back probe got through
    punch_.on_internal_ready(c);               // our mapping probe: now we know where to be punched
}

void NatLayer::on_observed(const ConnPtr &c, const std::string &endpoint) {
    reach_.record_observation(endpoint, c->remote_id());
    punch_.on_observed(c, endpoint);
}

void NatLayer::on_finalize(const ConnPtr &c) {
    server_.on_finalize(c);
    if (client_.on_finalize(c)) wake_keeper();  // one of our reservations: replace it now
    reach_.on_finalize(c);
    punch_.on_finalize(c);
}

void NatLayer::tick(double now) {
    server_.tick(now);
    punch_.tick(now);
}

}  // namespace pccl::nat
