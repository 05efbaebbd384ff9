// The C enums, the option structs and the communicator, bound over the C API
// (pccl.h) so Python exercises exactly the contract C embedders get. The
// option structs are bound field by field under their C names (Config,
// AllReduceOpts); their defaults are pccl_config_init's and
// pccl_allreduce_opts_init's. Blocking calls release the GIL and, on the main
// thread, stay interruptible by Ctrl-C (see interruptible()). Failures raise
// the pccl_py.errors class of their status with the core's message, read on
// the thread that made the C call (pccl_last_error is per thread).
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <chrono>
#include <condition_variable>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "api/communicator.h"
#include "api/guard.h"
#include "collectives/allreduce.h"
#include "bindings.h"
#include "compress/codec.h"
#include "pccl/pccl.h"

namespace py = pybind11;

namespace pccl::bindings {
namespace {

// A C call's status and, on failure, its message (read right after the call,
// on the same thread).
struct CallResult {
    pccl_status_t st = PCCL_OK;
    std::string msg;
};

template <typename F>
CallResult call_c(pccl_comm_t *comm, F &&call) {
    CallResult r;
    r.st = call();
    if (r.st != PCCL_OK) r.msg = pccl_last_error(comm);
    return r;
}

void check(const CallResult &r) {
    if (r.st == PCCL_ERR_PEER_LOST) {
        // The core names the peer; say what to do about it.
        raise_status(r.st, r.msg + " -- call update_topology() to drop it and retry on the survivors, or pass "
                                   "retry=True");
    }
    if (r.st != PCCL_OK) raise_status(r.st, r.msg);
}

unsigned long g_main_thread = 0;  // Python's main thread: the one signal handlers run on

// Runs a blocking C call (call() -> CallResult) with the GIL released. On
// Python's main thread the call runs on a helper thread while this one waits
// in 50 ms slices, checking for signals (Ctrl-C) with the GIL in each: a
// pending KeyboardInterrupt (or whatever the handler raises) shuts the
// communicator down (the call fails at once with PCCL_ERR_CLOSED; later calls
// too), the helper is joined (nothing touches the caller's buffers
// afterwards) and the exception is raised. On other threads signals are never
// delivered, so the call runs right there.
template <typename F>
CallResult interruptible(pccl_comm_t *comm, F &&call) {
    if (PyThread_get_thread_ident() != g_main_thread) {
        py::gil_scoped_release nogil;
        return call();
    }
    struct Shared {
        std::mutex mu;
        std::condition_variable cv;
        bool done = false;
        CallResult r;
    };
    auto sh = std::make_shared<Shared>();
    bool interrupted = false;
    {
        py::gil_scoped_release nogil;
        std::thread worker([sh, &call] {
            CallResult r = call();
            std::lock_guard<std::mutex> lk(sh->mu);
            sh->r = std::move(r);
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
    return sh->r;
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

// pccl_config_t plus the strings its pointers refer to. Scalar fields live
// in `c` (initialised by pccl_config_init: the defaults); lists and strings
// here, pointed to by c only for the pccl_comm_create call.
struct Config {
    pccl_config_t c;
    std::vector<std::string> listen, bootstrap, relays;
    std::string run_key;  // bytes (latin-1 text from Python)
    std::optional<std::string> key_file, tcp_congestion;
    Config() { pccl_config_init(&c); }
};

class Comm {
public:
    explicit Comm(const Config &cfg) {
        std::vector<const char *> l, b, r;
        for (auto &s : cfg.listen) l.push_back(s.c_str());
        for (auto &s : cfg.bootstrap) b.push_back(s.c_str());
        for (auto &s : cfg.relays) r.push_back(s.c_str());
        pccl_config_t c = cfg.c;
        c.listen = l.data();
        c.n_listen = l.size();
        c.bootstrap = b.data();
        c.n_bootstrap = b.size();
        c.run_key = cfg.run_key.data();
        c.run_key_len = cfg.run_key.size();
        c.key_file = cfg.key_file ? cfg.key_file->c_str() : nullptr;
        c.tcp_congestion = cfg.tcp_congestion ? cfg.tcp_congestion->c_str() : nullptr;
        c.relays = r.data();
        c.n_relays = r.size();
        CallResult res;
        {
            py::gil_scoped_release nogil;
            res = call_c(nullptr, [&] { return pccl_comm_create(&c, &comm_); });
        }
        check(res);
    }
    ~Comm() { close(); }

    // Closes the mesh (calls in flight on other threads fail at once), waits
    // until no thread is inside a call on the handle any more (a thread
    // still in wait() reads its op's record on the communicator), then
    // frees it.
    void close() {
        pccl_comm_t *c = comm_;
        comm_ = nullptr;
        if (c) {
            py::gil_scoped_release nogil;
            pccl_comm_shutdown(c);
            std::unique_lock<std::mutex> lk(use_mu_);
            use_cv_.wait(lk, [&] { return users_ == 0; });
            lk.unlock();
            pccl_comm_destroy(c);
        }
    }

    // The handle for one call, kept alive (close() waits) until the Use ends.
    class Use {
    public:
        explicit Use(Comm &owner) : owner_(owner), c(owner.comm_) {
            if (!c) raise_status(PCCL_ERR_CLOSED, "communicator is closed");
            std::lock_guard<std::mutex> lk(owner_.use_mu_);
            ++owner_.users_;
        }
        ~Use() {
            std::lock_guard<std::mutex> lk(owner_.use_mu_);
            if (--owner_.users_ == 0) owner_.use_cv_.notify_all();
        }
        Use(const Use &) = delete;
        Use &operator=(const Use &) = delete;

    private:
        Comm &owner_;

    public:
        pccl_comm_t *const c;
    };

    std::string text(pccl_status_t (*fn)(pccl_comm_t *, char *, size_t, size_t *)) {
        Use use(*this);
        pccl_comm_t *c = use.c;
        size_t need = 0;
        fn(c, nullptr, 0, &need);
        // The text may grow between the two calls (addresses change when a
        // relay is replaced; connections come and go): ask again with more room.
        for (int attempt = 0;; ++attempt) {
            std::string buf(need + 256, '\0');
            CallResult r = call_c(c, [&] { return fn(c, buf.data(), buf.size(), &need); });
            if (r.st == PCCL_ERR_INVALID_ARGUMENT && need > buf.size() && attempt < 8) continue;
            check(r);
            buf.resize(need ? need - 1 : 0);
            return buf;
        }
    }

    void update_topology() {
        Use use(*this);
        pccl_comm_t *c = use.c;
        check(interruptible(c, [&] { return call_c(c, [&] { return pccl_update_topology(c); }); }));
    }

    uint32_t wait_for_peers(uint32_t n, double timeout) {
        Use use(*this);
        pccl_comm_t *c = use.c;
        uint32_t world = 0;
        check(interruptible(c, [&] { return call_c(c, [&] { return pccl_wait_for_peers(c, n, timeout, &world); }); }));
        return world;
    }

    uint32_t world_size() {
        Use use(*this);
        pccl_comm_t *c = use.c;
        uint32_t n = 0;
        check(call_c(c, [&] { return pccl_world_size(c, &n); }));
        return n;
    }

    uint64_t epoch() {
        Use use(*this);
        pccl_comm_t *c = use.c;
        uint64_t e = 0;
        check(call_c(c, [&] { return pccl_epoch(c, &e); }));
        return e;
    }

    py::tuple all_reduce(uintptr_t send, uintptr_t recv, size_t count, pccl_dtype_t dtype,
                         const pccl_allreduce_opts_t &opts) {
        Use use(*this);
        pccl_comm_t *c = use.c;
        pccl_op_info_t info{};
        check(interruptible(c, [&] {
            return call_c(c, [&] {
                return pccl_all_reduce(c, reinterpret_cast<const void *>(send), reinterpret_cast<void *>(recv), count,
                                       dtype, &opts, &info);
            });
        }));
        return info_tuple(info);
    }

    uintptr_t all_reduce_async(uintptr_t send, uintptr_t recv, size_t count, pccl_dtype_t dtype,
                               const pccl_allreduce_opts_t &opts) {
        Use use(*this);
        pccl_comm_t *c = use.c;
        pccl_op_t *h = nullptr;
        check(call_c(c, [&] {
            return pccl_all_reduce_async(c, reinterpret_cast<const void *>(send), reinterpret_cast<void *>(recv), count,
                                         dtype, &opts, &h);
        }));
        return reinterpret_cast<uintptr_t>(h);
    }

    // Waits for (and frees) an async op handle; its error is the op's own
    // message (pccl_op_message), whatever other ops failed meanwhile.
    py::tuple wait(uintptr_t handle) {
        Use use(*this);
        pccl_comm_t *c = use.c;
        auto *op = reinterpret_cast<pccl_op_t *>(handle);
        pccl_op_info_t info{};
        check(interruptible(c, [&] {
            CallResult r;
            r.msg = pccl_op_message(op);
            r.st = pccl_op_wait(op, &info);
            return r;
        }));
        return info_tuple(info);
    }

    // tensors: (name, pointer, nbytes, version) tuples.
    py::tuple sync_state(const std::vector<std::tuple<std::string, uintptr_t, size_t, uint64_t>> &tensors,
                         uint64_t revision) {
        Use use(*this);
        pccl_comm_t *c = use.c;
        std::vector<pccl_tensor_t> ts;
        for (const auto &t : tensors)
            ts.push_back({std::get<0>(t).c_str(), reinterpret_cast<void *>(std::get<1>(t)), std::get<2>(t),
                          std::get<3>(t)});
        pccl_sync_info_t info{};
        check(interruptible(c, [&] {
            return call_c(c, [&] { return pccl_sync_state(c, ts.data(), ts.size(), revision, &info); });
        }));
        return py::make_tuple(info.tx_bytes, info.rx_bytes, info.revision, info.tensors_received, info.tensors_sent,
                              info.world_size);
    }

    py::tuple all_gather_bytes(const py::bytes &data, uint32_t tag) {
        Use use(*this);
        pccl_comm_t *c = use.c;
        std::string mine = data;
        std::vector<size_t> sizes(4096);
        void *out = nullptr;
        pccl_op_info_t info{};
        check(interruptible(c, [&] {
            return call_c(c, [&] {
                return pccl_all_gather_bytes(c, mine.data(), mine.size(), tag, &out, sizes.data(), sizes.size(),
                                             &info);
            });
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
    std::mutex use_mu_;  // guards users_
    std::condition_variable use_cv_;
    size_t users_ = 0;  // calls inside the C API on comm_ (Use objects alive)
};

void register_enums(py::module_ &m) {
    py::enum_<pccl_status_t>(m, "Status", "pccl_status_t")
        .value("ok", PCCL_OK)
        .value("invalid_argument", PCCL_ERR_INVALID_ARGUMENT)
        .value("invalid_usage", PCCL_ERR_INVALID_USAGE)
        .value("peer_lost", PCCL_ERR_PEER_LOST)
        .value("timeout", PCCL_ERR_TIMEOUT)
        .value("auth_failed", PCCL_ERR_AUTH_FAILED)
        .value("io", PCCL_ERR_IO)
        .value("protocol", PCCL_ERR_PROTOCOL)
        .value("closed", PCCL_ERR_CLOSED)
        .value("internal", PCCL_ERR_INTERNAL);
    py::enum_<pccl_dtype_t>(m, "DType", "pccl_dtype_t")
        .value("f32", PCCL_F32).value("f64", PCCL_F64).value("f16", PCCL_F16).value("bf16", PCCL_BF16)
        .value("i8", PCCL_I8).value("i16", PCCL_I16).value("i32", PCCL_I32).value("i64", PCCL_I64)
        .value("u8", PCCL_U8).value("u16", PCCL_U16).value("u32", PCCL_U32).value("u64", PCCL_U64);
    py::enum_<pccl_reduce_op_t>(m, "ReduceOp", "pccl_reduce_op_t")
        .value("sum", PCCL_SUM).value("avg", PCCL_AVG).value("min", PCCL_MIN).value("max", PCCL_MAX)
        .value("prod", PCCL_PROD);
    py::enum_<pccl_algorithm_t>(m, "Algorithm", "pccl_algorithm_t")
        .value("ring", PCCL_ALGO_RING).value("direct", PCCL_ALGO_DIRECT).value("doubling", PCCL_ALGO_DOUBLING)
        .value("auto", PCCL_ALGO_AUTO);
    py::enum_<pccl_ring_order_t>(m, "RingOrder", "pccl_ring_order_t")
        .value("measured", PCCL_RING_ORDER_MEASURED).value("id", PCCL_RING_ORDER_ID);
    // pccl_quant_t: its members are the codec table's entries (compress/codec.h).
    py::enum_<pccl_quant_t> quant(m, "Quant", "pccl_quant_t: one member per entry of the codec table");
    for (const compress::Codec &c : compress::codecs()) quant.value(c.name, c.id);
}

#define PCCL_CONFIG_FIELD(name, doc)                                                          \
    def_property(                                                                             \
        #name, [](const Config &c) { return c.c.name; },                                      \
        [](Config &c, decltype(pccl_config_t::name) v) { c.c.name = v; }, doc)
#define PCCL_CONFIG_FLAG(name, doc)                                                           \
    def_property(                                                                             \
        #name, [](const Config &c) { return c.c.name != 0; },                                 \
        [](Config &c, bool v) { c.c.name = v ? 1 : 0; }, doc)

void register_config(py::module_ &m) {
    py::class_<Config>(m, "Config", "pccl_config_t, field by field; a new one holds pccl_config_init's defaults.")
        .def(py::init<>())
        .def_property_readonly("struct_size", [](const Config &c) { return c.c.struct_size; })
        .def_readwrite("listen", &Config::listen)
        .def_readwrite("bootstrap", &Config::bootstrap)
        .def_property(
            "run_key", [](const Config &c) { return py::bytes(c.run_key); },
            [](Config &c, const std::string &v) { c.run_key = v; }, "bytes (str is taken as UTF-8)")
        .PCCL_CONFIG_FIELD(timeout_s, "seconds")
        .PCCL_CONFIG_FIELD(join_timeout_s, "seconds")
        .PCCL_CONFIG_FIELD(streams, "TCP streams per ring neighbour")
        .PCCL_CONFIG_FIELD(chunk_bytes, "pipelining granularity, 1 KiB..16 MiB")
        .def_readwrite("key_file", &Config::key_file)
        .def_readwrite("tcp_congestion", &Config::tcp_congestion)
        .PCCL_CONFIG_FIELD(socket_buffer, "SO_SNDBUF/SO_RCVBUF bytes; 0: autotuning")
        .PCCL_CONFIG_FLAG(relay, "offer relaying")
        .def_readwrite("relays", &Config::relays)
        .PCCL_CONFIG_FLAG(hole_punch, "try direct links through NATs")
        .PCCL_CONFIG_FIELD(relay_slots, "relays to hold a reservation on at once")
        .PCCL_CONFIG_FIELD(relay_max_reservations, "relay side")
        .PCCL_CONFIG_FIELD(relay_max_circuits, "relay side")
        .PCCL_CONFIG_FIELD(relay_max_circuit_bytes, "per circuit and direction; 0: unlimited")
        .PCCL_CONFIG_FIELD(relay_max_circuit_s, "0: unlimited")
        .PCCL_CONFIG_FIELD(relay_reservation_ttl_s, "seconds")
        .PCCL_CONFIG_FLAG(encrypt, "AEAD-encrypt payloads (a link is encrypted unless both ends say False)")
        .PCCL_CONFIG_FIELD(handshake_timeout_s, "seconds")
        .PCCL_CONFIG_FIELD(heartbeat_timeout_s, "seconds; a member silent this long is declared dead")
        .PCCL_CONFIG_FIELD(ring_order, "how the coordinator orders each view's ring")
        .PCCL_CONFIG_FIELD(keepalive_s, "seconds an idle stream keeps its congestion window warm; 0: off")
        .PCCL_CONFIG_FLAG(seal_loopback, "seal data payloads on verified loopback links too (default False)");

    pccl_allreduce_opts_t d;
    pccl_allreduce_opts_init(&d);
    py::class_<pccl_allreduce_opts_t>(m, "AllReduceOpts",
                                      "pccl_allreduce_opts_t; keyword defaults are pccl_allreduce_opts_init's.")
        .def(py::init([](pccl_reduce_op_t op, uint32_t tag, pccl_quant_t quant, uint32_t quant_block,
                         bool stochastic, pccl_algorithm_t algorithm, bool no_backup) {
                 pccl_allreduce_opts_t o;
                 pccl_allreduce_opts_init(&o);
                 o.op = op;
                 o.tag = tag;
                 o.quant = quant;
                 o.quant_block = quant_block;
                 o.stochastic = stochastic ? 1 : 0;
                 o.algorithm = algorithm;
                 o.no_backup = no_backup ? 1 : 0;
                 return o;
             }),
             py::kw_only(), py::arg("op") = d.op, py::arg("tag") = d.tag, py::arg("quant") = d.quant,
             py::arg("quant_block") = d.quant_block, py::arg("stochastic") = d.stochastic != 0,
             py::arg("algorithm") = d.algorithm, py::arg("no_backup") = d.no_backup != 0)
        .def_readonly("struct_size", &pccl_allreduce_opts_t::struct_size)
        .def_readwrite("op", &pccl_allreduce_opts_t::op)
        .def_readwrite("tag", &pccl_allreduce_opts_t::tag)
        .def_readwrite("quant", &pccl_allreduce_opts_t::quant)
        .def_readwrite("quant_block", &pccl_allreduce_opts_t::quant_block)
        .def_property(
            "stochastic", [](const pccl_allreduce_opts_t &o) { return o.stochastic != 0; },
            [](pccl_allreduce_opts_t &o, bool v) { o.stochastic = v ? 1 : 0; })
        .def_readwrite("algorithm", &pccl_allreduce_opts_t::algorithm)
        .def_property(
            "no_backup", [](const pccl_allreduce_opts_t &o) { return o.no_backup != 0; },
            [](pccl_allreduce_opts_t &o, bool v) { o.no_backup = v ? 1 : 0; });
    m.def(
        "choose_algorithm",
        [](size_t nbytes, size_t world, const pccl_allreduce_opts_t &o) {
            return collectives::choose_algorithm(nbytes, world, o);
        },
        py::arg("nbytes"), py::arg("world"), py::arg("opts"),
        "The algorithm an all-reduce of nbytes over world members runs with opts (resolves auto).");
}
#undef PCCL_CONFIG_FIELD
#undef PCCL_CONFIG_FLAG

}  // namespace

void register_comm(py::module_ &m) {
    g_main_thread = py::module_::import("threading").attr("main_thread")().attr("ident").cast<unsigned long>();
    register_enums(m);
    register_config(m);
    m.def("build_info", [] { return std::string(pccl_build_info()); });
    m.def(
        "status_string", [](int st) { return std::string(pccl_status_string(static_cast<pccl_status_t>(st))); },
        py::arg("status"));
    m.def(
        "dtype_size", [](int d) { return pccl_dtype_size(static_cast<pccl_dtype_t>(d)); }, py::arg("dtype"));
    m.def(
        "_testing_throw_in_next_async_worker",
        [] { pccl::api::testing::throw_in_next_async_worker.store(true); },
        "Test only: the next all_reduce_async's worker throws a non-std exception (the guard must turn it into "
        "PCCL_ERR_INTERNAL).");
    py::class_<Comm>(m, "Comm")
        .def(py::init<const Config &>(), py::arg("config"))
        .def("close", &Comm::close)
        .def("peer_id", [](Comm &c) { return c.text(pccl_peer_id); })
        .def("addrs", [](Comm &c) { return split_lines(c.text(pccl_addrs)); })
        .def("members", [](Comm &c) { return split_lines(c.text(pccl_members)); })
        .def("reachability", [](Comm &c) { return c.text(pccl_reachability); })
        .def("connections", [](Comm &c) { return split_lines(c.text(pccl_connections)); })
        .def(
            "_testing_hold_membership_lock",
            [](Comm &c, double seconds) {
                if (!(seconds >= 0 && seconds <= 60)) throw py::value_error("seconds must be in [0, 60]");
                Comm::Use use(c);
                pccl_comm_t *h = use.c;
                py::gil_scoped_release nogil;
                h->impl->mesh().testing_hold_membership_lock(seconds);
            },
            py::arg("seconds"),
            "Test only: holds the mesh's membership lock for `seconds` on this thread, as a slow view change "
            "would (pccl_py.testing.hold_membership_lock).")
        .def("reservations", [](Comm &c) { return split_lines(c.text(pccl_reservations)); })
        .def("world_size", &Comm::world_size)
        .def("epoch", &Comm::epoch)
        .def("update_topology", &Comm::update_topology)
        .def("wait_for_peers", &Comm::wait_for_peers, py::arg("n"), py::arg("timeout"))
        .def("all_reduce", &Comm::all_reduce, py::arg("send"), py::arg("recv"), py::arg("count"), py::arg("dtype"),
             py::arg("opts"))
        .def("all_reduce_async", &Comm::all_reduce_async, py::arg("send"), py::arg("recv"), py::arg("count"),
             py::arg("dtype"), py::arg("opts"), "Returns an op handle for wait().")
        .def("wait", &Comm::wait, py::arg("handle"))
        .def("sync_state", &Comm::sync_state, py::arg("tensors"), py::arg("revision"))
        .def("all_gather_bytes", &Comm::all_gather_bytes, py::arg("data"), py::arg("tag"));
}

}  // namespace pccl::bindings
