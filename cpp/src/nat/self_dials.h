// Dials that the other side answers by connecting to us: a circuit to a
// peer reserved on us (we are its relay: it opens a stop connection back)
// and a connection reversal (we are public: it dials us directly). Each has
// an id (cid) the answer names; a caller thread waits for the connection.
// The two kinds are told apart: an answer names a kind, so a peer cannot
// answer a reversal with a circuit accept or the other way round. Our cids
// stay below kRelayCircuitBit, which marks the relay's own circuit ids
// (nat/relay_book.h): a relay accept names one or the other, never both.
#pragma once

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <string>

#include "nat/relay_book.h"
#include "nat/wire.h"

namespace pccl::nat {

class SelfDials {
public:
    enum class Kind { circuit, reversal };
    struct Entry {
        Kind kind;
        std::string target, purpose;
    };

    // Caller thread: a new pending dial to `target`; its cid.
    uint64_t add(Kind kind, const std::string &target, const std::string &purpose) {
        std::lock_guard<std::mutex> lk(mu_);
        const uint64_t cid = next_cid_++;
        pending_[cid] = Pending{Entry{kind, target, purpose}, nullptr};
        return cid;
    }
    // The pending dial `cid` of `kind` (false if unknown, of the other
    // kind, or already answered).
    bool find(uint64_t cid, Kind kind, Entry &out) const {
        std::lock_guard<std::mutex> lk(mu_);
        auto it = pending_.find(cid);
        if (it == pending_.end() || it->second.conn || it->second.entry.kind != kind) return false;
        out = it->second.entry;
        return true;
    }
    // Event loop: `c` answers `cid` if that dial is still pending (the
    // caller checked c came from its target). True if it did (the waiting
    // caller wakes).
    bool answer(uint64_t cid, const ConnPtr &c) {
        std::lock_guard<std::mutex> lk(mu_);
        auto it = pending_.find(cid);
        if (it == pending_.end() || it->second.conn) return false;
        it->second.conn = c;
        cv_.notify_all();
        return true;
    }
    // Caller thread: waits up to timeout_s for the answer or for give_up()
    // (checked when woken and at the end), then forgets `cid`. Null: none came.
    template <class GiveUp>
    ConnPtr wait(uint64_t cid, double timeout_s, GiveUp give_up) {
        std::unique_lock<std::mutex> lk(mu_);
        cv_.wait_for(lk, std::chrono::duration<double>(std::max(0.0, timeout_s)), [&] {
            auto it = pending_.find(cid);
            return it == pending_.end() || it->second.conn != nullptr || give_up();
        });
        ConnPtr c;
        auto it = pending_.find(cid);
        if (it != pending_.end()) {
            c = std::move(it->second.conn);
            pending_.erase(it);
        }
        return c;
    }
private:
    struct Pending {
        Entry entry;
        ConnPtr conn;  // the answer, once it came
    };
    mutable std::mutex mu_;  // guards pending_, next_cid_; cv_ waits on it
    std::condition_variable cv_;
    std::map<uint64_t, Pending> pending_;
    uint64_t next_cid_ = 1;  // never reaches kRelayCircuitBit
};

}  // namespace pccl::nat
