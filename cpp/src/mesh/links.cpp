#include "mesh/links.h"

#include <algorithm>
#include <chrono>

#include "common/clock.h"
#include "common/error.h"

namespace pccl::mesh {

Links::Links(uint32_t streams, Dial dial)
    : streams_(streams), dial_(std::move(dial)), want_(streams), other_want_(streams) {}

Links::~Links() { close(); }

void Links::add(const net::LinkPtr &c) {
    std::lock_guard<std::mutex> lk(mu_);
    if (!closing_) conns_[c->remote_id()].push_back(c);
}

void Links::remove(const net::LinkPtr &c) {
    std::lock_guard<std::mutex> lk(mu_);
    const std::string &id = c->remote_id();
    auto it = conns_.find(id);
    if (it != conns_.end()) {
        auto &v = it->second;
        v.erase(std::remove(v.begin(), v.end(), c), v.end());
        if (v.empty()) conns_.erase(it);
    }
    auto p = pool_.find(id);
    if (p != pool_.end()) {
        auto &v = p->second.out;
        v.erase(std::remove(v.begin(), v.end(), c), v.end());
    }
}

bool Links::connected(const std::string &peer) const {
    std::lock_guard<std::mutex> lk(mu_);
    return conns_.count(peer) > 0;
}

bool Links::connected_as(const std::string &peer, uint64_t inc) const {
    std::lock_guard<std::mutex> lk(mu_);
    auto it = conns_.find(peer);
    if (it == conns_.end()) return false;
    for (const auto &c : it->second)
        if (c->remote_incarnation() == inc && c->state() == net::Link::State::ready) return true;
    return false;
}

net::LinkPtr Links::ready_link(const std::string &peer) const {
    std::lock_guard<std::mutex> lk(mu_);
    auto it = conns_.find(peer);
    if (it != conns_.end())
        for (auto &c : it->second)
            if (c->state() == net::Link::State::ready) return c;
    return nullptr;
}

std::vector<std::string> Links::peers() const {
    std::lock_guard<std::mutex> lk(mu_);
    std::vector<std::string> out;
    for (const auto &kv : conns_) out.push_back(kv.first);
    return out;
}

bool Links::send_on(const net::LinkPtr &c, const MsgValue &m) {
    net::OutFrame f;
    f.header.type = net::FrameType::control;
    f.owned = msgpack_encode(m);
    return c->send(std::move(f));
}

bool Links::send_control(const std::string &peer, const MsgValue &m) {
    std::lock_guard<std::mutex> lk(mu_);
    auto it = conns_.find(peer);
    if (it == conns_.end()) return false;
    for (bool relayed : {false, true})
        for (auto &c : it->second) {
            if (c->relayed() != relayed || c->state() != net::Link::State::ready) continue;
            if (send_on(c, m)) return true;
        }
    return false;
}

void Links::heartbeat(const std::string &peer) {
    std::lock_guard<std::mutex> lk(mu_);
    auto it = conns_.find(peer);
    if (it == conns_.end() || it->second.empty()) return;
    net::OutFrame f;
    f.header.type = net::FrameType::heartbeat;
    auto direct = std::find_if(it->second.begin(), it->second.end(),
                               [](const net::LinkPtr &c) { return !c->relayed(); });
    (direct != it->second.end() ? *direct : it->second.front())->send(std::move(f));
}

std::vector<std::string> Links::relay_only() const {
    std::lock_guard<std::mutex> lk(mu_);
    std::vector<std::string> out;
    for (const auto &kv : conns_) {
        bool direct = false;
        for (const auto &c : kv.second) direct = direct || !c->relayed();
        if (!direct && !kv.second.empty()) out.push_back(kv.first);
    }
    return out;
}

std::map<std::string, double> Links::rtts() const {
    std::lock_guard<std::mutex> lk(mu_);
    std::map<std::string, double> out;
    for (const auto &kv : conns_)
        for (const auto &c : kv.second) {
            const double r = c->rtt_s();
            if (r < 0) continue;
            auto it = out.find(kv.first);
            if (it == out.end() || r < it->second) out[kv.first] = r;
        }
    return out;
}

void Links::close_dead(const std::string &peer, uint64_t inc, const std::string &why) {
    std::lock_guard<std::mutex> lk(mu_);
    auto it = conns_.find(peer);
    if (it != conns_.end()) {
        net::LinkPtr keep;
        for (auto &c : it->second)
            if (c->remote_incarnation() == inc && c->state() == net::Link::State::ready &&
                (!keep || (keep->purpose() == "data" && c->purpose() != "data")))
                keep = c;
        for (auto &c : it->second)
            if (c->remote_incarnation() == inc && c != keep) c->close(PCCL_ERR_PEER_LOST, "peer declared dead: " + why);
    }
    cv_.notify_all();
}

void Links::close_ids(const std::set<uint64_t> &ids, const std::string &why) {
    std::lock_guard<std::mutex> lk(mu_);
    for (auto &kv : conns_)
        for (auto &c : kv.second)
            if (ids.count(c->id())) c->close(PCCL_ERR_PEER_LOST, why);
}

void Links::retire(const std::string &peer, const MsgValue &commit, double at) {
    std::lock_guard<std::mutex> lk(mu_);
    auto it = conns_.find(peer);
    if (it == conns_.end()) return;
    for (auto &c : it->second) {
        if (c->state() == net::Link::State::ready && !commit.is_nil()) {
            net::OutFrame f;
            f.header.type = net::FrameType::control;
            f.owned = msgpack_encode(commit);
            c->send(std::move(f), true);  // ahead of state-transfer frames queued for it
        }
        retiring_.emplace_back(c, at);
    }
}

void Links::reap(double now) {
    std::lock_guard<std::mutex> lk(mu_);
    for (auto it = retiring_.begin(); it != retiring_.end();) {
        if (it->second > now) {
            ++it;
            continue;
        }
        it->first->close(PCCL_ERR_PEER_LOST, "removed from the run");
        it = retiring_.erase(it);
    }
}

// ---------------------------------------------------------------- the pool

void Links::start_locked(const Member &peer) {
    Pool &p = pool_[peer.id];
    if (p.dialing || closing_) return;
    p.out.erase(std::remove_if(p.out.begin(), p.out.end(),
                               [](const net::LinkPtr &c) { return c->state() != net::Link::State::ready; }),
                p.out.end());
    const uint32_t want = want_locked(peer.id);
    if (p.out.size() >= want) return;
    if (p.job.joinable()) p.job.join();  // the previous job ended (dialing is false): returns at once
    p.dialing = true;
    p.error = PCCL_OK;
    p.why.clear();
    p.job = std::thread([this, peer, n = want - p.out.size()] { run_job(peer, n); });
}

uint32_t Links::want_locked(const std::string &peer) const {
    return neighbours_.count(peer) ? want_ : other_want_;
}

void Links::run_job(Member peer, size_t want) {
    pccl_status_t error = PCCL_OK;
    std::string why;
    for (size_t i = 0; i < want; ++i) {
        net::LinkPtr c;
        try {
            c = dial_(peer, "data");
        } catch (const Error &e) {
            error = e.status();
            why = e.what();
            break;
        }
        std::lock_guard<std::mutex> lk(mu_);
        if (closing_) break;
        if (c->state() == net::Link::State::ready) pool_[peer.id].out.push_back(c);
    }
    std::lock_guard<std::mutex> lk(mu_);
    Pool &p = pool_[peer.id];
    p.dialing = false;
    p.error = error;
    p.why = why;
    cv_.notify_all();
}

void Links::install(const View &v, const std::string &self, bool one_host) {
    const int me = v.index_of(self);
    const size_t n = v.members.size();
    std::lock_guard<std::mutex> lk(mu_);
    want_ = one_host ? 1 : streams_;
    const uint32_t others = n > 3 ? uint32_t(n - 1) : 1;  // members, neighbours included: the direct op's fan-out
    other_want_ = std::max<uint32_t>(1, std::min(want_, kOtherStreamsTotal / others));
    neighbours_.clear();
    if (me < 0 || n < 2) return;
    neighbours_.insert(v.members[(size_t(me) + 1) % n].id);
    neighbours_.insert(v.members[(size_t(me) + n - 1) % n].id);
    start_locked(v.members[(size_t(me) + 1) % n]);
    start_locked(v.members[(size_t(me) + n - 1) % n]);
}

std::vector<net::LinkPtr> Links::data_links(const Member &peer, double deadline,
                                            const std::function<void()> &check) {
    bool asked = false;
    for (;;) {
        {
            std::unique_lock<std::mutex> lk(mu_);
            if (closing_) fail(PCCL_ERR_CLOSED, "communicator closed during the op");
            Pool &p = pool_[peer.id];
            auto ready = [&] {
                std::vector<net::LinkPtr> out;
                for (auto &c : p.out)
                    if (c->state() == net::Link::State::ready) out.push_back(c);
                return out;
            };
            std::vector<net::LinkPtr> out = ready();
            if (out.size() >= want_locked(peer.id)) return out;
            if (!p.dialing) {
                if (asked) {
                    if (!out.empty()) return out;
                    fail(p.error != PCCL_OK ? p.error : PCCL_ERR_PEER_LOST,
                         p.why.empty() ? "no connection to peer " + peer.id : p.why);
                }
                start_locked(peer);
                asked = true;
            }
            if (now_s() >= deadline) {
                if (!out.empty()) return out;
                fail(PCCL_ERR_PEER_LOST, "no data link to peer " + peer.id + " within the op timeout");
            }
            cv_.wait_for(lk, std::chrono::milliseconds(50));
        }
        check();
    }
}

void Links::notify() {
    std::lock_guard<std::mutex> lk(mu_);
    cv_.notify_all();
}

void Links::close() {
    std::vector<std::thread> jobs;
    {
        std::lock_guard<std::mutex> lk(mu_);
        closing_ = true;
        for (auto &kv : pool_)
            if (kv.second.job.joinable()) jobs.push_back(std::move(kv.second.job));
        cv_.notify_all();
    }
    for (auto &t : jobs) t.join();
    std::lock_guard<std::mutex> lk(mu_);
    conns_.clear();
    pool_.clear();
    retiring_.clear();
}

}  // namespace pccl::mesh
