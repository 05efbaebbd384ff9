#include "collectives/backup.h"

#include <cstring>

#include "common/error.h"

namespace pccl::collectives {

void Backup::keep(size_t off, size_t len) {
    if (!len) return;
    if (off > count_ || len > count_ - off) fail(PCCL_ERR_INTERNAL, "backup: region outside the buffer");
    if (!copy_) copy_ = BufferPool::instance().get(count_ * esize_);
    std::memcpy(copy_.get() + off * esize_, buf_ + off * esize_, len * esize_);
    kept_.emplace_back(off, len);
}

void Backup::restore() {
    for (const auto &r : kept_) std::memcpy(buf_ + r.first * esize_, copy_.get() + r.first * esize_, r.second * esize_);
    kept_.clear();
}

}  // namespace pccl::collectives
