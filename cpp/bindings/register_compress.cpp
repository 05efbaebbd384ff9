#include "bindings.h"

namespace pccl::bindings {
void register_compress(pybind11::module_ &) {}
}  // namespace pccl::bindings
