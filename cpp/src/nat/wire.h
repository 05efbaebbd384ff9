// What every NAT unit shares: the context it runs in, sending relay
// messages, and the socket helpers of simultaneous open.
//
// Relay messages (typed, with their codec: nat/relay_wire.h) are the
// payload of `relay` frames; nat/dispatcher.h routes them. They travel on
// connections authenticated with the run key.
#pragma once

#include <sys/socket.h>

#include <atomic>
#include <cstdint>
#include <string>
#include <vector>

#include "nat/relay_wire.h"
#include "nat/timeouts.h"
#include "net/tcp_transport.h"

namespace pccl::nat {

using net::ConnPtr;
using ConnWeak = std::weak_ptr<net::Connection>;

// What a unit needs of its surroundings; owned by the NatLayer, outlives the units.
struct NatContext {
    net::TcpTransport &tcp;
    const net::TransportOptions &options;
    std::string self_id;  // our peer id
    std::string log_tag;  // our id's first characters, for debug_log
    NatTimeouts waits;
    // Grows whenever the NAT layer's addresses or verdict change.
    std::atomic<uint64_t> addrs_version{0};
};

// Queues a relay message on `c` (any thread).
void send_relay(const ConnPtr &c, const RelayMsg &m);
// Answers RelayRefusal{why} and closes `c` with IO.
void refuse(const ConnPtr &c, const std::string &why);

// "ip:port" (ip4) -> sockaddr; false if it is not one.
bool parse_endpoint(const std::string &ep, sockaddr_storage &ss, socklen_t &len);
// A /ip4/<a>/tcp/<p>... multiaddr text -> sockaddr; false for anything else
// (ip6, dns, malformed: never throws, the text may come from a peer).
bool ip4_target(const std::string &multiaddr, sockaddr_storage &ss, socklen_t &len);
// The remote end of `c`'s socket (ip4 only); false otherwise.
bool ip4_peer(const ConnPtr &c, sockaddr_storage &ss, socklen_t &len);
// A TCP socket bound to `port`, or to a fresh one when it is 0 (then `port`
// is set); -1 on failure. Sockets on one port may coexist (the punch and its
// mapping probe), each connected to a different remote endpoint.
int bound_socket(uint16_t &port);
uint16_t local_port(int fd);

}  // namespace pccl::nat
