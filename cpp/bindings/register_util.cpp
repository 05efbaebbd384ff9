#include "bindings.h"

namespace pccl::bindings {
void register_util(pybind11::module_ &) {}
}  // namespace pccl::bindings
