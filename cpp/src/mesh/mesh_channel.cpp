#include "mesh/mesh_channel.h"

#include <chrono>
#include <set>

#include "common/clock.h"
#include "common/crypto.h"
#include "common/error.h"

namespace pccl::mesh {

// Borrowed buffers and expect()ed destinations must never be written after
// the op returns: the waits for the transport to let go of them are memory
// safety, not liveness, and keep a fixed cap far above any op timeout (the
// links are closed first, so they end in milliseconds).
constexpr double kReleaseCapS = 60.0;

MeshChannel::MeshChannel(const OpContext &ctx, OpKey key, View view, bool one_host, size_t rank,
                         std::shared_ptr<Mailbox> mb)
    : ctx_(ctx), key_(key), view_(std::move(view)), one_host_(one_host), rank_(rank), mb_(std::move(mb)),
      tracker_(std::make_shared<net::SendTracker>()) {}

MeshChannel::~MeshChannel() {
    quiesce();
    // Borrowed buffers may be freed once we return: make sure no queued
    // frame still points at them. Closing the links fails their queues.
    if (!tracker_->wait_drained(0.0)) {
        for (auto &kv : links_)
            for (auto &c : kv.second) c->close(PCCL_ERR_PEER_LOST, "op abandoned");
        tracker_->wait_drained(kReleaseCapS);
    }
    ctx_.router->release(key_);
}

void MeshChannel::send(size_t dst, uint32_t chunk, uint32_t sub, const void *data, size_t len) {
    net::OutFrame f;
    f.borrowed = static_cast<const uint8_t *>(data);
    f.header.length = static_cast<uint32_t>(len);
    post(dst, chunk, sub, std::move(f));
}

void MeshChannel::send_owned(size_t dst, uint32_t chunk, uint32_t sub, std::string bytes) {
    net::OutFrame f;
    f.owned = std::move(bytes);
    post(dst, chunk, sub, std::move(f));
}

Incoming MeshChannel::recv() {
    std::unique_lock<std::mutex> lk(ctx_.router->mutex());
    double deadline = now_s() + ctx_.timeout_s;
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
            fail(PCCL_ERR_TIMEOUT, "no data from the group for " + std::to_string(ctx_.timeout_s) + " s (op tag " +
                                       std::to_string(key_.tag) + ", epoch " + std::to_string(key_.epoch) + ")");
        mb_->cv.wait_for(lk, std::chrono::milliseconds(100));
    }
}

void MeshChannel::flush() {
    double deadline = now_s() + ctx_.timeout_s;
    while (!tracker_->wait(0.1)) {
        std::unique_lock<std::mutex> lk(ctx_.router->mutex());
        check_alive_locked();
        if (tracker_->wait_drained(0.0) || now_s() >= deadline) {
            lk.unlock();
            if (tracker_->wait(0.0)) return;
            fail(PCCL_ERR_PEER_LOST, "could not deliver data to a neighbour (connection closed)");
        }
    }
}

void MeshChannel::abort(pccl_status_t status, const std::string &message) {
    std::lock_guard<std::mutex> lk(ctx_.router->mutex());
    if (!mb_->aborted) {
        mb_->aborted = true;
        mb_->abort_status = status;
        mb_->abort_message = message;
    }
    broadcast_vote_locked({}, true, status, message);
}

void MeshChannel::expect(uint32_t chunk, uint32_t sub, void *dst, size_t len) {
    std::lock_guard<std::mutex> lk(ctx_.router->mutex());
    mb_->targets[{chunk, sub}] = Mailbox::Target{static_cast<uint8_t *>(dst), len};
}

void MeshChannel::quiesce() {
    std::unique_lock<std::mutex> lk(ctx_.router->mutex());
    std::set<uint64_t> writers;
    for (auto it = mb_->targets.begin(); it != mb_->targets.end();) {
        if (it->second.writer) writers.insert(it->second.writer);
        it = it->second.writer ? std::next(it) : mb_->targets.erase(it);
    }
    if (writers.empty()) return;
    // A frame is being written into our memory right now: cut those
    // connections (the op failed anyway); their closing releases it.
    ctx_.links->close_ids(writers, "op abandoned mid-frame");
    mb_->cv.wait_for(lk, std::chrono::duration<double>(kReleaseCapS), [&] { return mb_->writing == 0; });
    mb_->targets.clear();
}

void MeshChannel::commit() {
    const std::string mine = done_bytes(key_, ctx_.self_id);
    const Signature sig = sign_as(*ctx_.identity, mine.data(), mine.size());
    std::unique_lock<std::mutex> lk(ctx_.router->mutex());
    mb_->vote.add_done(rank_);
    mb_->done_sigs[rank_].assign(reinterpret_cast<const char *>(sig.data()), sig.size());
    double deadline = now_s() + ctx_.timeout_s;
    size_t known = 0;  // members known done: the commit's deadline restarts when it grows
    for (;;) {
        const Routes &routes = ctx_.router->routes_locked();
        if (routes.closed) fail(PCCL_ERR_CLOSED, "communicator closed during the op");
        std::vector<size_t> dead;
        for (size_t r = 0; r < view_.members.size(); ++r)
            if (routes.dead.count(view_.members[r].id)) dead.push_back(r);
        const double now = now_s();
        if (mb_->vote.done().count() > known) {
            known = mb_->vote.done().count();
            deadline = now + ctx_.timeout_s;
        }
        const OpVote::Progress p = mb_->vote.progress(now, !dead.empty());
        for (const auto &s : p.sends) send_vote_locked(s.to, s.done, {}, false, PCCL_OK, "");
        if (p.succeeded) return;
        // Success first: a member's fail vote after its own done (its commit
        // timed out, or it judged across a partition) cannot undo the op for
        // a member holding every done and its echo, as it cannot for those
        // that returned already (mesh.h).
        if (mb_->aborted) fail(mb_->abort_status, mb_->abort_message);
        const OpVote::Judgement j = mb_->vote.judge(dead);
        for (size_t d : j.nack) broadcast_vote_locked({view_.members[d].id}, false, PCCL_OK, "");
        if (j.failed) {
            const std::string &lost = view_.members[j.lost].id;
            fail(PCCL_ERR_PEER_LOST, "peer " + lost + " was lost before the op committed: " + routes.dead.at(lost));
        }
        if (now_s() >= deadline)
            fail(PCCL_ERR_TIMEOUT,
                 "the op's commit did not complete within " + std::to_string(ctx_.timeout_s) + " s");
        const double wait_s = p.wake_s > 0 ? std::min(0.1, std::max(0.0, p.wake_s - now_s())) : 0.1;
        mb_->cv.wait_for(lk, std::chrono::duration<double>(wait_s));
    }
}

void MeshChannel::send_vote_locked(size_t to, const RankSet &done_set, const std::vector<std::string> &nack,
                                   bool failed, pccl_status_t status, const std::string &message) {
    std::vector<MsgValue> done, dsig, nacks(nack.begin(), nack.end());
    for (size_t r : done_set.ranks()) {
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
    ctx_.links->send_control(view_.members[to].id, m);
}

void MeshChannel::broadcast_vote_locked(const std::vector<std::string> &nack, bool failed, pccl_status_t status,
                                        const std::string &message) {
    for (size_t r = 0; r < view_.members.size(); ++r)
        if (r != rank_) send_vote_locked(r, mb_->vote.done(), nack, failed, status, message);
    mb_->vote.sent_to_all();
}

void MeshChannel::check_alive_locked() const {
    const Routes &routes = ctx_.router->routes_locked();
    if (routes.closed) fail(PCCL_ERR_CLOSED, "communicator closed during the op");
    for (const auto &m : view_.members) {
        auto it = routes.dead.find(m.id);
        if (it != routes.dead.end()) fail(PCCL_ERR_PEER_LOST, "peer " + m.id + " was lost: " + it->second);
    }
    if (routes.view.epoch != key_.epoch)
        fail(PCCL_ERR_INVALID_USAGE, "the view changed during the op (update_topology ran concurrently)");
}

void MeshChannel::post(size_t dst, uint32_t chunk, uint32_t sub, net::OutFrame f) {
    f.header.type = net::FrameType::data;
    f.header.tag = key_.tag;
    f.header.epoch = key_.epoch;
    f.header.seq = key_.seq;
    f.header.chunk = chunk;
    f.header.sub = sub;
    f.tracker = tracker_;
    auto &links = links_[dst];
    if (links.empty()) {  // the pool's links; dialed by the pool, never here
        links = ctx_.links->data_links(view_.members.at(dst), now_s() + ctx_.timeout_s, [this] {
            std::lock_guard<std::mutex> lk(ctx_.router->mutex());
            check_alive_locked();
        });
        // On one host striping buys nothing (no loss, no congestion window to
        // grow) and every extra socket costs CPU, the limit there: 4 peers x
        // 64 MiB took 111-130 ms on one stream, 137-143 ms on 8 (2 cores).
        if (one_host_ && links.size() > 1) links.resize(1);
    }
    size_t len = f.borrowed ? f.header.length : f.owned.size();
    if (!net::Link::send_striped(links, std::move(f)))
        fail(PCCL_ERR_PEER_LOST,
             "connection to peer " + view_.members[dst].id + " closed: " + links.front()->close_reason());
    tx_bytes += len;
}

}  // namespace pccl::mesh
