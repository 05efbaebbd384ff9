// Per-connection state of one NAT unit, keyed by the connection's id: the
// transport's Connection carries none of it. An entry lives from the first
// get() until NatHooks::on_finalize erases it (the connection's last hook).
// Thread-safe; a caller may keep the shared_ptr past erase.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <mutex>

#include "net/tcp_transport.h"

namespace pccl::nat {

template <class T>
class LinkTable {
public:
    // The entry of `c`, created on first use.
    std::shared_ptr<T> get(const net::ConnPtr &c) {
        std::lock_guard<std::mutex> lk(mu_);
        auto &e = entries_[c->id()];
        if (!e) e = std::make_shared<T>();
        return e;
    }
    // The entry of `c` if it has one, else null.
    std::shared_ptr<T> find(const net::ConnPtr &c) const {
        std::lock_guard<std::mutex> lk(mu_);
        auto it = entries_.find(c->id());
        return it == entries_.end() ? nullptr : it->second;
    }
    // Removes and returns the entry of `c` (null if none).
    std::shared_ptr<T> take(const net::ConnPtr &c) {
        std::lock_guard<std::mutex> lk(mu_);
        auto it = entries_.find(c->id());
        if (it == entries_.end()) return nullptr;
        auto e = std::move(it->second);
        entries_.erase(it);
        return e;
    }

private:
    mutable std::mutex mu_;  // guards entries_ (not the entries' contents)
    std::map<uint64_t, std::shared_ptr<T>> entries_;
};

}  // namespace pccl::nat
