#!/usr/bin/env bash
# Builds and runs the native unit tests (GoogleTest, ASan+UBSan) and a short libFuzzer run of the
# HTTP parser. Idempotent; installs clang from apt when it is missing. Exits non-zero on any failure.
#
#   FUZZ_SECONDS=20   how long the fuzzer runs (0 skips fuzzing)
set -euo pipefail

native_dir=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
build_dir="$native_dir/build"
fuzz_seconds="${FUZZ_SECONDS:-20}"

step() { printf '\n== %s\n' "$*"; }
fail() { printf 'FAIL: %s\n' "$*" >&2; exit 1; }

sudo_if_needed() {
  if [[ $(id -u) -eq 0 ]]; then "$@"; else sudo "$@"; fi
}

ensure_clang() {
  # Both the compiler and libFuzzer's runtime (libclang-rt-*-dev on bookworm) are needed.
  if command -v clang++ >/dev/null && echo 'extern "C" int LLVMFuzzerTestOneInput(const unsigned char*, unsigned long) { return 0; }' |
      clang++ -x c++ -fsanitize=fuzzer -o /dev/null - >/dev/null 2>&1; then
    return
  fi
  step "installing clang and its fuzzer runtime via apt"
  command -v apt-get >/dev/null || fail "clang++ with libFuzzer is missing and apt-get is not available"
  sudo_if_needed env DEBIAN_FRONTEND=noninteractive apt-get update -q || fail "apt-get update"
  local rt=libclang-rt-dev
  apt-cache show libclang-rt-14-dev >/dev/null 2>&1 && rt=libclang-rt-14-dev
  sudo_if_needed env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends \
    clang "$rt" || fail "apt-get install clang $rt"
}

sanitizer_env() {
  export ASAN_OPTIONS="${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=1}"
  export UBSAN_OPTIONS="${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}"
}

# unit_test NAME SOURCE...: builds build/test/NAME from the sources (paths under native/) with
# ASan+UBSan and GoogleTest.
unit_test() {
  local name=$1
  shift
  g++ -std=c++17 -O1 -g -fsanitize=address,undefined -fno-sanitize-recover=undefined \
    -Wall -Wextra -Werror -I"$native_dir/src" \
    "${@/#/$native_dir/}" -o "$build_dir/test/$name" -ldl -lgtest_main -lgtest -pthread ||
    fail "unit test build ($name)"
  unit_tests+=("$name")
}

build_and_run_unit_tests() {
  step "building unit tests (g++, ASan+UBSan)"
  mkdir -p "$build_dir/test"
  unit_tests=()
  unit_test http_parser_test src/http/parser.cc test/http_parser_test.cc
  unit_test tracker_test src/http/parser.cc src/engine/tracker.cc src/engine/ids.cc src/engine/propagation.cc \
    src/tracee/sockets.cc src/tracee/memory.cc test/tracker_test.cc
  unit_test vdso_test src/tracee/vdso.cc src/tracee/memory.cc test/vdso_test.cc
  unit_test stub_head_test src/http/parser.cc src/engine/ids.cc src/engine/propagation.cc test/stub_head_test.cc
  unit_test stub_chunks_test src/http/parser.cc test/stub_chunks_test.cc
  unit_test x86_64_decode_test src/arch/x86_64_decode.cc test/x86_64_decode_test.cc
  unit_test call_sites_test src/arch/x86_64_decode.cc src/engine/call_sites.cc src/tracee/memory.cc test/call_sites_test.cc
  step "running unit tests"
  for name in "${unit_tests[@]}"; do
    "$build_dir/test/$name" --gtest_brief=1 || fail "unit tests ($name)"
  done
  echo "unit tests: passed"
}

build_and_run_fuzzer() {
  step "building fuzzer (clang++, libFuzzer+ASan+UBSan)"
  mkdir -p "$build_dir/fuzz"
  clang++ -std=c++17 -O1 -g -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=undefined \
    -Wall -Wextra -Werror \
    "$native_dir/src/http/parser.cc" "$native_dir/fuzz/http_parser_fuzz.cc" \
    -o "$build_dir/fuzz/http_parser_fuzz" || fail "fuzzer build"
  if [[ $fuzz_seconds -le 0 ]]; then
    echo "fuzzing skipped (FUZZ_SECONDS=$fuzz_seconds)"
    return
  fi
  # The run grows its corpus in a copy; the seed corpus in the repo is never written.
  local corpus="$build_dir/fuzz/corpus"
  mkdir -p "$corpus" "$build_dir/fuzz/artifacts"
  cp -f "$native_dir/fuzz/corpus/"* "$corpus/"
  step "fuzzing for ${fuzz_seconds}s"
  (cd "$build_dir/fuzz" &&
    ./http_parser_fuzz -max_total_time="$fuzz_seconds" -max_len=4096 -print_final_stats=1 \
      -artifact_prefix="$build_dir/fuzz/artifacts/" "$corpus") ||
    fail "fuzzer found a crash (see $build_dir/fuzz/artifacts/)"
  echo "fuzzing: no crash in ${fuzz_seconds}s"
}

ensure_clang
sanitizer_env
build_and_run_unit_tests
build_and_run_fuzzer
step "native tests passed"
