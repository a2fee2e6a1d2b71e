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

# tools/make_tasks.py (retrieval tasks for `indexcache eval --tasks`) needs Hugging Face
# `tokenizers` from PyPI; nothing else does, so a machine without pip only loses that script.
if ! python3 -c "import tokenizers" 2>/dev/null; then
  if python3 -m pip --version >/dev/null 2>&1; then
    echo "== installing tokenizers (PyPI) for tools/make_tasks.py"
    python3 -m pip install --quiet tokenizers 2>/dev/null ||
      python3 -m pip install --quiet --break-system-packages tokenizers ||
      echo "warning: could not install tokenizers; tools/make_tasks.py will not run" >&2
  else
    echo "note: no pip for python3; 'pip install tokenizers' to use tools/make_tasks.py" >&2
  fi
fi

if [[ ! -x /usr/local/cuda/bin/nvcc ]]; then
  echo "error: the CUDA toolkit is not at /usr/local/cuda (nvcc, cudart, cuBLAS and NCCL are needed to build)" >&2
  exit 1
fi

echo "== building"
bazel build -c opt //tools:indexcache

BIN=bazel-bin/tools/indexcache
# The main job: the shipped reference model (models/reference: a 16-layer DSA model trained by this
# project, indexers warmed up with `indexcache train`), on its held-out sample, on the CPU.
MODEL=models/reference
echo "== indexcache info: the reference model"
"$BIN" info --model "$MODEL"
echo "== indexcache eval: all-F vs uniform 1/4 vs the searched 1/4 (docs/experiments.md) on held-out text"
# Two 1024-token windows keep this to a minute or two on 2 cores; on the GPU the same command
# with --device cuda --seq-len 8192 runs the experiment's setting.
"$BIN" eval --model "$MODEL" --data "$MODEL/heldout/heldout_sample_text_document" --seq-len 1024 --max-seqs 2 \
  --patterns all,1/4,FSSSSSFSSSFSSSFS --bucket 256
echo "== indexcache train: two steps of multi-layer distillation for uniform 1/4 (configs/reference_distill_demo.textproto)"
"$BIN" train --config configs/reference_distill_demo.textproto --set checkpoint.dir="$(mktemp -d)/checkpoints" | tail -4
echo "== setup done"
