#include "common/buffer_pool.h"

namespace pccl {

BufferPool &BufferPool::instance() {
    static BufferPool *pool = new BufferPool();  // never destroyed: frames may outlive static destructors
    return *pool;
}

void BufferPool::Deleter::operator()(uint8_t *p) const {
    if (!p) return;
    if (capacity == 0) {
        delete[] p;
        return;
    }
    BufferPool::instance().put(p, capacity);
}

BufferPool::Ptr BufferPool::get(size_t n) {
    if (n == 0) return Ptr(nullptr, Deleter{0});
    if (n < kMinPooled) return Ptr(new uint8_t[n], Deleter{0});
    size_t cap = kMinPooled;
    while (cap < n) cap <<= 1;
    {
        std::lock_guard<std::mutex> lk(mu_);
        auto it = free_.find(cap);
        if (it != free_.end() && !it->second.empty()) {
            uint8_t *p = it->second.back();
            it->second.pop_back();
            pooled_bytes_ -= cap;
            return Ptr(p, Deleter{cap});
        }
    }
    return Ptr(new uint8_t[cap], Deleter{cap});
}

void BufferPool::put(uint8_t *p, size_t capacity) {
    {
        std::lock_guard<std::mutex> lk(mu_);
        if (pooled_bytes_ + capacity <= kMaxPooledBytes) {
            free_[capacity].push_back(p);
            pooled_bytes_ += capacity;
            return;
        }
    }
    delete[] p;
}

}  // namespace pccl
