#pragma once
#include <pybind11/pybind11.h>

#include <string>
#include <utility>

#include "common/error.h"
#include "pccl/pccl.h"

namespace pccl::bindings {
// Each lives in its own register_<area>.cpp.
void register_util(pybind11::module_ &m);      // multiaddr, peer ids, hashes, msgpack
void register_comm(pybind11::module_ &m);      // C enums, option structs, communicator over the C API
void register_compress(pybind11::module_ &m);  // codecs
void register_diloco(pybind11::module_ &m);    // streaming schedule, outer step

// The one status -> Python exception mapping of every binding: raises
// pccl_py.errors.error_for_status(status, message) (InvalidArgumentError and
// ProtocolError are also ValueErrors). Takes the GIL if needed.
[[noreturn]] void raise_status(pccl_status_t status, const std::string &message);

// Runs f; a pccl::Error it throws is raised as that exception (the pure
// C++ layers the codec and utility bindings call directly, without the C API).
template <typename F>
auto guarded(F &&f) -> decltype(f()) {
    try {
        return std::forward<F>(f)();
    } catch (const Error &e) {
        raise_status(e.status(), e.what());
    }
}
}  // namespace pccl::bindings
