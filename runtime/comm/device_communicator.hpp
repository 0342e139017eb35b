// DeviceCommunicator: a Communicator whose buffers may live in GPU memory (the NCCL backend, and MPI through
// pinned host staging when several ranks share a GPU). Adds what ordering against GPU work needs.
#pragma once

#include "runtime/comm/communicator.hpp"

#include <cuda_runtime.h>

#include <cstdint>
#include <string>

namespace orthoshard {

struct DeviceCommOptions {
  double timeout_s = 600;  // runtime.comm_timeout_s: an op not complete after this long ends the job (0: never)
  // The GPU to use (< 0: pick_device from the communicator's local rank). Sub-communicators (hybrid sharding)
  // pass the device chosen for the world, since their local ranks differ from the world's.
  int device = -1;
};

// Bytes and ops moved since construction, for benchmarks and the trainer's summary.
struct DeviceCommStats {
  std::uint64_t ops = 0;
  std::uint64_t device_bytes = 0;  // payload of ops on device buffers
  std::uint64_t staged_bytes = 0;  // bytes copied between host and device to serve an op
};

class DeviceCommunicator : public Communicator {
 public:
  // The stream the caller's GPU work runs on: an op on device buffers starts after the work queued there
  // before the call, and work queued there after a blocking call (or a Request's wait()) sees its result.
  // Default: the legacy default stream (0).
  virtual void set_compute_stream(cudaStream_t stream) = 0;
  virtual cudaStream_t compute_stream() const = 0;
  virtual int device() const = 0;
  // The host waits until every op queued so far has completed.
  virtual void synchronize() = 0;
  virtual DeviceCommStats stats() const = 0;
};

// True when `p` is device (or managed) memory of any GPU; false for host memory, null, or without a driver.
bool is_device_pointer(const void* p);

}  // namespace orthoshard
