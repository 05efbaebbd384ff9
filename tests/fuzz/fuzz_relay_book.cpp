// The relay's bookkeeping (nat/relay_book.h) under random operation
// sequences: small random limits, then reserve / connect / accept / bytes /
// close / tick on a handful of connections and peers, with time moving on.
// The connections a decision says to close are closed (closed() called),
// as RelayServer does. After every operation:
//   - check() holds (limits, one role per connection, ids with the top bit);
//   - a refused operation changed nothing;
//   - an accepted circuit joins the connect's dialer connection to a second,
//     different connection of the connect's target;
//   - count_bytes says "over" exactly past max_circuit_bytes per direction;
//   - tick() ends exactly what is past its time: nothing early, nothing
//     left over (a shadow of the last reserve / connect / accept times);
// and at the end, once every connection closed, the book is empty (no
// reservation or circuit outlives its connections).
#include <fuzzer/FuzzedDataProvider.h>

#include <map>
#include <set>
#include <string>

#include "fuzz_check.h"
#include "nat/relay_book.h"

using namespace pccl;
using namespace pccl::nat;
using ConnId = RelayBook::ConnId;

namespace {

struct Harness {
    RelayBook book;
    double now = 100;
    ConnId next_conn = 1;
    std::set<ConnId> live;                        // connections not closed yet
    std::map<ConnId, double> reserved_at;         // reservation connections -> last reserve
    std::map<uint64_t, std::pair<ConnId, std::string>> connects;  // cid -> (hop, target), every success
    std::map<uint64_t, double> connected_at;      // pending cid -> when
    std::map<ConnId, std::pair<uint64_t, double>> spliced;  // side -> (cid, accepted at)
    std::map<ConnId, uint64_t> bytes;             // side -> bytes counted
    std::set<uint64_t> seen_cids;

    explicit Harness(const RelayBookLimits &l) : book(l) {}

    void check() {
        std::string why;
        if (!book.check(&why)) {
            std::fprintf(stderr, "RelayBook invariant: %s\n", why.c_str());
            std::abort();
        }
        FUZZ_CHECK(book.reservation_count() <= book.limits().max_reservations);
        FUZZ_CHECK(book.pending_count() + book.circuit_count() <= book.limits().max_circuits);
        FUZZ_CHECK(book.reservation_count() == reserved_at.size());
        FUZZ_CHECK(book.pending_count() == connected_at.size());
        FUZZ_CHECK(book.circuit_count() * 2 == spliced.size());
        for (ConnId c : live)
            FUZZ_CHECK(book.has_role(c) == (reserved_at.count(c) || spliced.count(c) || pending_hop(c)));
    }

    bool pending_hop(ConnId c) const {
        for (const auto &kv : connected_at)
            if (connects.at(kv.first).first == c) return true;
        return false;
    }

    void forget(ConnId c) {  // the shadow's side of closed()
        reserved_at.erase(c);
        for (auto it = connected_at.begin(); it != connected_at.end();)
            it = connects.at(it->first).first == c ? connected_at.erase(it) : std::next(it);
        spliced.erase(c);
        bytes.erase(c);
    }

    // Closes `c` and whatever the book says goes with it.
    void close(ConnId c) {
        std::vector<ConnId> todo{c};
        while (!todo.empty()) {
            ConnId x = todo.back();
            todo.pop_back();
            if (!live.erase(x)) continue;
            std::optional<ConnId> other = book.other_side(x);
            std::vector<ConnId> more = book.closed(x);
            FUZZ_CHECK(!book.has_role(x));
            FUZZ_CHECK(more.size() <= 1 && (more.empty() || (other && more[0] == *other)));
            FUZZ_CHECK(!other || !more.empty());
            forget(x);
            for (ConnId m : more) {
                FUZZ_CHECK(live.count(m));
                FUZZ_CHECK(!book.has_role(m));  // the circuit is gone with its first side
                forget(m);
                todo.push_back(m);
            }
        }
    }

    ConnId pick(FuzzedDataProvider &p) {
        if (live.empty() || p.ConsumeIntegralInRange<int>(0, 3) == 0) {
            live.insert(next_conn);
            return next_conn++;
        }
        auto it = live.begin();
        std::advance(it, p.ConsumeIntegralInRange<size_t>(0, live.size() - 1));
        return *it;
    }

    struct Snapshot {
        size_t r, p, c;
        std::map<ConnId, bool> roles;
        bool operator==(const Snapshot &o) const { return r == o.r && p == o.p && c == o.c && roles == o.roles; }
    };
    Snapshot snapshot() const {
        Snapshot s{book.reservation_count(), book.pending_count(), book.circuit_count(), {}};
        for (ConnId c : live) s.roles[c] = book.has_role(c);
        return s;
    }

    void step(FuzzedDataProvider &p) {
        static const char *kPeers[] = {"A", "B", "C", "D"};
        auto peer = [&] { return std::string(kPeers[p.ConsumeIntegralInRange<int>(0, 3)]); };
        const RelayBookLimits &l = book.limits();
        switch (p.ConsumeIntegralInRange<int>(0, 6)) {
            case 0: {  // time passes
                now += p.ConsumeIntegralInRange<int>(0, 3000) / 1000.0;
                break;
            }
            case 1: {
                const ConnId c = pick(p);
                const std::string who = peer();
                const Snapshot before = snapshot();
                const std::optional<ConnId> old = book.reservation(who);
                const std::string refusal = book.reserve(c, who, now);
                if (!refusal.empty()) {
                    FUZZ_CHECK(snapshot() == before);
                    break;
                }
                FUZZ_CHECK(book.reservation(who) == c);
                if (old && *old != c) reserved_at.erase(*old);  // moved here
                reserved_at[c] = now;
                break;
            }
            case 2: {
                const ConnId hop = pick(p);
                const std::string from = peer(), to = peer();
                const Snapshot before = snapshot();
                RelayBook::Connected got = book.connect(hop, from, to, now);
                if (!got.refusal.empty()) {
                    FUZZ_CHECK(got.cid == 0 && snapshot() == before);
                    break;
                }
                FUZZ_CHECK(from != to && book.reservation(to));
                FUZZ_CHECK((got.cid & kRelayCircuitBit) && seen_cids.insert(got.cid).second);
                connects[got.cid] = {hop, to};
                connected_at[got.cid] = now;
                break;
            }
            case 3: {
                const ConnId stop = pick(p);
                const std::string who = peer();
                uint64_t cid = p.ConsumeIntegral<uint64_t>();
                if (!connects.empty() && p.ConsumeBool()) {
                    auto it = connects.begin();
                    std::advance(it, p.ConsumeIntegralInRange<size_t>(0, connects.size() - 1));
                    cid = it->first;
                }
                const Snapshot before = snapshot();
                RelayBook::Accepted got = book.accept(stop, who, cid, now);
                if (!got.refusal.empty()) {
                    FUZZ_CHECK(snapshot() == before);
                    break;
                }
                FUZZ_CHECK(connected_at.count(cid));
                FUZZ_CHECK(connects.at(cid).first == got.hop && connects.at(cid).second == who && got.hop != stop);
                FUZZ_CHECK(book.other_side(stop) == got.hop && book.other_side(got.hop) == stop);
                connected_at.erase(cid);
                spliced[stop] = {cid, now};
                spliced[got.hop] = {cid, now};
                break;
            }
            case 4: {
                const ConnId c = pick(p);
                const uint64_t n = p.ConsumeBool() ? p.ConsumeIntegralInRange<uint64_t>(0, 600)
                                                   : p.ConsumeIntegral<uint64_t>();
                const bool within = book.count_bytes(c, n);
                if (!spliced.count(c)) {
                    FUZZ_CHECK(!within);
                    break;
                }
                uint64_t &b = bytes[c];
                b = n > UINT64_MAX - b ? UINT64_MAX : b + n;
                FUZZ_CHECK(within == (l.max_circuit_bytes == 0 || b <= l.max_circuit_bytes));
                if (!within) close(c);  // as RelayServer does
                break;
            }
            case 5: {
                close(pick(p));
                break;
            }
            case 6: {
                RelayBook::Expired e = book.tick(now);
                for (ConnId c : e.reservations) {
                    FUZZ_CHECK(reserved_at.count(c) && now > reserved_at[c] + l.reservation_ttl_s);
                    reserved_at.erase(c);
                }
                for (ConnId c : e.setups) {
                    bool found = false;
                    for (auto it = connected_at.begin(); it != connected_at.end(); ++it)
                        if (connects.at(it->first).first == c) {
                            FUZZ_CHECK(now > it->second + l.setup_s);
                            connected_at.erase(it);
                            found = true;
                            break;
                        }
                    FUZZ_CHECK(found);
                }
                FUZZ_CHECK(e.circuits.size() % 2 == 0);
                for (ConnId c : e.circuits) {
                    FUZZ_CHECK(spliced.count(c) && l.max_circuit_s > 0 && now > spliced[c].second + l.max_circuit_s);
                    spliced.erase(c);
                    bytes.erase(c);
                }
                // Nothing past its time is left.
                for (const auto &kv : reserved_at) FUZZ_CHECK(now <= kv.second + l.reservation_ttl_s);
                for (const auto &kv : connected_at) FUZZ_CHECK(now <= kv.second + l.setup_s);
                for (const auto &kv : spliced) FUZZ_CHECK(l.max_circuit_s == 0 || now <= kv.second.second + l.max_circuit_s);
                for (ConnId c : e.reservations) close(c);  // the server closes them: nothing more to end
                for (ConnId c : e.setups) close(c);
                for (ConnId c : e.circuits) close(c);
                break;
            }
        }
        check();
    }
};

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    FuzzedDataProvider p(data, size);
    RelayBookLimits l;
    l.max_reservations = p.ConsumeIntegralInRange<size_t>(0, 4);
    l.max_circuits = p.ConsumeIntegralInRange<size_t>(0, 4);
    l.max_circuit_bytes = p.ConsumeBool() ? 0 : p.ConsumeIntegralInRange<uint64_t>(1, 1000);
    l.max_circuit_s = p.ConsumeBool() ? 0 : p.ConsumeIntegralInRange<int>(1, 5000) / 1000.0;
    l.reservation_ttl_s = p.ConsumeIntegralInRange<int>(1, 5000) / 1000.0;
    l.setup_s = p.ConsumeIntegralInRange<int>(1, 5000) / 1000.0;
    Harness h(l);
    for (int i = 0; i < 256 && p.remaining_bytes() > 0; ++i) h.step(p);
    // Every connection closes: nothing may remain.
    while (!h.live.empty()) h.close(*h.live.begin());
    h.check();
    FUZZ_CHECK(h.book.reservation_count() == 0 && h.book.pending_count() == 0 && h.book.circuit_count() == 0);
    return 0;
}
