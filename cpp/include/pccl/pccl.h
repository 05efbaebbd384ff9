/*
 * pccl.h: the whole public C99 contract of pccl_py's core.
 *
 * Conventions
 * - Every function returns a pccl_status_t (or a plain value where it cannot
 *   fail); results come back through pointer arguments.
 * - Handles are opaque. A communicator may be used from several threads; a
 *   blocking call (join, update_topology, all_reduce, op_wait) blocks only the
 *   calling thread.
 * - On failure, pccl_last_error(comm) holds a message naming the problem,
 *   per calling thread: two threads failing at once on one communicator each
 *   read their own message. An async op carries its own (pccl_op_message).
 * - Option structs (pccl_config_t, pccl_allreduce_opts_t) start with
 *   struct_size, set by their *_init function: a program built against an
 *   older pccl.h (a smaller struct) keeps working, the fields it lacks take
 *   their defaults. Always start from the *_init function. The other structs
 *   are frozen (never grow): results the library writes (pccl_op_info_t,
 *   pccl_sync_info_t), array elements (pccl_tensor_t) and
 *   pccl_diloco_schedule_t (H, P, tau: the whole schedule); new data comes
 *   through new structs or functions.
 * - Memory passed in is borrowed: the library never frees it. Buffers given
 *   to an async op must stay valid until pccl_op_wait returns.
 * - No C++ type or exception crosses this header.
 */
#ifndef PCCL_PCCL_H
#define PCCL_PCCL_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#if defined(PCCL_BUILDING)
#define PCCL_API __attribute__((visibility("default")))
#else
#define PCCL_API
#endif

#define PCCL_VERSION_MAJOR 0
#define PCCL_VERSION_MINOR 1
#define PCCL_VERSION_PATCH 0

/* Fixed numeric status codes; never renumbered. */
typedef enum pccl_status {
    PCCL_OK = 0,
    PCCL_ERR_INVALID_ARGUMENT = 1, /* a bad value was passed in */
    PCCL_ERR_INVALID_USAGE = 2,    /* call not allowed now (e.g. peers disagree on an op) */
    PCCL_ERR_PEER_LOST = 3,        /* a member died mid-op: retryable on the new view */
    PCCL_ERR_TIMEOUT = 4,          /* nothing arrived within the configured timeout */
    PCCL_ERR_AUTH_FAILED = 5,      /* run key mismatch or failed handshake */
    PCCL_ERR_IO = 6,               /* socket / file error */
    PCCL_ERR_PROTOCOL = 7,         /* malformed or unexpected message */
    /* 8 is retired (PCCL_ERR_TOO_FEW_PEERS was never produced): never reused */
    PCCL_ERR_CLOSED = 9,           /* the communicator was closed */
    PCCL_ERR_INTERNAL = 10         /* a bug: please report */
} pccl_status_t;

typedef enum pccl_dtype {
    PCCL_F32 = 0, PCCL_F64 = 1, PCCL_F16 = 2, PCCL_BF16 = 3,
    PCCL_I8 = 4, PCCL_I16 = 5, PCCL_I32 = 6, PCCL_I64 = 7,
    PCCL_U8 = 8, PCCL_U16 = 9, PCCL_U32 = 10, PCCL_U64 = 11
} pccl_dtype_t;

/* PCCL_AVG: the sum divided by the world size. Floats: one IEEE division of
 * the sum. Integers: the sum (which wraps around like PCCL_SUM's) divided by
 * the world size, rounded to nearest with ties away from zero (7/2 -> 4,
 * -7/2 -> -4, 5/3 -> 2); use a dtype wide enough for the sum. */
typedef enum pccl_reduce_op {
    PCCL_SUM = 0, PCCL_AVG = 1, PCCL_MIN = 2, PCCL_MAX = 3, PCCL_PROD = 4
} pccl_reduce_op_t;

typedef struct pccl_comm pccl_comm_t; /* a communicator: one peer of a run */
typedef struct pccl_op pccl_op_t;     /* an async operation in flight */

/* Defaults of the option structs: the one place they are defined (the
 * *_init functions, the core and the Python bindings all read them here).
 * Streams and chunk size as measured with bench/wan.py (3 peers, 50 Mbit/s,
 * 100 ms RTT, 0.1% loss, 8 MiB, fraction of the link): 8 streams 0.64 vs 4
 * streams 0.36 (cubic); 64 KiB sub-chunks 0.73-0.76 (cubic), 0.80 (bbr) vs
 * 256 KiB 0.49-0.57, 0.53. Loopback prefers 256 KiB by ~15% at 1-16 MiB (no
 * loss, so striping granularity does not matter there): not the target. */
#define PCCL_DEFAULT_TIMEOUT_S 10.0
#define PCCL_DEFAULT_JOIN_TIMEOUT_S 300.0
#define PCCL_DEFAULT_STREAMS 8u
#define PCCL_DEFAULT_CHUNK_BYTES (64u * 1024u)
#define PCCL_DEFAULT_RELAY_SLOTS 2u
#define PCCL_DEFAULT_RELAY_MAX_RESERVATIONS 128u
#define PCCL_DEFAULT_RELAY_MAX_CIRCUITS 512u
#define PCCL_DEFAULT_RELAY_RESERVATION_TTL_S 600.0
#define PCCL_DEFAULT_HANDSHAKE_TIMEOUT_S 10.0
#define PCCL_DEFAULT_HEARTBEAT_TIMEOUT_S 3.0
#define PCCL_DEFAULT_QUANT_BLOCK 128u
#define PCCL_DEFAULT_KEEPALIVE_S 300.0

/* Ring order of a view. Every ring hop carries the whole payload, so on
 * links of different lengths the order sets the op's time. Either way the
 * ring avoids links that only a relay carries, where it can. */
typedef enum pccl_ring_order {
    PCCL_RING_ORDER_MEASURED = 0, /* by the RTTs the members measured: smallest slowest hop, then
                                     smallest lap; kept while within 20% + 5 ms per hop of the best */
    PCCL_RING_ORDER_ID = 1        /* by peer id (a baseline; also what equal links give) */
} pccl_ring_order_t;

/* Communicator configuration. Always start from pccl_config_init().
 * struct_size: sizeof(pccl_config_t) of the pccl.h the caller was built
 * with (pccl_config_init sets it). The library reads only that many bytes;
 * fields beyond it take their defaults. A size that is not one of some
 * release's layout (0, larger than this header's, not a multiple of 8, or
 * cutting a field) gives PCCL_ERR_INVALID_ARGUMENT. New fields are only ever
 * appended. */
typedef struct pccl_config {
    size_t struct_size;           /* sizeof(pccl_config_t); set by pccl_config_init */
    const char *const *listen;    /* multiaddrs to listen on, e.g. "/ip4/0.0.0.0/tcp/0" */
    size_t n_listen;              /* 0: "/ip4/127.0.0.1/tcp/0" */
    const char *const *bootstrap; /* multiaddrs of any existing peers; none: start a new run */
    size_t n_bootstrap;
    const char *run_key;          /* shared secret of the run (bytes) */
    size_t run_key_len;
    double timeout_s;             /* an op that receives nothing for this long fails (PCCL_DEFAULT_TIMEOUT_S) */
    double join_timeout_s;        /* how long a joiner waits to be admitted (PCCL_DEFAULT_JOIN_TIMEOUT_S) */
    uint32_t streams;             /* TCP streams per ring neighbour (PCCL_DEFAULT_STREAMS) */
    uint32_t chunk_bytes;         /* pipelining granularity, 1 KiB..16 MiB (PCCL_DEFAULT_CHUNK_BYTES) */
    const char *key_file;         /* NULL: fresh identity; else load or create it there */
    /* Long fat pipes */
    const char *tcp_congestion;   /* e.g. "bbr" or "cubic" for every socket; NULL: system default */
    uint64_t socket_buffer;       /* SO_SNDBUF/SO_RCVBUF bytes; 0: kernel autotuning (recommended) */
    /* NAT traversal */
    int relay;                    /* nonzero: offer relaying to the run's private peers */
    const char *const *relays;    /* relay multiaddrs to reserve a slot on when private */
    size_t n_relays;
    int hole_punch;               /* nonzero (default): try direct links through NATs */
    uint32_t relay_slots;         /* relays to hold a reservation on at once (default 2); a lost
                                     one is replaced by the next of `relays` and addrs change */
    /* Limits of a relaying peer (relay != 0) */
    uint32_t relay_max_reservations;  /* default 128 */
    uint32_t relay_max_circuits;      /* default 512 */
    uint64_t relay_max_circuit_bytes; /* per circuit and direction; 0 (default): unlimited */
    double relay_max_circuit_s;       /* 0 (default): unlimited */
    double relay_reservation_ttl_s;   /* a reservation not refreshed within this ends (default 600) */
    /* Secure channel. Every connection is authenticated (Noise handshake,
     * both peer ids proven, run_key as PSK) and every frame is an AEAD
     * record, always. encrypt = 0 (trusted networks only) sends payloads in
     * the clear, still authenticated; a link is encrypted unless both ends
     * set 0. */
    int encrypt;                      /* default 1 */
    double handshake_timeout_s;       /* an inbound connection must authenticate within this (default 10) */
    /* Liveness: a member from which nothing (not even a heartbeat) arrived
     * for this long is declared dead, so a frozen peer fails the ops in
     * flight long before timeout_s (which large transfers on slow links
     * need). Values above timeout_s act as timeout_s
     * (PCCL_DEFAULT_HEARTBEAT_TIMEOUT_S). */
    double heartbeat_timeout_s;
    /* How the coordinator orders the ring of each view (PCCL_RING_ORDER_MEASURED). */
    pccl_ring_order_t ring_order;
    /* Congestion-window keep-alive (TCP only; PCCL_DEFAULT_KEEPALIVE_S, 0 =
     * off, else >= 0.1). Linux restarts a connection's window from its
     * initial 10 segments when it sent nothing for one retransmission
     * timeout (net.ipv4.tcp_slow_start_after_idle=1, the default), so the
     * first op after an idle gap regrows it over several round trips. For
     * keepalive_s seconds after a stream last sent collective data, while
     * it is idle, it sends one empty authenticated record (48 bytes of
     * TCP payload, ~114 on the wire, plus the peer's ~66-byte ACK) every
     * max(50 ms, min(srtt, RTO/2)) (the kernel's TCP_INFO), which keeps the
     * window. Cost per idle stream: 1000 / period_ms records a second, e.g.
     * 10/s = ~1.1 kB/s up and ~0.7 kB/s down at 100 ms RTT, at most 20/s
     * (~2.3 kB/s) on short links; 8 streams per ring neighbour multiply
     * that. The receiver discards them. Streams idle longer than
     * keepalive_s fall back to the kernel's behaviour, and streams whose
     * two ends are on this host (loopback) never send them. */
    double keepalive_s;
    /* Loopback fast path. seal_loopback = 0 (default): on a connection whose
     * socket has loopback addresses at both ends, as each end checks for
     * itself and both state in their authenticated handshake (with the
     * endpoints each sees, which must mirror), collective data payloads
     * travel without AEAD; the handshake, headers and every other frame stay
     * sealed. Loopback bytes never leave the host: only root or processes of
     * this host that could read our memory anyway can see or change them.
     * Nonzero: seal everything on loopback too. */
    int seal_loopback;
} pccl_config_t;

/* Information about a finished collective. */
typedef struct pccl_op_info {
    uint64_t tx_bytes;   /* payload bytes this peer sent */
    uint64_t rx_bytes;   /* payload bytes this peer received */
    uint32_t world_size; /* members that took part */
    uint64_t epoch;      /* view epoch the op ran on */
} pccl_op_info_t;

/* Wire formats of a quantized all-reduce (f32 data, PCCL_SUM or PCCL_AVG).
 * Every reduce-scatter hop sends its partial sum quantized and accumulates in
 * f32; the owner of each chunk quantizes the final value once and keeps the
 * decoded value, and those bytes are forwarded verbatim, so the result is
 * still bit-identical on every member. Bytes on the wire vs f32, block b:
 * FP16/BF16 1/2; INT8 (1 + 4/b)/4; INT4 and E3M0 (1/2 + 4/b)/4. */
typedef enum pccl_quant {
    PCCL_QUANT_NONE = 0, /* dense, in the buffer's dtype */
    PCCL_QUANT_FP16 = 1, /* IEEE half, round to nearest even, saturating */
    PCCL_QUANT_BF16 = 2, /* bfloat16, round to nearest even */
    PCCL_QUANT_INT8 = 3, /* per-block f32 scale (absmax/127) + int8 codes */
    PCCL_QUANT_INT4 = 4, /* per-block f32 scale (absmax/7) + 4-bit codes */
    PCCL_QUANT_E3M0 = 5  /* per-block f32 scale (absmax) + 4-bit sign/exponent: +-scale*2^-k, k=0..6, or 0 */
} pccl_quant_t;

/* How an all-reduce moves data. Every algorithm gives bit-identical results
 * on every member. RING and DIRECT move 2(n-1)/n of the buffer over each
 * member's uplink and downlink; DOUBLING moves the whole buffer once per
 * step. */
typedef enum pccl_algorithm {
    PCCL_ALGO_RING = 0,     /* ring reduce-scatter + all-gather: n links, 2(n-1) latency steps */
    PCCL_ALGO_DIRECT = 1,   /* each member sends each chunk straight to its owner, which sends the
                               reduced chunk straight to everyone: n(n-1) links, 2 latency steps,
                               no slow link holds up the others (small groups on long links) */
    PCCL_ALGO_DOUBLING = 2, /* recursive doubling: log2(n) steps (+2 when n is not a power of
                               two), each member sending its whole buffer per step; for small
                               buffers (no quantization) */
    PCCL_ALGO_AUTO = 3      /* per op, by size and world size: DOUBLING for small dense buffers
                               where its fewer steps cost less than its extra bytes, else RING,
                               or DIRECT from 24 members (2 latency steps, not 2(n-1)) */
} pccl_algorithm_t;

/* Options of an all-reduce. Always start from pccl_allreduce_opts_init().
 * struct_size: as in pccl_config_t (a smaller, older layout is accepted, the
 * missing fields take their defaults; garbage gives PCCL_ERR_INVALID_ARGUMENT).
 * Every member must pass the same op, quant, quant_block, stochastic and
 * algorithm; a mismatch fails the op on every member with PCCL_ERR_INVALID_USAGE. */
typedef struct pccl_allreduce_opts {
    size_t struct_size;   /* sizeof(pccl_allreduce_opts_t); set by pccl_allreduce_opts_init */
    pccl_reduce_op_t op;  /* default PCCL_SUM */
    uint32_t tag;         /* ops with distinct tags may be in flight at once (default 0);
                             tags >= 0xffff0000 are reserved */
    pccl_quant_t quant;   /* default PCCL_QUANT_NONE. Not NONE: dtype must be PCCL_F32, op
                             PCCL_SUM or PCCL_AVG, the input finite (NaN/Inf give
                             PCCL_ERR_INVALID_ARGUMENT on every member), else
                             PCCL_ERR_INVALID_ARGUMENT. A world of one returns the input. */
    uint32_t quant_block; /* values per scale for INT8/INT4/E3M0, >= 1 (PCCL_DEFAULT_QUANT_BLOCK) */
    int stochastic;       /* nonzero: unbiased stochastic rounding for INT8/INT4/E3M0
                             (default 0: round to nearest) */
    pccl_algorithm_t algorithm; /* default PCCL_ALGO_AUTO */
    int no_backup;        /* in place (sendbuf == recvbuf) only: nonzero skips the copy of the
                             input kept to restore it when the op fails (one buffer less of
                             memory); after a failure the buffer's content is then undefined.
                             For callers that can recompute the input (default 0: restore) */
} pccl_allreduce_opts_t;

PCCL_API const char *pccl_status_string(pccl_status_t status);
PCCL_API const char *pccl_build_info(void);
PCCL_API size_t pccl_dtype_size(pccl_dtype_t dtype); /* 0 for an unknown dtype */

PCCL_API void pccl_config_init(pccl_config_t *config);
PCCL_API void pccl_allreduce_opts_init(pccl_allreduce_opts_t *opts);

/* Creates a communicator: listens, loads or makes its identity and, with a
 * bootstrap, authenticates to a peer of the run. It asks to join the run only
 * in its first pccl_update_topology() (or pccl_wait_for_peers()), so the
 * members never wait while a joiner loads its model. Blocks at most
 * config->timeout_s. On failure *out is NULL and the message is available
 * through pccl_last_error(NULL) (thread-local for this one case). */
PCCL_API pccl_status_t pccl_comm_create(const pccl_config_t *config, pccl_comm_t **out);

/* Closes sockets, stops threads, fails ops in flight with PCCL_ERR_CLOSED,
 * frees the handle. NULL is allowed. */
PCCL_API void pccl_comm_destroy(pccl_comm_t *comm);

/* Closes sockets and stops the run for this peer: every blocking call on comm
 * (in any thread) and every op in flight fails with PCCL_ERR_CLOSED soon after,
 * later calls fail with it at once. The handle stays valid: destroy it with
 * pccl_comm_destroy (which waits for calls still returning). Idempotent; NULL
 * is allowed. For a signal handler's thread or a watchdog: Ctrl-C in a blocked
 * call. */
PCCL_API void pccl_comm_shutdown(pccl_comm_t *comm);

/* Message of the calling thread's last failed call on comm (pccl_op_wait
 * included: the op's message). When the calling thread's most recent failure
 * was on another communicator, or it has none: comm's most recent failure
 * message, of whichever thread. NULL: the calling thread's last failed call
 * that has no communicator (pccl_comm_create, pccl_diloco_*,
 * pccl_outer_step_f32). Never NULL; "" when there was none. The string is
 * the calling thread's own: valid until its next pccl_* call. */
PCCL_API const char *pccl_last_error(const pccl_comm_t *comm);

/* Collective point of all members: admits pending joiners, drops dead
 * members, installs the next view. A peer that is not yet a member asks to
 * join here (its first call) and blocks until the members' next round admits
 * it (join_timeout_s). */
PCCL_API pccl_status_t pccl_update_topology(pccl_comm_t *comm);

/* Blocks until the run has at least n members (this peer included) or
 * timeout_s passed (PCCL_ERR_TIMEOUT). Meanwhile it runs update_topology
 * rounds when a joiner asks to be admitted (a joiner calling it first asks
 * to join), and sleeps otherwise: no busy wait. Every current member must call
 * it (or update_topology) for a joiner to be admitted. *world_size (may be
 * NULL) receives the world size, which may exceed n. */
PCCL_API pccl_status_t pccl_wait_for_peers(pccl_comm_t *comm, uint32_t n, double timeout_s, uint32_t *world_size);

PCCL_API pccl_status_t pccl_world_size(pccl_comm_t *comm, uint32_t *out);
PCCL_API pccl_status_t pccl_epoch(pccl_comm_t *comm, uint64_t *out);

/* String results: copied into buf (NUL-terminated) when cap is large enough;
 * *needed always receives the size required, NUL included. A too small buf
 * gives PCCL_ERR_INVALID_ARGUMENT. Lists are newline-separated. Addresses and
 * connections can change between two calls (a relay replaced): call again
 * with a larger buf while the status is PCCL_ERR_INVALID_ARGUMENT and
 * *needed > cap. */
PCCL_API pccl_status_t pccl_peer_id(pccl_comm_t *comm, char *buf, size_t cap, size_t *needed);
PCCL_API pccl_status_t pccl_addrs(pccl_comm_t *comm, char *buf, size_t cap, size_t *needed);
PCCL_API pccl_status_t pccl_members(pccl_comm_t *comm, char *buf, size_t cap, size_t *needed);
/* NAT traversal: "public", "private" or "unknown" (no relay to ask). */
PCCL_API pccl_status_t pccl_reachability(pccl_comm_t *comm, char *buf, size_t cap, size_t *needed);
/* One line per open connection: "<peer id> direct - <endpoint> <rtt> <purpose>" or
 * "<peer id> relayed <relay id> <endpoint> <rtt> <purpose>"; <rtt> is the
 * smoothed end-to-end round trip in milliseconds (through the relay when
 * relayed; probed every second), or "-" before the first measurement. */
PCCL_API pccl_status_t pccl_connections(pccl_comm_t *comm, char *buf, size_t cap, size_t *needed);
/* The relays (multiaddrs from config.relays) this peer holds a reservation on now. */
PCCL_API pccl_status_t pccl_reservations(pccl_comm_t *comm, char *buf, size_t cap, size_t *needed);

/* All-reduce of count elements. sendbuf == recvbuf is in place. Blocks until
 * every member has the result (bit-identical on all of them). info may be NULL. */
PCCL_API pccl_status_t pccl_all_reduce(pccl_comm_t *comm, const void *sendbuf, void *recvbuf,
                                       size_t count, pccl_dtype_t dtype,
                                       const pccl_allreduce_opts_t *opts, pccl_op_info_t *info);

/* Starts an all-reduce and returns at once. Buffers are borrowed until
 * pccl_op_wait returns. */
PCCL_API pccl_status_t pccl_all_reduce_async(pccl_comm_t *comm, const void *sendbuf, void *recvbuf,
                                             size_t count, pccl_dtype_t dtype,
                                             const pccl_allreduce_opts_t *opts, pccl_op_t **op);

/* A named tensor of shared state: nbytes of raw memory at data. version: 0
 * (the default of {name, data, nbytes} initializers): its bytes are hashed at
 * every sync. Nonzero: the caller's version of the content; when name, data,
 * nbytes and version are those of this tensor at the communicator's last
 * successful pccl_sync_state, its hash from then is reused instead of reading
 * the bytes again. The caller promises the bytes did not change unless the
 * version did (a tensor that sync_state overwrote keeps its version: the
 * cached hash is that of the received bytes). */
typedef struct pccl_tensor {
    const char *name;
    void *data;
    size_t nbytes;
    uint64_t version;
} pccl_tensor_t;

typedef struct pccl_sync_info {
    uint64_t tx_bytes;
    uint64_t rx_bytes;
    uint64_t revision;         /* revision of the state everyone now holds */
    uint32_t tensors_received; /* tensors this peer took from others */
    uint32_t tensors_sent;
    uint32_t world_size;
} pccl_sync_info_t;

/* Collective: afterwards every member's tensors are byte-identical to the
 * most popular state at the highest acceptable revision (ties: the lowest
 * peer id). A revision is acceptable when it is at most the run's committed
 * revision (the result of the members' last sync) + 1, or when a majority
 * holds it; one member claiming a huge revision does not win. No acceptable
 * revision: PCCL_ERR_INVALID_USAGE on every member.
 * Differing tensors are pulled from up-to-date members into staging memory,
 * verified by hash, then copied over `data`. All members must pass the same
 * names and sizes. info may be NULL. */
PCCL_API pccl_status_t pccl_sync_state(pccl_comm_t *comm, const pccl_tensor_t *tensors, size_t n,
                                       uint64_t revision, pccl_sync_info_t *info);

/* Collective: gathers every member's blob in rank order (the order of
 * pccl_members). On success *out is one malloc'd buffer holding the blobs back
 * to back (free it with pccl_free) and sizes[0..world-1] their lengths;
 * sizes_cap must be at least the world size. */
PCCL_API pccl_status_t pccl_all_gather_bytes(pccl_comm_t *comm, const void *data, size_t nbytes, uint32_t tag,
                                             void **out, size_t *sizes, size_t sizes_cap, pccl_op_info_t *info);

/* Frees memory the library allocated for the caller. NULL is allowed. */
PCCL_API void pccl_free(void *p);

/* Waits for an async op, fills info (may be NULL), frees the handle. The
 * op's status is returned; its message becomes the calling thread's
 * pccl_last_error(comm) as well. Every op must be waited for before its
 * communicator is destroyed. */
PCCL_API pccl_status_t pccl_op_wait(pccl_op_t *op, pccl_op_info_t *info);

/* The message of an async op: blocks until the op has ended (as pccl_op_wait
 * does, but keeps the handle), then returns "" if it succeeded, else the
 * message naming its failure. Never NULL. The string belongs to the op: valid
 * until pccl_op_wait frees it. Any thread may call it, several at once, but
 * not concurrently with pccl_op_wait on the same op. */
PCCL_API const char *pccl_op_message(pccl_op_t *op);

/* ---- DiLoCo: the Streaming DiLoCo schedule and outer-step kernels ----------
 * Pure functions: no communicator, no I/O, no allocation, any thread. On
 * failure the message is in pccl_last_error(NULL).
 *
 * Steps count completed inner steps (1, 2, ...). Fragment p (0-based) starts
 * its sync after the steps k*H + (p+1)*H/P (k = 0, 1, ...) and its result is
 * applied after step + tau. P = 1, tau = 0 is plain DiLoCo; P = 1, tau = H is
 * the one-step-delayed outer update. Rules: H >= 1, P >= 1, H % P == 0,
 * tau <= H/P (at most one fragment in flight; when a fragment is applied at
 * the step another starts, apply first). */
typedef struct pccl_diloco_schedule {
    uint64_t sync_every;    /* H: inner steps between two syncs of one fragment */
    uint32_t fragments;     /* P: fragments, evenly staggered over H */
    uint32_t overlap_steps; /* tau: inner steps a fragment's all-reduce overlaps */
} pccl_diloco_schedule_t;

/* PCCL_OK, or PCCL_ERR_INVALID_ARGUMENT naming the broken rule. */
PCCL_API pccl_status_t pccl_diloco_schedule_validate(const pccl_diloco_schedule_t *schedule);
/* *fragment: the fragment that starts its sync after step, or -1. */
PCCL_API pccl_status_t pccl_diloco_fragment_to_start(const pccl_diloco_schedule_t *schedule, uint64_t step,
                                                     int64_t *fragment);
/* *fragment: the fragment whose result must be applied after step, or -1. */
PCCL_API pccl_status_t pccl_diloco_fragment_to_apply(const pccl_diloco_schedule_t *schedule, uint64_t step,
                                                     int64_t *fragment);
/* *step: the step after which fragment starts its round-th sync (round 0 first). */
PCCL_API pccl_status_t pccl_diloco_start_step(const pccl_diloco_schedule_t *schedule, uint32_t fragment,
                                              uint64_t round, uint64_t *step);

/* Outer SGD step on the global copy, as torch.optim.SGD (no dampening):
 *   buf = momentum*buf + g;  d = nesterov ? g + momentum*buf : buf;  global -= lr*d
 * g = averaged pseudo-gradient (global - local), n floats each. momentum_buf
 * starts zeroed; it may be NULL when momentum == 0. One rounding per operation:
 * bit-identical inputs give bit-identical outputs on every peer. */
PCCL_API pccl_status_t pccl_outer_step_f32(float *global, const float *pseudograd, float *momentum_buf, size_t n,
                                           float lr, float momentum, int nesterov);
/* Streaming DiLoCo merge: local = alpha*local + (1-alpha)*global (alpha 0: copy). */
PCCL_API pccl_status_t pccl_diloco_merge_f32(float *local, const float *global, size_t n, float alpha);

#ifdef __cplusplus
}
#endif

#endif /* PCCL_PCCL_H */
