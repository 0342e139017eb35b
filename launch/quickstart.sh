#!/usr/bin/env bash
# The main job on the embedded default: install, build, show the environment, check the communicator,
# train the smoke model (launch/configs/smoke.toml) on 2 CPU ranks launched with mpirun, checkpointing
# every 50 steps into runs/quickstart, and show the last checkpoint with `orthoshard ckpt inspect`.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
build="${ORTHOSHARD_BUILD_DIR:-$root/build}"
"$root/launch/build.sh"
source "$root/launch/mpi-env.sh"
bin="$build/bin/orthoshard"
echo "== orthoshard env"
"$bin" env
echo "== mpirun -np 2 orthoshard selfcheck"
mpirun --oversubscribe -np 2 "$bin" selfcheck
ckpt_dir="${ORTHOSHARD_QUICKSTART_DIR:-$root/runs/quickstart}"
# checkpoint.overwrite: running the quickstart again starts over in the same directory.
echo "== mpirun -np 2 orthoshard train --config launch/configs/smoke.toml --checkpoint.dir=$ckpt_dir --checkpoint.every=50 --checkpoint.overwrite=true"
mpirun --oversubscribe -np 2 "$bin" train --config "$root/launch/configs/smoke.toml" \
  --checkpoint.dir="$ckpt_dir" --checkpoint.every=50 --checkpoint.overwrite=true "$@"
latest="$ckpt_dir/$(cat "$ckpt_dir/latest")"
echo "== orthoshard ckpt inspect $latest"
"$bin" ckpt inspect "$latest"
