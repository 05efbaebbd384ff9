#include "sim/simulator.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <functional>
#include <map>
#include <memory>
#include <set>
#include <unordered_map>

#include "collectives/reduce.h"
#include "common/error.h"
#include "compress/random.h"
#include "mesh/commit.h"
#include "mesh/view.h"

namespace pccl::sim {
namespace {

using mesh::CommitClaim;
using mesh::DeadSet;
using mesh::Member;
using mesh::OpVote;
using mesh::RankSet;
using mesh::TopologyRound;
using mesh::View;

// Modelled CPU costs (seconds): what the real mesh spends on its threads.
constexpr double kEncodeBps = 1e9;      // msgpack-encoding a control message, per byte (once per receiver)
constexpr double kVerifyS = 60e-6;      // one Ed25519 verification
constexpr double kHandleS = 2e-6;       // handling any frame
constexpr double kWakeS = 50e-6;        // an op's thread waking on its condition variable
constexpr size_t kRecordBytes = 120;    // a member record (id, incarnation, addresses, signature)
constexpr size_t kDoneBytes = 120;      // one done entry of a vote (id + its signature)
constexpr size_t kHeaderBytes = 64;
constexpr double kStepS = 5e-3;         // the training loop's compute between two ops

const char *status_name(pccl_status_t s) {
    switch (s) {
    case PCCL_OK: return "ok";
    case PCCL_ERR_PEER_LOST: return "PEER_LOST";
    case PCCL_ERR_TIMEOUT: return "TIMEOUT";
    case PCCL_ERR_INVALID_USAGE: return "view changed";
    default: return "other";
    }
}

enum class Kind { data, vote, ready, commit, pending, join, join_ack };

struct Msg {
    Kind kind;
    int from = -1;
    uint64_t epoch = 0;
    uint64_t fp = 0;  // fingerprint of the sender's view of `epoch` (ranks are only meaningful in it)
    uint32_t seq = 0;
    uint32_t step = 0;
    std::shared_ptr<const std::vector<float>> data;
    std::shared_ptr<const RankSet> done;
    int nack = -1;
    bool fail = false;
    pccl_status_t status = PCCL_OK;
    std::shared_ptr<const CommitClaim> commit;
    std::shared_ptr<const std::vector<Member>> records;  // join / pending: one; ready: the pending joiners
    size_t bytes = kHeaderBytes;
};
using MsgPtr = std::shared_ptr<const Msg>;

uint64_t fingerprint(const View &v) {
    uint64_t h = compress::mix64(v.epoch);
    for (const auto &m : v.members) {
        for (char c : m.id) h = compress::mix64(h ^ uint64_t(uint8_t(c)));
        h = compress::mix64(h ^ m.incarnation);
    }
    return h;
}

struct Box {  // one op's mailbox at one peer
    std::map<uint32_t, std::shared_ptr<const std::vector<float>>> frames;  // by ring step
    OpVote vote;
    size_t known = 0;  // members known done when the commit's deadline last restarted
    bool aborted = false;
    pccl_status_t status = PCCL_OK;
};

enum class Phase { idle, topo, joining, data, commit, stopped };

// One scheduled thing: a frame `m` arriving at `peer`, or a closure (of
// `peer`, or global with peer -1).
struct Action {
    int peer = -1;
    MsgPtr m;
    std::function<void()> fn;
    bool liveness = false;  // a death declaration (a silence or a close noticed)
};

struct Peer {
    int idx = 0;
    std::string id;
    uint64_t inc = 0;
    bool alive = true, frozen = false;
    std::vector<Action> deferred;  // what arrived or fired while frozen
    double rx_busy = 0, tx_busy = 0;             // event-loop thread / op thread busy until
    // Membership state (what Mesh holds).
    bool member = false;
    View view;
    uint64_t fp = 0;
    std::vector<int> rank_peer;  // rank in view -> peer index
    std::vector<char> in_view;   // peer index -> in our view
    std::vector<int> rank_of;    // peer index -> its rank in our view (-1: none)
    std::shared_ptr<const CommitClaim> commit;
    DeadSet dead;
    std::map<std::string, Member> pending;
    TopologyRound round;
    std::set<int> joiner_conns;
    View admitted;
    std::shared_ptr<const CommitClaim> admitted_commit;
    bool join_asked = false, join_acked = false;
    std::vector<int> boot;
    std::vector<MsgPtr> future;  // frames/votes of the next epoch, replayed when it is installed
    uint32_t next_seq = 0;
    std::map<uint32_t, Box> boxes;  // this epoch's ops by seq
    // The program (a training loop: `rounds` all-reduces, update_topology(), ...).
    Phase phase = Phase::idle;
    uint64_t token = 0;  // bumps on every phase change: stale timers see it
    size_t ops_in_view = 0;
    std::set<std::string> before;  // topology: the members before the round
    uint64_t topo_epoch = 0;
    std::string sent_to;
    double resend_at = 0, topo_deadline = 0;
    int join_attempts = 0;
    size_t boot_at = 0;
    // The op in flight.
    uint32_t seq = 0;
    size_t rank = 0, step = 0;
    std::vector<float> acc;
    double op_start = 0, deadline = 0, bound = 0;
    bool eval_scheduled = false, froze_in_op = false, last_failed = false;
    bool removed_in_op = false;  // the op failed because a view without us arrived
};

struct OpRecord {
    std::vector<int> ok, failed;
    std::vector<int> removed;  // failed because the others removed them meanwhile (they rejoin; state sync heals them)
    pccl_status_t failed_status = PCCL_OK;
    double start = 0, end = 0;  // first member's start, last member's return
    std::vector<float> expected;
    std::shared_ptr<std::vector<float>> first;
};

struct Fault {
    std::string kind;
    double t = 0;
    std::set<int> lost;  // who the survivors must lose (kill/freeze: the peer; partition: side B)
    std::set<int> side;  // partition: side B (a survivor is on either side)
    bool recovered = false;
    int joiner = -1;
};

class Sim {
public:
    explicit Sim(const SimConfig &c) : c_(c) {
        if (c_.peers < 1 || c_.peers > 5000) fail(PCCL_ERR_INVALID_ARGUMENT, "simulate: peers must be in 1..5000");
        if (!(c_.timeout_s > 0) || !(c_.heartbeat_s > 0) || !(c_.join_timeout_s > 0) || !(c_.rate_Bps > 0) ||
            !(c_.delay_min_s >= 0) || !(c_.delay_max_s >= c_.delay_min_s))
            fail(PCCL_ERR_INVALID_ARGUMENT, "simulate: timeouts, rate and delays must be positive (min <= max)");
        bound_ = std::min(c_.heartbeat_s, c_.timeout_s);
        period_ = std::max(0.02, std::min(1.0, bound_ / 4));
        elements_ = c_.elements ? c_.elements : std::max<size_t>(64, c_.peers);
        rep_.seed = c_.seed;
        rep_.peers = c_.peers;
    }

    SimReport run();

private:
    // ------------------------------------------------------------ scheduler
    // The queue holds (time, order, slot); what to do sits in slab_[slot]
    // (a frame for a peer, or a closure), so the heap moves 24 bytes.
    struct Event {
        double t;
        uint64_t seq;
        uint32_t slot;
    };
    struct Later {
        bool operator()(const Event &a, const Event &b) const { return a.t > b.t || (a.t == b.t && a.seq > b.seq); }
    };
    uint32_t put(Action a) {
        if (free_.empty()) {
            slab_.push_back(std::move(a));
            return uint32_t(slab_.size() - 1);
        }
        const uint32_t s = free_.back();
        free_.pop_back();
        slab_[s] = std::move(a);
        return s;
    }
    void push(double t, Action a) {
        q_.push_back(Event{std::max(t, now_), next_event_++, put(std::move(a))});
        std::push_heap(q_.begin(), q_.end(), Later());
    }
    void at(double t, std::function<void()> fn) { push(t, Action{-1, nullptr, std::move(fn)}); }
    // An event of peer p: nothing if it died; held while it is frozen.
    void at_peer(double t, int p, std::function<void()> fn, bool liveness = false) {
        push(t, Action{p, nullptr, std::move(fn), liveness});
    }
    void dispatch(Action &a) {
        if (a.peer >= 0) {
            Peer &x = peers_[size_t(a.peer)];
            if (!x.alive) return;
            if (x.frozen) {
                x.deferred.push_back(std::move(a));
                return;
            }
            if (a.m) return receive(a.peer, a.m);
        }
        a.fn();
    }
    uint64_t rnd() { return compress::mix64(c_.seed * 0x9e3779b97f4a7c15ull + rng_++); }
    double uniform(double a, double b) { return a + (b - a) * double(rnd() >> 11) * 0x1.0p-53; }
    size_t below(size_t n) { return n ? size_t(rnd() % n) : 0; }

    // ---------------------------------------------------------------- links
    double base_delay(int a, int b) const {
        const uint64_t lo = uint64_t(std::min(a, b)), hi = uint64_t(std::max(a, b));
        const double u = double(compress::hash2(c_.seed ^ 0x5eedull, lo * 100003 + hi) >> 11) * 0x1.0p-53;
        return c_.delay_min_s + (c_.delay_max_s - c_.delay_min_s) * u;
    }
    bool slowed(int a, int b) const { return slow_.count({std::min(a, b), std::max(a, b)}) > 0; }
    double delay(int a, int b) const { return base_delay(a, b) * (slowed(a, b) ? 10 : 1); }
    double rate(int a, int b) const { return slowed(a, b) ? 125e3 : c_.rate_Bps; }
    // Cut by any partition in force (they may overlap; each heals on its own).
    bool cut(int a, int b) const {
        for (const auto &s : in_force_)
            if (s.side.count(a) != s.side.count(b)) return true;
        return false;
    }

    void send(int from, int to, const MsgPtr &m) {
        ++rep_.messages;
        if (from == to || !peers_[size_t(to)].alive) return;
        if (cut(from, to)) {  // held by TCP until the partition heals
            held_.push_back({from, to, m});
            return;
        }
        deliver_later(from, to, m, now_);
    }
    void deliver_later(int from, int to, const MsgPtr &m, double depart) {
        double &last = last_arrival_[size_t(from) * cap_ + size_t(to)];
        const double arrive = std::max(depart + delay(from, to) + double(m->bytes) / rate(from, to), last);
        last = arrive;
        push(arrive, Action{to, m, nullptr});
    }
    // The event-loop thread of `p` handles frames one at a time.
    void receive(int p, const MsgPtr &m) {
        Peer &x = peers_[size_t(p)];
        if (x.rx_busy > now_) {
            push(x.rx_busy, Action{p, m, nullptr});
            return;
        }
        double cost = kHandleS;
        if (m->kind == Kind::commit || m->kind == Kind::join || m->kind == Kind::pending ||
            (m->kind == Kind::ready && m->commit))
            cost += kVerifyS;
        if (m->kind == Kind::vote && m->done && x.member && m->epoch == x.view.epoch && m->fp == x.fp) {
            auto b = x.boxes.find(m->seq);
            const size_t known = b != x.boxes.end() && b->second.vote.sized() ? b->second.vote.done().count() : 0;
            cost += kVerifyS * double(m->done->count() > known ? m->done->count() - known : 0);
        }
        x.rx_busy = now_ + cost;
        handle(p, m);
    }
    // A control broadcast from the op's (or caller's) thread: encoded once per receiver.
    void broadcast(int p, const std::vector<int> &to, const MsgPtr &m) {
        Peer &x = peers_[size_t(p)];
        double t = std::max(now_, x.tx_busy);
        const double each = double(m->bytes) / kEncodeBps;
        for (int q : to) {
            if (q == p) continue;
            t += each;
            ++rep_.messages;
            if (m->kind == Kind::vote) {
                ++rep_.vote_messages;
                rep_.vote_entries += m->done ? m->done->count() : 0;
            }
            if (!peers_[size_t(q)].alive) continue;
            if (cut(p, q)) {
                held_.push_back({p, q, m});
                continue;
            }
            deliver_later(p, q, m, t);
        }
        x.tx_busy = t;
    }

    // -------------------------------------------------------------- program
    void start_ops(int p);
    void start_op(int p);
    void send_step(int p);
    void pump(int p);
    void enter_commit(int p);
    void schedule_eval(int p);
    void eval_commit(int p);
    void finish_op(int p, bool ok, pccl_status_t st);  // end_op + next_op
    void end_op(int p, bool ok, pccl_status_t st);     // records the outcome (an abort tells the others)
    void next_op(int p);
    // The op's stall bound in `phase` (data or commit): fails the op at its deadline.
    void phase_timer(int p, uint64_t token, Phase phase);
    void enter_topology(int p);
    void topo_tick(int p);
    void topo_done(int p);
    void enter_join(int p);
    void try_boot(int p);
    void join_timer(int p, uint64_t token);

    // ------------------------------------------------------------- protocol
    void handle(int p, const MsgPtr &m);
    void handle_op_msg(int p, const MsgPtr &m);
    void on_commit(int p, const std::shared_ptr<const CommitClaim> &c);
    void maybe_commit(int p);
    void install(int p, const View &v, const std::shared_ptr<const CommitClaim> &c);
    void add_pending(int p, const Member &j);
    void declare_dead(int p, int q, const std::string &why);
    void arm_silence(int p, int q, double since);
    // Whether p hears nothing from q: dead, frozen, across the partition, or
    // no longer heartbeating p (q's view does not hold p).
    bool silent(int q, int p) const {
        const Peer &y = peers_[size_t(q)];
        return !y.alive || y.frozen || cut(q, p) || !y.member || !y.in_view[size_t(p)];
    }

    // --------------------------------------------------------------- faults
    void inject(const std::string &kind, double t);
    void kill(int v);
    void freeze(int v, double until);
    void resume(int v);
    void partition(const std::set<int> &b, double until);
    struct Split {
        double from, until;
        std::set<int> side;
    };
    std::vector<Split> splits_;  // the partitions injected
    // Whether members a and b were on two sides of a partition during [t0, t1].
    bool separated(int a, int b, double t0, double t1) const {
        for (const auto &s : splits_)
            if (s.from <= t1 && s.until >= t0 && s.side.count(a) != s.side.count(b)) return true;
        return false;
    }
    void heal(size_t id);

    void violation(const std::string &s) {
        if (rep_.violations.size() < 64) rep_.violations.push_back(s);
    }
    std::string name(int p) const { return "peer " + std::to_string(p) + " (" + peers_[size_t(p)].id.substr(0, 6) + ")"; }
    float input(int p, uint64_t epoch, uint32_t seq, size_t i) const {
        return float(compress::mix64(c_.seed ^ (uint64_t(p) << 40) ^ (epoch << 20) ^ (uint64_t(seq) << 12) ^ i) & 15);
    }
    std::vector<int> members_of(const Peer &x) const {
        std::vector<int> out;
        for (const auto &m : x.view.members) out.push_back(by_id_.at(m.id));
        return out;
    }
    std::pair<size_t, size_t> chunk(size_t c, size_t n) const { return {c * elements_ / n, (c + 1) * elements_ / n}; }
    double op_bound(const Peer &x) const;

    SimConfig c_;
    double bound_ = 0, period_ = 0;
    size_t elements_ = 0;
    double now_ = 0;
    uint64_t next_event_ = 0, rng_ = 0;
    std::vector<Event> q_;
    std::vector<Action> slab_;
    std::vector<uint32_t> free_;
    std::vector<Peer> peers_;
    size_t cap_ = 0;
    std::vector<double> last_arrival_;
    std::unordered_map<std::string, int> by_id_;
    std::set<std::pair<int, int>> slow_;
    struct InForce {
        size_t id;  // index into splits_
        std::set<int> side;
    };
    std::vector<InForce> in_force_;  // the partitions not healed yet
    struct Held {
        int from, to;
        MsgPtr m;
    };
    std::vector<Held> held_;
    double quiet_ = 0;  // every fault is over (plus a detection margin): views committed after it end the run
    std::map<uint64_t, double> committed_at_;  // view fingerprint -> when its coordinator committed it
    std::map<std::tuple<uint64_t, uint64_t, uint32_t>, OpRecord> ops_;  // (fp, epoch, seq)
    std::vector<Fault> faults_;
    std::map<int, double> join_at_;  // joiner -> when it asked
    SimReport rep_;
};

double Sim::op_bound(const Peer &x) const {
    const size_t n = x.rank_peer.size();
    double hop = 0, any = 0;
    const double bytes = double(elements_ / std::max<size_t>(1, n) + 1) * 4 + kHeaderBytes;
    for (size_t r = 0; r < n; ++r) {
        const int a = x.rank_peer[r], b = x.rank_peer[(r + 1) % n];
        hop = std::max(hop, delay(a, b) + bytes / rate(a, b));
        any = std::max(any, delay(a, b));
    }
    any = std::max({any, c_.delay_max_s * (slow_.empty() ? 1 : 10)});
    // The ring's 2(n-1) hops, a few delays of skew between members starting
    // it, a few rounds of the vote's gossip (encode + verify, and a forward
    // that is not urgent waits up to the gossip gap), then what a fault may
    // add: the heartbeat bound (a silent member) and one op timeout.
    const double vote = double(n) * (double(n * kDoneBytes) / kEncodeBps + kVerifyS) + mesh::gossip_gap_s(bound_);
    return double(2 * (n - 1) + 8) * hop + 8 * any + 4 * vote + bound_ + period_ + c_.timeout_s;
}

// ------------------------------------------------------------------ the op

void Sim::start_ops(int p) {
    Peer &x = peers_[size_t(p)];
    x.ops_in_view = 0;
    x.last_failed = false;
    x.phase = Phase::idle;
    next_op(p);
}

void Sim::start_op(int p) {
    Peer &x = peers_[size_t(p)];
    x.phase = Phase::data;
    ++x.token;
    x.seq = x.next_seq++;
    x.rank = size_t(x.rank_of[size_t(p)]);
    x.step = 0;
    x.op_start = now_;
    x.froze_in_op = false;
    x.eval_scheduled = false;
    x.bound = op_bound(x);
    x.acc.resize(elements_);
    for (size_t i = 0; i < elements_; ++i) x.acc[i] = input(p, x.view.epoch, x.seq, i);
    Box &b = x.boxes[x.seq];
    if (!b.vote.sized()) b.vote = OpVote(x.view.members.size(), x.rank, mesh::gossip_gap_s(bound_));
    auto &rec = ops_[{x.fp, x.view.epoch, x.seq}];
    if (rec.expected.empty()) {
        rec.expected.assign(elements_, 0.f);
        for (int q : x.rank_peer)
            for (size_t i = 0; i < elements_; ++i) rec.expected[i] += input(q, x.view.epoch, x.seq, i);
    }
    for (int q : x.rank_peer)
        if (x.dead.count(peers_[size_t(q)].id)) return finish_op(p, false, PCCL_ERR_PEER_LOST);
    if (b.aborted) return finish_op(p, false, b.status);
    if (x.view.members.size() == 1) return finish_op(p, true, PCCL_OK);  // a world of one: no commit
    x.deadline = now_ + c_.timeout_s;
    const uint64_t tok = x.token;
    at_peer(x.deadline, p, [this, p, tok] { phase_timer(p, tok, Phase::data); });
    send_step(p);
    pump(p);
}

void Sim::send_step(int p) {
    Peer &x = peers_[size_t(p)];
    const size_t n = x.view.members.size();
    const size_t g = x.step;
    // Reduce-scatter (g < n-1): rank r sends chunk r-g; all-gather: chunk r+1-s.
    const size_t c = g < n - 1 ? (x.rank + n - g % n) % n : (x.rank + 1 + n - (g - (n - 1)) % n) % n;
    const auto range = chunk(c, n);
    auto m = std::make_shared<Msg>();
    m->kind = Kind::data;
    m->from = p;
    m->epoch = x.view.epoch;
    m->fp = x.fp;
    m->seq = x.seq;
    m->step = uint32_t(g);
    m->data = std::make_shared<const std::vector<float>>(x.acc.begin() + long(range.first),
                                                         x.acc.begin() + long(range.second));
    m->bytes = kHeaderBytes + 4 * (range.second - range.first);
    send(p, x.rank_peer[(x.rank + 1) % n], m);
}

void Sim::pump(int p) {
    Peer &x = peers_[size_t(p)];
    const size_t n = x.view.members.size();
    Box &b = x.boxes[x.seq];
    while (x.phase == Phase::data) {
        auto f = b.frames.find(uint32_t(x.step));
        if (f == b.frames.end()) return;
        const size_t g = x.step;
        const size_t c = g < n - 1 ? (x.rank + 2 * n - 1 - g % n) % n : (x.rank + n - (g - (n - 1)) % n) % n;
        const auto range = chunk(c, n);
        const auto &in = *f->second;
        if (in.size() != range.second - range.first) {
            violation("seed " + std::to_string(c_.seed) + ": " + name(p) + " got a chunk of the wrong size");
            return finish_op(p, false, PCCL_ERR_PROTOCOL);
        }
        if (g < n - 1)  // the real kernel, as the ring's reduce step calls it
            collectives::reduce_into(PCCL_F32, PCCL_SUM, x.acc.data() + range.first, in.data(), in.size());
        else  // all-gather: the owner's bytes, verbatim
            std::memcpy(x.acc.data() + range.first, in.data(), in.size() * sizeof(float));
        b.frames.erase(f);
        x.deadline = now_ + c_.timeout_s;
        if (++x.step == 2 * (n - 1)) return enter_commit(p);
        send_step(p);
    }
}

void Sim::phase_timer(int p, uint64_t token, Phase phase) {
    Peer &x = peers_[size_t(p)];
    if (x.token != token || x.phase != phase) return;
    if (now_ < x.deadline) {  // progress moved the deadline on
        at_peer(x.deadline, p, [this, p, token, phase] { phase_timer(p, token, phase); });
        return;
    }
    finish_op(p, false, PCCL_ERR_TIMEOUT);
}

void Sim::enter_commit(int p) {
    Peer &x = peers_[size_t(p)];
    x.phase = Phase::commit;
    Box &b = x.boxes[x.seq];
    b.vote.add_done(x.rank);
    if (c_.break_commit && p == 0) {
        // The broken member: it announces its done vote and returns at once.
        auto m = std::make_shared<Msg>();
        m->kind = Kind::vote;
        m->from = p;
        m->epoch = x.view.epoch;
        m->fp = x.fp;
        m->seq = x.seq;
        m->done = std::make_shared<const RankSet>(b.vote.done());
        m->bytes = kHeaderBytes + kDoneBytes;
        broadcast(p, x.rank_peer, m);
        return finish_op(p, true, PCCL_OK);
    }
    x.deadline = now_ + c_.timeout_s;
    const uint64_t tok = x.token;
    at_peer(x.deadline, p, [this, p, tok] { phase_timer(p, tok, Phase::commit); });
    eval_commit(p);
}

void Sim::schedule_eval(int p) {
    Peer &x = peers_[size_t(p)];
    if (x.phase != Phase::commit || x.eval_scheduled) return;
    x.eval_scheduled = true;
    const uint64_t tok = x.token;
    at_peer(std::max(now_, x.tx_busy) + kWakeS, p, [this, p, tok] {
        Peer &y = peers_[size_t(p)];
        if (y.token != tok) return;
        y.eval_scheduled = false;
        eval_commit(p);
    });
}

// MeshChannel::commit(), one wake-up of its loop.
void Sim::eval_commit(int p) {
    Peer &x = peers_[size_t(p)];
    if (x.phase != Phase::commit) return;
    Box &b = x.boxes[x.seq];
    std::vector<size_t> dead;
    for (size_t r = 0; r < x.rank_peer.size(); ++r)
        if (x.dead.count(x.view.members[r].id)) dead.push_back(r);
    const OpVote::Progress pr = b.vote.progress(now_, !dead.empty());
    auto vote = [&](const RankSet &done, int nack, const std::vector<int> &to) {
        auto m = std::make_shared<Msg>();
        m->kind = Kind::vote;
        m->from = p;
        m->epoch = x.view.epoch;
        m->fp = x.fp;
        m->seq = x.seq;
        m->done = std::make_shared<const RankSet>(done);
        m->nack = nack;
        m->bytes = kHeaderBytes + kDoneBytes * done.count() + (nack >= 0 ? 60 : 0);
        broadcast(p, to, m);
    };
    if (b.vote.done().count() > b.known) {
        b.known = b.vote.done().count();
        x.deadline = now_ + c_.timeout_s;
    }
    for (const auto &s : pr.sends) vote(s.done, -1, {x.rank_peer[s.to]});
    if (pr.succeeded) return finish_op(p, true, PCCL_OK);
    if (b.aborted) return finish_op(p, false, b.status);  // (success first, as MeshChannel::commit)
    if (pr.wake_s > 0) {
        const uint64_t tok = x.token;
        at_peer(pr.wake_s, p, [this, p, tok] {
            if (peers_[size_t(p)].token == tok) schedule_eval(p);
        });
    }
    const OpVote::Judgement j = b.vote.judge(dead);
    for (size_t d : j.nack) {
        vote(b.vote.done(), int(d), x.rank_peer);
        b.vote.sent_to_all();
    }
    if (j.failed) return finish_op(p, false, PCCL_ERR_PEER_LOST);
}

void Sim::finish_op(int p, bool ok, pccl_status_t st) {
    end_op(p, ok, st);
    next_op(p);
}

void Sim::end_op(int p, bool ok, pccl_status_t st) {
    Peer &x = peers_[size_t(p)];
    ++x.token;
    x.phase = Phase::idle;
    const double took = now_ - x.op_start;
    auto &rec = ops_[{x.fp, x.view.epoch, x.seq}];
    Box &b = x.boxes[x.seq];
    if (!ok && !b.aborted) {
        // Communicator::run_op: abort tells every member at once.
        b.aborted = true;
        b.status = st;
        auto m = std::make_shared<Msg>();
        m->kind = Kind::vote;
        m->from = p;
        m->epoch = x.view.epoch;
        m->fp = x.fp;
        m->seq = x.seq;
        m->fail = true;
        m->status = st;
        m->done = std::make_shared<const RankSet>(b.vote.sized() ? b.vote.done() : RankSet());
        m->bytes = kHeaderBytes + 100;
        broadcast(p, x.rank_peer, m);
    }
    if (!x.froze_in_op && took > x.bound + 1e-9)
        violation("seed " + std::to_string(c_.seed) + ": " + name(p) + "'s op (epoch " + std::to_string(x.view.epoch) +
                  ", seq " + std::to_string(x.seq) + ") took " + std::to_string(took) + " s, bound " +
                  std::to_string(x.bound) + " s");
    if (ok) {
        ++rep_.ops_ok;
        rec.ok.push_back(p);
        if (x.rank_peer.size() > 1) rep_.op_latency_s.push_back(took);  // (a world of one has no network op)
        if (std::memcmp(x.acc.data(), rec.expected.data(), elements_ * sizeof(float)) != 0)
            violation("seed " + std::to_string(c_.seed) + ": " + name(p) + "'s result of (epoch " +
                      std::to_string(x.view.epoch) + ", seq " + std::to_string(x.seq) +
                      ") is not the exact sum of the view's inputs");
        for (auto &f : faults_) {
            if (f.recovered || f.lost.empty() || x.op_start < f.t) continue;  // (slow links, joins, short freezes lose nobody)
            if (f.kind != "partition" && f.lost.count(p)) continue;
            bool clean = true;
            const bool in_b = f.side.count(p) > 0;
            for (int q : x.rank_peer)
                if (f.kind == "partition" ? (f.side.count(q) > 0) != in_b : f.lost.count(q) > 0) clean = false;
            if (!clean) continue;
            f.recovered = true;
            rep_.recovery_s.push_back(now_ - f.t);
        }
        auto j = join_at_.find(p);
        if (j != join_at_.end()) {
            rep_.admission_s.push_back(now_ - j->second);
            join_at_.erase(j);
        }
        ++x.ops_in_view;
    } else {
        ++rep_.ops_failed;
        if (rec.failed.empty()) rec.failed_status = st;
        if (x.removed_in_op) rec.removed.push_back(p);
        else rec.failed.push_back(p);
        x.removed_in_op = false;
    }
    if (rec.ok.size() + rec.failed.size() + rec.removed.size() == 1) rec.start = x.op_start;
    rec.start = std::min(rec.start, x.op_start);
    rec.end = now_;
    x.last_failed = !ok;
}

// The training loop between two ops: a step of compute, then the next op,
// or update_topology() after `rounds` ops or a failure.
void Sim::next_op(int p) {
    Peer &x = peers_[size_t(p)];
    const uint64_t tok = ++x.token;
    at_peer(now_ + kStepS, p, [this, p, tok] {
        Peer &y = peers_[size_t(p)];
        if (y.token != tok || y.phase != Phase::idle) return;
        if (!y.member) return enter_join(p);  // removed: update_topology() asks to join again
        if (y.last_failed || y.ops_in_view >= c_.rounds) return enter_topology(p);
        start_op(p);
    });
}

// ------------------------------------------------------------ update_topology

void Sim::enter_topology(int p) {
    Peer &x = peers_[size_t(p)];
    if (!x.member) return enter_join(p);
    auto ca = committed_at_.find(x.fp);
    if (ca != committed_at_.end() && ca->second >= quiet_ && x.ops_in_view >= c_.rounds) {
        x.phase = Phase::stopped;  // the run is over for this view: every member stops here
        ++x.token;
        return;
    }
    x.phase = Phase::topo;
    ++x.token;
    x.topo_epoch = x.view.epoch;
    x.before.clear();
    for (const auto &m : x.view.members) x.before.insert(m.id);
    x.sent_to.clear();
    x.resend_at = 0;
    x.topo_deadline = now_ + c_.join_timeout_s;
    topo_tick(p);
}

// Mesh::update_topology's loop, one pass.
void Sim::topo_tick(int p) {
    Peer &x = peers_[size_t(p)];
    if (x.phase != Phase::topo) return;
    if (!x.member) return enter_join(p);
    if (x.view.epoch != x.topo_epoch) return topo_done(p);
    const std::string coord = mesh::coordinator_of(x.view, x.dead, x.id);
    if (coord != x.sent_to || (coord != x.id && now_ >= x.resend_at)) {
        x.sent_to = coord;
        x.resend_at = now_ + std::max(0.05, c_.timeout_s / 4);
        if (coord == x.id) {
            x.round.ready(x.view.epoch, x.id);
            maybe_commit(p);
            if (x.phase != Phase::topo) return;
            if (x.view.epoch != x.topo_epoch) return topo_done(p);
        } else {
            auto m = std::make_shared<Msg>();
            m->kind = Kind::ready;
            m->from = p;
            m->epoch = x.view.epoch;
            m->fp = x.fp;
            m->commit = x.commit;
            auto pend = std::make_shared<std::vector<Member>>();
            for (const auto &kv : x.pending) pend->push_back(kv.second);
            m->records = pend;
            m->bytes = kHeaderBytes + kRecordBytes * (x.view.members.size() * (x.commit ? 2 : 1) + pend->size());
            send(p, by_id_.at(coord), m);
        }
        const uint64_t tok = x.token;
        at_peer(x.resend_at, p, [this, p, tok] {
            if (peers_[size_t(p)].token == tok) topo_tick(p);
        });
    }
    if (now_ >= x.topo_deadline) {
        x.phase = Phase::idle;  // TIMEOUT: the loop calls update_topology() again
        return enter_topology(p);
    }
}

void Sim::topo_done(int p) {
    Peer &x = peers_[size_t(p)];
    // connect_all_members(admitted): every member tells the joiners it admits.
    if (x.commit)
        for (const auto &m : x.view.members)
            if (!x.before.count(m.id)) {
                auto msg = std::make_shared<Msg>();
                msg->kind = Kind::commit;
                msg->from = p;
                msg->commit = x.commit;
                msg->bytes = kHeaderBytes + kRecordBytes * (x.view.members.size() + x.commit->prev_ids.size() / 2);
                send(p, by_id_.at(m.id), msg);
            }
    start_ops(p);
}

void Sim::enter_join(int p) {
    Peer &x = peers_[size_t(p)];
    if (x.member) return enter_topology(p);
    if (x.join_attempts >= 3) {  // given up: reported as a peer outside every view
        x.phase = Phase::stopped;
        ++x.token;
        return;
    }
    ++x.join_attempts;
    x.phase = Phase::joining;
    ++x.token;
    x.topo_deadline = now_ + c_.join_timeout_s;
    const uint64_t tok = x.token;
    at_peer(x.topo_deadline, p, [this, p, tok] { join_timer(p, tok); });
    if (!x.admitted.members.empty()) return install(p, View(x.admitted), x.admitted_commit);
    if (!x.join_asked) {
        x.boot_at = 0;
        x.join_acked = false;
        try_boot(p);
    }
}

// Mesh::ask_to_join: each bootstrap peer in turn, each for one timeout (a dead
// one for the round trip its refused dial takes).
void Sim::try_boot(int p) {
    Peer &x = peers_[size_t(p)];
    if (x.phase != Phase::joining || x.join_asked) return;
    if (x.boot_at >= x.boot.size()) return;  // nobody answered: the join times out
    const int b = x.boot[x.boot_at++];
    const uint64_t tok = x.token;
    if (!peers_[size_t(b)].alive) {  // killed: its port refuses the dial within a round trip, and the mesh moves on
        at_peer(now_ + 2 * delay(p, b), p, [this, p, tok] {
            if (peers_[size_t(p)].token == tok) try_boot(p);
        });
        return;
    }
    auto m = std::make_shared<Msg>();
    m->kind = Kind::join;
    m->from = p;
    m->records = std::make_shared<const std::vector<Member>>(1, Member{x.id, x.inc, {}, 0, {}});
    m->bytes = kHeaderBytes + kRecordBytes;
    send(p, b, m);
    at_peer(now_ + c_.timeout_s, p, [this, p, tok] {
        Peer &y = peers_[size_t(p)];
        if (y.token == tok && !y.join_acked) try_boot(p);
    });
}

void Sim::join_timer(int p, uint64_t token) {
    Peer &x = peers_[size_t(p)];
    if (x.token != token || x.phase != Phase::joining) return;
    enter_join(p);  // TIMEOUT; the loop calls update_topology() again (join_asked stays, as in the mesh)
}

// --------------------------------------------------------------- protocol

void Sim::handle(int p, const MsgPtr &m) {
    Peer &x = peers_[size_t(p)];
    switch (m->kind) {
    case Kind::data:
    case Kind::vote:
        return handle_op_msg(p, m);
    case Kind::join: {
        const Member &j = m->records->front();
        x.joiner_conns.insert(m->from);
        if (x.member) add_pending(p, j);
        else x.pending[j.id] = j;
        auto ack = std::make_shared<Msg>();
        ack->kind = Kind::join_ack;
        ack->from = p;
        send(p, m->from, ack);
        return;
    }
    case Kind::join_ack:
        if (x.phase == Phase::joining) {
            x.join_acked = true;
            x.join_asked = true;
        }
        return;
    case Kind::pending: {
        const Member &j = m->records->front();
        if (x.member) add_pending(p, j);
        else x.pending[j.id] = j;
        return;
    }
    case Kind::ready: {
        if (m->records && x.member && m->epoch == x.view.epoch)
            for (const auto &j : *m->records)
                if (j.id != x.id && x.view.index_of(j.id) < 0 && !x.pending.count(j.id)) x.pending[j.id] = j;
        const auto action = TopologyRound::classify(m->epoch, x.view.epoch);
        if (x.member && action == TopologyRound::ReadyAction::answer_with_commit) {
            if (x.commit) {
                auto c = std::make_shared<Msg>();
                c->kind = Kind::commit;
                c->from = p;
                c->commit = x.commit;
                c->bytes = kHeaderBytes + kRecordBytes * x.view.members.size();
                send(p, m->from, c);
            }
            return;
        }
        if (x.member && action == TopologyRound::ReadyAction::adopt_their_commit) {
            std::string why;
            if (!m->commit || m->commit->next.epoch != m->epoch ||
                !mesh::accept_commit(*m->commit, &x.view, x.dead, x.id, x.inc, why))
                return;
            install(p, m->commit->next, m->commit);
            if (!x.member) return;
        }
        x.round.ready(m->epoch, peers_[size_t(m->from)].id);
        maybe_commit(p);
        return;
    }
    case Kind::commit:
        return on_commit(p, m->commit);
    }
}

void Sim::on_commit(int p, const std::shared_ptr<const CommitClaim> &c) {
    Peer &x = peers_[size_t(p)];
    std::string why;
    if (!mesh::accept_commit(*c, x.member ? &x.view : nullptr, x.dead, x.id, x.inc, why)) return;
    if (x.member) return install(p, c->next, c);
    if (c->next.epoch > x.admitted.epoch) {
        x.admitted = c->next;
        x.admitted_commit = c;
        if (x.phase == Phase::joining) install(p, View(x.admitted), x.admitted_commit);
    }
}

void Sim::handle_op_msg(int p, const MsgPtr &m) {
    Peer &x = peers_[size_t(p)];
    if (!x.member) return;  // (a joiner keeps the admitting view's early frames in the mesh; here it replays none)
    if (m->epoch == x.view.epoch + 1) {
        if (x.future.size() < 64 * x.view.members.size() + 1024) x.future.push_back(m);
        return;
    }
    if (m->epoch != x.view.epoch) return;
    if (!x.in_view[size_t(m->from)]) return;  // accept_op_locked: only members of the op's view
    if (m->fp != x.fp) {
        violation("seed " + std::to_string(c_.seed) + ": " + name(m->from) + " and " + name(p) +
                  " hold different views of epoch " + std::to_string(m->epoch));
        return;
    }
    if (m->seq + 1 < x.next_seq && !x.boxes.count(m->seq)) return;  // a finished op's late frame
    if (m->seq >= x.next_seq + 64) return;                            // kSeqWindow
    Box &b = x.boxes[m->seq];
    if (!b.vote.sized()) b.vote = OpVote(x.view.members.size(), size_t(x.rank_of[size_t(p)]), mesh::gossip_gap_s(bound_));
    const bool current = (x.phase == Phase::data || x.phase == Phase::commit) && x.seq == m->seq;
    if (m->kind == Kind::data) {
        b.frames[m->step] = m->data;
        if (current && x.phase == Phase::data) pump(p);
        return;
    }
    const int fr = x.rank_of[size_t(m->from)];
    if (m->done) b.vote.merge_done(*m->done, size_t(fr));
    if (m->nack >= 0) b.vote.add_nack(size_t(m->nack), size_t(fr));
    if (m->fail && !b.aborted) {
        b.aborted = true;
        b.status = m->status;
    }
    if (!current) return;
    if (x.phase == Phase::data && b.aborted) return finish_op(p, false, b.status);
    schedule_eval(p);
}

void Sim::maybe_commit(int p) {
    Peer &x = peers_[size_t(p)];
    if (!x.member || !x.round.complete(x.view, x.dead, x.id)) return;
    auto c = std::make_shared<CommitClaim>();
    c->next = mesh::next_view(x.view, x.dead, x.pending, mesh::LinkReports{});
    c->prev_epoch = x.view.epoch;
    c->prev_ids = x.view.ids();
    c->by = x.id;
    committed_at_.emplace(fingerprint(c->next), now_);
    auto m = std::make_shared<Msg>();
    m->kind = Kind::commit;
    m->from = p;
    m->commit = c;
    m->bytes = kHeaderBytes + kRecordBytes * (c->next.members.size() + c->prev_ids.size() / 2);
    std::vector<int> to;
    for (const auto &mm : x.view.members)
        if (!x.dead.count(mm.id)) to.push_back(by_id_.at(mm.id));
    broadcast(p, to, m);
    install(p, c->next, c);
}

void Sim::install(int p, const View &v, const std::shared_ptr<const CommitClaim> &c) {
    Peer &x = peers_[size_t(p)];
    const bool was_member = x.member;
    if (v.index_of(x.id) < 0) {
        if (!x.member) return;
        // Removed: the others declared us dead. Our op fails; the next
        // update_topology() asks to join through the view that removed us.
        x.member = false;
        for (int q : x.rank_peer)  // a non-member sends no heartbeats
            if (q != p && peers_[size_t(q)].alive) arm_silence(q, p, now_);
        x.join_asked = x.join_acked = false;
        x.admitted = View{};
        x.admitted_commit = nullptr;
        x.join_attempts = 0;
        x.boot.clear();
        for (const auto &m : v.members)
            if (x.boot.size() < 16) x.boot.push_back(by_id_.at(m.id));
        if (x.phase == Phase::data || x.phase == Phase::commit) {
            x.removed_in_op = true;
            return finish_op(p, false, PCCL_ERR_PEER_LOST);
        }
        if (x.phase == Phase::topo) return enter_join(p);
        return;
    }
    // The removed members get the commit on the link kept open for them.
    std::set<std::string> next_ids;
    for (const auto &m : v.members) next_ids.insert(m.id);
    if (c)
        for (const auto &m : x.view.members)
            if (m.id != x.id && !next_ids.count(m.id)) {
                auto msg = std::make_shared<Msg>();
                msg->kind = Kind::commit;
                msg->from = p;
                msg->commit = c;
                msg->bytes = kHeaderBytes + kRecordBytes * v.members.size();
                send(p, by_id_.at(m.id), msg);
            }
    const bool in_op = x.phase == Phase::data || x.phase == Phase::commit;
    if (in_op) end_op(p, false, PCCL_ERR_INVALID_USAGE);  // the view changed during the op
    x.view = v;
    x.fp = fingerprint(v);
    x.rank_peer = members_of(x);
    std::vector<char> was(std::move(x.in_view));
    x.in_view.assign(cap_, 0);
    x.rank_of.assign(cap_, -1);
    for (size_t r = 0; r < x.rank_peer.size(); ++r) x.in_view[size_t(x.rank_peer[r])] = 1, x.rank_of[size_t(x.rank_peer[r])] = int(r);
    // Members we removed stop hearing our heartbeats.
    for (size_t q = 0; q < was.size(); ++q)
        if (was[q] && !x.in_view[q] && int(q) != p && peers_[q].alive) arm_silence(int(q), p, now_);
    x.commit = c;
    x.member = true;
    x.dead.clear();
    x.round.installed(v.epoch);
    x.next_seq = 0;
    x.boxes.clear();
    x.join_attempts = 0;
    ++rep_.views;
    for (const auto &m : v.members) x.pending.erase(m.id);
    for (auto it = x.joiner_conns.begin(); it != x.joiner_conns.end();) {
        if (v.index_of(peers_[size_t(*it)].id) >= 0 && c) {
            auto msg = std::make_shared<Msg>();
            msg->kind = Kind::commit;
            msg->from = p;
            msg->commit = c;
            msg->bytes = kHeaderBytes + kRecordBytes * v.members.size();
            send(p, *it, msg);
            it = x.joiner_conns.erase(it);
        } else {
            ++it;
        }
    }
    if (!was_member) {
        std::vector<Member> waiting;
        for (const auto &kv : x.pending) waiting.push_back(kv.second);
        x.pending.clear();
        for (const auto &j : waiting) add_pending(p, j);
    }
    // last_heard = now for every member; those silent to us are noticed later.
    for (int q : x.rank_peer)
        if (q != p && silent(q, p)) arm_silence(p, q, now_);
    std::vector<MsgPtr> replay;
    replay.swap(x.future);
    x.ops_in_view = 0;
    if (in_op) {
        next_op(p);
    } else if (x.phase == Phase::joining) {
        x.phase = Phase::idle;
        ++x.token;
        topo_done(p);
    } else if (x.phase == Phase::topo) {
        topo_tick(p);
    }
    for (const auto &m : replay)
        if (m->epoch == x.view.epoch) handle_op_msg(p, m);
}

void Sim::add_pending(int p, const Member &j) {
    Peer &x = peers_[size_t(p)];
    const int idx = x.view.index_of(j.id);
    if (idx >= 0 && x.view.members[size_t(idx)].incarnation == j.incarnation) return;
    const bool fresh = !x.pending.count(j.id) || x.pending[j.id].incarnation != j.incarnation;
    x.pending[j.id] = j;
    if (!fresh) return;
    auto m = std::make_shared<Msg>();
    m->kind = Kind::pending;
    m->from = p;
    m->records = std::make_shared<const std::vector<Member>>(1, j);
    m->bytes = kHeaderBytes + kRecordBytes;
    broadcast(p, x.rank_peer, m);
}

void Sim::declare_dead(int p, int q, const std::string &why) {
    Peer &x = peers_[size_t(p)];
    const std::string &id = peers_[size_t(q)].id;
    if (q == p || !x.member || !x.in_view[size_t(q)] || x.dead.count(id)) return;
    x.dead[id] = why;
    if (x.phase == Phase::data) return finish_op(p, false, PCCL_ERR_PEER_LOST);  // check_alive_locked
    if (x.phase == Phase::commit) schedule_eval(p);
    maybe_commit(p);
    if (x.phase == Phase::topo) topo_tick(p);
}

// q fell silent to p at `since`: p's heartbeat thread notices it after the
// bound, on one of its ticks, unless q is heard from again by then.
void Sim::arm_silence(int p, int q, double since) {
    const double t = since + delay(q, p) + bound_ + uniform(0, period_);
    at_peer(
        t, p, [this, p, q] {
            if (silent(q, p)) declare_dead(p, q, "silent");
        },
        true);
}

// ------------------------------------------------------------------ faults

void Sim::kill(int v) {
    Peer &x = peers_[size_t(v)];
    if (!x.alive) return;
    x.alive = false;
    x.deferred.clear();
    // Its connections close: each peer sees it one delay later (across a
    // partition only its heartbeat bound tells).
    for (size_t q = 0; q < peers_.size(); ++q) {
        if (int(q) == v || !peers_[q].alive) continue;
        if (cut(v, int(q))) continue;  // already silent there
        at_peer(
            now_ + delay(v, int(q)) + 1e-3, int(q), [this, q, v] { declare_dead(int(q), v, "connection closed"); }, true);
    }
}

void Sim::freeze(int v, double until) {
    Peer &x = peers_[size_t(v)];
    if (!x.alive || x.frozen) return;
    x.frozen = true;
    for (size_t q = 0; q < peers_.size(); ++q)
        if (int(q) != v && peers_[q].alive) arm_silence(int(q), v, now_);
    at(until, [this, v] { resume(v); });
}

void Sim::resume(int v) {
    Peer &x = peers_[size_t(v)];
    if (!x.alive || !x.frozen) return;
    x.frozen = false;
    if (x.phase == Phase::data || x.phase == Phase::commit) x.froze_in_op = true;
    x.rx_busy = std::max(x.rx_busy, now_);
    // What arrived meanwhile is read first (then the timers that fired);
    // the heartbeat thread gives every member a fresh bound, so the silences
    // and closes noticed while frozen do not count (Liveness::resumed): the
    // members still silent are re-armed below.
    std::vector<Action> later;
    later.swap(x.deferred);
    for (auto &a : later)
        if (!a.liveness) push(now_, std::move(a));
    if (x.member)
        for (int q : x.rank_peer)
            if (q != v && silent(q, v)) arm_silence(v, q, now_);
}

void Sim::partition(const std::set<int> &b, double until) {
    const size_t id = splits_.size();
    splits_.push_back(Split{now_, until, b});
    std::vector<std::pair<int, int>> fresh;  // pairs this partition cuts that no other did
    for (size_t p = 0; p < peers_.size(); ++p)
        for (size_t q = 0; q < peers_.size(); ++q)
            if (p != q && b.count(int(p)) != b.count(int(q)) && !cut(int(p), int(q))) fresh.push_back({int(p), int(q)});
    in_force_.push_back(InForce{id, b});
    for (const auto &pq : fresh)
        if (peers_[size_t(pq.first)].alive && peers_[size_t(pq.second)].alive) arm_silence(pq.first, pq.second, now_);
    at(until, [this, id] { heal(id); });
}

void Sim::heal(size_t id) {
    in_force_.erase(std::remove_if(in_force_.begin(), in_force_.end(), [id](const InForce &s) { return s.id == id; }),
                    in_force_.end());
    // What TCP held across this partition goes now, unless another still cuts it.
    std::vector<Held> held;
    held.swap(held_);
    for (const auto &h : held) {
        if (cut(h.from, h.to))
            held_.push_back(h);
        else if (peers_[size_t(h.to)].alive)
            deliver_later(h.from, h.to, h.m, now_);
    }
}

void Sim::inject(const std::string &kind, double t) {
    Fault f;
    f.kind = kind;
    f.t = t;
    const size_t n0 = c_.peers;
    auto pick = [&]() { return int(below(n0)); };
    char buf[200];
    if (kind == "kill") {
        const int v = pick();
        f.lost.insert(v);
        at(t, [this, v] { kill(v); });
        std::snprintf(buf, sizeof buf, "t=%.3f kill peer %d", t, v);
    } else if (kind == "freeze") {
        const int v = pick();
        const bool found = below(3) != 0;  // most freezes outlast the heartbeat bound
        const double len = found ? uniform(bound_ + period_ + c_.delay_max_s + 0.2, bound_ + 5) : uniform(0.05, bound_ / 2);
        if (found) f.lost.insert(v);
        else f.kind = "short-freeze";
        at(t, [this, v, t, len] { freeze(v, t + len); });
        quiet_ = std::max(quiet_, t + len);
        std::snprintf(buf, sizeof buf, "t=%.3f freeze peer %d for %.3f s", t, v, len);
    } else if (kind == "partition") {
        std::set<int> b;
        const size_t k = 1 + below(std::max<size_t>(1, n0 / 2));
        while (b.size() < k && b.size() < n0 - 1) b.insert(pick());
        f.side = b;
        f.lost = b;
        const double len = uniform(bound_ + period_ + c_.delay_max_s + 0.5, bound_ + 6);
        at(t, [this, b, t, len] { partition(b, t + len); });
        quiet_ = std::max(quiet_, t + len);
        std::string ids;
        for (int i : b) ids += (ids.empty() ? "" : ",") + std::to_string(i);
        std::snprintf(buf, sizeof buf, "t=%.3f partition %zu of %zu peers (%s) for %.3f s", t, b.size(), n0,
                      ids.substr(0, 120).c_str(), len);
    } else if (kind == "slow") {
        int a = pick(), b = pick();
        if (a == b) b = (a + 1) % int(n0);
        const double len = uniform(1, 5);
        const auto key = std::make_pair(std::min(a, b), std::max(a, b));
        at(t, [this, key] { slow_.insert(key); });
        at(t + len, [this, key] { slow_.erase(key); });
        quiet_ = std::max(quiet_, t + len);
        std::snprintf(buf, sizeof buf, "t=%.3f slow link %d-%d for %.3f s", t, a, b, len);
    } else if (kind == "join") {
        const int j = int(peers_.size() - size_t(std::count_if(faults_.begin(), faults_.end(),
                                                               [](const Fault &x) { return x.kind == "join"; })) - 1);
        f.joiner = j;
        std::vector<int> boot;
        for (int i = 0; i < 3; ++i) boot.push_back(pick());
        at(t, [this, j, boot] {
            Peer &x = peers_[size_t(j)];
            x.alive = true;
            x.boot = boot;
            join_at_[j] = now_;
            enter_join(j);
        });
        std::snprintf(buf, sizeof buf, "t=%.3f peer %d joins", t, j);
    } else {
        fail(PCCL_ERR_INVALID_ARGUMENT, "simulate: unknown fault kind '" + kind + "'");
    }
    quiet_ = std::max(quiet_, t);
    rep_.faults.push_back(buf);
    faults_.push_back(f);
}

SimReport Sim::run() {
    std::vector<std::string> kinds;
    for (size_t at_ = 0; at_ <= c_.kinds.size();) {
        size_t end = c_.kinds.find(',', at_);
        if (end == std::string::npos) end = c_.kinds.size();
        if (end > at_) kinds.push_back(c_.kinds.substr(at_, end - at_));
        at_ = end + 1;
    }
    const size_t nfaults = c_.faults >= 0 ? size_t(c_.faults) : 1 + below(3);
    if (nfaults && kinds.empty()) fail(PCCL_ERR_INVALID_ARGUMENT, "simulate: no fault kinds to draw from");
    std::vector<std::string> drawn;
    for (size_t i = 0; i < nfaults; ++i) drawn.push_back(kinds[below(kinds.size())]);
    const size_t joins = size_t(std::count(drawn.begin(), drawn.end(), std::string("join")));
    const size_t n = c_.peers + joins;
    cap_ = n;
    peers_.resize(n);
    last_arrival_.assign(n * n, 0.0);
    View v0;
    v0.epoch = 1;
    for (size_t i = 0; i < n; ++i) {
        Peer &x = peers_[i];
        x.idx = int(i);
        char id[24];
        std::snprintf(id, sizeof id, "%016llx", (unsigned long long)compress::hash2(c_.seed, i));
        x.id = id;
        x.inc = compress::hash2(c_.seed ^ 0x1dcull, i);
        by_id_[x.id] = int(i);
        if (i < c_.peers) v0.members.push_back(Member{x.id, x.inc, {}, 0, {}});
        else x.alive = false;  // not started yet
    }
    std::sort(v0.members.begin(), v0.members.end(), [](const Member &a, const Member &b) { return a.id < b.id; });
    committed_at_[fingerprint(v0)] = 0;
    for (size_t i = 0; i < c_.peers; ++i) {
        Peer &x = peers_[i];
        x.member = true;
        x.view = v0;
        x.fp = fingerprint(v0);
        x.rank_peer = members_of(x);
        x.in_view.assign(cap_, 0);
        x.rank_of.assign(cap_, -1);
        for (size_t r = 0; r < x.rank_peer.size(); ++r) x.in_view[size_t(x.rank_peer[r])] = 1, x.rank_of[size_t(x.rank_peer[r])] = int(r);
        at_peer(uniform(0, 0.01), int(i), [this, i] { start_ops(int(i)); });
    }
    // A fault-free op's time, to spread the faults over the first few.
    double hop = 0;
    for (size_t r = 0; r < c_.peers; ++r)
        hop += base_delay(by_id_.at(v0.members[r].id), by_id_.at(v0.members[(r + 1) % c_.peers].id));
    const double op_time = 2 * hop + 4 * c_.delay_max_s;
    for (const auto &k : drawn) inject(k, uniform(0.2 * op_time, 0.2 * op_time + 4 * op_time));
    quiet_ += bound_ + period_ + c_.timeout_s + 2 * c_.delay_max_s * 10;
    const double limit = quiet_ + 20 * (op_time + c_.timeout_s) + 6 * c_.join_timeout_s;
    while (!q_.empty()) {
        std::pop_heap(q_.begin(), q_.end(), Later());
        const Event e = q_.back();
        q_.pop_back();
        now_ = e.t;
        if (e.t > limit) break;
        Action a = std::move(slab_[e.slot]);
        slab_[e.slot] = Action{};
        free_.push_back(e.slot);
        ++rep_.events;
        dispatch(a);
    }
    rep_.sim_time_s = now_;
    const std::string s = "seed " + std::to_string(c_.seed) + ": ";
    for (const auto &kv : ops_) {
        const OpRecord &r = kv.second;
        if (!r.ok.empty() && !r.removed.empty()) ++rep_.removed_splits;
        if (r.ok.empty() || r.failed.empty()) continue;
        // Across a partition no protocol without a quorum can keep all or
        // nothing (each side judges the other dead); the mesh documents that
        // the sides continue apart. Counted, not hidden; any other split is a bug.
        bool across = true;
        for (int a : r.ok)
            for (int b : r.failed) across = across && separated(a, b, r.start, r.end);
        if (across) {
            ++rep_.partition_splits;
            continue;
        }
        violation(s + "op (epoch " + std::to_string(std::get<1>(kv.first)) + ", seq " +
                  std::to_string(std::get<2>(kv.first)) + ") succeeded on " + name(r.ok.front()) + " and failed on " +
                  name(r.failed.front()) + " (" + status_name(r.failed_status) + "), during " +
                  std::to_string(r.start) + " .. " + std::to_string(r.end) + " s");
    }
    for (const auto &p : peers_) {
        if (!p.alive || p.frozen) continue;
        if (p.phase != Phase::stopped) {
            violation(s + name(p.idx) + " still running at the time limit (" + std::to_string(limit) + " s)");
            continue;
        }
        if (!p.member) {
            violation(s + name(p.idx) + " is alive but outside every view at the end");
            continue;
        }
        for (int q : p.rank_peer) {
            const Peer &o = peers_[size_t(q)];
            if (!o.alive || o.frozen) continue;
            if (!o.member || o.fp != p.fp) {
                violation(s + "views did not converge: " + name(p.idx) + " holds epoch " + std::to_string(p.view.epoch) +
                          " with " + std::to_string(p.view.members.size()) + " members, its member " + name(q) +
                          (o.member ? " holds epoch " + std::to_string(o.view.epoch) : std::string(" holds none")));
                break;
            }
        }
    }
    return std::move(rep_);
}

}  // namespace

SimReport simulate(const SimConfig &config) { return Sim(config).run(); }

}  // namespace pccl::sim
