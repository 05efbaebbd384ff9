#!/usr/bin/env bash
# The sanitizer stage: builds the core, libpccl and the Python extension with
# -fsanitize=address,undefined (UB fatal; gcc, so Python can preload libasan),
# then runs (1) the C example, itself instrumented, as 3 peers with leak
# detection on, and (2) a fast subset of the Python suite against the
# sanitized extension. Exits non-zero if anything fails or any process (peers
# spawned by tests included) wrote a sanitizer report.
#
# Usage: tests/fuzz/sanitize.sh [pytest args replacing the default subset]
# Env: PCCL_SANITIZE_BUILD  build directory (default build/asan)
#      PCCL_SANITIZE_JOBS   compile jobs and pytest workers (default 2)
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
build=${PCCL_SANITIZE_BUILD:-$root/build/asan}
jobs=${PCCL_SANITIZE_JOBS:-2}
pkg="$build/pkg"
reports="$build/reports"
cd "$root"

cmake -S "$root" -B "$build" -DCMAKE_BUILD_TYPE=RelWithDebInfo -DPCCL_SANITIZE=ON \
  -Dpybind11_DIR="$(python -m pybind11 --cmakedir)" >"$build.configure.log" 2>&1 || { cat "$build.configure.log"; exit 1; }
cmake --build "$build" -j"$jobs" >"$build.build.log" 2>&1 || { tail -50 "$build.build.log"; exit 1; }
# The sanitized package: the Python sources and the C header next to the
# sanitized binaries (which the build wrote to $pkg/pccl_py).
(cd python && find pccl_py \( -name '*.py' -o -name '*.pyi' -o -name py.typed \) -print0 |
  while IFS= read -r -d '' f; do mkdir -p "$pkg/$(dirname "$f")" && cp "$f" "$pkg/$f"; done)
mkdir -p "$pkg/pccl_py/include/pccl" && cp cpp/include/pccl/pccl.h "$pkg/pccl_py/include/pccl/"

rm -rf "$reports" && mkdir -p "$reports"

fail() { echo "sanitize: $*" >&2; exit 1; }
report_check() {
  if compgen -G "$reports/*" >/dev/null; then
    for f in "$reports"/*; do echo "== $f"; head -60 "$f"; done
    fail "sanitizer reports above ($1)"
  fi
}

# (1) The C example, 3 peers, instrumented executable, leaks detected.
cdir="$build/c_example"
mkdir -p "$cdir"
gcc -std=c99 -Wall -Wextra -Werror -g -fsanitize=address,undefined -fno-sanitize-recover=undefined \
  -I "$pkg/pccl_py/include" examples/c/allreduce.c -L "$pkg/pccl_py/lib" -lpccl \
  -Wl,-rpath,"$pkg/pccl_py/lib" -o "$cdir/allreduce"
(
  export ASAN_OPTIONS="detect_leaks=1:log_path=$reports/c-asan"
  export UBSAN_OPTIONS="print_stacktrace=1:log_path=$reports/c-ubsan"
  timeout 120 "$cdir/allreduce" 3 >"$cdir/0.out" 2>"$cdir/0.err" &
  pids=($!)
  addr=
  for _ in $(seq 300); do
    addr=$(sed -n 's/^addr //p' "$cdir/0.out")
    [ -n "$addr" ] && break
    sleep 0.1
  done
  [ -n "$addr" ] || { cat "$cdir/0.err"; fail "C example: the first peer printed no address"; }
  for i in 1 2; do
    timeout 120 "$cdir/allreduce" 3 "$addr" >"$cdir/$i.out" 2>"$cdir/$i.err" &
    pids+=($!)
  done
  for i in 0 1 2; do
    wait "${pids[$i]}" || { cat "$cdir/$i.err"; fail "C example: peer $i exited with $?"; }
    # 3 peers each contribute 0 + 1 + ... + 1000.
    awk '$1 == "result" { ok = ($2 == 1501500) } END { exit !ok }' "$cdir/$i.out" ||
      { cat "$cdir/$i.out" "$cdir/$i.err"; fail "C example: peer $i has a wrong result"; }
  done
)
report_check "C example"
echo "sanitize: C example OK (3 peers, ASan + UBSan + LeakSanitizer)"

# (2) Python: fast, torch-free tests of the paths hostile bytes reach. The
# interpreter is not instrumented: libasan is preloaded (with libstdc++, or
# ASan's __cxa_throw interceptor finds no real one in a C-only python) and leak
# detection is off (CPython keeps objects alive at exit by design).
if [ $# -gt 0 ]; then
  tests=("$@")
else
  # test_allreduce.py's 4-peer ring matrix takes minutes under ASan; the
  # in-memory transport's tests run the ring (2, 3, 5 members) and async ops
  # through the same mesh and collective code, and its hostile frames.
  tests=(tests/test_allreduce.py::test_direct_algorithm_is_exact_and_bit_identical
         tests/test_memory_transport.py tests/test_protocol.py tests/test_bad_input.py tests/test_quant_allreduce.py
         tests/test_compress_topk.py tests/test_compress_fedzip.py tests/test_util_msgpack.py
         tests/test_util_multiaddr.py tests/test_c_api.py tests/test_secure_channel.py
         tests/test_hostile_member.py tests/test_decoder_limits.py
         # Its bound on RSS after the frames are freed cannot hold under ASan's quarantine.
         --deselect tests/test_decoder_limits.py::test_early_frames_beyond_the_unclaimed_cap_fail_that_op_and_are_freed)
fi
preload="$(gcc -print-file-name=libasan.so) $(gcc -print-file-name=libstdc++.so)"
env LD_PRELOAD="$preload" PYTHONPATH="$pkg" \
  ASAN_OPTIONS="detect_leaks=0:log_path=$reports/py-asan" \
  UBSAN_OPTIONS="print_stacktrace=1:log_path=$reports/py-ubsan" \
  python - <<PY || fail "the sanitized package is not the one Python imports"
import pccl_py, pccl_py._core as c
assert pccl_py.__file__.startswith("$pkg/"), pccl_py.__file__
assert c.__file__.startswith("$pkg/"), c.__file__
PY
env LD_PRELOAD="$preload" PYTHONPATH="$pkg" \
  ASAN_OPTIONS="detect_leaks=0:log_path=$reports/py-asan" \
  UBSAN_OPTIONS="print_stacktrace=1:log_path=$reports/py-ubsan" \
  python -m pytest -n "$jobs" -q -p no:cacheprovider "${tests[@]}" || { report_check "Python tests"; fail "Python tests failed"; }
report_check "Python tests"
echo "sanitize: Python subset OK"
