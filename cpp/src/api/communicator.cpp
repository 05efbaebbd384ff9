#include "api/communicator.h"

#include <cstring>
#include <vector>

#include "collectives/allgather.h"
#include "collectives/allreduce.h"
#include "collectives/reduce.h"
#include "common/buffer_pool.h"
#include "common/error.h"
#include "state/sync.h"

namespace pccl {

namespace {
std::vector<std::string> to_strings(const char *const *list, size_t n) {
    std::vector<std::string> out;
    if (n && !list) fail(PCCL_ERR_INVALID_ARGUMENT, "address list is NULL but its length is not 0");
    for (size_t i = 0; i < n; ++i) {
        if (!list[i]) fail(PCCL_ERR_INVALID_ARGUMENT, "address " + std::to_string(i) + " is NULL");
        out.emplace_back(list[i]);
    }
    return out;
}
}  // namespace

Communicator::Communicator(const pccl_config_t &c) {
    mesh::MeshConfig mc;
    mc.listen = to_strings(c.listen, c.n_listen);
    mc.bootstrap = to_strings(c.bootstrap, c.n_bootstrap);
    if (c.run_key_len && !c.run_key) fail(PCCL_ERR_INVALID_ARGUMENT, "run_key is NULL but run_key_len is not 0");
    mc.run_key.assign(c.run_key ? c.run_key : "", c.run_key_len);
    mc.timeout_s = c.timeout_s;
    mc.join_timeout_s = c.join_timeout_s;
    if (!(c.heartbeat_timeout_s > 0)) fail(PCCL_ERR_INVALID_ARGUMENT, "heartbeat_timeout_s must be > 0");
    mc.heartbeat_timeout_s = c.heartbeat_timeout_s;
    if (c.ring_order != PCCL_RING_ORDER_MEASURED && c.ring_order != PCCL_RING_ORDER_ID)
        fail(PCCL_ERR_INVALID_ARGUMENT, "ring_order must be PCCL_RING_ORDER_MEASURED or PCCL_RING_ORDER_ID");
    mc.ring_by_id = c.ring_order == PCCL_RING_ORDER_ID;
    mc.streams = c.streams;
    if (c.key_file) mc.key_file = c.key_file;
    if (c.tcp_congestion) mc.transport.tcp_congestion = c.tcp_congestion;
    mc.transport.socket_buffer = c.socket_buffer;
    mc.transport.relay = c.relay != 0;
    mc.transport.relays = to_strings(c.relays, c.n_relays);
    mc.transport.hole_punch = c.hole_punch != 0;
    if (c.relay_slots < 1) fail(PCCL_ERR_INVALID_ARGUMENT, "relay_slots must be at least 1");
    if (c.relay_max_circuit_s < 0 || c.relay_reservation_ttl_s < 1)
        fail(PCCL_ERR_INVALID_ARGUMENT, "relay_max_circuit_s must be >= 0 and relay_reservation_ttl_s >= 1 s");
    mc.transport.relay_slots = c.relay_slots;
    mc.transport.relay_max_reservations = c.relay_max_reservations;
    mc.transport.relay_max_circuits = c.relay_max_circuits;
    mc.transport.relay_max_circuit_bytes = c.relay_max_circuit_bytes;
    mc.transport.relay_max_circuit_s = c.relay_max_circuit_s;
    mc.transport.relay_reservation_ttl_s = c.relay_reservation_ttl_s;
    mc.transport.op_timeout_s = c.timeout_s;  // the NAT layer's waits derive from it
    if (!(c.handshake_timeout_s > 0)) fail(PCCL_ERR_INVALID_ARGUMENT, "handshake_timeout_s must be > 0");
    mc.transport.encrypt = c.encrypt != 0;
    mc.transport.seal_loopback = c.seal_loopback != 0;
    mc.transport.handshake_timeout_s = c.handshake_timeout_s;
    if (!(c.keepalive_s == 0 || (c.keepalive_s >= 0.1 && c.keepalive_s <= 1e9)))
        fail(PCCL_ERR_INVALID_ARGUMENT, "keepalive_s must be 0 (off) or in 0.1..1e9 seconds, got " +
                                            std::to_string(c.keepalive_s));
    mc.transport.keepalive_s = c.keepalive_s;
    if (c.chunk_bytes < 1024 || c.chunk_bytes > (16u << 20))
        fail(PCCL_ERR_INVALID_ARGUMENT, "chunk_bytes must be in 1 KiB..16 MiB, got " + std::to_string(c.chunk_bytes));
    chunk_bytes_ = c.chunk_bytes;
    mesh_ = std::make_unique<mesh::Mesh>(std::move(mc));
}

Communicator::~Communicator() {
    mesh_->close();  // ops in flight fail with PCCL_ERR_CLOSED
    std::unique_lock<std::mutex> lk(ops_mu_);
    ops_cv_.wait(lk, [&] { return active_ops_ == 0; });
}

void Communicator::update_topology() {
    op_started();
    struct Done {
        Communicator *c;
        ~Done() { c->op_finished(); }
    } done{this};
    mesh_->update_topology();
}

size_t Communicator::wait_for_peers(size_t n, double timeout_s) {
    if (n < 1) fail(PCCL_ERR_INVALID_ARGUMENT, "wait_for_peers: n must be at least 1");
    op_started();
    struct Done {
        Communicator *c;
        ~Done() { c->op_finished(); }
    } done{this};
    return mesh_->wait_for_peers(n, timeout_s);
}

void Communicator::shutdown() { mesh_->close(); }

void Communicator::op_started() {
    std::lock_guard<std::mutex> lk(ops_mu_);
    ++active_ops_;
}

void Communicator::op_finished() {
    std::lock_guard<std::mutex> lk(ops_mu_);
    --active_ops_;
    ops_cv_.notify_all();
}

template <typename Body, typename OnError>
pccl_op_info_t Communicator::run_op(uint32_t tag, Body &&body, OnError &&on_error) {
    op_started();
    struct Done {
        Communicator *c;
        ~Done() { c->op_finished(); }
    } done{this};
    std::unique_ptr<mesh::Channel> ch = mesh_->open_channel(tag);
    pccl_op_info_t info{};
    info.world_size = static_cast<uint32_t>(ch->size());
    info.epoch = ch->epoch();
    try {
        body(*ch);
        if (ch->size() > 1) ch->commit();
    } catch (const Error &e) {
        // Tell the others at once instead of letting them time out, so that
        // no member reports success for this op.
        if (e.status() != PCCL_ERR_CLOSED) ch->abort(e.status(), e.what());
        ch->quiesce();  // nothing may still be writing into the caller's memory
        on_error();
        throw;
    }
    info.tx_bytes = ch->tx_bytes;
    info.rx_bytes = ch->rx_bytes;
    return info;
}

static void check_user_tag(uint32_t tag) {
    if (tag >= Communicator::kReservedTags)
        fail(PCCL_ERR_INVALID_ARGUMENT, "tag " + std::to_string(tag) + " is reserved (use tags below 0xffff0000)");
}

pccl_op_info_t Communicator::all_reduce(const void *sendbuf, void *recvbuf, size_t count, pccl_dtype_t dtype,
                                        const pccl_allreduce_opts_t &opts) {
    const size_t esize = collectives::dtype_size(dtype);
    collectives::check_all_reduce_options(dtype, opts);  // before the op starts: nothing to abort
    if (count && (!sendbuf || !recvbuf)) fail(PCCL_ERR_INVALID_ARGUMENT, "all_reduce: NULL buffer");
    if (count > (size_t(1) << 40) / esize) fail(PCCL_ERR_INVALID_ARGUMENT, "all_reduce: count too large");
    check_user_tag(opts.tag);
    const size_t nbytes = count * esize;
    // In place, keep the input so a failure leaves the caller's data as it
    // was (collectives/backup.h: all of it, before anything is sent, in
    // recycled memory: a fresh 64 MiB vector per op costs page faults).
    collectives::Backup backup(static_cast<uint8_t *>(recvbuf), nbytes);
    const bool keep = sendbuf == recvbuf && !opts.no_backup;
    const uint64_t seed = quant_calls_.fetch_add(1, std::memory_order_relaxed);
    return run_op(
        opts.tag,
        [&](mesh::Channel &ch) {
            if (sendbuf != recvbuf && nbytes) std::memmove(recvbuf, sendbuf, nbytes);
            collectives::ring_all_reduce(ch, recvbuf, count, dtype, opts, op_chunk_bytes(ch, nbytes), seed,
                                         keep ? &backup : nullptr);
        },
        [&] { backup.restore(); });
}

size_t Communicator::op_chunk_bytes(const mesh::Channel &ch, size_t nbytes) const {
    size_t c = chunk_bytes_;
    if (!ch.one_host()) return c;
    while (c * 2 <= kOneHostChunkBytes && c * 2 * 4 * ch.size() <= nbytes) c *= 2;
    return c;
}

pccl_sync_info_t Communicator::sync_state(const pccl_tensor_t *tensors, size_t n, uint64_t revision) {
    if (n && !tensors) fail(PCCL_ERR_INVALID_ARGUMENT, "sync_state: tensors is NULL");
    std::vector<state::TensorRef> refs;
    for (size_t i = 0; i < n; ++i) {
        if (!tensors[i].name) fail(PCCL_ERR_INVALID_ARGUMENT, "sync_state: tensor " + std::to_string(i) + " has no name");
        if (tensors[i].nbytes && !tensors[i].data)
            fail(PCCL_ERR_INVALID_ARGUMENT, std::string("sync_state: tensor '") + tensors[i].name + "' is NULL");
        refs.push_back({tensors[i].name, static_cast<uint8_t *>(tensors[i].data), tensors[i].nbytes});
    }
    std::vector<uint64_t> known(n);
    {
        std::lock_guard<std::mutex> lk(hash_mu_);
        for (size_t i = 0; i < n; ++i) {
            auto it = hash_cache_.find(tensors[i].name);
            if (tensors[i].version && it != hash_cache_.end() && it->second.data == tensors[i].data &&
                it->second.nbytes == tensors[i].nbytes && it->second.version == tensors[i].version) {
                known[i] = it->second.hash;
                refs[i].known_hash = &known[i];
            }
        }
    }
    state::SyncResult r;
    pccl_op_info_t info;
    try {
        info = run_op(
            kReservedTags + 1,
            [&](mesh::Channel &ch) {
                state::StateHistory history;
                {
                    std::lock_guard<std::mutex> lk(state_mu_);
                    history = state_history_;
                }
                r = state::sync_state(ch, refs, revision, chunk_bytes_, history);
            },
            [] {});
    } catch (...) {
        std::lock_guard<std::mutex> lk(hash_mu_);
        hash_cache_.clear();  // tensors may have been overwritten before the failure
        throw;
    }
    {
        std::lock_guard<std::mutex> lk(state_mu_);
        state_history_ = state::StateHistory{true, r.revision};  // committed on every member
    }
    {
        std::lock_guard<std::mutex> lk(hash_mu_);
        for (size_t i = 0; i < n && i < r.hashes.size(); ++i) {
            if (tensors[i].version)
                hash_cache_[tensors[i].name] = {tensors[i].data, tensors[i].nbytes, tensors[i].version, r.hashes[i]};
            else
                hash_cache_.erase(tensors[i].name);
        }
    }
    pccl_sync_info_t out{};
    out.tx_bytes = info.tx_bytes;
    out.rx_bytes = info.rx_bytes;
    out.revision = r.revision;
    out.tensors_received = r.tensors_received;
    out.tensors_sent = r.tensors_sent;
    out.world_size = info.world_size;
    return out;
}

std::vector<std::string> Communicator::all_gather_bytes(const std::string &mine, uint32_t tag, pccl_op_info_t *info) {
    check_user_tag(tag);
    std::vector<std::string> out;
    pccl_op_info_t i = run_op(
        tag, [&](mesh::Channel &ch) { out = collectives::all_gather_bytes(ch, mine, chunk_bytes_); }, [] {});
    if (info) *info = i;
    return out;
}

void Communicator::set_last_error(const std::string &msg) {
    std::lock_guard<std::mutex> lk(err_mu_);
    last_error_ = msg;
}

std::string Communicator::last_error() const {
    std::lock_guard<std::mutex> lk(err_mu_);
    return last_error_;
}

}  // namespace pccl
