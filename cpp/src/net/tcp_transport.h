// Event-driven TCP transport: one epoll thread owns every socket of a peer.
// Every connection runs the Noise handshake of net/noise.h (both peer ids
// proven, the run key as PSK) before any control or data frame is accepted,
// and every later frame is an AEAD record (see "Records" below); malformed
// or unauthentic input closes that connection only.
//
// Records after the handshake: each frame is its 32-byte header sealed with
// the direction's key (48 bytes on the wire), then, when it has a payload,
// the payload sealed under the next nonce (encrypt=true) or in the clear
// with a GMAC tag (encrypt=false: both sides asked for it), then its 16-byte
// tag. Nonces are per-direction counters, so a replayed, reordered, dropped,
// truncated or spliced record fails its tag.
//
// Loopback fast path (TransportOptions::seal_loopback = false, the default):
// a data frame's payload goes without AEAD (no seal, no tag; its header stays
// a sealed record) on a connection that is loopback at both ends. Each end
// decides for itself from its own socket (getsockname/getpeername both
// loopback, not relayed) and states it in its Noise hello as "lo": [the
// local endpoint, the peer endpoint] it sees; a direction runs clear only
// when our socket is loopback and the peer's authenticated hello states the
// mirror of our endpoints. Why this is safe: a loopback packet is never
// put on a wire; no other host can send, see or change it, and inside this
// host only root (or a process that can ptrace us and so read the tensors
// in our memory anyway) can tap or inject on the loopback device. An
// on-path attacker of a real link cannot turn it on: the hello is
// authenticated by the handshake (a changed "lo" fails its tag), and the
// socket check fails off loopback whatever a peer claims. The mirror check
// keeps a forwarder out (a local proxy or tunnel to another host makes both
// sockets look loopback, but the two ends' endpoints no longer mirror), so
// only a direct socket inside one network namespace qualifies. Control
// frames, heartbeats, relay frames and every handshake message stay sealed.
//
// Limits a remote peer cannot raise (TransportOptions): a handshake deadline,
// unauthenticated inbound connections in total and per source IP (the oldest
// is closed to make room), frame sizes (kMaxHandshakePayload before
// authentication, kMaxPayload after), and EMFILE/ENFILE, which pause
// accepting with a back-off instead of spinning. Upper layers see ready
// connections, received frames and closures through TransportHandler
// callbacks, and send with Connection::send from any thread.
//
// NAT traversal is not in here: the NAT layer (cpp/src/nat) plugs in
// through net/nat_hooks.h, keeps its per-connection state itself, and
// drives the transport through the "for the NAT layer" methods below. A
// Connection only knows whether it is the NAT layer's own (internal: never
// announced) and whether its bytes are raw (a relay splice).
#pragma once

#include <sys/epoll.h>
#include <sys/socket.h>

#include <algorithm>
#include <array>
#include <chrono>
#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "net/frame.h"
#include "net/multiaddr.h"
#include "net/nat_hooks.h"
#include "net/noise.h"
#include "net/peer_id.h"
#include "net/transport.h"
#include "pccl/pccl.h"

namespace pccl::net {

class TcpTransport;
class Connection;
using ConnPtrWeak = std::weak_ptr<Connection>;

// A TCP link (remote_endpoint "ip:port"). send() tries to write at once
// on the calling thread and leaves the rest to the event loop; close()
// leaves finalizing to the event loop.
class Connection final : public Link {
public:
    bool send(OutFrame frame, bool urgent = false) override;
    void close(pccl_status_t status, const std::string &reason) override;
    double rtt_s() const override { return rtt_s_.load(); }
    ~Connection() override;

    // For the NAT layer (cpp/src/nat, TCP only).
    // The socket, to read a raw connection or learn its endpoints; the
    // connection owns it (never close it).
    int fd() const { return fd_; }
    // Blocks until pred(state) holds or timeout_s passes; pred runs with
    // this link's state lock held (so state the NAT layer guards with
    // locked() may be read in it). Returns pred's last value.
    template <class Pred>
    bool wait_for(double timeout_s, Pred pred) {
        std::unique_lock<std::mutex> lk(smu_);
        return cv_.wait_for(lk, std::chrono::duration<double>(std::max(0.0, timeout_s)),
                            [&] { return pred(state_); });
    }
    // Blocks until the link is ready or closed, at most timeout_s; returns the state.
    State wait_settled(double timeout_s) {
        std::unique_lock<std::mutex> lk(smu_);
        cv_.wait_for(lk, std::chrono::duration<double>(std::max(0.0, timeout_s)),
                     [&] { return state_ == State::ready || state_ == State::closed; });
        return state_;
    }
    // Runs fn() with the state lock held, then wakes wait_for() callers.
    template <class Fn>
    void locked(Fn fn) {
        {
            std::lock_guard<std::mutex> lk(smu_);
            fn();
        }
        cv_.notify_all();
    }
    // Bytes queued to send; pauses or resumes reading (a relay splice's
    // back-pressure). Any thread.
    size_t queued_bytes();
    void set_read_paused(bool paused);

protected:
    // Queued on the link with the fewest queued bytes, and until its first
    // byte is written any other of `links` whose socket drains first may
    // take it (work stealing; see TransportOptions::notsent_lowat), so a
    // stream that stalls in loss recovery holds back only what it already
    // has in flight.
    bool send_group(const std::vector<LinkPtr> &links, OutFrame frame) override;

private:
    friend class TcpTransport;
    Connection(TcpTransport *t, int fd, uint64_t id, bool inbound, std::string endpoint);

    bool flush_locked();  // wmu_ held; returns false on a socket error
    void prepare_front_locked();  // wmu_ held: encodes (and seals) the front frame
    // wmu_ held: the front frame is sealed or partly written, so it must stay
    // the front (no urgent frame ahead of it, never stolen).
    bool front_started_locked() const { return wfront_done_ > 0 || wprepared_; }
    // wmu_ held, own queue empty: moves the oldest unstarted frame of the
    // sibling with the most queued bytes here. Only try_locks the sibling
    // (two idle links may steal from each other at once). True if it took one.
    bool steal_locked();
    void fail_queue_locked();
    void want_write(bool on);

    TcpTransport *transport_;
    int fd_;

    // Handshake state: touched by the event loop only until ready.
    std::unique_ptr<NoiseHandshake> noise_;
    double accepted_at_ = 0;   // inbound: when accepted (the oldest unauthenticated one is evicted first)
    std::string source_ip_;    // inbound: the remote IP (per-IP limit)
    bool proven_ = false;      // inbound: message 1 showed the run key
    std::string expected_id_;  // dialer: the /p2p id we meant to reach ("" = any)
    bool announced_ = false;  // on_ready was called (so on_closed will be)

    // Owned by the NAT layer (net/nat_hooks.h), which keeps its own
    // per-connection state keyed by id(). Event loop only.
    bool internal_ = false;  // never announced to the handler; carries no mesh frames
    bool raw_ = false;       // bytes are the NAT layer's (a relay splice), not frames
    bool read_paused_ = false;  // back-pressure of a raw connection (guarded by wmu_)
    size_t queued_ = 0;         // bytes in wqueue_ (guarded by wmu_)
    double deadline_ = 0;       // monotonic: close if not ready by then (0: none)
    // Smoothed end-to-end round trip (seconds) from the transport's RTT probes,
    // through the relay when relayed; < 0 until the first echo. Event loop writes.
    std::atomic<double> rtt_s_{-1};
    bool loopback_ = false;  // both ends on this host (our own check): no window to keep warm

    // Read state: event loop only. rx_ is the peer's record key (null in
    // the clear: during the handshake).
    std::unique_ptr<CipherState> rx_;
    bool rx_encrypted_ = true;  // payloads sealed (else GMAC only)
    bool rx_clear_data_ = false;  // data payloads carry no AEAD (the loopback fast path)
    uint8_t rheader_[kSealedHeaderSize];
    size_t rheader_got_ = 0;      // may be ahead: the next header read with a data frame's last bytes
    bool rdecoded_ = false;       // rcur_ holds the current frame's header (its payload or tag is next)
    uint8_t rtag_[kAeadTag];
    size_t rtag_got_ = 0;
    FrameHeader rcur_;
    BufferPool::Ptr rpayload_;
    uint8_t *rtarget_ = nullptr;  // the handler's destination for the current payload, if any
    size_t rpayload_got_ = 0;

    std::mutex wmu_;  // guards the write queue, epoll write interest, siblings_ and the record state below
    std::deque<OutFrame> wqueue_;
    // Sealing: tx_ is our record key (null: in the clear). The front frame is
    // sealed once, when its first byte is about to be written (so a stolen
    // frame takes the thief's key and nonce order matches wire order).
    std::unique_ptr<CipherState> tx_;
    bool tx_encrypted_ = true;
    bool tx_clear_data_ = false;  // data payloads go without AEAD (the loopback fast path)
    bool wprepared_ = false;
    uint8_t whdr_[kSealedHeaderSize];
    size_t whdr_len_ = 0;
    std::string wsealed_;  // the front frame's sealed payload (encrypt=true)
    uint8_t wtag_[kAeadTag];
    bool wtagged_ = false;
    // The other links of the last send_striped on this one: where it steals.
    std::vector<std::weak_ptr<Connection>> siblings_;
    size_t wfront_done_ = 0;  // bytes of the front frame already written
    // Keep-alive bookkeeping (monotonic seconds, 0: never): when a write last
    // put bytes on the socket, and when a data frame last did.
    double last_write_s_ = 0;
    double last_data_s_ = 0;
    double keepalive_period_s_ = 0;  // from TCP_INFO; event loop only (0: not read yet)
    bool want_out_ = false;
    bool wclosed_ = false;
};

using ConnPtr = std::shared_ptr<Connection>;

class TcpTransport final : public Transport {
public:
    TcpTransport(TransportConfig config, TransportHandler *handler);
    ~TcpTransport() override;  // stops the loop and closes every socket
    TcpTransport(const TcpTransport &) = delete;
    TcpTransport &operator=(const TcpTransport &) = delete;

    // Addresses to advertise, without the final /p2p/<self>: the NAT
    // layer's first (an observed address a dial-back verified; or, when this
    // peer found itself private, its /p2p/<relay>/p2p-circuit ones), then
    // the bound listen addresses (port resolved, 0.0.0.0 expanded).
    std::vector<Multiaddr> listen_addrs() const override;
    // Grows whenever listen_addrs() changes (a relay reservation was lost or
    // gained): the owner re-advertises then.
    uint64_t addrs_version() const override { return nat_ ? nat_->addrs_version() : 0; }
    // The NAT layer's verdict: "public" (a peer dialed us back), "private"
    // (it could not), "unknown" (nobody to ask: no relays configured).
    // Settled before the constructor returns.
    std::string reachability() const override;
    std::vector<std::string> connection_lines() const override;
    std::vector<std::string> reservations() const override;
    void set_advertised(std::vector<std::string> addrs) override;

    // Blocking dial + handshake from a caller thread (never the event loop).
    // A /p2p-circuit address goes to the NAT layer (nat/): dialed through
    // its relay, authenticated end to end, possibly upgraded to a direct
    // connection. Throws Error: PCCL_ERR_IO (unreachable),
    // PCCL_ERR_AUTH_FAILED, PCCL_ERR_TIMEOUT, PCCL_ERR_PROTOCOL,
    // PCCL_ERR_INVALID_ARGUMENT, PCCL_ERR_CLOSED.
    LinkPtr dial(const Multiaddr &addr, double timeout_s, const std::string &purpose) override;

    void abort_dials(const std::string &peer_id, const std::string &why) override;
    void shutdown() override;
    bool on_loop_thread() const { return std::this_thread::get_id() == loop_thread_.get_id(); }

    // ---- For the NAT layer (net/nat_hooks.h); nothing else calls these.
    const TransportConfig &config() const { return config_; }  // identity, options (never changed after start)
    bool stopping() const { return stopping_; }
    // The bound listen addresses (fixed once constructed). Any thread.
    const std::vector<Multiaddr> &bound_addrs() const { return bound_; }
    // Tells the handler listen_addrs() changed. Caller thread, no lock held.
    void notify_addrs_changed() { handler_->on_addrs_changed(); }
    // Blocking dial + handshake of a direct address; internal: the link is
    // the NAT layer's (never announced). Caller thread.
    ConnPtr dial_direct(const Multiaddr &addr, double timeout_s, const std::string &purpose, bool internal);
    // Starts a non-blocking connect (any thread). fd >= 0: an already bound
    // socket to use (closed on failure). deadline > 0: closed with TIMEOUT
    // if not ready by then (monotonic). inbound: takes the acceptor's role
    // in the handshake (a simultaneous open). Throws Error(IO).
    ConnPtr start_dial(const sockaddr_storage &ss, socklen_t slen, const std::string &expected_id,
                       const std::string &purpose, bool internal, int fd = -1, double deadline = 0,
                       bool inbound = false);
    // Event loop: the stream of `c` now carries a new handshake, end to
    // end (a relay's circuit opened): acceptor role if inbound; relayed
    // links report via = the current peer (the relay). Ready again (and
    // announced) when it completes, within `timeout_s`.
    void restart_handshake(const ConnPtr &c, bool inbound, bool relayed, const std::string &expected_id,
                           const std::string &purpose, double timeout_s);
    // Event loop: from now on the NAT layer reads `c`'s socket itself
    // (NatHooks::on_raw_readable) and sends raw bytes (OutFrame::raw).
    void set_raw(const ConnPtr &c);
    // Ready connections whose purpose is `purpose`; any thread.
    std::vector<ConnPtr> connections_with_purpose(const std::string &purpose) const;

private:
    friend class Connection;
    void expire_deadlines();
    // Event loop, once a second: an RTT probe on every ready mesh connection.
    void probe_rtts();
    double next_rtt_probe_ = 0;
    // Event loop: a keep-alive record on every ready connection that wrote a
    // data frame less than keepalive_s ago and nothing for its period
    // (TransportOptions::keepalive_s). Returns when it wants to run next.
    double send_keepalives();
    double next_keepalive_ = 0;
    void loop();
    void listen_on(const Multiaddr &addr);
    void accept_all(int lfd);
    ConnPtr add_connection(int fd, bool inbound, std::string endpoint, bool connecting);
    void handle_event(const ConnPtr &c, uint32_t events);
    void on_connected(const ConnPtr &c);
    bool read_some(const ConnPtr &c);
    // Event loop: decodes (and opens) the complete header in c->rheader_ and
    // picks the payload's destination; true when the frame has no payload.
    bool take_header(const ConnPtr &c);
    // Event loop: hands the complete current frame to dispatch; `ahead`
    // bytes of the next header already sit in c->rheader_.
    void deliver(const ConnPtr &c, size_t ahead);
    void dispatch(const ConnPtr &c, Frame &&f);
    // Handshake (event loop): start_handshake sends message 1 when we are
    // the initiator; handle_handshake takes messages 1-3; handle_confirm the
    // responder's first record (the initiator is ready then).
    void start_handshake(const ConnPtr &c);
    void handle_handshake(const ConnPtr &c, const Frame &f);
    void handle_confirm(const ConnPtr &c);
    std::string identity_payload(const ConnPtr &c) const;
    void accept_identity(const ConnPtr &c, const std::string &payload);
    void send_reject(const ConnPtr &c, pccl_status_t st, const std::string &why);
    void become_ready(const ConnPtr &c);
    // Unauthenticated inbound connections over the limits (per class: run
    // key shown or not): the oldest of that class goes.
    void enforce_unauthenticated_limits(const std::string &ip, bool proven);
    void pause_accepting();  // EMFILE/ENFILE: stop accepting for a while
    double accept_paused_until_ = 0;  // event loop
    double accept_backoff_s_ = 0.05;
    void finalize(const ConnPtr &c);
    void wake();

    TransportConfig config_;
    TransportHandler *handler_;
    int epfd_ = -1;
    int wakefd_ = -1;
    std::vector<int> listen_fds_;
    std::vector<Multiaddr> bound_;
    std::thread loop_thread_;
    std::atomic<bool> stopping_{false};

    mutable std::mutex mu_;  // guards conns_, to_finalize_ and config_.advertised
    std::map<uint64_t, ConnPtr> conns_;
    // The NAT layer (null: none registered). Built before the event loop
    // starts and destroyed after it stopped.
    std::unique_ptr<NatHooks> nat_;
    std::vector<uint64_t> to_finalize_;
    uint64_t next_id_ = 1000;
};

}  // namespace pccl::net
