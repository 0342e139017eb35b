# Sourced by the scripts: lets Open MPI run as root (containers, CI) and oversubscribe a small machine.
if [ "$(id -u)" -eq 0 ]; then
  export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
fi
export OMPI_MCA_rmaps_base_oversubscribe=${OMPI_MCA_rmaps_base_oversubscribe:-1}
export OMPI_MCA_btl_vader_single_copy_mechanism=${OMPI_MCA_btl_vader_single_copy_mechanism:-none}
# OpenMP threads that spin while waiting fight OpenBLAS's threads for the cores (a tiny run measured 15 s
# instead of 0.8 s); passive waiting avoids that. It must be set before the process starts.
export OMP_WAIT_POLICY=${OMP_WAIT_POLICY:-passive}
