#include "net/transport.h"

#include <chrono>

#include "common/error.h"
#include "net/memory_transport.h"
#include "net/tcp_transport.h"

namespace pccl::net {

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

// ----------------------------------------------------------------------- Link

Link::State Link::state() const {
    std::lock_guard<std::mutex> lk(smu_);
    return state_;
}

pccl_status_t Link::close_status() const {
    std::lock_guard<std::mutex> lk(smu_);
    return close_status_;
}

std::string Link::close_reason() const {
    std::lock_guard<std::mutex> lk(smu_);
    return close_reason_;
}

bool Link::mark_closed(pccl_status_t status, const std::string &reason) {
    {
        std::lock_guard<std::mutex> lk(smu_);
        if (state_ == State::closed) return false;
        state_ = State::closed;
        close_status_ = status;
        close_reason_ = reason;
    }
    cv_.notify_all();
    return true;
}

bool Link::send_striped(const std::vector<LinkPtr> &links, OutFrame frame) {
    if (links.empty()) {
        if (frame.tracker) {
            frame.tracker->add();
            frame.tracker->done(false);
        }
        return false;
    }
    return links.front()->send_group(links, std::move(frame));
}

bool Link::send_group(const std::vector<LinkPtr> &links, OutFrame frame) {
    for (const auto &l : links)
        if (l->state() != State::closed) return l->send(std::move(frame));
    return links.front()->send(std::move(frame));  // all closed: send() reports the failure
}

// ------------------------------------------------------------------ factory

std::unique_ptr<Transport> make_transport(TransportConfig config, TransportHandler *handler) {
    size_t memory = 0;
    for (const auto &l : config.listen) memory += Multiaddr::parse(l).memory_id().has_value();
    if (memory == 0) return std::make_unique<TcpTransport>(std::move(config), handler);
    if (memory != config.listen.size())
        fail(PCCL_ERR_INVALID_ARGUMENT, "listen addresses mix /memory/ and network addresses");
    return std::make_unique<MemoryTransport>(std::move(config), handler);
}

}  // namespace pccl::net
