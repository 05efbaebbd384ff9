// Event-driven TCP transport: one epoll thread owns every socket of a peer.
// Connections are authenticated (see handshake in transport.cpp) before any
// control or data frame is accepted; malformed input closes that connection
// only. Upper layers see ready connections, received frames and closures
// through TransportHandler callbacks, and send with Connection::send from any
// thread.
#pragma once

#include <sys/epoll.h>

#include <array>
#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "net/frame.h"
#include "net/multiaddr.h"
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
};

class Transport;

class Connection {
public:
    enum class State { connecting, handshaking, ready, closed };

    // Enqueues a frame; tries to write it at once on the calling thread and
    // leaves the rest to the event loop. Returns false (and reports the
    // tracker failed) when the connection is closed. Thread-safe, never blocks
    // on the network.
    bool send(OutFrame frame);
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
    // Why it closed (valid once closed).
    pccl_status_t close_status() const;
    std::string close_reason() const;

    ~Connection();

private:
    friend class Transport;
    Connection(Transport *t, int fd, uint64_t id, bool inbound, std::string endpoint);

    bool flush_locked();  // wmu_ held; returns false on a socket error
    void fail_queue_locked();
    void want_write(bool on);

    Transport *transport_;
    int fd_;
    const uint64_t id_;
    const bool inbound_;
    std::string remote_endpoint_;

    // Handshake state: touched by the event loop only until ready.
    std::array<uint8_t, 32> local_nonce_{};
    std::array<uint8_t, 32> remote_nonce_{};
    bool got_hello_ = false;
    std::string expected_id_;  // dialer: the /p2p id we meant to reach ("" = any)
    std::string remote_id_;
    uint64_t remote_incarnation_ = 0;
    std::vector<std::string> remote_addrs_;
    std::string purpose_;
    bool announced_ = false;  // on_ready was called (so on_closed will be)

    // Read state: event loop only.
    uint8_t rheader_[kHeaderSize];
    size_t rheader_got_ = 0;
    FrameHeader rcur_;
    BufferPool::Ptr rpayload_;
    size_t rpayload_got_ = 0;

    mutable std::mutex smu_;  // guards state_, close_status_, close_reason_; cv_ waits on it
    std::condition_variable cv_;
    State state_ = State::connecting;
    pccl_status_t close_status_ = PCCL_OK;
    std::string close_reason_;

    std::mutex wmu_;  // guards the write queue and epoll write interest
    std::deque<OutFrame> wqueue_;
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
};

struct TransportConfig {
    std::string run_key;
    std::string peer_id;
    uint64_t incarnation = 0;
    std::vector<std::string> listen;  // multiaddrs; port 0 picks a free port
    std::vector<std::string> advertised;  // filled in by the owner after listening
};

class Transport {
public:
    Transport(TransportConfig config, TransportHandler *handler);
    ~Transport();  // stops the loop and closes every socket
    Transport(const Transport &) = delete;
    Transport &operator=(const Transport &) = delete;

    // Bound listen addresses (port resolved, 0.0.0.0 expanded), without /p2p.
    std::vector<Multiaddr> listen_addrs() const { return bound_; }
    // Addresses sent to peers in the handshake (with /p2p).
    void set_advertised(std::vector<std::string> addrs);

    // Blocking dial + handshake from a caller thread (never the event loop).
    // Throws Error: PCCL_ERR_IO (unreachable), PCCL_ERR_AUTH_FAILED,
    // PCCL_ERR_TIMEOUT, PCCL_ERR_PROTOCOL, PCCL_ERR_INVALID_ARGUMENT.
    ConnPtr dial(const Multiaddr &addr, double timeout_s, const std::string &purpose);

    void shutdown();  // idempotent
    bool on_loop_thread() const { return std::this_thread::get_id() == loop_thread_.get_id(); }

private:
    friend class Connection;
    void loop();
    void listen_on(const Multiaddr &addr);
    void accept_all(int lfd);
    ConnPtr add_connection(int fd, bool inbound, std::string endpoint, bool connecting);
    void handle_event(const ConnPtr &c, uint32_t events);
    void on_connected(const ConnPtr &c);
    bool read_some(const ConnPtr &c);
    void dispatch(const ConnPtr &c, Frame &&f);
    void handle_hello(const ConnPtr &c, const Frame &f);
    void handle_auth(const ConnPtr &c, const Frame &f);
    void send_hello(const ConnPtr &c);
    std::string proof(const std::string &sender, const std::string &receiver,
                      const std::array<uint8_t, 32> &receiver_nonce,
                      const std::array<uint8_t, 32> &sender_nonce) const;
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

    mutable std::mutex mu_;  // guards conns_, to_finalize_, advertised
    std::map<uint64_t, ConnPtr> conns_;
    std::vector<uint64_t> to_finalize_;
    uint64_t next_id_ = 1000;
};

}  // namespace pccl::net
