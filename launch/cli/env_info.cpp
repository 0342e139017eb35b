// Reports compiled backends and library versions: MPI, HDF5 (and whether parallel), BLAS, CUDA/NCCL, devices.
#include "launch/cli/env_info.hpp"

#include <fmt/format.h>
#include <hdf5.h>
#include <mpi.h>

#ifdef ORTHOSHARD_HAVE_CUDA
#include <cuda_runtime_api.h>
#endif
#ifdef ORTHOSHARD_HAVE_NCCL
#include <nccl.h>
#endif

#include <cstring>
#include <string>

extern "C" char* openblas_get_config(void);
extern "C" int openblas_get_num_threads(void);

namespace orthoshard {

static std::string backends() {
  std::string b = "cpu, mpi";
#ifdef ORTHOSHARD_HAVE_CUDA
  b += ", cuda";
#endif
#ifdef ORTHOSHARD_HAVE_NCCL
  b += ", nccl";
#endif
  return b;
}

std::string version_string() { return fmt::format("orthoshard {} (backends: {})", ORTHOSHARD_VERSION, backends()); }

static std::string first_line(const char* s, int len) {
  std::string out(s, strnlen(s, static_cast<std::size_t>(len)));  // len may count the terminating NUL
  auto nl = out.find('\n');
  if (nl != std::string::npos) out.resize(nl);
  while (!out.empty() && (out.back() == ',' || out.back() == ' ')) out.pop_back();
  return out;
}

static std::string cuda_line() {
#ifdef ORTHOSHARD_HAVE_CUDA
  int rt = 0, drv = 0;
  cudaRuntimeGetVersion(&rt);
  std::string driver = cudaDriverGetVersion(&drv) == cudaSuccess && drv > 0
                           ? fmt::format("{}.{}", drv / 1000, (drv % 1000) / 10)
                           : std::string("none");
  return fmt::format("runtime {}.{}, driver {}", rt / 1000, (rt % 1000) / 10, driver);
#else
  return "not compiled (configure with -DORTHOSHARD_CUDA=ON)";
#endif
}

static std::string devices_line() {
#ifdef ORTHOSHARD_HAVE_CUDA
  int n = 0;
  cudaError_t err = cudaGetDeviceCount(&n);
  if (err != cudaSuccess || n == 0)
    return fmt::format("none ({})", err != cudaSuccess ? cudaGetErrorString(err) : "no device");
  std::string out = fmt::format("{}:", n);
  for (int i = 0; i < n; ++i) {
    cudaDeviceProp p{};
    if (cudaGetDeviceProperties(&p, i) == cudaSuccess)
      out += fmt::format(" [{}] {} (sm_{}{}, {:.1f} GiB)", i, p.name, p.major, p.minor,
                         static_cast<double>(p.totalGlobalMem) / (1 << 30));
  }
  return out;
#else
  return "none (CUDA backend not compiled)";
#endif
}

static std::string nccl_line() {
#ifdef ORTHOSHARD_HAVE_NCCL
  int v = 0;
  ncclGetVersion(&v);
  return fmt::format("{}.{}.{}", v / 10000, (v % 10000) / 100, v % 100);
#else
  return "not compiled";
#endif
}

int run_env() {
  char mpi_lib[MPI_MAX_LIBRARY_VERSION_STRING];
  int len = 0;
  MPI_Get_library_version(mpi_lib, &len);
  int mpi_major = 0, mpi_minor = 0;
  MPI_Get_version(&mpi_major, &mpi_minor);
  unsigned h_major = 0, h_minor = 0, h_rel = 0;
  H5get_libversion(&h_major, &h_minor, &h_rel);
#ifdef H5_HAVE_PARALLEL
  const char* h5_parallel = "parallel (MPI-IO)";
#else
  const char* h5_parallel = "serial";
#endif
  fmt::print("{}\n", version_string());
  fmt::print("  backends  : {}\n", backends());
  fmt::print("  mpi       : {} (MPI standard {}.{})\n", first_line(mpi_lib, len), mpi_major, mpi_minor);
  fmt::print("  hdf5      : {}.{}.{}, {}\n", h_major, h_minor, h_rel, h5_parallel);
  fmt::print("  blas      : {}, {} threads\n", openblas_get_config(), openblas_get_num_threads());
  fmt::print("  cuda      : {}\n", cuda_line());
  fmt::print("  nccl      : {}\n", nccl_line());
  fmt::print("  devices   : {}\n", devices_line());
  return 0;
}

}  // namespace orthoshard
