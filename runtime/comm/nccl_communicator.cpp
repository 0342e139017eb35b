// NCCL backend (see the header for the ordering contract). Point-to-point _async ops are collected and launched
// together in one NCCL group at the first wait()/test() or the next other op, so that a ring of recv_async +
// send_async completes as it does with MPI (separately queued NCCL sends and receives would wait on each other).
#include "runtime/comm/nccl_communicator.hpp"

#include "runtime/core/error.hpp"
#include "runtime/core/log.hpp"
#include "runtime/comm/device_comm.hpp"
#include "runtime/cuda/check.hpp"
#include "runtime/cuda/device.hpp"

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <numeric>
#include <thread>
#include <vector>

namespace orthoshard {
namespace {

void check_nccl(ncclResult_t r, const char* call, ncclComm_t comm) {
  if (r == ncclSuccess || r == ncclInProgress) return;
  const char* last = comm ? ncclGetLastError(comm) : nullptr;
  fail("{} failed: {}{}{}", call, ncclGetErrorString(r), last && *last ? ": " : "", last ? last : "");
}
#define OS_NCCL_CHECK(call) check_nccl((call), #call, comm_)

ncclDataType_t nccl_type(DType dt) {
  switch (dt) {
    case DType::F32: return ncclFloat32;
    case DType::BF16: return ncclBfloat16;
    case DType::F64: return ncclFloat64;
    case DType::I32: return ncclInt32;
    case DType::I64: return ncclInt64;
    case DType::U8: return ncclUint8;
  }
  fail("no NCCL type for dtype code {}", static_cast<int>(dt));
}

// nranks: the communicator's size. On one rank a mean is the value itself, so it runs as ncclSum (a plain copy):
// NCCL before 2.29.7 runs a one-rank ncclAvg through a scaling kernel that leaves the last elements of the
// output unwritten when the count does not split evenly over its blocks (NVIDIA/nccl issue 1950; seen here on
// NCCL 2.28.9, an H100: a one-rank f32 reduce-scatter into a separate buffer kept stale gradient elements).
ncclRedOp_t nccl_op(DType dt, ReduceOp op, int nranks) {
  if (op == ReduceOp::Mean) {
    OS_CHECK(is_floating(dt), "mean reduction of integer dtype {} is not defined", dtype_name(dt));
    return nranks == 1 ? ncclSum : ncclAvg;
  }
  if (dt == DType::U8) OS_CHECK(op == ReduceOp::Max, "sum of u8 values would overflow; reduce as i32");
  return op == ReduceOp::Max ? ncclMax : ncclSum;
}

std::size_t total(std::span<const std::size_t> counts) {
  return std::accumulate(counts.begin(), counts.end(), std::size_t{0});
}

std::vector<std::size_t> offsets(std::span<const std::size_t> counts, int n, const char* call) {
  OS_CHECK(counts.size() == static_cast<std::size_t>(n), "{}: {} counts given for {} ranks", call, counts.size(), n);
  std::vector<std::size_t> off(counts.size(), 0);
  for (std::size_t i = 1; i < counts.size(); ++i) off[i] = off[i - 1] + counts[i - 1];
  return off;
}

const std::byte* cbyte(const void* p, std::size_t elems, DType dt) {
  return static_cast<const std::byte*>(p) + elems * dtype_size(dt);
}
std::byte* byte(void* p, std::size_t elems, DType dt) { return static_cast<std::byte*>(p) + elems * dtype_size(dt); }

std::string mib(std::size_t bytes) { return fmt::format("{:.2f} MiB", static_cast<double>(bytes) / (1 << 20)); }

// A CUDA event shared by the watchdog and the Request of one op.
struct DoneEvent {
  cudaEvent_t e = nullptr;
  DoneEvent() { OS_CUDA_CHECK(cudaEventCreateWithFlags(&e, cudaEventDisableTiming)); }
  ~DoneEvent() {
    if (e) (void)cudaEventDestroy(e);
  }
  DoneEvent(const DoneEvent&) = delete;
  DoneEvent& operator=(const DoneEvent&) = delete;
  bool done() const { return cudaEventQuery(e) != cudaErrorNotReady; }
};

class NcclPending final : public PendingOp {
 public:
  NcclPending(std::shared_ptr<DoneEvent> done, cudaStream_t compute) : done_(std::move(done)), compute_(compute) {}
  bool test() override { return done_->done(); }
  void wait() override { OS_CUDA_CHECK(cudaStreamWaitEvent(compute_, done_->e, 0)); }

 private:
  std::shared_ptr<DoneEvent> done_;
  cudaStream_t compute_;
};

}  // namespace

// Device scratch for host buffers; grows, never shrinks.
struct NcclCommunicator::Scratch {
  void* send = nullptr;
  void* recv = nullptr;
  std::size_t send_bytes = 0, recv_bytes = 0;
  static void* grow(void*& p, std::size_t& have, std::size_t want, cudaStream_t stream) {
    if (want > have) {
      OS_CUDA_CHECK(cudaStreamSynchronize(stream));  // earlier ops may still read the old buffer
      if (p) OS_CUDA_CHECK(cudaFree(p));
      p = nullptr;
      have = std::max(want, have * 2);
      OS_CUDA_CHECK(cudaMalloc(&p, have));
    }
    return p;
  }
  ~Scratch() {
    if (send) (void)cudaFree(send);
    if (recv) (void)cudaFree(recv);
  }
};

// Point-to-point ops waiting to be launched as one group.
struct NcclCommunicator::Launch {
  struct P2P {
    bool is_send;
    void* buf;
    std::size_t count;
    DType dt;
    int peer;
  };
  std::vector<P2P> ops;
  // Per op's Request: set at launch (launched flag, the group's completion event).
  std::vector<std::pair<std::shared_ptr<bool>, std::shared_ptr<std::shared_ptr<DoneEvent>>>> hooks;
  bool launched = false;
};

NcclCommunicator::NcclCommunicator(std::unique_ptr<MpiCommunicator> mpi, int device, DeviceCommOptions opt)
    : mpi_(std::move(mpi)), device_(device), opt_(opt), scratch_(std::make_unique<Scratch>()) {
  OS_CHECK(mpi_ != nullptr, "NcclCommunicator: no MPI communicator to bootstrap from");
  const int me = mpi_->rank(), n = mpi_->size();
  OS_CUDA_CHECK(cudaSetDevice(device_));

  // NCCL cannot run two ranks on one GPU: find out before it hangs or fails obscurely.
  if (const auto [a, b] = ranks_sharing_a_gpu(*mpi_, device_); a >= 0)
    throw UsageError(fmt::format(
        "runtime.comm = nccl: ranks {} and {} share one GPU ({}); NCCL needs one GPU per rank: start at most "
        "one rank per GPU, or use --runtime.comm=mpi or auto (host staging)",
        a, b, cuda::device_description(device_)));

  watchdog_ = std::make_unique<CommWatchdog>(fmt::format("nccl (rank {} of {})", me, n), opt_.timeout_s,
                                             [this](const std::string& message) {
                                               log::error_all("{}", message);
                                               std::fflush(stdout);
                                               std::fflush(stderr);
                                               // ncclCommAbort may itself wait on a dead peer: exit regardless.
                                               std::thread([] {
                                                 std::this_thread::sleep_for(std::chrono::seconds(5));
                                                 std::_Exit(3);
                                               }).detach();
                                               if (comm_) ncclCommAbort(comm_);
                                               std::_Exit(3);
                                             });

  const std::uint64_t init = watchdog_->watch("initialisation (unique id broadcast, ncclCommInitRank)");
  // Rank 0 makes the id; a flag byte tells the others whether that worked, so nobody waits on a failed rank 0.
  std::vector<std::uint8_t> boot(sizeof(ncclUniqueId) + 1, 0);
  std::string why;
  if (me == 0) {
    ncclUniqueId id;
    const ncclResult_t r = ncclGetUniqueId(&id);
    if (r == ncclSuccess) {
      std::memcpy(boot.data(), &id, sizeof id);
      boot.back() = 1;
    } else {
      why = ncclGetErrorString(r);
    }
  }
  mpi_->broadcast(boot.data(), boot.size(), DType::U8, 0);
  OS_CHECK(boot.back() == 1, "nccl: ncclGetUniqueId failed on rank 0{}{}", why.empty() ? "" : ": ", why);
  ncclUniqueId id;
  std::memcpy(&id, boot.data(), sizeof id);

  int lo = 0, hi = 0;
  OS_CUDA_CHECK(cudaDeviceGetStreamPriorityRange(&lo, &hi));
  OS_CUDA_CHECK(cudaStreamCreateWithPriority(&stream_, cudaStreamNonBlocking, hi));
  OS_CUDA_CHECK(cudaEventCreateWithFlags(&ready_, cudaEventDisableTiming));
  OS_NCCL_CHECK(ncclCommInitRank(&comm_, n, id, me));
  watchdog_->forget(init);
  // The watchdog copies the check for each poll: the flag lives behind a shared pointer so the device is set
  // once (only the watchdog thread runs the check).
  watchdog_->set_health_check([this, me, selected = std::make_shared<bool>(false)]() -> std::string {
    if (!*selected) {  // the watchdog thread queries our events: on our GPU, not a new context on GPU 0
      if (cudaSetDevice(device_) != cudaSuccess) return fmt::format("nccl (rank {}): cudaSetDevice({}) failed", me, device_);
      *selected = true;
    }
    ncclResult_t async = ncclSuccess;
    if (ncclCommGetAsyncError(comm_, &async) != ncclSuccess) return fmt::format("nccl (rank {}): ncclCommGetAsyncError failed", me);
    if (async == ncclSuccess || async == ncclInProgress) return {};
    const char* last = ncclGetLastError(comm_);
    return fmt::format("nccl (rank {}): asynchronous error {}{}{}; aborting the job", me, ncclGetErrorString(async),
                       last && *last ? ": " : "", last ? last : "");
  });
}

NcclCommunicator::~NcclCommunicator() {
  try {
    synchronize();
  } catch (const std::exception& e) {
    log::error_all("nccl: ops still in flight failed at shutdown: {}", e.what());
  }
  watchdog_.reset();
  if (comm_) ncclCommDestroy(comm_);
  scratch_.reset();
  if (ready_) (void)cudaEventDestroy(ready_);
  if (stream_) (void)cudaStreamDestroy(stream_);
}

std::unique_ptr<Communicator> NcclCommunicator::split(int color, int key) const {
  std::unique_ptr<Communicator> sub = mpi_->split(color, key);
  auto* m = dynamic_cast<MpiCommunicator*>(sub.get());
  OS_CHECK(m != nullptr, "NcclCommunicator::split: MPI split returned a {} communicator", sub->backend());
  sub.release();
  auto child = std::make_unique<NcclCommunicator>(std::unique_ptr<MpiCommunicator>(m), device_, opt_);
  child->set_compute_stream(compute_);
  return child;
}

void NcclCommunicator::synchronize() {
  if (pending_ && !pending_->ops.empty()) flush_p2p();
  if (stream_) OS_CUDA_CHECK(cudaStreamSynchronize(stream_));  // the watchdog guards this wait
}

template <typename F>
Request NcclCommunicator::run(const char* what, const void* send, std::size_t send_bytes, void* recv,
                              std::size_t recv_bytes, bool in_recv, bool async, F&& launch) {
  if (pending_ && !pending_->ops.empty()) flush_p2p();
  // Nothing to move on this rank (every rank agrees for the uniform collectives; for the variable-count ones the
  // peers expect nothing from or for this rank either).
  if (send_bytes == 0 && recv_bytes == 0) return {};
  const bool host_send = send_bytes > 0 && !is_device_pointer(send);
  const bool host_recv = recv_bytes > 0 && !is_device_pointer(recv);
  const bool host = host_send || host_recv;
  ++stats_.ops;
  stats_.device_bytes += std::max(send_bytes, recv_bytes);

  OS_CUDA_CHECK(cudaEventRecord(ready_, compute_));
  OS_CUDA_CHECK(cudaStreamWaitEvent(stream_, ready_, 0));
  const bool in_place = send == recv;
  void* drecv = recv;
  const void* dsend = send;
  if (host_recv) {
    drecv = Scratch::grow(scratch_->recv, scratch_->recv_bytes, recv_bytes, stream_);
    if (in_recv || in_place) {
      OS_CUDA_CHECK(cudaMemcpyAsync(drecv, recv, recv_bytes, cudaMemcpyHostToDevice, stream_));
      stats_.staged_bytes += recv_bytes;
    }
  }
  if (in_place) {
    dsend = drecv;
  } else if (host_send) {
    void* d = Scratch::grow(scratch_->send, scratch_->send_bytes, send_bytes, stream_);
    OS_CUDA_CHECK(cudaMemcpyAsync(d, send, send_bytes, cudaMemcpyHostToDevice, stream_));
    stats_.staged_bytes += send_bytes;
    dsend = d;
  }
  launch(dsend, drecv, stream_);
  // Watched from here: the copy back into pageable host memory below blocks until the op is done.
  auto done = std::make_shared<DoneEvent>();
  OS_CUDA_CHECK(cudaEventRecord(done->e, stream_));
  watchdog_->watch(fmt::format("{} of {}", what, mib(std::max(send_bytes, recv_bytes))),
                   [done] { return done->done(); });
  if (host) {
    OS_CUDA_CHECK(cudaEventSynchronize(done->e));  // host buffers: complete on return (the watchdog guards this)
    if (host_recv) {
      OS_CUDA_CHECK(cudaMemcpyAsync(recv, drecv, recv_bytes, cudaMemcpyDeviceToHost, stream_));
      OS_CUDA_CHECK(cudaStreamSynchronize(stream_));
      stats_.staged_bytes += recv_bytes;
    }
    return {};
  }
  if (!async) {
    OS_CUDA_CHECK(cudaStreamWaitEvent(compute_, done->e, 0));
    return {};
  }
  return Request(std::make_unique<NcclPending>(std::move(done), compute_));
}

// ---------------- collectives ----------------

void NcclCommunicator::barrier() {
  std::int32_t one = 1;
  all_reduce(&one, &one, 1, DType::I32, ReduceOp::Sum);  // host buffer: returns once every rank got here
}

void NcclCommunicator::broadcast(void* buf, std::size_t count, DType dt, int root) {
  Request r = broadcast_async(buf, count, dt, root);
  r.wait();
}

Request NcclCommunicator::broadcast_async(void* buf, std::size_t count, DType dt, int root) {
  const std::size_t b = count * dtype_size(dt);
  return run("broadcast", buf, b, buf, b, true, true, [&](const void* s, void* r, cudaStream_t st) {
    OS_NCCL_CHECK(ncclBroadcast(s, r, count, nccl_type(dt), root, comm_, st));
  });
}

void NcclCommunicator::all_reduce(const void* send, void* recv, std::size_t count, DType dt, ReduceOp op) {
  const std::size_t b = count * dtype_size(dt);
  run("all_reduce", send, b, recv, b, false, false, [&](const void* s, void* r, cudaStream_t st) {
    OS_NCCL_CHECK(ncclAllReduce(s, r, count, nccl_type(dt), nccl_op(dt, op, size()), comm_, st));
  });
}

Request NcclCommunicator::all_reduce_async(const void* send, void* recv, std::size_t count, DType dt, ReduceOp op) {
  const std::size_t b = count * dtype_size(dt);
  return run("all_reduce", send, b, recv, b, false, true, [&](const void* s, void* r, cudaStream_t st) {
    OS_NCCL_CHECK(ncclAllReduce(s, r, count, nccl_type(dt), nccl_op(dt, op, size()), comm_, st));
  });
}

void NcclCommunicator::all_gather(const void* send, void* recv, std::size_t count, DType dt) {
  Request r = all_gather_async(send, recv, count, dt);
  r.wait();
}

Request NcclCommunicator::all_gather_async(const void* send, void* recv, std::size_t count, DType dt) {
  const std::size_t es = dtype_size(dt), n = static_cast<std::size_t>(size());
  return run("all_gather", send, count * es, recv, n * count * es, false, true,
             [&](const void* s, void* r, cudaStream_t st) {
               OS_NCCL_CHECK(ncclAllGather(s, r, count, nccl_type(dt), comm_, st));
             });
}

void NcclCommunicator::all_gather_v(const void* send, std::size_t send_count, void* recv,
                                    std::span<const std::size_t> recv_counts, DType dt) {
  Request r = all_gather_v_async(send, send_count, recv, recv_counts, dt);
  r.wait();
}

Request NcclCommunicator::all_gather_v_async(const void* send, std::size_t send_count, void* recv,
                                             std::span<const std::size_t> recv_counts, DType dt) {
  const std::vector<std::size_t> off = offsets(recv_counts, size(), "all_gather_v");
  const int me = rank();
  OS_CHECK(send_count == recv_counts[me], "all_gather_v: rank {} sends {} elements but recv_counts says {}", me,
           send_count, recv_counts[me]);
  const std::size_t es = dtype_size(dt);
  // NCCL has no all-gather with counts: one broadcast per rank, grouped.
  return run("all_gather_v", send, send_count * es, recv, total(recv_counts) * es, false, true,
             [&](const void* s, void* r, cudaStream_t st) {
               OS_NCCL_CHECK(ncclGroupStart());
               for (int p = 0; p < size(); ++p) {
                 if (recv_counts[p] == 0) continue;
                 void* dst = byte(r, off[p], dt);
                 OS_NCCL_CHECK(ncclBroadcast(p == me ? s : dst, dst, recv_counts[p], nccl_type(dt), p, comm_, st));
               }
               OS_NCCL_CHECK(ncclGroupEnd());
             });
}

void NcclCommunicator::reduce_scatter(const void* send, void* recv, std::size_t count, DType dt, ReduceOp op) {
  Request r = reduce_scatter_async(send, recv, count, dt, op);
  r.wait();
}

Request NcclCommunicator::reduce_scatter_async(const void* send, void* recv, std::size_t count, DType dt,
                                               ReduceOp op) {
  const std::size_t es = dtype_size(dt), n = static_cast<std::size_t>(size());
  return run("reduce_scatter", send, n * count * es, recv, count * es, false, true,
             [&](const void* s, void* r, cudaStream_t st) {
               OS_NCCL_CHECK(ncclReduceScatter(s, r, count, nccl_type(dt), nccl_op(dt, op, size()), comm_, st));
             });
}

void NcclCommunicator::all_to_all(const void* send, void* recv, std::size_t count, DType dt) {
  Request r = all_to_all_async(send, recv, count, dt);
  r.wait();
}

Request NcclCommunicator::all_to_all_async(const void* send, void* recv, std::size_t count, DType dt) {
  const std::vector<std::size_t> counts(static_cast<std::size_t>(size()), count);
  return all_to_all_v_async(send, counts, recv, counts, dt);
}

void NcclCommunicator::all_to_all_v(const void* send, std::span<const std::size_t> send_counts, void* recv,
                                    std::span<const std::size_t> recv_counts, DType dt) {
  Request r = all_to_all_v_async(send, send_counts, recv, recv_counts, dt);
  r.wait();
}

Request NcclCommunicator::all_to_all_v_async(const void* send, std::span<const std::size_t> send_counts, void* recv,
                                             std::span<const std::size_t> recv_counts, DType dt) {
  const std::vector<std::size_t> so = offsets(send_counts, size(), "all_to_all_v");
  const std::vector<std::size_t> ro = offsets(recv_counts, size(), "all_to_all_v");
  const int me = rank();
  OS_CHECK(send_counts[me] == recv_counts[me], "all_to_all_v: rank {} sends itself {} elements but expects {}", me,
           send_counts[me], recv_counts[me]);
  OS_CHECK(send != recv || total(send_counts) == 0, "all_to_all_v: send and recv must be different buffers");
  const std::size_t es = dtype_size(dt);
  return run("all_to_all_v", send, total(send_counts) * es, recv, total(recv_counts) * es, false, true,
             [&](const void* s, void* r, cudaStream_t st) {
               OS_NCCL_CHECK(ncclGroupStart());
               for (int p = 0; p < size(); ++p) {
                 if (p == me) continue;
                 if (send_counts[p] > 0)
                   OS_NCCL_CHECK(ncclSend(cbyte(s, so[p], dt), send_counts[p], nccl_type(dt), p, comm_, st));
                 if (recv_counts[p] > 0)
                   OS_NCCL_CHECK(ncclRecv(byte(r, ro[p], dt), recv_counts[p], nccl_type(dt), p, comm_, st));
               }
               OS_NCCL_CHECK(ncclGroupEnd());
               if (send_counts[me] > 0)
                 OS_CUDA_CHECK(cudaMemcpyAsync(byte(r, ro[me], dt), cbyte(s, so[me], dt), send_counts[me] * es,
                                               cudaMemcpyDeviceToDevice, st));
             });
}

// ---------------- point to point ----------------

namespace {
void check_tag(int tag) {
  OS_CHECK(tag == 0, "nccl: send/recv with tag {}: NCCL has no message tags (messages between two ranks arrive in "
           "order); use tag 0", tag);
}
}  // namespace

// Blocking send/recv join the deferred point-to-point ops (so send_async(next) + recv(prev) completes, as
// with MPI), then wait for the group.
void NcclCommunicator::send(const void* buf, std::size_t count, DType dt, int dest, int tag) {
  Request r = p2p_async(true, const_cast<void*>(buf), count, dt, dest, tag);
  r.wait();
}

void NcclCommunicator::recv(void* buf, std::size_t count, DType dt, int src, int tag) {
  Request r = p2p_async(false, buf, count, dt, src, tag);
  r.wait();
}

namespace {
// The Request of a deferred point-to-point op: launching the group happens at the first wait()/test().
class P2PPending final : public PendingOp {
 public:
  P2PPending(std::function<void()> flush, std::shared_ptr<bool> launched, std::shared_ptr<std::shared_ptr<DoneEvent>> done,
             std::function<void()> after, cudaStream_t compute)
      : flush_(std::move(flush)), launched_(std::move(launched)), done_(std::move(done)), after_(std::move(after)),
        compute_(compute) {}
  bool test() override {
    if (!*launched_) flush_();
    check_launched();
    if (!(*done_)->done()) return false;
    finish();
    return true;
  }
  void wait() override {
    if (!*launched_) flush_();
    check_launched();
    if (after_) {
      OS_CUDA_CHECK(cudaEventSynchronize((*done_)->e));  // host buffer: copy out needs the data
      finish();
    } else {
      OS_CUDA_CHECK(cudaStreamWaitEvent(compute_, (*done_)->e, 0));
    }
  }

 private:
  void check_launched() const {
    OS_CHECK(*launched_ && *done_, "nccl: the point-to-point group of this request failed to launch");
  }
  void finish() {
    if (after_) {
      auto f = std::move(after_);
      after_ = nullptr;
      f();
    }
  }
  std::function<void()> flush_;
  std::shared_ptr<bool> launched_;
  std::shared_ptr<std::shared_ptr<DoneEvent>> done_;
  std::function<void()> after_;
  cudaStream_t compute_;
};
}  // namespace

Request NcclCommunicator::send_async(const void* buf, std::size_t count, DType dt, int dest, int tag) {
  return p2p_async(true, const_cast<void*>(buf), count, dt, dest, tag);
}

Request NcclCommunicator::recv_async(void* buf, std::size_t count, DType dt, int src, int tag) {
  return p2p_async(false, buf, count, dt, src, tag);
}

Request NcclCommunicator::p2p_async(bool is_send, void* buf, std::size_t count, DType dt, int peer, int tag) {
  check_tag(tag);
  const std::size_t bytes = count * dtype_size(dt);
  if (!pending_ || pending_->launched) pending_ = std::make_shared<Launch>();
  ++stats_.ops;
  stats_.device_bytes += bytes;
  // Host buffers get their own device copy (kept alive by the Request) and are served on wait().
  std::function<void()> after;
  void* dbuf = buf;
  if (bytes > 0 && !is_device_pointer(buf)) {
    void* d = nullptr;
    OS_CUDA_CHECK(cudaMalloc(&d, bytes));
    auto holder = std::shared_ptr<void>(d, [](void* p) { (void)cudaFree(p); });
    if (is_send) OS_CUDA_CHECK(cudaMemcpyAsync(d, buf, bytes, cudaMemcpyHostToDevice, stream_));
    stats_.staged_bytes += bytes;
    dbuf = d;
    after = [holder, buf, bytes, is_send] {
      if (!is_send) OS_CUDA_CHECK(cudaMemcpy(buf, holder.get(), bytes, cudaMemcpyDeviceToHost));
    };
  }
  pending_->ops.push_back({is_send, dbuf, count, dt, peer});
  auto launched = std::make_shared<bool>(false);
  auto done = std::make_shared<std::shared_ptr<DoneEvent>>();
  pending_->hooks.push_back({launched, done});
  return Request(std::make_unique<P2PPending>([this] { flush_p2p(); }, launched, done, std::move(after), compute_));
}

void NcclCommunicator::flush_p2p() {
  if (!pending_ || pending_->launched || pending_->ops.empty()) return;
  auto batch = std::move(pending_);
  pending_.reset();
  batch->launched = true;
  OS_CUDA_CHECK(cudaEventRecord(ready_, compute_));
  OS_CUDA_CHECK(cudaStreamWaitEvent(stream_, ready_, 0));
  OS_NCCL_CHECK(ncclGroupStart());
  for (const auto& op : batch->ops) {
    if (op.count == 0) continue;
    if (op.is_send)
      OS_NCCL_CHECK(ncclSend(op.buf, op.count, nccl_type(op.dt), op.peer, comm_, stream_));
    else
      OS_NCCL_CHECK(ncclRecv(op.buf, op.count, nccl_type(op.dt), op.peer, comm_, stream_));
  }
  OS_NCCL_CHECK(ncclGroupEnd());
  auto done = std::make_shared<DoneEvent>();
  OS_CUDA_CHECK(cudaEventRecord(done->e, stream_));
  watchdog_->watch(fmt::format("{} point-to-point op(s)", batch->ops.size()), [done] { return done->done(); });
  for (auto& [launched, slot] : batch->hooks) {
    *slot = done;
    *launched = true;
  }
}

}  // namespace orthoshard
