#include "mesh/liveness.h"

#include <algorithm>
#include <chrono>

#include "common/clock.h"
#include "common/error.h"

namespace pccl::mesh {

Liveness::Liveness(double timeout_s, double heartbeat_timeout_s)
    : bound_(std::min(heartbeat_timeout_s, timeout_s)),
      beat_period_(std::max(0.02, std::min(1.0, bound_ / 4))),
      redial_period_(std::max(0.05, std::min(0.5, timeout_s / 8))) {
    last_tick_ = now_s();
}

Liveness::~Liveness() {
    stop();
    join();
}

void Liveness::start(Host *host) {
    host_ = host;
    last_tick_ = now_s();
    heartbeat_thread_ = std::thread([this] { heartbeat_loop(); });
    redial_thread_ = std::thread([this] { redial_loop(); });
}

void Liveness::stop() {
    {
        std::lock_guard<std::mutex> lk(mu_);
        stop_ = true;
        cv_.notify_all();
    }
    if (heartbeat_thread_.joinable()) heartbeat_thread_.join();
}

void Liveness::join() {
    if (redial_thread_.joinable()) redial_thread_.join();
}

void Liveness::heard(const std::string &id) {
    const double now = now_s();
    std::lock_guard<std::mutex> lk(mu_);
    last_heard_[id] = now;
}

void Liveness::reset(const std::vector<Member> &members) {
    const double now = now_s();
    std::lock_guard<std::mutex> lk(mu_);
    for (const auto &m : members) last_heard_[m.id] = now;
}

bool Liveness::resumed() const {
    std::lock_guard<std::mutex> lk(mu_);
    return now_s() - last_tick_ > bound_;
}

double Liveness::silence(const std::string &id) const {
    std::lock_guard<std::mutex> lk(mu_);
    auto it = last_heard_.find(id);
    return it == last_heard_.end() ? 0.0 : now_s() - it->second;
}

void Liveness::heartbeat_loop() {
    for (;;) {
        double now;
        {
            std::unique_lock<std::mutex> lk(mu_);
            cv_.wait_for(lk, std::chrono::duration<double>(beat_period_), [&] { return stop_; });
            if (stop_) return;
            now = now_s();
            if (now - last_tick_ > bound_) {
                // This thread did not run for longer than the bound: we were
                // frozen (SIGSTOP, swapping), not the peers. Give them a fresh
                // bound; what arrived meanwhile is read first.
                for (auto &kv : last_heard_) kv.second = std::max(kv.second, now);
            }
            last_tick_ = now;
        }
        host_->liveness_tick(now);
        const std::vector<std::string> ids = host_->watched();
        for (const auto &id : ids) host_->beat(id);
        std::vector<std::pair<std::string, std::string>> silent;
        {
            std::lock_guard<std::mutex> lk(mu_);
            for (const auto &id : ids) {
                auto it = last_heard_.find(id);
                const double heard = it == last_heard_.end() ? now : it->second;
                if (now - heard > bound_) silent.emplace_back(id, "silent for " + std::to_string(now - heard) + " s");
            }
        }
        if (!silent.empty()) host_->silent(silent);
    }
}

void Liveness::redial_loop() {
    for (;;) {
        {
            std::unique_lock<std::mutex> lk(mu_);
            cv_.wait_for(lk, std::chrono::duration<double>(redial_period_), [&] { return stop_; });
            if (stop_) return;
        }
        for (const auto &m : host_->unlinked()) {
            {
                std::lock_guard<std::mutex> lk(mu_);
                if (stop_) return;
            }
            try {
                host_->relink(m);
            } catch (const Error &) {
                // Still unreachable: its heartbeat timeout decides.
            }
        }
    }
}

}  // namespace pccl::mesh
