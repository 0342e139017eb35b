#!/usr/bin/env bash
# Checkpoints end to end through the CLI: a 2-rank run writes step_<N>.h5 and `latest`; `ckpt inspect` exits 0
# on it (or on its directory, or `latest`), 1 on a copy with bytes flipped inside a tensor's data or a truncated
# copy, 2 on a missing file or a directory without `latest`;
# h5ls/h5dump read it, h5py (Debian python3-h5py; skipped when absent) reads every dataset; `ckpt export`
# writes an llm.c model and a safetensors file, and `ckpt diff` of a file with itself is zero.
# usage: check_ckpt.sh MPIEXEC ORTHOSHARD
set -u
mpiexec=$1 bin=$2
fails=0
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
fail() { echo "FAIL: $*"; fails=$((fails + 1)); }
expect_rc() {  # expect_rc WANT DESCRIPTION CMD...
  local want=$1 what=$2; shift 2
  out=$("$@" 2>&1); rc=$?
  if [ "$rc" -ne "$want" ]; then fail "$what: exit $rc, want $want"; echo "$out" | tail -20; else echo "ok: $what (exit $rc)"; fi
}

expect_rc 0 "2-rank training with checkpoints" timeout 120 "$mpiexec" --oversubscribe -n 2 "$bin" train \
  --model.L=2 --model.C=32 --model.NH=4 --model.V=256 --model.Vp=256 --model.maxT=32 --train.seq_len=16 \
  --train.batch_size=2 --train.steps=4 --optim.name=conda --optim.scale=0.25 --optim.update_proj_gap=3 \
  --checkpoint.dir="$tmp/run" --checkpoint.every=2
[ "$(cat "$tmp/run/latest" 2>/dev/null)" = "step_00000004.h5" ] || fail "latest does not name step_00000004.h5"
ck="$tmp/run/step_00000004.h5"
expect_rc 0 "inspect a good checkpoint" "$bin" ckpt inspect "$ck"
echo "$out" | grep -q "^OK: every dataset" || fail "inspect does not report OK"
echo "$out" | grep -q "/optim/h.0.mlp.proj.weight/conda_basis" || fail "inspect does not list Conda's basis"

off=$(h5dump -p -H -d /model/wte "$ck" | awk '/OFFSET/ {print $2}')
[ -n "$off" ] || fail "no data offset for /model/wte from h5dump"
cp "$ck" "$tmp/flipped.h5"
printf '\x5a\x5a\x5a\x5a' | dd of="$tmp/flipped.h5" bs=1 seek=$((off + 64)) conv=notrunc status=none
expect_rc 1 "inspect a byte-flipped copy" "$bin" ckpt inspect "$tmp/flipped.h5"
echo "$out" | grep -q "/model/wte.*checksum mismatch" || fail "inspect does not name /model/wte as corrupt"
head -c $(( $(stat -c %s "$ck") / 2 )) "$ck" > "$tmp/truncated.h5"
expect_rc 1 "inspect a truncated copy" "$bin" ckpt inspect "$tmp/truncated.h5"
expect_rc 2 "inspect a missing file" "$bin" ckpt inspect "$tmp/none.h5"
# A checkpoint directory, or its `latest`, means the checkpoint `latest` names; a directory without one is an error.
expect_rc 0 "inspect the checkpoint directory" "$bin" ckpt inspect "$tmp/run"
echo "$out" | grep -q "^file .*step_00000004.h5" || fail "inspect DIR does not open the latest checkpoint"
expect_rc 0 "inspect DIR/latest" "$bin" ckpt inspect "$tmp/run/latest"
echo "$out" | grep -q "^file .*step_00000004.h5" || fail "inspect DIR/latest does not open the latest checkpoint"
mkdir -p "$tmp/empty"
expect_rc 2 "inspect a directory without latest" "$bin" ckpt inspect "$tmp/empty"
echo "$out" | grep -q "empty.*without a 'latest' file" || fail "no message naming the directory without latest"
expect_rc 1 "resume from the byte-flipped copy fails on every rank" timeout 60 "$mpiexec" --oversubscribe -n 2 \
  "$bin" train --model.L=2 --model.C=32 --model.NH=4 --model.V=256 --model.Vp=256 --model.maxT=32 \
  --train.seq_len=16 --train.batch_size=2 --train.steps=6 --optim.name=conda --optim.scale=0.25 \
  --checkpoint.resume="$tmp/flipped.h5"
echo "$out" | grep -q "error: .*corrupt.*/model/wte" || fail "resume error does not name /model/wte"
expect_rc 0 "resume from the checkpoint directory (its latest)" timeout 60 "$mpiexec" --oversubscribe -n 2 \
  "$bin" train --model.L=2 --model.C=32 --model.NH=4 --model.V=256 --model.Vp=256 --model.maxT=32 \
  --train.seq_len=16 --train.batch_size=2 --train.steps=6 --optim.name=conda --optim.scale=0.25 \
  --optim.update_proj_gap=3 --checkpoint.resume="$tmp/run"
echo "$out" | grep -q "resumed from .*step_00000004.h5: step 4" || fail "resume from a directory does not load its latest"

expect_rc 0 "h5ls -r" h5ls -r "$ck"
echo "$out" | grep -q "/optim/wte/exp_avg_sq" || fail "h5ls does not list /optim/wte/exp_avg_sq"
expect_rc 0 "h5dump -H" h5dump -H "$ck"
py=""
for p in /usr/bin/python3 python3; do
  if "$p" -c "import h5py" 2>/dev/null; then py=$p; break; fi
done
if [ -n "$py" ]; then
  expect_rc 0 "h5py reads every dataset" "$py" - "$ck" <<'PY'
import sys, h5py
n = 0
with h5py.File(sys.argv[1], "r") as f:
    assert f.attrs["format"] == "orthoshard.checkpoint", f.attrs["format"]
    assert int(f.attrs["step"]) == 4
    assert "[model]" in f.attrs["config"]
    def visit(name, obj):
        global n
        if isinstance(obj, h5py.Dataset):
            obj[()]
            assert "checksum" in obj.attrs, name
            n += 1
    f.visititems(visit)
    assert f["model/wte"].shape == (256, 32)
print(n, "datasets read")
PY
else
  echo "skip: h5py (Debian python3-h5py) is not installed"
fi

expect_rc 0 "export llmc" "$bin" ckpt export "$ck" --format llmc --out "$tmp/model.bin"
expect_rc 0 "export safetensors" "$bin" ckpt export "$ck" --format safetensors --out "$tmp/model.safetensors"
expect_rc 2 "export with an unknown format" "$bin" ckpt export "$ck" --format onnx --out "$tmp/x"
expect_rc 1 "export of a corrupt checkpoint" "$bin" ckpt export "$tmp/flipped.h5" --format llmc --out "$tmp/bad.bin"
expect_rc 0 "diff with itself is zero" "$bin" ckpt diff "$ck" "$ck" --tolerance 0
expect_rc 1 "diff of two steps exceeds 0" "$bin" ckpt diff "$tmp/run/step_00000002.h5" "$ck" --tolerance 0
# Resuming keeps the metrics file's lines up to the checkpoint and appends: every step exactly once. A schedule
# that the new train.steps moves gets a warning naming the key.
lr_run=(--model.L=1 --model.C=32 --model.NH=4 --model.V=256 --model.Vp=256 --model.maxT=32 --train.seq_len=16
        --train.batch_size=2 --optim.name=adamw --train.schedule=cosine --train.metrics="$tmp/m.jsonl")
expect_rc 0 "a cosine run of 6 steps with metrics" timeout 60 "$mpiexec" --oversubscribe -n 2 "$bin" train \
  "${lr_run[@]}" --train.steps=6 --checkpoint.dir="$tmp/lr" --checkpoint.every=3
expect_rc 0 "resumed from step 3 with train.steps = 8" timeout 60 "$mpiexec" --oversubscribe -n 2 "$bin" train \
  "${lr_run[@]}" --train.steps=8 --checkpoint.resume="$tmp/lr/step_00000003.h5" --checkpoint.dir="$tmp/lr" \
  --checkpoint.every=8
echo "$out" | grep -q "warning: the learning rate at the resume step 4 is .*, where the checkpoint's run would have used .*: changed train.steps 6 -> 8" ||
  fail "no warning naming train.steps when the schedule moves at the resume step"
steps=$(grep -o '"step": [0-9]*' "$tmp/m.jsonl" | awk '{print $2}' | tr '\n' ' ')
[ "$steps" = "1 2 3 4 5 6 7 8 " ] || fail "metrics across a resume: steps '$steps', want each of 1..8 once"
# `orthoshard eval` of the last checkpoint gives the trainer's validation loss of that step, at 1, 2 and 3 ranks.
want=$(tail -1 "$tmp/m.jsonl" | sed -E 's/.*"val_loss": ([0-9.e+-]+).*/\1/')
want=$(printf '%.6f' "$want")
for np in 1 2 3; do
  expect_rc 0 "eval at $np rank(s)" timeout 60 "$mpiexec" --oversubscribe -n "$np" "$bin" eval "$tmp/lr" \
    --data builtin:synthetic:val
  echo "$out" | grep -q "eval $tmp/lr/step_00000008.h5 (step 8) on 'builtin:synthetic:val': loss $want over 16 sequences of 16 tokens, $np rank(s)" ||
    { fail "eval at $np rank(s) does not give the trainer's val loss $want"; echo "$out" | tail -2; }
done
# Fine-tuning: model.init_from an orthoshard checkpoint takes its architecture and weights (fresh optimizer, step 0).
# With lr 0 the weights stay the checkpoint's, so the run's validation loss is eval's of the checkpoint; another
# optimizer than the checkpoint's is fine.
for np in 2 3; do
  expect_rc 0 "fine-tune from a checkpoint at $np ranks" timeout 60 "$mpiexec" --oversubscribe -n "$np" "$bin" train \
    --model.L=5 --train.seq_len=16 --train.batch_size=2 --train.steps=1 --optim.name=adamw \
    --optim.lr=0 --model.init_from="$tmp/lr/step_00000008.h5" --train.metrics="$tmp/ft$np.jsonl"
  echo "$out" | grep -q "from $tmp/lr/step_00000008.h5" || fail "fine-tune: the model line does not name the checkpoint"
  got=$(printf '%.6f' "$(sed -E 's/.*"val_loss": ([0-9.e+-]+).*/\1/' "$tmp/ft$np.jsonl")")
  [ "$got" = "$want" ] || fail "fine-tune at $np ranks: val loss $got at step 1 with lr 0, want the checkpoint's $want"
done
expect_rc 1 "init_from a corrupt checkpoint" timeout 60 "$mpiexec" --oversubscribe -n 2 "$bin" train \
  --model.init_from="$tmp/flipped.h5" --train.steps=1 --train.seq_len=16
echo "$out" | grep -q "error: model.init_from '$tmp/flipped.h5' is corrupt: /model/wte" ||
  fail "init_from a corrupt checkpoint: no line naming /model/wte"
expect_rc 2 "eval of a missing checkpoint" "$mpiexec" --oversubscribe -n 2 "$bin" eval "$tmp/none.h5" --data builtin:synthetic:val
[ "$fails" -eq 0 ] && echo "PASS" || exit 1
