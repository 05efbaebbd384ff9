// The object behind a pccl_comm_t: a mesh membership plus the collectives
// that run over it. Methods throw pccl::Error; api/guard.h maps them. It
// consumes the public option structs as api/options.h normalised them.
#pragma once

#include <atomic>
#include <condition_variable>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "mesh/mesh.h"
#include "state/sync.h"
#include "pccl/pccl.h"

namespace pccl {

class Communicator {
public:
    // config: as read by api::read_config (struct_size honoured).
    explicit Communicator(const pccl_config_t &config);
    ~Communicator();

    mesh::Mesh &mesh() { return *mesh_; }

    // Blocking membership calls, counted as ops so that the destructor waits
    // for a thread still inside one (shutdown() makes them fail at once).
    void update_topology();
    size_t wait_for_peers(size_t n, double timeout_s);

    // Closes the mesh: every blocking call and op in flight fails with
    // PCCL_ERR_CLOSED; the object stays valid until destroyed. Idempotent.
    void shutdown();

    // Blocking all-reduce. sendbuf == recvbuf is in place; on failure an
    // in-place buffer is restored to its input (the op is all or nothing).
    // opts: as read by api::read_allreduce_opts.
    pccl_op_info_t all_reduce(const void *sendbuf, void *recvbuf, size_t count, pccl_dtype_t dtype,
                              const pccl_allreduce_opts_t &opts);

    // Ops in flight (sync or async); the destructor waits for them to end.
    void op_started();
    void op_finished();

    // sync_state over the current view (see state/sync.h).
    pccl_sync_info_t sync_state(const pccl_tensor_t *tensors, size_t n, uint64_t revision);

    // Every member's blob, in rank order.
    std::vector<std::string> all_gather_bytes(const std::string &mine, uint32_t tag, pccl_op_info_t *info);

    // The most recent failure message of any thread (pccl_last_error's
    // fallback for a thread without a failure of its own on this comm).
    void set_last_error(const std::string &msg);
    std::string last_error() const;

    // Tags at or above this are used by the library itself.
    static constexpr uint32_t kReservedTags = 0xffff0000u;

private:
    // Opens a channel for the next op on `tag`, runs body(channel), then the
    // commit; on any error tells the others, runs on_error(), rethrows.
    template <typename Body, typename OnError>
    pccl_op_info_t run_op(uint32_t tag, Body &&body, OnError &&on_error);

    // The sub-chunk size of an all-reduce of `nbytes` on `ch`: chunk_bytes_,
    // or on one host (ch.one_host(): no loss to stripe around, the CPU is the
    // limit, fewer and larger sends win) doubled up to kOneHostChunkBytes
    // while every ring chunk keeps at least 4 sub-chunks to pipeline. A
    // function of the view and the op: every member cuts the same pieces.
    size_t op_chunk_bytes(const mesh::Channel &ch, size_t nbytes) const;
    // Measured (bench/allreduce.py, 4 peers x 64 MiB, 2 cores): 64 KiB
    // sub-chunks 197-201 ms, 256 KiB 152-154, 1 MiB 126-148.
    static constexpr size_t kOneHostChunkBytes = size_t(1) << 20;

    std::unique_ptr<mesh::Mesh> mesh_;
    size_t chunk_bytes_;
    std::mutex state_mu_;                 // guards state_history_
    state::StateHistory state_history_;  // what this member's last sync_state committed
    std::atomic<uint64_t> quant_calls_{0};  // seeds stochastic rounding: differs per call
    mutable std::mutex err_mu_;  // guards last_error_
    std::string last_error_;
    // Hashes of versioned state tensors (pccl_tensor_t.version) at the last
    // successful sync_state, by name.
    struct HashCacheEntry {
        const void *data;
        size_t nbytes;
        uint64_t version;
        uint64_t hash;
    };
    std::mutex hash_mu_;  // guards hash_cache_
    std::map<std::string, HashCacheEntry> hash_cache_;
    std::mutex ops_mu_;  // guards active_ops_
    std::condition_variable ops_cv_;
    size_t active_ops_ = 0;
};

}  // namespace pccl

// An async op: a thread that runs one blocking collective under the guard.
// status, message and info are written by the worker only, and read only
// after join() (which orders them before the reader).
struct pccl_op {
    pccl_comm_t *comm = nullptr;
    std::thread worker;
    pccl_status_t status = PCCL_OK;
    std::string message;  // this op's own error message ("" on success)
    pccl_op_info_t info{};

    // Waits for the worker; any number of threads may call it at once.
    void join() {
        std::lock_guard<std::mutex> lk(join_mu);
        if (worker.joinable()) worker.join();
    }

private:
    std::mutex join_mu;  // serialises join(): std::thread::join is not thread-safe
};

struct pccl_comm {
    std::unique_ptr<pccl::Communicator> impl;
    // Unique per communicator ever created in this process: a thread's
    // error record names its communicator by this, not by the address
    // (which a later communicator may reuse).
    uint64_t serial = 0;
};
