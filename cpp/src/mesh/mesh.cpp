#include "mesh/mesh.h"

#include <algorithm>
#include <chrono>
#include <thread>

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

// ----------------------------------------------------------------------- Mesh

Mesh::Mesh(MeshConfig config)
    : config_(std::move(config)),
      links_(config_.streams, [this](const Member &m, const std::string &purpose) { return dial_member(m, purpose); }),
      liveness_(config_.timeout_s, config_.heartbeat_timeout_s) {
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
    router_ = std::make_unique<Router>(self_id_, gossip_gap_s(liveness_.bound()));

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
    liveness_.start(this);

    if (boot.empty()) {
        std::lock_guard<std::mutex> lk(mu_);
        member_ = true;
        view_.epoch = 1;
        Member me{self_id_, incarnation_, addrs_, 0, {}};
        sign_record(me);
        view_.members.push_back(std::move(me));
        publish_locked();
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
        if (!c || c->state() != net::Link::State::ready || !Links::send_on(c, join)) continue;
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
        liveness_.stop();
        liveness_.join();
        return;
    }
    {
        std::lock_guard<std::mutex> lk(mu_);
        const MsgValue bye = MsgValue::map({{"t", "bye"}});
        for (const auto &id : links_.peers()) links_.send_control(id, bye);  // one per peer
        publish_locked();  // ops in flight see the close
        notify_locked();
    }
    liveness_.stop();
    if (transport_) transport_->shutdown();  // a redial or a pool dial in progress fails now
    liveness_.join();
    links_.close();
    std::lock_guard<std::mutex> lk(mu_);
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
    tell_members_locked(member_to_msg(m, "addrs"), {from, m.id});
    return true;
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
    liveness_.heard(c->remote_id());
    {
        // The common case (a link of a member's known incarnation, or of a
        // non-member) from the routing snapshot: the stream pool's links
        // land while a view change holds mu_.
        const std::shared_ptr<const Routes> r = router_->routes();
        const int idx = r->view.index_of(c->remote_id());
        if (!r->member || idx < 0 || r->view.members[idx].incarnation == c->remote_incarnation()) {
            links_.add(c);
            return;
        }
    }
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
        if (links_.connected_as(c->remote_id(), view_.members[idx].incarnation)) {
            c->close(PCCL_ERR_PROTOCOL, "another incarnation of this peer is still connected");
            return;
        }
        links_.add(c);
        declare_dead_locked(c->remote_id(), "it was restarted (a new incarnation connected)");
        return;
    }
    links_.add(c);
}

void Mesh::on_closed(const net::LinkPtr &c) {
    links_.remove(c);
    router_->release_target(c->id(), false);  // a frame being written into an op's memory never will be
    std::lock_guard<std::mutex> lk(mu_);
    const std::string &id = c->remote_id();
    auto j = joiner_conns_.find(id);
    if (j != joiner_conns_.end() && j->second == c) joiner_conns_.erase(j);
    // Just resumed from a freeze (our heartbeat thread has not ticked for
    // longer than the bound): links the others closed meanwhile do not make
    // them dead here. What they queued (the commit that removed us) is read
    // first; the heartbeat bound decides about the rest.
    const bool resumed = liveness_.resumed();
    if (!resumed && !links_.connected(id) && member_ && view_.index_of(id) >= 0 && id != self_id_) {
        if (c->relayed() && !leaving_.count(id) && !closed_) {
            // Its relay failed, not necessarily the peer: the ops of this
            // view fail (and are retried), the redial thread relinks it at
            // its latest addresses, and its heartbeat timeout still applies.
            router_->abort_epoch("the relayed link to peer " + id + " broke: " + c->close_reason());
        } else {
            declare_dead_locked(id, leaving_.count(id) ? "it left the run" : c->close_reason());
        }
    }
    notify_locked();
}

void Mesh::on_frame(const net::LinkPtr &c, net::Frame &&f) {
    const std::string &from = c->remote_id();
    liveness_.heard(from);
    if (f.header.type == net::FrameType::data) return router_->on_data(c, std::move(f));
    if (f.header.type != net::FrameType::control) return;  // heartbeat: liveness only
    // The largest honest control message is a ready carrying a view and
    // its commit (a few hundred bytes per member).
    if (f.size() > kMaxControlBytes)
        fail(PCCL_ERR_PROTOCOL, "control message of " + std::to_string(f.size()) + " bytes (limit " +
                                    std::to_string(kMaxControlBytes) + ")");
    MsgValue m = msgpack_decode(f.data(), f.size());
    if (m.at("t").as_str() == "vote") return router_->on_vote(from, m);  // an op's: routing, not membership
    std::lock_guard<std::mutex> lk(mu_);
    handle_control(c, m);
    publish_locked();
}

uint8_t *Mesh::payload_target(const net::LinkPtr &c, const net::FrameHeader &h) {
    return router_->payload_target(c, h);
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
        Links::send_on(c, MsgValue::map({{"t", "join_ack"}}));
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
            if (!commit_msg_.is_nil()) Links::send_on(c, commit_msg_);
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
    if (idx >= 0 && links_.connected_as(j.id, view_.members[idx].incarnation)) return;
    if (idx >= 0) declare_dead_locked(j.id, "it was restarted (a new incarnation asked to join)");
    bool fresh = !pending_.count(j.id) || pending_[j.id].incarnation != j.incarnation;
    pending_[j.id] = j;
    publish_locked();
    if (!fresh) return;
    tell_members_locked(member_to_msg(j, "pending"));
}

bool Mesh::alive_locked(const std::string &id) const { return !dead_.count(id); }

void Mesh::maybe_commit_locked() {
    if (!member_ || closed_ || !round_.complete(view_, dead_, self_id_)) return;
    // Our own links count like every member's report (ring order).
    reports_.relay_only[self_id_] = links_.relay_only();
    reports_.rtt[self_id_] = links_.rtts();
    View nv = next_view(view_, dead_, pending_, reports_, config_.ring_by_id);
    MsgValue msg = sign_commit_locked(nv);
    for (const auto &m : view_.members)
        if (m.id != self_id_ && alive_locked(m.id)) links_.send_control(m.id, msg);
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
        router_->abort_epoch("this peer was removed from the run (the others declared it dead)");
        publish_locked();
        notify_locked();
        return;
    }
    // Removed members: the commit tells them so (a frozen peer reads it
    // when it resumes); their links close once that had time to leave (kept
    // open for the op timeout: a frozen peer's kernel holds the notice until
    // it resumes, as long as we have not closed).
    for (const auto &m : view_.members)
        if (m.id != self_id_ && v.index_of(m.id) < 0) links_.retire(m.id, commit, now_s() + config_.timeout_s);
    // From the commit's own addresses (the same bytes on every member), not
    // from the fresher ones learned here since: every member must agree.
    view_one_host_ = one_host(v);
    apply_fresh_addrs_locked(v.members);
    view_ = std::move(v);
    commit_msg_ = std::move(commit);
    member_ = true;
    removed_ = false;
    dead_.clear();
    round_.installed(view_.epoch);
    for (const auto &m : view_.members) pending_.erase(m.id);
    liveness_.reset(view_.members);
    // The ops of other views fail, the stream pool dials our ring neighbours.
    publish_locked();
    links_.install(view_, self_id_, view_one_host_);
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
    publish_locked();
    // One control link stays open: a peer that was only frozen finds, when
    // it resumes, the commit that removed it there (see install_locked)
    // instead of an empty socket, and rejoins instead of carrying on alone.
    links_.close_dead(id, view_.members[view_.index_of(id)].incarnation, why);
    transport_->abort_dials(id, "peer declared dead: " + why);  // the pool or a redial may be dialing it
    notify_locked();
    maybe_commit_locked();  // the dead no longer hold up a topology round
}

void Mesh::tell_members_locked(const MsgValue &m, const std::set<std::string> &skip) {
    for (const auto &o : view_.members)
        if (o.id != self_id_ && !skip.count(o.id)) links_.send_control(o.id, m);
}

void Mesh::notify_locked() {
    cv_.notify_all();
    router_->notify_all();
    links_.notify();
}

void Mesh::publish_locked() {
    auto r = std::make_shared<Routes>();
    r->member = member_;
    r->view = view_;
    r->admitted = admitted_;
    for (const auto &kv : pending_) r->pending.insert(kv.first);
    r->dead = dead_;
    r->closed = closed_;
    router_->publish(std::move(r));
}

void Mesh::testing_hold_membership_lock(double seconds) {
    std::lock_guard<std::mutex> lk(mu_);
    std::this_thread::sleep_for(std::chrono::duration<double>(seconds));
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
    if (net::LinkPtr c = links_.ready_link(peer.id)) return c;
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
            if (admitted.count(m.id) && !commit.is_nil()) Links::send_on(c, commit);
        } catch (const Error &e) {
            if (e.status() == PCCL_ERR_CLOSED) throw;
            std::lock_guard<std::mutex> lk(mu_);
            declare_dead_locked(m.id, e.what());
        }
    }
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
    if (router_->busy(view_.epoch))
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
                for (const auto &id : links_.relay_only()) relayed.emplace_back(id);
                ready.as_map().emplace_back("relayed", MsgValue::array(std::move(relayed)));
                std::vector<MsgValue> rtts;  // [id, microseconds]: for the ring order
                for (const auto &kv : links_.rtts())
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
    Router::Opened op = router_->open(tag);  // in view_: the router's snapshot is published under mu_
    const OpContext ctx{router_.get(), &links_, &ident_, self_id_, config_.timeout_s};
    return std::make_unique<MeshChannel>(ctx, op.key, view_, view_one_host_, size_t(view_.index_of(self_id_)),
                                         op.mailbox);
}

// ----------------------------------------------------------------- liveness

void Mesh::liveness_tick(double now) {
    links_.reap(now);
    if (transport_->addrs_version() != transport_addrs_seen_) readvertise();
}

std::vector<std::string> Mesh::watched() {
    // From the routing snapshot, not under mu_: a slow view change does not
    // stop our heartbeats.
    const std::shared_ptr<const Routes> r = router_->routes();
    std::vector<std::string> out;
    if (!r->member || r->closed) return out;
    for (const auto &m : r->view.members)
        if (m.id != self_id_ && !r->dead.count(m.id)) out.push_back(m.id);
    return out;
}

void Mesh::beat(const std::string &id) { links_.heartbeat(id); }

void Mesh::silent(const std::vector<std::pair<std::string, std::string>> &who) {
    std::lock_guard<std::mutex> lk(mu_);
    if (!member_ || closed_) return;
    // Re-checked under mu_: a view installed since gave its members a fresh bound.
    for (const auto &s : who)
        if (liveness_.silence(s.first) > liveness_.bound()) declare_dead_locked(s.first, s.second);
}

std::vector<Member> Mesh::unlinked() {
    std::lock_guard<std::mutex> lk(mu_);
    std::vector<Member> lost;
    if (!member_ || closed_) return lost;
    for (const auto &m : view_.members)
        if (m.id != self_id_ && !links_.connected(m.id) && !dead_.count(m.id) && !leaving_.count(m.id))
            lost.push_back(m);
    return lost;
}

void Mesh::relink(const Member &m) {
    control_conn(m);
    debug_log(self_id_.substr(0, 8), "relinked to " + m.id.substr(0, 8));
}

}  // namespace pccl::mesh
