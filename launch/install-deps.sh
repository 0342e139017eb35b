#!/usr/bin/env bash
# Installs the Debian packages orthoshard needs to build and test, plus any packages named as arguments
# (bench/compare.sh adds python3-torch). Idempotent: a fast no-op when all are present.
# CUDA 13 and NCCL are not Debian packages here: they are used from /usr/local/cuda when present.
set -euo pipefail

PACKAGES=(
  build-essential cmake ninja-build ccache pkg-config
  openmpi-bin libopenmpi-dev
  libhdf5-openmpi-dev hdf5-tools python3-h5py
  libopenblas-dev liblapack-dev
  libgtest-dev
  libcli11-dev libfmt-dev libtomlplusplus-dev nlohmann-json3-dev
)
PACKAGES+=("$@")

missing=()
for p in "${PACKAGES[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$p")
  fi
done
[ ${#missing[@]} -eq 0 ] && exit 0

echo "install-deps: installing ${missing[*]}"
SUDO=""
if [ "$(id -u)" -ne 0 ]; then
  command -v sudo >/dev/null || { echo "install-deps: need root or sudo to install: ${missing[*]}" >&2; exit 1; }
  SUDO="sudo"
fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
