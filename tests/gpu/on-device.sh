#!/usr/bin/env bash
# Runs orthoshard's GPU checks on the GPU machine from the kit made by tests/gpu/make-kit.sh; logs go to
# $OUT (or ./gpu-logs). Prints a short summary last.
#   on-device.sh tests   CUDA kernel tests (the fused attention also under compute-sanitizer's racecheck and
#                        memcheck); GPT-2 on the GPU against the CPU model and the shared reference;
#                        device-buffer communicators at 1-4 ranks (NCCL needs a GPU per rank: on one GPU only
#                        its 1-rank run does not skip); every optimizer trace through the GPU optimizer; the
#                        trainer on the GPU against the CPU trainer, the reference and its own checkpoints
#   on-device.sh bench   `orthoshard bench gpu`, the PyTorch peer (eager, torch.compile), the trainer on 124M
#   on-device.sh profile Nsight Compute on the fused attention kernels (speed of light, occupancy) and the
#                        GPT-2 124M step's time by phase, with each attention path, at B=8 and B=16
#   on-device.sh cpu     CPU overlap where cores are free (that machine has 16): `bench comm --overlap` and
#                        `bench train` at 2 ranks
#   on-device.sh [all]   tests and bench (longer than one 10-minute device command)
# The device tool brings back at most 8 files from $OUT: the logs travel as one $OUT/gpu-logs-MODE.tar.gz.
set -uo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
cd "$root"
mode=${1:-all}  # tests | bench | profile | cpu | all (one device command runs at most 10 minutes: call tests, then bench)
case $mode in tests | bench | profile | cpu | all) ;; *) echo "usage: on-device.sh tests|bench|profile|cpu|all" >&2; exit 2 ;; esac
out=$root/gpu-logs/$mode
rm -rf "$out"
mkdir -p "$out"
source tests/gpu/kit-env.sh
export GTEST_COLOR=no
summary=()
# One device command runs at most 10 minutes and brings back only what is under $OUT, so no step starts after
# ONDEVICE_DEADLINE_S seconds (default 540), each runs under a timeout (ONDEVICE_STEP_TIMEOUT_S, default 240,
# or what is left), and the logs are packed into $OUT after every step.
deadline=${ONDEVICE_DEADLINE_S:-540}
step_cap=${ONDEVICE_STEP_TIMEOUT_S:-240}
pack() { if [ -n "${OUT:-}" ]; then tar czf "$OUT/gpu-logs-$mode.tar.gz" -C "$root/gpu-logs" "$mode"; fi; }
step() {  # step NAME COMMAND...: runs, logs to $out/NAME.log, records pass/fail
  local name=$1; shift
  local left=$((deadline - SECONDS))
  if [ "$left" -lt 15 ]; then
    summary+=("$(printf '%-20s not run: the time budget (%ss) is spent' "$name" "$deadline")")
    return 0
  fi
  local cap=$((left < step_cap ? left : step_cap))
  local t0=$SECONDS
  if declare -F "$1" >/dev/null; then
    "$@" >"$out/$name.log" 2>&1  # a shell function bounds its own commands
  else
    timeout -k 10 "$cap" "$@" >"$out/$name.log" 2>&1
  fi
  local rc=$?
  [ $rc = 124 ] && echo "[  FAILED  ] $name: timed out after ${cap}s (" >>"$out/$name.log"
  local ok skip bad
  ok=$(grep -c '^\[       OK \]' "$out/$name.log")
  skip=$(grep -c '^\[  SKIPPED \] [A-Za-z].* ms)$' "$out/$name.log")
  bad=$(grep -c '^\[  FAILED  \] [A-Za-z].*(' "$out/$name.log")
  summary+=("$(printf '%-20s rc=%-3s %4ss  ok %-3s skipped %-3s failed %s' "$name" "$rc" $((SECONDS - t0)) "$ok" "$skip" "$bad")")
  printf '%s\n' "${summary[@]}" >"$out/summary.txt"
  pack
  return 0
}
{
  nvidia-smi -L; ldd --version | head -1
  for b in "$KIT"/bin/*; do echo "$b:"; ldd "$b" | grep -E 'not found|cudart|cublas|cusolver|nccl|mpi\.so'; done
} >"$out/env.log" 2>&1
run_tests=0 run_bench=0
[ "$mode" = tests ] || [ "$mode" = all ] && run_tests=1
[ "$mode" = bench ] || [ "$mode" = all ] && run_bench=1
if [ $run_tests = 1 ]; then
step cuda_kernels "$KIT/bin/test_cuda"
step gpt2_cuda "$KIT/bin/test_gpt2_cuda"
step llama_cuda "$KIT/bin/test_llama_cuda"
for np in 1 2 3 4; do step "device_comm_np$np" mpirun -np "$np" "$KIT/bin/test_device_comm"; done
# Every optimizer trace through the GPU optimizer: bf16 Newton-Schulz (2e-2) and f32 (1e-4); NCCL at 1 rank,
# staged MPI at 2-4 ranks (they share the GPU). Lines in gtest's format so step() counts them.
replays() {
  local trace prec run comm np
  for trace in adamw muon normuon conda; do
    for prec in bf16 f32; do
      for run in nccl:1 mpi:2 mpi:3 mpi:4; do
        comm=${run%:*}; np=${run#*:}
        echo "== $trace $prec $comm np$np"
        local log
        log=$(timeout -k 5 90 mpirun -np "$np" "$KIT/bin/orthoshard" replay "$ORTHOSHARD_TESTDATA/optim/$trace.h5" --backend cuda \
                --precision "$prec" --comm "$comm" 2>&1)
        echo "$log"
        if [ $((deadline - SECONDS)) -lt 15 ]; then echo "replays stop: the time budget is spent"; return; fi
        if grep -q '^PASS' <<<"$log"; then
          echo "[       OK ] replay_${trace}_${prec}_${comm}_np$np"
        else
          echo "[  FAILED  ] replay_${trace}_${prec}_${comm}_np$np (see above)"
        fi
      done
    done
  done 2>&1
}
step replay_cuda replays
# The trainer on the GPU against the CPU trainer, the GPT-2 reference and its own checkpoints.
for np in 1 2 3 4; do step "train_cuda_np$np" mpirun -np "$np" "$KIT/bin/test_train_cuda"; done
# The fused attention kernels under compute-sanitizer: shared-memory races (racecheck; the emulator cannot see a
# missing __syncwarp where a shuffle or a fragment operation sits between) and out-of-bounds accesses (memcheck).
sanitizer=$(command -v compute-sanitizer || echo /usr/local/cuda/bin/compute-sanitizer)
if [ -x "$sanitizer" ]; then
  for tool in racecheck memcheck; do
    step "flash_$tool" "$sanitizer" --tool "$tool" --error-exitcode 1 "$KIT/bin/test_cuda" --gtest_filter='*FlashAttention*'
  done
fi
fi
if [ $run_bench = 1 ]; then
# Numbers: GEMM rates, Newton-Schulz against them, attention (fused against GEMMs), GPT-2 124M bf16 training steps
# (B=8, T=1024) with each attention.
step bench_gpu "$KIT/bin/orthoshard" bench gpu --json "$out/bench_gpu.json"
# The PyTorch peer of its GPT-2 steps (eager and torch.compile; bf16 autocast, fp32 master weights, fused AdamW).
step torch_peer python3 bench/peers/gpt2_gpu_peer.py --json "$out/torch_peer.json"
# The whole trainer (FSDP engine, NorMuon with bf16 Newton-Schulz, AdamW for the rest) on GPT-2 124M, one GPU.
step train_124m "$KIT/bin/orthoshard" train --config launch/configs/gpt2-124m.toml --data.path=builtin:synthetic \
  --train.steps=30 --train.batch_size=8 --train.grad_accum=1 --train.log_every=5 --train.warmup_steps=0 \
  --train.metrics="$out/train_124m.jsonl" --checkpoint.every=0 --checkpoint.resume=none
fi
if [ "$mode" = profile ]; then
# ncu (no nsys reports on these machines): each flash kernel's first three launches of the attention benchmark
# (GPT-2 124M's shapes, B=8, T=1024), with the clocks left alone.
ncu_bin=$(command -v ncu || echo /usr/local/cuda/bin/ncu)
step ncu_flash timeout 300 "$ncu_bin" --clock-control none --kernel-name regex:flash_ --launch-count 9 \
  --section SpeedOfLight --section Occupancy --section LaunchStats \
  "$KIT/bin/orthoshard" bench gpu --what attention --repeats 1 --gemm-size 4096
for b in 8 16; do
  step "phases_b$b" "$KIT/bin/orthoshard" bench gpu --what gemm,model --B "$b" --repeats 5 --json "$out/phases_b$b.json"
done
fi
if [ "$mode" = cpu ]; then
# Issue 6's overlap where cores are free: one BLAS thread per rank leaves 14 of the 16 cores idle.
step cpu_overlap env OPENBLAS_NUM_THREADS=1 OMP_NUM_THREADS=1 mpirun -np 2 "$KIT/bin/orthoshard" bench comm \
  --overlap --repeats 5 --json "$out/cpu_overlap.json"
step cpu_train_smoke mpirun -np 2 "$KIT/bin/orthoshard" bench train --config launch/configs/smoke.toml \
  --train.steps=40 --runtime.threads=1 --json "$out/cpu_train_smoke.json"
step cpu_train_l12 mpirun -np 2 "$KIT/bin/orthoshard" bench train --config launch/configs/smoke.toml \
  --model.L=12 --model.C=768 --model.NH=12 --model.maxT=256 --train.seq_len=256 --train.batch_size=4 \
  --train.steps=4 --optim.name=adamw --runtime.threads=4 --json "$out/cpu_train_l12.json"
fi
echo "---- environment ----"; cat "$out/env.log" | head -20
echo "---- failures ----"; grep -h -E '^\[  FAILED  \]|Failure|error:' "$out"/*.log | head -40
if [ $run_bench = 1 ]; then
  echo "---- bench gpu ----"; grep -v '^#' "$out/bench_gpu.log" | tail -30
  echo "---- pytorch peer ----"; tail -8 "$out/torch_peer.log"
  echo "---- trainer, GPT-2 124M ----"; grep -E 'memory|step +(5|30)/|done:' "$out/train_124m.log" | tail -6
fi
if [ "$mode" = profile ]; then
  echo "---- ncu, fused attention ----"
  grep -E 'flash_[a-z_]+_kernel<|Duration|Compute \(SM\) Throughput|Memory Throughput|Achieved Occupancy|Registers Per' \
    "$out/ncu_flash.log" | head -60
  for b in 8 16; do echo "---- step by phase, B=$b ----"; grep -v '^#' "$out/phases_b$b.log" | tail -40; done
fi
if [ "$mode" = cpu ]; then
  for f in cpu_overlap cpu_train_smoke cpu_train_l12; do echo "---- $f ----"; grep -v builtin "$out/$f.log" | tail -7; done
fi
if [ $run_tests = 1 ]; then
  echo "---- measured differences ----"; grep -h -E 'max relative' "$out"/train_cuda_np*.log | sort | uniq | head -20
  echo "---- compute-sanitizer ----"; grep -H 'ERROR SUMMARY' "$out"/flash_*.log 2>/dev/null || echo "not run (no compute-sanitizer)"
fi
echo "---- summary ----"; printf '%s\n' "${summary[@]}"
pack
