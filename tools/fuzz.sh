#!/usr/bin/env bash
# Builds the libFuzzer harnesses in fuzz/ and runs each for a while on its seed corpus.
#
#   tools/fuzz.sh                 every harness for 15 s (CI's smoke run)
#   tools/fuzz.sh 3600 npy        one harness for an hour (a long run; see docs/reliability.md)
#   FUZZ_JOBS=4 tools/fuzz.sh ... libFuzzer -jobs/-workers for long runs on more cores
#
# Needs clang (Debian's clang-14 ships libFuzzer); built outside Bazel, straight from the sources
# the parsers need, with -fsanitize=fuzzer,address,undefined. The committed seeds in
# fuzz/corpus/<name>/ are read, never written: new inputs go to .fuzz-build/corpus/<name>/ and
# crashes to .fuzz-build/artifacts/. Prints "fuzz: N passed, N failed" last; exits 1 if any failed.
set -uo pipefail
cd "$(dirname "$0")/.."

SECONDS_PER_TARGET=${1:-15}
shift || true
ALL=(safetensors_header shard_index config npy megatron_idx ictok textproto trainer_state)
TARGETS=("$@")
[[ ${#TARGETS[@]} -eq 0 ]] && TARGETS=("${ALL[@]}")

CXX=${CXX_FUZZ:-}
if [[ -z "$CXX" ]]; then
  for c in clang++-14 clang++-15 clang++-16 clang++; do
    if command -v "$c" >/dev/null; then CXX=$c; break; fi
  done
fi
if [[ -z "$CXX" ]]; then
  echo "fuzz: clang++ not found (Debian: apt-get install clang-14)" >&2
  echo "fuzz: 0 passed, 1 failed"
  exit 1
fi

# Objects are cached under ~/.cache by a hash of every source they come from, so CI's fresh clone
# rebuilds (about 3 minutes on 2 cores) only when a parser or header changed.
KEY=$( { echo "$CXX"; cat trainer/train_config.proto; find core model data trainer fuzz -name '*.h' -o -name '*.cc' | sort | xargs cat; } | sha1sum | cut -c1-16)
OUT=.fuzz-build
CACHE=${FUZZ_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/indexcache-fuzz}/$KEY
mkdir -p "$OUT/gen/trainer" "$OUT/bin" "$OUT/artifacts" "$CACHE"
protoc --cpp_out="$OUT/gen" trainer/train_config.proto || exit 1

FLAGS=(-std=c++17 -O1 -g -fno-omit-frame-pointer -fsanitize=fuzzer-no-link,address,undefined
       -fno-sanitize-recover=undefined -I. -I"$OUT/gen")
# The parsers and what they stand on. Protobuf's generated code is compiled without the fuzzer's
# coverage instrumentation (it is not ours), but with the sanitizers.
SOURCES=(core/status.cc core/dtype.cc core/tensor.cc core/file_util.cc core/safetensors.cc core/npy.cc
         core/json_util.cc model/config.cc model/pattern.cc data/token_source.cc data/megatron_dataset.cc
         data/token_shard.cc data/sequence_sampler.cc trainer/train_config.cc trainer/checkpoint.cc
         trainer/fs_util.cc trainer/resume.cc)

compile() {  # src obj [extra flags]; the cache key covers every input, so an object is current
  local src=$1 obj=$2
  shift 2
  if [[ ! -f "$obj" ]]; then
    "$CXX" "${FLAGS[@]}" "$@" -c "$src" -o "$obj.tmp" && mv "$obj.tmp" "$obj" || return 1
  fi
}

echo "== building fuzz harnesses with $CXX"
objs=()
for src in "${SOURCES[@]}"; do
  obj="$CACHE/$(echo "${src%.cc}" | tr / _).o"
  compile "$src" "$obj" || { echo "fuzz: build failed: $src" >&2; echo "fuzz: 0 passed, 1 failed"; exit 1; }
  objs+=("$obj")
done
pb_obj="$CACHE/train_config.pb.o"
compile "$OUT/gen/trainer/train_config.pb.cc" "$pb_obj" -fsanitize-coverage=0 -w || { echo "fuzz: 0 passed, 1 failed"; exit 1; }
objs+=("$pb_obj")

passed=0
failed=0
for t in "${TARGETS[@]}"; do
  bin="$OUT/bin/${t}_fuzz"
  if ! "$CXX" "${FLAGS[@]}" -fsanitize=fuzzer "fuzz/${t}_fuzz.cc" "${objs[@]}" -lprotobuf -lz -pthread -o "$bin"; then
    echo "fuzz: $t: build failed"
    failed=$((failed + 1))
    continue
  fi
  mkdir -p "$OUT/corpus/$t"
  log="$OUT/$t.log"
  # -rss_limit_mb: a parser asked to allocate from a hostile size must refuse, not grow.
  if ASAN_OPTIONS=detect_leaks=0:allocator_may_return_null=1 UBSAN_OPTIONS=print_stacktrace=1 \
     "$bin" "$OUT/corpus/$t" "fuzz/corpus/$t" -max_total_time="$SECONDS_PER_TARGET" -timeout=10 \
       -rss_limit_mb=2048 -max_len=65536 -print_final_stats=1 -artifact_prefix="$OUT/artifacts/${t}-" \
       ${FUZZ_JOBS:+-jobs=$FUZZ_JOBS -workers=$FUZZ_JOBS} >"$log" 2>&1; then
    runs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$log" | tail -1 | grep -o '[0-9]*$')
    echo "fuzz: $t: ok (${runs:-?} runs in ${SECONDS_PER_TARGET} s)"
    passed=$((passed + 1))
  else
    echo "fuzz: $t: FAILED (log: $log; reproducer in $OUT/artifacts/)"
    grep -m5 -E 'ERROR|runtime error|multi-line|SUMMARY' "$log" | sed 's/^/    /'
    failed=$((failed + 1))
  fi
done
echo "fuzz: ${passed} passed, ${failed} failed"
[[ $failed -eq 0 ]]
