#!/usr/bin/env bash
# Builds the libFuzzer harnesses (tests/fuzz/fuzz_*.cpp; clang, ASan + UBSan)
# and runs each for a fixed time, then prints the executions per harness.
# Exits non-zero if any harness found a crash, a leak, a timeout, an OOM or a
# broken invariant; the input that did it is left in <build>/artifacts/.
#
# Usage: tests/fuzz/run.sh [seconds-per-harness (30)] [harness ...]
#   harness: e.g. fuzz_msgpack (default: all of them)
# Env: PCCL_FUZZ_BUILD  build directory (default build/fuzz). Its corpus/
#                       folder keeps what earlier runs found; tests/fuzz/corpus/
#                       <harness>/ seeds are read too (never written).
#      PCCL_FUZZ_JOBS   parallel compile jobs (default 2)
set -euo pipefail
secs=${1:-30}
shift || true
root=$(cd "$(dirname "$0")/../.." && pwd)
build=${PCCL_FUZZ_BUILD:-$root/build/fuzz}
jobs=${PCCL_FUZZ_JOBS:-2}

pybind=()
if dir=$(python -m pybind11 --cmakedir 2>/dev/null); then pybind=(-Dpybind11_DIR="$dir"); fi
cmake -S "$root" -B "$build" -DCMAKE_BUILD_TYPE=Release -DCMAKE_C_COMPILER=clang -DCMAKE_CXX_COMPILER=clang++ \
  -DPCCL_FUZZ=ON "${pybind[@]}" >"$build.configure.log" 2>&1 || { cat "$build.configure.log"; exit 1; }
cmake --build "$build" --target fuzzers -j"$jobs" >"$build.build.log" 2>&1 || { tail -50 "$build.build.log"; exit 1; }

if [ $# -gt 0 ]; then
  harnesses=("$@")
else
  harnesses=()
  for f in "$root"/tests/fuzz/fuzz_*.cpp; do harnesses+=("$(basename "$f" .cpp)"); done
fi

export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=1}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}
mkdir -p "$build/artifacts" "$build/logs"
failed=0
printf '%-24s %12s %10s  %s\n' harness executions exec/s result
for h in "${harnesses[@]}"; do
  corpus="$build/corpus/$h"
  mkdir -p "$corpus"
  seeds=()
  if [ -d "$root/tests/fuzz/corpus/$h" ]; then seeds=("$root/tests/fuzz/corpus/$h"); fi
  log="$build/logs/$h.log"
  rc=0
  # -timeout: one input running 10 s is a hang, reported as a failure.
  # Wall-clock guard: the run, the corpus load and the final merge of stats.
  # (In a group, so the shell's "Aborted" note for a crashed harness goes to its log.)
  { timeout $((secs + 120)) "$build/fuzz/$h" -max_total_time="$secs" -timeout=10 -rss_limit_mb=2048 \
    -print_final_stats=1 -artifact_prefix="$build/artifacts/$h-" "$corpus" "${seeds[@]}"; } >"$log" 2>&1 || rc=$?
  execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
  rate=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log" | tail -1)
  if [ "$rc" = 0 ]; then result=ok; else result="FAILED (rc $rc, log $log)"; failed=1; fi
  printf '%-24s %12s %10s  %s\n' "$h" "${execs:-?}" "${rate:-?}" "$result"
  if [ "$rc" != 0 ]; then
    grep -v '^#\|^INFO\|NEW_FUNC' "$log" | head -40 | sed 's/^/    /'
    ls "$build/artifacts/$h-"* 2>/dev/null | sed 's/^/    input: /' || true
  fi
done
exit "$failed"
