#pragma once
#include <pybind11/pybind11.h>

namespace pccl::bindings {
// Each lives in its own register_<area>.cpp.
void register_util(pybind11::module_ &m);      // multiaddr, peer ids, hashes, msgpack
void register_comm(pybind11::module_ &m);      // communicator over the C API
void register_compress(pybind11::module_ &m);  // codecs
void register_diloco(pybind11::module_ &m);    // streaming schedule, outer step
void register_testing(pybind11::module_ &m);   // fault injection on the in-memory transport
}  // namespace pccl::bindings
