#include "bindings.h"

namespace pccl::bindings {
void register_diloco(pybind11::module_ &) {}
}  // namespace pccl::bindings
