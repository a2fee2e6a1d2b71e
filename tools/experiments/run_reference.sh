#!/usr/bin/env bash
# The paper's experiments on the reference model (docs/experiments.md), on the GPU machine, in two
# device calls of under 10 minutes each. Run from the repository root with these carried along:
#   .device-bin/indexcache, .corpus/gpu_warm (train_sub.u16.xz), .corpus/gpu/heldout_tokens.u16.xz
#
#   tools/experiments/run_reference.sh part1 $OUT      # search on a second calibration set, 3 distillations
#   tools/experiments/run_reference.sh part2 $OUT IN   # IN: part1's files; exports, evaluations, overlap, tasks
#
# part1 writes (8 files at most come back from the machine):
#   search_B.json              greedy search to 1/4 on calibration set B (disjoint from A)
#   distill_<run>.safetensors  the trained indexers of each distillation run
#   distill_<run>.jsonl        its training log
# part2 writes eval_all.json (held-out loss + passkey per model and pattern,
# tools/reference_model/evaluate.py) and ic.json + its 5 pictures (indexcache eval --overlap
# --tasks --bucket, on the GPU).
set -euo pipefail
part=$1 out=$2
BIN=${BIN:-.device-bin/indexcache}
PY=${PY:-python3}
# Overridable for a small dry run on the CPU (DEVICE=cpu SEQ=512 MAX_SEQS=2 SECS=20 PASSKEY=512).
DEVICE=${DEVICE:-cuda} SEQ=${SEQ:-8192} MAX_SEQS=${MAX_SEQS:-0} SECS=${SECS:-120} PASSKEY=${PASSKEY:-2048,4096,8192}
MODEL=models/reference
UNIFORM_14=FSSSFSSSFSSSFSSS
SEARCHED_14=FSSSSSFSSSFSSSFS   # greedy on calibration set A (docs/experiments/search_reference_1_8.json)
export PYTHONUNBUFFERED=1

prepare() {
  # Training windows and two disjoint calibration sets of 16 x 8192 training tokens:
  # A = the windows at 16 evenly spaced indices (the set of docs/experiments.md), B = the 15
  # midpoints between them and one more.
  python3 - <<'PY'
import lzma, numpy as np
t = np.frombuffer(lzma.open(".corpus/gpu_warm/train_sub.u16.xz").read(), dtype="<u2").astype(np.int32)
w = t.reshape(-1, 8192)
np.save("/tmp/reference_train.npy", w)
a = np.linspace(0, len(w) - 1, 16).astype(int)
b = np.append((a[:-1] + a[1:]) // 2, (a[0] + a[1]) // 4)  # the 15 midpoints and one more
assert not set(a) & set(b)
np.save("/tmp/calib_A.npy", w[a])
np.save("/tmp/calib_B.npy", w[b])
PY
}

distill() {  # name pattern served_layers seconds
  local name=$1 pattern=$2 served=$3 secs=$4 dir=/tmp/distill_$1
  rm -rf "$dir"
  timeout "$secs" "$BIN" train --config configs/reference_warmup.textproto --set pattern="$pattern" \
    --set served_layers="$served" --set optimizer.lr=3e-4 --set schedule.warmup_steps=5 --set steps=10000 \
    --set device=$DEVICE --set seq_len=$SEQ \
    --set checkpoint.dir="$dir" --set checkpoint.interval=10 --set log.jsonl="$out/distill_$name.jsonl" --set log.interval=2 \
    > "$dir.log" 2>&1 || true   # the timeout ends the run; the last checkpoint is kept
  tail -3 "$dir.log"
  cp "$(ls -d "$dir"/step_* | tail -1)/weights.safetensors" "$out/distill_$name.safetensors"
}

if [[ $part == part1 ]]; then
  prepare
  [[ -n ${SKIP_SEARCH:-} ]] || "$BIN" search --model $MODEL --data /tmp/calib_B.npy --seq-len $SEQ --max-seqs $MAX_SEQS --target 1/4 --device $DEVICE \
    --out "$out/search_B.json" 2>&1 | tail -6
  rm -f "$out/search_B.svg"
  distill uniform_served $UNIFORM_14 SERVED $SECS
  distill uniform_own $UNIFORM_14 OWN $SECS
  distill searched_served $SEARCHED_14 SERVED $SECS
elif [[ $part == part2 ]]; then
  in=$3
  evaluate() {  # name model_dir patterns
    timeout 150 $PY tools/reference_model/evaluate.py --model "$2" --heldout .corpus/gpu/heldout_tokens.u16.xz \
      --seq $SEQ --passkey-lengths $PASSKEY --device $DEVICE --max-windows 6 --per-cell 2 --patterns "$3" --json "/tmp/eval_$1.json" 2>&1 | grep -E '"loss"|by_length' | head -4 || true
  }
  searched_b=$(python3 -c "import json; print(json.load(open('$in/search_B.json'))['pattern'])")
  evaluate base $MODEL "all,$UNIFORM_14,$SEARCHED_14,$searched_b"
  for run in uniform_served:$UNIFORM_14 uniform_own:$UNIFORM_14 searched_served:$SEARCHED_14; do
    name=${run%%:*} pattern=${run#*:}
    mkdir -p /tmp/ck_$name && cp "$in/distill_$name.safetensors" /tmp/ck_$name/weights.safetensors
    "$BIN" export --model $MODEL --checkpoint /tmp/ck_$name --pattern "$pattern" --out /tmp/model_$name > /dev/null
    evaluate "$name" /tmp/model_$name "$pattern"
  done
  # Overlap heatmap, mass recall and retrieval tasks through indexcache itself, on the GPU.
  $PY - <<'PY'
import lzma, numpy as np, tokenizers
t = np.frombuffer(lzma.open(".corpus/gpu/heldout_tokens.u16.xz").read(), dtype="<u2")
tok = tokenizers.Tokenizer.from_file("models/reference/tokenizer.json")
open("/tmp/haystack.txt", "w").write(tok.decode(t[:200000].tolist()))
PY
  python3 tools/make_tasks.py --tokenizer $MODEL/tokenizer.json --haystack /tmp/haystack.txt \
    --lengths $PASSKEY --depths 0.1,0.3,0.5,0.7,0.9 --per-cell 2 --seed 0 --out /tmp/tasks.jsonl
  "$BIN" eval --model $MODEL --data $MODEL/heldout/heldout_sample_text_document --seq-len $SEQ --device $DEVICE \
    --patterns "all,$UNIFORM_14,$SEARCHED_14" --bucket 1024 --overlap --tasks /tmp/tasks.jsonl --out "$out/ic.json"
  python3 -c "
import glob, json, os
merged = {os.path.basename(p)[5:-5]: json.load(open(p)) for p in sorted(glob.glob('/tmp/eval_*.json'))}
json.dump(merged, open('$out/eval_all.json', 'w'), indent=1)"
else
  echo "usage: $0 part1 OUT | part2 OUT IN" >&2
  exit 1
fi
