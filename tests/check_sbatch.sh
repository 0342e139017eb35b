#!/usr/bin/env bash
# launch/slurm/train.sbatch's preemption path without Slurm: `srun` and `scontrol` are stubs. The stub srun starts
# the ranks with mpiexec and, like Slurm near the time limit (--signal=USR1@...), sends SIGUSR1 once training is
# under way. The script must see exit 75, requeue the job, and the requeued run must resume from the checkpoint.
# usage: check_sbatch.sh MPIEXEC ORTHOSHARD SOURCE_DIR
set -u
mpiexec=$1 bin=$2 src=$3
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
mkdir -p "$tmp/stubs" "$tmp/job/build/bin"
ln -s "$bin" "$tmp/job/build/bin/orthoshard"
cat >"$tmp/stubs/srun" <<STUB
#!/usr/bin/env bash
# srun --mpi=... --cpu-bind=... PROGRAM ARGS: the program on 2 ranks; SIGUSR1 once 5 steps are done (when asked).
while [ "\${1#--}" != "\$1" ]; do shift; done
"$mpiexec" --oversubscribe -n 2 "\$@" --train.metrics="$tmp/metrics.jsonl" &
job=\$!
if [ -n "\${SIGNAL_AFTER_STEPS:-}" ]; then
  for i in \$(seq 600); do
    [ -f "$tmp/metrics.jsonl" ] && [ "\$(wc -l <"$tmp/metrics.jsonl")" -ge "\$SIGNAL_AFTER_STEPS" ] && break
    sleep 0.1
  done
  kill -USR1 \$job
fi
wait \$job
STUB
printf '#!/bin/sh\necho "$@" >> "%s/scontrol.log"\n' "$tmp" >"$tmp/stubs/scontrol"
chmod +x "$tmp/stubs/srun" "$tmp/stubs/scontrol"
args=(--model.L=2 --model.C=32 --model.NH=4 --model.V=256 --model.Vp=256 --model.maxT=32 --train.seq_len=16
      --train.batch_size=2 --train.steps=100000 --checkpoint.dir="$tmp/ckpt" --checkpoint.every=100000)
fails=0
cd "$tmp/job" || exit 1
SIGNAL_AFTER_STEPS=5 SLURM_JOB_ID=4242 PATH="$tmp/stubs:$PATH" bash "$src/launch/slurm/train.sbatch" \
  "$src/launch/configs/smoke.toml" "${args[@]}" >"$tmp/first.log" 2>&1
rc=$?
if [ "$rc" -ne 0 ] || ! grep -q "requeue 4242" "$tmp/scontrol.log" 2>/dev/null || ! grep -q "stopped by SIGUSR1" "$tmp/first.log"; then
  echo "FAIL: a signalled job: exit $rc, scontrol: $(cat "$tmp/scontrol.log" 2>/dev/null)"; tail -5 "$tmp/first.log"; fails=1
else
  echo "ok: a signalled job wrote its checkpoint, exited 75 and was requeued"
fi
step=$(sed -E 's/step_0*([0-9]+)\.h5/\1/' "$tmp/ckpt/latest" 2>/dev/null)
SLURM_JOB_ID=4242 PATH="$tmp/stubs:$PATH" bash "$src/launch/slurm/train.sbatch" "$src/launch/configs/smoke.toml" \
  "${args[@]}" --train.steps=$((step + 2)) >"$tmp/second.log" 2>&1
rc=$?
if [ "$rc" -ne 0 ] || ! grep -q "resumed from $tmp/ckpt/step_0*$step.h5: step $step" "$tmp/second.log"; then
  echo "FAIL: the requeued job: exit $rc"; tail -5 "$tmp/second.log"; fails=1
else
  echo "ok: the requeued job resumed from step $step and finished"
fi
[ "$fails" -eq 0 ] && echo "PASS" || exit 1
