// The caller's input of an in-place all-reduce, kept so that a failed op can
// put it back: all of it, before anything is sent (ring_all_reduce). Kept
// region by region as the ring first writes each one, the copy would be
// spread over the pipeline, but a hostile peer can make any region be written
// first (an all-gather piece sent ahead of its reduce-scatter lands in place):
// tests/fuzz/fuzz_collectives found that, and checks the restore since.
#pragma once

#include <cstddef>
#include <cstdint>

#include "common/buffer_pool.h"

namespace pccl::collectives {

class Backup {
public:
    // `buf`: the caller's buffer of `nbytes`.
    Backup(uint8_t *buf, size_t nbytes) : buf_(buf), nbytes_(nbytes) {}
    Backup(const Backup &) = delete;
    Backup &operator=(const Backup &) = delete;

    // Keeps the whole buffer as it is now (pooled storage, taken here).
    void keep();
    // Puts what keep() kept back (after a failure; nothing may still be
    // writing into the buffer). Does nothing when nothing was kept.
    void restore();

private:
    uint8_t *buf_;
    size_t nbytes_;
    BufferPool::Ptr copy_;
};

}  // namespace pccl::collectives
