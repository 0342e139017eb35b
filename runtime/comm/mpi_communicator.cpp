// MPI backend: thin wrappers over MPI collectives, bf16 reductions in fp32 through custom MPI ops,
// mean as sum + scale, non-blocking variants through MPI_I* with their post-processing on completion.
#include "runtime/comm/mpi_communicator.hpp"

#include "runtime/checkpoint/dir_lock.hpp"
#include "runtime/comm/mpi_hang_guard.hpp"
#include "runtime/core/error.hpp"
#include "runtime/core/log.hpp"

#include <chrono>
#include <climits>
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <thread>
#include <vector>

namespace orthoshard {
namespace {

// Process-wide MPI objects created after MPI_Init and freed before MPI_Finalize.
MPI_Op g_bf16_sum = MPI_OP_NULL;
MPI_Op g_bf16_max = MPI_OP_NULL;
MPI_Comm g_error_comm = MPI_COMM_NULL;  // abort_job's agreement on who prints (used nowhere else)

void bf16_sum_fn(void* in, void* inout, int* len, MPI_Datatype*) {
  auto* a = static_cast<const bf16*>(in);
  auto* b = static_cast<bf16*>(inout);
  for (int i = 0; i < *len; ++i) b[i] = float_to_bf16(bf16_to_float(a[i]) + bf16_to_float(b[i]));
}

void bf16_max_fn(void* in, void* inout, int* len, MPI_Datatype*) {
  auto* a = static_cast<const bf16*>(in);
  auto* b = static_cast<bf16*>(inout);
  for (int i = 0; i < *len; ++i)
    if (bf16_to_float(a[i]) > bf16_to_float(b[i])) b[i] = a[i];
}

void check(int rc, const char* call) {
  if (rc == MPI_SUCCESS) return;
  char msg[MPI_MAX_ERROR_STRING];
  int len = 0;
  MPI_Error_string(rc, msg, &len);
  fail("{} failed: {}", call, std::string(msg, static_cast<std::size_t>(len)));
}

MPI_Datatype mpi_type(DType dt) {
  switch (dt) {
    case DType::F32: return MPI_FLOAT;
    case DType::BF16: return MPI_UINT16_T;
    case DType::F64: return MPI_DOUBLE;
    case DType::I32: return MPI_INT32_T;
    case DType::I64: return MPI_INT64_T;
    case DType::U8: return MPI_UINT8_T;
  }
  fail("no MPI type for dtype code {}", static_cast<int>(dt));
}

MPI_Op mpi_op(DType dt, ReduceOp op) {
  if (op == ReduceOp::Mean)
    OS_CHECK(is_floating(dt), "mean reduction of integer dtype {} is not defined", dtype_name(dt));
  if (dt == DType::BF16) return op == ReduceOp::Max ? g_bf16_max : g_bf16_sum;
  if (dt == DType::U8) OS_CHECK(op == ReduceOp::Max, "sum of u8 values would overflow; reduce as i32");
  return op == ReduceOp::Max ? MPI_MAX : MPI_SUM;
}

int as_int(std::size_t count, const char* call) {
  OS_CHECK(count <= static_cast<std::size_t>(INT_MAX), "{}: count {} exceeds the MPI limit of {} elements", call,
           count, INT_MAX);
  return static_cast<int>(count);
}

// Divide the reduced sum by the number of ranks (the mean), in the buffer's own precision.
void scale_mean(void* buf, std::size_t count, DType dt, int n) {
  switch (dt) {
    case DType::F32: {
      auto* p = static_cast<float*>(buf);
      const float d = static_cast<float>(n);
      for (std::size_t i = 0; i < count; ++i) p[i] /= d;
      break;
    }
    case DType::F64: {
      auto* p = static_cast<double*>(buf);
      for (std::size_t i = 0; i < count; ++i) p[i] /= n;
      break;
    }
    case DType::BF16: {
      auto* p = static_cast<bf16*>(buf);
      const float d = static_cast<float>(n);
      for (std::size_t i = 0; i < count; ++i) p[i] = float_to_bf16(bf16_to_float(p[i]) / d);
      break;
    }
    default: fail("mean reduction of integer dtype {} is not defined", dtype_name(dt));
  }
}

// Element displacements for variable-count collectives (blocks packed in rank order).
struct Layout {
  std::vector<int> counts, displs;
};
Layout make_layout(std::span<const std::size_t> counts, int nranks, const char* call) {
  OS_CHECK(counts.size() == static_cast<std::size_t>(nranks), "{}: {} counts given for {} ranks", call,
           counts.size(), nranks);
  Layout l;
  l.counts.resize(counts.size());
  l.displs.resize(counts.size());
  std::size_t off = 0;
  for (std::size_t i = 0; i < counts.size(); ++i) {
    l.counts[i] = as_int(counts[i], call);
    l.displs[i] = as_int(off, call);
    off += counts[i];
  }
  as_int(off, call);
  return l;
}

class MpiPending final : public PendingOp {
 public:
  MpiPending(const char* call, std::size_t bytes_sent) : bytes(bytes_sent), call_(call) {}
  MPI_Request req = MPI_REQUEST_NULL;
  std::function<void()> finish;  // post-processing once the data has arrived
  Layout send_layout, recv_layout;  // must outlive the request
  std::size_t bytes = 0;            // what this rank sends, for the hang message

  bool test() override {
    int done = 0;
    check(MPI_Test(&req, &done, MPI_STATUS_IGNORE), call_);
    if (done) complete();
    return done != 0;
  }
  void wait() override {
    const MpiHangGuard::Watch watch(call_, bytes);
    check(MPI_Wait(&req, MPI_STATUS_IGNORE), call_);
    complete();
  }

 private:
  void complete() {
    if (finish) {
      auto f = std::move(finish);
      finish = nullptr;
      f();
    }
  }
  const char* call_;
};

Request make_request(std::unique_ptr<MpiPending> p) { return Request(std::move(p)); }

}  // namespace

// ---------------- process lifetime ----------------

MpiRuntime::MpiRuntime(int* argc, char*** argv, bool thread_multiple) {
  int provided = 0;
  check(MPI_Init_thread(argc, argv, thread_multiple ? MPI_THREAD_MULTIPLE : MPI_THREAD_FUNNELED, &provided),
        "MPI_Init_thread");
  MPI_Comm_set_errhandler(MPI_COMM_WORLD, MPI_ERRORS_RETURN);
  check(MPI_Op_create(&bf16_sum_fn, 1, &g_bf16_sum), "MPI_Op_create(bf16 sum)");
  check(MPI_Op_create(&bf16_max_fn, 1, &g_bf16_max), "MPI_Op_create(bf16 max)");
  check(MPI_Comm_dup(MPI_COMM_WORLD, &g_error_comm), "MPI_Comm_dup");
  int r = 0, n = 1;
  MPI_Comm_rank(MPI_COMM_WORLD, &r);
  MPI_Comm_size(MPI_COMM_WORLD, &n);
  log::set_rank(r, n);
}

MpiRuntime::~MpiRuntime() {
  if (!mpi_running()) return;
  MPI_Op_free(&g_bf16_sum);
  MPI_Op_free(&g_bf16_max);
  if (g_error_comm != MPI_COMM_NULL) MPI_Comm_free(&g_error_comm);
  MPI_Finalize();
}

std::unique_ptr<Communicator> MpiRuntime::world() const {
  MPI_Comm dup;
  check(MPI_Comm_dup(MPI_COMM_WORLD, &dup), "MPI_Comm_dup");
  return std::make_unique<MpiCommunicator>(dup, true);
}

bool mpi_running() {
  int init = 0, fin = 0;
  MPI_Initialized(&init);
  MPI_Finalized(&fin);
  return init && !fin;
}

// ---------------- communicator ----------------

MpiCommunicator::MpiCommunicator(MPI_Comm comm, bool owned) : comm_(comm), owned_(owned) {
  MPI_Comm_set_errhandler(comm_, MPI_ERRORS_RETURN);
  MPI_Comm_rank(comm_, &rank_);
  MPI_Comm_size(comm_, &size_);
  MPI_Comm node;
  check(MPI_Comm_split_type(comm_, MPI_COMM_TYPE_SHARED, rank_, MPI_INFO_NULL, &node), "MPI_Comm_split_type");
  MPI_Comm_rank(node, &local_rank_);
  MPI_Comm_size(node, &local_size_);
  MPI_Comm_free(&node);
}

MpiCommunicator::~MpiCommunicator() {
  if (owned_ && mpi_running()) MPI_Comm_free(&comm_);
}

std::unique_ptr<Communicator> MpiCommunicator::split(int color, int key) const {
  OS_CHECK(color >= 0, "split: color must be >= 0, got {}", color);
  MPI_Comm sub;
  check(MPI_Comm_split(comm_, color, key, &sub), "MPI_Comm_split");
  return std::make_unique<MpiCommunicator>(sub, true);
}

void MpiCommunicator::barrier() {
  const MpiHangGuard::Watch watch("MPI_Barrier", 0);
  check(MPI_Barrier(comm_), "MPI_Barrier");
}

void MpiCommunicator::broadcast(void* buf, std::size_t count, DType dt, int root) {
  // Chunked so that messages beyond 2^31 elements work too.
  const std::size_t chunk = static_cast<std::size_t>(INT_MAX) / 2;
  const MpiHangGuard::Watch watch("MPI_Bcast", count * dtype_size(dt));
  auto* p = static_cast<std::byte*>(buf);
  for (std::size_t off = 0; off < count || (count == 0 && off == 0); off += chunk) {
    const std::size_t c = std::min(chunk, count - off);
    check(MPI_Bcast(p + off * dtype_size(dt), static_cast<int>(c), mpi_type(dt), root, comm_), "MPI_Bcast");
    if (count == 0) break;
  }
}

void MpiCommunicator::all_reduce(const void* send, void* recv, std::size_t count, DType dt, ReduceOp op) {
  const MPI_Op mop = mpi_op(dt, op);
  const std::size_t chunk = static_cast<std::size_t>(INT_MAX) / 2;
  const std::size_t es = dtype_size(dt);
  const MpiHangGuard::Watch watch("MPI_Allreduce", count * es);
  for (std::size_t off = 0; off < count; off += chunk) {
    const std::size_t c = std::min(chunk, count - off);
    void* r = static_cast<std::byte*>(recv) + off * es;
    const void* s = send == recv ? MPI_IN_PLACE : static_cast<const std::byte*>(send) + off * es;
    check(MPI_Allreduce(s, r, static_cast<int>(c), mpi_type(dt), mop, comm_), "MPI_Allreduce");
  }
  if (op == ReduceOp::Mean) scale_mean(recv, count, dt, size_);
}

void MpiCommunicator::all_gather(const void* send, void* recv, std::size_t count, DType dt) {
  const int c = as_int(count, "MPI_Allgather");
  as_int(count * static_cast<std::size_t>(size_), "MPI_Allgather");
  const MpiHangGuard::Watch watch("MPI_Allgather", count * dtype_size(dt));
  check(MPI_Allgather(send, c, mpi_type(dt), recv, c, mpi_type(dt), comm_), "MPI_Allgather");
}

void MpiCommunicator::all_gather_v(const void* send, std::size_t send_count, void* recv,
                                   std::span<const std::size_t> recv_counts, DType dt) {
  Layout l = make_layout(recv_counts, size_, "MPI_Allgatherv");
  OS_CHECK(send_count == recv_counts[rank_], "all_gather_v: rank {} sends {} elements but recv_counts says {}",
           rank_, send_count, recv_counts[rank_]);
  const MpiHangGuard::Watch watch("MPI_Allgatherv", send_count * dtype_size(dt));
  check(MPI_Allgatherv(send, l.counts[rank_], mpi_type(dt), recv, l.counts.data(), l.displs.data(), mpi_type(dt),
                       comm_),
        "MPI_Allgatherv");
}

void MpiCommunicator::reduce_scatter(const void* send, void* recv, std::size_t count, DType dt, ReduceOp op) {
  const int c = as_int(count, "MPI_Reduce_scatter_block");
  const MpiHangGuard::Watch watch("MPI_Reduce_scatter_block", count * static_cast<std::size_t>(size_) * dtype_size(dt));
  check(MPI_Reduce_scatter_block(send, recv, c, mpi_type(dt), mpi_op(dt, op), comm_), "MPI_Reduce_scatter_block");
  if (op == ReduceOp::Mean) scale_mean(recv, count, dt, size_);
}

void MpiCommunicator::all_to_all(const void* send, void* recv, std::size_t count, DType dt) {
  const int c = as_int(count, "MPI_Alltoall");
  as_int(count * static_cast<std::size_t>(size_), "MPI_Alltoall");
  const MpiHangGuard::Watch watch("MPI_Alltoall", count * static_cast<std::size_t>(size_) * dtype_size(dt));
  check(MPI_Alltoall(send, c, mpi_type(dt), recv, c, mpi_type(dt), comm_), "MPI_Alltoall");
}

void MpiCommunicator::all_to_all_v(const void* send, std::span<const std::size_t> send_counts, void* recv,
                                   std::span<const std::size_t> recv_counts, DType dt) {
  Layout s = make_layout(send_counts, size_, "MPI_Alltoallv");
  Layout r = make_layout(recv_counts, size_, "MPI_Alltoallv");
  const MpiHangGuard::Watch watch("MPI_Alltoallv", static_cast<std::size_t>(s.displs.back() + s.counts.back()) * dtype_size(dt));
  check(MPI_Alltoallv(send, s.counts.data(), s.displs.data(), mpi_type(dt), recv, r.counts.data(), r.displs.data(),
                      mpi_type(dt), comm_),
        "MPI_Alltoallv");
}

void MpiCommunicator::send(const void* buf, std::size_t count, DType dt, int dest, int tag) {
  const MpiHangGuard::Watch watch("MPI_Send", count * dtype_size(dt));
  check(MPI_Send(buf, as_int(count, "MPI_Send"), mpi_type(dt), dest, tag, comm_), "MPI_Send");
}

void MpiCommunicator::recv(void* buf, std::size_t count, DType dt, int src, int tag) {
  const MpiHangGuard::Watch watch("MPI_Recv", count * dtype_size(dt));
  check(MPI_Recv(buf, as_int(count, "MPI_Recv"), mpi_type(dt), src, tag, comm_, MPI_STATUS_IGNORE), "MPI_Recv");
}

// ---------------- non-blocking ----------------

Request MpiCommunicator::broadcast_async(void* buf, std::size_t count, DType dt, int root) {
  auto p = std::make_unique<MpiPending>("MPI_Ibcast", count * dtype_size(dt));
  check(MPI_Ibcast(buf, as_int(count, "MPI_Ibcast"), mpi_type(dt), root, comm_, &p->req), "MPI_Ibcast");
  return make_request(std::move(p));
}

Request MpiCommunicator::all_reduce_async(const void* send, void* recv, std::size_t count, DType dt, ReduceOp op) {
  auto p = std::make_unique<MpiPending>("MPI_Iallreduce", count * dtype_size(dt));
  const void* s = send == recv ? MPI_IN_PLACE : send;
  check(MPI_Iallreduce(s, recv, as_int(count, "MPI_Iallreduce"), mpi_type(dt), mpi_op(dt, op), comm_, &p->req),
        "MPI_Iallreduce");
  if (op == ReduceOp::Mean) p->finish = [recv, count, dt, n = size_] { scale_mean(recv, count, dt, n); };
  return make_request(std::move(p));
}

Request MpiCommunicator::all_gather_async(const void* send, void* recv, std::size_t count, DType dt) {
  auto p = std::make_unique<MpiPending>("MPI_Iallgather", count * dtype_size(dt));
  const int c = as_int(count, "MPI_Iallgather");
  as_int(count * static_cast<std::size_t>(size_), "MPI_Iallgather");
  check(MPI_Iallgather(send, c, mpi_type(dt), recv, c, mpi_type(dt), comm_, &p->req), "MPI_Iallgather");
  return make_request(std::move(p));
}

Request MpiCommunicator::all_gather_v_async(const void* send, std::size_t send_count, void* recv,
                                            std::span<const std::size_t> recv_counts, DType dt) {
  auto p = std::make_unique<MpiPending>("MPI_Iallgatherv", send_count * dtype_size(dt));
  p->recv_layout = make_layout(recv_counts, size_, "MPI_Iallgatherv");
  OS_CHECK(send_count == recv_counts[rank_], "all_gather_v: rank {} sends {} elements but recv_counts says {}",
           rank_, send_count, recv_counts[rank_]);
  const Layout& l = p->recv_layout;
  check(MPI_Iallgatherv(send, l.counts[rank_], mpi_type(dt), recv, l.counts.data(), l.displs.data(), mpi_type(dt),
                        comm_, &p->req),
        "MPI_Iallgatherv");
  return make_request(std::move(p));
}

Request MpiCommunicator::reduce_scatter_async(const void* send, void* recv, std::size_t count, DType dt,
                                              ReduceOp op) {
  auto p = std::make_unique<MpiPending>("MPI_Ireduce_scatter_block", count * dtype_size(dt));
  check(MPI_Ireduce_scatter_block(send, recv, as_int(count, "MPI_Ireduce_scatter_block"), mpi_type(dt),
                                  mpi_op(dt, op), comm_, &p->req),
        "MPI_Ireduce_scatter_block");
  if (op == ReduceOp::Mean) p->finish = [recv, count, dt, n = size_] { scale_mean(recv, count, dt, n); };
  return make_request(std::move(p));
}

Request MpiCommunicator::all_to_all_async(const void* send, void* recv, std::size_t count, DType dt) {
  auto p = std::make_unique<MpiPending>("MPI_Ialltoall", count * dtype_size(dt));
  const int c = as_int(count, "MPI_Ialltoall");
  as_int(count * static_cast<std::size_t>(size_), "MPI_Ialltoall");
  check(MPI_Ialltoall(send, c, mpi_type(dt), recv, c, mpi_type(dt), comm_, &p->req), "MPI_Ialltoall");
  return make_request(std::move(p));
}

Request MpiCommunicator::all_to_all_v_async(const void* send, std::span<const std::size_t> send_counts, void* recv,
                                            std::span<const std::size_t> recv_counts, DType dt) {
  auto p = std::make_unique<MpiPending>("MPI_Ialltoallv", std::size_t{0});
  p->send_layout = make_layout(send_counts, size_, "MPI_Ialltoallv");
  p->recv_layout = make_layout(recv_counts, size_, "MPI_Ialltoallv");
  check(MPI_Ialltoallv(send, p->send_layout.counts.data(), p->send_layout.displs.data(), mpi_type(dt), recv,
                       p->recv_layout.counts.data(), p->recv_layout.displs.data(), mpi_type(dt), comm_, &p->req),
        "MPI_Ialltoallv");
  return make_request(std::move(p));
}

Request MpiCommunicator::send_async(const void* buf, std::size_t count, DType dt, int dest, int tag) {
  auto p = std::make_unique<MpiPending>("MPI_Isend", count * dtype_size(dt));
  check(MPI_Isend(buf, as_int(count, "MPI_Isend"), mpi_type(dt), dest, tag, comm_, &p->req), "MPI_Isend");
  return make_request(std::move(p));
}

Request MpiCommunicator::recv_async(void* buf, std::size_t count, DType dt, int src, int tag) {
  auto p = std::make_unique<MpiPending>("MPI_Irecv", count * dtype_size(dt));
  check(MPI_Irecv(buf, as_int(count, "MPI_Irecv"), mpi_type(dt), src, tag, comm_, &p->req), "MPI_Irecv");
  return make_request(std::move(p));
}

// ---------------- abort path ----------------

void abort_job(const std::string& message, int code) {
  release_dir_locks_at_exit();
  int n = 1, me = 0;
  if (mpi_running()) {
    MPI_Comm_size(MPI_COMM_WORLD, &n);
    MPI_Comm_rank(MPI_COMM_WORLD, &me);
  }
  // Ranks that fail together (a bad configuration, the same missing file) print one line between them: they find
  // each other within half a second on abort_job's own communicator, and the lowest prints. A rank failing alone
  // prints its own.
  bool print = true;
  if (n > 1 && g_error_comm != MPI_COMM_NULL) {
    int lowest = me;
    MPI_Request req = MPI_REQUEST_NULL;
    if (MPI_Iallreduce(&me, &lowest, 1, MPI_INT, MPI_MIN, g_error_comm, &req) == MPI_SUCCESS) {
      int done = 0;
      const auto until = std::chrono::steady_clock::now() + std::chrono::milliseconds(500);
      while (!done && std::chrono::steady_clock::now() < until) {
        MPI_Test(&req, &done, MPI_STATUS_IGNORE);
        if (!done) std::this_thread::sleep_for(std::chrono::milliseconds(2));
      }
      print = !done || lowest == me;
    }
  }
  if (print) log::error_all("{}", message);
  std::fflush(stdout);
  std::fflush(stderr);
  if (mpi_running()) {
    if (n > 1) {
      std::this_thread::sleep_for(std::chrono::milliseconds(200));  // the printing rank's line goes out first
      MPI_Abort(MPI_COMM_WORLD, code);
    }
    MPI_Finalize();
  }
  std::exit(code);
}

int run_guarded(const std::function<int()>& body) {
  try {
    return body();
  } catch (const UsageError& e) {
    abort_job(e.what(), 2);
  } catch (const std::exception& e) {
    abort_job(e.what(), 1);
  } catch (...) {
    abort_job("unknown exception", 1);
  }
}

}  // namespace orthoshard
