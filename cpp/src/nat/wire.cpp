#include "nat/wire.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <unistd.h>

#include <cstdlib>
#include <cstring>

#include "common/error.h"

namespace pccl::nat {

void send_relay(const ConnPtr &c, const RelayMsg &m) {
    net::OutFrame f;
    f.header.type = net::FrameType::relay;
    f.owned = encode_relay(m);
    c->send(std::move(f));
}

void refuse(const ConnPtr &c, const std::string &why) {
    send_relay(c, RelayRefusal{why});
    c->close(PCCL_ERR_IO, why);
}

bool parse_endpoint(const std::string &ep, sockaddr_storage &ss, socklen_t &len) {
    auto colon = ep.rfind(':');
    if (colon == std::string::npos) return false;
    std::memset(&ss, 0, sizeof(ss));
    auto *a = reinterpret_cast<sockaddr_in *>(&ss);
    a->sin_family = AF_INET;
    if (inet_pton(AF_INET, ep.substr(0, colon).c_str(), &a->sin_addr) != 1) return false;
    long port = std::strtol(ep.c_str() + colon + 1, nullptr, 10);
    if (port <= 0 || port > 65535) return false;
    a->sin_port = htons(static_cast<uint16_t>(port));
    len = sizeof(sockaddr_in);
    return true;
}

bool ip4_target(const std::string &multiaddr, sockaddr_storage &ss, socklen_t &len) {
    std::optional<Multiaddr::TcpTarget> target;
    try {
        target = Multiaddr::parse(multiaddr).tcp_target();
    } catch (const Error &) {
        return false;
    }
    if (!target || target->is_dns || target->family != AF_INET) return false;
    return parse_endpoint(target->host + ":" + std::to_string(target->port), ss, len);
}

bool ip4_peer(const ConnPtr &c, sockaddr_storage &ss, socklen_t &len) {
    len = sizeof(ss);
    return getpeername(c->fd(), reinterpret_cast<sockaddr *>(&ss), &len) == 0 && ss.ss_family == AF_INET;
}

int bound_socket(uint16_t &port) {
    int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) return -1;
    int one = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof(one));
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_port = htons(port);
    a.sin_addr.s_addr = htonl(INADDR_ANY);
    socklen_t len = sizeof(a);
    if (::bind(fd, reinterpret_cast<sockaddr *>(&a), sizeof(a)) < 0 ||
        getsockname(fd, reinterpret_cast<sockaddr *>(&a), &len) < 0) {
        ::close(fd);
        return -1;
    }
    port = ntohs(a.sin_port);
    return fd;
}

uint16_t local_port(int fd) {
    sockaddr_in a{};
    socklen_t len = sizeof(a);
    return getsockname(fd, reinterpret_cast<sockaddr *>(&a), &len) == 0 ? ntohs(a.sin_port) : 0;
}

}  // namespace pccl::nat
