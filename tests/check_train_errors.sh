#!/usr/bin/env bash
# Bad trainer input ends a 2-rank job quickly with a non-zero status and one line naming the problem (the ranks
# that fail together print it once).
# usage: check_train_errors.sh MPIEXEC ORTHOSHARD SMOKE_TOML
set -u
mpiexec=$1 bin=$2 smoke=$3
fails=0
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
check() {  # check "what" "expected message regex" args...
  local what=$1 want=$2; shift 2
  local start=$(date +%s) cfg=(--config "$smoke")
  if [ "${1:-}" = "--config" ]; then cfg=(); fi
  out=$(timeout 60 "$mpiexec" --oversubscribe -n 2 "$bin" train "${cfg[@]}" --train.steps=3 "$@" 2>&1)
  local rc=$? elapsed=$(( $(date +%s) - start ))
  local ranks=$(echo "$out" | grep -cE "\[rank [01]/2\] error: .*$want")
  local lines=$(echo "$out" | grep -cE "error: ")
  if [ "$rc" -eq 0 ] || [ "$rc" -eq 124 ] || [ "$ranks" -lt 1 ] || [ "$lines" -ne 1 ] || [ "$elapsed" -gt 20 ]; then
    echo "FAIL: $what: exit $rc after ${elapsed}s, $ranks rank line(s) matching '$want', $lines error line(s) (want 1)"
    echo "$out" | head -20
    fails=$((fails + 1))
  else
    echo "ok: $what (exit $rc, ${elapsed}s): $(echo "$out" | grep -m1 -E "error: " | sed 's/^\[rank [0-9]\/2\] //')"
  fi
}
check "unknown key" "train.batchsize|batchsize" --train.batchsize=4
check "wrong type" "batch_size: expected an integer" --train.batch_size=four
check "missing data file" "$tmp/none.bin" --data.path="$tmp/none.bin"
check "seq_len > maxT" "maxT|seq_len" --train.seq_len=128
check "hybrid group not dividing the job" "hybrid:3" --runtime.sharding=hybrid:3
check "missing config file" "nope.toml" --config "$tmp/nope.toml"
printf 'not a model' > "$tmp/bad.bin"
check "corrupt model file" "$tmp/bad.bin" --model.init_from="$tmp/bad.bin"
check "NaN loss stops" "not finite" --optim.name=adamw --optim.lr=1e38
# LLaMA's keys and Hugging Face directories.
check "NH not divisible by NKV" "NH = 4 is not divisible by 3" --model.arch=llama --model.NKV=3
check "odd head size for the rotary embedding" "head size C/NH = 9 is odd" --model.arch=llama --model.C=36
check "missing Hugging Face directory" "$tmp/nohf.*no such file" --model.arch=llama --model.init_from="$tmp/nohf"
mkdir -p "$tmp/hf" && printf '{"model_type": "llama", "hidden_size": 64}' > "$tmp/hf/config.json"
check "config.json without a field" "num_hidden_layers is missing" --model.init_from="$tmp/hf"
printf '{"model_type": "llama", "hidden_size": 64, "num_hidden_layers": 0}' > "$tmp/hf/config.json"
check "config.json with an absurd field" "num_hidden_layers = 0 is out of range" --model.init_from="$tmp/hf"
if ! nvidia-smi -L >/dev/null 2>&1; then
  check "cuda backend without a GPU" "no CUDA device|no CUDA backend" --runtime.backend=cuda
fi
[ "$fails" -eq 0 ] && echo "PASS" || exit 1
