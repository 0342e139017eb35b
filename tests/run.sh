#!/usr/bin/env bash
# The test command: installs what is missing, builds, and runs every test (multi-rank ones included).
# Extra arguments go to ctest (e.g. -R comm, -L np3).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
build="${ORTHOSHARD_BUILD_DIR:-$root/build}"
"$root/launch/build.sh"
source "$root/launch/mpi-env.sh"
[ -d "$root/../shared/testdata" ] || echo "warning: ../shared/testdata not found beside the repository; reference-data tests will fail" >&2
status=0
(cd "$build" && ctest --output-on-failure "$@") || status=$?

# The GPU tests once more without a GPU: the CUDA code built with the host compiler against the CUDA emulator
# (tests/cuda_emu; kernels run on the CPU). Skipped with ORTHOSHARD_CUDA_EMULATION=0 or where there are no CUDA
# headers. Its own build directory; extra arguments go to this ctest too.
if [ "${ORTHOSHARD_CUDA_EMULATION:-1}" != 0 ] && [ -f /usr/local/cuda/include/cuda_runtime.h ]; then
  emu="${ORTHOSHARD_EMU_BUILD_DIR:-$root/build-emu}"
  echo "== GPU tests on the CUDA emulator ($emu) =="
  ORTHOSHARD_BUILD_DIR="$emu" ORTHOSHARD_CMAKE_ARGS="-DORTHOSHARD_CUDA=EMULATE ${ORTHOSHARD_CMAKE_ARGS:-}" \
    "$root/launch/build.sh"
  (cd "$emu" && ctest --output-on-failure "$@") || status=$?
fi
exit "$status"
