// The caller's input of an in-place all-reduce, kept so that a failed op can
// put it back: all of it, before anything is sent (ring_all_reduce). Kept
// region by region as the ring first writes each one, the copy would be
// spread over the pipeline, but a hostile peer can make any region be written
// first (an all-gather piece sent ahead of its reduce-scatter lands in place):
// tests/fuzz/fuzz_collectives found that, and checks the restore since.
#pragma once

#include <cstddef>
#include <cstdint>
#include <utility>
#include <vector>

#include "common/buffer_pool.h"

namespace pccl::collectives {

class Backup {
public:
    // `buf`: the caller's buffer, `count` elements of `esize` bytes.
    Backup(uint8_t *buf, size_t count, size_t esize) : buf_(buf), count_(count), esize_(esize) {}
    Backup(const Backup &) = delete;
    Backup &operator=(const Backup &) = delete;

    // Keeps elements [off, off+len) as they are now; each region once,
    // before it is first written. The copy's storage (pooled) is taken on
    // first use.
    void keep(size_t off, size_t len);
    void keep_all() { keep(0, count_); }
    // Puts every kept region back (after a failure; nothing may still be
    // writing into the buffer).
    void restore();

private:
    uint8_t *buf_;
    size_t count_, esize_;
    BufferPool::Ptr copy_;
    std::vector<std::pair<size_t, size_t>> kept_;  // (off, len) in elements
};

}  // namespace pccl::collectives
