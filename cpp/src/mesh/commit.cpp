#include "mesh/commit.h"

namespace pccl::mesh {

TopologyRound::ReadyAction TopologyRound::classify(uint64_t their_epoch, uint64_t our_epoch) {
    if (their_epoch < our_epoch) return ReadyAction::answer_with_commit;
    if (their_epoch > our_epoch) return ReadyAction::adopt_their_commit;
    return ReadyAction::record;
}

bool TopologyRound::complete(const View &v, const DeadSet &dead, const std::string &self) const {
    if (coordinator_of(v, dead, self) != self) return false;
    auto it = ready_.find(v.epoch);
    for (const auto &m : v.members)
        if (!dead.count(m.id) && (it == ready_.end() || !it->second.count(m.id))) return false;
    return true;
}

bool TopologyRound::others_ready(uint64_t epoch, const std::string &self) const {
    auto r = ready_.find(epoch);
    return r != ready_.end() && !r->second.empty() && !(r->second.size() == 1 && r->second.count(self));
}

void TopologyRound::installed(uint64_t epoch) {
    for (auto it = ready_.begin(); it != ready_.end();) it = it->first < epoch ? ready_.erase(it) : std::next(it);
}

bool RankSet::set(size_t r) {
    if (r >= n_) return false;
    uint64_t &w = words_[r / 64];
    const uint64_t bit = uint64_t(1) << (r % 64);
    if (w & bit) return false;
    w |= bit;
    ++count_;
    return true;
}

bool RankSet::reset(size_t r) {
    if (!test(r)) return false;
    words_[r / 64] &= ~(uint64_t(1) << (r % 64));
    --count_;
    return true;
}

size_t RankSet::merge(const RankSet &o) {
    const size_t before = count_;
    const size_t n = std::min(words_.size(), o.words_.size());
    for (size_t i = 0; i < n; ++i) {
        const uint64_t add = o.words_[i] & ~words_[i];
        if (!add) continue;
        words_[i] |= add;
        count_ += static_cast<size_t>(__builtin_popcountll(add));
    }
    return count_ - before;
}

size_t RankSet::subtract(const RankSet &o) {
    const size_t before = count_;
    const size_t n = std::min(words_.size(), o.words_.size());
    for (size_t i = 0; i < n; ++i) {
        const uint64_t gone = o.words_[i] & words_[i];
        if (!gone) continue;
        words_[i] &= ~gone;
        count_ -= static_cast<size_t>(__builtin_popcountll(gone));
    }
    return before - count_;
}

bool RankSet::covers(const RankSet &o) const {
    const size_t n = std::min(words_.size(), o.words_.size());
    for (size_t i = 0; i < n; ++i)
        if (o.words_[i] & ~words_[i]) return false;
    for (size_t i = n; i < o.words_.size(); ++i)
        if (o.words_[i]) return false;
    return true;
}

std::vector<size_t> RankSet::ranks() const {
    std::vector<size_t> out;
    out.reserve(count_);
    for (size_t i = 0; i < words_.size(); ++i)
        for (uint64_t w = words_[i]; w; w &= w - 1) out.push_back(i * 64 + size_t(__builtin_ctzll(w)));
    return out;
}

bool OpVote::add_done(size_t r) {
    if (my_nacks_.test(r)) return false;
    return done_.set(r);
}

void OpVote::merge_done(const RankSet &s, size_t from) {
    if (from != self_ && s.test(self_)) echoed_ = true;
    note_shown(from, s);
    if (my_nacks_.count() == 0) {
        done_.merge(s);
        return;
    }
    for (size_t r : s.ranks()) add_done(r);
}

void OpVote::note_shown(size_t from, const RankSet &s) {
    if (from < size_) shown_[from].merge(s);
}

void OpVote::add_nack(size_t dead, size_t by) {
    if (dead >= size_ || by >= size_) return;
    auto it = nacked_by_.find(dead);
    if (it == nacked_by_.end()) it = nacked_by_.emplace(dead, RankSet(size_)).first;
    it->second.set(by);
}

void OpVote::sent_to_all() {
    for (size_t r = 0; r < size_; ++r)
        if (r != self_) sent_[r].merge(done_);
}

OpVote::Progress OpVote::progress(double now_s, bool someone_dead) {
    Progress p;
    const bool all_done = done_.count() == size_;
    const bool gap_over = now_s >= last_forward_s_ + gap_s_;
    for (size_t r = 0; r < size_; ++r) {
        if (r == self_) continue;
        RankSet need = done_;
        need.subtract(sent_[r]);
        need.subtract(shown_[r]);
        if (done_.test(r) && !sent_[r].test(r)) need.set(r);  // its echo
        if (need.count() == 0) continue;
        if (!(need.test(self_) || all_done || someone_dead || gap_over)) {
            p.wake_s = last_forward_s_ + gap_s_;
            continue;
        }
        sent_[r].merge(need);
        p.sends.push_back({r, std::move(need)});
    }
    if (!p.sends.empty()) {
        last_forward_s_ = now_s;
        if (p.wake_s > 0) p.wake_s = now_s + gap_s_;
    }
    p.succeeded = all_done && echoed_;
    return p;
}

OpVote::Judgement OpVote::judge(const std::vector<size_t> &dead) {
    Judgement j;
    if (dead.empty()) return j;
    RankSet live(size_);
    for (size_t r = 0; r < size_; ++r) live.set(r);
    for (size_t d : dead) live.reset(d);
    for (size_t d : dead) {
        if (d >= size_ || done_.test(d)) continue;
        if (my_nacks_.set(d)) {
            add_nack(d, self_);
            j.nack.push_back(d);
        }
        // Every live member nacked d: whoever had seen d done would have
        // gossiped that instead, so nobody did and nobody can succeed.
        if (nacked_by_.at(d).covers(live)) {
            j.failed = true;
            j.lost = d;
            return j;
        }
    }
    return j;
}

}  // namespace pccl::mesh
