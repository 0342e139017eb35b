#!/usr/bin/env bash
# orthoshard against PyTorch (Debian's python3-torch) on the same machine, in one run, doing the same work.
# Every row is checked first (both sides compute the same thing), then timed: warm-up, median of several runs.
# Prints a markdown table; --json PATH also writes [{work, orthoshard, peer, unit, ratio, goal, check}, ...]
# (ratio > 1: orthoshard is better). Run by hand, never by the tests.
#
#   bench/compare.sh [--quick] [--json PATH] [--threads N] [--workdir DIR]
#
#   --quick     a reduced set (smaller sizes and models, fewer repeats), under 5 minutes on 2 cores
#   --threads   threads of the one-process rows, both sides (default: all cores); 2-rank rows use 1 per rank
#   --workdir   keep every side's raw JSON there (default: a temporary folder, removed at the end)
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
quick=0 json="" threads="$(nproc)" work=""
while [ $# -gt 0 ]; do
  case "$1" in
    --quick) quick=1 ;;
    --json) json="$(realpath -m "$2")"; shift ;;
    --threads) threads="$2"; shift ;;
    --workdir) work="$(realpath -m "$2")"; shift ;;
    -h|--help) sed -n '2,12p' "$0"; exit 0 ;;
    *) echo "compare.sh: unknown argument '$1' (see --help)" >&2; exit 2 ;;
  esac
  shift
done

"$root/launch/install-deps.sh" python3-torch python3-numpy python3-h5py
"$root/launch/build.sh" >/dev/null
source "$root/launch/mpi-env.sh"
bin="${ORTHOSHARD_BUILD_DIR:-$root/build}/bin/orthoshard"
py=/usr/bin/python3  # Debian's python, where python3-torch lives
peers="$root/bench/peers"
data="$root/../shared/testdata"
[ -d "$data" ] || { echo "compare.sh: $data not found (the shared reference data the checks use)" >&2; exit 1; }
if [ -z "$work" ]; then
  work="$(mktemp -d "${TMPDIR:-/tmp}/orthoshard-compare.XXXXXX")"
  trap 'rm -rf "$work"' EXIT
fi
mkdir -p "$work"
cd "$root"

if [ "$quick" = 1 ]; then
  ns_sizes=512,1024 reps=3 optim_layers=2 optim_steps=2 ckpt_L=4 ckpt_C=256 train_steps=4
  comm_max=$((16 << 20)) comm_sizes=1048576,16777216 large_model=0
else
  ns_sizes=512,1024,2048 reps=5 optim_layers=12 optim_steps=3 ckpt_L=12 ckpt_C=768 train_steps=6
  comm_max=$((64 << 20)) comm_sizes=1048576,16777216,67108864 large_model=1
fi
one=(env OPENBLAS_NUM_THREADS="$threads" OMP_NUM_THREADS="$threads")
step() { echo "== $*" >&2; }

step "Newton-Schulz ($ns_sizes)"
"${one[@]}" "$bin" bench ns --sizes "$ns_sizes" --repeats "$reps" --dump "$work" --json "$work/ns.json" >/dev/null
"${one[@]}" "$py" "$peers/ns_peer.py" --dump "$work" --sizes "$ns_sizes" --threads "$threads" --repeats "$reps" \
  --json "$work/ns_peer.json"

step "optimizer steps (GPT-2 set, $optim_layers layers)"
for t in muon normuon conda; do  # our side of the check: the same traces the peer reproduces
  "$bin" replay "$data/optim/$t.h5" --precision f32 | grep -q "PASS: all 4 parameters" \
    || { echo "compare.sh: orthoshard replay of $t.h5 failed" >&2; exit 1; }
done
"${one[@]}" "$bin" bench optim --optimizers muon,normuon,conda --layers "$optim_layers" --steps "$optim_steps" \
  --json "$work/optim.json" >/dev/null
"${one[@]}" "$py" "$peers/optim_peer.py" --traces "$data/optim" --ours "$work/optim.json" --threads "$threads" \
  --steps "$optim_steps" --json "$work/optim_peer.json"

step "GPT-2 reference case, both sides, 1 and 2 ranks"
ref=(--model.init_from="$data/gpt2/model.bin" --data.path="$data/gpt2/tokens.bin" --train.seq_len=32
     --checkpoint.every=0 --checkpoint.resume=none
     $("$py" "$peers/ref_losses.py" --print-args --ref "$data/gpt2/reference.h5"))
for np in 1 2; do
  mpirun -np "$np" "$bin" train "${ref[@]}" --train.batch_size=$((4 / np)) \
    --train.metrics="$work/ref_np$np.jsonl" >/dev/null
  "$py" "$peers/ref_losses.py" --metrics "$work/ref_np$np.jsonl" --ref "$data/gpt2/reference.h5" \
    --json "$work/ref_ours_np$np.json"
done
"$py" "$peers/gpt2_peer.py" check --ref "$data/gpt2" --procs 1 --json "$work/ref_peer_np1.json"
"$py" "$peers/gpt2_peer.py" check --ref "$data/gpt2" --procs 2 --json "$work/ref_peer_np2.json"

step "GPT-2 forward+backward"
model_case() {  # tag L C B steps
  "${one[@]}" "$bin" bench model --L "$2" --C "$3" --T 256 --B "$4" --steps "$5" --json "$work/model_$1.json" >/dev/null
  "${one[@]}" "$py" "$peers/gpt2_peer.py" fwdbwd --L "$2" --C "$3" --T 256 --B "$4" --steps "$5" \
    --threads "$threads" --json "$work/model_$1_peer.json"
}
model_case small 4 256 4 "$reps"
[ "$large_model" = 1 ] && model_case large 12 768 4 3

step "training at 2 ranks (L=4 C=256 T=256 B=4 per rank, AdamW)"
mpirun -np 2 "$bin" bench train --config launch/configs/smoke.toml --model.L=4 --model.C=256 --model.NH=4 \
  --model.V=50257 --model.Vp=50304 --model.maxT=256 --train.seq_len=256 --train.batch_size=4 --train.grad_accum=1 \
  --optim.name=adamw --train.steps="$train_steps" --json "$work/train.json" >/dev/null
OPENBLAS_NUM_THREADS=1 "$py" "$peers/gpt2_peer.py" ddp --L 4 --C 256 --T 256 --B 4 --procs 2 \
  --steps "$train_steps" --json "$work/ddp.json"

step "checkpoint save (L=$ckpt_L C=$ckpt_C, NorMuon state, 1 rank)"
"$bin" bench ckpt --ranks 1 --layers "$ckpt_L" --channels "$ckpt_C" --optimizer normuon --dir "$work" \
  --repeats 3 --keep "$work/kept.h5" --json "$work/ckpt.json" >/dev/null
"$bin" ckpt inspect "$work/kept.h5" >/dev/null  # checksums of every dataset verified
"$py" "$peers/ckpt_peer.py" --ckpt "$work/kept.h5" --dir "$work" --repeats 3 --json "$work/ckpt_peer.json"
rm -f "$work/kept.h5"

step "all_gather / reduce_scatter at 2 ranks"
mpirun -np 2 "$bin" bench comm --ops all_gather,reduce_scatter --min-bytes 1048576 --max-bytes "$comm_max" \
  --json "$work/comm.json" >/dev/null
"$py" "$peers/comm_peer.py" --procs 2 --sizes "$comm_sizes" --json "$work/comm_peer.json"

echo
"$py" "$peers/table.py" "$work" ${json:+--json "$json"}
