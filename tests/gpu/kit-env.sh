# Environment for the binaries and Open MPI of .gpu-kit (source it; see tests/gpu/make-kit.sh).
# Extracts the kit on first use. Sets PATH, LD_LIBRARY_PATH (kit, CUDA, NCCL from PyTorch's wheels) and the
# Open MPI / PMIx relocation and transport settings that work inside a container (no InfiniBand, no UCX).
_kit_root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
if [ ! -d "$_kit_root/.gpu-kit/kit" ]; then tar xzf "$_kit_root/.gpu-kit/kit.tar.gz" -C "$_kit_root/.gpu-kit"; fi
export KIT=$_kit_root/.gpu-kit/kit
export ORTHOSHARD_TESTDATA=$KIT/testdata
# CUDA libraries: the toolkit's, then those of PyTorch's nvidia-* wheels (NCCL is only there).
_nv=$(python3 -c 'import nvidia; print(list(nvidia.__path__)[0])' 2>/dev/null || true)
_nccl_dir=$( (ls -d /usr/local/cuda/lib64 2>/dev/null; [ -n "$_nv" ] && find "$_nv" -maxdepth 3 -type d -name lib) | paste -sd: -)
export PATH=$KIT/usr/bin:$KIT/bin:$PATH
export LD_LIBRARY_PATH=$KIT/lib:$KIT/usr/lib/x86_64-linux-gnu/openmpi/lib:${_nccl_dir}${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
export OPAL_PREFIX=$KIT/usr PMIX_PREFIX=$KIT/usr OPAL_SYSCONFDIR=$KIT/etc/openmpi
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMPI_MCA_rmaps_base_oversubscribe=1
export OMPI_MCA_pml=ob1 OMPI_MCA_btl=self,vader OMPI_MCA_osc=^ucx OMPI_MCA_btl_vader_single_copy_mechanism=none
export OMPI_MCA_mca_base_component_show_load_errors=0 OMPI_MCA_plm_rsh_agent=false
unset _kit_root _nccl_dir _nv
