#!/usr/bin/env bash
# Installs missing dependencies, configures (once) and builds orthoshard incrementally into ${ORTHOSHARD_BUILD_DIR:-build}.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
build="${ORTHOSHARD_BUILD_DIR:-$root/build}"
"$root/launch/install-deps.sh"
if [ ! -f "$build/CMakeCache.txt" ]; then
  gen=()
  command -v ninja >/dev/null && gen=(-G Ninja)
  cmake -S "$root" -B "$build" "${gen[@]}" -DCMAKE_BUILD_TYPE="${CMAKE_BUILD_TYPE:-Release}" ${ORTHOSHARD_CMAKE_ARGS:-}
fi
cmake --build "$build" -j "${ORTHOSHARD_JOBS:-$(nproc)}" ${ORTHOSHARD_BUILD_TARGETS:+--target $ORTHOSHARD_BUILD_TARGETS}
