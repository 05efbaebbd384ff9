// The C entry points: thin wrappers. Every body runs through api/guard.h's
// guard (the one place C++ exceptions become status codes); option structs
// are read through api/options.h (the one place their struct_size is
// honoured).
#include <cstdlib>
#include <cstring>
#include <exception>
#include <memory>
#include <mutex>
#include <string>

#include "api/communicator.h"
#include "api/guard.h"
#include "api/options.h"
#include "net/transport.h"
#include "collectives/reduce.h"
#include "common/error.h"
#include "pccl/pccl.h"

namespace pccl::api {

namespace {
// The calling thread's last failure on a communicator (which one) and its
// last failure without one: each thread reads only what it wrote.
struct ThreadErrors {
    uint64_t comm = 0;  // pccl_comm::serial of on_comm's communicator; 0: none
    std::string on_comm;
    std::string no_comm;
    std::string fallback;  // a copy of some communicator's most recent failure
};
thread_local ThreadErrors t_errors;
std::atomic<uint64_t> g_next_serial{1};
}  // namespace

uint64_t next_comm_serial() { return g_next_serial.fetch_add(1, std::memory_order_relaxed); }

std::atomic<bool> testing::throw_in_next_async_worker{false};

void record_failure(const pccl_comm_t *comm, const std::string &message) {
    if (comm && comm->impl) {
        t_errors.comm = comm->serial;
        t_errors.on_comm = message;
        comm->impl->set_last_error(message);
    } else {
        t_errors.no_comm = message;
    }
}

const char *last_error(const pccl_comm_t *comm) {
    if (!comm || !comm->impl) return t_errors.no_comm.c_str();
    if (t_errors.comm == comm->serial) return t_errors.on_comm.c_str();
    t_errors.fallback = comm->impl->last_error();
    return t_errors.fallback.c_str();
}

void clear_thread_error() { t_errors.no_comm.clear(); }

}  // namespace pccl::api

namespace {

using pccl::api::guard;

pccl_status_t copy_out(const std::string &s, char *buf, size_t cap, size_t *needed) {
    if (needed) *needed = s.size() + 1;
    if (!buf || cap < s.size() + 1)
        pccl::fail(PCCL_ERR_INVALID_ARGUMENT, "buffer of " + std::to_string(cap) + " bytes is too small, need " +
                                                  std::to_string(s.size() + 1));
    std::memcpy(buf, s.c_str(), s.size() + 1);
    return PCCL_OK;
}

std::string join_lines(const std::vector<std::string> &v) {
    std::string out;
    for (size_t i = 0; i < v.size(); ++i) out += (i ? "\n" : "") + v[i];
    return out;
}

void require(const void *p, const char *what) {
    if (!p) pccl::fail(PCCL_ERR_INVALID_ARGUMENT, std::string(what) + " is NULL");
}

// A NULL communicator: PCCL_ERR_INVALID_ARGUMENT, the message in the calling
// thread's pccl_last_error(NULL).
pccl_status_t null_comm() {
    return guard(nullptr, [] { pccl::fail(PCCL_ERR_INVALID_ARGUMENT, "comm is NULL"); });
}

}  // namespace

extern "C" {

const char *pccl_status_string(pccl_status_t status) {
    switch (status) {
        case PCCL_OK: return "success";
        case PCCL_ERR_INVALID_ARGUMENT: return "invalid argument";
        case PCCL_ERR_INVALID_USAGE: return "invalid usage";
        case PCCL_ERR_PEER_LOST: return "peer lost";
        case PCCL_ERR_TIMEOUT: return "timeout";
        case PCCL_ERR_AUTH_FAILED: return "authentication failed";
        case PCCL_ERR_IO: return "I/O error";
        case PCCL_ERR_PROTOCOL: return "protocol error";
        case PCCL_ERR_CLOSED: return "closed";
        case PCCL_ERR_INTERNAL: return "internal error";
    }
    return "unknown status";
}

size_t pccl_dtype_size(pccl_dtype_t dtype) {
    size_t size = 0;  // an unknown dtype: 0, no message (this call cannot fail)
    pccl::api::run_guarded([&] { size = pccl::collectives::dtype_size(dtype); });
    return size;
}

void pccl_config_init(pccl_config_t *c) {
    if (!c) return;
    std::memset(c, 0, sizeof(*c));
    c->struct_size = sizeof(*c);
    c->timeout_s = PCCL_DEFAULT_TIMEOUT_S;
    c->join_timeout_s = PCCL_DEFAULT_JOIN_TIMEOUT_S;
    c->streams = PCCL_DEFAULT_STREAMS;
    c->chunk_bytes = PCCL_DEFAULT_CHUNK_BYTES;
    c->hole_punch = 1;
    c->relay_slots = PCCL_DEFAULT_RELAY_SLOTS;
    c->relay_max_reservations = PCCL_DEFAULT_RELAY_MAX_RESERVATIONS;
    c->relay_max_circuits = PCCL_DEFAULT_RELAY_MAX_CIRCUITS;
    c->relay_reservation_ttl_s = PCCL_DEFAULT_RELAY_RESERVATION_TTL_S;
    c->encrypt = 1;
    c->handshake_timeout_s = PCCL_DEFAULT_HANDSHAKE_TIMEOUT_S;
    c->heartbeat_timeout_s = PCCL_DEFAULT_HEARTBEAT_TIMEOUT_S;
    c->keepalive_s = PCCL_DEFAULT_KEEPALIVE_S;
}

void pccl_allreduce_opts_init(pccl_allreduce_opts_t *o) {
    if (!o) return;
    std::memset(o, 0, sizeof(*o));
    o->struct_size = sizeof(*o);
    o->op = PCCL_SUM;
    o->quant = PCCL_QUANT_NONE;
    o->quant_block = PCCL_DEFAULT_QUANT_BLOCK;
    o->stochastic = 0;
    o->algorithm = PCCL_ALGO_AUTO;
}

pccl_status_t pccl_comm_create(const pccl_config_t *config, pccl_comm_t **out) {
    if (out) *out = nullptr;
    return guard(nullptr, [&] {
        require(out, "out");
        const pccl_config_t c = pccl::api::read_config(config);
        auto comm = std::make_unique<pccl_comm>();
        comm->impl = std::make_unique<pccl::Communicator>(c);
        comm->serial = pccl::api::next_comm_serial();
        *out = comm.release();
        pccl::api::clear_thread_error();
    });
}

void pccl_comm_destroy(pccl_comm_t *comm) { delete comm; }

const char *pccl_last_error(const pccl_comm_t *comm) { return pccl::api::last_error(comm); }

pccl_status_t pccl_update_topology(pccl_comm_t *comm) {
    if (!comm) return null_comm();
    return guard(comm, [&] { comm->impl->update_topology(); });
}

pccl_status_t pccl_wait_for_peers(pccl_comm_t *comm, uint32_t n, double timeout_s, uint32_t *world_size) {
    if (!comm) return null_comm();
    return guard(comm, [&] {
        size_t w = comm->impl->wait_for_peers(n, timeout_s);
        if (world_size) *world_size = static_cast<uint32_t>(w);
    });
}

void pccl_comm_shutdown(pccl_comm_t *comm) {
    // Nothing to report (void; also called from signal-handler threads), but
    // nothing may cross the C boundary either.
    if (comm && comm->impl) pccl::api::run_guarded([&] { comm->impl->shutdown(); });
}

pccl_status_t pccl_world_size(pccl_comm_t *comm, uint32_t *out) {
    if (!comm) return null_comm();
    return guard(comm, [&] {
        require(out, "out");
        auto &m = comm->impl->mesh();
        *out = m.is_member() ? static_cast<uint32_t>(m.view().members.size()) : 0;
    });
}

pccl_status_t pccl_epoch(pccl_comm_t *comm, uint64_t *out) {
    if (!comm) return null_comm();
    return guard(comm, [&] {
        require(out, "out");
        *out = comm->impl->mesh().view().epoch;
    });
}

pccl_status_t pccl_peer_id(pccl_comm_t *comm, char *buf, size_t cap, size_t *needed) {
    if (!comm) return null_comm();
    return guard(comm, [&] { copy_out(comm->impl->mesh().self_id(), buf, cap, needed); });
}

pccl_status_t pccl_addrs(pccl_comm_t *comm, char *buf, size_t cap, size_t *needed) {
    if (!comm) return null_comm();
    return guard(comm, [&] { copy_out(join_lines(comm->impl->mesh().addrs()), buf, cap, needed); });
}

static pccl::net::Transport &transport_of(pccl_comm_t *comm) { return comm->impl->mesh().transport(); }

pccl_status_t pccl_reachability(pccl_comm_t *comm, char *buf, size_t cap, size_t *needed) {
    if (!comm) return null_comm();
    return guard(comm, [&] { copy_out(transport_of(comm).reachability(), buf, cap, needed); });
}

pccl_status_t pccl_connections(pccl_comm_t *comm, char *buf, size_t cap, size_t *needed) {
    if (!comm) return null_comm();
    return guard(comm, [&] { copy_out(join_lines(transport_of(comm).connection_lines()), buf, cap, needed); });
}

pccl_status_t pccl_reservations(pccl_comm_t *comm, char *buf, size_t cap, size_t *needed) {
    if (!comm) return null_comm();
    return guard(comm, [&] { copy_out(join_lines(transport_of(comm).reservations()), buf, cap, needed); });
}

pccl_status_t pccl_members(pccl_comm_t *comm, char *buf, size_t cap, size_t *needed) {
    if (!comm) return null_comm();
    return guard(comm, [&] {
        std::vector<std::string> ids;
        auto &m = comm->impl->mesh();
        if (m.is_member())
            for (const auto &mem : m.view().members) ids.push_back(mem.id);
        copy_out(join_lines(ids), buf, cap, needed);
    });
}

pccl_status_t pccl_all_reduce(pccl_comm_t *comm, const void *sendbuf, void *recvbuf, size_t count,
                              pccl_dtype_t dtype, const pccl_allreduce_opts_t *opts, pccl_op_info_t *info) {
    if (!comm) return null_comm();
    return guard(comm, [&] {
        const pccl_allreduce_opts_t o = pccl::api::read_allreduce_opts(opts);
        pccl_op_info_t i = comm->impl->all_reduce(sendbuf, recvbuf, count, dtype, o);
        if (info) *info = i;
    });
}

pccl_status_t pccl_all_reduce_async(pccl_comm_t *comm, const void *sendbuf, void *recvbuf, size_t count,
                                    pccl_dtype_t dtype, const pccl_allreduce_opts_t *opts, pccl_op_t **op) {
    if (!comm) return null_comm();
    if (op) *op = nullptr;
    return guard(comm, [&] {
        require(op, "op");
        const pccl_allreduce_opts_t o = pccl::api::read_allreduce_opts(opts);
        pccl::collectives::dtype_size(dtype);  // validate on the caller's thread
        auto h = std::make_unique<pccl_op>();
        h->comm = comm;
        pccl::Communicator *impl = comm->impl.get();
        pccl_op *raw = h.get();
        // The worker's whole body runs under the same guard as an entry
        // point: nothing it throws can end the thread (std::terminate). Its
        // outcome is the op's own (status, message), read by pccl_op_wait /
        // pccl_op_message after the join.
        h->worker = std::thread([raw, impl, sendbuf, recvbuf, count, dtype, o] {
            pccl::api::Outcome out = pccl::api::run_guarded([&] {
                if (pccl::api::testing::throw_in_next_async_worker.exchange(false, std::memory_order_relaxed))
                    throw 42;  // not a std::exception: only catch (...) stops it
                raw->info = impl->all_reduce(sendbuf, recvbuf, count, dtype, o);
            });
            raw->status = out.status;
            raw->message = std::move(out.message);
        });
        *op = h.release();
    });
}

pccl_status_t pccl_sync_state(pccl_comm_t *comm, const pccl_tensor_t *tensors, size_t n, uint64_t revision,
                              pccl_sync_info_t *info) {
    if (!comm) return null_comm();
    return guard(comm, [&] {
        pccl_sync_info_t i = comm->impl->sync_state(tensors, n, revision);
        if (info) *info = i;
    });
}

pccl_status_t pccl_all_gather_bytes(pccl_comm_t *comm, const void *data, size_t nbytes, uint32_t tag, void **out,
                                    size_t *sizes, size_t sizes_cap, pccl_op_info_t *info) {
    if (!comm) return null_comm();
    if (out) *out = nullptr;
    return guard(comm, [&] {
        require(out, "out");
        require(sizes, "sizes");
        if (nbytes && !data) pccl::fail(PCCL_ERR_INVALID_ARGUMENT, "data is NULL");
        std::string mine(static_cast<const char *>(data ? data : ""), nbytes);
        std::vector<std::string> blobs = comm->impl->all_gather_bytes(mine, tag, info);
        if (blobs.size() > sizes_cap)
            pccl::fail(PCCL_ERR_INVALID_ARGUMENT, "sizes holds " + std::to_string(sizes_cap) + " entries, the world has " +
                                                      std::to_string(blobs.size()) + " members");
        size_t total = 0;
        for (const auto &b : blobs) total += b.size();
        auto *buf = static_cast<char *>(std::malloc(total ? total : 1));
        if (!buf) throw std::bad_alloc();
        size_t off = 0;
        for (size_t i = 0; i < blobs.size(); ++i) {
            std::memcpy(buf + off, blobs[i].data(), blobs[i].size());
            off += blobs[i].size();
            sizes[i] = blobs[i].size();
        }
        *out = buf;
    });
}

void pccl_free(void *p) { std::free(p); }

pccl_status_t pccl_op_wait(pccl_op_t *op, pccl_op_info_t *info) {
    if (!op) return guard(nullptr, [] { pccl::fail(PCCL_ERR_INVALID_ARGUMENT, "op is NULL"); });
    op->join();
    const pccl_status_t st = op->status;
    if (st != PCCL_OK) pccl::api::record_failure(op->comm, op->message);
    if (info) *info = op->info;
    delete op;
    return st;
}

const char *pccl_op_message(pccl_op_t *op) {
    if (!op) return "op is NULL";
    op->join();
    return op->message.c_str();
}

}  // extern "C"
