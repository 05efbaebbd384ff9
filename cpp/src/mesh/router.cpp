#include "mesh/router.h"

#ifdef __GLIBC__
#include <malloc.h>
#endif

#include "common/error.h"
#include "common/log.h"
#include "net/peer_id.h"

namespace pccl::mesh {

std::string done_bytes(const OpKey &k, const std::string &id) {
    return std::string("pccl-done-v1", 13) +
           msgpack_encode(MsgValue::array({k.epoch, uint64_t(k.tag), uint64_t(k.seq), id}));
}

Router::Router(std::string self_id, double gossip_gap_s)
    : self_id_(std::move(self_id)), gossip_gap_s_(gossip_gap_s), routes_(std::make_shared<Routes>()) {}

std::shared_ptr<const Routes> Router::routes() const {
    std::lock_guard<std::mutex> lk(mu_);
    return routes_;
}

void Router::publish(std::shared_ptr<const Routes> routes) {
    std::lock_guard<std::mutex> lk(mu_);
    const bool installs = routes->member && (!routes_->member || routes_->view.epoch != routes->view.epoch);
    routes_ = std::move(routes);
    if (installs) installed_locked();
    notify_locked();
}

void Router::installed_locked() {
    const View &v = routes_->view;
    next_seq_.clear();
    finished_.clear();
    for (auto it = mailboxes_.begin(); it != mailboxes_.end();) {
        auto next = std::next(it);
        Mailbox &mb = *it->second;
        if (it->first.epoch != v.epoch) {  // an older view's op, or (a joiner) one of a view not ours
            mb.aborted = true;
            mb.abort_status = PCCL_ERR_INVALID_USAGE;
            mb.abort_message = "the view changed during the op";
            drop_mailbox_locked(it);
        } else {
            // Early news of this view's ops: keep only what its members said.
            auto outside = [&](const std::string &id) { return v.index_of(id) < 0; };
            size_vote_locked(mb, v);
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
}

void Router::notify_locked() {
    for (auto &kv : mailboxes_) kv.second->cv.notify_all();
}

void Router::notify_all() {
    std::lock_guard<std::mutex> lk(mu_);
    notify_locked();
}

bool Router::accept_op_locked(const OpKey &k, const std::string &from) const {
    if (finished_.count(k)) return false;
    const Routes &r = *routes_;
    if (!r.member) {
        // A joiner: only the view admitting it (members may start its ops
        // before its update_topology() installs that view).
        return !r.admitted.members.empty() && k.epoch == r.admitted.epoch && r.admitted.index_of(from) >= 0 &&
               k.seq < kSeqWindow;
    }
    if (k.epoch == r.view.epoch) {
        if (r.view.index_of(from) < 0) return false;
        // Members run the ops of a tag in the same order; one is ahead of us
        // only by the async ops it started on the tag before we started
        // ours (or by ops it ran alone).
        auto it = next_seq_.find(k.tag);
        const uint64_t next = it == next_seq_.end() ? 0 : it->second;
        return k.seq < next + kSeqWindow;
    }
    if (k.epoch == r.view.epoch + 1)  // the next view: its members are ours or joiners we know of
        return (r.view.index_of(from) >= 0 || r.pending.count(from)) && k.seq < kSeqWindow;
    return false;
}

const View *Router::op_view_locked(uint64_t epoch) const {
    const Routes &r = *routes_;
    if (r.member) return epoch == r.view.epoch ? &r.view : nullptr;
    return !r.admitted.members.empty() && epoch == r.admitted.epoch ? &r.admitted : nullptr;
}

void Router::size_vote_locked(Mailbox &mb, const View &v) const {
    if (mb.vote.sized()) return;
    const int me = v.index_of(self_id_);
    if (me < 0) return;  // not ours: nothing will commit it here
    mb.vote = OpVote(v.members.size(), size_t(me), gossip_gap_s_);
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

std::shared_ptr<Mailbox> Router::mailbox_locked(const OpKey &k) {
    auto it = mailboxes_.find(k);
    if (it != mailboxes_.end()) return it->second;
    if (unclaimed_ops_ >= kMaxUnclaimedOps) return nullptr;
    ++unclaimed_ops_;  // until open() opens it
    return mailboxes_[k] = std::make_shared<Mailbox>();
}

void Router::drop_mailbox_locked(std::map<OpKey, std::shared_ptr<Mailbox>>::iterator it) {
    Mailbox &mb = *it->second;
    if (!mb.opened) --unclaimed_ops_;
    unclaimed_bytes_ -= mb.early_bytes;
    mb.early_bytes = 0;
    mailboxes_.erase(it);
}

void Router::on_data(const net::LinkPtr &c, net::Frame &&f) {
    const std::string &from = c->remote_id();
    std::lock_guard<std::mutex> lk(mu_);
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

uint8_t *Router::payload_target(const net::LinkPtr &c, const net::FrameHeader &h) {
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

void Router::release_target(uint64_t conn, bool completed) {
    std::lock_guard<std::mutex> lk(mu_);
    release_target_locked(conn, completed);
}

void Router::release_target_locked(uint64_t conn, bool completed) {
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

void Router::on_vote(const std::string &from, const MsgValue &m) {
    const uint64_t tag = m.at("tag").as_uint(), seq = m.at("seq").as_uint();
    if (tag > 0xffffffffu || seq > 0xffffffffu) fail(PCCL_ERR_PROTOCOL, "vote for an op key out of range");
    OpKey k{m.at("epoch").as_uint(), static_cast<uint32_t>(tag), static_cast<uint32_t>(seq)};
    std::lock_guard<std::mutex> lk(mu_);
    const Routes &r = *routes_;
    // Only members of that view vote on its ops (a peer from the other side
    // of a partition that reached the same epoch number must not), and
    // only on ops that can still be ours (see accept_op_locked).
    if (!accept_op_locked(k, from)) return;
    auto existing = mailboxes_.find(k);
    const bool failed = m.at("fail").as_bool();
    if (failed && m.at("status").as_uint() == PCCL_ERR_TIMEOUT && r.member && k.epoch == r.view.epoch &&
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
    const int from_rank = ov ? ov->index_of(from) : -1;
    RankSet shown(ov ? ov->members.size() : 0);
    for (size_t i = 0; i < done.size(); ++i) {
        const std::string &id = done[i].as_str();
        if (!dsig || i >= dsig->as_array().size()) continue;
        const int rk = ov ? ov->index_of(id) : -1;
        if (ov && rk >= 0 && id == self_id_ && from != self_id_ && size_t(rk) < mb->done_sigs.size() &&
            !mb->done_sigs[size_t(rk)].empty() && dsig->as_array()[i].as_bin() == mb->done_sigs[size_t(rk)])
            mb->vote.note_echo();  // our own signature of done, passed back: it reached `from`
        if (ov && rk >= 0) shown.set(size_t(rk));
        if (ov && (rk < 0 || mb->vote.is_done(size_t(rk)))) continue;
        if (!ov && (mb->early_done.count(id) || mb->early_done.size() >= r.view.members.size() + r.pending.size()))
            continue;
        const std::string &sig = dsig->as_array()[i].as_bin();
        const std::string b = done_bytes(k, id);
        // A member's own vote on its own link is authenticated by that
        // link (its peer id was proven in the handshake); a passed-on one
        // must carry the member's signature. The signature is kept either
        // way: we may pass the vote on.
        if (id != from &&
            !verify_peer(id, b.data(), b.size(), reinterpret_cast<const uint8_t *>(sig.data()), sig.size())) {
            debug_log(self_id_.substr(0, 8), "drop a done vote of " + id.substr(0, 8) + " not signed by it");
            continue;
        }
        if (ov) {
            if (mb->vote.add_done(size_t(rk))) mb->done_sigs[size_t(rk)] = sig;
        } else {
            mb->early_done[id] = sig;
        }
    }
    if (from_rank >= 0) mb->vote.note_shown(size_t(from_rank), shown);
    for (const auto &d : m.at("nack").as_array()) {
        const std::string &dead = d.as_str();
        if (ov) {
            const int dr = ov->index_of(dead), fr = ov->index_of(from);
            if (dr >= 0 && fr >= 0) mb->vote.add_nack(size_t(dr), size_t(fr));
        } else if (r.view.index_of(dead) >= 0) {  // the next view's members are ours (or joiners: never dead yet)
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
}

Router::Opened Router::open(uint32_t tag) {
    std::lock_guard<std::mutex> lk(mu_);
    const View &v = routes_->view;
    OpKey k{v.epoch, tag, next_seq_[tag]++};
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
    size_vote_locked(*mb, v);
    return {k, mb};
}

void Router::release(const OpKey &k) {
    std::lock_guard<std::mutex> lk(mu_);
    auto it = mailboxes_.find(k);
    if (it != mailboxes_.end()) drop_mailbox_locked(it);
    if (routes_->member && k.epoch == routes_->view.epoch) finished_.insert(k);
}

bool Router::busy(uint64_t epoch) const {
    std::lock_guard<std::mutex> lk(mu_);
    for (const auto &kv : mailboxes_)
        if (kv.first.epoch == epoch && kv.second.use_count() > 1) return true;
    return false;
}

void Router::abort_epoch(const std::string &why) {
    std::lock_guard<std::mutex> lk(mu_);
    for (auto &kv : mailboxes_) {
        if (kv.first.epoch != routes_->view.epoch || kv.second->aborted) continue;
        kv.second->aborted = true;
        kv.second->abort_status = PCCL_ERR_PEER_LOST;
        kv.second->abort_message = why;
    }
    notify_locked();
}

}  // namespace pccl::mesh
