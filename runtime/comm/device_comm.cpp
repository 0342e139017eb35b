// Device selection and the choice of GPU communicator.
#include "runtime/comm/device_comm.hpp"

#include "runtime/comm/staged_communicator.hpp"
#include "runtime/core/error.hpp"
#include "runtime/cuda/check.hpp"
#include "runtime/cuda/device.hpp"
#if ORTHOSHARD_HAVE_NCCL
#include "runtime/comm/nccl_communicator.hpp"
#endif

#include <cstring>
#include <vector>

namespace orthoshard {

int pick_device(int local_rank, int visible_devices) {
  OS_CHECK(visible_devices > 0, "pick_device: no visible GPU");
  return visible_devices == 1 ? 0 : local_rank % visible_devices;
}

std::pair<int, int> ranks_sharing_a_gpu(MpiCommunicator& comm, int device) {
  cudaDeviceProp prop{};
  OS_CUDA_CHECK(cudaGetDeviceProperties(&prop, device));
  const int n = comm.size();
  std::vector<std::uint8_t> uuids(16 * static_cast<std::size_t>(n));
  comm.all_gather(prop.uuid.bytes, uuids.data(), 16, DType::U8);
  for (int a = 0; a < n; ++a)
    for (int b = a + 1; b < n; ++b)
      if (std::memcmp(&uuids[16 * static_cast<std::size_t>(a)], &uuids[16 * static_cast<std::size_t>(b)], 16) == 0)
        return {a, b};
  return {-1, -1};
}

std::unique_ptr<DeviceCommunicator> make_device_communicator(const MpiCommunicator& world, DeviceCommKind kind,
                                                             DeviceCommOptions opt) {
  const cuda::DeviceQuery q = cuda::query_devices();
  // Every rank takes part in the same checks, so a rank without a GPU fails together with the others.
  const bool bad_device = q.count > 0 && opt.device >= q.count;
  const double none_here = q.count == 0 || bad_device ? 1.0 : 0.0;
  std::unique_ptr<Communicator> dup = world.split(0, world.rank());
  auto* mpi_raw = dynamic_cast<MpiCommunicator*>(dup.get());
  OS_CHECK(mpi_raw != nullptr, "make_device_communicator: MPI split returned a {} communicator", dup->backend());
  dup.release();
  std::unique_ptr<MpiCommunicator> mpi(mpi_raw);
  if (mpi->all_reduce_scalar(none_here, ReduceOp::Max) > 0) {
    if (q.count == 0)
      throw UsageError(fmt::format("runtime.backend = cuda: no CUDA device on this rank ({})", q.why_none));
    if (bad_device)
      throw UsageError(fmt::format("runtime.backend = cuda: GPU {} asked for, but this rank sees {}", opt.device,
                                   q.count));
    throw UsageError("runtime.backend = cuda: another rank of the job has no usable CUDA device");
  }
  const int device = opt.device >= 0 ? opt.device : pick_device(mpi->local_rank(), q.count);
  OS_CUDA_CHECK(cudaSetDevice(device));
  if (kind == DeviceCommKind::Auto) {
#if ORTHOSHARD_HAVE_NCCL
    kind = ranks_sharing_a_gpu(*mpi, device).first < 0 ? DeviceCommKind::Nccl : DeviceCommKind::MpiStaged;
#else
    kind = DeviceCommKind::MpiStaged;
#endif
  }
  if (kind == DeviceCommKind::MpiStaged) return std::make_unique<StagedCommunicator>(std::move(mpi), device);
#if ORTHOSHARD_HAVE_NCCL
  return std::make_unique<NcclCommunicator>(std::move(mpi), device, opt);
#else
  (void)opt;
  throw UsageError("runtime.comm = nccl: this build has no NCCL (CMake did not find nccl.h/libnccl); use "
                   "--runtime.comm=mpi");
#endif
}

}  // namespace orthoshard
