// The communicator, bound over the C API (pccl.h) so Python exercises exactly
// the contract C embedders get. Blocking calls release the GIL and, on the
// main thread, stay interruptible by Ctrl-C (see interruptible()). Failures
// raise the matching pccl_py.errors exception with the core's message.
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <chrono>
#include <condition_variable>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "bindings.h"
#include "pccl/pccl.h"

namespace py = pybind11;

namespace pccl::bindings {
namespace {

[[noreturn]] void raise(pccl_status_t st, const std::string &msg) {
    py::gil_scoped_acquire gil;
    py::object errors = py::module_::import("pccl_py.errors");
    py::object exc = errors.attr("error_for_status")(static_cast<int>(st), msg);
    PyErr_SetObject(py::type::handle_of(exc).ptr(), exc.ptr());
    throw py::error_already_set();
}

void check(pccl_comm_t *comm, pccl_status_t st) {
    if (st == PCCL_ERR_PEER_LOST) {
        // The core names the peer; say what to do about it.
        raise(st, std::string(pccl_last_error(comm)) +
                      " -- call update_topology() to drop it and retry on the survivors, or pass retry=True");
    }
    if (st != PCCL_OK) raise(st, pccl_last_error(comm));
}

unsigned long g_main_thread = 0;  // Python's main thread: the one signal handlers run on

// Runs a blocking C call with the GIL released. On Python's main thread the
// call runs on a helper thread while this one waits in 50 ms slices, checking
// for signals (Ctrl-C) with the GIL in each: a pending KeyboardInterrupt (or
// whatever the handler raises) shuts the communicator down (the call fails at
// once with PCCL_ERR_CLOSED; later calls too), the helper is joined (nothing
// touches the caller's buffers afterwards) and the exception is raised. On
// other threads signals are never delivered, so the call runs right there.
template <typename F>
pccl_status_t interruptible(pccl_comm_t *comm, F &&call) {
    if (PyThread_get_thread_ident() != g_main_thread) {
        py::gil_scoped_release nogil;
        return call();
    }
    struct Shared {
        std::mutex mu;
        std::condition_variable cv;
        bool done = false;
        pccl_status_t st = PCCL_OK;
    };
    auto sh = std::make_shared<Shared>();
    bool interrupted = false;
    {
        py::gil_scoped_release nogil;
        std::thread worker([sh, &call] {
            pccl_status_t st = call();
            std::lock_guard<std::mutex> lk(sh->mu);
            sh->st = st;
            sh->done = true;
            sh->cv.notify_all();
        });
        for (;;) {
            {
                std::unique_lock<std::mutex> lk(sh->mu);
                if (sh->cv.wait_for(lk, std::chrono::milliseconds(50), [&] { return sh->done; })) break;
            }
            py::gil_scoped_acquire gil;
            if (PyErr_CheckSignals() != 0) {  // the exception stays set on this thread
                interrupted = true;
                break;
            }
        }
        if (interrupted) pccl_comm_shutdown(comm);
        worker.join();
    }
    if (interrupted) throw py::error_already_set();
    return sh->st;
}

std::vector<std::string> split_lines(const std::string &s) {
    std::vector<std::string> out;
    size_t start = 0;
    while (start < s.size()) {
        size_t nl = s.find('\n', start);
        if (nl == std::string::npos) nl = s.size();
        out.push_back(s.substr(start, nl - start));
        start = nl + 1;
    }
    return out;
}

py::tuple info_tuple(const pccl_op_info_t &i) {
    return py::make_tuple(i.tx_bytes, i.rx_bytes, i.world_size, i.epoch);
}

class Comm {
public:
    Comm(std::vector<std::string> listen, std::vector<std::string> bootstrap, const std::string &run_key,
         double timeout, double join_timeout, uint32_t streams, uint32_t chunk_bytes, const std::string &key_file,
         const std::string &tcp_congestion, uint64_t socket_buffer, bool relay, std::vector<std::string> relays,
         bool hole_punch, uint32_t relay_slots, py::tuple relay_limits, bool encrypt,
         double heartbeat_timeout) {
        std::vector<const char *> l, b, r;
        for (auto &s : listen) l.push_back(s.c_str());
        for (auto &s : bootstrap) b.push_back(s.c_str());
        for (auto &s : relays) r.push_back(s.c_str());
        pccl_config_t c;
        pccl_config_init(&c);
        c.listen = l.data();
        c.n_listen = l.size();
        c.bootstrap = b.data();
        c.n_bootstrap = b.size();
        c.run_key = run_key.data();
        c.run_key_len = run_key.size();
        c.timeout_s = timeout;
        c.join_timeout_s = join_timeout;
        c.streams = streams;
        c.chunk_bytes = chunk_bytes;
        c.key_file = key_file.empty() ? nullptr : key_file.c_str();
        c.tcp_congestion = tcp_congestion.empty() ? nullptr : tcp_congestion.c_str();
        c.socket_buffer = socket_buffer;
        c.relay = relay;
        c.relays = r.data();
        c.n_relays = r.size();
        c.hole_punch = hole_punch;
        c.relay_slots = relay_slots;
        c.encrypt = encrypt;
        c.heartbeat_timeout_s = heartbeat_timeout;
        if (relay_limits.size() != 5) throw py::value_error("relay_limits takes 5 values");
        c.relay_max_reservations = relay_limits[0].cast<uint32_t>();
        c.relay_max_circuits = relay_limits[1].cast<uint32_t>();
        c.relay_max_circuit_bytes = relay_limits[2].cast<uint64_t>();
        c.relay_max_circuit_s = relay_limits[3].cast<double>();
        c.relay_reservation_ttl_s = relay_limits[4].cast<double>();
        pccl_status_t st;
        {
            py::gil_scoped_release nogil;
            st = pccl_comm_create(&c, &comm_);
        }
        if (st != PCCL_OK) raise(st, pccl_last_error(nullptr));
    }
    ~Comm() { close(); }

    void close() {
        pccl_comm_t *c = comm_;
        comm_ = nullptr;
        if (c) {
            py::gil_scoped_release nogil;
            pccl_comm_destroy(c);
        }
    }

    pccl_comm_t *get() {
        if (!comm_) raise(PCCL_ERR_CLOSED, "communicator is closed");
        return comm_;
    }

    std::string text(pccl_status_t (*fn)(pccl_comm_t *, char *, size_t, size_t *)) {
        pccl_comm_t *c = get();
        size_t need = 0;
        fn(c, nullptr, 0, &need);
        // The text may grow between the two calls (addresses change when a
        // relay is replaced; connections come and go): ask again with more room.
        for (int attempt = 0;; ++attempt) {
            std::string buf(need + 256, '\0');
            pccl_status_t st = fn(c, buf.data(), buf.size(), &need);
            if (st == PCCL_ERR_INVALID_ARGUMENT && need > buf.size() && attempt < 8) continue;
            check(c, st);
            buf.resize(need ? need - 1 : 0);
            return buf;
        }
    }

    void update_topology() {
        pccl_comm_t *c = get();
        check(c, interruptible(c, [&] { return pccl_update_topology(c); }));
    }

    uint32_t wait_for_peers(uint32_t n, double timeout) {
        pccl_comm_t *c = get();
        uint32_t world = 0;
        check(c, interruptible(c, [&] { return pccl_wait_for_peers(c, n, timeout, &world); }));
        return world;
    }

    uint32_t world_size() {
        uint32_t n = 0;
        check(get(), pccl_world_size(get(), &n));
        return n;
    }

    uint64_t epoch() {
        uint64_t e = 0;
        check(get(), pccl_epoch(get(), &e));
        return e;
    }

    static pccl_allreduce_opts_t opts(int op, uint32_t tag, int quant, uint32_t quant_block, bool stochastic,
                                      int algorithm, bool no_backup) {
        pccl_allreduce_opts_t o;
        pccl_allreduce_opts_init(&o);
        o.op = static_cast<pccl_reduce_op_t>(op);
        o.tag = tag;
        o.quant = static_cast<pccl_quant_t>(quant);
        o.quant_block = quant_block;
        o.stochastic = stochastic ? 1 : 0;
        o.algorithm = static_cast<pccl_algorithm_t>(algorithm);
        o.no_backup = no_backup ? 1 : 0;
        return o;
    }

    py::tuple all_reduce(uintptr_t send, uintptr_t recv, size_t count, int dtype, int op, uint32_t tag, int quant,
                         uint32_t quant_block, bool stochastic, int algorithm, bool no_backup) {
        pccl_comm_t *c = get();
        const pccl_allreduce_opts_t o = opts(op, tag, quant, quant_block, stochastic, algorithm, no_backup);
        pccl_op_info_t info{};
        check(c, interruptible(c, [&] {
                  return pccl_all_reduce(c, reinterpret_cast<const void *>(send), reinterpret_cast<void *>(recv),
                                         count, static_cast<pccl_dtype_t>(dtype), &o, &info);
              }));
        return info_tuple(info);
    }

    uintptr_t all_reduce_async(uintptr_t send, uintptr_t recv, size_t count, int dtype, int op, uint32_t tag,
                               int quant, uint32_t quant_block, bool stochastic, int algorithm, bool no_backup) {
        pccl_comm_t *c = get();
        const pccl_allreduce_opts_t o = opts(op, tag, quant, quant_block, stochastic, algorithm, no_backup);
        pccl_op_t *h = nullptr;
        check(c, pccl_all_reduce_async(c, reinterpret_cast<const void *>(send), reinterpret_cast<void *>(recv),
                                       count, static_cast<pccl_dtype_t>(dtype), &o, &h));
        return reinterpret_cast<uintptr_t>(h);
    }

    // Waits for (and frees) an async op handle.
    py::tuple wait(uintptr_t handle) {
        pccl_comm_t *c = get();
        pccl_op_info_t info{};
        check(c, interruptible(c, [&] { return pccl_op_wait(reinterpret_cast<pccl_op_t *>(handle), &info); }));
        return info_tuple(info);
    }

    // tensors: (name, pointer, nbytes, version) tuples.
    py::tuple sync_state(const std::vector<std::tuple<std::string, uintptr_t, size_t, uint64_t>> &tensors,
                         uint64_t revision) {
        pccl_comm_t *c = get();
        std::vector<pccl_tensor_t> ts;
        for (const auto &t : tensors)
            ts.push_back({std::get<0>(t).c_str(), reinterpret_cast<void *>(std::get<1>(t)), std::get<2>(t),
                          std::get<3>(t)});
        pccl_sync_info_t info{};
        check(c, interruptible(c, [&] { return pccl_sync_state(c, ts.data(), ts.size(), revision, &info); }));
        return py::make_tuple(info.tx_bytes, info.rx_bytes, info.revision, info.tensors_received, info.tensors_sent,
                              info.world_size);
    }

    py::tuple all_gather_bytes(const py::bytes &data, uint32_t tag) {
        pccl_comm_t *c = get();
        std::string mine = data;
        std::vector<size_t> sizes(4096);
        void *out = nullptr;
        pccl_op_info_t info{};
        check(c, interruptible(c, [&] {
                  return pccl_all_gather_bytes(c, mine.data(), mine.size(), tag, &out, sizes.data(), sizes.size(),
                                               &info);
              }));
        py::list blobs;
        size_t off = 0;
        for (uint32_t i = 0; i < info.world_size; ++i) {
            blobs.append(py::bytes(static_cast<const char *>(out) + off, sizes[i]));
            off += sizes[i];
        }
        pccl_free(out);
        return py::make_tuple(blobs, info_tuple(info));
    }

private:
    pccl_comm_t *comm_ = nullptr;
};

}  // namespace

void register_comm(py::module_ &m) {
    g_main_thread = py::module_::import("threading").attr("main_thread")().attr("ident").cast<unsigned long>();
    m.def("build_info", [] { return std::string(pccl_build_info()); });
    m.def("status_string", [](int st) { return std::string(pccl_status_string(static_cast<pccl_status_t>(st))); });
    m.def("dtype_size", [](int d) { return pccl_dtype_size(static_cast<pccl_dtype_t>(d)); });
    py::class_<Comm>(m, "Comm")
        .def(py::init<std::vector<std::string>, std::vector<std::string>, const std::string &, double, double, uint32_t,
                      uint32_t, const std::string &, const std::string &, uint64_t, bool, std::vector<std::string>,
                      bool, uint32_t, py::tuple, bool, double>(),
             py::arg("listen"), py::arg("bootstrap"), py::arg("run_key"), py::arg("timeout"),
             py::arg("join_timeout"), py::arg("streams"), py::arg("chunk_bytes"), py::arg("key_file"),
             py::arg("tcp_congestion"), py::arg("socket_buffer"), py::arg("relay"), py::arg("relays"),
             py::arg("hole_punch"), py::arg("relay_slots"), py::arg("relay_limits"), py::arg("encrypt"),
             py::arg("heartbeat_timeout"))
        .def("close", &Comm::close)
        .def("peer_id", [](Comm &c) { return c.text(pccl_peer_id); })
        .def("addrs", [](Comm &c) { return split_lines(c.text(pccl_addrs)); })
        .def("members", [](Comm &c) { return split_lines(c.text(pccl_members)); })
        .def("reachability", [](Comm &c) { return c.text(pccl_reachability); })
        .def("connections", [](Comm &c) { return split_lines(c.text(pccl_connections)); })
        .def("reservations", [](Comm &c) { return split_lines(c.text(pccl_reservations)); })
        .def("world_size", &Comm::world_size)
        .def("epoch", &Comm::epoch)
        .def("update_topology", &Comm::update_topology)
        .def("wait_for_peers", &Comm::wait_for_peers)
        .def("all_reduce", &Comm::all_reduce)
        .def("all_reduce_async", &Comm::all_reduce_async)
        .def("wait", &Comm::wait)
        .def("sync_state", &Comm::sync_state)
        .def("all_gather_bytes", &Comm::all_gather_bytes);
}

}  // namespace pccl::bindings
