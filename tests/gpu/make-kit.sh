#!/usr/bin/env bash
# Packs what the GPU machine lacks for orthoshard's GPU tests and benchmarks into .gpu-kit/kit.tar.gz:
# the binaries built here (CUDA code for sm_80 and sm_90), Debian's Open MPI and PMIx (relocated at run time
# through OPAL_PREFIX / PMIX_PREFIX), and the shared libraries they load that are not part of a base system or
# the CUDA toolkit, plus ../shared/testdata's GPT-2 case and optimizer traces. On the GPU machine: carry `.gpu-kit` and run `bash tests/gpu/on-device.sh`.
#   usage: tests/gpu/make-kit.sh [BUILD_DIR]      (default: build)
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
build=${1:-$root/build}
targets=(orthoshard test_cuda test_device_comm test_gpt2_cuda test_llama_cuda test_train_cuda)
multiarch=x86_64-linux-gnu

[ -f "$build/CMakeCache.txt" ] || { echo "error: no build in $build (run launch/build.sh first)" >&2; exit 2; }
grep -q '^ORTHOSHARD_HAVE_CUDA:INTERNAL=ON' "$build/CMakeCache.txt" 2>/dev/null ||
  grep -q 'test_cuda' "$build/build.ninja" || { echo "error: $build was configured without CUDA" >&2; exit 2; }
cmake --build "$build" -j2 --target "${targets[@]}"

rm -rf "$root/.gpu-kit"  # an extracted kit must not travel with the next one
stage=$(mktemp -d)
trap 'rm -rf "$stage"' EXIT
k=$stage/kit
mkdir -p "$k/bin" "$k/lib" "$k/usr/bin" "$k/usr/lib/$multiarch" "$k/usr/share" "$k/etc"
for t in "${targets[@]}"; do cp "$build/bin/$t" "$k/bin/"; done
# The shared reference data the GPU tests compare with (small).
testdata=$root/../shared/testdata
[ -d "$testdata" ] && { mkdir -p "$k/testdata"; cp -a "$testdata/gpt2" "$testdata/llama" "$testdata/optim" "$k/testdata/"; }

# Open MPI and PMIx at their Debian paths under $k/usr (their install paths are prefix-relative).
cp -a "/usr/lib/$multiarch/openmpi" "/usr/lib/$multiarch/pmix2" "$k/usr/lib/$multiarch/"
find "$k/usr/lib" -name "*.a" -delete
cp -a /usr/share/openmpi "$k/usr/share/"
[ -d /usr/share/pmix ] && cp -a /usr/share/pmix "$k/usr/share/"
cp -a /etc/openmpi "$k/etc/"
for b in orterun orted ompi_info; do cp -L "/usr/bin/$b" "$k/usr/bin/"; done
ln -s orterun "$k/usr/bin/mpirun"
ln -s orterun "$k/usr/bin/mpiexec"

# Shared-library closure, minus the C/C++ runtime (the GPU machine has newer ones) and CUDA/NCCL (the GPU
# machine's own; NCCL comes from its PyTorch installation).
skip='/(ld-linux[^/]*|libc|libm|libdl|libpthread|librt|libresolv|libstdc\+\+|libgcc_s)\.so|/usr/local/cuda|/libcuda\.so|/libnvidia|/libnccl'
objects=$( (ls "$k"/bin/* "$k"/usr/bin/*; find "$k/usr/lib" -name '*.so*' -type f) )
for f in $objects; do ldd "$f" 2>/dev/null | awk '/=> \// {print $3}'; done | sort -u | grep -v -E "$skip" |
  while read -r lib; do cp -L "$lib" "$k/lib/"; done
mkdir -p "$root/.gpu-kit"
tar czf "$root/.gpu-kit/kit.tar.gz" -C "$stage" kit
echo "kit: $(du -h "$root/.gpu-kit/kit.tar.gz" | cut -f1) in $root/.gpu-kit/kit.tar.gz ($(ls "$k/lib" | wc -l) libraries)"
