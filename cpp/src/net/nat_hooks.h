// The extension point of the TCP transport for NAT traversal. net/ knows
// nothing of relays, reachability or hole punching: the NAT layer
// (cpp/src/nat/) implements NatHooks, registers a factory once
// (register_nat_layer, at static initialisation), and every TcpTransport
// builds its hooks from it before its event loop starts. Without a
// registered layer a TcpTransport dials and listens directly only.
//
// The NAT layer drives the transport back through TcpTransport's "for the
// NAT layer" methods (tcp_transport.h): start a dial from a chosen socket,
// restart a handshake end to end, switch a connection to raw bytes.
//
// Threads: the methods marked "event loop" run on the transport's thread,
// one at a time, with no transport lock held, and must not block; the
// others run on caller threads and may block for a bounded time.
// An Error thrown by a hook that runs while a connection is read (relay
// frames, hello fields, ready, raw bytes) closes that connection only, like
// any malformed input; on_finalize, on_raw_drained and tick must not throw.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "common/msgpack.h"
#include "net/frame.h"
#include "net/multiaddr.h"
#include "net/transport.h"

namespace pccl::net {

class Connection;
class TcpTransport;
using ConnPtr = std::shared_ptr<Connection>;

class NatHooks {
public:
    virtual ~NatHooks() = default;

    // Caller thread (the transport's constructor), once the event loop
    // runs: first reservations and reachability, then background work.
    // Blocks for a bounded time (the layer's waits derive from
    // TransportOptions::op_timeout_s).
    virtual void start() = 0;
    // Caller thread (shutdown), before the event loop stops: background
    // work ends and the layer's waits in progress fail at once.
    virtual void stop() = 0;

    // Dialer for relayed (/p2p-circuit) addresses; contract of Dialer::dial.
    virtual LinkPtr dial_relayed(const Multiaddr &addr, double timeout_s, const std::string &purpose) = 0;
    // Listener: addresses to advertise before the bound ones, and a
    // version that grows whenever they change. Thread-safe.
    virtual std::vector<Multiaddr> addrs_first() const = 0;
    virtual uint64_t addrs_version() const = 0;
    virtual std::string reachability() const = 0;
    virtual std::vector<std::string> reservations() const = 0;

    // An inbound connection's stated purpose that makes it the layer's own
    // (never announced to the TransportHandler, carries no mesh frames).
    // Event loop.
    virtual bool internal_purpose(const std::string &purpose) const = 0;
    // Event loop: a FrameType::relay frame on a ready connection.
    virtual void on_relay_frame(const ConnPtr &c, const Frame &f) = 0;
    // Event loop: an internal connection became ready.
    virtual void on_internal_ready(const ConnPtr &c) = 0;
    // Event loop: a connection was announced (after the handler's on_ready).
    virtual void on_announced(const ConnPtr &c) = 0;
    // Event loop, a direct outbound connection in its handshake: the
    // acceptor saw us at `endpoint` ("ip:port", identify).
    virtual void on_observed(const ConnPtr &c, const std::string &endpoint) = 0;
    // Event loop: fields the dialer adds to its identity message, and the
    // acceptor's view of them (both sides' handshake, before ready).
    virtual void add_hello_fields(const ConnPtr &c, MsgValue &fields) = 0;
    virtual void take_hello_fields(const ConnPtr &c, const MsgValue &fields) = 0;
    // Event loop, connections in raw mode (TcpTransport::set_raw): the
    // socket is readable; the layer reads it (Connection::fd()). False
    // when it closed the connection.
    virtual bool on_raw_readable(const ConnPtr &c) = 0;
    // Event loop: a raw-mode connection's send queue drained below 1 MiB.
    virtual void on_raw_drained(const ConnPtr &c) = 0;
    // Event loop: `c` closed; runs before the handler's on_closed. The last
    // hook for `c`: per-connection state of the layer ends here.
    virtual void on_finalize(const ConnPtr &c) = 0;
    // Event loop, every round (at least every 200 ms): time-based work.
    virtual void tick(double now) = 0;
};

using NatFactory = std::unique_ptr<NatHooks> (*)(TcpTransport &transport, const TransportConfig &config);
// The NAT layer registers itself once; the last registration wins.
void register_nat_layer(NatFactory factory);
NatFactory nat_layer();  // null: none registered

}  // namespace pccl::net
