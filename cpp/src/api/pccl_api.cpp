// The C entry points: thin wrappers. This file is the one place where C++
// exceptions become status codes; the message goes to the last-error string.
#include <cstdlib>
#include <cstring>
#include <exception>
#include <new>
#include <string>

#include "api/communicator.h"
#include "api/thread_error.h"
#include "net/transport.h"
#include "collectives/reduce.h"
#include "common/error.h"
#include "pccl/pccl.h"

namespace {

thread_local std::string g_create_error;  // pccl_last_error(NULL)

template <typename F>
pccl_status_t guard(pccl_comm_t *comm, F &&f) {
    std::string msg;
    pccl_status_t st;
    try {
        f();
        return PCCL_OK;
    } catch (const pccl::Error &e) {
        st = e.status();
        msg = e.what();
    } catch (const std::bad_alloc &) {
        st = PCCL_ERR_INTERNAL;
        msg = "out of memory";
    } catch (const std::exception &e) {
        st = PCCL_ERR_INTERNAL;
        msg = std::string("internal error: ") + e.what();
    } catch (...) {
        st = PCCL_ERR_INTERNAL;
        msg = "internal error: unknown exception";
    }
    if (comm && comm->impl) comm->impl->set_last_error(msg);
    else g_create_error = msg;
    return st;
}

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

}  // namespace

namespace pccl::api {
void set_thread_last_error(const std::string &message) { g_create_error = message; }
}  // namespace pccl::api

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
        case PCCL_ERR_TOO_FEW_PEERS: return "too few peers";
        case PCCL_ERR_CLOSED: return "closed";
        case PCCL_ERR_INTERNAL: return "internal error";
    }
    return "unknown status";
}

size_t pccl_dtype_size(pccl_dtype_t dtype) {
    try {
        return pccl::collectives::dtype_size(dtype);
    } catch (...) {
        return 0;
    }
}

void pccl_config_init(pccl_config_t *c) {
    if (!c) return;
    std::memset(c, 0, sizeof(*c));
    c->timeout_s = 10.0;
    c->join_timeout_s = 300.0;
    c->streams = 8;
    c->chunk_bytes = 64 * 1024;
    c->hole_punch = 1;
    c->relay_slots = 2;
    c->relay_max_reservations = 128;
    c->relay_max_circuits = 512;
    c->relay_reservation_ttl_s = 600.0;
    c->encrypt = 1;
    c->handshake_timeout_s = 10.0;
    c->heartbeat_timeout_s = 3.0;
}

void pccl_allreduce_opts_init(pccl_allreduce_opts_t *o) {
    if (!o) return;
    std::memset(o, 0, sizeof(*o));
    o->op = PCCL_SUM;
    o->quant = PCCL_QUANT_NONE;
    o->quant_block = 128;
    o->stochastic = 0;
    o->algorithm = PCCL_ALGO_RING;
}

pccl_status_t pccl_comm_create(const pccl_config_t *config, pccl_comm_t **out) {
    if (out) *out = nullptr;
    return guard(nullptr, [&] {
        require(config, "config");
        require(out, "out");
        auto *c = new pccl_comm();
        try {
            c->impl = std::make_unique<pccl::Communicator>(*config);
        } catch (...) {
            delete c;
            throw;
        }
        *out = c;
        g_create_error.clear();
    });
}

void pccl_comm_destroy(pccl_comm_t *comm) { delete comm; }

const char *pccl_last_error(const pccl_comm_t *comm) {
    if (!comm || !comm->impl) return g_create_error.c_str();
    return comm->impl->last_error_cstr();
}

pccl_status_t pccl_update_topology(pccl_comm_t *comm) {
    if (!comm) return PCCL_ERR_INVALID_ARGUMENT;
    return guard(comm, [&] { comm->impl->update_topology(); });
}

pccl_status_t pccl_wait_for_peers(pccl_comm_t *comm, uint32_t n, double timeout_s, uint32_t *world_size) {
    if (!comm) return PCCL_ERR_INVALID_ARGUMENT;
    return guard(comm, [&] {
        size_t w = comm->impl->wait_for_peers(n, timeout_s);
        if (world_size) *world_size = static_cast<uint32_t>(w);
    });
}

void pccl_comm_shutdown(pccl_comm_t *comm) {
    if (comm && comm->impl) comm->impl->shutdown();
}

pccl_status_t pccl_world_size(pccl_comm_t *comm, uint32_t *out) {
    if (!comm) return PCCL_ERR_INVALID_ARGUMENT;
    return guard(comm, [&] {
        require(out, "out");
        auto &m = comm->impl->mesh();
        *out = m.is_member() ? static_cast<uint32_t>(m.view().members.size()) : 0;
    });
}

pccl_status_t pccl_epoch(pccl_comm_t *comm, uint64_t *out) {
    if (!comm) return PCCL_ERR_INVALID_ARGUMENT;
    return guard(comm, [&] {
        require(out, "out");
        *out = comm->impl->mesh().view().epoch;
    });
}

pccl_status_t pccl_peer_id(pccl_comm_t *comm, char *buf, size_t cap, size_t *needed) {
    if (!comm) return PCCL_ERR_INVALID_ARGUMENT;
    return guard(comm, [&] { copy_out(comm->impl->mesh().self_id(), buf, cap, needed); });
}

pccl_status_t pccl_addrs(pccl_comm_t *comm, char *buf, size_t cap, size_t *needed) {
    if (!comm) return PCCL_ERR_INVALID_ARGUMENT;
    return guard(comm, [&] { copy_out(join_lines(comm->impl->mesh().addrs()), buf, cap, needed); });
}

static pccl::net::Transport &transport_of(pccl_comm_t *comm) { return comm->impl->mesh().transport(); }

pccl_status_t pccl_reachability(pccl_comm_t *comm, char *buf, size_t cap, size_t *needed) {
    if (!comm) return PCCL_ERR_INVALID_ARGUMENT;
    return guard(comm, [&] { copy_out(transport_of(comm).reachability(), buf, cap, needed); });
}

pccl_status_t pccl_connections(pccl_comm_t *comm, char *buf, size_t cap, size_t *needed) {
    if (!comm) return PCCL_ERR_INVALID_ARGUMENT;
    return guard(comm, [&] { copy_out(join_lines(transport_of(comm).connection_lines()), buf, cap, needed); });
}

pccl_status_t pccl_reservations(pccl_comm_t *comm, char *buf, size_t cap, size_t *needed) {
    if (!comm) return PCCL_ERR_INVALID_ARGUMENT;
    return guard(comm, [&] { copy_out(join_lines(transport_of(comm).reservations()), buf, cap, needed); });
}

pccl_status_t pccl_members(pccl_comm_t *comm, char *buf, size_t cap, size_t *needed) {
    if (!comm) return PCCL_ERR_INVALID_ARGUMENT;
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
    if (!comm) return PCCL_ERR_INVALID_ARGUMENT;
    return guard(comm, [&] {
        pccl_allreduce_opts_t o;
        pccl_allreduce_opts_init(&o);
        if (opts) o = *opts;
        pccl_op_info_t i = comm->impl->all_reduce(sendbuf, recvbuf, count, dtype, o);
        if (info) *info = i;
    });
}

pccl_status_t pccl_all_reduce_async(pccl_comm_t *comm, const void *sendbuf, void *recvbuf, size_t count,
                                    pccl_dtype_t dtype, const pccl_allreduce_opts_t *opts, pccl_op_t **op) {
    if (!comm) return PCCL_ERR_INVALID_ARGUMENT;
    if (op) *op = nullptr;
    return guard(comm, [&] {
        require(op, "op");
        pccl_allreduce_opts_t o;
        pccl_allreduce_opts_init(&o);
        if (opts) o = *opts;
        pccl::collectives::dtype_size(dtype);  // validate on the caller's thread
        auto *h = new pccl_op();
        h->comm = comm->impl.get();
        pccl::Communicator *impl = comm->impl.get();
        h->worker = std::thread([h, impl, sendbuf, recvbuf, count, dtype, o] {
            try {
                h->info = impl->all_reduce(sendbuf, recvbuf, count, dtype, o);
            } catch (const pccl::Error &e) {
                h->status = e.status();
                h->message = e.what();
            } catch (const std::exception &e) {
                h->status = PCCL_ERR_INTERNAL;
                h->message = std::string("internal error: ") + e.what();
            }
        });
        *op = h;
    });
}

pccl_status_t pccl_sync_state(pccl_comm_t *comm, const pccl_tensor_t *tensors, size_t n, uint64_t revision,
                              pccl_sync_info_t *info) {
    if (!comm) return PCCL_ERR_INVALID_ARGUMENT;
    return guard(comm, [&] {
        pccl_sync_info_t i = comm->impl->sync_state(tensors, n, revision);
        if (info) *info = i;
    });
}

pccl_status_t pccl_all_gather_bytes(pccl_comm_t *comm, const void *data, size_t nbytes, uint32_t tag, void **out,
                                    size_t *sizes, size_t sizes_cap, pccl_op_info_t *info) {
    if (!comm) return PCCL_ERR_INVALID_ARGUMENT;
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
    if (!op) return PCCL_ERR_INVALID_ARGUMENT;
    if (op->worker.joinable()) op->worker.join();
    pccl_status_t st = op->status;
    if (st != PCCL_OK) op->comm->set_last_error(op->message);
    if (info) *info = op->info;
    delete op;
    return st;
}

}  // extern "C"
