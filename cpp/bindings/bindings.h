#pragma once
#include <pybind11/pybind11.h>

#include <string>

#include "pccl/pccl.h"

namespace pccl::bindings {
// Each lives in its own register_<area>.cpp.
void register_util(pybind11::module_ &m);      // multiaddr, peer ids, hashes, msgpack
void register_comm(pybind11::module_ &m);      // C enums, option structs, communicator over the C API
void register_compress(pybind11::module_ &m);  // codecs
void register_diloco(pybind11::module_ &m);    // streaming schedule, outer step
void register_testing(pybind11::module_ &m);   // fault injection on the in-memory transport

// The one status -> Python exception mapping of every binding: raises
// pccl_py.errors.error_for_status(status, message) (InvalidArgumentError and
// ProtocolError are also ValueErrors). Takes the GIL if needed. Used for the
// statuses the C API returns (register_comm, register_diloco); a pccl::Error
// that escapes any binding (the codec and utility ones call the C++ layers
// directly) is raised the same way by the module's exception translator
// (register_util).
[[noreturn]] void raise_status(pccl_status_t status, const std::string &message);
}  // namespace pccl::bindings
