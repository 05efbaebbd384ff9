// The NAT layer: what a TCP transport adds to reach peers behind NATs.
// It implements net::NatHooks (net/nat_hooks.h) and registers itself, so
// every TcpTransport gets one; it owns one object per concern, each with
// its own state and its own relay message handlers:
//   Reachability  observed addresses (identify) and dial-backs (AutoNAT)
//   RelayClient   our reservations on relays; dials through a relay
//   RelayServer   relaying for others, with its limits; the byte splice
//   HolePunch     connection reversal and DCUtR-style hole punching
// and a keeper thread that keeps the reservations and asks for a dial-back
// now and then. A dial of a /p2p-circuit address goes through the relay
// (RelayClient, or RelayServer when we are that relay) and is then
// upgraded to a direct link when possible (HolePunch), all within the
// dial's timeout. Every wait derives from the op timeout (nat/timeouts.h).
#pragma once

#include <condition_variable>
#include <mutex>
#include <thread>

#include "nat/dispatcher.h"
#include "nat/hole_punch.h"
#include "nat/reachability.h"
#include "nat/relay_client.h"
#include "nat/relay_server.h"
#include "nat/self_dials.h"
#include "nat/wire.h"
#include "net/nat_hooks.h"

namespace pccl::nat {

class NatLayer final : public net::NatHooks {
public:
    NatLayer(net::TcpTransport &tcp, const net::TransportConfig &config);
    ~NatLayer() override;

    void start() override;
    void stop() override;
    net::LinkPtr dial_relayed(const Multiaddr &addr, double timeout_s, const std::string &purpose) override;
    std::vector<Multiaddr> addrs_first() const override;
    uint64_t addrs_version() const override { return ctx_.addrs_version.load(); }
    std::string reachability() const override { return reach_.verdict(); }
    std::vector<std::string> reservations() const override { return client_.reservations(); }

    bool internal_purpose(const std::string &purpose) const override;
    void on_relay_frame(const ConnPtr &c, const net::Frame &f) override { dispatcher_.dispatch(c, f); }
    void on_internal_ready(const ConnPtr &c) override;
    void on_announced(const ConnPtr &c) override { punch_.on_announced(c); }
    void on_observed(const ConnPtr &c, const std::string &endpoint) override;
    void add_hello_fields(const ConnPtr &c, MsgValue &fields) override { punch_.add_hello_fields(c, fields); }
    void take_hello_fields(const ConnPtr &c, const MsgValue &fields) override { punch_.take_hello_fields(c, fields); }
    bool on_raw_readable(const ConnPtr &c) override { return server_.on_raw_readable(c); }
    void on_raw_drained(const ConnPtr &c) override { server_.on_raw_drained(c); }
    void on_finalize(const ConnPtr &c) override;
    void tick(double now) override;

private:
    void keeper_loop();
    void wake_keeper();

    NatContext ctx_;
    SelfDials self_dials_;
    Reachability reach_;
    RelayClient client_;
    RelayServer server_;
    HolePunch punch_;
    Dispatcher dispatcher_;

    std::thread keeper_;
    std::mutex mu_;  // guards stopping_, wake_; keeper_cv_ waits on it
    std::condition_variable keeper_cv_;
    bool stopping_ = false;
    bool wake_ = false;
};

}  // namespace pccl::nat
