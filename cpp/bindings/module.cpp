// pccl_py._core: the private extension module. One register_*.cpp per area;
// the public API is the pure-Python package over it.
#include <pybind11/pybind11.h>

#include "bindings.h"

PYBIND11_MODULE(_core, m) {
    m.doc() = "pccl_py private core (C++). Use the pccl_py package instead.";
    pccl::bindings::register_util(m);
    pccl::bindings::register_comm(m);
    pccl::bindings::register_compress(m);
    pccl::bindings::register_diloco(m);
    pccl::bindings::register_testing(m);
}
