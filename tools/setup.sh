#!/usr/bin/env bash
# Sets up a fresh Debian 12 machine for indexcache and runs the main job on the embedded example.
#
#   tools/setup.sh            install packages, build, run the example
#   tools/setup.sh --no-apt   skip the package install (already done)
#
# Everything the build needs comes from Debian's packages and the CUDA toolkit at /usr/local/cuda
# (nvcc, cudart, cuBLAS, NCCL); nothing is downloaded by Bazel (see docs/build.md).
set -euo pipefail
cd "$(dirname "$0")/.."

PACKAGES=(
  bazel-bootstrap bazel-rules-java          # Bazel 4.2.3 (WORKSPACE mode) and its Java rules
  g++ zlib1g-dev python3                    # python3: tools/test.sh counts test cases
  libeigen3-dev                             # CPU backend
  libprotobuf-dev protobuf-compiler         # trainer configs (text format)
  libgtest-dev libgmock-dev                 # tests
  nlohmann-json3-dev                        # config.json, safetensors headers
  libopenmpi-dev openmpi-bin                # multi-rank training
  clang-14 libclang-rt-14-dev               # libFuzzer + sanitizers: tools/fuzz.sh (tools/test.sh runs it)
)

if [[ "${1:-}" != "--no-apt" ]]; then
  SUDO=""
  if [[ $(id -u) -ne 0 ]]; then SUDO="sudo"; fi
  echo "== installing Debian packages"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${PACKAGES[@]}" >/dev/null
fi

if [[ ! -x /usr/local/cuda/bin/nvcc ]]; then
  echo "error: the CUDA toolkit is not at /usr/local/cuda (nvcc, cudart, cuBLAS and NCCL are needed to build)" >&2
  exit 1
fi

echo "== building"
bazel build -c opt //tools:indexcache

BIN=bazel-bin/tools/indexcache
EXAMPLE=tests/data/glm_shared_bf16   # a tiny glm_moe_dsa model with an IndexCache pattern (FSSF)
echo "== indexcache info on the embedded example"
"$BIN" info --model "$EXAMPLE"
echo "== indexcache eval: the checkpoint's pattern, then every layer reusing layer 0's top-k (1/4)"
"$BIN" eval --model "$EXAMPLE" --data "$EXAMPLE/tokens.npy" --seq-len 36
"$BIN" eval --model "$EXAMPLE" --data "$EXAMPLE/tokens.npy" --seq-len 36 --pattern 1/4
echo "== setup done"
