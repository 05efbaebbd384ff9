#include "net/tcp_transport.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <ifaddrs.h>
#include <net/if.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/eventfd.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <chrono>
#include <cstdlib>
#include <cstring>

#include "common/clock.h"
#include "common/crypto.h"
#include "common/log.h"
#include "common/error.h"
#include "common/msgpack.h"
#include "net/hello.h"
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


bool is_loopback(const sockaddr_storage &ss) {
    if (ss.ss_family == AF_INET)
        return (ntohl(reinterpret_cast<const sockaddr_in *>(&ss)->sin_addr.s_addr) >> 24) == 127;  // 127.0.0.0/8
    if (ss.ss_family != AF_INET6) return false;
    const in6_addr &a = reinterpret_cast<const sockaddr_in6 *>(&ss)->sin6_addr;
    if (IN6_IS_ADDR_LOOPBACK(&a)) return true;
    return IN6_IS_ADDR_V4MAPPED(&a) && a.s6_addr[12] == 127;
}

// The loopback fast path's own half (tcp_transport.h): when both ends of
// `fd` are loopback addresses as the kernel reports them (never what a peer
// says), the [local, peer] endpoints to state in our hello; else empty.
std::vector<std::string> loopback_endpoints(int fd) {
    sockaddr_storage local{}, peer{};
    socklen_t llen = sizeof(local), plen = sizeof(peer);
    if (getsockname(fd, reinterpret_cast<sockaddr *>(&local), &llen) != 0 ||
        getpeername(fd, reinterpret_cast<sockaddr *>(&peer), &plen) != 0 || !is_loopback(local) || !is_loopback(peer))
        return {};
    return {endpoint_of(local), endpoint_of(peer)};
}

void set_socket_options(int fd) {
    int one = 1;
    // Small control frames and the RTT measurements of hole punching need it.
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
}

std::string read_proc_line(const char *path) {
    std::string line;
    if (FILE *f = std::fopen(path, "r")) {
        char buf[512];
        if (std::fgets(buf, sizeof buf, f)) line = buf;
        std::fclose(f);
    }
    while (!line.empty() && (line.back() == '\n' || line.back() == ' ')) line.pop_back();
    return line;
}

// A congestion control the kernel refuses would otherwise leave every
// socket silently on the namespace default: checked once, on a throwaway
// socket, before anything listens. Throws Error(INVALID_ARGUMENT).
void check_congestion_control(const std::string &cc) {
    if (cc.empty()) return;
    int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) fd = ::socket(AF_INET6, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) return;  // no TCP socket at all: listen_on reports that
    const int rc = setsockopt(fd, IPPROTO_TCP, TCP_CONGESTION, cc.data(), static_cast<socklen_t>(cc.size()));
    const int e = errno;
    ::close(fd);
    if (rc == 0) return;
    const std::string allowed = read_proc_line("/proc/sys/net/ipv4/tcp_allowed_congestion_control");
    const std::string available = read_proc_line("/proc/sys/net/ipv4/tcp_available_congestion_control");
    std::string fix;
    if (e == ENOENT)  // not built into the kernel nor loaded
        fix = "it is not loaded (available: " + (available.empty() ? "?" : available) + "); as root: modprobe tcp_" +
              cc + ", then sysctl -w net.ipv4.tcp_allowed_congestion_control=\"" + allowed + " " + cc + "\"";
    else  // EPERM: loaded but not allowed to unprivileged processes
        fix = "it is not in net.ipv4.tcp_allowed_congestion_control (\"" + allowed + "\"); as root: sysctl -w "
              "net.ipv4.tcp_allowed_congestion_control=\"" + allowed + " " + cc + "\" (or run as root / with "
              "CAP_NET_ADMIN)";
    fail(PCCL_ERR_INVALID_ARGUMENT,
         "tcp_congestion '" + cc + "' was refused by the kernel (" + errno_text(e) + "): " + fix);
}

// Period of the congestion-window keep-alive of a socket: below one RTO (the
// idle time after which Linux restarts the window), at most one a round trip.
double keepalive_period(int fd) {
    tcp_info ti{};
    socklen_t len = sizeof ti;
    if (getsockopt(fd, IPPROTO_TCP, TCP_INFO, &ti, &len) != 0 || ti.tcpi_rtt == 0) return 0.05;
    const double srtt = ti.tcpi_rtt / 1e6, rto = ti.tcpi_rto / 1e6;
    return std::max(0.05, std::min(srtt, rto / 2));
}

// Long-fat-pipe knobs; applied to listen sockets (accepted sockets inherit
// them, and the window scale is fixed at SYN time) and to dialing sockets
// before connect(). The congestion control was checked at start
// (check_congestion_control), so its setsockopt cannot fail here.
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

}  // namespace

// ----------------------------------------------------------------- Connection

Connection::Connection(TcpTransport *t, int fd, uint64_t id, bool inbound, std::string endpoint)
    : Link(id, inbound, std::move(endpoint)), transport_(t), fd_(fd) {}

Connection::~Connection() {
    if (fd_ >= 0) ::close(fd_);
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
        wqueue_.insert(wqueue_.begin() + (front_started_locked() ? 1 : 0), std::move(f));
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

bool Connection::send_group(const std::vector<LinkPtr> &links, OutFrame f) {
    // The least loaded open link (ties: the first), so frames spread over
    // idle links at once instead of waiting to be stolen. Every link of the
    // group is a Connection (Link::send_striped's contract).
    Connection *best = nullptr;
    size_t best_queued = 0;
    for (const auto &l : links) {
        auto *c = static_cast<Connection *>(l.get());
        std::lock_guard<std::mutex> lk(c->wmu_);
        if (c->wclosed_) continue;
        if (!best || c->queued_ < best_queued) best = c, best_queued = c->queued_;
    }
    if (!best) best = static_cast<Connection *>(links.front().get());  // all closed: send() reports the failure
    {
        std::lock_guard<std::mutex> lk(best->wmu_);
        if (best->siblings_.size() != links.size()) {
            best->siblings_.clear();
            for (const auto &l : links) best->siblings_.push_back(std::static_pointer_cast<Connection>(l));
        }
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
        const size_t unstarted = s->wqueue_.size() - (s->front_started_locked() ? 1 : 0);
        if (unstarted > 0 && s->queued_ > most) victim = s, most = s->queued_;
    }
    if (!victim) return false;
    std::unique_lock<std::mutex> lk(victim->wmu_, std::try_to_lock);
    if (!lk.owns_lock() || victim->wclosed_) return false;
    const size_t i = victim->front_started_locked() ? 1 : 0;  // a started (or sealed) frame stays
    if (victim->wqueue_.size() <= i || victim->wqueue_[i].raw || victim->wqueue_[i].switch_tx) return false;
    OutFrame f = std::move(victim->wqueue_[i]);
    victim->wqueue_.erase(victim->wqueue_.begin() + static_cast<std::ptrdiff_t>(i));
    const size_t len = f.header.length;
    victim->queued_ -= len;
    lk.unlock();
    queued_ += len;
    wqueue_.push_back(std::move(f));
    return true;
}

void Connection::prepare_front_locked() {
    const OutFrame &f = wqueue_.front();
    wprepared_ = true;
    wtagged_ = false;
    if (f.raw) {
        whdr_len_ = 0;
        return;
    }
    encode_header(f.header, whdr_);
    whdr_len_ = kHeaderSize;
    if (!tx_) return;
    tx_->seal(whdr_, kHeaderSize, whdr_, whdr_ + kHeaderSize);
    whdr_len_ = kSealedHeaderSize;
    const size_t plen = f.header.length;
    if (plen == 0 || (tx_clear_data_ && f.header.type == FrameType::data)) return;  // the loopback fast path
    const uint8_t *payload = f.borrowed ? f.borrowed : reinterpret_cast<const uint8_t *>(f.owned.data());
    if (tx_encrypted_) {
        wsealed_.resize(plen);
        tx_->seal(payload, plen, reinterpret_cast<uint8_t *>(wsealed_.data()), wtag_);
    } else {
        tx_->mac(payload, plen, wtag_);
    }
    wtagged_ = true;
}

bool Connection::flush_locked() {
    while (!wqueue_.empty() || (!wclosed_ && !siblings_.empty() && steal_locked())) {
        OutFrame &f = wqueue_.front();
        if (!wprepared_) prepare_front_locked();
        const size_t plen = f.header.length;
        const uint8_t *payload =
            wtagged_ && tx_encrypted_ ? reinterpret_cast<const uint8_t *>(wsealed_.data())
            : f.borrowed              ? f.borrowed
                                      : reinterpret_cast<const uint8_t *>(f.owned.data());
        // The frame on the wire: header (clear or sealed), payload, tag.
        const iovec parts[3] = {{whdr_, whdr_len_},
                                {const_cast<uint8_t *>(payload), plen},
                                {wtag_, wtagged_ ? kAeadTag : 0}};
        const size_t total = whdr_len_ + plen + (wtagged_ ? kAeadTag : 0);
        iovec iov[3];
        int cnt = 0;
        size_t skip = wfront_done_;
        for (const iovec &p : parts) {
            if (skip >= p.iov_len) {
                skip -= p.iov_len;
                continue;
            }
            iov[cnt++] = {static_cast<uint8_t *>(p.iov_base) + skip, p.iov_len - skip};
            skip = 0;
        }
        ssize_t n = 0;
        if (cnt > 0) {
            msghdr msg{};
            msg.msg_iov = iov;
            msg.msg_iovlen = cnt;
            n = ::sendmsg(fd_, &msg, MSG_NOSIGNAL);
            if (n < 0) {
                if (errno == EINTR) continue;
                if (errno == EAGAIN || errno == EWOULDBLOCK) return true;
                return false;
            }
        }
        wfront_done_ += static_cast<size_t>(n);
        if (n > 0) {
            last_write_s_ = now_s();
            if (f.header.type == FrameType::data && !f.raw) last_data_s_ = last_write_s_;
        }
        if (wfront_done_ == total) {
            queued_ -= plen;
            if (f.tracker) f.tracker->done(true);
            if (f.switch_tx) tx_ = std::move(f.next_tx);
            wqueue_.pop_front();
            wfront_done_ = 0;
            wprepared_ = false;
            if (wsealed_.capacity() > (1u << 20)) std::string().swap(wsealed_);  // after a large frame
        }
    }
    return true;
}

void Connection::fail_queue_locked() {
    for (auto &f : wqueue_)
        if (f.tracker) f.tracker->done(false);
    wqueue_.clear();
    wfront_done_ = 0;
    wprepared_ = false;
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
    if (!mark_closed(status, reason)) return;
    {
        std::lock_guard<std::mutex> lk(transport_->mu_);
        transport_->to_finalize_.push_back(id_);
    }
    transport_->wake();
}

// ------------------------------------------------------------------ TcpTransport

TcpTransport::TcpTransport(TransportConfig config, TransportHandler *handler)
    : config_(std::move(config)), handler_(handler) {
    epfd_ = epoll_create1(EPOLL_CLOEXEC);
    wakefd_ = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (epfd_ < 0 || wakefd_ < 0) fail(PCCL_ERR_IO, "cannot create epoll/eventfd: " + errno_text(errno));
    epoll_event ev{};
    ev.events = EPOLLIN;
    ev.data.u64 = kWakeId;
    epoll_ctl(epfd_, EPOLL_CTL_ADD, wakefd_, &ev);
    try {
        check_congestion_control(config_.options.tcp_congestion);
        for (const auto &l : config_.listen) listen_on(Multiaddr::parse(l));
    } catch (...) {
        for (int fd : listen_fds_) ::close(fd);
        ::close(epfd_);
        ::close(wakefd_);
        throw;
    }
    if (NatFactory make_nat = nat_layer()) nat_ = make_nat(*this, config_);  // before any frame can arrive
    loop_thread_ = std::thread([this] { loop(); });
    if (nat_) {
        try {
            nat_->start();
        } catch (...) {
            shutdown();
            throw;
        }
    }
}

TcpTransport::~TcpTransport() { shutdown(); }

std::vector<Multiaddr> TcpTransport::listen_addrs() const {
    std::vector<Multiaddr> out;
    if (nat_) out = nat_->addrs_first();
    out.insert(out.end(), bound_.begin(), bound_.end());
    return out;
}

std::string TcpTransport::reachability() const { return nat_ ? nat_->reachability() : "unknown"; }

std::vector<std::string> TcpTransport::reservations() const {
    return nat_ ? nat_->reservations() : std::vector<std::string>{};
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

std::vector<ConnPtr> TcpTransport::connections_with_purpose(const std::string &purpose) const {
    std::lock_guard<std::mutex> lk(mu_);
    std::vector<ConnPtr> out;
    for (const auto &kv : conns_)
        if (kv.second->purpose_ == purpose) out.push_back(kv.second);
    return out;
}

void TcpTransport::set_advertised(std::vector<std::string> addrs) {
    std::lock_guard<std::mutex> lk(mu_);
    config_.advertised = std::move(addrs);
}

void TcpTransport::abort_dials(const std::string &peer_id, const std::string &why) {
    std::vector<ConnPtr> doomed;
    {
        std::lock_guard<std::mutex> lk(mu_);
        for (auto &kv : conns_) {
            const ConnPtr &c = kv.second;
            if (!c->inbound() && c->expected_id_ == peer_id && c->state() != Connection::State::ready &&
                c->state() != Connection::State::closed)
                doomed.push_back(c);
        }
    }
    for (auto &c : doomed) c->close(PCCL_ERR_PEER_LOST, why);
}

void TcpTransport::shutdown() {
    if (stopping_.exchange(true)) return;
    if (nat_) nat_->stop();
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

void TcpTransport::wake() {
    uint64_t one = 1;
    ssize_t r = ::write(wakefd_, &one, sizeof(one));
    (void)r;
}

void TcpTransport::listen_on(const Multiaddr &addr) {
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

ConnPtr TcpTransport::add_connection(int fd, bool inbound, std::string endpoint, bool connecting) {
    ConnPtr c;
    {
        std::lock_guard<std::mutex> lk(mu_);
        c = ConnPtr(new Connection(this, fd, next_id_++, inbound, std::move(endpoint)));
        c->state_ = connecting ? Connection::State::connecting : Connection::State::handshaking;
        conns_[c->id_] = c;
    }
    return c;
}

ConnPtr TcpTransport::start_dial(const sockaddr_storage &ss, socklen_t slen, const std::string &expected_id,
                                 const std::string &purpose, bool internal, int fd, double deadline, bool inbound) {
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
        c = ConnPtr(new Connection(this, fd, next_id_++, inbound, endpoint_of(ss)));
        c->state_ = Connection::State::connecting;
        c->expected_id_ = expected_id;
        c->purpose_ = purpose;
        c->internal_ = internal;
        c->deadline_ = deadline;
        conns_[c->id_] = c;
    }
    epoll_event ev{};
    ev.events = EPOLLIN | EPOLLOUT;
    ev.data.u64 = c->id_;
    epoll_ctl(epfd_, EPOLL_CTL_ADD, fd, &ev);
    return c;
}

LinkPtr TcpTransport::dial(const Multiaddr &addr, double timeout_s, const std::string &purpose) {
    if (stopping_) fail(PCCL_ERR_CLOSED, "communicator closed");
    if (addr.is_relayed()) {
        if (!nat_) fail(PCCL_ERR_INVALID_ARGUMENT, "cannot dial '" + addr.to_string() + "': no NAT layer");
        return nat_->dial_relayed(addr, timeout_s, purpose);
    }
    return dial_direct(addr, timeout_s, purpose, false);
}

ConnPtr TcpTransport::dial_direct(const Multiaddr &addr, double timeout_s, const std::string &purpose, bool internal) {
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
        c = start_dial(ss, slen, addr.peer_id().value_or(""), purpose, internal);
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

void TcpTransport::loop() {
    epoll_event evs[64];
    int wait_ms = 200;
    while (!stopping_) {
        int n = epoll_wait(epfd_, evs, 64, wait_ms);
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
        if (accept_paused_until_ > 0 && now_s() >= accept_paused_until_) {
            accept_paused_until_ = 0;
            for (size_t i = 0; i < listen_fds_.size(); ++i) {
                epoll_event ev{};
                ev.events = EPOLLIN;
                ev.data.u64 = i + 1;
                epoll_ctl(epfd_, EPOLL_CTL_MOD, listen_fds_[i], &ev);
            }
        }
        expire_deadlines();
        probe_rtts();
        wait_ms = 200;
        if (config_.options.keepalive_s > 0) {
            const double next = send_keepalives();
            wait_ms = std::clamp(static_cast<int>((next - now_s()) * 1e3) + 1, 1, 200);
        }
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

void TcpTransport::accept_all(int lfd) {
    // A few per round, so connections accepted earlier get their first
    // message read before a flood of newer ones could push them out.
    for (int iter = 0; iter < 8; ++iter) {
        sockaddr_storage ss{};
        socklen_t len = sizeof(ss);
        int fd = ::accept4(lfd, reinterpret_cast<sockaddr *>(&ss), &len, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0) {
            if (errno == EMFILE || errno == ENFILE || errno == ENOBUFS || errno == ENOMEM) pause_accepting();
            return;  // EAGAIN, or a transient error (ECONNABORTED): try again on the next event
        }
        accept_backoff_s_ = 0.05;
        set_socket_options(fd);
        const std::string endpoint = endpoint_of(ss);
        const std::string ip = endpoint.substr(0, endpoint.rfind(':'));
        enforce_unauthenticated_limits(ip, false);
        ConnPtr c = add_connection(fd, true, endpoint, false);
        c->source_ip_ = ip;
        c->accepted_at_ = now_s();
        c->deadline_ = c->accepted_at_ + config_.options.handshake_timeout_s;
        epoll_event ev{};
        ev.events = EPOLLIN;
        ev.data.u64 = c->id_;
        epoll_ctl(epfd_, EPOLL_CTL_ADD, fd, &ev);
        start_handshake(c);
    }
}

void TcpTransport::enforce_unauthenticated_limits(const std::string &ip, bool proven) {
    // Bounded scan: at most the limits' worth of unauthenticated connections
    // exist, plus the authenticated ones. The two classes (run key not yet
    // shown / shown in message 1) have separate budgets, so strangers, who
    // cannot get past message 1, never push out a dialer that holds the key.
    std::vector<ConnPtr> pending, same_ip;
    {
        std::lock_guard<std::mutex> lk(mu_);
        for (const auto &kv : conns_) {
            const ConnPtr &c = kv.second;
            if (!c->inbound_ || c->accepted_at_ == 0 || c->announced_ || c->proven_ != proven ||
                c->state() != Connection::State::handshaking)
                continue;
            pending.push_back(c);
            if (c->source_ip_ == ip) same_ip.push_back(c);
        }
    }
    auto evict_oldest = [](std::vector<ConnPtr> &v, size_t keep) {
        std::sort(v.begin(), v.end(), [](const ConnPtr &a, const ConnPtr &b) { return a->id_ < b->id_; });
        for (size_t i = 0; i + keep < v.size(); ++i)
            v[i]->close(PCCL_ERR_TIMEOUT, "closed unauthenticated connection (too many pending handshakes)");
    };
    const size_t per_ip = std::max<size_t>(1, config_.options.max_unauthenticated_per_ip);
    // Never more than a quarter of our descriptors: strangers cannot starve
    // the run's own connections of file descriptors.
    rlimit nofile{};
    size_t fd_share = SIZE_MAX;
    if (getrlimit(RLIMIT_NOFILE, &nofile) == 0 && nofile.rlim_cur != RLIM_INFINITY)
        fd_share = std::max<size_t>(8, size_t(nofile.rlim_cur) / 4);
    const size_t total = std::max<size_t>(1, std::min(config_.options.max_unauthenticated, fd_share));
    // A new connection is not counted yet (accept: make room for it); a
    // newly proven one is, as the newest of its class (keep it).
    const size_t room = proven ? 0 : 1;
    if (same_ip.size() + room > per_ip) evict_oldest(same_ip, per_ip - room);
    if (pending.size() + room > total) evict_oldest(pending, total - room);
}

void TcpTransport::pause_accepting() {
    // Out of descriptors: a level-triggered listener would wake us at once
    // forever. Stop watching the listeners for a while (doubling up to 1 s)
    // and free slots by closing the older half of the unauthenticated
    // connections that have not shown the run key (a newcomer queued behind
    // them then gets in within a few rounds; one that has shown the key
    // finishes its handshake); the run's own connections keep being served.
    accept_paused_until_ = now_s() + accept_backoff_s_;
    accept_backoff_s_ = std::min(1.0, accept_backoff_s_ * 2);
    for (size_t i = 0; i < listen_fds_.size(); ++i) {
        epoll_event ev{};
        ev.events = 0;
        ev.data.u64 = i + 1;
        epoll_ctl(epfd_, EPOLL_CTL_MOD, listen_fds_[i], &ev);
    }
    std::vector<ConnPtr> pending;  // conns_ is ordered by id: oldest first
    {
        std::lock_guard<std::mutex> lk(mu_);
        for (const auto &kv : conns_)
            if (kv.second->inbound_ && kv.second->accepted_at_ > 0 && !kv.second->announced_ &&
                !kv.second->proven_ && kv.second->state() == Connection::State::handshaking)
                pending.push_back(kv.second);
    }
    for (size_t i = 0; i < (pending.size() + 1) / 2; ++i)
        pending[i]->close(PCCL_ERR_TIMEOUT, "closed unauthenticated connection (out of file descriptors)");
    if (!pending.empty()) accept_backoff_s_ = 0.05;  // slots were freed: try again soon
    debug_log(config_.identity.peer_id.substr(0, 8), "out of file descriptors: accepting paused for " +
                              std::to_string(int(accept_backoff_s_ * 500)) + " ms");
}

void TcpTransport::handle_event(const ConnPtr &c, uint32_t events) {
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
            // A relay splicing into `c` may have paused reading the other side.
            if (drained && c->raw_ && nat_) nat_->on_raw_drained(c);
        }
        if (events & (EPOLLIN | EPOLLHUP | EPOLLERR)) read_some(c);
    } catch (const Error &e) {
        c->close(e.status(), e.what());
    } catch (const std::exception &e) {
        c->close(PCCL_ERR_INTERNAL, e.what());
    }
}

void TcpTransport::on_connected(const ConnPtr &c) {
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
    start_handshake(c);
}

bool TcpTransport::read_some(const ConnPtr &c) {
    if (c->raw_) return nat_->on_raw_readable(c);
    // Bounded work per event keeps one busy connection from starving others;
    // epoll is level-triggered, so the rest is read on the next round.
    for (int iter = 0; iter < 64; ++iter) {
        if (c->state() == Connection::State::closed) return false;
        if (c->raw_) return true;  // a frame just dispatched made the rest of the stream a splice
        // A frame is read in three parts: header (sealed once rx_ is set),
        // payload, and its tag (sealed frames with a payload only, but not
        // data frames on the loopback fast path).
        const size_t hsize = c->rx_ ? kSealedHeaderSize : kHeaderSize;
        if (!c->rdecoded_ && c->rheader_got_ == hsize) {  // read ahead with the previous frame
            if (take_header(c)) deliver(c, 0);
            continue;
        }
        const bool in_header = !c->rdecoded_;
        const bool tagged = !in_header && c->rx_ && c->rcur_.length > 0 &&
                            !(c->rx_clear_data_ && c->rcur_.type == FrameType::data);
        iovec iov[3];
        int cnt = 0;
        if (in_header) {
            iov[cnt++] = {c->rheader_ + c->rheader_got_, hsize - c->rheader_got_};
        } else {
            if (c->rpayload_got_ < c->rcur_.length)
                iov[cnt++] = {(c->rtarget_ ? c->rtarget_ : c->rpayload_.get()) + c->rpayload_got_,
                              c->rcur_.length - c->rpayload_got_};
            if (tagged) iov[cnt++] = {c->rtag_ + c->rtag_got_, kAeadTag - c->rtag_got_};
            // Read-ahead: the next frame's header in the same call (one
            // recvmsg per frame instead of two or three under a stream of
            // data frames). Only after a data frame of a ready connection:
            // a handshake or relay frame may change how the bytes after it
            // are read (other keys, the clear, a raw splice), so those end
            // at their own last byte. recvmsg fills the parts in order, so
            // header bytes arrive only once this frame is complete.
            if (c->rcur_.type == FrameType::data && c->rx_ && c->state() == Connection::State::ready)
                iov[cnt++] = {c->rheader_, kSealedHeaderSize};
        }
        msghdr msg{};
        msg.msg_iov = iov;
        msg.msg_iovlen = static_cast<size_t>(cnt);
        ssize_t n = ::recvmsg(c->fd_, &msg, 0);
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
        size_t left = static_cast<size_t>(n);
        if (in_header) {
            c->rheader_got_ += left;
            if (c->rheader_got_ == hsize && take_header(c)) deliver(c, 0);
            continue;
        }
        const size_t body = std::min(left, size_t(c->rcur_.length) - c->rpayload_got_);
        c->rpayload_got_ += body;
        left -= body;
        if (tagged) {
            const size_t tag = std::min(left, kAeadTag - c->rtag_got_);
            c->rtag_got_ += tag;
            left -= tag;
        }
        if (c->rpayload_got_ == c->rcur_.length && (!tagged || c->rtag_got_ == kAeadTag)) deliver(c, left);
    }
    return true;
}

bool TcpTransport::take_header(const ConnPtr &c) {
    if (c->rx_ && !c->rx_->open(c->rheader_, kHeaderSize, c->rheader_, c->rheader_ + kHeaderSize))
        fail(PCCL_ERR_PROTOCOL,
             "a frame from " + c->remote_endpoint_ + " failed authentication (tampered, replayed or reordered)");
    const bool ready = c->state() == Connection::State::ready;
    c->rcur_ = decode_header(c->rheader_, ready ? kMaxPayload : kMaxHandshakePayload);
    if (c->rcur_.type == FrameType::heartbeat && c->rcur_.length != 0)
        fail(PCCL_ERR_PROTOCOL, "a heartbeat from " + c->remote_endpoint_ + " carries a payload");
    c->rdecoded_ = true;
    c->rtarget_ = nullptr;
    if (c->rcur_.type == FrameType::data && c->rcur_.length && ready) c->rtarget_ = handler_->payload_target(c, c->rcur_);
    if (!c->rtarget_) c->rpayload_ = BufferPool::instance().get(c->rcur_.length);
    c->rpayload_got_ = 0;
    c->rtag_got_ = 0;
    return c->rcur_.length == 0;
}

void TcpTransport::deliver(const ConnPtr &c, size_t ahead) {
    const bool tagged = c->rx_ && c->rcur_.length > 0 && !(c->rx_clear_data_ && c->rcur_.type == FrameType::data);
    Frame f;
    f.header = c->rcur_;
    f.payload = std::move(c->rpayload_);
    f.in_place = c->rtarget_ != nullptr;
    uint8_t *body = c->rtarget_ ? c->rtarget_ : f.payload.get();
    c->rtarget_ = nullptr;
    c->rdecoded_ = false;
    c->rheader_got_ = ahead;
    c->rpayload_got_ = 0;
    c->rtag_got_ = 0;
    if (tagged) {
        const bool ok = c->rx_encrypted_ ? c->rx_->open(body, f.header.length, body, c->rtag_)
                                         : c->rx_->check_mac(body, f.header.length, c->rtag_);
        if (!ok) {
            // An in-place target now holds garbage: the op it belongs
            // to fails with this connection (on_closed releases it).
            fail(PCCL_ERR_PROTOCOL,
                 "a frame from " + c->remote_endpoint_ + " failed authentication (tampered, replayed or reordered)");
        }
    }
    dispatch(c, std::move(f));
}

void TcpTransport::dispatch(const ConnPtr &c, Frame &&f) {
    const auto st = c->state();
    if (st == Connection::State::handshaking) {
        switch (f.header.type) {
            case FrameType::hello: handle_handshake(c, f); return;
            case FrameType::auth: handle_confirm(c); return;
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
        if (!nat_) fail(PCCL_ERR_PROTOCOL, "relay frame, but this transport has no NAT layer");
        nat_->on_relay_frame(c, f);
        return;
    }
    if (c->internal_) return;  // NAT plumbing carries no mesh traffic
    if (f.header.type == FrameType::heartbeat && f.header.sub == kKeepAlive) return;  // only there to be sent
    if (f.header.type == FrameType::heartbeat && f.header.sub == kRttProbe) {
        OutFrame echo;
        echo.header.type = FrameType::heartbeat;
        echo.header.sub = kRttEcho;
        echo.header.epoch = f.header.epoch;
        c->send(std::move(echo), true);
    } else if (f.header.type == FrameType::heartbeat && f.header.sub == kRttEcho) {
        const double rtt = now_s() - static_cast<double>(f.header.epoch) / 1e6;
        if (rtt >= 0 && rtt < 3600) {  // else not our clock: ignore
            const double old = c->rtt_s_.load();
            c->rtt_s_ = old < 0 ? rtt : 0.875 * old + 0.125 * rtt;  // smoothed like TCP's srtt
        }
    }
    handler_->on_frame(c, std::move(f));  // every frame is liveness
}

void TcpTransport::probe_rtts() {
    constexpr double kRttProbeS = 1.0;
    const double now = now_s();
    if (now < next_rtt_probe_) return;
    next_rtt_probe_ = now + kRttProbeS;
    std::vector<ConnPtr> live;
    {
        std::lock_guard<std::mutex> lk(mu_);
        for (const auto &kv : conns_)
            if (!kv.second->internal_ && kv.second->announced_) live.push_back(kv.second);
    }
    for (const auto &c : live) {
        if (c->state() != Connection::State::ready) continue;
        OutFrame f;
        f.header.type = FrameType::heartbeat;
        f.header.sub = kRttProbe;
        f.header.epoch = static_cast<uint64_t>(now_s() * 1e6);
        c->send(std::move(f), true);
    }
}

double TcpTransport::send_keepalives() {
    const double now = now_s();
    if (now < next_keepalive_) return next_keepalive_;
    // Nothing eligible: look again after the shortest period, so a stream
    // that goes idle gets its first record well within its RTO.
    double next = now + 0.05;
    std::vector<ConnPtr> live;
    {
        std::lock_guard<std::mutex> lk(mu_);
        for (const auto &kv : conns_)
            if (!kv.second->internal_ && !kv.second->raw_ && kv.second->announced_ && !kv.second->loopback_)
                live.push_back(kv.second);
    }
    for (const auto &c : live) {
        if (c->state() != Connection::State::ready) continue;
        {
            std::lock_guard<std::mutex> lk(c->wmu_);
            if (c->wclosed_ || c->last_data_s_ == 0 || now - c->last_data_s_ >= config_.options.keepalive_s) continue;
            if (c->keepalive_period_s_ == 0) c->keepalive_period_s_ = keepalive_period(c->fd_);
            const double due = c->last_write_s_ + c->keepalive_period_s_;
            if (now < due) {
                next = std::min(next, std::max(due, now + 0.005));
                continue;
            }
            if (!c->wqueue_.empty()) {  // not idle: a backlog drains through EPOLLOUT (a stalled one is no reason to spin)
                next = std::min(next, now + c->keepalive_period_s_);
                continue;
            }
        }
        OutFrame f;
        f.header.type = FrameType::heartbeat;
        f.header.sub = kKeepAlive;
        c->send(std::move(f));
        c->keepalive_period_s_ = keepalive_period(c->fd_);
        next = std::min(next, now + c->keepalive_period_s_);
    }
    next_keepalive_ = next;
    return next;
}

// ------------------------------------------------------------------ handshake
//
// Noise messages travel in `hello` frames (sub = message number) in the
// clear; their contents are Noise's. Payloads (msgpack):
//   message 1 (initiator): empty (its tag proves the run key)
//   message 2 (responder): {id, sig, inc, addrs, obs, enc, [lo]}
//   message 3 (initiator): {id, sig, inc, addrs, purpose, enc, [rev], [lo]}
// id: the sender's peer id (its Ed25519 public key); sig: its Ed25519
// signature over NoiseHandshake::static_key_statement(its static key); inc:
// its incarnation; addrs: its advertised multiaddrs; obs: where the
// responder saw the initiator (identify); purpose: what the connection is
// for; enc: whether the sender wants payloads encrypted; rev: a connection
// reversal this answers; lo: [local, peer] endpoints of the sender's socket,
// sent only when both are loopback and it allows the loopback fast path
// (tcp_transport.h). Then the responder sends `auth` (its first record,
// empty): the initiator is ready when it arrives. A refusal is a `reject`
// frame, sealed when the sender already holds record keys.

namespace {
constexpr size_t kMaxInboundPerPeer = 160;   // authenticated inbound connections from one peer id
const std::string kPrologue = "pccl/" + std::to_string(kProtocolVersion);
}  // namespace

void TcpTransport::start_handshake(const ConnPtr &c) {
    {
        // Back to the clear. Frames still queued under the old key (a
        // relay's "open") switch to the clear themselves (switch_tx).
        std::lock_guard<std::mutex> lk(c->wmu_);
        if (c->wqueue_.empty()) c->tx_.reset();
    }
    c->rx_.reset();
    c->rheader_got_ = c->rpayload_got_ = c->rtag_got_ = 0;
    c->rdecoded_ = false;
    c->noise_ = std::make_unique<NoiseHandshake>(
        c->inbound_ ? NoiseHandshake::Role::responder : NoiseHandshake::Role::initiator, config_.run_key, kPrologue);
    if (c->inbound_) return;  // the initiator speaks first
    OutFrame f;
    f.header.type = FrameType::hello;
    f.header.sub = 1;
    f.owned = c->noise_->write_message("");
    c->send(std::move(f));
}

std::string TcpTransport::identity_payload(const ConnPtr &c) const {
    std::vector<std::string> advertised;
    {
        std::lock_guard<std::mutex> lk(mu_);
        advertised = config_.advertised;
    }
    MsgValue m = hello_fields(config_.identity, c->noise_->local_static(), config_.incarnation, advertised,
                              config_.options.encrypt);
    // Loopback fast path (tcp_transport.h): our socket's endpoints, when
    // both are loopback and we allow it. A relayed link's socket reaches the
    // relay, not the peer: never.
    if (!config_.options.seal_loopback && !c->relayed_) {
        std::vector<std::string> lo = loopback_endpoints(c->fd_);
        if (!lo.empty()) m.as_map().emplace_back("lo", MsgValue::array({lo[0], lo[1]}));
    }
    if (c->inbound_) {
        m.as_map().emplace_back("obs", !c->relayed_ ? c->remote_endpoint_ : std::string());
    } else {
        m.as_map().emplace_back("purpose", c->purpose_);
        if (nat_) nat_->add_hello_fields(c, m);
    }
    return msgpack_encode(m);
}

void TcpTransport::send_reject(const ConnPtr &c, pccl_status_t st, const std::string &why) {
    OutFrame r;
    r.header.type = FrameType::reject;
    r.owned = msgpack_encode(MsgValue::map({{"reason", why}}));
    c->send(std::move(r));
    c->close(st, why);
}

// Checks the peer's identity proof and takes its hello fields. Throws
// Error(PCCL_ERR_AUTH_FAILED) when the proof fails, PROTOCOL when malformed.
void TcpTransport::accept_identity(const ConnPtr &c, const std::string &payload) {
    PeerHello hello = verify_hello(payload, c->noise_->remote_static());
    const MsgValue &m = hello.fields;
    const std::string &id = hello.id;
    c->remote_id_ = id;
    c->remote_incarnation_ = hello.incarnation;
    c->remote_addrs_ = std::move(hello.addrs);
    const bool they_encrypt = hello.encrypt;
    const bool encrypted = config_.options.encrypt || they_encrypt;
    // Loopback fast path: our own socket check, and the peer's authenticated
    // statement of the mirror of our endpoints (its local is our peer and its
    // peer our local). A claim alone, a claim about other endpoints, or
    // seal_loopback on either side keeps every payload sealed.
    bool clear = false;
    if (const MsgValue *lo = m.find("lo")) {
        if (lo->as_array().size() != 2) fail(PCCL_ERR_PROTOCOL, "peer sent a malformed loopback claim");
        const std::string &their_local = lo->as_array()[0].as_str(), &their_peer = lo->as_array()[1].as_str();
        const std::vector<std::string> ours =
            config_.options.seal_loopback || c->relayed_ ? std::vector<std::string>{} : loopback_endpoints(c->fd_);
        clear = !ours.empty() && their_local == ours[1] && their_peer == ours[0];
    }
    c->rx_encrypted_ = encrypted;
    c->rx_clear_data_ = clear;
    c->loopback_ = !c->relayed_ && !loopback_endpoints(c->fd_).empty();
    {
        std::lock_guard<std::mutex> lk(c->wmu_);
        c->tx_encrypted_ = encrypted;
        c->tx_clear_data_ = clear;
    }
    if (c->inbound_) {
        if (const MsgValue *p = m.find("purpose")) {
            if (p->as_str().size() > kMaxPurposeLength) fail(PCCL_ERR_PROTOCOL, "peer sent an oversized purpose");
            c->purpose_ = p->as_str();
        }
        if (nat_) {
            nat_->take_hello_fields(c, m);
            // Relay plumbing and reachability probes are the NAT layer's own.
            if (nat_->internal_purpose(c->purpose_)) c->internal_ = true;
        }
    } else if (!c->relayed_) {
        // Identify: the acceptor tells us the endpoint it saw us at.
        if (const MsgValue *o = m.find("obs"); o && !o->as_str().empty() && o->as_str().size() <= kMaxAddrLength) {
            if (nat_) nat_->on_observed(c, o->as_str());
        }
    }
}

void TcpTransport::handle_handshake(const ConnPtr &c, const Frame &f) {
    NoiseHandshake *hs = c->noise_.get();
    if (!hs || hs->done() || hs->our_turn() || f.header.sub != uint32_t(hs->next_message()))
        fail(PCCL_ERR_PROTOCOL, "handshake message out of order");
    std::string payload;
    try {
        payload = hs->read_message(f.data(), f.size());
    } catch (const Error &e) {
        if (e.status() != PCCL_ERR_AUTH_FAILED) throw;
        // Message 1 failed: the dialer does not hold our run key. It gets
        // this one line and nothing else.
        if (c->inbound_) return send_reject(c, PCCL_ERR_AUTH_FAILED, "authentication failed: run key mismatch");
        fail(PCCL_ERR_AUTH_FAILED, "authentication failed with the peer at " + c->remote_endpoint_ + ": " + e.what());
    }
    if (c->inbound_ && f.header.sub == 1) {
        c->proven_ = true;  // it holds the run key: the second budget
        enforce_unauthenticated_limits(c->source_ip_, true);
        OutFrame out;
        out.header.type = FrameType::hello;
        out.header.sub = 2;
        out.owned = hs->write_message(identity_payload(c));
        c->send(std::move(out));
        return;
    }
    try {
        accept_identity(c, payload);
    } catch (const Error &e) {
        if (c->inbound_) {  // we hold record keys now: the refusal is sealed
            std::lock_guard<std::mutex> lk(c->wmu_);
            c->tx_ = hs->take_sender();
        }
        if (c->inbound_) return send_reject(c, e.status(), e.what());
        throw;
    }
    const std::string &id = c->remote_id_;
    if (!c->inbound_) {  // message 2 read: check whom we reached, then answer
        if (!c->expected_id_.empty() && id != c->expected_id_)
            fail(PCCL_ERR_AUTH_FAILED, "dialed peer " + c->expected_id_ + " but reached " + id);
        if (id == config_.identity.peer_id)
            fail(PCCL_ERR_INVALID_ARGUMENT, "connected to ourselves (" + id + ")");
        OutFrame out;
        out.header.type = FrameType::hello;
        out.header.sub = 3;
        out.owned = hs->write_message(identity_payload(c));
        out.switch_tx = true;  // frames after message 3 are records
        out.next_tx = hs->take_sender();
        c->rx_ = hs->take_receiver();
        c->send(std::move(out));
        return;
    }
    // Responder, message 3 read: the initiator is authenticated.
    {
        std::lock_guard<std::mutex> lk(c->wmu_);
        c->tx_ = hs->take_sender();
    }
    c->rx_ = hs->take_receiver();
    if (id == config_.identity.peer_id)
        return send_reject(c, PCCL_ERR_INVALID_ARGUMENT, "connected to ourselves (" + id + ")");
    // Even a key holder gets a bounded number of connections: a mesh needs
    // a control link and `streams` (<= 64) data links per peer, plus a few
    // relay and probe links.
    size_t from_peer = 0;
    {
        std::lock_guard<std::mutex> lk(mu_);
        for (const auto &kv : conns_)
            from_peer += kv.second->inbound_ && kv.second->announced_ && kv.second->remote_id_ == id &&
                         kv.second->state() == Connection::State::ready;
    }
    if (from_peer >= kMaxInboundPerPeer)
        return send_reject(c, PCCL_ERR_IO, "too many connections from peer " + id);
    OutFrame confirm;
    confirm.header.type = FrameType::auth;
    c->send(std::move(confirm));
    become_ready(c);
}

void TcpTransport::handle_confirm(const ConnPtr &c) {
    if (c->inbound_ || !c->noise_ || !c->noise_->done() || !c->rx_)
        fail(PCCL_ERR_PROTOCOL, "handshake confirmation out of order");
    become_ready(c);
}

void TcpTransport::become_ready(const ConnPtr &c) {
    c->noise_.reset();
    {
        std::lock_guard<std::mutex> lk(c->smu_);
        if (c->state_ != Connection::State::handshaking) return;
        c->state_ = Connection::State::ready;
    }
    c->cv_.notify_all();
    c->deadline_ = 0;
    if (c->internal_) {
        if (nat_) nat_->on_internal_ready(c);
        return;
    }
    c->announced_ = true;
    handler_->on_ready(c);
    if (nat_) nat_->on_announced(c);
}

void TcpTransport::finalize(const ConnPtr &c) {
    {
        std::lock_guard<std::mutex> lk(c->wmu_);
        c->siblings_.clear();  // a closing link takes no more work
        c->flush_locked();     // best effort: a reject should reach the peer
        c->fail_queue_locked();
    }
    epoll_ctl(epfd_, EPOLL_CTL_DEL, c->fd_, nullptr);
    ::shutdown(c->fd_, SHUT_RDWR);
    if (nat_) nat_->on_finalize(c);
    if (c->announced_) handler_->on_closed(c);
}

void TcpTransport::expire_deadlines() {
    std::vector<ConnPtr> late;
    const double now = now_s();
    {
        std::lock_guard<std::mutex> lk(mu_);
        for (const auto &kv : conns_)
            if (kv.second->deadline_ > 0 && now > kv.second->deadline_) late.push_back(kv.second);
    }
    for (auto &c : late) {
        c->deadline_ = 0;
        c->close(PCCL_ERR_TIMEOUT, "connection to " + c->remote_endpoint_ + " timed out");
    }
    if (nat_) nat_->tick(now);
}

void TcpTransport::restart_handshake(const ConnPtr &c, bool inbound, bool relayed, const std::string &expected_id,
                                     const std::string &purpose, double timeout_s) {
    {
        std::lock_guard<std::mutex> lk(c->smu_);
        c->state_ = Connection::State::handshaking;
        c->relayed_ = relayed;
        c->via_ = relayed ? c->remote_id_ : std::string();
        c->internal_ = false;
        c->inbound_ = inbound;
        c->expected_id_ = expected_id;
        c->purpose_ = purpose;
    }
    c->remote_id_.clear();
    c->remote_addrs_.clear();
    c->deadline_ = now_s() + timeout_s;
    // The end-to-end handshake starts in the clear right after the relay's
    // last record ("open"): start_handshake drops both record keys (the
    // relay side of a "direct" open queued its "open" with a switch to the
    // clear).
    start_handshake(c);
}

void TcpTransport::set_raw(const ConnPtr &c) { c->raw_ = true; }

size_t Connection::queued_bytes() {
    std::lock_guard<std::mutex> lk(wmu_);
    return queued_;
}

void Connection::set_read_paused(bool paused) {
    std::lock_guard<std::mutex> lk(wmu_);
    if (read_paused_ == paused) return;
    read_paused_ = paused;
    want_write(want_out_);
}

}  // namespace pccl::net
