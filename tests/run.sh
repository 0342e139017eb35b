#!/usr/bin/env bash
# The test command: installs what is missing, builds, and runs every test (multi-rank ones included).
# Extra arguments go to ctest (e.g. -R comm, -L np3).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
build="${ORTHOSHARD_BUILD_DIR:-$root/build}"
"$root/launch/build.sh"
source "$root/launch/mpi-env.sh"
[ -d "$root/../shared/testdata" ] || echo "warning: ../shared/testdata not found beside the repository; reference-data tests will fail" >&2
cd "$build"
ctest --output-on-failure "$@"
