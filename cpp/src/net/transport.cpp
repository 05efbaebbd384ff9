#include "net/transport.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <ifaddrs.h>
#include <net/if.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstdlib>
#include <cstring>

#include "common/crypto.h"
#include "common/error.h"
#include "common/msgpack.h"
#include "net/peer_id.h"

namespace pccl::net {

namespace {
constexpr uint64_t kWakeId = 0;
constexpr uint64_t kFirstConnId = 1000;  // ids below are listeners (index + 1)

std::string errno_text(int e) { return std::string(std::strerror(e)); }

std::string endpoint_of(const sockaddr_storage &ss) {
    char host[INET6_ADDRSTRLEN] = {0};
    uint16_t port = 0;
    if (ss.ss_family == AF_INET) {
        auto *a = reinterpret_cast<const sockaddr_in *>(&ss);
        inet_ntop(AF_INET, &a->sin_addr, host, sizeof(host));
        port = ntohs(a->sin_port);
        return std::string(host) + ":" + std::to_string(port);
    }
    auto *a = reinterpret_cast<const sockaddr_in6 *>(&ss);
    inet_ntop(AF_INET6, &a->sin6_addr, host, sizeof(host));
    port = ntohs(a->sin6_port);
    return "[" + std::string(host) + "]:" + std::to_string(port);
}

double monotonic_us() {
    return std::chrono::duration<double, std::micro>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

void set_socket_options(int fd) {
    int one = 1;
    // Small control frames and the RTT measurements of hole punching need it.
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
}

// Long-fat-pipe knobs; applied to listen sockets (accepted sockets inherit
// them, and the window scale is fixed at SYN time) and to dialing sockets
// before connect(). Failures are ignored on purpose: an unknown congestion
// control leaves the namespace default, which is still a working socket.
void set_pipe_options(int fd, const TransportOptions &o) {
    if (!o.tcp_congestion.empty())
        setsockopt(fd, IPPROTO_TCP, TCP_CONGESTION, o.tcp_congestion.data(),
                   static_cast<socklen_t>(o.tcp_congestion.size()));
    if (o.notsent_lowat > 0) {
        int v = static_cast<int>(o.notsent_lowat);
        setsockopt(fd, IPPROTO_TCP, TCP_NOTSENT_LOWAT, &v, sizeof(v));
    }
    // Any SO_MAX_PACING_RATE but "unlimited" turns on the kernel's internal
    // TCP pacing (what BBR always uses) for every congestion control, and this
    // one caps nothing. Cubic then spreads each window over the RTT instead
    // of sending it in a burst: at the start of an op every stream releases
    // its whole window at once, which overflowed the bottleneck queue and cost
    // a loss-recovery ramp per op (16 MiB all-reduce, 4 peers, 50 Mbit/s,
    // 100 ms, cubic: 0.75 -> 0.86 of the link; loopback unchanged).
    unsigned long pace = ~0UL - 1;
    setsockopt(fd, SOL_SOCKET, SO_MAX_PACING_RATE, &pace, sizeof(pace));
    if (o.socket_buffer > 0) {
        // Fixing a size disables the kernel's autotuning for this socket.
        int b = static_cast<int>(o.socket_buffer);
        setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &b, sizeof(b));
        setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &b, sizeof(b));
    }
}

std::string to_string(const MsgValue &v, const char *key) { return v.at(key).as_str(); }
}  // namespace

// ---------------------------------------------------------------- SendTracker

void SendTracker::add() {
    std::lock_guard<std::mutex> lk(mu_);
    ++pending_;
}

void SendTracker::done(bool ok) {
    std::lock_guard<std::mutex> lk(mu_);
    if (!ok) failed_ = true;
    if (pending_ > 0) --pending_;
    cv_.notify_all();
}

bool SendTracker::wait(double timeout_s) {
    std::unique_lock<std::mutex> lk(mu_);
    bool drained = cv_.wait_for(lk, std::chrono::duration<double>(timeout_s),
                                [&] { return pending_ == 0 || failed_; });
    return drained && !failed_;
}

bool SendTracker::wait_drained(double timeout_s) {
    std::unique_lock<std::mutex> lk(mu_);
    return cv_.wait_for(lk, std::chrono::duration<double>(timeout_s), [&] { return pending_ == 0; });
}

// ----------------------------------------------------------------- Connection

Connection::Connection(Transport *t, int fd, uint64_t id, bool inbound, std::string endpoint)
    : transport_(t), fd_(fd), id_(id), inbound_(inbound), remote_endpoint_(std::move(endpoint)) {
    random_bytes(local_nonce_.data(), local_nonce_.size());
}

Connection::~Connection() {
    if (fd_ >= 0) ::close(fd_);
}

Connection::State Connection::state() const {
    std::lock_guard<std::mutex> lk(smu_);
    return state_;
}

pccl_status_t Connection::close_status() const {
    std::lock_guard<std::mutex> lk(smu_);
    return close_status_;
}

std::string Connection::close_reason() const {
    std::lock_guard<std::mutex> lk(smu_);
    return close_reason_;
}

bool Connection::send(OutFrame f, bool urgent) {
    if (f.borrowed == nullptr) f.header.length = static_cast<uint32_t>(f.owned.size());
    if (f.tracker) f.tracker->add();
    std::lock_guard<std::mutex> lk(wmu_);
    if (wclosed_) {
        if (f.tracker) f.tracker->done(false);
        return false;
    }
    queued_ += f.borrowed ? f.header.length : f.owned.size();
    if (urgent && !wqueue_.empty())  // behind the frame being written, if any
        wqueue_.insert(wqueue_.begin() + (wfront_done_ > 0 ? 1 : 0), std::move(f));
    else
        wqueue_.push_back(std::move(f));
    if (!want_out_) {
        if (!flush_locked()) {
            close(PCCL_ERR_IO, "write to " + remote_endpoint_ + " failed: " + errno_text(errno));
        } else if (!wqueue_.empty()) {
            want_out_ = true;
            want_write(true);
        }
    }
    return true;
}

bool Connection::send_striped(const std::vector<ConnPtr> &links, OutFrame f) {
    // The least loaded open link (ties: the first), so frames spread over
    // idle links at once instead of waiting to be stolen.
    Connection *best = nullptr;
    size_t best_queued = 0;
    for (const auto &c : links) {
        std::lock_guard<std::mutex> lk(c->wmu_);
        if (c->wclosed_) continue;
        if (!best || c->queued_ < best_queued) best = c.get(), best_queued = c->queued_;
    }
    if (!best) best = links.front().get();  // all closed: send() reports the failure
    {
        std::lock_guard<std::mutex> lk(best->wmu_);
        if (best->siblings_.size() != links.size()) best->siblings_.assign(links.begin(), links.end());
    }
    return best->send(std::move(f));
}

bool Connection::steal_locked() {
    // Pick the victim by its queued bytes (a snapshot: it may change before we lock it again).
    ConnPtr victim;
    size_t most = 0;
    for (const auto &w : siblings_) {
        ConnPtr s = w.lock();
        if (!s || s.get() == this) continue;
        std::unique_lock<std::mutex> lk(s->wmu_, std::try_to_lock);
        if (!lk.owns_lock() || s->wclosed_) continue;
        const size_t unstarted = s->wqueue_.size() - (s->wfront_done_ > 0 ? 1 : 0);
        if (unstarted > 0 && s->queued_ > most) victim = s, most = s->queued_;
    }
    if (!victim) return false;
    std::unique_lock<std::mutex> lk(victim->wmu_, std::try_to_lock);
    if (!lk.owns_lock() || victim->wclosed_) return false;
    const size_t i = victim->wfront_done_ > 0 ? 1 : 0;  // a started frame stays where it started
    if (victim->wqueue_.size() <= i || victim->wqueue_[i].raw) return false;
    OutFrame f = std::move(victim->wqueue_[i]);
    victim->wqueue_.erase(victim->wqueue_.begin() + static_cast<std::ptrdiff_t>(i));
    const size_t len = f.header.length;
    victim->queued_ -= len;
    lk.unlock();
    queued_ += len;
    wqueue_.push_back(std::move(f));
    return true;
}

bool Connection::flush_locked() {
    while (!wqueue_.empty() || (!wclosed_ && !siblings_.empty() && steal_locked())) {
        OutFrame &f = wqueue_.front();
        uint8_t hdr[kHeaderSize];
        encode_header(f.header, hdr);
        const size_t hsize = f.raw ? 0 : kHeaderSize;
        const uint8_t *payload =
            f.borrowed ? f.borrowed : reinterpret_cast<const uint8_t *>(f.owned.data());
        const size_t plen = f.header.length;
        iovec iov[2];
        int cnt = 0;
        if (wfront_done_ < hsize) {
            iov[cnt++] = {hdr + wfront_done_, hsize - wfront_done_};
            if (plen) iov[cnt++] = {const_cast<uint8_t *>(payload), plen};
        } else {
            size_t off = wfront_done_ - hsize;
            iov[cnt++] = {const_cast<uint8_t *>(payload) + off, plen - off};
        }
        msghdr msg{};
        msg.msg_iov = iov;
        msg.msg_iovlen = cnt;
        ssize_t n = ::sendmsg(fd_, &msg, MSG_NOSIGNAL);
        if (n < 0) {
            if (errno == EINTR) continue;
            if (errno == EAGAIN || errno == EWOULDBLOCK) return true;
            return false;
        }
        wfront_done_ += static_cast<size_t>(n);
        if (wfront_done_ == hsize + plen) {
            queued_ -= plen;
            if (f.tracker) f.tracker->done(true);
            wqueue_.pop_front();
            wfront_done_ = 0;
        }
    }
    return true;
}

void Connection::fail_queue_locked() {
    for (auto &f : wqueue_)
        if (f.tracker) f.tracker->done(false);
    wqueue_.clear();
    wfront_done_ = 0;
    queued_ = 0;
    wclosed_ = true;
}

void Connection::want_write(bool on) {
    epoll_event ev{};
    ev.events = (read_paused_ ? 0u : EPOLLIN) | (on ? EPOLLOUT : 0u);
    ev.data.u64 = id_;
    epoll_ctl(transport_->epfd_, EPOLL_CTL_MOD, fd_, &ev);
}

void Connection::close(pccl_status_t status, const std::string &reason) {
    {
        std::lock_guard<std::mutex> lk(smu_);
        if (state_ == State::closed) return;
        state_ = State::closed;
        close_status_ = status;
        close_reason_ = reason;
    }
    cv_.notify_all();
    {
        std::lock_guard<std::mutex> lk(transport_->mu_);
        transport_->to_finalize_.push_back(id_);
    }
    transport_->wake();
}

// ------------------------------------------------------------------ Transport

Transport::Transport(TransportConfig config, TransportHandler *handler)
    : config_(std::move(config)), handler_(handler) {
    epfd_ = epoll_create1(EPOLL_CLOEXEC);
    wakefd_ = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (epfd_ < 0 || wakefd_ < 0) fail(PCCL_ERR_IO, "cannot create epoll/eventfd: " + errno_text(errno));
    epoll_event ev{};
    ev.events = EPOLLIN;
    ev.data.u64 = kWakeId;
    epoll_ctl(epfd_, EPOLL_CTL_ADD, wakefd_, &ev);
    try {
        for (const auto &l : config_.listen) listen_on(Multiaddr::parse(l));
    } catch (...) {
        for (int fd : listen_fds_) ::close(fd);
        ::close(epfd_);
        ::close(wakefd_);
        throw;
    }
    loop_thread_ = std::thread([this] { loop(); });
    if (!config_.options.relays.empty()) {
        keep_reservations(false);
        learn_reachability();
        keeper_ = std::thread([this] { keeper_loop(); });
    }
}

Transport::~Transport() { shutdown(); }

std::vector<Multiaddr> Transport::listen_addrs() const {
    std::lock_guard<std::mutex> lk(mu_);
    std::vector<Multiaddr> out;
    if (reachability_ == "private") out = circuit_addrs_;
    out.insert(out.end(), public_addrs_.begin(), public_addrs_.end());
    out.insert(out.end(), bound_.begin(), bound_.end());
    return out;
}

std::string Transport::reachability() const {
    std::lock_guard<std::mutex> lk(mu_);
    return reachability_;
}

void Transport::set_advertised(std::vector<std::string> addrs) {
    std::lock_guard<std::mutex> lk(mu_);
    config_.advertised = std::move(addrs);
}

void Transport::shutdown() {
    if (stopping_.exchange(true)) return;
    if (keeper_.joinable()) {
        // Its reservation in progress (if any) fails at once.
        std::vector<ConnPtr> reserving;
        {
            std::lock_guard<std::mutex> lk(mu_);
            keeper_cv_.notify_all();
            for (auto &kv : conns_)
                if (kv.second->purpose_ == "relay-reserve") reserving.push_back(kv.second);
        }
        for (auto &c : reserving) c->close(PCCL_ERR_CLOSED, "communicator closed");
        keeper_.join();
    }
    wake();
    if (loop_thread_.joinable()) loop_thread_.join();
    std::map<uint64_t, ConnPtr> conns;
    {
        std::lock_guard<std::mutex> lk(mu_);
        conns.swap(conns_);
    }
    for (auto &kv : conns) {
        kv.second->close(PCCL_ERR_CLOSED, "communicator closed");
        std::lock_guard<std::mutex> lk(kv.second->wmu_);
        kv.second->fail_queue_locked();
    }
    for (int fd : listen_fds_) ::close(fd);
    listen_fds_.clear();
    ::close(epfd_);
    ::close(wakefd_);
}

void Transport::wake() {
    uint64_t one = 1;
    ssize_t r = ::write(wakefd_, &one, sizeof(one));
    (void)r;
}

void Transport::listen_on(const Multiaddr &addr) {
    auto target = addr.tcp_target();
    if (!target || target->is_dns)
        fail(PCCL_ERR_INVALID_ARGUMENT,
             "cannot listen on '" + addr.to_string() + "': need /ip4/<addr>/tcp/<port> or /ip6/<addr>/tcp/<port>");
    sockaddr_storage ss{};
    socklen_t len = 0;
    if (target->family == AF_INET) {
        auto *a = reinterpret_cast<sockaddr_in *>(&ss);
        a->sin_family = AF_INET;
        a->sin_port = htons(target->port);
        inet_pton(AF_INET, target->host.c_str(), &a->sin_addr);
        len = sizeof(sockaddr_in);
    } else {
        auto *a = reinterpret_cast<sockaddr_in6 *>(&ss);
        a->sin6_family = AF_INET6;
        a->sin6_port = htons(target->port);
        inet_pton(AF_INET6, target->host.c_str(), &a->sin6_addr);
        len = sizeof(sockaddr_in6);
    }
    int fd = ::socket(target->family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) fail(PCCL_ERR_IO, "socket(): " + errno_text(errno));
    int one = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    if (target->family == AF_INET6) setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof(one));
    set_pipe_options(fd, config_.options);
    if (::bind(fd, reinterpret_cast<sockaddr *>(&ss), len) < 0 || ::listen(fd, 512) < 0) {
        int e = errno;
        ::close(fd);
        fail(PCCL_ERR_IO, "cannot listen on '" + addr.to_string() + "': " + errno_text(e));
    }
    sockaddr_storage bound{};
    socklen_t blen = sizeof(bound);
    getsockname(fd, reinterpret_cast<sockaddr *>(&bound), &blen);
    uint16_t port = target->family == AF_INET ? ntohs(reinterpret_cast<sockaddr_in *>(&bound)->sin_port)
                                              : ntohs(reinterpret_cast<sockaddr_in6 *>(&bound)->sin6_port);
    const std::string proto = target->family == AF_INET ? "ip4" : "ip6";
    const bool wildcard = target->host == "0.0.0.0" || target->host == "::";
    if (wildcard) {
        // Advertise every configured interface address instead of the wildcard.
        ifaddrs *ifs = nullptr;
        if (getifaddrs(&ifs) == 0) {
            for (ifaddrs *i = ifs; i; i = i->ifa_next) {
                if (!i->ifa_addr || i->ifa_addr->sa_family != target->family || !(i->ifa_flags & IFF_UP)) continue;
                char host[INET6_ADDRSTRLEN] = {0};
                if (target->family == AF_INET)
                    inet_ntop(AF_INET, &reinterpret_cast<sockaddr_in *>(i->ifa_addr)->sin_addr, host, sizeof(host));
                else {
                    auto *a6 = reinterpret_cast<sockaddr_in6 *>(i->ifa_addr);
                    if (IN6_IS_ADDR_LINKLOCAL(&a6->sin6_addr)) continue;
                    inet_ntop(AF_INET6, &a6->sin6_addr, host, sizeof(host));
                }
                bound_.push_back(Multiaddr::parse("/" + proto + "/" + host + "/tcp/" + std::to_string(port)));
            }
            freeifaddrs(ifs);
        }
    } else {
        bound_.push_back(Multiaddr::parse("/" + proto + "/" + target->host + "/tcp/" + std::to_string(port)));
    }
    epoll_event ev{};
    ev.events = EPOLLIN;
    ev.data.u64 = listen_fds_.size() + 1;
    epoll_ctl(epfd_, EPOLL_CTL_ADD, fd, &ev);
    listen_fds_.push_back(fd);
}

ConnPtr Transport::add_connection(int fd, bool inbound, std::string endpoint, bool connecting) {
    ConnPtr c;
    {
        std::lock_guard<std::mutex> lk(mu_);
        c = ConnPtr(new Connection(this, fd, next_id_++, inbound, std::move(endpoint)));
        c->state_ = connecting ? Connection::State::connecting : Connection::State::handshaking;
        conns_[c->id_] = c;
    }
    return c;
}

ConnPtr Transport::start_dial(const sockaddr_storage &ss, socklen_t slen, const std::string &expected_id,
                              const std::string &purpose, bool hidden, int fd) {
    if (fd < 0) {
        fd = ::socket(ss.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
        if (fd < 0) fail(PCCL_ERR_IO, "socket(): " + errno_text(errno));
    }
    set_socket_options(fd);
    set_pipe_options(fd, config_.options);
    if (::connect(fd, reinterpret_cast<const sockaddr *>(&ss), slen) < 0 && errno != EINPROGRESS) {
        int e = errno;
        ::close(fd);
        fail(PCCL_ERR_IO, "cannot connect to " + endpoint_of(ss) + ": " + errno_text(e));
    }
    ConnPtr c;
    {
        std::lock_guard<std::mutex> lk(mu_);
        c = ConnPtr(new Connection(this, fd, next_id_++, false, endpoint_of(ss)));
        c->state_ = Connection::State::connecting;
        c->expected_id_ = expected_id;
        c->purpose_ = purpose;
        c->hidden_ = hidden;
        conns_[c->id_] = c;
    }
    epoll_event ev{};
    ev.events = EPOLLIN | EPOLLOUT;
    ev.data.u64 = c->id_;
    epoll_ctl(epfd_, EPOLL_CTL_ADD, fd, &ev);
    return c;
}

ConnPtr Transport::dial(const Multiaddr &addr, double timeout_s, const std::string &purpose) {
    if (stopping_) fail(PCCL_ERR_CLOSED, "communicator closed");
    if (addr.is_relayed()) return dial_circuit(addr, timeout_s, purpose);
    return dial_direct(addr, timeout_s, purpose, false);
}

ConnPtr Transport::dial_direct(const Multiaddr &addr, double timeout_s, const std::string &purpose, bool hidden) {
    if (stopping_) fail(PCCL_ERR_CLOSED, "communicator closed");
    auto target = addr.tcp_target();
    if (!target) fail(PCCL_ERR_INVALID_ARGUMENT, "cannot dial '" + addr.to_string() + "': it has no tcp address");
    addrinfo hints{};
    hints.ai_family = target->family;
    hints.ai_socktype = SOCK_STREAM;
    addrinfo *res = nullptr;
    int rc = getaddrinfo(target->host.c_str(), std::to_string(target->port).c_str(), &hints, &res);
    if (rc != 0 || !res)
        fail(PCCL_ERR_IO, "cannot resolve '" + target->host + "' in " + addr.to_string() + ": " + gai_strerror(rc));
    sockaddr_storage ss{};
    std::memcpy(&ss, res->ai_addr, res->ai_addrlen);
    socklen_t slen = res->ai_addrlen;
    freeaddrinfo(res);
    ConnPtr c;
    try {
        c = start_dial(ss, slen, addr.peer_id().value_or(""), purpose, hidden);
    } catch (const Error &e) {
        fail(e.status(), "cannot connect to " + addr.to_string() + ": " + e.what());
    }

    std::unique_lock<std::mutex> lk(c->smu_);
    bool settled = c->cv_.wait_for(lk, std::chrono::duration<double>(timeout_s), [&] {
        return c->state_ == Connection::State::ready || c->state_ == Connection::State::closed;
    });
    if (c->state_ == Connection::State::ready) return c;
    if (!settled) {
        lk.unlock();
        c->close(PCCL_ERR_TIMEOUT, "handshake timed out");
        fail(PCCL_ERR_TIMEOUT, "connecting to " + addr.to_string() + " timed out after " +
                                   std::to_string(timeout_s) + " s");
    }
    pccl_status_t st = c->close_status_;
    std::string why = c->close_reason_;
    fail(st == PCCL_OK ? PCCL_ERR_IO : st, "cannot connect to " + addr.to_string() + ": " + why);
}

void Transport::loop() {
    epoll_event evs[64];
    while (!stopping_) {
        int n = epoll_wait(epfd_, evs, 64, 200);
        for (int i = 0; i < n && !stopping_; ++i) {
            uint64_t id = evs[i].data.u64;
            if (id == kWakeId) {
                uint64_t v;
                while (::read(wakefd_, &v, sizeof(v)) > 0) {
                }
                continue;
            }
            if (id < kFirstConnId) {
                accept_all(listen_fds_[id - 1]);
                continue;
            }
            ConnPtr c;
            {
                std::lock_guard<std::mutex> lk(mu_);
                auto it = conns_.find(id);
                if (it != conns_.end()) c = it->second;
            }
            if (c) handle_event(c, evs[i].events);
        }
        expire_deadlines();
        probe_rtts();
        std::vector<uint64_t> ids;
        {
            std::lock_guard<std::mutex> lk(mu_);
            ids.swap(to_finalize_);
        }
        for (uint64_t id : ids) {
            ConnPtr c;
            {
                std::lock_guard<std::mutex> lk(mu_);
                auto it = conns_.find(id);
                if (it == conns_.end()) continue;
                c = it->second;
                conns_.erase(it);
            }
            finalize(c);
        }
    }
}

void Transport::accept_all(int lfd) {
    for (;;) {
        sockaddr_storage ss{};
        socklen_t len = sizeof(ss);
        int fd = ::accept4(lfd, reinterpret_cast<sockaddr *>(&ss), &len, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0) return;  // EAGAIN, or a transient error: try again on the next event
        set_socket_options(fd);
        ConnPtr c = add_connection(fd, true, endpoint_of(ss), false);
        epoll_event ev{};
        ev.events = EPOLLIN;
        ev.data.u64 = c->id_;
        epoll_ctl(epfd_, EPOLL_CTL_ADD, fd, &ev);
        send_hello(c);
    }
}

void Transport::handle_event(const ConnPtr &c, uint32_t events) {
    try {
        if (c->state() == Connection::State::connecting) {
            if (events & (EPOLLOUT | EPOLLERR | EPOLLHUP)) on_connected(c);
            return;
        }
        if (events & EPOLLOUT) {
            bool drained = false;
            {
                std::lock_guard<std::mutex> lk(c->wmu_);
                if (!c->flush_locked()) {
                    c->close(PCCL_ERR_IO, "write to " + c->remote_endpoint_ + " failed: " + errno_text(errno));
                    return;
                }
                if (c->wqueue_.empty() && c->want_out_) {
                    c->want_out_ = false;
                    c->want_write(false);
                }
                drained = c->queued_ < (1u << 20);
            }
            // A relay splicing into `c` paused reading the other side: resume it.
            if (ConnPtr other = drained ? c->splice_.lock() : nullptr) {
                std::lock_guard<std::mutex> lk(other->wmu_);
                if (other->read_paused_) {
                    other->read_paused_ = false;
                    other->want_write(other->want_out_);
                }
            }
        }
        if (events & (EPOLLIN | EPOLLHUP | EPOLLERR)) read_some(c);
    } catch (const Error &e) {
        c->close(e.status(), e.what());
    } catch (const std::exception &e) {
        c->close(PCCL_ERR_INTERNAL, e.what());
    }
}

void Transport::on_connected(const ConnPtr &c) {
    int err = 0;
    socklen_t len = sizeof(err);
    getsockopt(c->fd_, SOL_SOCKET, SO_ERROR, &err, &len);
    if (err != 0) {
        c->close(PCCL_ERR_IO, "connection to " + c->remote_endpoint_ + " failed: " + errno_text(err));
        return;
    }
    {
        std::lock_guard<std::mutex> lk(c->smu_);
        if (c->state_ != Connection::State::connecting) return;
        c->state_ = Connection::State::handshaking;
    }
    c->want_write(false);
    send_hello(c);
}

bool Transport::read_some(const ConnPtr &c) {
    if (!c->splice_.expired()) return splice_read(c);
    // Bounded work per event keeps one busy connection from starving others;
    // epoll is level-triggered, so the rest is read on the next round.
    for (int iter = 0; iter < 64; ++iter) {
        if (c->state() == Connection::State::closed) return false;
        uint8_t *dst;
        size_t want;
        if (c->rheader_got_ < kHeaderSize) {
            dst = c->rheader_ + c->rheader_got_;
            want = kHeaderSize - c->rheader_got_;
        } else {
            dst = (c->rtarget_ ? c->rtarget_ : c->rpayload_.get()) + c->rpayload_got_;
            want = c->rcur_.length - c->rpayload_got_;
        }
        ssize_t n = ::recv(c->fd_, dst, want, 0);
        if (n < 0) {
            if (errno == EINTR) continue;
            if (errno == EAGAIN || errno == EWOULDBLOCK) return true;
            c->close(PCCL_ERR_IO, "connection to " + c->remote_endpoint_ + " broke: " + errno_text(errno));
            return false;
        }
        if (n == 0) {
            c->close(PCCL_ERR_PEER_LOST, "peer " + (c->remote_id_.empty() ? c->remote_endpoint_ : c->remote_id_) +
                                             " closed the connection");
            return false;
        }
        bool complete = false;
        if (c->rheader_got_ < kHeaderSize) {
            c->rheader_got_ += static_cast<size_t>(n);
            if (c->rheader_got_ == kHeaderSize) {
                uint32_t cap = c->state() == Connection::State::ready ? kMaxPayload : kMaxHandshakePayload;
                c->rcur_ = decode_header(c->rheader_, cap);
                c->rtarget_ = nullptr;
                if (c->rcur_.type == FrameType::data && c->rcur_.length && c->state() == Connection::State::ready)
                    c->rtarget_ = handler_->payload_target(c, c->rcur_);
                if (!c->rtarget_) c->rpayload_ = BufferPool::instance().get(c->rcur_.length);
                c->rpayload_got_ = 0;
                complete = c->rcur_.length == 0;
            }
        } else {
            c->rpayload_got_ += static_cast<size_t>(n);
            complete = c->rpayload_got_ == c->rcur_.length;
        }
        if (complete) {
            Frame f;
            f.header = c->rcur_;
            f.payload = std::move(c->rpayload_);
            f.in_place = c->rtarget_ != nullptr;
            c->rtarget_ = nullptr;
            c->rheader_got_ = 0;
            c->rpayload_got_ = 0;
            dispatch(c, std::move(f));
            if (!c->splice_.expired()) return true;  // the rest of the stream is spliced
        }
    }
    return true;
}

void Transport::dispatch(const ConnPtr &c, Frame &&f) {
    const auto st = c->state();
    if (st == Connection::State::handshaking) {
        switch (f.header.type) {
            case FrameType::hello: handle_hello(c, f); return;
            case FrameType::auth: handle_auth(c, f); return;
            case FrameType::reject: {
                MsgValue m = msgpack_decode(f.data(), f.size());
                const MsgValue *r = m.find("reason");
                c->close(PCCL_ERR_AUTH_FAILED, "peer at " + c->remote_endpoint_ + " rejected the handshake: " +
                                                   (r ? r->as_str() : std::string("no reason given")));
                return;
            }
            default:
                fail(PCCL_ERR_PROTOCOL, "frame before the handshake completed");
        }
    }
    if (st != Connection::State::ready) return;
    if (f.header.type == FrameType::hello || f.header.type == FrameType::auth)
        fail(PCCL_ERR_PROTOCOL, "handshake frame after the handshake");
    if (f.header.type == FrameType::reject) {
        c->close(PCCL_ERR_PROTOCOL, "peer sent a reject after the handshake");
        return;
    }
    if (f.header.type == FrameType::relay) {
        handle_relay(c, f);
        return;
    }
    if (c->hidden_) return;  // relay plumbing carries no mesh traffic
    if (f.header.type == FrameType::heartbeat && f.header.sub == kRttProbe) {
        OutFrame echo;
        echo.header.type = FrameType::heartbeat;
        echo.header.sub = kRttEcho;
        echo.header.epoch = f.header.epoch;
        c->send(std::move(echo), true);
    } else if (f.header.type == FrameType::heartbeat && f.header.sub == kRttEcho) {
        const double rtt = (monotonic_us() - static_cast<double>(f.header.epoch)) / 1e6;
        if (rtt >= 0 && rtt < 3600) {  // else not our clock: ignore
            const double old = c->rtt_s_.load();
            c->rtt_s_ = old < 0 ? rtt : 0.875 * old + 0.125 * rtt;  // smoothed like TCP's srtt
        }
    }
    handler_->on_frame(c, std::move(f));  // every frame is liveness
}

void Transport::probe_rtts() {
    constexpr double kRttProbeS = 1.0;
    const double now = monotonic_us() / 1e6;
    if (now < next_rtt_probe_) return;
    next_rtt_probe_ = now + kRttProbeS;
    std::vector<ConnPtr> live;
    {
        std::lock_guard<std::mutex> lk(mu_);
        for (const auto &kv : conns_)
            if (!kv.second->hidden_ && kv.second->announced_) live.push_back(kv.second);
    }
    for (const auto &c : live) {
        if (c->state() != Connection::State::ready) continue;
        OutFrame f;
        f.header.type = FrameType::heartbeat;
        f.header.sub = kRttProbe;
        f.header.epoch = static_cast<uint64_t>(monotonic_us());
        c->send(std::move(f), true);
    }
}

void Transport::send_hello(const ConnPtr &c) {
    std::vector<MsgValue> addrs;
    {
        std::lock_guard<std::mutex> lk(mu_);
        for (const auto &a : config_.advertised) addrs.emplace_back(a);
    }
    MsgValue hello = MsgValue::map({
        {"v", uint64_t(kProtocolVersion)},
        {"id", config_.peer_id},
        {"inc", config_.incarnation},
        {"nonce", MsgValue::binary(std::string(c->local_nonce_.begin(), c->local_nonce_.end()))},
        {"addrs", MsgValue::array(std::move(addrs))},
        {"purpose", c->purpose_},
        {"obs", c->inbound_ && !c->relayed_ ? c->remote_endpoint_ : std::string()},
    });
    if (c->reverse_cid_) hello.as_map().emplace_back("rev", c->reverse_cid_);
    OutFrame f;
    f.header.type = FrameType::hello;
    f.owned = msgpack_encode(hello);
    c->send(std::move(f));
}

std::string Transport::proof(const std::string &sender, const std::string &receiver,
                             const std::array<uint8_t, 32> &receiver_nonce,
                             const std::array<uint8_t, 32> &sender_nonce) const {
    std::string msg = "pccl-auth-v1";
    msg.push_back('\0');
    msg += sender;
    msg.push_back('\0');
    msg += receiver;
    msg.push_back('\0');
    msg.append(receiver_nonce.begin(), receiver_nonce.end());
    msg.append(sender_nonce.begin(), sender_nonce.end());
    Digest d = hmac_sha256(config_.run_key.data(), config_.run_key.size(), msg.data(), msg.size());
    return std::string(d.begin(), d.end());
}

void Transport::handle_hello(const ConnPtr &c, const Frame &f) {
    if (c->got_hello_) fail(PCCL_ERR_PROTOCOL, "duplicate hello");
    MsgValue m = msgpack_decode(f.data(), f.size());
    uint64_t v = m.at("v").as_uint();
    if (v != kProtocolVersion) fail(PCCL_ERR_PROTOCOL, "peer speaks protocol version " + std::to_string(v));
    std::string id = to_string(m, "id");
    if (!is_valid_peer_id(id)) fail(PCCL_ERR_PROTOCOL, "peer sent an invalid peer id");
    std::string nonce = m.at("nonce").as_bin();
    if (nonce.size() != 32) fail(PCCL_ERR_PROTOCOL, "peer sent a nonce of the wrong size");
    auto reject = [&](pccl_status_t st, const std::string &why) {
        OutFrame r;
        r.header.type = FrameType::reject;
        r.owned = msgpack_encode(MsgValue::map({{"reason", why}}));
        c->send(std::move(r));
        c->close(st, why);
    };
    if (id == config_.peer_id) return reject(PCCL_ERR_INVALID_ARGUMENT, "connected to ourselves (" + id + ")");
    if (!c->expected_id_.empty() && id != c->expected_id_)
        return reject(PCCL_ERR_AUTH_FAILED, "dialed peer " + c->expected_id_ + " but reached " + id);
    c->got_hello_ = true;
    c->remote_id_ = id;
    c->remote_incarnation_ = m.at("inc").as_uint();
    std::copy(nonce.begin(), nonce.end(), c->remote_nonce_.begin());
    for (const auto &a : m.at("addrs").as_array()) c->remote_addrs_.push_back(a.as_str());
    if (c->inbound_) {
        if (const MsgValue *p = m.find("purpose")) c->purpose_ = p->as_str();
        if (const MsgValue *r = m.find("rev")) c->reverse_cid_ = r->as_uint();  // a reversal we asked for
        // Relay plumbing and reachability probes are the transport's own.
        if (c->purpose_.rfind("relay-", 0) == 0 || c->purpose_ == "autonat") c->hidden_ = true;
    } else if (!c->relayed_) {
        // Identify: the acceptor tells us the endpoint it saw us at.
        if (const MsgValue *o = m.find("obs"); o && !o->as_str().empty()) {
            record_observation(o->as_str(), id);
            c->observed_ = o->as_str();
        }
    }
    OutFrame out;
    out.header.type = FrameType::auth;
    out.owned = msgpack_encode(MsgValue::map(
        {{"mac", MsgValue::binary(proof(config_.peer_id, id, c->remote_nonce_, c->local_nonce_))}}));
    c->send(std::move(out));
}

void Transport::handle_auth(const ConnPtr &c, const Frame &f) {
    if (!c->got_hello_) fail(PCCL_ERR_PROTOCOL, "auth before hello");
    MsgValue m = msgpack_decode(f.data(), f.size());
    std::string mac = m.at("mac").as_bin();
    std::string expect = proof(c->remote_id_, config_.peer_id, c->local_nonce_, c->remote_nonce_);
    if (mac.size() != expect.size() ||
        !constant_time_equal(reinterpret_cast<const uint8_t *>(mac.data()),
                             reinterpret_cast<const uint8_t *>(expect.data()), expect.size())) {
        OutFrame r;
        r.header.type = FrameType::reject;
        r.owned = msgpack_encode(MsgValue::map({{"reason", "run key mismatch"}}));
        c->send(std::move(r));
        c->close(PCCL_ERR_AUTH_FAILED, "authentication failed: peer " + c->remote_id_ + " at " +
                                           c->remote_endpoint_ + " does not know our run key");
        return;
    }
    {
        std::lock_guard<std::mutex> lk(c->smu_);
        if (c->state_ != Connection::State::handshaking) return;
        c->state_ = Connection::State::ready;
    }
    c->cv_.notify_all();
    c->deadline_ = 0;
    if (c->hidden_) {
        on_hidden_ready(c);
        return;
    }
    c->announced_ = true;
    handler_->on_ready(c);
    if (c->inbound_ && c->reverse_cid_) {  // the connection reversal a caller thread waits for
        std::lock_guard<std::mutex> lk(mu_);
        auto s = self_dials_.find(c->reverse_cid_);
        if (s != self_dials_.end() && s->second->target == c->remote_id_ && !s->second->conn) {
            s->second->conn = c;
            self_dial_cv_.notify_all();
        }
    }
}

void Transport::finalize(const ConnPtr &c) {
    {
        std::lock_guard<std::mutex> lk(c->wmu_);
        c->siblings_.clear();  // a closing link takes no more work
        c->flush_locked();     // best effort: a reject should reach the peer
        c->fail_queue_locked();
    }
    epoll_ctl(epfd_, EPOLL_CTL_DEL, c->fd_, nullptr);
    ::shutdown(c->fd_, SHUT_RDWR);
    if (ConnPtr other = c->splice_.lock()) {
        other->close(PCCL_ERR_PEER_LOST, "the other side of the relayed circuit closed");
        if (active_circuits_ > 0) --active_circuits_;
    }
    c->splice_.reset();
    if (!c->inbound_ && c->purpose_ == "relay-reserve") {  // one of our reservations: replace it now
        std::lock_guard<std::mutex> lk(mu_);
        keeper_cv_.notify_all();
    }
    if (ConnPtr asker = c->dialback_for_.lock()) {  // an autonat probe that never got ready
        OutFrame r;
        r.header.type = FrameType::relay;
        r.owned = msgpack_encode(MsgValue::map({{"t", "dialback"}, {"ok", false}}));
        asker->send(std::move(r));
    }
    if (ConnPtr link = c->mapping_for_.lock()) {  // a mapping probe that never got ready: answer with a guess
        c->mapping_for_.reset();
        answer_punch(link, "", c->mapping_started_);
    }
    if (c->punch_fd_ >= 0) {
        ::close(c->punch_fd_);
        c->punch_fd_ = -1;
    }
    if (c->announced_) handler_->on_closed(c);
}

}  // namespace pccl::net
