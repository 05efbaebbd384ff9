// Recycled byte buffers for frame payloads. Large allocations straight from
// malloc are often fresh mmap'd pages that the kernel must fault in and zero
// on every op; reusing them keeps the receive path at memory speed.
#pragma once

#include <cstddef>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <vector>

namespace pccl {

class BufferPool {
public:
    struct Deleter {
        size_t capacity = 0;  // 0: not pooled
        void operator()(uint8_t *p) const;
    };
    using Ptr = std::unique_ptr<uint8_t[], Deleter>;

    static BufferPool &instance();
    // Uninitialized storage for n bytes (n == 0 gives an empty pointer).
    Ptr get(size_t n);

private:
    void put(uint8_t *p, size_t capacity);

    static constexpr size_t kMinPooled = 16 * 1024;
    static constexpr size_t kMaxPooledBytes = size_t(256) << 20;
    std::mutex mu_;  // guards free_ and pooled_bytes_
    std::map<size_t, std::vector<uint8_t *>> free_;  // capacity -> buffers
    size_t pooled_bytes_ = 0;
};

}  // namespace pccl
