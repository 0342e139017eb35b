#!/usr/bin/env bash
# Per-rank peak memory of training on CPU ranks: the largest max RSS over the ranks at 1, 2 and 4 ranks, beside the
# trainer's own accounting (sharded part + the most full-size bytes in flight + activations) and what does not
# shrink with N (max RSS(N) - max RSS(1)/N); then the largest GPT-2 shape whose NorMuon step runs at 4 CPU ranks
# within a memory budget. Run by hand, never by the tests (the 774M row trains a real 774M model: minutes per step).
#
#   bench/memory.sh [--quick|--smoke] [--budget-gib 20] [--bin build/bin/orthoshard] [--json PATH] [--section.key=value ...]
#
# --quick: the 124M rows only. --smoke: a tiny model at 1 and 2 ranks (what the tests run). Extra --section.key=value arguments go to every run (e.g. --runtime.activation_checkpointing=blocks).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bin="$root/build/bin/orthoshard"
budget_gib=20
quick=0
smoke=0
json=""
extra=()
while [ $# -gt 0 ]; do
  case "$1" in
    --quick) quick=1 ;;
    --smoke) smoke=1; quick=1 ;;
    --budget-gib) budget_gib=$2; shift ;;
    --bin) bin=$2; shift ;;
    --json) json=$2; shift ;;
    --*.*) extra+=("$1") ;;
    *) echo "memory.sh: unknown argument '$1'" >&2; exit 2 ;;
  esac
  shift
done
[ -x "$bin" ] || "$root/launch/build.sh"
source "$root/launch/mpi-env.sh"
export OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 OMP_WAIT_POLICY=passive
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# shape name -> model overrides (GPT-2's sizes, llm.c's vocabulary and context)
declare -A shapes=(
  [124M]="--model.L=12 --model.C=768 --model.NH=12"
  [350M]="--model.L=24 --model.C=1024 --model.NH=16"
  [774M]="--model.L=36 --model.C=1280 --model.NH=20"
  [tiny]="--model.L=1 --model.C=64 --model.NH=4 --model.V=256 --model.Vp=256"
)
first=124M
ranks=(1 2 4)
if [ "$smoke" = 1 ]; then first=tiny; ranks=(1 2); fi
common=(--model.V=50257 --model.Vp=50304 --model.maxT=1024 --train.batch_size=1 --train.seq_len=64 --train.steps=2
        --train.log_every=1 --optim.name=normuon --checkpoint.every=0)

# run NAME NP: trains two NorMuon steps (the second one at steady state); prints "rss_mib sharded_mib in_flight_mib activations_mib" or "failed".
run() {
  local name=$1 np=$2 log="$work/$1_np$2.log"
  # shellcheck disable=SC2086
  if ! mpirun --oversubscribe -np "$np" "$bin" train "${common[@]}" ${shapes[$name]} "${extra[@]}" >"$log" 2>&1; then
    echo failed; return
  fi
  local rss mem
  rss=$(grep -m1 "peak memory per rank" "$log" | sed -E 's/.*\.\. ([0-9.]+) MiB.*/\1/')
  mem=$(grep -m1 "memory (cpu): sharded" "$log")
  local sharded inflight act
  sharded=$(sed -E 's/.*sharded ([0-9.]+) MiB.*/\1/' <<<"$mem")
  inflight=$(sed -E 's/.*in flight at most ([0-9.]+) MiB.*/\1/' <<<"$mem")
  act=$(sed -E 's/.*activations ([0-9.]+) MiB.*/\1/' <<<"$mem")
  echo "$rss $sharded $inflight $act"
}

echo "# bench memory: GPT-2, NorMuon, B=1 T=64, two steps per run, $(nproc --all) cores, $("$bin" --version)"
echo
echo "| model | ranks | max RSS per rank (MiB) | accounted: sharded + in flight + activations (MiB) | not shrinking with N: RSS(N) - RSS(1)/N (MiB) |"
echo "| --- | --- | --- | --- | --- |"
rows=()
rss1=""
for np in "${ranks[@]}"; do
  read -r rss sharded inflight act <<<"$(run "$first" "$np")"
  if [ "$rss" = failed ]; then echo "| $first | $np | failed | | |"; continue; fi
  [ "$np" = 1 ] && rss1=$rss
  acc=$(awk "BEGIN{printf \"%.0f\", $sharded + $inflight + $act}")
  fixed=$(awk "BEGIN{printf \"%.0f\", $rss - $rss1 / $np}")
  echo "| $first | $np | ${rss%.*} | $acc ($sharded + $inflight + $act) | $fixed |"
  rows+=("{\"model\": \"$first\", \"ranks\": $np, \"max_rss_mib\": $rss, \"sharded_mib\": $sharded, \"in_flight_mib\": $inflight, \"activations_mib\": $act}")
done

if [ "$quick" = 0 ]; then
  echo
  echo "Largest GPT-2 whose NorMuon step runs at 4 CPU ranks within ${budget_gib} GiB (4 x max RSS per rank):"
  largest=none
  for name in 124M 350M 774M; do
    read -r rss sharded inflight act <<<"$(run "$name" 4)"
    if [ "$rss" = failed ]; then echo "  $name: failed (see the log: out of memory?)"; break; fi
    total=$(awk "BEGIN{printf \"%.1f\", 4 * $rss / 1024}")
    fits=$(awk "BEGIN{print (4 * $rss / 1024 <= $budget_gib) ? \"yes\" : \"no\"}")
    echo "  $name: max RSS ${rss%.*} MiB per rank, ${total} GiB for 4 ranks: within budget: $fits"
    rows+=("{\"model\": \"$name\", \"ranks\": 4, \"max_rss_mib\": $rss, \"sharded_mib\": $sharded, \"in_flight_mib\": $inflight, \"activations_mib\": $act}")
    [ "$fits" = yes ] && largest=$name || break
  done
  echo "  largest within budget: $largest"
fi

if [ -n "$json" ]; then
  { echo "["; for i in "${!rows[@]}"; do echo "  ${rows[$i]}$([ "$i" -lt $((${#rows[@]} - 1)) ] && echo ,)"; done; echo "]"; } >"$json"
  echo "wrote $json"
fi
