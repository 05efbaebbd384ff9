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
// Limits a remote peer cannot raise (TransportOptions): a handshake deadline,
// unauthenticated inbound connections in total and per source IP (the oldest
// is closed to make room), frame sizes (kMaxHandshakePayload before
// authentication, kMaxPayload after), and EMFILE/ENFILE, which pause
// accepting with a back-off instead of spinning. Upper layers see ready connections, received frames and closures
// through TransportHandler callbacks, and send with Connection::send from any
// thread.
#pragma once

#include <sys/epoll.h>
#include <sys/socket.h>

#include <array>
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
#include "net/noise.h"
#include "net/peer_id.h"
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
    bool raw = false;  // bytes spliced through a relay: no header, `owned` only
    // Once this frame is written, later frames use `next_tx` (null: the
    // clear, for a handshake restarted end to end through a relay). Never
    // stolen by another link.
    bool switch_tx = false;
    std::unique_ptr<net::CipherState> next_tx;
};

class Transport;
class Connection;
using ConnPtrWeak = std::weak_ptr<Connection>;

class Connection {
public:
    enum class State { connecting, handshaking, ready, closed };

    // Enqueues a frame; tries to write it at once on the calling thread and
    // leaves the rest to the event loop. Returns false (and reports the
    // tracker failed) when the connection is closed. Thread-safe, never blocks
    // on the network. `urgent` (small frames only, e.g. RTT probes): ahead
    // of every queued frame not started yet.
    bool send(OutFrame frame, bool urgent = false);
    // Sends `frame` on one of `links`: connections to one peer whose frames
    // may arrive in any order (a neighbour's data streams). It is queued on
    // the link with the fewest queued bytes, and until its first byte is
    // written any other of `links` whose socket drains first may take it
    // (work stealing; see TransportOptions::notsent_lowat), so a stream that
    // stalls in loss recovery holds back only what it already has in flight.
    // Returns false (and reports the tracker failed) when every link is
    // closed. Thread-safe, never blocks on the network.
    static bool send_striped(const std::vector<std::shared_ptr<Connection>> &links, OutFrame frame);
    // Closes from any thread; the event loop finalizes it and then calls
    // TransportHandler::on_closed once.
    void close(pccl_status_t status, const std::string &reason);

    State state() const;
    uint64_t id() const { return id_; }
    bool inbound() const { return inbound_; }
    const std::string &remote_endpoint() const { return remote_endpoint_; }  // "ip:port"
    // Valid once ready.
    const std::string &remote_id() const { return remote_id_; }
    uint64_t remote_incarnation() const { return remote_incarnation_; }
    const std::vector<std::string> &remote_addrs() const { return remote_addrs_; }
    const std::string &purpose() const { return purpose_; }
    // Valid once ready: true when the bytes go through a relay (via = its id).
    bool relayed() const { return relayed_; }
    const std::string &via() const { return via_; }
    // Smoothed round trip of the RTT probes (seconds; < 0 before the first answer).
    double rtt_s() const { return rtt_s_.load(); }
    // Why it closed (valid once closed).
    pccl_status_t close_status() const;
    std::string close_reason() const;

    ~Connection();

private:
    friend class Transport;
    Connection(Transport *t, int fd, uint64_t id, bool inbound, std::string endpoint);

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

    Transport *transport_;
    int fd_;
    const uint64_t id_;
    bool inbound_;  // acceptor role in the handshake (a relay circuit or a punch may flip it before it starts)
    std::string remote_endpoint_;

    // Handshake state: touched by the event loop only until ready.
    std::unique_ptr<NoiseHandshake> noise_;
    double accepted_at_ = 0;   // inbound: when accepted (the oldest unauthenticated one is evicted first)
    std::string source_ip_;    // inbound: the remote IP (per-IP limit)
    bool proven_ = false;      // inbound: message 1 showed the run key
    std::string expected_id_;  // dialer: the /p2p id we meant to reach ("" = any)
    std::string remote_id_;
    uint64_t remote_incarnation_ = 0;
    std::vector<std::string> remote_addrs_;
    std::string purpose_;
    bool announced_ = false;  // on_ready was called (so on_closed will be)

    // NAT traversal (relay.cpp). Event loop only unless noted.
    bool hidden_ = false;     // relay plumbing: never announced to the handler
    bool relayed_ = false;    // end to end through a relay circuit
    std::string via_;         // the relay's id when relayed_
    uint64_t stop_cid_ = 0;   // a circuit to accept on the relay once ready
    uint64_t reverse_cid_ = 0;  // a connection reversal (DCUtR from a public peer): its id in hello
    std::string circuit_target_, circuit_purpose_;  // hop side (guarded by smu_)
    std::weak_ptr<Connection> dialback_for_;  // autonat probe: whom to answer
    std::string observed_;  // outbound and direct: where the acceptor saw us (its hello's "obs")
    // A mapping probe (DCUtR acceptor side): the relayed link whose
    // dcutr-connect answer waits for this probe's observed address.
    std::weak_ptr<Connection> mapping_for_;
    double mapping_started_ = 0;  // when the probe was started (its time is not path RTT)
    ConnPtrWeak splice_;      // relay side: the other half of the circuit
    uint64_t spliced_bytes_ = 0;
    bool read_paused_ = false;  // splice back-pressure (guarded by wmu_)
    size_t queued_ = 0;         // bytes in wqueue_ (guarded by wmu_)
    double deadline_ = 0;       // monotonic: close if not ready by then (0: none)
    double circuit_ends_ = 0;   // relay side: the circuit's duration limit (0: none)
    // Smoothed end-to-end round trip (seconds) from the transport's RTT probes,
    // through the relay when relayed; < 0 until the first echo. Event loop writes.
    std::atomic<double> rtt_s_{-1};
    // Closed at this monotonic time (0: never): a relayed link a direct one
    // replaced, or a mapping probe whose NAT mapping the punch no longer needs.
    std::atomic<double> retire_at_{0};
    // Replies to a caller thread waiting in the transport (guarded by smu_).
    std::string relay_reply_;            // "reserved" / "error: ..." / dialback verdict
    double relay_ttl_ = 0;               // with "reserved": seconds the reservation lasts unrefreshed
    std::vector<std::string> punch_addrs_;  // the other side's DCUtR candidates
    bool punch_reply_ = false;
    double punch_wait_ = 0;              // with the reply: seconds the other side spent on its mapping probe
    int punch_fd_ = -1;                  // acceptor side: bound, not yet connected

    // Read state: event loop only. rx_ is the peer's record key (null in
    // the clear: during the handshake).
    std::unique_ptr<CipherState> rx_;
    bool rx_encrypted_ = true;  // payloads sealed (else GMAC only)
    uint8_t rheader_[kSealedHeaderSize];
    size_t rheader_got_ = 0;
    uint8_t rtag_[kAeadTag];
    size_t rtag_got_ = 0;
    FrameHeader rcur_;
    BufferPool::Ptr rpayload_;
    uint8_t *rtarget_ = nullptr;  // the handler's destination for the current payload, if any
    size_t rpayload_got_ = 0;

    mutable std::mutex smu_;  // guards state_, close_status_, close_reason_; cv_ waits on it
    std::condition_variable cv_;
    State state_ = State::connecting;
    pccl_status_t close_status_ = PCCL_OK;
    std::string close_reason_;

    std::mutex wmu_;  // guards the write queue, epoll write interest, siblings_ and the record state below
    std::deque<OutFrame> wqueue_;
    // Sealing: tx_ is our record key (null: in the clear). The front frame is
    // sealed once, when its first byte is about to be written (so a stolen
    // frame takes the thief's key and nonce order matches wire order).
    std::unique_ptr<CipherState> tx_;
    bool tx_encrypted_ = true;
    bool wprepared_ = false;
    uint8_t whdr_[kSealedHeaderSize];
    size_t whdr_len_ = 0;
    std::string wsealed_;  // the front frame's sealed payload (encrypt=true)
    uint8_t wtag_[kAeadTag];
    bool wtagged_ = false;
    // The other links of the last send_striped on this one: where it steals.
    std::vector<std::weak_ptr<Connection>> siblings_;
    size_t wfront_done_ = 0;  // bytes of the front frame already written
    bool want_out_ = false;
    bool wclosed_ = false;
};

using ConnPtr = std::shared_ptr<Connection>;

// Callbacks run on the event-loop thread: they must not block.
class TransportHandler {
public:
    virtual ~TransportHandler() = default;
    virtual void on_ready(const ConnPtr &conn) = 0;
    virtual void on_frame(const ConnPtr &conn, Frame &&frame) = 0;
    virtual void on_closed(const ConnPtr &conn) = 0;
    // Right after a data frame's header is read: where its payload should be
    // written (saves a copy). nullptr: into Frame::payload. A target returned
    // here is written by the event loop until on_frame delivers that frame
    // (Frame::in_place) or on_closed(conn) reports the connection gone.
    virtual uint8_t *payload_target(const ConnPtr &, const FrameHeader &) { return nullptr; }
    // listen_addrs() changed (a relay reservation lost or gained). Runs on
    // the transport's relay keeper thread, which holds no transport lock.
    virtual void on_addrs_changed() {}
};

// Socket knobs for long fat pipes and the NAT traversal policy; they come
// from pccl_config_t (tcp_congestion, socket_buffer, relay*, hole_punch).
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
    // Secure channel. encrypt=false (trusted networks): payloads travel in
    // the clear but every record stays authenticated; a connection encrypts
    // unless both ends ask for false.
    bool encrypt = true;
    double handshake_timeout_s = 10;        // an inbound connection not authenticated by then is closed
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
    std::vector<std::string> listen;  // multiaddrs; port 0 picks a free port
    std::vector<std::string> advertised;  // filled in by the owner after listening
    TransportOptions options;
};

class Transport {
public:
    Transport(TransportConfig config, TransportHandler *handler);
    ~Transport();  // stops the loop and closes every socket
    Transport(const Transport &) = delete;
    Transport &operator=(const Transport &) = delete;

    // Addresses to advertise, without the final /p2p/<self>: the bound listen
    // addresses (port resolved, 0.0.0.0 expanded); before them our observed
    // address when a relay could dial us back there (a forwarded port), or,
    // when this peer found itself private, its /p2p/<relay>/p2p-circuit ones.
    std::vector<Multiaddr> listen_addrs() const;
    // Grows whenever listen_addrs() changes (a relay reservation was lost or
    // gained): the owner re-advertises then.
    uint64_t addrs_version() const { return addrs_version_; }
    // "public" (a peer dialed us back), "private" (it could not), "unknown"
    // (nobody to ask: no relays configured). Settled before the constructor returns.
    std::string reachability() const;
    // One line per ready, announced connection: "<peer id> direct|relayed <via> <endpoint>".
    std::vector<std::string> connection_lines() const;
    // The configured relays we hold a reservation on now.
    std::vector<std::string> reservations() const;
    // Addresses sent to peers in the handshake (with /p2p).
    void set_advertised(std::vector<std::string> addrs);

    // Blocking dial + handshake from a caller thread (never the event loop).
    // A /p2p-circuit address is dialed through its relay and authenticated end
    // to end (the relay only splices bytes); then, unless disabled, a direct
    // connection is hole-punched (DCUtR-style) and returned instead when it
    // succeeds (the relayed one is closed a few seconds later, once nothing
    // can still be in flight on it: the mesh sends on direct links first).
    // Throws Error: PCCL_ERR_IO (unreachable), PCCL_ERR_AUTH_FAILED,
    // PCCL_ERR_TIMEOUT, PCCL_ERR_PROTOCOL, PCCL_ERR_INVALID_ARGUMENT.
    ConnPtr dial(const Multiaddr &addr, double timeout_s, const std::string &purpose);

    void shutdown();  // idempotent
    // Closes our dials to `peer_id` that are not ready yet (their dial()
    // callers return PEER_LOST with `why` at once instead of waiting out
    // their timeout): the peer was declared dead. Non-blocking; any thread,
    // with or without the caller's own locks (takes mu_ only).
    void abort_dials(const std::string &peer_id, const std::string &why);
    bool on_loop_thread() const { return std::this_thread::get_id() == loop_thread_.get_id(); }

private:
    friend class Connection;
    // Starts a non-blocking connect (any thread); `prep` runs before the socket
    // is registered. fd >= 0: an already bound socket to use.
    ConnPtr start_dial(const sockaddr_storage &ss, socklen_t slen, const std::string &expected_id,
                       const std::string &purpose, bool hidden, int fd = -1);
    ConnPtr dial_direct(const Multiaddr &addr, double timeout_s, const std::string &purpose, bool hidden);
    ConnPtr dial_circuit(const Multiaddr &addr, double timeout_s, const std::string &purpose);
    ConnPtr dial_reserved(const std::string &target, double timeout_s, const std::string &purpose);
    ConnPtr try_hole_punch(const ConnPtr &relayed, const std::string &purpose, double timeout_s);
    // We are public: ask the peer at the other end of `relayed` to dial us
    // directly (works behind any NAT, symmetric included); nullptr if it did not.
    ConnPtr try_reversal(const ConnPtr &relayed, const std::string &purpose, double timeout_s);
    std::map<std::string, double> punch_failed_until_;  // peer id -> no punching before (guarded by mu_)
    bool reversal_failed_ = false;  // not known public and a reversal failed: stop trying (mu_)
    std::string probed_ip_;         // the observed IP the last dial-back tried (mu_)
    bool reprobe_ = false;          // peers newly agree on an observed IP: ask for a dial-back (mu_)
    // Client side of relaying (relay.cpp, caller threads): one pass of
    // keeping `relay_slots` reservations (drop closed ones, refresh, replace
    // from the configured list); the keeper thread runs it periodically.
    void keep_reservations(bool announce);  // announce: tell the handler when addrs changed
    ConnPtr reserve_on(const Multiaddr &relay);
    bool learn_reachability();  // true when the verdict or public addresses changed
    void keeper_loop();
    void handle_relay(const ConnPtr &c, const Frame &f);   // relay.cpp, event loop
    void restart_handshake(const ConnPtr &c, bool inbound, bool relayed);  // event loop
    void on_hidden_ready(const ConnPtr &c);                // relay.cpp, event loop
    bool splice_read(const ConnPtr &c);                    // relay.cpp, event loop
    void record_observation(const std::string &endpoint, const std::string &reporter);
    std::vector<std::string> punch_candidates(uint16_t port) const;
    // Starts a mapping probe: a connection from local `port` to the relay
    // that `relayed` runs through, whose hello tells the NAT mapping of that
    // port (the address to punch at). nullptr if it cannot even start.
    ConnPtr start_mapping_probe(const ConnPtr &relayed, uint16_t port);
    // The relayed link's DCUtR answer (acceptor side), once the probe started
    // at `probe_started` (monotonic seconds) is done; `observed` "" = it failed.
    void answer_punch(const ConnPtr &relayed, const std::string &observed, double probe_started);
    // The observed IP most distinct peers report, and how many (mu_ held).
    std::pair<std::string, size_t> observed_ip_locked() const;
    std::string local_ip4_locked(uint16_t *port) const;  // first bound IPv4 ("" if none)
    void expire_deadlines();
    // Event loop, once a second: an RTT probe on every ready mesh connection.
    void probe_rtts();
    double next_rtt_probe_ = 0;
    void loop();
    void listen_on(const Multiaddr &addr);
    void accept_all(int lfd);
    ConnPtr add_connection(int fd, bool inbound, std::string endpoint, bool connecting);
    void handle_event(const ConnPtr &c, uint32_t events);
    void on_connected(const ConnPtr &c);
    bool read_some(const ConnPtr &c);
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

    mutable std::mutex mu_;  // guards conns_, to_finalize_, advertised and the NAT state below
    std::map<uint64_t, ConnPtr> conns_;
    std::map<std::string, std::set<std::string>> observations_;  // "ip:port" -> reporting peer ids
    std::vector<Multiaddr> circuit_addrs_;  // ours, via relays that took our reservation
    std::vector<Multiaddr> public_addrs_;   // our observed address, verified by a dial-back
    struct Held {  // a reservation of ours
        size_t relay;  // index in options.relays
        ConnPtr conn;
        double ttl;  // the relay's
        double refresh_at;
    };
    std::vector<Held> held_;
    std::map<size_t, double> relay_retry_at_;  // relay index -> not before (after a failure)
    std::atomic<uint64_t> addrs_version_{0};
    std::string reachability_ = "unknown";
    std::thread keeper_;
    std::condition_variable keeper_cv_;
    // Relay side, event loop only.
    struct Reservation {
        ConnPtrWeak conn;
        double expires;
    };
    std::map<std::string, Reservation> reservations_;  // reserving peer id -> its reservation
    std::map<uint64_t, std::pair<ConnPtrWeak, std::string>> pending_circuits_;  // id -> (hop conn, target)
    uint64_t next_cid_ = 1;
    // Circuits to a peer reserved on us: it dials us back (guarded by mu_).
    struct SelfDial {
        std::string target, purpose;
        ConnPtr conn;  // set by the event loop when the peer's stop connection arrives
    };
    std::map<uint64_t, std::shared_ptr<SelfDial>> self_dials_;
    uint64_t next_self_cid_ = uint64_t(1) << 62;  // apart from next_cid_ (event loop)
    std::condition_variable self_dial_cv_;
    size_t active_circuits_ = 0;
    std::vector<uint64_t> to_finalize_;
    uint64_t next_id_ = 1000;
};

}  // namespace pccl::net
