// pccl_py._core.memnet: the fault-injection surface of the in-memory
// transport (net/memory_transport.h), for tests only (pccl_py.testing wraps
// it). Peers are named by peer id. Every call takes the transport registry's
// lock briefly and never blocks on the network; the GIL is released so a
// communicator thread waiting on the GIL cannot deadlock with it.
#include <string>
#include <vector>

#include <pybind11/stl.h>

#include "bindings.h"
#include "common/error.h"
#include "net/memory_transport.h"

namespace py = pybind11;

namespace pccl::bindings {

void register_testing(py::module_ &m) {
    using namespace pccl::net;
    py::module_ t = m.def_submodule("memnet", "Fault injection on the in-memory transport (tests only).");
    t.def(
        "set_delay",
        [](const std::string &from, const std::string &to, double seconds) {
            if (!(seconds >= 0)) throw py::value_error("delay must be >= 0, got " + std::to_string(seconds));
            py::gil_scoped_release nogil;
            memnet::set_delay(from, to, seconds);
        },
        py::arg("src"), py::arg("dst"), py::arg("seconds"));
    t.def(
        "drop_links",
        [](const std::string &a, const std::string &b) {
            py::gil_scoped_release nogil;
            return memnet::drop_links(a, b);
        },
        py::arg("a"), py::arg("b"));
    t.def(
        "partition",
        [](const std::vector<std::vector<std::string>> &groups) {
            py::gil_scoped_release nogil;
            memnet::partition(groups);
        },
        py::arg("groups"));
    t.def("heal", [] {
        py::gil_scoped_release nogil;
        memnet::heal();
    });
    t.def(
        "kill",
        [](const std::string &peer) {
            py::gil_scoped_release nogil;
            memnet::kill(peer);
        },
        py::arg("peer"));
    t.def(
        "freeze",
        [](const std::string &peer, bool frozen) {
            py::gil_scoped_release nogil;
            memnet::freeze(peer, frozen);
        },
        py::arg("peer"), py::arg("frozen") = true);
    t.def(
        "inject",
        [](const std::string &from, const std::string &to, py::bytes data) {
            std::string bytes = data;
            py::gil_scoped_release nogil;
            return memnet::inject(from, to, bytes);
        },
        py::arg("src"), py::arg("dst"), py::arg("data"));
    t.def("reset", [] {
        py::gil_scoped_release nogil;
        memnet::reset();
    });
}

}  // namespace pccl::bindings
