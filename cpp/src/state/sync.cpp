#include "state/sync.h"

#include <algorithm>
#include <cstring>
#include <map>
#include <set>

#include "common/crypto.h"
#include "common/error.h"
#include "common/msgpack.h"

namespace pccl::state {

namespace {

constexpr uint32_t kMetaChunk = 0xffffffffu;

struct Entry {
    std::string name;
    uint64_t nbytes;
    uint64_t hash;
};

struct Meta {
    uint64_t revision = 0;
    StateHistory history;  // the sender's committed revision (not part of the signature)
    std::vector<Entry> entries;  // sorted by name
    uint64_t signature = 0;      // identifies (revision, entries)
    bool present = false;
};

std::string encode_meta(const Meta &m, bool with_history) {
    std::vector<MsgValue> es;
    for (const auto &e : m.entries) es.push_back(MsgValue::array({e.name, e.nbytes, e.hash}));
    MsgValue v = MsgValue::map({{"t", "state"}, {"rev", m.revision}, {"tensors", MsgValue::array(es)}});
    if (with_history && m.history.synced) v.as_map().emplace_back("crev", m.history.revision);
    return msgpack_encode(v);
}

Meta decode_meta(const uint8_t *p, size_t n) {
    MsgValue v = msgpack_decode(p, n);
    Meta m;
    m.revision = v.at("rev").as_uint();
    if (const MsgValue *c = v.find("crev")) m.history = StateHistory{true, c->as_uint()};
    for (const auto &e : v.at("tensors").as_array()) {
        const auto &a = e.as_array();
        if (a.size() != 3) fail(PCCL_ERR_PROTOCOL, "sync_state: malformed tensor entry");
        m.entries.push_back({a[0].as_str(), a[1].as_uint(), a[2].as_uint()});
    }
    m.present = true;
    return m;
}

uint64_t signature_of(const Meta &m) {
    std::string s = encode_meta(m, false);
    return hash64(s.data(), s.size(), 0x5eed);
}

}  // namespace

// Whether a revision may win; see sync.h. Pure function of the table, so
// every member decides the same.
std::vector<uint8_t> acceptable_revisions(const std::vector<Meta> &metas) {
    const size_t n = metas.size();
    std::map<uint64_t, size_t> committed, held_by_synced, held;
    size_t synced = 0;
    uint64_t lowest_committed = UINT64_MAX;
    for (const auto &m : metas) {
        ++held[m.revision];
        if (!m.history.synced) continue;
        ++synced;
        ++committed[m.history.revision];
        ++held_by_synced[m.revision];
        lowest_committed = std::min(lowest_committed, m.history.revision);
    }
    std::vector<uint8_t> ok(n, 1);
    if (synced == 0) return ok;  // nothing committed yet to measure against: the highest revision wins
    uint64_t c = lowest_committed;
    for (const auto &kv : committed)
        if (2 * kv.second > synced) c = kv.first;
    auto majority = [](const std::map<uint64_t, size_t> &m, uint64_t rev, size_t of) {
        auto it = m.find(rev);
        return it != m.end() && 2 * it->second > of;
    };
    for (size_t r = 0; r < n; ++r) {
        const uint64_t rev = metas[r].revision;
        ok[r] = rev <= c || rev - c == 1 || majority(held_by_synced, rev, synced) || majority(held, rev, n);
    }
    return ok;
}

SyncResult sync_state(mesh::Channel &ch, const std::vector<TensorRef> &tensors, uint64_t revision,
                      size_t chunk_bytes, const StateHistory &history) {
    const size_t n = ch.size(), me = ch.rank();
    // Our own table, sorted by name.
    std::vector<size_t> order(tensors.size());
    for (size_t i = 0; i < order.size(); ++i) order[i] = i;
    std::sort(order.begin(), order.end(), [&](size_t a, size_t b) { return tensors[a].name < tensors[b].name; });
    std::vector<Meta> metas(n);
    Meta &mine = metas[me];
    mine.revision = revision;
    mine.history = history;
    for (size_t k = 0; k < order.size(); ++k) {
        const TensorRef &t = tensors[order[k]];
        if (k && t.name == tensors[order[k - 1]].name)
            fail(PCCL_ERR_INVALID_ARGUMENT, "sync_state: tensor name '" + t.name + "' appears twice");
        mine.entries.push_back({t.name, t.nbytes, t.known_hash ? *t.known_hash : hash64(t.data, t.nbytes)});
    }
    mine.present = true;
    mine.signature = signature_of(mine);
    SyncResult result;
    result.revision = revision;
    auto hashes_of = [&](const Meta &m) {
        result.hashes.assign(tensors.size(), 0);
        for (size_t k = 0; k < order.size(); ++k) result.hashes[order[k]] = m.entries[k].hash;
    };
    if (n == 1) {
        hashes_of(mine);
        return result;
    }

    const std::string my_meta = encode_meta(mine, true);
    for (size_t r = 0; r < n; ++r)
        if (r != me) ch.send_owned(r, kMetaChunk, 0, my_meta);

    size_t metas_left = n - 1;
    std::vector<mesh::Incoming> early;
    while (metas_left > 0) {
        mesh::Incoming in = ch.recv();
        if (in.frame.header.chunk != kMetaChunk) {
            early.push_back(std::move(in));
            continue;
        }
        if (metas[in.src].present) fail(PCCL_ERR_PROTOCOL, "sync_state: duplicate state table");
        metas[in.src] = decode_meta(in.frame.data(), in.frame.size());
        metas[in.src].signature = signature_of(metas[in.src]);
        --metas_left;
    }

    // The winner: highest acceptable revision, then most holders, then lowest rank.
    const std::vector<uint8_t> ok = acceptable_revisions(metas);
    uint64_t best_rev = 0;
    for (size_t r = 0; r < n; ++r)
        if (ok[r]) best_rev = std::max(best_rev, metas[r].revision);
    std::map<uint64_t, size_t> votes;
    for (size_t r = 0; r < n; ++r)
        if (ok[r] && metas[r].revision == best_rev) ++votes[metas[r].signature];
    size_t winner = n;
    for (size_t r = 0; r < n; ++r) {
        if (!ok[r] || metas[r].revision != best_rev) continue;
        if (winner == n || votes[metas[r].signature] > votes[metas[winner].signature]) winner = r;
    }
    if (winner == n)
        fail(PCCL_ERR_INVALID_USAGE, "sync_state: no member holds an acceptable revision (each is more than the "
                                     "committed revision + 1 and none is held by a majority)");
    const Meta &win = metas[winner];
    result.revision = best_rev;
    std::vector<size_t> holders;
    for (size_t r = 0; r < n; ++r)
        if (metas[r].signature == win.signature) holders.push_back(r);

    // Everyone must have the winning layout (same names and sizes).
    if (mine.entries.size() != win.entries.size())
        fail(PCCL_ERR_INVALID_USAGE, "sync_state: this peer has " + std::to_string(mine.entries.size()) +
                                         " tensors, the winning state has " + std::to_string(win.entries.size()));
    for (size_t k = 0; k < win.entries.size(); ++k) {
        const Entry &a = mine.entries[k], &b = win.entries[k];
        if (a.name != b.name)
            fail(PCCL_ERR_INVALID_USAGE, "sync_state: tensor '" + a.name + "' here, '" + b.name +
                                             "' in the winning state (names must match)");
        if (a.nbytes != b.nbytes)
            fail(PCCL_ERR_INVALID_USAGE, "sync_state: tensor '" + a.name + "' has " + std::to_string(a.nbytes) +
                                             " bytes here but " + std::to_string(b.nbytes) + " in the winning state");
    }

    // Who sends what to whom: tensor k of an outdated member d comes from
    // holder (d + k) mod |holders|.
    const size_t sub_bytes = std::max<size_t>(1, chunk_bytes);
    auto pieces = [&](uint64_t nbytes) { return nbytes == 0 ? size_t(1) : size_t((nbytes + sub_bytes - 1) / sub_bytes); };
    auto source_of = [&](size_t d, size_t k) { return holders[(d + k) % holders.size()]; };
    const bool i_hold = metas[me].signature == win.signature;
    for (size_t d = 0; d < n && i_hold; ++d) {
        if (metas[d].signature == win.signature) continue;
        for (size_t k = 0; k < win.entries.size(); ++k) {
            if (metas[d].entries.size() == win.entries.size() && metas[d].entries[k].name == win.entries[k].name &&
                metas[d].entries[k].nbytes == win.entries[k].nbytes && metas[d].entries[k].hash == win.entries[k].hash)
                continue;  // d already has this one
            if (source_of(d, k) != me) continue;
            const TensorRef &t = tensors[order[k]];
            for (size_t j = 0; j < pieces(t.nbytes); ++j) {
                size_t off = j * sub_bytes, len = std::min<size_t>(sub_bytes, t.nbytes - std::min(off, t.nbytes));
                ch.send(d, static_cast<uint32_t>(k), static_cast<uint32_t>(j), t.data + off, len);
            }
            ++result.tensors_sent;
        }
    }

    // What we must receive.
    struct Pending {
        std::vector<uint8_t> staging;
        size_t left;
        std::vector<uint8_t> seen;
    };
    std::map<size_t, Pending> want;
    if (!i_hold)
        for (size_t k = 0; k < win.entries.size(); ++k)
            if (mine.entries[k].hash != win.entries[k].hash)
                want[k] = Pending{std::vector<uint8_t>(win.entries[k].nbytes), pieces(win.entries[k].nbytes),
                                  std::vector<uint8_t>(pieces(win.entries[k].nbytes), 0)};
    size_t tensors_left = want.size();

    auto take = [&](mesh::Incoming &in) {
        const size_t k = in.frame.header.chunk, j = in.frame.header.sub;
        auto it = want.find(k);
        if (it == want.end() || in.src != source_of(me, k) || j >= it->second.seen.size() || it->second.seen[j])
            fail(PCCL_ERR_PROTOCOL, "sync_state: unexpected piece of tensor " + std::to_string(k));
        Pending &p = it->second;
        const size_t off = j * sub_bytes;
        const size_t len = std::min<size_t>(sub_bytes, p.staging.size() - std::min(off, p.staging.size()));
        if (in.frame.size() != len) fail(PCCL_ERR_PROTOCOL, "sync_state: piece of the wrong size");
        if (len) std::memcpy(p.staging.data() + off, in.frame.data(), len);
        p.seen[j] = 1;
        if (--p.left == 0) {
            const Entry &e = win.entries[k];
            if (hash64(p.staging.data(), p.staging.size()) != e.hash)
                fail(PCCL_ERR_PROTOCOL, "sync_state: tensor '" + e.name + "' failed hash verification");
            const TensorRef &t = tensors[order[k]];
            if (t.nbytes) std::memcpy(t.data, p.staging.data(), t.nbytes);
            std::vector<uint8_t>().swap(p.staging);
            ++result.tensors_received;
            --tensors_left;
        }
    };
    for (auto &e : early) take(e);
    early.clear();
    while (tensors_left > 0) {
        mesh::Incoming in = ch.recv();
        take(in);
    }
    ch.flush();
    hashes_of(win);  // every member now holds the winning state
    return result;
}

}  // namespace pccl::state
