"""The C99 contract: the header compiles pedantically, a plain C program
embeds the library end to end (3 copies all-reduce together), option structs
grow through struct_size (an older, smaller layout keeps working; garbage is
refused), and error messages are per thread and per op."""

import os
import shutil
import subprocess

import pytest

import pccl_py

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CC = shutil.which("gcc") or shutil.which("cc")
pytestmark = pytest.mark.skipif(CC is None, reason="no C compiler on this machine")


def compile_c(src: str, out: str, link: bool, extra: tuple = ()) -> None:
    cmd = [CC, "-std=c99", "-pedantic", "-Wall", "-Wextra", "-Werror", "-I", pccl_py.c_include_dir(), src, "-o", out,
           *extra]
    if link:
        lib = pccl_py.c_library_dir()
        cmd += ["-L", lib, "-lpccl", f"-Wl,-rpath,{lib}"]
    else:
        cmd.insert(1, "-c")
    r = subprocess.run(cmd, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr


def test_header_is_strict_c99(tmp_path):
    src = tmp_path / "h.c"
    src.write_text("#include <pccl/pccl.h>\nint f(void) { pccl_config_t c; pccl_config_init(&c); "
                   "return (int)c.streams + (int)c.struct_size + (int)PCCL_ERR_INTERNAL; }\n")
    compile_c(str(src), str(tmp_path / "h.o"), link=False)


def test_status_strings_cover_every_code():
    names = [pccl_py._core.status_string(i) for i in range(11)]
    assert names[0] == "success" and names[3] == "peer lost" and names[5] == "authentication failed"
    assert len(set(names)) == 11
    assert pccl_py._core.status_string(99) == "unknown status"


def test_three_c_programs_all_reduce(tmp_path):
    exe = str(tmp_path / "allreduce")
    compile_c(os.path.join(ROOT, "examples", "c", "allreduce.c"), exe, link=True)
    procs = []
    try:
        first = subprocess.Popen([exe, "3"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        procs.append(first)
        line = first.stdout.readline().split()
        assert line and line[0] == "addr", first.stderr.read()
        for _ in range(2):
            procs.append(subprocess.Popen([exe, "3", line[1]], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                          text=True))
        outs = [p.communicate(timeout=60) for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
            p.wait()
    expected_total = 3 * sum(range(1001))
    for (out, err), p in zip(outs, procs):
        assert p.returncode == 0, err
        result = [ln for ln in out.splitlines() if ln.startswith("result")][0].split()
        assert float(result[1]) == expected_total
        assert float(result[2]) == 0.0 and float(result[3]) == 3000.0 and result[5] == "3"
        quant = [ln for ln in out.splitlines() if ln.startswith("quant")][0].split()
        # int8, 3 peers: each hop's error <= absmax/254 of its partial (last block absmax 3000).
        assert float(quant[1]) == 0.0 and abs(float(quant[2]) - 3000.0) <= 3 * 3000 / 254
        assert 3.5 < int(quant[4]) / int(quant[3]) < 4.0  # int8 + one f32 scale per 128 values


def run_c(tmp_path, name: str, code: str, extra: tuple = ()) -> str:
    """Compiles code (strict C99) against libpccl, runs it, returns stdout."""
    src = tmp_path / f"{name}.c"
    src.write_text(code)
    exe = str(tmp_path / name)
    compile_c(str(src), exe, link=True, extra=extra)
    r = subprocess.run([exe], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, (r.stdout, r.stderr)
    return r.stdout


OLDER_LAYOUTS = r"""
#include <stddef.h>
#include <stdio.h>
#include <string.h>
#include <pccl/pccl.h>

/* The leading fields of today's structs, as an older pccl.h would have laid
 * them out (releases only append fields after the previous sizeof). */
typedef struct {
    size_t struct_size;
    const char *const *listen;
    size_t n_listen;
    const char *const *bootstrap;
    size_t n_bootstrap;
    const char *run_key;
    size_t run_key_len;
} old_config_t;
typedef struct {
    size_t struct_size;
    pccl_reduce_op_t op;
    uint32_t tag;
} old_opts_t;

int main(void) {
    /* Whatever follows an older caller's struct in its memory: 0xff bytes,
     * which as the newer fields would be NaN timeouts, 4 GiB chunks and
     * unknown codecs. The library must read only struct_size bytes. */
    union { old_config_t c; unsigned char bytes[sizeof(pccl_config_t) + 64]; } cm;
    union { old_opts_t o; unsigned char bytes[sizeof(pccl_allreduce_opts_t) + 64]; } om;
    pccl_comm_t *comm = NULL;
    pccl_op_info_t info;
    pccl_status_t st;
    float data[4] = {1, 2, 3, 4};
    uint32_t world = 0;
    if (sizeof(old_config_t) != offsetof(pccl_config_t, timeout_s) ||
        sizeof(old_opts_t) != offsetof(pccl_allreduce_opts_t, quant)) {
        puts("layout mismatch");
        return 1;
    }
    memset(&cm, 0xff, sizeof cm);
    memset(&cm.c, 0, sizeof cm.c);
    cm.c.struct_size = sizeof(old_config_t);
    cm.c.run_key = "older";
    cm.c.run_key_len = 5;
    st = pccl_comm_create((const pccl_config_t *)&cm.c, &comm);
    printf("create %d %s\n", (int)st, pccl_last_error(NULL));
    if (st != PCCL_OK) return 0;
    pccl_world_size(comm, &world);
    memset(&om, 0xff, sizeof om);
    om.o.struct_size = sizeof(old_opts_t);
    om.o.op = PCCL_MAX;
    om.o.tag = 3;
    st = pccl_all_reduce(comm, data, data, 4, PCCL_F32, (const pccl_allreduce_opts_t *)&om.o, &info);
    printf("all_reduce %d %u %.1f %.1f [%s]\n", (int)st, (unsigned)info.world_size, data[0], data[3],
           pccl_last_error(comm));
    pccl_comm_destroy(comm);
    /* The release before heartbeat_timeout_s was appended: that field's
     * bytes hold 0xff (a NaN, which the library would refuse). */
    {
        pccl_config_t prev;
        pccl_config_init(&prev);
        prev.struct_size = offsetof(pccl_config_t, heartbeat_timeout_s);
        memset(&prev.heartbeat_timeout_s, 0xff, sizeof prev.heartbeat_timeout_s);
        st = pccl_comm_create(&prev, &comm);
        printf("previous %d %s\n", (int)st, pccl_last_error(NULL));
        pccl_comm_destroy(comm);
    }
    return 0;
}
"""


def test_older_smaller_structs_are_read_with_defaults_for_the_rest(tmp_path):
    out = run_c(tmp_path, "older", OLDER_LAYOUTS).splitlines()
    assert out[0] == "create 0 ", out  # defaults (timeout, chunk_bytes, ...) filled in, not the 0xff bytes after
    assert out[1] == "all_reduce 0 1 1.0 4.0 []", out  # world of one: the input; quant stayed NONE
    assert out[2] == "previous 0 ", out  # heartbeat_timeout_s took its default


GARBAGE_SIZES = r"""
#include <stddef.h>
#include <stdio.h>
#include <pccl/pccl.h>

static const size_t sizes[] = {0, 4, 12, offsetof(pccl_config_t, chunk_bytes), sizeof(pccl_config_t) + 8,
                               (size_t)1 << 40};

int main(void) {
    pccl_config_t c;
    pccl_allreduce_opts_t o;
    pccl_comm_t *comm = NULL;
    pccl_status_t st;
    float x[2] = {1, 2};
    size_t i;
    for (i = 0; i < sizeof sizes / sizeof sizes[0]; ++i) {
        pccl_config_init(&c);
        c.struct_size = sizes[i];
        st = pccl_comm_create(&c, &comm); /* before pccl_last_error: argument order is unspecified */
        printf("config %d %s\n", (int)st, pccl_last_error(NULL));
        if (comm) return 1;
    }
    pccl_config_init(&c);
    if (pccl_comm_create(&c, &comm) != PCCL_OK) return 1;
    for (i = 0; i < sizeof sizes / sizeof sizes[0]; ++i) {
        pccl_allreduce_opts_init(&o);
        o.struct_size = sizes[i] == offsetof(pccl_config_t, chunk_bytes) ? offsetof(pccl_allreduce_opts_t, tag) + 2
                                                                          : sizes[i];
        st = pccl_all_reduce(comm, x, x, 2, PCCL_F32, &o, NULL);
        printf("opts %d %s\n", (int)st, pccl_last_error(comm));
    }
    pccl_comm_destroy(comm);
    return 0;
}
"""


def test_garbage_struct_sizes_are_refused_with_invalid_argument(tmp_path):
    out = run_c(tmp_path, "garbage", GARBAGE_SIZES).splitlines()
    assert len(out) == 12, out
    for line in out:
        kind, status, msg = line.split(" ", 2)
        assert status == "1", line  # PCCL_ERR_INVALID_ARGUMENT
        assert f"pccl_{'config' if kind == 'config' else 'allreduce_opts'}.struct_size" in msg, line
    assert "is 0: initialise it with pccl_config_init()" in out[0]
    assert "newer pccl.h" in out[4] and "newer pccl.h" in out[5]
    assert "no release's layout" in out[1] and "no release's layout" in out[3]


TWO_THREADS = r"""
#define _POSIX_C_SOURCE 200809L
#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <pccl/pccl.h>

#define ROUNDS 2000
static pccl_comm_t *comm;
/* Two ways to fail, each with its own message, both found by the core (not
 * on the calling thread for the async op: in its worker). */
static const char *expect[2] = {"needs f32 data, got f64", "supports only sum and avg, got max"};

static void *run(void *arg) {
    const int me = *(const int *)arg;
    static long wrong[2];
    double d[8] = {0};
    float f[8] = {0};
    int i;
    for (i = 0; i < ROUNDS; ++i) {
        pccl_allreduce_opts_t o;
        pccl_op_t *op = NULL;
        const char *msg;
        pccl_status_t st;
        pccl_allreduce_opts_init(&o);
        o.quant = me == 0 ? PCCL_QUANT_INT8 : PCCL_QUANT_FP16;
        if (me == 1) o.op = PCCL_MAX;
        if (pccl_all_reduce_async(comm, me == 0 ? (void *)d : (void *)f, me == 0 ? (void *)d : (void *)f, 8,
                                  me == 0 ? PCCL_F64 : PCCL_F32, &o, &op) != PCCL_OK) {
            ++wrong[me];
            continue;
        }
        msg = pccl_op_message(op);
        if (!strstr(msg, expect[me]) || strstr(msg, expect[1 - me])) ++wrong[me];
        st = pccl_op_wait(op, NULL);
        if (st != PCCL_ERR_INVALID_ARGUMENT || !strstr(pccl_last_error(comm), expect[me])) ++wrong[me];
        /* The same failure as a blocking call: the calling thread's message. */
        st = pccl_all_reduce(comm, me == 0 ? (void *)d : (void *)f, me == 0 ? (void *)d : (void *)f, 8,
                             me == 0 ? PCCL_F64 : PCCL_F32, &o, NULL);
        if (st != PCCL_ERR_INVALID_ARGUMENT || !strstr(pccl_last_error(comm), expect[me])) ++wrong[me];
    }
    return &wrong[me];
}

int main(void) {
    pccl_config_t c;
    pthread_t t[2];
    int ids[2] = {0, 1}, i;
    pccl_config_init(&c);
    if (pccl_comm_create(&c, &comm) != PCCL_OK) return 1;
    for (i = 0; i < 2; ++i) pthread_create(&t[i], NULL, run, &ids[i]);
    for (i = 0; i < 2; ++i) {
        void *r;
        pthread_join(t[i], &r);
        printf("thread %d wrong %ld of %d\n", i, *(long *)r, ROUNDS);
    }
    pccl_comm_destroy(comm);
    return 0;
}
"""


@pytest.mark.timeout(120)
def test_each_thread_and_each_op_reads_its_own_error_message(tmp_path):
    out = run_c(tmp_path, "threads", TWO_THREADS, extra=("-pthread",)).splitlines()
    assert out == ["thread 0 wrong 0 of 2000", "thread 1 wrong 0 of 2000"], out


def test_retired_status_code_has_no_name():
    # 8 was PCCL_ERR_TOO_FEW_PEERS, never produced: removed, the number never reused.
    assert pccl_py._core.status_string(8) == "unknown status"
    assert 8 not in [int(v) for v in pccl_py._core.Status.__members__.values()]


OTHER_THREAD = r"""
#define _POSIX_C_SOURCE 200809L
#include <pthread.h>
#include <stdio.h>
#include <pccl/pccl.h>

static pccl_comm_t *comm;

static void *fail_once(void *arg) {
    double d[2] = {0, 0};
    pccl_allreduce_opts_t o;
    (void)arg;
    pccl_allreduce_opts_init(&o);
    o.quant = PCCL_QUANT_INT4;
    pccl_all_reduce(comm, d, d, 2, PCCL_F64, &o, NULL);
    return NULL;
}

int main(void) {
    pccl_config_t c;
    pthread_t t;
    pccl_comm_t *old;
    pccl_config_init(&c);
    if (pccl_comm_create(&c, &comm) != PCCL_OK) return 1;
    printf("before [%s]\n", pccl_last_error(comm));
    pthread_create(&t, NULL, fail_once, NULL);
    pthread_join(t, NULL);
    /* This thread never failed on comm: it reads comm's most recent failure. */
    printf("watchdog [%s]\n", pccl_last_error(comm));
    fail_once(NULL);
    old = comm;
    pccl_comm_destroy(comm);
    /* A new communicator (perhaps at the old address) starts without a message. */
    if (pccl_comm_create(&c, &comm) != PCCL_OK) return 1;
    printf("fresh [%s] %s\n", pccl_last_error(comm), comm == old ? "same-address" : "new-address");
    pccl_comm_destroy(comm);
    return 0;
}
"""


def test_a_thread_without_its_own_failure_reads_the_communicators_latest(tmp_path):
    out = run_c(tmp_path, "other", OTHER_THREAD, extra=("-pthread",)).splitlines()
    assert out[0] == "before []"
    assert out[1] == "watchdog [all_reduce: quant=int4 needs f32 data, got f64]"
    assert out[2].startswith("fresh [] "), out


NULL_HANDLES = r"""
#include <stdio.h>
#include <pccl/pccl.h>

int main(void) {
    uint32_t w;
    pccl_status_t st = pccl_world_size(NULL, &w);
    printf("%d [%s]\n", (int)st, pccl_last_error(NULL));
    st = pccl_op_wait(NULL, NULL);
    printf("%d [%s] [%s]\n", (int)st, pccl_last_error(NULL), pccl_op_message(NULL));
    pccl_comm_shutdown(NULL);
    pccl_comm_destroy(NULL);
    return 0;
}
"""


def test_null_handles_are_invalid_arguments_with_a_message(tmp_path):
    assert run_c(tmp_path, "nulls", NULL_HANDLES).splitlines() == ["1 [comm is NULL]", "1 [op is NULL] [op is NULL]"]
