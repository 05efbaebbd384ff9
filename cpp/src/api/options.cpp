#include "api/options.h"

#include <cstddef>
#include <cstring>
#include <string>

#include "common/error.h"

namespace pccl::api {

namespace {

struct Field {
    size_t offset, size;
};

#define PCCL_FIELD(T, f) Field{offsetof(T, f), sizeof(static_cast<T *>(nullptr)->f)}

// Every field of the current layouts. Releases only append fields after the
// previous sizeof (never into its tail padding), so the size of every
// release's struct is a multiple of 8 that ends no field half-way.
constexpr Field kConfigFields[] = {
    PCCL_FIELD(pccl_config_t, struct_size), PCCL_FIELD(pccl_config_t, listen),
    PCCL_FIELD(pccl_config_t, n_listen), PCCL_FIELD(pccl_config_t, bootstrap),
    PCCL_FIELD(pccl_config_t, n_bootstrap), PCCL_FIELD(pccl_config_t, run_key),
    PCCL_FIELD(pccl_config_t, run_key_len), PCCL_FIELD(pccl_config_t, timeout_s),
    PCCL_FIELD(pccl_config_t, join_timeout_s), PCCL_FIELD(pccl_config_t, streams),
    PCCL_FIELD(pccl_config_t, chunk_bytes), PCCL_FIELD(pccl_config_t, key_file),
    PCCL_FIELD(pccl_config_t, tcp_congestion), PCCL_FIELD(pccl_config_t, socket_buffer),
    PCCL_FIELD(pccl_config_t, relay), PCCL_FIELD(pccl_config_t, relays),
    PCCL_FIELD(pccl_config_t, n_relays), PCCL_FIELD(pccl_config_t, hole_punch),
    PCCL_FIELD(pccl_config_t, relay_slots), PCCL_FIELD(pccl_config_t, relay_max_reservations),
    PCCL_FIELD(pccl_config_t, relay_max_circuits), PCCL_FIELD(pccl_config_t, relay_max_circuit_bytes),
    PCCL_FIELD(pccl_config_t, relay_max_circuit_s), PCCL_FIELD(pccl_config_t, relay_reservation_ttl_s),
    PCCL_FIELD(pccl_config_t, encrypt), PCCL_FIELD(pccl_config_t, handshake_timeout_s),
    PCCL_FIELD(pccl_config_t, heartbeat_timeout_s), PCCL_FIELD(pccl_config_t, ring_order),
    PCCL_FIELD(pccl_config_t, keepalive_s),
    PCCL_FIELD(pccl_config_t, seal_loopback),
};
constexpr Field kAllReduceFields[] = {
    PCCL_FIELD(pccl_allreduce_opts_t, struct_size), PCCL_FIELD(pccl_allreduce_opts_t, op),
    PCCL_FIELD(pccl_allreduce_opts_t, tag),         PCCL_FIELD(pccl_allreduce_opts_t, quant),
    PCCL_FIELD(pccl_allreduce_opts_t, quant_block), PCCL_FIELD(pccl_allreduce_opts_t, stochastic),
    PCCL_FIELD(pccl_allreduce_opts_t, algorithm),   PCCL_FIELD(pccl_allreduce_opts_t, no_backup),
};
#undef PCCL_FIELD

// A field appended to a struct but not listed above fails here.
template <size_t N>
constexpr size_t layout_end(const Field (&fields)[N]) {
    return (fields[N - 1].offset + fields[N - 1].size + 7) / 8 * 8;
}
static_assert(layout_end(kConfigFields) == sizeof(pccl_config_t), "kConfigFields must list every field");
static_assert(layout_end(kAllReduceFields) == sizeof(pccl_allreduce_opts_t), "kAllReduceFields must list every field");

template <size_t N>
void check_size(size_t size, size_t full, const Field (&fields)[N], const char *what) {
    const std::string name(what);
    if (size == 0)
        fail(PCCL_ERR_INVALID_ARGUMENT, name + ".struct_size is 0: initialise it with " + name + "_init()");
    if (size > full)
        fail(PCCL_ERR_INVALID_ARGUMENT, name + ".struct_size is " + std::to_string(size) + ", larger than the " +
                                            std::to_string(full) + " bytes this library knows: built against a "
                                            "newer pccl.h (or not initialised with " + name + "_init())");
    bool cuts = size % 8 != 0;
    for (const Field &f : fields) cuts = cuts || (f.offset < size && size < f.offset + f.size);
    if (cuts)
        fail(PCCL_ERR_INVALID_ARGUMENT, name + ".struct_size " + std::to_string(size) +
                                            " is no release's layout (not initialised with " + name + "_init()?)");
}

// The caller's first struct_size bytes over the defaults; struct_size = ours.
template <typename T, size_t N>
T read_sized(const T *in, void (*init)(T *), const Field (&fields)[N], const char *what) {
    T out;
    init(&out);
    size_t size;
    std::memcpy(&size, in, sizeof size);  // struct_size leads every option struct
    check_size(size, sizeof(T), fields, what);
    std::memcpy(static_cast<void *>(&out), in, size);
    out.struct_size = sizeof(T);
    return out;
}

}  // namespace

pccl_config_t read_config(const pccl_config_t *config) {
    if (!config) fail(PCCL_ERR_INVALID_ARGUMENT, "config is NULL");
    return read_sized(config, pccl_config_init, kConfigFields, "pccl_config");
}

pccl_allreduce_opts_t read_allreduce_opts(const pccl_allreduce_opts_t *opts) {
    if (!opts) {
        pccl_allreduce_opts_t o;
        pccl_allreduce_opts_init(&o);
        return o;
    }
    return read_sized(opts, pccl_allreduce_opts_init, kAllReduceFields, "pccl_allreduce_opts");
}

}  // namespace pccl::api
