// pccl_py._core.memnet: the fault-injection surface of the in-memory
// transport (net/memory_transport.h), for tests only (pccl_py.testing wraps
// it); pccl_py._core._simulate: one seeded run of the protocol simulator
// (sim/simulator.h), for tests/test_simulate.py and bench/simulate.py. Peers are named by peer id. Every call takes the transport registry's
// lock briefly and never blocks on the network; the GIL is released so a
// communicator thread waiting on the GIL cannot deadlock with it.
#include <string>
#include <vector>

#include <pybind11/stl.h>

#include "bindings.h"
#include "common/error.h"
#include "net/memory_transport.h"
#include "sim/simulator.h"

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

    m.def(
        "_simulate",
        [](uint64_t seed, size_t peers, size_t rounds, int faults, const std::string &kinds, double timeout_s,
           double heartbeat_s, double delay_min_s, double delay_max_s, double rate_Bps, bool break_commit) {
            sim::SimConfig c;
            c.seed = seed;
            c.peers = peers;
            c.rounds = rounds;
            c.faults = faults;
            c.kinds = kinds;
            c.timeout_s = timeout_s;
            c.heartbeat_s = heartbeat_s;
            c.delay_min_s = delay_min_s;
            c.delay_max_s = delay_max_s;
            c.rate_Bps = rate_Bps;
            c.break_commit = break_commit;
            sim::SimReport r;
            {
                py::gil_scoped_release nogil;  // single-threaded, touches no Python state
                r = sim::simulate(c);
            }
            py::dict d;
            d["seed"] = r.seed;
            d["peers"] = r.peers;
            d["violations"] = r.violations;
            d["faults"] = r.faults;
            d["op_latency_s"] = r.op_latency_s;
            d["recovery_s"] = r.recovery_s;
            d["admission_s"] = r.admission_s;
            d["ops_ok"] = r.ops_ok;
            d["ops_failed"] = r.ops_failed;
            d["views"] = r.views;
            d["partition_splits"] = r.partition_splits;
            d["removed_splits"] = r.removed_splits;
            d["events"] = r.events;
            d["messages"] = r.messages;
            d["vote_messages"] = r.vote_messages;
            d["vote_entries"] = r.vote_entries;
            d["sim_time_s"] = r.sim_time_s;
            return d;
        },
        py::arg("seed"), py::arg("peers"), py::arg("rounds") = 3, py::arg("faults") = -1,
        py::arg("kinds") = "kill,freeze,partition,slow,join", py::arg("timeout_s") = PCCL_DEFAULT_TIMEOUT_S,
        py::arg("heartbeat_s") = PCCL_DEFAULT_HEARTBEAT_TIMEOUT_S, py::arg("delay_min_s") = 0.001,
        py::arg("delay_max_s") = 0.030, py::arg("rate_Bps") = 12.5e6, py::arg("break_commit") = false,
        "One seeded run of the protocol simulator (tests and bench/simulate.py only; see sim/simulator.h).");
}

}  // namespace pccl::bindings
