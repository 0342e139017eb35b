#!/usr/bin/env bash
# The main job on the embedded default: install, build, show the environment, check the communicator,
# and train the smoke model (launch/configs/smoke.toml) on 2 CPU ranks launched with mpirun.
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
echo "== mpirun -np 2 orthoshard train --config launch/configs/smoke.toml"
mpirun --oversubscribe -np 2 "$bin" train --config "$root/launch/configs/smoke.toml" "$@"
