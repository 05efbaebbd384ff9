#include "collectives/backup.h"

#include <cstring>

namespace pccl::collectives {

void Backup::keep() {
    if (!nbytes_) return;
    if (!copy_) copy_ = BufferPool::instance().get(nbytes_);
    std::memcpy(copy_.get(), buf_, nbytes_);
}

void Backup::restore() {
    if (copy_) std::memcpy(buf_, copy_.get(), nbytes_);
}

}  // namespace pccl::collectives
