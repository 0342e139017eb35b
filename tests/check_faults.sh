#!/usr/bin/env bash
# Faults a careful user causes, at 2 and 3 ranks (issue "Never hang, never lose a checkpoint"). Each case checks
# the exit status, the message, the time to exit, that the newest checkpoint verifies (`ckpt inspect`), and,
# where a run was cut short, that resuming it continues bit for bit (`ckpt diff --tolerance 0` against an
# uninterrupted run of the same steps):
#   - SIGTERM to one rank, SIGUSR1 to mpirun: a checkpoint at the next step boundary, exit 75;
#   - a second signal: exit at once;
#   - one rank frozen (SIGSTOP) with runtime.comm_timeout_s = 3: exit 3 within seconds, naming the frozen rank;
#   - ENOSPC injected on one rank in the middle of a save (checkpoint.on_error = stop and warn), and a real full disk
#     on a tmpfs where mounting is permitted;
#   - divergence: train.max_skipped_steps and train.loss_limit stop the run; no skipped step is saved;
#   - a checkpoint directory in use by another run, a stale lock, resume = none over checkpoints;
#   - a token >= V found when the data is opened, a .partial path refused, a foreign file skipped by resume=auto.
# usage: check_faults.sh MPIEXEC ORTHOSHARD FOREIGN_H5 [NP...]   (default NP: 2 3; FOREIGN_H5: any HDF5 file that
# is not a checkpoint, such as an optimizer trace of ../shared/testdata)
set -u
mpiexec=$1 bin=$2 foreign=$3
shift 3
nps=("$@")
[ ${#nps[@]} -eq 0 ] && nps=(2 3)
fails=0
tmp=$(mktemp -d)
cleanup() {
  mountpoint -q "$tmp/tmpfs" 2>/dev/null && umount "$tmp/tmpfs"
  pkill -CONT -f "orthoshard train .*$tmp" 2>/dev/null
  pkill -KILL -f "orthoshard train .*$tmp" 2>/dev/null
  rm -rf "$tmp"
}
trap cleanup EXIT
fail() { echo "FAIL: $*"; fails=$((fails + 1)); }
ok() { echo "ok: $*"; }

# A small model whose steps take milliseconds; a constant learning rate, so that train.steps does not change
# the schedule and a resumed run can be compared with an uninterrupted one.
model=(--model.L=2 --model.C=32 --model.NH=4 --model.V=256 --model.Vp=256 --model.maxT=32 --train.seq_len=16
       --train.batch_size=2 --train.log_every=1000 --optim.name=normuon --optim.lr=0.01)

# start NP LOG ARGS...: a training job in the background; sets $job (the mpirun pid) and $t_start.
start() {
  local np=$1 log=$2
  shift 2
  "$mpiexec" --oversubscribe -n "$np" "$bin" train "${model[@]}" "$@" >"$log" 2>&1 &
  job=$!
}
# wait_lines FILE N: until FILE has N lines (the metrics file: one line per step), at most 60 s.
wait_lines() {
  local i
  for i in $(seq 600); do
    [ -f "$1" ] && [ "$(wc -l <"$1")" -ge "$2" ] && return 0
    sleep 0.1
  done
  return 1
}
# finish: waits for $job; sets $rc and $elapsed (seconds since $t0, set by the caller when the fault was caused).
finish() {
  local i
  for i in $(seq 1200); do
    kill -0 "$job" 2>/dev/null || break
    sleep 0.1
  done
  if kill -0 "$job" 2>/dev/null; then
    pkill -CONT -f "orthoshard train .*$tmp" 2>/dev/null
    kill -KILL "$job" 2>/dev/null
    rc=124
  else
    wait "$job"
    rc=$?
  fi
  elapsed=$(( $(date +%s) - t0 ))
}
# rank_pid DIR R: the pid of rank R of the job training into DIR (ranks start in rank order).
rank_pid() { pgrep -f "^$bin train .*--checkpoint.dir=$1( |$)" | sort -n | sed -n "$(( $2 + 1 ))p"; }
# verifies DIR: the checkpoint DIR's latest names passes inspect.
verifies() { "$bin" ckpt inspect "$1" >/dev/null 2>&1; }
# resumes_exactly NP DIR: resumes DIR's latest checkpoint (step S) for 3 steps, and compares the result with an
# uninterrupted run of S + 3 steps, bit for bit.
resumes_exactly() {
  local np=$1 dir=$2 s
  s=$(sed -E 's/step_0*([0-9]+)\.h5/\1/' "$dir/latest")
  local n=$((s + 3))
  "$mpiexec" --oversubscribe -n "$np" "$bin" train "${model[@]}" --train.steps=$n --checkpoint.dir="$dir" \
    --checkpoint.every=$n --checkpoint.resume=auto >"$dir.resume.log" 2>&1 || { echo "  resume failed"; return 1; }
  "$mpiexec" --oversubscribe -n "$np" "$bin" train "${model[@]}" --train.steps=$n --checkpoint.dir="$dir.ref" \
    --checkpoint.every=$n >"$dir.ref.log" 2>&1 || { echo "  reference run failed"; return 1; }
  local name
  name=$(printf "step_%08d.h5" "$n")
  "$bin" ckpt diff "$dir/$name" "$dir.ref/$name" --tolerance 0 >"$dir.diff.log" 2>&1 ||
    { echo "  the resumed run differs from the uninterrupted one"; tail -5 "$dir.diff.log"; return 1; }
}

for np in "${nps[@]}"; do
  last=$((np - 1))

  # ---- preemption: SIGTERM to one rank (what srun sends to every rank; one is enough: the ranks agree)
  d=$tmp/term$np
  start "$np" "$d.log" --train.steps=100000 --checkpoint.dir="$d" --checkpoint.every=1000 --train.metrics="$d.jsonl"
  wait_lines "$d.jsonl" 5
  t0=$(date +%s)
  kill -TERM "$(rank_pid "$d" "$last")"
  finish
  line=$(grep -m1 "stopped by SIGTERM at step" "$d.log")
  if [ "$rc" -ne 75 ] || [ -z "$line" ] || [ "$elapsed" -gt 20 ] || ! verifies "$d"; then
    fail "np $np: SIGTERM to rank $last: exit $rc after ${elapsed}s; line '$line'"; tail -5 "$d.log"
  elif ! echo "$line" | grep -q "checkpoint $d/step_[0-9]*.h5; resume with checkpoint.resume=auto"; then
    fail "np $np: SIGTERM: the line does not name the checkpoint: $line"
  elif ! resumes_exactly "$np" "$d"; then
    fail "np $np: SIGTERM: resume is not bit-exact"
  else
    ok "np $np: SIGTERM to rank $last: exit 75 after ${elapsed}s, checkpoint verifies, resume bit-exact: $line"
  fi
  [ -e "$d/.lock" ] && fail "np $np: SIGTERM: the directory lock was left behind"

  # ---- preemption: SIGUSR1 to mpirun (which forwards it to every rank)
  d=$tmp/usr$np
  start "$np" "$d.log" --train.steps=100000 --checkpoint.dir="$d" --checkpoint.every=1000 --train.metrics="$d.jsonl"
  wait_lines "$d.jsonl" 5
  t0=$(date +%s)
  kill -USR1 "$job"
  finish
  line=$(grep -m1 "stopped by SIGUSR1 at step" "$d.log")
  if [ "$rc" -ne 75 ] || [ -z "$line" ] || [ "$elapsed" -gt 20 ] || ! verifies "$d"; then
    fail "np $np: SIGUSR1 to mpirun: exit $rc after ${elapsed}s; line '$line'"; tail -5 "$d.log"
  else
    ok "np $np: SIGUSR1 to mpirun: exit 75 after ${elapsed}s, checkpoint verifies"
  fi

  # ---- a second signal ends the process at once (steps of about a second, so that it comes before the boundary;
  # two signals sent together would merge into one)
  d=$tmp/twice$np
  start "$np" "$d.log" --train.steps=100000 --checkpoint.dir="$d" --checkpoint.every=1000 --train.metrics="$d.jsonl" \
    --model.L=4 --model.C=256 --model.maxT=128 --train.seq_len=128 --train.batch_size=8
  wait_lines "$d.jsonl" 2
  t0=$(date +%s)
  p=$(rank_pid "$d" 0)
  kill -TERM "$p"; sleep 0.2; kill -TERM "$p"
  finish
  if [ "$rc" -eq 0 ] || [ "$rc" -eq 75 ] || [ "$rc" -eq 124 ] || [ "$elapsed" -gt 20 ] ||
     ! grep -q "second stop signal" "$d.log"; then
    fail "np $np: two SIGTERMs: exit $rc after ${elapsed}s"; tail -5 "$d.log"
  else
    ok "np $np: two SIGTERMs: exit $rc after ${elapsed}s, at once"
  fi

  # ---- a frozen rank: the others end the job within comm_timeout_s + a few seconds, naming it
  d=$tmp/frozen$np
  start "$np" "$d.log" --train.steps=100000 --checkpoint.dir="$d" --checkpoint.every=5 --train.metrics="$d.jsonl" \
    --runtime.comm_timeout_s=3
  wait_lines "$d.jsonl" 12
  t0=$(date +%s)
  kill -STOP "$(rank_pid "$d" "$last")"
  finish
  line=$(grep -m1 "error: .*did not complete within 3 s\|error: .*reported a collective stuck" "$d.log")
  if [ "$rc" -ne 3 ] || [ -z "$line" ] || [ "$elapsed" -gt 30 ]; then
    fail "np $np: frozen rank $last: exit $rc after ${elapsed}s; line '$line'"; tail -8 "$d.log"
  elif ! echo "$line" | grep -q "ranks not heard from: $last;"; then
    fail "np $np: frozen rank: the line does not name rank $last: $line"
  elif [ "$(grep -c "error: " "$d.log")" -ne 1 ]; then
    fail "np $np: frozen rank: $(grep -c "error: " "$d.log") error lines, want 1"
  elif ! verifies "$d" || ! resumes_exactly "$np" "$d"; then
    fail "np $np: frozen rank: the last checkpoint does not verify or resume exactly"
  else
    ok "np $np: frozen rank $last: exit 3 after ${elapsed}s, checkpoint verifies, resume bit-exact: ${line#*error: }"
  fi
  rm -f "$d/.lock"  # the frozen rank's job was killed; its rank 0 released the lock, or the next run finds it stale

  # ---- an I/O error in the middle of a collective save (ENOSPC injected on one rank at the 7th dataset write)
  d=$tmp/enospc$np
  "$mpiexec" --oversubscribe -n "$np" "$bin" train "${model[@]}" --train.steps=3 --checkpoint.dir="$d" \
    --checkpoint.every=3 >"$d.first.log" 2>&1 || fail "np $np: ENOSPC: the first run failed"
  t0=$(date +%s)
  ORTHOSHARD_CHECKPOINT_FAIL="write:7@$last" start "$np" "$d.log" --train.steps=6 --checkpoint.dir="$d" \
    --checkpoint.every=3 --checkpoint.resume=auto
  finish
  lines=$(grep -c "error: checkpoint of step 6 not written: '$d/step_00000006.h5.partial': writing dataset .* failed: No space left on device" "$d.log")
  if [ "$rc" -ne 1 ] || [ "$lines" -ne 1 ] || [ "$elapsed" -gt 20 ]; then
    fail "np $np: ENOSPC during a save: exit $rc after ${elapsed}s, $lines error lines (want 1)"; tail -5 "$d.log"
  elif [ "$(cat "$d/latest")" != step_00000003.h5 ] || ls "$d"/*.partial >/dev/null 2>&1 || [ -e "$d/.lock" ]; then
    fail "np $np: ENOSPC during a save: latest is $(cat "$d/latest"), or a .partial or the lock was left: $(ls -A "$d")"
  elif ! verifies "$d" || ! resumes_exactly "$np" "$d"; then
    fail "np $np: ENOSPC during a save: the previous checkpoint does not verify or resume exactly"
  else
    ok "np $np: ENOSPC on rank $last during a save: every rank stopped, one line, exit 1 after ${elapsed}s, previous checkpoint and latest kept, .partial removed, resume bit-exact"
  fi
  # checkpoint.on_error = warn: the same failure, and training goes on to the end
  d=$tmp/warn$np
  t0=$(date +%s)
  ORTHOSHARD_CHECKPOINT_FAIL="write:7@$last" start "$np" "$d.log" --train.steps=6 --checkpoint.dir="$d" \
    --checkpoint.every=3 --checkpoint.on_error=warn
  finish
  if [ "$rc" -ne 0 ] || [ "$(grep -c "warning: checkpoint of step [36] not written: .*training goes on (checkpoint.on_error = warn)" "$d.log")" -ne 2 ] ||
     ls "$d"/step_* "$d"/*.partial >/dev/null 2>&1; then
    fail "np $np: on_error = warn: exit $rc, files: $(ls -A "$d" 2>/dev/null)"; tail -5 "$d.log"
  else
    ok "np $np: checkpoint.on_error = warn: both failed saves warned, the run finished (exit 0)"
  fi

  # ---- divergence: every update NaN under nan_policy = skip stops after max_skipped_steps; nothing skipped is saved
  d=$tmp/skip$np
  t0=$(date +%s)
  start "$np" "$d.log" --train.steps=100 --checkpoint.dir="$d" --checkpoint.every=1 --checkpoint.keep=2 \
    --train.nan_policy=skip --train.max_skipped_steps=4 --optim.name=adamw --optim.lr=1e30
  finish
  line=$(grep -m1 "error: .*4 steps in a row skipped" "$d.log")
  if [ "$rc" -eq 0 ] || [ -z "$line" ] || [ "$elapsed" -gt 30 ]; then
    fail "np $np: max_skipped_steps: exit $rc after ${elapsed}s"; tail -5 "$d.log"
  elif grep -q "not written: its update was skipped" "$d.log" && ! ls "$d"/step_*.h5 >/dev/null 2>&1; then
    fail "np $np: max_skipped_steps: no checkpoint left"
  else
    bad=0
    for f in "$d"/step_*.h5; do "$bin" ckpt inspect "$f" >/dev/null 2>&1 || bad=1; done
    [ "$bad" -eq 0 ] && ok "np $np: max_skipped_steps: exit $rc after ${elapsed}s, every checkpoint verifies" ||
      fail "np $np: max_skipped_steps: a checkpoint does not verify"
  fi
  # an update that leaves non-finite weights (an lr beyond float's range): its checkpoint is never written
  d=$tmp/inf$np
  t0=$(date +%s)
  start "$np" "$d.log" --train.steps=3 --checkpoint.dir="$d" --checkpoint.every=1 --optim.name=adamw --optim.lr=1e39
  finish
  if [ "$rc" -eq 0 ] || ! grep -q "error: checkpoint of step 1 not written: parameter .* holds [0-9]* non-finite value" "$d.log" ||
     ls "$d"/step_* "$d"/*.partial >/dev/null 2>&1 || [ "$elapsed" -gt 30 ]; then
    fail "np $np: non-finite weights: exit $rc after ${elapsed}s, files: $(ls -A "$d" 2>/dev/null)"; tail -5 "$d.log"
  else
    ok "np $np: non-finite weights: exit $rc, nothing written: $(grep -m1 -o "parameter .* non-finite value(s) on rank [0-9]*" "$d.log")"
  fi
  d=$tmp/limit$np
  t0=$(date +%s)
  start "$np" "$d.log" --train.steps=100 --train.loss_limit=20 --optim.name=adamw --optim.lr=1e4
  finish
  if [ "$rc" -eq 0 ] || ! grep -q "error: .*exceeds train.loss_limit = 20" "$d.log" || [ "$elapsed" -gt 30 ]; then
    fail "np $np: loss_limit: exit $rc after ${elapsed}s"; tail -5 "$d.log"
  else
    ok "np $np: loss_limit: exit $rc: $(grep -m1 -o "step [0-9]*: loss .* exceeds train.loss_limit = 20" "$d.log")"
  fi
done

# ---- a real full disk: a 6 MiB tmpfs holds the first checkpoint (3.4 MB) but not the second, found before writing
# (free space) and, with that check off, in the middle of the collective write
full=$tmp/tmpfs
mkdir -p "$full"
if mount -t tmpfs -o size=6m tmpfs "$full" 2>/dev/null; then
  for np in "${nps[@]}"; do
    for hook in "" skip_space_check; do
      rm -rf "${full:?}"/*
      t0=$(date +%s)
      ORTHOSHARD_CHECKPOINT_FAIL=$hook start "$np" "$tmp/full.log" --model.C=128 --train.steps=20 \
        --checkpoint.dir="$full/ck" --checkpoint.every=5 --runtime.comm_timeout_s=10
      finish
      what="np $np: a full disk${hook:+ ($hook)}"
      if [ "$rc" -ne 1 ] || ! grep -q "error: checkpoint .*step_00000010.h5.partial.*No space left on device" "$tmp/full.log" ||
         [ "$elapsed" -gt 30 ] || grep -q "egmentation" "$tmp/full.log"; then
        fail "$what: exit $rc after ${elapsed}s"; grep -E "error|rror" "$tmp/full.log" | head -5
      elif [ "$(cat "$full/ck/latest")" != step_00000005.h5 ] || ls "$full"/ck/*.partial >/dev/null 2>&1 ||
           ! verifies "$full/ck"; then
        fail "$what: latest $(cat "$full/ck/latest"), files $(ls -A "$full/ck")"
      else
        ok "$what: exit 1 after ${elapsed}s: $(grep -m1 -o "not written: .*No space left on device[^(]*" "$tmp/full.log"); step 5 kept, no .partial"
      fi
    done
  done
  umount "$full"
else
  echo "skip: a real full disk needs a tmpfs mount, not permitted here ($(id -un), no CAP_SYS_ADMIN)"
fi

# ---- one checkpoint directory, one run (2 ranks)
d=$tmp/shared
start 2 "$d.first.log" --train.steps=100000 --checkpoint.dir="$d" --checkpoint.every=1000 --train.metrics="$d.jsonl"
first=$job
wait_lines "$d.jsonl" 3
t0=$(date +%s)
out=$(timeout 60 "$mpiexec" --oversubscribe -n 2 "$bin" train "${model[@]}" --train.steps=5 --checkpoint.dir="$d" \
  --checkpoint.every=1 2>&1); rc=$?
if [ "$rc" -ne 2 ] || ! echo "$out" | grep -q "error: checkpoint.dir '$d' is in use by another run (host $(hostname), pid"; then
  fail "a second run in a directory in use: exit $rc"; echo "$out" | tail -5
else
  ok "a second run in a directory in use is refused (exit 2 after $(( $(date +%s) - t0 ))s)"
fi
job=$first
kill -USR1 "$job"
t0=$(date +%s)
finish
[ "$rc" -eq 75 ] || fail "the first run did not stop cleanly (exit $rc)"
# resume = none over existing checkpoints: refused unless checkpoint.overwrite
out=$("$mpiexec" --oversubscribe -n 2 "$bin" train "${model[@]}" --train.steps=2 --checkpoint.dir="$d" \
  --checkpoint.every=1 2>&1); rc=$?
if [ "$rc" -ne 2 ] || ! echo "$out" | grep -q "already holds 1 checkpoint(s).*checkpoint.overwrite=true"; then
  fail "resume = none over checkpoints: exit $rc"; echo "$out" | tail -5
else
  ok "resume = none over checkpoints is refused"
fi
# a stale lock (this host, a pid that is not running) is replaced with a warning
printf 'host %s\npid 999999999\nrun deadbeef\nstarted 2026-01-01T00:00:00Z\n' "$(hostname)" >"$d/.lock"
out=$("$mpiexec" --oversubscribe -n 2 "$bin" train "${model[@]}" --train.steps=2 --checkpoint.dir="$d" \
  --checkpoint.every=1 --checkpoint.overwrite=true 2>&1); rc=$?
if [ "$rc" -ne 0 ] || ! echo "$out" | grep -q "removing the stale lock of run deadbeef" || [ -e "$d/.lock" ] ||
   ! echo "$out" | grep -q "checkpoint.overwrite = true: deleted the 1 checkpoint(s) of the previous run" ||
   [ "$(ls "$d"/step_*.h5 | wc -l)" -ne 2 ]; then
  fail "stale lock: exit $rc"; echo "$out" | tail -5
else
  ok "a stale lock is replaced with a warning, overwrite=true replaces the previous run's checkpoints, the lock is released"
fi

# ---- validation when the data and checkpoints are opened
printf 'plain ascii text, then bytes past a 128-token vocabulary: \xc3\xa9\n' >"$tmp/text.txt"
"$bin" prepare-data "$tmp/text.txt" --out "$tmp/tokens.bin" >/dev/null
t0=$(date +%s)
out=$(timeout 60 "$mpiexec" --oversubscribe -n 2 "$bin" train --model.L=1 --model.C=32 --model.NH=4 --model.V=128 \
  --model.Vp=128 --model.maxT=8 --train.seq_len=4 --train.batch_size=1 --train.steps=2 --data.path="$tmp/tokens.bin" 2>&1)
rc=$?
if [ "$rc" -eq 0 ] || ! echo "$out" | grep -q "error: '$tmp/tokens.bin': token 195 at position .* outside the vocabulary \[0, 128)" ||
   echo "$out" | grep -q "^step "; then
  fail "token >= V: exit $rc"; echo "$out" | tail -5
else
  ok "a token >= V is found when the data is opened (exit $rc after $(( $(date +%s) - t0 ))s)"
fi
d=$tmp/term${nps[0]}
ck=$d/$(cat "$d/latest")
cp "$ck" "$ck.partial"
out=$("$mpiexec" --oversubscribe -n 2 "$bin" train "${model[@]}" --train.steps=100 --checkpoint.resume="$ck.partial" 2>&1); rc=$?
if [ "$rc" -ne 2 ] || ! echo "$out" | grep -q "error: checkpoint.resume '$ck.partial': a .partial file .* never loaded"; then
  fail "an explicit .partial path: exit $rc"; echo "$out" | tail -5
else
  ok "an explicit .partial path is refused"
fi
rm -f "$ck.partial"
# a foreign HDF5 file named like a newer checkpoint: skipped with a warning; `latest` names another step: said
if [ -f "$foreign" ]; then
  cp "$foreign" "$d/step_99999999.h5"
  out=$("$mpiexec" --oversubscribe -n 2 "$bin" train "${model[@]}" --train.steps=1 --checkpoint.dir="$d" \
    --checkpoint.resume=auto 2>&1); rc=$?
  if ! echo "$out" | grep -q "warning: checkpoint.resume = auto: skipping $d/step_99999999.h5: .*not an orthoshard checkpoint" ||
     ! echo "$out" | grep -q "resumed from $ck"; then
    fail "a foreign file under resume=auto: exit $rc"; echo "$out" | tail -5
  else
    ok "a foreign HDF5 file under resume=auto is skipped with a warning (exit $rc)"
  fi
  rm -f "$d/step_99999999.h5"
  # `latest` naming an older checkpoint than the newest complete one (a crash between the rename and `latest`)
  "$mpiexec" --oversubscribe -n 2 "$bin" train "${model[@]}" --train.steps=4 --checkpoint.dir="$tmp/lat" \
    --checkpoint.every=2 >/dev/null 2>&1
  echo step_00000002.h5 >"$tmp/lat/latest"
  out=$("$mpiexec" --oversubscribe -n 2 "$bin" train "${model[@]}" --train.steps=4 --checkpoint.dir="$tmp/lat" \
    --checkpoint.resume=auto 2>&1); rc=$?
  if [ "$rc" -ne 0 ] || ! echo "$out" | grep -q "warning: checkpoint.resume = auto: loaded $tmp/lat/step_00000004.h5, but '$tmp/lat/latest' names step_00000002.h5"; then
    fail "latest naming another checkpoint: exit $rc"; echo "$out" | tail -5
  else
    ok "when latest names another checkpoint than the one loaded, a line says so"
  fi
else
  fail "no foreign HDF5 file at '$foreign' to plant"
fi

[ "$fails" -eq 0 ] && echo "PASS" || exit 1
