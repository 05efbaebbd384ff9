#include "mesh/view.h"

#include <algorithm>

#include "mesh/ring_order.h"
#include "net/multiaddr.h"

namespace pccl::mesh {

int View::index_of(const std::string &id) const {
    for (size_t i = 0; i < members.size(); ++i)
        if (members[i].id == id) return static_cast<int>(i);
    return -1;
}

std::vector<std::string> View::ids() const {
    std::vector<std::string> out;
    out.reserve(members.size());
    for (const auto &m : members) out.push_back(m.id);
    return out;
}

std::string coordinator_of(const View &v, const DeadSet &dead, const std::string &self) {
    const std::string *best = nullptr;
    for (const auto &m : v.members)
        if (!dead.count(m.id) && (!best || m.id < *best)) best = &m.id;
    return best ? *best : self;
}

View next_view(const View &cur, const DeadSet &dead, const std::map<std::string, Member> &pending,
               const LinkReports &reports, bool by_id_order) {
    View nv;
    nv.epoch = cur.epoch + 1;
    std::map<std::string, const Member *> live;  // sorted: the id order
    for (const auto &m : cur.members)
        if (!dead.count(m.id)) live[m.id] = &m;
    for (const auto &kv : pending) live.emplace(kv.first, &kv.second);
    std::vector<std::string> ids;
    for (const auto &kv : live) ids.push_back(kv.first);
    // Ring order: relay-only links out of the ring where another order
    // allows it, then the measured RTTs, keeping the current order while it
    // is about as good (hysteresis, see ring_order.h).
    RelayedPairs relayed;
    for (const auto &kv : reports.relay_only) {
        if (!live.count(kv.first)) continue;
        for (const auto &o : kv.second)
            if (live.count(o)) relayed.insert(kv.first < o ? std::make_pair(kv.first, o) : std::make_pair(o, kv.first));
    }
    LinkCosts rtt;
    for (const auto &kv : reports.rtt) {
        if (by_id_order || !live.count(kv.first)) continue;
        for (const auto &r : kv.second)
            if (live.count(r.first)) rtt[{kv.first, r.first}] = r.second;
    }
    std::vector<std::string> current;  // (by_id_order: none, so the id order is the tie-break)
    for (const auto &m : cur.members)
        if (!by_id_order && live.count(m.id)) current.push_back(m.id);
    for (const auto &id : ring_order(ids, relayed, rtt, current)) nv.members.push_back(*live.at(id));
    return nv;
}

bool accept_commit(const CommitClaim &c, const View *ours, const DeadSet &dead, const std::string &self,
                   uint64_t self_incarnation, std::string &why) {
    std::set<std::string> ids;
    for (const auto &x : c.next.members)
        if (!ids.insert(x.id).second) {
            why = "a member listed twice";
            return false;
        }
    if (c.next.epoch <= c.prev_epoch || c.next.index_of(c.by) < 0 ||
        std::find(c.prev_ids.begin(), c.prev_ids.end(), c.by) == c.prev_ids.end()) {
        why = "inconsistent (epoch, or a signer outside the views)";
        return false;
    }
    if (ours) {
        if (c.prev_epoch != ours->epoch) {
            why = "replaces epoch " + std::to_string(c.prev_epoch) + ", ours is " + std::to_string(ours->epoch);
            return false;
        }
        if (ours->ids() != c.prev_ids) {
            why = "replaces a view with other members than ours";
            return false;
        }
        const bool removes_us = c.next.index_of(self) < 0;
        for (const auto &x : ours->members)
            if (x.id < c.by && !dead.count(x.id) && !(removes_us && x.id == self)) {
                why = "signed by " + c.by.substr(0, 8) + ", not the coordinator (" + x.id.substr(0, 8) +
                      " is alive here)";
                return false;
            }
        return true;
    }
    const int me = c.next.index_of(self);
    if (me < 0 || c.next.members[size_t(me)].incarnation != self_incarnation) {
        why = "does not admit this incarnation";
        return false;
    }
    for (const auto &id : c.prev_ids)
        if (id < c.by && c.next.index_of(id) >= 0) {
            why = "signed by " + c.by.substr(0, 8) + ", not the coordinator of the view it replaces";
            return false;
        }
    return true;
}

bool one_host(const View &v) {
    for (const Member &m : v.members) {
        if (m.addrs.empty()) return false;
        for (const std::string &text : m.addrs) {
            Multiaddr a;
            try {
                a = Multiaddr::parse(text);
            } catch (const std::exception &) {
                return false;
            }
            const auto t = a.tcp_target();
            if (a.is_relayed() || !t || t->is_dns) return false;
            if (!(t->host == "::1" || t->host.rfind("127.", 0) == 0)) return false;
        }
    }
    return !v.members.empty();
}

}  // namespace pccl::mesh
