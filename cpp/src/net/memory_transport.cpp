#include "net/memory_transport.h"

#include <algorithm>
#include <cstdio>
#include <condition_variable>
#include <cstring>
#include <deque>
#include <limits>
#include <map>
#include <mutex>
#include <set>
#include <thread>

#include "common/clock.h"
#include "common/error.h"
#include "common/msgpack.h"
#include "net/hello.h"
#include "net/noise.h"

namespace pccl::net {

namespace {
const std::string kPrologue = "pccl/" + std::to_string(kProtocolVersion);  // as the TCP handshake's
}  // namespace

class MemoryLink;

// Something for a transport's delivery thread: a link became ready, a frame
// arrived, a link closed here (local) or at the other end.
struct MemoryEvent {
    enum class Kind { ready, frame, closed_here, closed_there };
    Kind kind = Kind::frame;
    std::shared_ptr<MemoryLink> link;  // the receiving transport's end
    std::string from;                  // sending peer id (the path a partition or freeze holds)
    double due = 0;                    // now_s() time it may be delivered
    bool local = false;                // ready / closed_here: not held by the path
    uint8_t header[kHeaderSize] = {};
    BufferPool::Ptr payload;
    size_t length = 0;
    pccl_status_t status = PCCL_OK;  // closed_there
    std::string reason;
};

// A transport's state that links and the registry reach. Fields are
// guarded by the registry's mutex (MemoryNet::mu) unless noted.
struct MemoryCore {
    TransportConfig config;  // advertised changes (set_advertised); the rest is immutable
    TransportHandler *handler = nullptr;
    std::vector<uint64_t> bound;  // our memory ids
    std::deque<MemoryEvent> inbox;
    std::condition_variable inbox_cv;  // the delivery thread waits here (with MemoryNet::mu)
    std::map<uint64_t, std::weak_ptr<MemoryLink>> links;
    uint64_t next_link_id = 1;
    // abort_dials(): peer id -> (how many times, why); a dial waiting for a
    // path to that peer fails when the count moved since it started.
    std::map<std::string, std::pair<uint64_t, std::string>> aborted;
    bool stopping = false;
    std::thread thread;  // started by the constructor, joined by shutdown()
    const std::string &peer_id() const { return config.identity.peer_id; }
};

// The registry and the injected faults of the whole process.
struct MemoryNet {
    std::mutex mu;  // guards everything here and every MemoryCore's fields
    std::condition_variable changed;  // a path opened (dials wait on it)
    uint64_t next_free = 1;
    std::map<uint64_t, std::weak_ptr<MemoryCore>> bound;  // memory id -> listener
    std::vector<std::weak_ptr<MemoryCore>> cores;         // every live transport
    std::map<std::pair<std::string, std::string>, double> delay;  // (from, to) -> seconds
    std::map<std::string, size_t> group;                          // partition group of a peer
    std::set<std::string> frozen, dead;

    bool path_open_locked(const std::string &a, const std::string &b) const {
        if (frozen.count(a) || frozen.count(b)) return false;
        auto x = group.find(a), y = group.find(b);
        return x == group.end() || y == group.end() || x->second == y->second;
    }
    double delay_locked(const std::string &from, const std::string &to) const {
        auto it = delay.find({from, to});
        return it == delay.end() ? 0.0 : it->second;
    }
    std::vector<std::shared_ptr<MemoryCore>> cores_locked() {
        std::vector<std::shared_ptr<MemoryCore>> out;
        cores.erase(std::remove_if(cores.begin(), cores.end(), [&](const std::weak_ptr<MemoryCore> &w) {
                        auto c = w.lock();
                        if (c) out.push_back(c);
                        return !c;
                    }),
                    cores.end());
        return out;
    }
    void wake_all_locked() {
        for (auto &c : cores_locked()) c->inbox_cv.notify_all();
        changed.notify_all();
    }
};

MemoryNet &memory_net() {
    static MemoryNet *net = new MemoryNet;  // never destroyed: transports may outlive static destructors
    return *net;
}

void push_locked(MemoryCore &core, MemoryEvent ev) {
    core.inbox.push_back(std::move(ev));
    core.inbox_cv.notify_all();
}

class MemoryLink final : public Link, public std::enable_shared_from_this<MemoryLink> {
public:
    MemoryLink(std::weak_ptr<MemoryCore> owner, std::string self_id, uint64_t id, bool inbound, std::string endpoint)
        : Link(id, inbound, std::move(endpoint)), owner_(std::move(owner)), self_id_(std::move(self_id)) {}

    bool send(OutFrame f, bool) override {
        if (f.borrowed == nullptr) f.header.length = static_cast<uint32_t>(f.owned.size());
        if (f.tracker) f.tracker->add();
        MemoryEvent ev;
        ev.kind = MemoryEvent::Kind::frame;
        ev.from = self_id_;
        ev.length = f.header.length;
        encode_header(f.header, ev.header);
        if (ev.length) {
            ev.payload = BufferPool::instance().get(ev.length);
            std::memcpy(ev.payload.get(), f.borrowed ? f.borrowed : reinterpret_cast<const uint8_t *>(f.owned.data()),
                        ev.length);
        }
        bool ok = false;
        {
            MemoryNet &net = memory_net();
            std::lock_guard<std::mutex> lk(net.mu);
            ok = enqueue_there_locked(net, std::move(ev));
        }
        if (f.tracker) f.tracker->done(ok);
        return ok;
    }

    // The round trip of the injected one-way delays, both ways (what a probe
    // would measure); < 0 while none is injected (nothing to report: memory
    // links have no round trip to speak of, as a transport that does not probe).
    double rtt_s() const override {
        MemoryNet &net = memory_net();
        std::lock_guard<std::mutex> lk(net.mu);
        return rtt_locked(net);
    }
    double rtt_locked(const MemoryNet &net) const {
        if (state() != State::ready) return -1;
        const double rtt = net.delay_locked(self_id_, remote_id_) + net.delay_locked(remote_id_, self_id_);
        return rtt > 0 ? rtt : -1;
    }

    void close(pccl_status_t status, const std::string &reason) override {
        MemoryNet &net = memory_net();
        std::lock_guard<std::mutex> lk(net.mu);
        close_locked(net, status, reason, PCCL_ERR_PEER_LOST,
                     "peer " + self_id_ + " closed the connection");
    }

    // MemoryNet::mu held. Closes this end (`status`, `reason`) and tells the
    // other end, in order after the frames already sent (`there_*`).
    void close_locked(MemoryNet &net, pccl_status_t status, const std::string &reason, pccl_status_t there_status,
                      const std::string &there_reason) {
        if (!mark_closed(status, reason)) return;
        if (auto core = owner_.lock()) {
            MemoryEvent ev;
            ev.kind = MemoryEvent::Kind::closed_here;
            ev.link = shared_from_this();
            ev.local = true;
            push_locked(*core, std::move(ev));
        }
        MemoryEvent ev;
        ev.kind = MemoryEvent::Kind::closed_there;
        ev.from = self_id_;
        ev.status = there_status;
        ev.reason = there_reason;
        force_enqueue_there_locked(net, std::move(ev));
    }

    // Set once, under MemoryNet::mu, before either end is ready.
    void connect_locked(const std::shared_ptr<MemoryLink> &peer, const std::shared_ptr<MemoryCore> &peer_owner,
                        const PeerHello &hello, const std::string &purpose) {
        peer_ = peer;
        peer_owner_ = peer_owner;
        remote_id_ = hello.id;
        remote_incarnation_ = hello.incarnation;
        remote_addrs_ = hello.addrs;
        purpose_ = purpose;
        std::lock_guard<std::mutex> lk(smu_);
        state_ = State::ready;
    }

    // Test-only (memnet::inject): queues raw frame bytes at the other end.
    bool inject_locked(MemoryNet &net, const std::string &bytes) {
        MemoryEvent ev;
        ev.kind = MemoryEvent::Kind::frame;
        ev.from = self_id_;
        std::memcpy(ev.header, bytes.data(), std::min(bytes.size(), kHeaderSize));  // short: zeros, a bad magic
        ev.length = bytes.size() > kHeaderSize ? bytes.size() - kHeaderSize : 0;
        if (ev.length) {
            ev.payload = BufferPool::instance().get(ev.length);
            std::memcpy(ev.payload.get(), bytes.data() + kHeaderSize, ev.length);
        }
        return enqueue_there_locked(net, std::move(ev));
    }

    // Delivery thread only.
    bool announced = false;
    bool reported = false;  // on_closed ran

private:
    // MemoryNet::mu held: queues `ev` at the other end unless this end is
    // closed or its peer is gone or dead.
    bool enqueue_there_locked(MemoryNet &net, MemoryEvent ev) {
        if (state() == State::closed || net.dead.count(self_id_)) return false;
        return force_enqueue_there_locked(net, std::move(ev));
    }
    bool force_enqueue_there_locked(MemoryNet &net, MemoryEvent ev) {
        auto peer = peer_.lock();
        auto core = peer_owner_.lock();
        if (!peer || !core || core->stopping) return false;
        // FIFO per link: never due before the frame sent ahead of it.
        ev.due = std::max(now_s() + net.delay_locked(self_id_, remote_id_), last_due_);
        last_due_ = ev.due;
        ev.link = std::move(peer);
        push_locked(*core, std::move(ev));
        return true;
    }

    std::weak_ptr<MemoryCore> owner_;  // our transport (local events)
    std::string self_id_;              // our peer id
    std::weak_ptr<MemoryLink> peer_;   // the other end
    std::weak_ptr<MemoryCore> peer_owner_;
    double last_due_ = 0;  // MemoryNet::mu
};

namespace {

// Runs one event on the delivery thread (no lock held).
void deliver(MemoryCore &core, MemoryEvent &ev) {
    MemoryLink &link = *ev.link;
    switch (ev.kind) {
        case MemoryEvent::Kind::ready:
            if (link.state() != Link::State::ready) return;  // closed before it was announced
            link.announced = true;
            core.handler->on_ready(ev.link);
            return;
        case MemoryEvent::Kind::frame: {
            if (!link.announced || link.reported || link.state() != Link::State::ready) return;
            Frame f;
            // The same checks as bytes from a socket: a bad header closes the link.
            f.header = decode_header(ev.header, kMaxPayload);
            if (f.header.length != ev.length) fail(PCCL_ERR_PROTOCOL, "frame length does not match its payload");
            // After the handshake, as over TCP; relay frames have no meaning here.
            switch (f.header.type) {
                case FrameType::hello:
                case FrameType::auth: fail(PCCL_ERR_PROTOCOL, "handshake frame after the handshake");
                case FrameType::reject: fail(PCCL_ERR_PROTOCOL, "peer sent a reject after the handshake");
                case FrameType::relay: fail(PCCL_ERR_PROTOCOL, "relay frame on a memory link");
                default: break;
            }
            uint8_t *target = nullptr;
            if (f.header.type == FrameType::data && f.header.length)
                target = core.handler->payload_target(ev.link, f.header);
            if (target) {
                std::memcpy(target, ev.payload.get(), ev.length);
                f.in_place = true;
            } else {
                f.payload = std::move(ev.payload);
            }
            core.handler->on_frame(ev.link, std::move(f));
            return;
        }
        case MemoryEvent::Kind::closed_there: {
            {
                MemoryNet &net = memory_net();
                std::lock_guard<std::mutex> lk(net.mu);
                link.close_locked(net, ev.status, ev.reason, ev.status, ev.reason);
            }
            [[fallthrough]];
        }
        case MemoryEvent::Kind::closed_here:
            if (link.announced && !link.reported) {
                link.reported = true;
                core.handler->on_closed(ev.link);
            }
            return;
    }
}

void delivery_loop(MemoryCore *core) {
    MemoryNet &net = memory_net();
    std::unique_lock<std::mutex> lk(net.mu);
    while (!core->stopping) {
        const double now = now_s();
        double next = std::numeric_limits<double>::infinity();
        const bool frozen = net.frozen.count(core->peer_id()) > 0;
        std::set<const MemoryLink *> blocked;  // links whose oldest frame waits: later ones wait too
        auto pick = core->inbox.end();
        for (auto it = core->inbox.begin(); it != core->inbox.end() && !frozen; ++it) {
            if (it->local) {
                pick = it;
                break;
            }
            if (blocked.count(it->link.get())) continue;
            const bool open = net.path_open_locked(it->from, core->peer_id());
            if (open && it->due <= now) {
                pick = it;
                break;
            }
            if (open) next = std::min(next, it->due);
            blocked.insert(it->link.get());
        }
        if (pick == core->inbox.end()) {
            if (next == std::numeric_limits<double>::infinity())
                core->inbox_cv.wait(lk);
            else
                core->inbox_cv.wait_for(lk, std::chrono::duration<double>(next - now));
            continue;
        }
        MemoryEvent ev = std::move(*pick);
        core->inbox.erase(pick);
        lk.unlock();
        try {
            deliver(*core, ev);
        } catch (const std::exception &e) {
            // Malformed input or a handler that refused it: that link only.
            ev.link->close(PCCL_ERR_PROTOCOL, e.what());
        }
        ev = MemoryEvent();  // drop the link reference without the lock
        lk.lock();
    }
}

}  // namespace

// ------------------------------------------------------------ MemoryTransport

MemoryTransport::MemoryTransport(TransportConfig config, TransportHandler *handler)
    : core_(std::make_shared<MemoryCore>()) {
    core_->config = std::move(config);
    core_->handler = handler;
    std::vector<uint64_t> wanted;
    for (const auto &l : core_->config.listen) {
        auto id = Multiaddr::parse(l).memory_id();
        if (!id) fail(PCCL_ERR_INVALID_ARGUMENT, "the memory transport listens only on /memory/ addresses, not " + l);
        wanted.push_back(*id);
    }
    {
        MemoryNet &net = memory_net();
        std::lock_guard<std::mutex> lk(net.mu);
        for (uint64_t id : wanted) {
            if (id == 0) {
                while (net.bound.count(net.next_free) && !net.bound[net.next_free].expired()) ++net.next_free;
                id = net.next_free++;
            } else if (auto it = net.bound.find(id); it != net.bound.end() && !it->second.expired()) {
                for (uint64_t b : core_->bound) net.bound.erase(b);
                fail(PCCL_ERR_IO, "cannot listen on /memory/" + std::to_string(id) + ": address in use");
            }
            net.bound[id] = core_;
            core_->bound.push_back(id);
        }
        net.cores.push_back(core_);
    }
    MemoryCore *core = core_.get();
    core_->thread = std::thread([core] { delivery_loop(core); });
}

MemoryTransport::~MemoryTransport() { shutdown(); }

std::vector<Multiaddr> MemoryTransport::listen_addrs() const {
    MemoryNet &net = memory_net();
    std::lock_guard<std::mutex> lk(net.mu);
    std::vector<Multiaddr> out;
    for (uint64_t id : core_->bound) out.push_back(Multiaddr::parse("/memory/" + std::to_string(id)));
    return out;
}

void MemoryTransport::set_advertised(std::vector<std::string> addrs) {
    MemoryNet &net = memory_net();
    std::lock_guard<std::mutex> lk(net.mu);
    core_->config.advertised = std::move(addrs);
}

std::vector<std::string> MemoryTransport::connection_lines() const {
    MemoryNet &net = memory_net();
    std::lock_guard<std::mutex> lk(net.mu);
    std::vector<std::string> out;
    for (const auto &kv : core_->links) {
        auto l = kv.second.lock();
        if (!l || l->state() != Link::State::ready) continue;
        char rtt_ms[32] = "-";
        const double rtt = l->rtt_locked(net);
        if (rtt >= 0) std::snprintf(rtt_ms, sizeof(rtt_ms), "%.3f", rtt * 1e3);
        out.push_back(l->remote_id() + " direct - " + l->remote_endpoint() + " " + rtt_ms + " " + l->purpose());
    }
    return out;
}

LinkPtr MemoryTransport::dial(const Multiaddr &addr, double timeout_s, const std::string &purpose) {
    const auto mid = addr.memory_id();
    if (!mid)
        fail(PCCL_ERR_INVALID_ARGUMENT,
             "cannot dial '" + addr.to_string() + "': the memory transport dials only /memory/ addresses");
    if (purpose.size() > kMaxPurposeLength) fail(PCCL_ERR_INVALID_ARGUMENT, "purpose too long");
    const std::string where = addr.to_string();
    const std::string &self = core_->peer_id();
    MemoryNet &net = memory_net();
    std::shared_ptr<MemoryCore> acc;
    std::vector<std::string> acc_advertised, our_advertised;
    {
        // Like a SYN: refused at once when nobody listens, unanswered (a
        // timeout) while a partition or a freeze is in the way.
        std::unique_lock<std::mutex> lk(net.mu);
        const double deadline = now_s() + timeout_s;
        const std::string want = addr.peer_id().value_or("");
        const uint64_t aborts = core_->aborted[want].first;
        for (;;) {
            if (core_->stopping) fail(PCCL_ERR_CLOSED, "communicator closed");
            if (auto &ab = core_->aborted[want]; ab.first != aborts) fail(PCCL_ERR_PEER_LOST, ab.second);
            if (net.dead.count(self)) fail(PCCL_ERR_IO, "cannot connect to " + where + ": this peer is dead");
            auto it = net.bound.find(*mid);
            acc = it == net.bound.end() ? nullptr : it->second.lock();
            if (!acc || acc->stopping || net.dead.count(acc->peer_id()))
                fail(PCCL_ERR_IO, "cannot connect to " + where + ": connection refused");
            if (net.path_open_locked(self, acc->peer_id())) break;
            const double left = deadline - now_s();
            if (left <= 0)
                fail(PCCL_ERR_TIMEOUT,
                     "connecting to " + where + " timed out after " + std::to_string(timeout_s) + " s");
            net.changed.wait_for(lk, std::chrono::duration<double>(left));
        }
        acc_advertised = acc->config.advertised;
        our_advertised = core_->config.advertised;
    }
    // The Noise handshake, both roles on this thread: each side uses only
    // its own keys and run key, exactly as over TCP.
    NoiseHandshake ini(NoiseHandshake::Role::initiator, core_->config.run_key, kPrologue);
    NoiseHandshake res(NoiseHandshake::Role::responder, acc->config.run_key, kPrologue);
    const std::string m1 = ini.write_message("");
    try {
        res.read_message(reinterpret_cast<const uint8_t *>(m1.data()), m1.size());
    } catch (const Error &e) {
        if (e.status() != PCCL_ERR_AUTH_FAILED) throw;
        fail(PCCL_ERR_AUTH_FAILED,
             "peer at " + where + " rejected the handshake: authentication failed: run key mismatch");
    }
    const std::string m2 = res.write_message(msgpack_encode(
        hello_fields(acc->config.identity, res.local_static(), acc->config.incarnation, acc_advertised, false)));
    const PeerHello theirs =
        verify_hello(ini.read_message(reinterpret_cast<const uint8_t *>(m2.data()), m2.size()), ini.remote_static());
    if (auto want = addr.peer_id(); want && *want != theirs.id)
        fail(PCCL_ERR_AUTH_FAILED, "dialed peer " + *want + " but reached " + theirs.id);
    if (theirs.id == self) fail(PCCL_ERR_INVALID_ARGUMENT, "connected to ourselves (" + self + ")");
    MsgValue mine = hello_fields(core_->config.identity, ini.local_static(), core_->config.incarnation,
                                 our_advertised, false);
    mine.as_map().emplace_back("purpose", purpose);
    const std::string m3 = ini.write_message(msgpack_encode(mine));
    const PeerHello ours =
        verify_hello(res.read_message(reinterpret_cast<const uint8_t *>(m3.data()), m3.size()), res.remote_static());

    std::lock_guard<std::mutex> lk(net.mu);
    if (core_->stopping) fail(PCCL_ERR_CLOSED, "communicator closed");
    if (acc->stopping || net.dead.count(acc->peer_id()))
        fail(PCCL_ERR_IO, "cannot connect to " + where + ": the peer went away during the handshake");
    const std::string our_endpoint = "memory:" + (core_->bound.empty() ? std::string("?") : std::to_string(core_->bound[0]));
    auto a = std::make_shared<MemoryLink>(core_, self, core_->next_link_id++, false, "memory:" + std::to_string(*mid));
    auto b = std::make_shared<MemoryLink>(acc, acc->peer_id(), acc->next_link_id++, true, our_endpoint);
    a->connect_locked(b, acc, theirs, purpose);
    b->connect_locked(a, core_, ours, purpose);
    core_->links[a->id()] = a;
    acc->links[b->id()] = b;
    // Both ready events before any frame: the acceptor may send as soon as
    // its on_ready runs, and our on_ready must come first here.
    for (auto &[core, link] : {std::pair{core_, a}, std::pair{acc, b}}) {
        MemoryEvent ev;
        ev.kind = MemoryEvent::Kind::ready;
        ev.link = link;
        ev.local = true;
        push_locked(*core, std::move(ev));
    }
    return a;
}

void MemoryTransport::abort_dials(const std::string &peer_id, const std::string &why) {
    // Only a dial waiting for a path can be in progress: the handshake
    // itself does not wait.
    MemoryNet &net = memory_net();
    std::lock_guard<std::mutex> lk(net.mu);
    auto &ab = core_->aborted[peer_id];
    ++ab.first;
    ab.second = why;
    net.changed.notify_all();
}

void MemoryTransport::shutdown() {
    MemoryNet &net = memory_net();
    {
        std::lock_guard<std::mutex> lk(net.mu);
        if (core_->stopping) return;
        core_->stopping = true;
        for (uint64_t id : core_->bound) net.bound.erase(id);
        core_->inbox_cv.notify_all();
        net.changed.notify_all();
    }
    if (core_->thread.joinable()) core_->thread.join();
    // As over TCP: the handler hears nothing more; the other ends see the links close.
    std::lock_guard<std::mutex> lk(net.mu);
    for (auto &kv : core_->links)
        if (auto l = kv.second.lock())
            l->close_locked(net, PCCL_ERR_CLOSED, "communicator closed", PCCL_ERR_PEER_LOST,
                            "peer " + core_->peer_id() + " closed the connection");
    core_->links.clear();
    core_->inbox.clear();
}

// --------------------------------------------------------------------- memnet

namespace memnet {

void set_delay(const std::string &from, const std::string &to, double seconds) {
    if (!(seconds >= 0)) fail(PCCL_ERR_INVALID_ARGUMENT, "delay must be >= 0");
    MemoryNet &net = memory_net();
    std::lock_guard<std::mutex> lk(net.mu);
    if (seconds == 0)
        net.delay.erase({from, to});
    else
        net.delay[{from, to}] = seconds;
}

size_t drop_links(const std::string &a, const std::string &b) {
    MemoryNet &net = memory_net();
    std::lock_guard<std::mutex> lk(net.mu);
    size_t n = 0;
    for (auto &core : net.cores_locked()) {
        if (core->peer_id() != a) continue;
        for (auto &kv : core->links) {
            auto l = kv.second.lock();
            if (!l || l->remote_id() != b || l->state() == Link::State::closed) continue;
            l->close_locked(net, PCCL_ERR_IO, "connection to " + b + " reset (injected)", PCCL_ERR_IO,
                            "connection to " + a + " reset (injected)");
            ++n;
        }
    }
    return n;
}

void partition(const std::vector<std::vector<std::string>> &groups) {
    MemoryNet &net = memory_net();
    std::lock_guard<std::mutex> lk(net.mu);
    net.group.clear();
    for (size_t g = 0; g < groups.size(); ++g)
        for (const auto &p : groups[g]) net.group[p] = g;
    net.wake_all_locked();
}

void heal() {
    MemoryNet &net = memory_net();
    std::lock_guard<std::mutex> lk(net.mu);
    net.group.clear();
    net.wake_all_locked();
}

void kill(const std::string &peer) {
    MemoryNet &net = memory_net();
    std::lock_guard<std::mutex> lk(net.mu);
    net.dead.insert(peer);
    net.frozen.erase(peer);
    for (auto &core : net.cores_locked()) {
        if (core->peer_id() != peer) continue;
        for (uint64_t id : core->bound) net.bound.erase(id);
        for (auto &kv : core->links)
            if (auto l = kv.second.lock())
                l->close_locked(net, PCCL_ERR_PEER_LOST, "this peer was killed (injected)", PCCL_ERR_PEER_LOST,
                                "connection reset by peer " + peer);
    }
    net.wake_all_locked();
}

void freeze(const std::string &peer, bool frozen) {
    MemoryNet &net = memory_net();
    std::lock_guard<std::mutex> lk(net.mu);
    if (frozen)
        net.frozen.insert(peer);
    else
        net.frozen.erase(peer);
    net.wake_all_locked();
}

bool inject(const std::string &from, const std::string &to, const std::string &bytes) {
    MemoryNet &net = memory_net();
    std::lock_guard<std::mutex> lk(net.mu);
    for (auto &core : net.cores_locked()) {
        if (core->peer_id() != from) continue;
        for (auto &kv : core->links) {
            auto l = kv.second.lock();
            if (l && l->remote_id() == to && l->state() == Link::State::ready && l->inject_locked(net, bytes))
                return true;
        }
    }
    return false;
}

void reset() {
    MemoryNet &net = memory_net();
    std::lock_guard<std::mutex> lk(net.mu);
    net.delay.clear();
    net.group.clear();
    net.frozen.clear();
    net.wake_all_locked();
}

}  // namespace memnet

}  // namespace pccl::net
