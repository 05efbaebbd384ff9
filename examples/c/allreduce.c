/*
 * A C99 program that embeds pccl: joins a run, waits until `n` peers are
 * members, all-reduces a float buffer and prints the result.
 *
 *   first peer:   ./allreduce 3
 *   other peers:  ./allreduce 3 /ip4/127.0.0.1/tcp/PORT/p2p/ID
 *
 * Prints "addr <multiaddr>" once listening, "result <sum of values>
 * <first> <last>" after a dense f32 all-reduce, then "quant <first> <last>
 * <tx bytes> <dense tx bytes>" after the same all-reduce with int8 on the
 * wire (per-block scales, f32 accumulation). Build:
 *   cc -std=c99 allreduce.c -I$(python -c 'import pccl_py;print(pccl_py.c_include_dir())') \
 *      -L$(python -c 'import pccl_py;print(pccl_py.c_library_dir())') -lpccl -Wl,-rpath,<that lib dir>
 */
#include <stdio.h>
#include <stdlib.h>

#include <pccl/pccl.h>

#define COUNT 1001

static int check(pccl_comm_t *comm, pccl_status_t st, const char *what) {
    if (st != PCCL_OK) {
        fprintf(stderr, "%s failed: %s: %s\n", what, pccl_status_string(st), pccl_last_error(comm));
        return 1;
    }
    return 0;
}

int main(int argc, char **argv) {
    pccl_config_t config;
    pccl_comm_t *comm = NULL;
    const char *bootstrap[1];
    char addrs[4096];
    uint32_t world = 0, want;
    float data[COUNT];
    double total = 0.0;
    pccl_allreduce_opts_t opts;
    pccl_op_info_t info;
    uint64_t dense_tx;
    size_t i, needed;

    if (argc < 2) {
        fprintf(stderr, "usage: %s N_PEERS [BOOTSTRAP_MULTIADDR]\n", argv[0]);
        return 2;
    }
    want = (uint32_t)atoi(argv[1]);

    pccl_config_init(&config);
    config.run_key = "c-example";
    config.run_key_len = 9;
    config.timeout_s = 20.0;
    if (argc > 2) {
        bootstrap[0] = argv[2];
        config.bootstrap = bootstrap;
        config.n_bootstrap = 1;
    }
    if (check(NULL, pccl_comm_create(&config, &comm), "pccl_comm_create")) return 1;
    if (check(comm, pccl_addrs(comm, addrs, sizeof addrs, &needed), "pccl_addrs")) goto fail;
    for (i = 0; addrs[i] && addrs[i] != '\n'; ++i) {
    }
    addrs[i] = '\0';
    printf("addr %s\n", addrs);
    fflush(stdout);

    /* Blocks (no busy wait) until `want` peers are in; admits joiners meanwhile. */
    if (check(comm, pccl_wait_for_peers(comm, want, 60.0, &world), "pccl_wait_for_peers")) goto fail;

    for (i = 0; i < COUNT; ++i) data[i] = (float)i;
    pccl_allreduce_opts_init(&opts);
    opts.op = PCCL_SUM;
    /* The ring, so the dense and the int8 op below move comparable bytes (the
     * default, PCCL_ALGO_AUTO, would run this small dense op by recursive
     * doubling, which sends whole buffers). */
    opts.algorithm = PCCL_ALGO_RING;
    if (check(comm, pccl_all_reduce(comm, data, data, COUNT, PCCL_F32, &opts, &info), "pccl_all_reduce"))
        goto fail;
    for (i = 0; i < COUNT; ++i) total += data[i];
    printf("result %.1f %.1f %.1f world %u\n", total, data[0], data[COUNT - 1], (unsigned)info.world_size);

    /* The same all-reduce, int8 on the wire: about 4x fewer bytes. */
    dense_tx = info.tx_bytes;
    for (i = 0; i < COUNT; ++i) data[i] = (float)i;
    opts.quant = PCCL_QUANT_INT8;
    opts.quant_block = 128;
    if (check(comm, pccl_all_reduce(comm, data, data, COUNT, PCCL_F32, &opts, &info), "pccl_all_reduce int8"))
        goto fail;
    printf("quant %.3f %.3f %lu %lu\n", data[0], data[COUNT - 1], (unsigned long)info.tx_bytes,
           (unsigned long)dense_tx);
    pccl_comm_destroy(comm);
    return 0;
fail:
    pccl_comm_destroy(comm);
    return 1;
}
