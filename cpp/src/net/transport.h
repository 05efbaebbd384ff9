// The transport seam: what the mesh (and everything above it) knows of the
// network. A Transport listens (Listener), dials (Dialer) and reports each
// authenticated link to one TransportHandler; a Link carries frames
// (net/frame.h) to one remote peer. Two implementations:
//   - TcpTransport (net/tcp_transport.h): epoll TCP and the Noise secure
//     channel; addresses /ip4|ip6|dns*/tcp/... and, through the NAT layer
//     it hosts (cpp/src/nat behind net/nat_hooks.h), relayed
//     /p2p-circuit ones, with hole punching.
//   - MemoryTransport (net/memory_transport.h): peers of one process,
//     addresses /memory/<n>, with injectable faults (tests).
// make_transport() picks one by the listen addresses.
//
// Contracts common to every implementation:
//   - A Link is announced to the handler (on_ready) only after the peer
//     proved its peer id and that it holds the run key; a peer without the
//     run key never reaches on_ready and its dial fails with AUTH_FAILED.
//   - Frames on one Link arrive in the order they were sent, whole, each
//     header checked by decode_header() against the size limits before any
//     payload is held. Links of one peer are unordered among each other.
//   - Handler callbacks run on the transport's own thread (one per
//     transport), one at a time, with no transport lock held. They must not
//     block (no dial, no wait on a frame).
//   - A link's on_closed is called exactly once, after its on_ready, and no
//     on_frame of that link follows it.
#pragma once

#include <condition_variable>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "net/peer_id.h"
#include "net/frame.h"
#include "net/multiaddr.h"
#include "net/noise.h"
#include "pccl/pccl.h"

namespace pccl::net {

// Counts outstanding sends of one operation so it can wait until every
// borrowed buffer has been handed to the kernel (or learn that a send failed).
class SendTracker {
public:
    void add();
    void done(bool ok);
    // Blocks until nothing is pending or the deadline passes. Returns false if
    // any send failed or the deadline passed.
    bool wait(double timeout_s);
    // Blocks until nothing is pending (failed or not), at most timeout_s.
    bool wait_drained(double timeout_s);

private:
    std::mutex mu_;  // guards the fields below
    std::condition_variable cv_;
    size_t pending_ = 0;
    bool failed_ = false;
};

// One frame on its way out. The payload is either owned (`owned`) or borrowed
// (`borrowed`, which must stay valid and unmodified until the tracker reports
// the frame done).
struct OutFrame {
    FrameHeader header;
    std::string owned;
    const uint8_t *borrowed = nullptr;
    std::shared_ptr<SendTracker> tracker;
    // The fields below are the TCP implementation's own (relay splicing and
    // a handshake restarted end to end); callers above net/ leave them alone.
    bool raw = false;  // bytes spliced through a relay: no header, `owned` only
    // Once this frame is written, later frames use `next_tx` (null: the
    // clear, for a handshake restarted end to end through a relay). Never
    // stolen by another link.
    bool switch_tx = false;
    std::unique_ptr<CipherState> next_tx;
};

class Link;
using LinkPtr = std::shared_ptr<Link>;

// One authenticated, ordered, reliable frame stream to one remote peer.
// Thread-safe: any thread may send or close.
class Link {
public:
    enum class State { connecting, handshaking, ready, closed };
    virtual ~Link() = default;

    // Enqueues a frame. Never blocks on the network: the bytes are written
    // (TCP) or copied (memory) now or by the transport's thread later.
    // Returns false (and reports the tracker failed) when the link is closed.
    // `urgent` (small frames only, e.g. RTT probes): ahead of every queued
    // frame not started yet.
    virtual bool send(OutFrame frame, bool urgent = false) = 0;
    // Sends `frame` on one of `links`, links to one peer from ONE transport
    // whose frames may arrive in any order (a neighbour's data streams); the
    // implementation picks (and may rebalance) the link. Returns false (and
    // reports the tracker failed) when every link is closed. Thread-safe,
    // never blocks on the network.
    static bool send_striped(const std::vector<LinkPtr> &links, OutFrame frame);
    // Closes from any thread, idempotent; the transport's thread then calls
    // TransportHandler::on_closed once (if the link was announced).
    virtual void close(pccl_status_t status, const std::string &reason) = 0;

    State state() const;
    // Why it closed (valid once closed).
    pccl_status_t close_status() const;
    std::string close_reason() const;

    // Unique within its transport, never reused.
    uint64_t id() const { return id_; }
    bool inbound() const { return inbound_; }
    // Where the remote end is, for messages ("ip:port", "memory:<n>").
    const std::string &remote_endpoint() const { return remote_endpoint_; }
    // Valid once ready: the peer's proven id, its incarnation and advertised
    // addresses, and the dialer's stated purpose ("data", "join", ...).
    const std::string &remote_id() const { return remote_id_; }
    uint64_t remote_incarnation() const { return remote_incarnation_; }
    const std::vector<std::string> &remote_addrs() const { return remote_addrs_; }
    const std::string &purpose() const { return purpose_; }
    // Valid once ready: true when the bytes go through a third peer (a
    // relay; via = its id). Such a link may break while the peer lives.
    bool relayed() const { return relayed_; }
    const std::string &via() const { return via_; }
    // Smoothed round trip of the transport's RTT probes (seconds; < 0
    // before the first answer, or when the transport does not probe).
    virtual double rtt_s() const { return -1; }

protected:
    Link(uint64_t id, bool inbound, std::string endpoint)
        : id_(id), inbound_(inbound), remote_endpoint_(std::move(endpoint)) {}
    // Moves to closed with `status`/`reason` the first time; false if it
    // already was closed. Wakes waiters on cv_.
    bool mark_closed(pccl_status_t status, const std::string &reason);
    // Load-balancing hook of send_striped: `links` are all of this link's
    // implementation. The default sends on the first open link.
    virtual bool send_group(const std::vector<LinkPtr> &links, OutFrame frame);

    const uint64_t id_;
    bool inbound_;  // acceptor role in the handshake (TCP: a relay circuit or a punch may flip it before it starts)
    std::string remote_endpoint_;
    // Written by the transport's thread before the link is ready, read-only after.
    std::string remote_id_;
    uint64_t remote_incarnation_ = 0;
    std::vector<std::string> remote_addrs_;
    std::string purpose_;
    bool relayed_ = false;
    std::string via_;

    mutable std::mutex smu_;  // guards state_, close_status_, close_reason_; cv_ waits on it
    std::condition_variable cv_;
    State state_ = State::connecting;
    pccl_status_t close_status_ = PCCL_OK;
    std::string close_reason_;
};

// Callbacks on the transport's thread: they must not block (see the top).
class TransportHandler {
public:
    virtual ~TransportHandler() = default;
    virtual void on_ready(const LinkPtr &link) = 0;
    virtual void on_frame(const LinkPtr &link, Frame &&frame) = 0;
    virtual void on_closed(const LinkPtr &link) = 0;
    // Right after a data frame's header is read: where its payload should be
    // written (saves a copy). nullptr: into Frame::payload. A target returned
    // here is written by the transport's thread until on_frame delivers that
    // frame (Frame::in_place) or on_closed(link) reports the link gone.
    virtual uint8_t *payload_target(const LinkPtr &, const FrameHeader &) { return nullptr; }
    // listen_addrs() changed (a relay reservation lost or gained). Runs on
    // a thread of the transport that holds no transport lock.
    virtual void on_addrs_changed() {}
};

// Socket knobs for long fat pipes and the NAT traversal policy; they come
// from pccl_config_t (tcp_congestion, socket_buffer, relay*, hole_punch).
// TCP only: the memory transport ignores them.
struct TransportOptions {
    std::string tcp_congestion;  // "" = the namespace default
    uint64_t socket_buffer = 0;  // 0 = autotuning (recommended; fixing it caps the window)
    // TCP_NOTSENT_LOWAT: a socket takes more data only while less than this
    // is unsent in the kernel (0: no limit, i.e. up to the whole send
    // buffer). Keeps the backlog in our queues, where send_striped can still
    // move it to whichever stream drains first; the window itself (bytes in
    // flight) is not limited by it.
    uint32_t notsent_lowat = 128u << 10;
    bool relay = false;
    std::vector<std::string> relays;
    size_t relay_slots = 2;  // reservations held at once (a dead relay is replaced by the next one)
    bool hole_punch = true;
    // Relay limits (relay side).
    size_t relay_max_reservations = 128;
    size_t relay_max_circuits = 512;
    uint64_t relay_max_circuit_bytes = 0;  // 0: unlimited (data may flow through the relay)
    double relay_max_circuit_s = 0;        // 0: unlimited
    double relay_reservation_ttl_s = 600;  // a reservation not refreshed within this ends
    // The op timeout (pccl_config_t.timeout_s) the NAT layer derives every
    // wait of its own from (nat/timeouts.h), so a dial through a relay, a
    // punch or a dial-back never outlasts it.
    double op_timeout_s = PCCL_DEFAULT_TIMEOUT_S;
    // Secure channel. encrypt=false (trusted networks): payloads travel in
    // the clear but every record stays authenticated; a connection encrypts
    // unless both ends ask for false.
    bool encrypt = true;
    // false: data payloads on a link that both ends verified to be loopback
    // skip the AEAD (TcpTransport's "loopback fast path"); true: never.
    bool seal_loopback = false;
    double handshake_timeout_s = 10;        // an inbound connection not authenticated by then is closed
    // Congestion-window keep-alive (pccl_config_t.keepalive_s; 0: off): for
    // this long after a connection last wrote a data frame, whenever it has
    // written nothing for max(50 ms, min(srtt, RTO/2)) it sends an empty
    // heartbeat record (kKeepAlive), so the kernel never sees it idle for a
    // whole RTO and keeps its window. Not on a connection whose two ends are
    // on this host (loopback: no window worth the wake-ups).
    double keepalive_s = PCCL_DEFAULT_KEEPALIVE_S;
    // Inbound connections in the handshake, in total (and never more than a
    // quarter of RLIMIT_NOFILE) and per source IP; counted separately for
    // those that have not shown the run key yet and those that have.
    size_t max_unauthenticated = 256;
    size_t max_unauthenticated_per_ip = 32;
};

struct TransportConfig {
    std::string run_key;
    Identity identity;  // our Ed25519 key pair and peer id
    uint64_t incarnation = 0;
    std::vector<std::string> listen;  // multiaddrs; port (or memory id) 0 picks a free one
    std::vector<std::string> advertised;  // filled in by the owner after listening
    TransportOptions options;
};

class Dialer {
public:
    virtual ~Dialer() = default;
    // Blocking dial + handshake from a caller thread (never the transport's
    // thread). The returned link is ready; its on_ready runs on the
    // transport's thread, possibly after dial returned (frames of the link
    // are never delivered before it). A /p2p/<id> in `addr` must be the id
    // reached. Throws Error:
    // PCCL_ERR_IO (unreachable), PCCL_ERR_AUTH_FAILED, PCCL_ERR_TIMEOUT,
    // PCCL_ERR_PROTOCOL, PCCL_ERR_INVALID_ARGUMENT (an address this
    // transport cannot dial), PCCL_ERR_CLOSED (after shutdown).
    virtual LinkPtr dial(const Multiaddr &addr, double timeout_s, const std::string &purpose) = 0;
    // Makes our dials to `peer_id` (the /p2p id they asked for) that are
    // not ready yet fail now with PCCL_ERR_PEER_LOST and `why`, instead of
    // waiting out their timeout: the peer was declared dead. Non-blocking,
    // any thread, with or without the caller's own locks.
    virtual void abort_dials(const std::string &peer_id, const std::string &why) = 0;
};

class Listener {
public:
    virtual ~Listener() = default;
    // Addresses to advertise, without the final /p2p/<self> (port 0 / memory
    // id 0 resolved). Thread-safe.
    virtual std::vector<Multiaddr> listen_addrs() const = 0;
    // Grows whenever listen_addrs() changes: the owner re-advertises then.
    virtual uint64_t addrs_version() const = 0;
    // Addresses sent to peers in the handshake (with /p2p). Thread-safe.
    virtual void set_advertised(std::vector<std::string> addrs) = 0;
};

class Transport : public Dialer, public Listener {
public:
    // Stops the transport's thread and closes every link (their on_closed
    // runs, or is skipped when the owner is going away). Idempotent; a dial
    // in progress fails with CLOSED. Never from the transport's thread.
    virtual void shutdown() = 0;
    // Diagnostics (thread-safe). "public", "private" or "unknown".
    virtual std::string reachability() const { return "unknown"; }
    // One line per ready, announced link: "<peer id> direct|relayed <via> <endpoint>".
    virtual std::vector<std::string> connection_lines() const = 0;
    // The configured relays we hold a reservation on now.
    virtual std::vector<std::string> reservations() const { return {}; }
};

// The transport for `config.listen`: all /memory/ addresses -> the memory
// transport, none -> TCP; a mix throws INVALID_ARGUMENT. The handler must
// outlive the transport's shutdown().
std::unique_ptr<Transport> make_transport(TransportConfig config, TransportHandler *handler);

}  // namespace pccl::net
