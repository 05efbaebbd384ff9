#include "bindings.h"

namespace pccl::bindings {
void register_comm(pybind11::module_ &) {}
}  // namespace pccl::bindings
