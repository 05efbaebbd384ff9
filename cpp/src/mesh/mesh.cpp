#include "mesh/mesh.h"

#include <algorithm>
#include <cstdlib>
#include <chrono>
#ifdef __GLIBC__
#include <malloc.h>
#endif

#include "common/clock.h"
#include "common/crypto.h"
#include "common/error.h"
#include "common/log.h"
#include "net/peer_id.h"

namespace pccl::mesh {

namespace {

// A member record; with `type`, a control message carrying one ("join", "pending").
MsgValue member_to_msg(const Member &m, const char *type = nullptr) {
    std::vector<MsgValue> addrs(m.addrs.begin(), m.addrs.end());
    MsgValue out = MsgValue::map({{"id", m.id}, {"inc", m.incarnation}, {"addrs", MsgValue::array(std::move(addrs))}});
    if (m.addrs_version) out.as_map().emplace_back("av", m.addrs_version);
    if (!m.sig.empty()) out.as_map().emplace_back("rsig", MsgValue::binary(m.sig));
    if (type) out.as_map().insert(out.as_map().begin(), {MsgValue("t"), MsgValue(type)});
    return out;
}

// What a peer signs of its own record: a context string (a signature made for
// one purpose is never valid for another) and the fields that travel.
std::string record_bytes(const Member &m) {
    Member bare = m;
    bare.sig.clear();
    return std::string("pccl-record-v1", 15) + msgpack_encode(member_to_msg(bare));
}

bool record_signed(const Member &m) {
    const std::string b = record_bytes(m);
    return verify_peer(m.id, b.data(), b.size(), reinterpret_cast<const uint8_t *>(m.sig.data()), m.sig.size());
}

// What a member signs when it is done with an op's data phase.
std::string done_bytes(const OpKey &k, const std::string &id) {
    return std::string("pccl-done-v1", 13) +
           msgpack_encode(MsgValue::array({k.epoch, uint64_t(k.tag), uint64_t(k.seq), id}));
}

// What a coordinator signs of a commit: the context string and the message
// without its "sig" entry, in the order it travels (our encoder is canonical:
// a decoded commit re-encodes to the same bytes).
std::string commit_bytes(const MsgValue &m) {
    MsgValue::Map fields;
    for (const auto &kv : m.as_map())
        if (!(kv.first.type() == MsgValue::Type::Str && kv.first.as_str() == "sig")) fields.push_back(kv);
    return std::string("pccl-commit-v1", 15) + msgpack_encode(MsgValue::map(std::move(fields)));
}

Member member_from_msg(const MsgValue &v) {
    Member m;
    m.id = v.at("id").as_str();
    if (!is_valid_peer_id(m.id)) fail(PCCL_ERR_PROTOCOL, "invalid peer id in a control message");
    m.incarnation = v.at("inc").as_uint();
    for (const auto &a : v.at("addrs").as_array()) m.addrs.push_back(a.as_str());
    if (const MsgValue *av = v.find("av")) m.addrs_version = av->as_uint();
    if (const MsgValue *sig = v.find("rsig")) m.sig = sig->as_bin();
    return m;
}

// A view as a control message: "commit" (install it) or "ready" (see mesh.h).
MsgValue view_to_msg(const View &v, const char *type = "commit") {
    std::vector<MsgValue> ms;
    for (const auto &m : v.members) ms.push_back(member_to_msg(m));
    return MsgValue::map({{"t", type}, {"epoch", v.epoch}, {"members", MsgValue::array(std::move(ms))}});
}

View view_from_msg(const MsgValue &v) {
    View out;
    out.epoch = v.at("epoch").as_uint();
    for (const auto &m : v.at("members").as_array()) out.members.push_back(member_from_msg(m));
    return out;  // in ring order, as the coordinator committed it
}

}  // namespace

// ---------------------------------------------------------------- MeshChannel

class MeshChannel : public Channel {
public:
    MeshChannel(Mesh *mesh, OpKey key, View view, size_t rank, std::shared_ptr<Mailbox> mb)
        : mesh_(mesh), key_(key), view_(std::move(view)), rank_(rank), mb_(std::move(mb)),
          tracker_(std::make_shared<net::SendTracker>()) {}

    ~MeshChannel() override {
        quiesce();
        // Borrowed buffers may be freed once we return: make sure no queued
        // frame still points at them. Closing the links fails their queues.
        if (!tracker_->wait_drained(0.0)) {
            for (auto &kv : links_)
                for (auto &c : kv.second) c->close(PCCL_ERR_PEER_LOST, "op abandoned");
            tracker_->wait_drained(60.0);
        }
        mesh_->release_mailbox(key_);
    }

    size_t size() const override { return view_.members.size(); }
    size_t rank() const override { return rank_; }
    uint64_t epoch() const override { return key_.epoch; }

    void send(size_t dst, uint32_t chunk, uint32_t sub, const void *data, size_t len) override {
        net::OutFrame f;
        f.borrowed = static_cast<const uint8_t *>(data);
        f.header.length = static_cast<uint32_t>(len);
        post(dst, chunk, sub, std::move(f));
    }

    void send_owned(size_t dst, uint32_t chunk, uint32_t sub, std::string bytes) override {
        net::OutFrame f;
        f.owned = std::move(bytes);
        post(dst, chunk, sub, std::move(f));
    }

    Incoming recv() override {
        std::unique_lock<std::mutex> lk(mesh_->mu_);
        double deadline = now_s() + mesh_->config_.timeout_s;
        for (;;) {
            if (mb_->aborted) fail(mb_->abort_status, mb_->abort_message);
            if (!mb_->frames.empty()) {
                auto item = std::move(mb_->frames.front());
                mb_->frames.pop_front();
                int src = view_.index_of(item.first);
                if (src < 0) continue;  // not a member of this op's view: ignore
                Incoming in;
                in.src = static_cast<size_t>(src);
                in.frame = std::move(item.second);
                rx_bytes += in.frame.size();
                return in;
            }
            check_alive_locked();
            if (now_s() >= deadline)
                fail(PCCL_ERR_TIMEOUT, "no data from the group for " + std::to_string(mesh_->config_.timeout_s) +
                                           " s (op tag " + std::to_string(key_.tag) + ", epoch " +
                                           std::to_string(key_.epoch) + ")");
            mb_->cv.wait_for(lk, std::chrono::milliseconds(100));
        }
    }

    void flush() override {
        double deadline = now_s() + mesh_->config_.timeout_s;
        while (!tracker_->wait(0.1)) {
            std::unique_lock<std::mutex> lk(mesh_->mu_);
            check_alive_locked();
            if (tracker_->wait_drained(0.0) || now_s() >= deadline) {
                lk.unlock();
                if (tracker_->wait(0.0)) return;
                fail(PCCL_ERR_PEER_LOST, "could not deliver data to a neighbour (connection closed)");
            }
        }
    }

    void abort(pccl_status_t status, const std::string &message) override {
        std::lock_guard<std::mutex> lk(mesh_->mu_);
        if (!mb_->aborted) {
            mb_->aborted = true;
            mb_->abort_status = status;
            mb_->abort_message = message;
        }
        broadcast_vote_locked({}, true, status, message);
    }

    void expect(uint32_t chunk, uint32_t sub, void *dst, size_t len) override {
        std::lock_guard<std::mutex> lk(mesh_->mu_);
        mb_->targets[{chunk, sub}] = Mailbox::Target{static_cast<uint8_t *>(dst), len};
    }

    void quiesce() override {
        std::unique_lock<std::mutex> lk(mesh_->mu_);
        std::set<uint64_t> writers;
        for (auto it = mb_->targets.begin(); it != mb_->targets.end();) {
            if (it->second.writer) writers.insert(it->second.writer);
            it = it->second.writer ? std::next(it) : mb_->targets.erase(it);
        }
        if (writers.empty()) return;
        // A frame is being written into our memory right now: cut those
        // connections (the op failed anyway); their closing releases it.
        for (auto &kv : mesh_->conns_)
            for (auto &c : kv.second)
                if (writers.count(c->id())) c->close(PCCL_ERR_PEER_LOST, "op abandoned mid-frame");
        mb_->cv.wait_for(lk, std::chrono::seconds(60), [&] { return mb_->writing == 0; });
        mb_->targets.clear();
    }

    void commit() override {
        const std::string mine = done_bytes(key_, mesh_->self_id_);
        const Signature sig = sign_as(mesh_->ident_, mine.data(), mine.size());
        std::unique_lock<std::mutex> lk(mesh_->mu_);
        mb_->vote.add_done(rank_);
        mb_->done_sigs[rank_].assign(reinterpret_cast<const char *>(sig.data()), sig.size());
        double deadline = now_s() + mesh_->config_.timeout_s;
        for (;;) {
            if (mb_->aborted) fail(mb_->abort_status, mb_->abort_message);
            const OpVote::Progress p = mb_->vote.progress();
            if (p.announce) {
                broadcast_vote_locked({}, false, PCCL_OK, "");
                deadline = now_s() + mesh_->config_.timeout_s;
            }
            if (p.succeeded) return;
            if (mesh_->closed_) fail(PCCL_ERR_CLOSED, "communicator closed during the op");
            std::vector<size_t> dead;
            for (size_t r = 0; r < view_.members.size(); ++r)
                if (mesh_->dead_.count(view_.members[r].id)) dead.push_back(r);
            const OpVote::Judgement j = mb_->vote.judge(dead);
            for (size_t d : j.nack) broadcast_vote_locked({view_.members[d].id}, false, PCCL_OK, "");
            if (j.failed) {
                const std::string &lost = view_.members[j.lost].id;
                fail(PCCL_ERR_PEER_LOST,
                     "peer " + lost + " was lost before the op committed: " + mesh_->dead_.at(lost));
            }
            if (now_s() >= deadline)
                fail(PCCL_ERR_TIMEOUT, "the op's commit did not complete within " +
                                           std::to_string(mesh_->config_.timeout_s) + " s");
            mb_->cv.wait_for(lk, std::chrono::milliseconds(100));
        }
    }

private:
    void broadcast_vote_locked(const std::vector<std::string> &nack, bool failed, pccl_status_t status,
                               const std::string &message) {
        std::vector<MsgValue> done, dsig, nacks(nack.begin(), nack.end());
        for (size_t r : mb_->vote.done().ranks()) {
            if (r >= mb_->done_sigs.size() || mb_->done_sigs[r].empty()) continue;
            done.emplace_back(view_.members[r].id);
            dsig.push_back(MsgValue::binary(mb_->done_sigs[r]));
        }
        MsgValue m = MsgValue::map({{"t", "vote"},
                                    {"epoch", key_.epoch},
                                    {"tag", uint64_t(key_.tag)},
                                    {"seq", uint64_t(key_.seq)},
                                    {"done", MsgValue::array(std::move(done))},
                                    {"dsig", MsgValue::array(std::move(dsig))},
                                    {"nack", MsgValue::array(std::move(nacks))},
                                    {"fail", failed},
                                    {"status", uint64_t(status)},
                                    {"msg", message}});
        for (const auto &m2 : view_.members)
            if (m2.id != mesh_->self_id_) mesh_->send_control_locked(m2.id, m);
    }

    void check_alive_locked() {
        if (mesh_->closed_) fail(PCCL_ERR_CLOSED, "communicator closed during the op");
        for (const auto &m : view_.members) {
            auto it = mesh_->dead_.find(m.id);
            if (it != mesh_->dead_.end())
                fail(PCCL_ERR_PEER_LOST, "peer " + m.id + " was lost: " + it->second);
        }
        if (mesh_->view_.epoch != key_.epoch)
            fail(PCCL_ERR_INVALID_USAGE, "the view changed during the op (update_topology ran concurrently)");
    }

    void post(size_t dst, uint32_t chunk, uint32_t sub, net::OutFrame f) {
        f.header.type = net::FrameType::data;
        f.header.tag = key_.tag;
        f.header.epoch = key_.epoch;
        f.header.seq = key_.seq;
        f.header.chunk = chunk;
        f.header.sub = sub;
        f.tracker = tracker_;
        auto &links = links_[dst];
        if (links.empty()) links = mesh_->data_links(view_.members.at(dst));
        size_t len = f.borrowed ? f.header.length : f.owned.size();
        if (!net::Link::send_striped(links, std::move(f)))
            fail(PCCL_ERR_PEER_LOST,
                 "connection to peer " + view_.members[dst].id + " closed: " + links.front()->close_reason());
        tx_bytes += len;
    }

    Mesh *mesh_;
    OpKey key_;
    View view_;
    size_t rank_;
    std::shared_ptr<Mailbox> mb_;
    std::shared_ptr<net::SendTracker> tracker_;
    std::map<size_t, std::vector<net::LinkPtr>> links_;
};

// ----------------------------------------------------------------------- Mesh

Mesh::Mesh(MeshConfig config) : config_(std::move(config)) {
    if (!(config_.timeout_s > 0)) fail(PCCL_ERR_INVALID_ARGUMENT, "timeout must be > 0");
    if (!(config_.join_timeout_s > 0)) fail(PCCL_ERR_INVALID_ARGUMENT, "join_timeout must be > 0");
    if (config_.streams < 1 || config_.streams > 64)
        fail(PCCL_ERR_INVALID_ARGUMENT, "streams must be in 1..64, got " + std::to_string(config_.streams));
    std::vector<Multiaddr> boot;
    for (const auto &b : config_.bootstrap) boot.push_back(Multiaddr::parse(b));  // fail fast on bad input
    if (config_.listen.empty()) config_.listen.push_back("/ip4/127.0.0.1/tcp/0");

    ident_ = config_.key_file.empty() ? generate_identity() : load_or_create_identity(config_.key_file);
    self_id_ = ident_.peer_id;
    // A fresh incarnation per process start tells a restarted peer (same id)
    // apart from its previous life.
    random_bytes(&incarnation_, sizeof(incarnation_));

    net::TransportConfig tc;
    tc.run_key = config_.run_key;
    tc.identity = ident_;
    tc.incarnation = incarnation_;
    tc.listen = config_.listen;
    tc.options = config_.transport;
    transport_ = net::make_transport(tc, this);
    transport_addrs_seen_ = transport_->addrs_version();
    for (const auto &a : transport_->listen_addrs()) addrs_.push_back(a.with_peer_id(self_id_).to_string());
    transport_->set_advertised(addrs_);
    started_ = true;
    last_tick_ = now_s();
    heartbeat_thread_ = std::thread([this] { heartbeat_loop(); });
    repair_thread_ = std::thread([this] { repair_loop(); });

    if (boot.empty()) {
        std::lock_guard<std::mutex> lk(mu_);
        member_ = true;
        view_.epoch = 1;
        Member me{self_id_, incarnation_, addrs_, 0, {}};
        sign_record(me);
        view_.members.push_back(std::move(me));
        return;
    }
    // Authenticate now (a wrong key or address fails here, not minutes later),
    // but ask to be admitted only in our first update_topology().
    boot_ = boot;
    try {
        std::string errors;
        pccl_status_t last = PCCL_ERR_IO;
        for (const auto &b : boot) {
            try {
                boot_conn_ = transport_->dial(b, config_.timeout_s, "join");
                return;
            } catch (const Error &e) {
                last = e.status();
                errors += "\n  " + std::string(e.what());
            }
        }
        fail(last, "could not reach any bootstrap peer:" + errors);
    } catch (...) {
        close();
        throw;
    }
}

void Mesh::ask_to_join(std::unique_lock<std::mutex> &lk, double deadline) {
    Member me{self_id_, incarnation_, addrs_, 0, {}};
    sign_record(me);  // the record the run will gossip about us: ours, signed
    MsgValue join = member_to_msg(me, "join");
    std::string errors;
    pccl_status_t last = PCCL_ERR_IO;
    // The connection the constructor opened first; if it closed meanwhile (the
    // bootstrap peer restarted, or we took long), every bootstrap address again.
    for (size_t i = 0; i <= boot_.size() && !join_asked_; ++i) {
        net::LinkPtr c = i == 0 ? boot_conn_ : nullptr;
        if (i > 0) {
            lk.unlock();
            try {
                c = transport_->dial(boot_[i - 1], config_.timeout_s, "join");
            } catch (const Error &e) {
                last = e.status();
                errors += "\n  " + std::string(e.what());
            }
            lk.lock();
            if (closed_) fail(PCCL_ERR_CLOSED, "communicator closed");
        }
        if (!c || c->state() != net::Link::State::ready || !send_on(c, join)) continue;
        // Acknowledged: the run knows about us and its next round admits us.
        const double until = std::min(deadline, now_s() + config_.timeout_s);
        while (!join_acked_ && !closed_ && c->state() != net::Link::State::closed &&
               now_s() < until)
            cv_.wait_for(lk, std::chrono::milliseconds(50));
        if (closed_) fail(PCCL_ERR_CLOSED, "communicator closed");
        if (join_acked_) {
            join_asked_ = true;
            boot_conn_ = c;
        } else if (i > 0) {
            errors += "\n  " + boot_[i - 1].to_string() + ": no answer to our join request";
        }
    }
    if (!join_asked_) fail(last, "could not reach any bootstrap peer to ask to join:" + errors);
}

Mesh::~Mesh() { close(); }

void Mesh::close() {
    if (closed_.exchange(true)) {
        if (heartbeat_thread_.joinable()) heartbeat_thread_.join();
        if (repair_thread_.joinable()) repair_thread_.join();
        return;
    }
    {
        std::lock_guard<std::mutex> lk(mu_);
        const MsgValue bye = MsgValue::map({{"t", "bye"}});
        for (auto &kv : conns_) send_control_locked(kv.first, bye);  // one per peer
        notify_locked();
    }
    if (heartbeat_thread_.joinable()) heartbeat_thread_.join();
    if (transport_) transport_->shutdown();  // a redial in progress fails now
    if (repair_thread_.joinable()) repair_thread_.join();
    std::lock_guard<std::mutex> lk(mu_);
    conns_.clear();
    data_out_.clear();
    joiner_conns_.clear();
    notify_locked();
}

std::vector<std::string> Mesh::addrs() const {
    std::lock_guard<std::mutex> lk(mu_);
    return addrs_;
}

void Mesh::readvertise() {
    const uint64_t version = transport_->addrs_version();
    std::vector<std::string> now;
    for (const auto &a : transport_->listen_addrs()) now.push_back(a.with_peer_id(self_id_).to_string());
    transport_->set_advertised(now);
    std::lock_guard<std::mutex> lk(mu_);
    transport_addrs_seen_ = version;
    if (now == addrs_) return;
    addrs_ = std::move(now);
    ++addrs_version_;
    debug_log(self_id_.substr(0, 8), "re-advertise " + (addrs_.empty() ? std::string("-") : addrs_[0]));
    Member me{self_id_, incarnation_, addrs_, addrs_version_, {}};
    sign_record(me);
    learn_addrs_locked(me, self_id_);
}

void Mesh::on_addrs_changed() {
    if (started_ && !closed_) readvertise();
}

bool Mesh::learn_addrs_locked(const Member &m, const std::string &from) {
    if (m.addrs_version == 0) return false;  // never re-advertised: the view's copy is as fresh
    if (!record_signed(m)) {  // passed on by `from`, who cannot sign for m.id
        debug_log(self_id_.substr(0, 8), "drop addresses of " + m.id.substr(0, 8) + " not signed by it");
        return false;
    }
    auto it = fresh_addrs_.find(m.id);
    if (it != fresh_addrs_.end() && it->second.incarnation == m.incarnation &&
        it->second.addrs_version >= m.addrs_version)
        return false;
    fresh_addrs_[m.id] = m;
    apply_fresh_addrs_locked(view_.members);
    auto p = pending_.find(m.id);
    if (p != pending_.end() && p->second.incarnation == m.incarnation) p->second = m;
    // Gossip: the peer may have no direct link left to some members (its
    // relay died), so each member passes news on once.
    MsgValue msg = member_to_msg(m, "addrs");
    for (const auto &o : view_.members)
        if (o.id != self_id_ && o.id != from && o.id != m.id) send_control_locked(o.id, msg);
    return true;
}

void Mesh::abort_epoch_ops_locked(const std::string &why) {
    for (auto &kv : mailboxes_) {
        if (kv.first.epoch != view_.epoch || kv.second->aborted) continue;
        kv.second->aborted = true;
        kv.second->abort_status = PCCL_ERR_PEER_LOST;
        kv.second->abort_message = why;
    }
}

void Mesh::repair_loop() {
    const double period = std::max(0.05, std::min(0.5, config_.timeout_s / 8));
    while (!closed_) {
        std::vector<Member> lost;
        {
            std::unique_lock<std::mutex> lk(mu_);
            cv_.wait_for(lk, std::chrono::duration<double>(period), [&] { return closed_.load(); });
            if (closed_) return;
            if (!member_) continue;
            for (const auto &m : view_.members)
                if (m.id != self_id_ && !conns_.count(m.id) && !dead_.count(m.id) && !leaving_.count(m.id))
                    lost.push_back(m);
        }
        for (const auto &m : lost) {
            try {
                control_conn(m);
                debug_log(self_id_.substr(0, 8), "relinked to " + m.id.substr(0, 8));
            } catch (const Error &) {
                // Still unreachable: its heartbeat timeout decides.
            }
        }
    }
}

void Mesh::apply_fresh_addrs_locked(std::vector<Member> &members) const {
    for (auto &m : members) {
        auto it = fresh_addrs_.find(m.id);
        if (it != fresh_addrs_.end() && it->second.incarnation == m.incarnation &&
            it->second.addrs_version > m.addrs_version)
            m = it->second;
    }
}

View Mesh::view() const {
    std::lock_guard<std::mutex> lk(mu_);
    return view_;
}

bool Mesh::is_member() const {
    std::lock_guard<std::mutex> lk(mu_);
    return member_;
}

// ------------------------------------------------------------ event-loop side

void Mesh::on_ready(const net::LinkPtr &c) {
    std::lock_guard<std::mutex> lk(mu_);
    // A member that connects with a new incarnation (authenticated: only the
    // holder of its key can) was restarted, unless its current incarnation is
    // still connected: then it is not a restart but a second process with the
    // same key (or a member playing games), and believing it would split the
    // run (we would drop a member the others keep). Refuse that connection;
    // if the old process is really gone, its links close or fall silent and
    // the heartbeat timeout removes it, after which the new one may connect.
    int idx = view_.index_of(c->remote_id());
    if (member_ && idx >= 0 && view_.members[idx].incarnation != c->remote_incarnation()) {
        if (connected_as_locked(c->remote_id(), view_.members[idx].incarnation)) {
            c->close(PCCL_ERR_PROTOCOL, "another incarnation of this peer is still connected");
            return;
        }
        conns_[c->remote_id()].push_back(c);
        last_heard_[c->remote_id()] = now_s();
        declare_dead_locked(c->remote_id(), "it was restarted (a new incarnation connected)");
        return;
    }
    conns_[c->remote_id()].push_back(c);
    last_heard_[c->remote_id()] = now_s();
}

bool Mesh::connected_as_locked(const std::string &id, uint64_t inc) const {
    auto it = conns_.find(id);
    if (it == conns_.end()) return false;
    for (const auto &c : it->second)
        if (c->remote_incarnation() == inc && c->state() == net::Link::State::ready) return true;
    return false;
}

void Mesh::on_closed(const net::LinkPtr &c) {
    std::lock_guard<std::mutex> lk(mu_);
    const std::string &id = c->remote_id();
    auto drop = [&](std::map<std::string, std::vector<net::LinkPtr>> &m) {
        auto it = m.find(id);
        if (it == m.end()) return;
        auto &v = it->second;
        v.erase(std::remove(v.begin(), v.end(), c), v.end());
        if (v.empty()) m.erase(it);
    };
    drop(conns_);
    drop(data_out_);
    release_target_locked(c->id(), false);  // a frame being written into an op's memory never will be
    auto j = joiner_conns_.find(id);
    if (j != joiner_conns_.end() && j->second == c) joiner_conns_.erase(j);
    // Just resumed from a freeze (our heartbeat thread has not ticked for
    // longer than the bound): links the others closed meanwhile do not make
    // them dead here. What they queued (the commit that removed us) is read
    // first; the heartbeat bound decides about the rest.
    const double bound = std::min(config_.heartbeat_timeout_s, config_.timeout_s);
    const bool resumed = now_s() - last_tick_ > bound;
    if (!resumed && !conns_.count(id) && member_ && view_.index_of(id) >= 0 && id != self_id_) {
        if (c->relayed() && !leaving_.count(id) && !closed_) {
            // Its relay failed, not necessarily the peer: the ops of this
            // view fail (and are retried), the repair thread redials it at
            // its latest addresses, and its heartbeat timeout still applies.
            abort_epoch_ops_locked("the relayed link to peer " + id + " broke: " + c->close_reason());
        } else {
            declare_dead_locked(id, leaving_.count(id) ? "it left the run" : c->close_reason());
        }
    }
    notify_locked();
}

void Mesh::on_frame(const net::LinkPtr &c, net::Frame &&f) {
    const std::string &from = c->remote_id();
    if (f.header.type == net::FrameType::control) {
        // The largest honest control message is a ready carrying a view and
        // its commit (a few hundred bytes per member).
        if (f.size() > kMaxControlBytes)
            fail(PCCL_ERR_PROTOCOL, "control message of " + std::to_string(f.size()) + " bytes (limit " +
                                        std::to_string(kMaxControlBytes) + ")");
        MsgValue m = msgpack_decode(f.data(), f.size());
        std::lock_guard<std::mutex> lk(mu_);
        last_heard_[from] = now_s();
        handle_control(c, m);
        return;
    }
    std::lock_guard<std::mutex> lk(mu_);
    last_heard_[from] = now_s();
    if (f.header.type != net::FrameType::data) return;  // heartbeat: liveness only
    if (f.in_place) release_target_locked(c->id(), true);
    OpKey k{f.header.epoch, f.header.tag, f.header.seq};
    if (!accept_op_locked(k, from)) return;  // an op nobody here waits for, or a sender outside its view
    auto mb = mailbox_locked(k);
    if (!mb) return;  // too many ops not started here
    if (!mb->opened) {
        if (mb->aborted) return;  // failed already (see below): nothing will read it
        if (unclaimed_bytes_ + f.size() > kMaxUnclaimedBytes) {
            // Early frames are held for an op not started here; a peer sending
            // more than an op could need makes that op fail here (when it is
            // started: at once) and, through its abort, everywhere.
            unclaimed_bytes_ -= mb->early_bytes;
            mb->early_bytes = 0;
            mb->frames.clear();
#ifdef __GLIBC__
            // Up to the cap came back at once; glibc keeps freed heap pages
            // mapped unless asked (the peer could otherwise pin our RSS).
            malloc_trim(0);
#endif
            mb->aborted = true;
            mb->abort_status = PCCL_ERR_PROTOCOL;
            mb->abort_message = "more than " + std::to_string(kMaxUnclaimedBytes >> 20) +
                                " MiB of data arrived for ops not started here (last from peer " + from + ")";
            return;
        }
        mb->early_bytes += f.size();
        unclaimed_bytes_ += f.size();
    }
    mb->frames.emplace_back(from, std::move(f));
    mb->cv.notify_one();  // only the op's own thread waits on it
}

bool Mesh::accept_op_locked(const OpKey &k, const std::string &from) const {
    if (finished_.count(k)) return false;
    if (!member_) {
        // A joiner: only the view admitting it (members may start its ops
        // before its update_topology() installs that view).
        return !admitted_.members.empty() && k.epoch == admitted_.epoch && admitted_.index_of(from) >= 0 &&
               k.seq < kSeqWindow;
    }
    if (k.epoch == view_.epoch) {
        if (view_.index_of(from) < 0) return false;
        // Members run the ops of a tag in the same order; one is ahead of us
        // only by the async ops it started on the tag before we started
        // ours (or by ops it ran alone).
        auto it = next_seq_.find(k.tag);
        const uint64_t next = it == next_seq_.end() ? 0 : it->second;
        return k.seq < next + kSeqWindow;
    }
    if (k.epoch == view_.epoch + 1)  // the next view: its members are ours or joiners we know of
        return (view_.index_of(from) >= 0 || pending_.count(from)) && k.seq < kSeqWindow;
    return false;
}

uint8_t *Mesh::payload_target(const net::LinkPtr &c, const net::FrameHeader &h) {
    std::lock_guard<std::mutex> lk(mu_);
    auto it = mailboxes_.find(OpKey{h.epoch, h.tag, h.seq});
    if (it == mailboxes_.end()) return nullptr;
    Mailbox &mb = *it->second;
    auto t = mb.targets.find({h.chunk, h.sub});
    if (t == mb.targets.end() || t->second.writer || t->second.done || t->second.len != h.length) return nullptr;
    t->second.writer = c->id();
    ++mb.writing;
    writing_[c->id()] = {it->second, {h.chunk, h.sub}};
    return t->second.ptr;
}

void Mesh::release_target_locked(uint64_t conn, bool completed) {
    auto w = writing_.find(conn);
    if (w == writing_.end()) return;
    Mailbox &mb = *w->second.first;
    auto t = mb.targets.find({w->second.second.first, w->second.second.second});
    if (t != mb.targets.end() && t->second.writer == conn) {
        t->second.writer = 0;
        t->second.done = completed;
    }
    --mb.writing;
    mb.cv.notify_all();
    writing_.erase(w);
}

void Mesh::handle_control(const net::LinkPtr &c, const MsgValue &m) {
    const std::string t = m.at("t").as_str();
    const std::string &from = c->remote_id();
    debug_log(self_id_.substr(0, 8), "control '" + t + "' from " + from.substr(0, 8));
    if (t == "join") {
        Member j = member_from_msg(m);
        if (j.id != from) fail(PCCL_ERR_PROTOCOL, "join for another peer's id");
        if (j.incarnation != c->remote_incarnation())
            fail(PCCL_ERR_PROTOCOL, "join for another incarnation than the connection's");
        if (!record_signed(j)) fail(PCCL_ERR_PROTOCOL, "join record not signed by the joiner");
        joiner_conns_[j.id] = c;
        if (member_) add_pending_locked(j);
        else pending_[j.id] = j;  // announced to the members once we are one
        send_on(c, MsgValue::map({{"t", "join_ack"}}));
    } else if (t == "join_ack") {
        join_acked_ = true;
        notify_locked();
    } else if (t == "pending") {
        Member j = member_from_msg(m);
        if (!record_signed(j)) {  // `from` cannot sign for j.id: forged
            debug_log(self_id_.substr(0, 8), "drop a pending record of " + j.id.substr(0, 8) + " not signed by it");
            return;
        }
        if (member_) add_pending_locked(j);
        else pending_[j.id] = j;  // a joiner itself: announced once we are a member (we may coordinate)
    } else if (t == "ready") {
        // Each ready lists the joiners its sender knows of: a "pending" that
        // was lost (sent before we had a connection, or while we were still
        // joining) still reaches whoever coordinates the next round.
        const MsgValue *p = m.find("pending");
        if (p && member_ && m.at("epoch").as_uint() == view_.epoch)
            for (const auto &j : p->as_array()) {
                Member pj = member_from_msg(j);
                if (pj.id != self_id_ && view_.index_of(pj.id) < 0 && !pending_.count(pj.id) && record_signed(pj))
                    pending_[pj.id] = pj;
            }
        if (member_)  // the sender's own record: its latest addresses
            for (const auto &e : m.at("members").as_array())
                if (e.at("id").as_str() == from) learn_addrs_locked(member_from_msg(e), from);
        if (const MsgValue *r = m.find("relayed")) {  // its relay-only links, for the ring order
            std::vector<std::string> ids;
            for (const auto &x : r->as_array()) ids.push_back(x.as_str());
            reports_.relay_only[from] = std::move(ids);
        }
        if (const MsgValue *r = m.find("rtt")) {  // its measured links, for the ring order
            std::map<std::string, double> rtts;
            for (const auto &x : r->as_array()) {
                const auto &e = x.as_array();
                if (e.size() != 2) fail(PCCL_ERR_PROTOCOL, "ready: malformed rtt entry");
                const std::string &id = e[0].as_str();
                if (view_.index_of(id) >= 0 && rtts.size() < view_.members.size())  // members only: bounded
                    rtts[id] = double(std::min<uint64_t>(e[1].as_uint(), uint64_t(3600e6))) / 1e6;
            }
            reports_.rtt[from] = std::move(rtts);
        }
        const uint64_t epoch = m.at("epoch").as_uint();
        const auto action = TopologyRound::classify(epoch, view_.epoch);
        if (member_ && action == TopologyRound::ReadyAction::answer_with_commit) {
            // The sender missed the commit of a view we hold (its coordinator
            // died while broadcasting it): without this answer it would wait
            // for a commit that never comes while we run ops it is part of.
            // A sender we removed learns from it that it is out.
            if (!commit_msg_.is_nil()) send_on(c, commit_msg_);
            return;
        }
        if (member_ && action == TopologyRound::ReadyAction::adopt_their_commit) {
            // We are the one behind (we are the coordinator the sender chose,
            // but we missed the commit): its view was committed, install it
            // once its commit checks out (the sender itself proves nothing).
            const MsgValue *cm = m.find("commit");
            View v;
            std::string why;
            if (!cm || !verify_commit_locked(*cm, v, why) || v.epoch != epoch) {
                debug_log(self_id_.substr(0, 8), "ignore a ready of epoch " + std::to_string(epoch) + ": " +
                                                     (cm ? why : std::string("no commit")));
                return;
            }
            install_locked(v, *cm);
            if (!member_) return;
        }
        round_.ready(epoch, from);
        maybe_commit_locked();
    } else if (t == "commit") {
        View v;
        std::string why;
        if (!verify_commit_locked(m, v, why)) {
            // Stale (an older view, forwarded again), early, or forged: a
            // member that missed a real commit gets it again as the answer to
            // the ready it keeps sending.
            debug_log(self_id_.substr(0, 8), "ignore a commit from " + from.substr(0, 8) + ": " + why);
            return;
        }
        if (member_) {
            install_locked(v, m);
        } else if (v.epoch > admitted_.epoch) {
            // A joiner becomes a member inside its update_topology() only:
            // admission is a collective point, and a joiner that saw itself
            // admitted in the background (world_size) and skipped the call
            // would later treat the members' next round as its admission and
            // return from it alone, leaving them waiting for its ready.
            admitted_ = v;
            admitted_commit_ = m;
            notify_locked();
        }
    } else if (t == "vote") {
        const uint64_t tag = m.at("tag").as_uint(), seq = m.at("seq").as_uint();
        if (tag > 0xffffffffu || seq > 0xffffffffu) fail(PCCL_ERR_PROTOCOL, "vote for an op key out of range");
        OpKey k{m.at("epoch").as_uint(), static_cast<uint32_t>(tag), static_cast<uint32_t>(seq)};
        // Only members of that view vote on its ops (a peer from the other side
        // of a partition that reached the same epoch number must not), and
        // only on ops that can still be ours (see accept_op_locked).
        if (!accept_op_locked(k, from)) return;
        auto existing = mailboxes_.find(k);
        const bool failed = m.at("fail").as_bool();
        if (failed && m.at("status").as_uint() == PCCL_ERR_TIMEOUT && member_ && k.epoch == view_.epoch &&
            (existing == mailboxes_.end() || !existing->second->opened) && k.seq == next_seq_[k.tag]) {
            // A member timed out in an op on this tag that we never started
            // (it ran it alone): we skip that op's sequence number too, so our
            // next op on the tag is the same op as its next one instead of
            // every later op pairing ours with its previous one. (Other
            // failures keep the op: we fail it with their error when we start it.)
            ++next_seq_[k.tag];
            if (existing != mailboxes_.end()) drop_mailbox_locked(existing);
            finished_.insert(k);
            return;
        }
        auto mb = existing != mailboxes_.end() ? existing->second : mailbox_locked(k);
        if (!mb) return;
        // Done votes are gossiped: each must carry its member's signature.
        const View *ov = op_view_locked(k.epoch);  // null: the next epoch's op (kept by id until installed)
        if (ov) size_vote_locked(*mb, *ov);
        const auto &done = m.at("done").as_array();
        const MsgValue *dsig = m.find("dsig");
        for (size_t i = 0; i < done.size(); ++i) {
            const std::string &id = done[i].as_str();
            if (!dsig || i >= dsig->as_array().size()) continue;
            const int r = ov ? ov->index_of(id) : -1;
            if (ov && r >= 0 && id == self_id_ && from != self_id_ && size_t(r) < mb->done_sigs.size() &&
                !mb->done_sigs[size_t(r)].empty() && dsig->as_array()[i].as_bin() == mb->done_sigs[size_t(r)])
                mb->vote.note_echo();  // our own signature of done, passed back: it reached `from`
            if (ov && (r < 0 || mb->vote.is_done(size_t(r)))) continue;
            if (!ov && (mb->early_done.count(id) || mb->early_done.size() >= view_.members.size() + pending_.size()))
                continue;
            const std::string &sig = dsig->as_array()[i].as_bin();
            const std::string b = done_bytes(k, id);
            // A member's own vote on its own link is authenticated by that
            // link (its peer id was proven in the handshake); a passed-on one
            // must carry the member's signature. The signature is kept either
            // way: we may pass the vote on.
            if (id != from && !verify_peer(id, b.data(), b.size(), reinterpret_cast<const uint8_t *>(sig.data()),
                                           sig.size())) {
                debug_log(self_id_.substr(0, 8), "drop a done vote of " + id.substr(0, 8) + " not signed by it");
                continue;
            }
            if (ov) {
                if (mb->vote.add_done(size_t(r))) mb->done_sigs[size_t(r)] = sig;
            } else {
                mb->early_done[id] = sig;
            }
        }
        for (const auto &d : m.at("nack").as_array()) {
            const std::string &dead = d.as_str();
            if (ov) {
                const int dr = ov->index_of(dead), fr = ov->index_of(from);
                if (dr >= 0 && fr >= 0) mb->vote.add_nack(size_t(dr), size_t(fr));
            } else if (view_.index_of(dead) >= 0) {  // the next view's members are ours (or joiners: never dead yet)
                mb->early_nacks[dead].insert(from);
            }
        }
        if (failed && !mb->aborted) {
            mb->aborted = true;
            uint64_t st = m.at("status").as_uint();
            mb->abort_status = st >= 1 && st <= 10 ? static_cast<pccl_status_t>(st) : PCCL_ERR_PROTOCOL;
            mb->abort_message = "the op failed on peer " + from + ": " + m.at("msg").as_str();
            mb->abort_from = from;
        }
        mb->cv.notify_one();
    } else if (t == "addrs") {  // a peer re-advertises (its relay changed), maybe passed on by another
        learn_addrs_locked(member_from_msg(m), from);
    } else if (t == "bye") {
        // Not dead yet: data it sent before leaving may still be in flight on
        // other connections. It is declared dead when its last connection
        // closes (on_closed), after everything it sent has been read.
        pending_.erase(from);
        leaving_.insert(from);
    } else {
        fail(PCCL_ERR_PROTOCOL, "unknown control message '" + t + "'");
    }
}

void Mesh::add_pending_locked(const Member &j) {
    int idx = view_.index_of(j.id);
    if (idx >= 0 && view_.members[idx].incarnation == j.incarnation) return;  // already in
    // A record of another incarnation while the member's current one is
    // connected is stale (replayed) or not a restart: see on_ready.
    if (idx >= 0 && connected_as_locked(j.id, view_.members[idx].incarnation)) return;
    if (idx >= 0) declare_dead_locked(j.id, "it was restarted (a new incarnation asked to join)");
    bool fresh = !pending_.count(j.id) || pending_[j.id].incarnation != j.incarnation;
    pending_[j.id] = j;
    if (!fresh) return;
    MsgValue msg = member_to_msg(j, "pending");
    for (const auto &m : view_.members)
        if (m.id != self_id_) send_control_locked(m.id, msg);
}

const View *Mesh::op_view_locked(uint64_t epoch) const {
    if (member_) return epoch == view_.epoch ? &view_ : nullptr;
    return !admitted_.members.empty() && epoch == admitted_.epoch ? &admitted_ : nullptr;
}

void Mesh::size_vote_locked(Mailbox &mb, const View &v) const {
    if (mb.vote.sized()) return;
    const int me = v.index_of(self_id_);
    if (me < 0) return;  // not ours: nothing will commit it here
    mb.vote = OpVote(v.members.size(), size_t(me));
    mb.done_sigs.assign(v.members.size(), std::string());
    for (const auto &kv : mb.early_done) {
        const int r = v.index_of(kv.first);
        if (r < 0) continue;  // not a member of the op's view after all
        mb.vote.add_done(size_t(r));
        mb.done_sigs[size_t(r)] = kv.second;
    }
    for (const auto &kv : mb.early_nacks) {
        const int d = v.index_of(kv.first);
        if (d < 0) continue;
        for (const auto &by : kv.second) {
            const int b = v.index_of(by);
            if (b >= 0) mb.vote.add_nack(size_t(d), size_t(b));
        }
    }
    mb.early_done.clear();
    mb.early_nacks.clear();
}

std::vector<std::string> Mesh::relay_only_locked() const {
    std::vector<std::string> out;
    for (const auto &kv : conns_) {
        bool direct = false;
        for (const auto &c : kv.second) direct = direct || !c->relayed();
        if (!direct && !kv.second.empty()) out.push_back(kv.first);
    }
    return out;
}

std::map<std::string, double> Mesh::link_rtts_locked() const {
    std::map<std::string, double> out;
    for (const auto &kv : conns_)
        for (const auto &c : kv.second) {
            const double r = c->rtt_s();
            if (r < 0) continue;
            auto it = out.find(kv.first);
            if (it == out.end() || r < it->second) out[kv.first] = r;
        }
    if (const char *t = std::getenv("PCCL_TEST_RTT")) {
        // "from>to=seconds;..." (test hook: see the declaration).
        const std::string s(t), me = self_id_ + ">";
        for (size_t at = 0; at < s.size();) {
            size_t end = s.find(';', at);
            if (end == std::string::npos) end = s.size();
            const std::string item = s.substr(at, end - at);
            const size_t eq = item.find('=');
            if (item.compare(0, me.size(), me) == 0 && eq != std::string::npos)
                out[item.substr(me.size(), eq - me.size())] = std::strtod(item.c_str() + eq + 1, nullptr);
            at = end + 1;
        }
    }
    return out;
}

bool Mesh::alive_locked(const std::string &id) const { return !dead_.count(id); }

void Mesh::maybe_commit_locked() {
    if (!member_ || closed_ || !round_.complete(view_, dead_, self_id_)) return;
    // Our own links count like every member's report (ring order).
    reports_.relay_only[self_id_] = relay_only_locked();
    reports_.rtt[self_id_] = link_rtts_locked();
    View nv = next_view(view_, dead_, pending_, reports_, config_.ring_by_id);
    MsgValue msg = sign_commit_locked(nv);
    for (const auto &m : view_.members)
        if (m.id != self_id_ && alive_locked(m.id)) send_control_locked(m.id, msg);
    install_locked(std::move(nv), std::move(msg));
}

void Mesh::sign_record(Member &m) const {
    m.sig.clear();
    const std::string b = record_bytes(m);
    const Signature sig = sign_as(ident_, b.data(), b.size());
    m.sig.assign(reinterpret_cast<const char *>(sig.data()), sig.size());
}

MsgValue Mesh::sign_commit_locked(const View &nv) const {
    MsgValue msg = view_to_msg(nv);
    std::vector<MsgValue> prev_ids;
    for (const auto &m : view_.members) prev_ids.emplace_back(m.id);
    auto &fields = msg.as_map();
    fields.emplace_back("prev", view_.epoch);
    fields.emplace_back("prev_ids", MsgValue::array(std::move(prev_ids)));
    fields.emplace_back("by", self_id_);
    const std::string b = commit_bytes(msg);
    const Signature sig = sign_as(ident_, b.data(), b.size());
    fields.emplace_back("sig", MsgValue::binary(std::string(reinterpret_cast<const char *>(sig.data()), sig.size())));
    return msg;
}

bool Mesh::verify_commit_locked(const MsgValue &m, View &out, std::string &why) const {
    const MsgValue *by = m.find("by"), *sig = m.find("sig"), *prev = m.find("prev"), *prev_ids = m.find("prev_ids");
    if (!by || !sig || !prev || !prev_ids) {
        why = "not signed";
        return false;
    }
    const std::string &signer = by->as_str();
    const std::string b = commit_bytes(m);
    const std::string &s = sig->as_bin();
    if (!verify_peer(signer, b.data(), b.size(), reinterpret_cast<const uint8_t *>(s.data()), s.size())) {
        why = "bad signature";
        return false;
    }
    CommitClaim claim;
    claim.next = view_from_msg(m);
    claim.prev_epoch = prev->as_uint();
    for (const auto &x : prev_ids->as_array()) claim.prev_ids.push_back(x.as_str());
    claim.by = signer;
    if (!accept_commit(claim, member_ ? &view_ : nullptr, dead_, self_id_, incarnation_, why)) return false;
    out = std::move(claim.next);
    return true;
}

void Mesh::install_locked(View v, MsgValue commit) {
    const bool was_member = member_;
    debug_log(self_id_.substr(0, 8), "install epoch " + std::to_string(v.epoch) + " with " +
                                         std::to_string(v.members.size()) + " members");
    if (v.index_of(self_id_) < 0) {
        // The others moved on without us (they declared us dead, e.g. while
        // we were frozen). The ops of our view fail; our next
        // update_topology() asks to join again, through the members of the
        // view that removed us (then our own bootstrap peers).
        if (!member_) return;
        member_ = false;
        removed_ = true;
        join_asked_ = join_acked_ = false;
        admitted_ = View{};
        admitted_commit_ = MsgValue();
        boot_conn_ = nullptr;
        std::vector<Multiaddr> boot;
        for (const auto &m : v.members)
            for (const auto &a : m.addrs) {
                if (boot.size() >= kMaxRejoinAddrs) break;
                try {
                    boot.push_back(Multiaddr::parse(a));
                } catch (const Error &) {  // checked when signed; skip anything odd
                }
            }
        for (const auto &b : boot_)
            if (std::none_of(boot.begin(), boot.end(), [&](const Multiaddr &x) { return x.to_string() == b.to_string(); }))
                boot.push_back(b);
        boot_ = std::move(boot);
        abort_epoch_ops_locked("this peer was removed from the run (the others declared it dead)");
        notify_locked();
        return;
    }
    for (const auto &m : view_.members)
        if (m.id != self_id_ && v.index_of(m.id) < 0) {
            // Removed: the commit tells it so (a frozen peer reads it when it
            // resumes); its links close once that had time to leave.
            auto it = conns_.find(m.id);
            if (it == conns_.end()) continue;
            // (Kept open for the op timeout: a frozen peer's kernel holds the
            // notice until it resumes, as long as we have not closed.)
            const double at = now_s() + config_.timeout_s;
            for (auto &c : it->second) {
                if (c->state() == net::Link::State::ready && !commit.is_nil()) {
                    net::OutFrame f;
                    f.header.type = net::FrameType::control;
                    f.owned = msgpack_encode(commit);
                    c->send(std::move(f), true);  // ahead of state-transfer frames queued for it
                }
                closing_.emplace_back(c, at);
            }
        }
    apply_fresh_addrs_locked(v.members);
    view_ = std::move(v);
    commit_msg_ = std::move(commit);
    member_ = true;
    removed_ = false;
    dead_.clear();
    round_.installed(view_.epoch);
    next_seq_.clear();
    finished_.clear();
    for (auto it = mailboxes_.begin(); it != mailboxes_.end();) {
        auto next = std::next(it);
        Mailbox &mb = *it->second;
        if (it->first.epoch != view_.epoch) {  // an older view's op, or (a joiner) one of a view not ours
            mb.aborted = true;
            mb.abort_status = PCCL_ERR_INVALID_USAGE;
            mb.abort_message = "the view changed during the op";
            drop_mailbox_locked(it);
        } else {
            // Early news of this view's ops: keep only what its members said.
            auto outside = [&](const std::string &id) { return view_.index_of(id) < 0; };
            size_vote_locked(mb, view_);
            if (mb.aborted && !mb.abort_from.empty() && outside(mb.abort_from)) mb.aborted = false;
            for (auto f = mb.frames.begin(); f != mb.frames.end();) {
                if (!outside(f->first)) {
                    ++f;
                    continue;
                }
                if (!mb.opened) {
                    mb.early_bytes -= f->second.size();
                    unclaimed_bytes_ -= f->second.size();
                }
                f = mb.frames.erase(f);
            }
        }
        it = next;
    }
    const double now = now_s();
    for (const auto &m : view_.members) {
        pending_.erase(m.id);
        last_heard_[m.id] = now;
    }
    // Joiners that bootstrapped through us learn the view from us.
    for (auto it = joiner_conns_.begin(); it != joiner_conns_.end();) {
        if (view_.index_of(it->first) >= 0 && !commit_msg_.is_nil()) {
            const MsgValue &msg = commit_msg_;
            net::OutFrame f;
            f.header.type = net::FrameType::control;
            f.owned = msgpack_encode(msg);
            it->second->send(std::move(f));
            it = joiner_conns_.erase(it);
        } else {
            ++it;
        }
    }
    if (!was_member) {
        // Announce the joiners that reached us while we were joining ourselves.
        std::vector<Member> waiting;
        for (const auto &kv : pending_) waiting.push_back(kv.second);
        pending_.clear();
        for (const auto &j : waiting) add_pending_locked(j);
    }
    notify_locked();
}

void Mesh::declare_dead_locked(const std::string &id, const std::string &why) {
    if (id == self_id_ || view_.index_of(id) < 0 || dead_.count(id)) return;
    debug_log(self_id_.substr(0, 8), "declare " + id.substr(0, 8) + " dead: " + why);
    dead_[id] = why;
    const uint64_t inc = view_.members[view_.index_of(id)].incarnation;
    auto it = conns_.find(id);
    if (it != conns_.end()) {
        // One control link stays open: a peer that was only frozen finds,
        // when it resumes, the commit that removed it there (see
        // install_locked) instead of an empty socket, and rejoins instead of
        // carrying on alone.
        net::LinkPtr keep;
        for (auto &c : it->second)
            if (c->remote_incarnation() == inc && c->state() == net::Link::State::ready &&
                (!keep || (keep->purpose() == "data" && c->purpose() != "data")))
                keep = c;
        for (auto &c : it->second)
            if (c->remote_incarnation() == inc && c != keep) c->close(PCCL_ERR_PEER_LOST, "peer declared dead: " + why);
    }
    transport_->abort_dials(id, "peer declared dead: " + why);  // an op's thread may be dialing it
    notify_locked();
    maybe_commit_locked();  // the dead no longer hold up a topology round
}

bool Mesh::send_on(const net::LinkPtr &c, const MsgValue &m) {
    net::OutFrame f;
    f.header.type = net::FrameType::control;
    f.owned = msgpack_encode(m);
    return c->send(std::move(f));
}

bool Mesh::send_control_locked(const std::string &peer, const MsgValue &m) {
    auto it = conns_.find(peer);
    if (it == conns_.end()) return false;
    // A direct connection first: a relayed one may be retired (or its relay die).
    for (bool relayed : {false, true})
        for (auto &c : it->second) {
            if (c->relayed() != relayed || c->state() != net::Link::State::ready) continue;
            net::OutFrame f;
            f.header.type = net::FrameType::control;
            f.owned = msgpack_encode(m);
            if (c->send(std::move(f))) return true;
        }
    return false;
}

void Mesh::notify_locked() {
    cv_.notify_all();
    for (auto &kv : mailboxes_) kv.second->cv.notify_all();
}

std::shared_ptr<Mailbox> Mesh::mailbox_locked(const OpKey &k) {
    auto it = mailboxes_.find(k);
    if (it != mailboxes_.end()) return it->second;
    if (unclaimed_ops_ >= kMaxUnclaimedOps) return nullptr;
    ++unclaimed_ops_;  // until open_channel() opens it
    return mailboxes_[k] = std::make_shared<Mailbox>();
}

void Mesh::drop_mailbox_locked(std::map<OpKey, std::shared_ptr<Mailbox>>::iterator it) {
    Mailbox &mb = *it->second;
    if (!mb.opened) --unclaimed_ops_;
    unclaimed_bytes_ -= mb.early_bytes;
    mb.early_bytes = 0;
    mailboxes_.erase(it);
}

void Mesh::release_mailbox(const OpKey &k) {
    std::lock_guard<std::mutex> lk(mu_);
    auto it = mailboxes_.find(k);
    if (it != mailboxes_.end()) drop_mailbox_locked(it);
    if (member_ && k.epoch == view_.epoch) finished_.insert(k);
}

// --------------------------------------------------------------- caller side

net::LinkPtr Mesh::dial_member(const Member &peer, const std::string &purpose) {
    std::string errors;
    pccl_status_t st = PCCL_ERR_PEER_LOST;
    for (const auto &a : peer.addrs) {
        {
            // A dead peer may still accept TCP (a frozen process): do not
            // wait out a handshake it will never answer. (Dials already
            // under way when it is declared dead are aborted.)
            std::lock_guard<std::mutex> lk(mu_);
            auto dead = dead_.find(peer.id);
            if (dead != dead_.end() && view_.index_of(peer.id) >= 0)
                fail(PCCL_ERR_PEER_LOST, "peer " + peer.id + " was lost: " + dead->second);
        }
        try {
            return transport_->dial(Multiaddr::parse(a), config_.timeout_s, purpose);
        } catch (const Error &e) {
            if (e.status() == PCCL_ERR_AUTH_FAILED || e.status() == PCCL_ERR_CLOSED) st = e.status();
            errors += "; " + std::string(e.what());
        }
    }
    Member fresher;
    {
        std::lock_guard<std::mutex> lk(mu_);
        auto it = fresh_addrs_.find(peer.id);
        if (it != fresh_addrs_.end() && it->second.incarnation == peer.incarnation &&
            it->second.addrs_version > peer.addrs_version)
            fresher = it->second;
    }
    // It re-advertised while we dialed the old addresses (its relay died).
    if (!fresher.id.empty()) return dial_member(fresher, purpose);
    fail(st, "cannot reach peer " + peer.id + errors);
}

net::LinkPtr Mesh::control_conn(const Member &peer) {
    {
        std::lock_guard<std::mutex> lk(mu_);
        auto it = conns_.find(peer.id);
        if (it != conns_.end())
            for (auto &c : it->second)
                if (c->state() == net::Link::State::ready) return c;
    }
    return dial_member(peer, "control");
}

void Mesh::connect_all_members(const std::set<std::string> &admitted) {
    View v;
    MsgValue commit;
    {
        std::lock_guard<std::mutex> lk(mu_);
        v = view_;
        commit = commit_msg_;
    }
    for (const auto &m : v.members) {
        if (m.id == self_id_) continue;
        try {
            net::LinkPtr c = control_conn(m);
            // A joiner learns that it was admitted from the commit its
            // bootstrap peer forwards; if that peer died meanwhile, it would
            // wait forever while we run ops that include it. So every member
            // tells it (duplicates are ignored: the epoch does not grow).
            if (admitted.count(m.id) && !commit.is_nil()) send_on(c, commit);
        } catch (const Error &e) {
            if (e.status() == PCCL_ERR_CLOSED) throw;
            std::lock_guard<std::mutex> lk(mu_);
            declare_dead_locked(m.id, e.what());
        }
    }
}

std::vector<net::LinkPtr> Mesh::data_links(const Member &peer) {
    std::vector<net::LinkPtr> out;
    size_t have = 0;
    {
        std::lock_guard<std::mutex> lk(mu_);
        auto it = data_out_.find(peer.id);
        if (it != data_out_.end()) out = it->second;
        have = out.size();
    }
    for (size_t i = have; i < config_.streams; ++i) {
        net::LinkPtr c = dial_member(peer, "data");
        std::lock_guard<std::mutex> lk(mu_);
        if (c->state() != net::Link::State::ready) continue;
        data_out_[peer.id].push_back(c);
        out.push_back(c);
    }
    if (out.empty()) fail(PCCL_ERR_PEER_LOST, "no connection to peer " + peer.id);
    return out;
}

void Mesh::update_topology(double deadline) {
    if (deadline <= 0) deadline = now_s() + config_.join_timeout_s;
    std::unique_lock<std::mutex> lk(mu_);
    if (closed_) fail(PCCL_ERR_CLOSED, "communicator closed");
    if (!member_) {
        // A joiner asks to be admitted here, not when it connected, and waits
        // for the members' next round to admit it.
        if (!join_asked_ && admitted_.members.empty()) ask_to_join(lk, deadline);
        while (!member_) {
            if (closed_) fail(PCCL_ERR_CLOSED, "communicator closed");
            if (!admitted_.members.empty()) {
                View v = std::move(admitted_);
                admitted_ = View{};
                install_locked(std::move(v), std::move(admitted_commit_));
                admitted_commit_ = MsgValue();
                continue;
            }
            if (now_s() >= deadline)
                fail(PCCL_ERR_TIMEOUT, "not admitted to the run within " + std::to_string(config_.join_timeout_s) +
                                           " s (do the members call update_topology()?)");
            cv_.wait_for(lk, std::chrono::milliseconds(50));
        }
        lk.unlock();
        connect_all_members({});
        return;
    }
    for (const auto &kv : mailboxes_)
        if (kv.first.epoch == view_.epoch && kv.second.use_count() > 1)
            fail(PCCL_ERR_INVALID_USAGE, "update_topology() while a collective is in flight: wait for it first");
    const View before = view_;
    const uint64_t epoch = view_.epoch;
    std::string sent_to;
    // "ready" is re-sent now and then: the coordinator may have moved to a
    // newer view than ours (it answers with it) or lag behind ours (it
    // installs the one we send); see handle_control("ready").
    const double resend_every = std::max(0.05, config_.timeout_s / 4);
    double resend_at = 0;
    while (member_ && view_.epoch == epoch) {
        if (closed_) fail(PCCL_ERR_CLOSED, "communicator closed");
        const std::string coord = coordinator_locked();
        if (coord != sent_to || (coord != self_id_ && now_s() >= resend_at)) {
            sent_to = coord;
            resend_at = now_s() + resend_every;
            if (coord == self_id_) {
                round_.ready(epoch, self_id_);
                maybe_commit_locked();
            } else {
                Member cm = view_.members[view_.index_of(coord)];
                MsgValue ready = view_to_msg(view_, "ready");
                std::vector<MsgValue> joiners;
                for (const auto &kv : pending_) joiners.push_back(member_to_msg(kv.second));
                ready.as_map().emplace_back("pending", MsgValue::array(std::move(joiners)));
                std::vector<MsgValue> relayed;
                for (const auto &id : relay_only_locked()) relayed.emplace_back(id);
                ready.as_map().emplace_back("relayed", MsgValue::array(std::move(relayed)));
                std::vector<MsgValue> rtts;  // [id, microseconds]: for the ring order
                for (const auto &kv : link_rtts_locked())
                    if (view_.index_of(kv.first) >= 0)
                        rtts.push_back(MsgValue::array({kv.first, uint64_t(std::min(kv.second, 3600.0) * 1e6)}));
                ready.as_map().emplace_back("rtt", MsgValue::array(std::move(rtts)));
                if (!commit_msg_.is_nil()) ready.as_map().emplace_back("commit", commit_msg_);
                lk.unlock();
                try {
                    net::LinkPtr c = control_conn(cm);
                    net::OutFrame f;
                    f.header.type = net::FrameType::control;
                    f.owned = msgpack_encode(ready);
                    if (!c->send(std::move(f))) fail(PCCL_ERR_PEER_LOST, "connection closed");
                    lk.lock();
                } catch (const Error &e) {
                    if (e.status() == PCCL_ERR_CLOSED) throw;
                    lk.lock();
                    declare_dead_locked(coord, e.what());
                    continue;
                }
            }
            continue;
        }
        if (now_s() >= deadline)
            fail(PCCL_ERR_TIMEOUT, "update_topology: the other members did not arrive within " +
                                       std::to_string(config_.join_timeout_s) + " s");
        cv_.wait_for(lk, std::chrono::milliseconds(50));
    }
    if (!member_) fail(PCCL_ERR_PEER_LOST, "this peer was removed from the run (the others declared it dead); "
                                     "call update_topology() again to rejoin");
    std::set<std::string> admitted;  // joiners admitted by this view
    for (const auto &m : view_.members) admitted.insert(m.id);
    for (const auto &m : before.members) admitted.erase(m.id);
    lk.unlock();
    connect_all_members(admitted);
}

size_t Mesh::wait_for_peers(size_t n, double timeout_s) {
    if (!(timeout_s >= 0)) fail(PCCL_ERR_INVALID_ARGUMENT, "wait_for_peers: timeout must be >= 0");
    const double deadline = now_s() + timeout_s;
    auto too_late = [&](size_t have) {
        fail(PCCL_ERR_TIMEOUT, "wait_for_peers: " + std::to_string(have) + " of " + std::to_string(n) +
                                   " peers after " + std::to_string(timeout_s) + " s");
    };
    if (!is_member()) {
        if (now_s() >= deadline) too_late(0);
        update_topology(deadline);  // asks to be admitted
    }
    std::unique_lock<std::mutex> lk(mu_);
    while (true) {
        if (closed_) fail(PCCL_ERR_CLOSED, "communicator closed");
        if (!member_) fail(PCCL_ERR_PEER_LOST, "this peer was removed from the run (the others declared it dead); "
                                     "call update_topology() again to rejoin");
        if (view_.members.size() >= n) return view_.members.size();
        // A round is worth running when someone asked to join, or when another
        // member already runs one (the coordinator sees its ready): every
        // member of the view must take part, or it would wait for us.
        const bool others_ready = round_.others_ready(view_.epoch, self_id_);
        if (!pending_.empty() || others_ready || !dead_.empty()) {
            lk.unlock();
            update_topology(deadline);
            lk.lock();
            continue;
        }
        if (now_s() >= deadline) too_late(view_.members.size());
        cv_.wait_for(lk, std::chrono::milliseconds(50));
    }
}

std::unique_ptr<Channel> Mesh::open_channel(uint32_t tag) {
    std::lock_guard<std::mutex> lk(mu_);
    if (closed_) fail(PCCL_ERR_CLOSED, "communicator closed");
    if (!member_ && removed_)
        fail(PCCL_ERR_PEER_LOST, "this peer was removed from the run (the others declared it dead); "
                                 "call update_topology() to rejoin");
    if (!member_)
        fail(PCCL_ERR_INVALID_USAGE, "not a member of the run yet: call update_topology() first");
    OpKey k{view_.epoch, tag, next_seq_[tag]++};
    std::shared_ptr<Mailbox> mb;
    auto it = mailboxes_.find(k);
    if (it != mailboxes_.end() && !it->second->opened) {
        mb = it->second;
        mb->opened = true;
        --unclaimed_ops_;
        unclaimed_bytes_ -= mb->early_bytes;
        mb->early_bytes = 0;
    } else {
        mb = mailboxes_[k] = std::make_shared<Mailbox>();
        mb->opened = true;
    }
    size_vote_locked(*mb, view_);
    size_t rank = static_cast<size_t>(view_.index_of(self_id_));
    return std::make_unique<MeshChannel>(this, k, view_, rank, mb);
}

// ----------------------------------------------------------------- liveness

void Mesh::heartbeat_loop() {
    const double bound = std::min(config_.heartbeat_timeout_s, config_.timeout_s);
    const double period = std::max(0.02, std::min(1.0, bound / 4));
    {
        std::lock_guard<std::mutex> lk(mu_);
        last_tick_ = now_s();
    }
    while (!closed_) {
        bool moved;
        {
            std::lock_guard<std::mutex> lk(mu_);
            moved = transport_->addrs_version() != transport_addrs_seen_;
        }
        if (moved) readvertise();
        {
            std::unique_lock<std::mutex> lk(mu_);
            cv_.wait_for(lk, std::chrono::duration<double>(period), [&] { return closed_.load(); });
            if (closed_) return;
            const double now = now_s();
            for (auto it = closing_.begin(); it != closing_.end();) {
                if (it->second > now) {
                    ++it;
                    continue;
                }
                it->first->close(PCCL_ERR_PEER_LOST, "removed from the run");
                it = closing_.erase(it);
            }
            if (now - last_tick_ > bound) {
                // This thread did not run for longer than the bound: we were
                // frozen (SIGSTOP, swapping), not the peers. Give them a fresh
                // bound; what arrived meanwhile is read first.
                for (auto &kv : last_heard_) kv.second = std::max(kv.second, now);
            }
            last_tick_ = now;
            if (!member_) continue;
            std::vector<std::pair<std::string, std::string>> silent;
            for (const auto &m : view_.members) {
                if (m.id == self_id_ || dead_.count(m.id)) continue;
                auto it = conns_.find(m.id);
                if (it != conns_.end() && !it->second.empty()) {
                    net::OutFrame f;
                    f.header.type = net::FrameType::heartbeat;
                    auto direct = std::find_if(it->second.begin(), it->second.end(),
                                               [](const net::LinkPtr &c) { return !c->relayed(); });
                    (direct != it->second.end() ? *direct : it->second.front())->send(std::move(f));
                }
                double heard = last_heard_.count(m.id) ? last_heard_[m.id] : now;
                if (now - heard > bound)
                    silent.emplace_back(m.id, "silent for " + std::to_string(now - heard) + " s");
            }
            for (auto &s : silent) declare_dead_locked(s.first, s.second);
        }
    }
}

}  // namespace pccl::mesh
