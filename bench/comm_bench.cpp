// Collective benchmark. Sizes are nccl-tests "size": all_reduce buffer, all_gather output,
// reduce_scatter input, all_to_all send buffer; busbw = algbw x 2(n-1)/n (all_reduce) or (n-1)/n (others).
#include "bench/comm_bench.hpp"

#include "bench/bench_json.hpp"

#include "runtime/comm/mpi_communicator.hpp"
#include "runtime/core/error.hpp"
#include "runtime/core/log.hpp"
#include "runtime/core/tensor.hpp"

#include <mpi.h>
#include <nlohmann/json.hpp>

#include <algorithm>
#include <chrono>
#include <cstring>
#include <functional>

namespace orthoshard {
namespace {

double now_s() { return MPI_Wtime(); }

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

// Mean seconds per call over `iters` calls, the slowest rank's (a collective is as slow as its slowest rank).
double time_calls(Communicator& comm, int iters, const std::function<void()>& call) {
  comm.barrier();
  const double t0 = now_s();
  for (int i = 0; i < iters; ++i) call();
  double dt = (now_s() - t0) / iters;
  return comm.all_reduce_scalar(dt, ReduceOp::Max);
}

double memcpy_gbps(std::size_t bytes) {
  auto a = aligned_host_alloc(bytes), b = aligned_host_alloc(bytes);
  std::memset(a.get(), 1, bytes);
  std::memset(b.get(), 0, bytes);
  std::vector<double> ts;
  for (int rep = 0; rep < 5; ++rep) {
    auto t0 = std::chrono::steady_clock::now();
    std::memcpy(b.get(), a.get(), bytes);
    ts.push_back(std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
  }
  return static_cast<double>(bytes) / median(ts) / 1e9;
}

struct OpSpec {
  double bus_factor;
  std::size_t send_elems, recv_elems;  // per rank
  std::function<void()> ours, raw;
};

}  // namespace

int run_comm_bench(Communicator& comm, const CommBenchOptions& opt) {
  auto* mpi = dynamic_cast<MpiCommunicator*>(&comm);
  OS_CHECK(mpi != nullptr, "bench comm: the raw-MPI comparison needs the MPI backend, got {}", comm.backend());
  OS_CHECK(opt.min_bytes > 0 && opt.min_bytes <= opt.max_bytes, "bench comm: need 0 < --min-bytes <= --max-bytes");
  for (const auto& op : opt.ops)
    if (op != "all_gather" && op != "reduce_scatter" && op != "all_reduce" && op != "all_to_all")
      throw UsageError("bench comm: unknown collective '" + op + "'");
  const int n = comm.size();
  const MPI_Comm raw = mpi->native();
  const std::size_t es = sizeof(float);

  // One pair of buffers sized for the largest case, reused by every size (first touch once).
  const std::size_t max_elems = std::max<std::size_t>(opt.max_bytes / es, static_cast<std::size_t>(n)) + n;
  Tensor sendbuf = Tensor::empty({static_cast<std::int64_t>(max_elems)}, DType::F32);
  Tensor recvbuf = Tensor::empty({static_cast<std::int64_t>(max_elems)}, DType::F32);
  std::fill_n(sendbuf.data<float>(), max_elems, 1.0f);
  recvbuf.fill_zero();
  float* s = sendbuf.data<float>();
  float* r = recvbuf.data<float>();

  const double mem_gbps = memcpy_gbps(std::min<std::size_t>(opt.max_bytes, 64u << 20));
  log::info("# orthoshard bench comm: {} ranks ({} backend), f32, {} per node", n, comm.backend(), comm.local_size());
  log::info("# memcpy bandwidth (rank 0, {} MiB): {:.2f} GB/s", std::min<std::size_t>(opt.max_bytes, 64u << 20) >> 20,
            mem_gbps);
  log::info("# busbw = algbw x 2(n-1)/n for all_reduce, x (n-1)/n for all_gather, reduce_scatter, all_to_all");
  log::info("# ratio = our busbw / raw MPI busbw on the same buffers (median of {} alternating repeats)",
            opt.repeats);
  log::info("{:>14} {:>12} {:>11} {:>10} {:>10} {:>11} {:>10} {:>7}", "op", "bytes", "time_us", "algbw", "busbw",
            "mpi_us", "mpi_busbw", "ratio");

  nlohmann::json rows = nlohmann::json::array();
  for (const auto& name : opt.ops) {
    for (std::size_t bytes = opt.min_bytes; bytes <= opt.max_bytes; bytes *= 2) {
      const std::size_t per = std::max<std::size_t>(1, bytes / es / static_cast<std::size_t>(n));
      const std::size_t total = per * static_cast<std::size_t>(n);
      const int ip = static_cast<int>(per), it = static_cast<int>(total);
      OpSpec spec;
      if (name == "all_reduce") {
        spec = {2.0 * (n - 1) / n, total, total, [&] { comm.all_reduce(s, r, total, DType::F32, ReduceOp::Sum); },
                [&] { MPI_Allreduce(s, r, it, MPI_FLOAT, MPI_SUM, raw); }};
      } else if (name == "all_gather") {
        spec = {1.0 * (n - 1) / n, per, total, [&] { comm.all_gather(s, r, per, DType::F32); },
                [&] { MPI_Allgather(s, ip, MPI_FLOAT, r, ip, MPI_FLOAT, raw); }};
      } else if (name == "reduce_scatter") {
        spec = {1.0 * (n - 1) / n, total, per, [&] { comm.reduce_scatter(s, r, per, DType::F32, ReduceOp::Sum); },
                [&] { MPI_Reduce_scatter_block(s, r, ip, MPI_FLOAT, MPI_SUM, raw); }};
      } else {
        spec = {1.0 * (n - 1) / n, total, total, [&] { comm.all_to_all(s, r, per, DType::F32); },
                [&] { MPI_Alltoall(s, ip, MPI_FLOAT, r, ip, MPI_FLOAT, raw); }};
      }
      // Check the result once before timing: rank k sends k + 1, so gathered and exchanged blocks hold k + 1
      // and sums hold n (n + 1) / 2 (exact in f32 for these n).
      std::fill_n(s, total, static_cast<float>(comm.rank() + 1));
      std::fill_n(r, total, -1.0f);
      spec.ours();
      const float sum = static_cast<float>(n * (n + 1) / 2);
      std::size_t bad = 0;
      for (std::size_t i = 0; i < spec.recv_elems; ++i) {
        const float want = (name == "all_reduce" || name == "reduce_scatter") ? sum : static_cast<float>(i / per + 1);
        bad += r[i] != want;
      }
      bad = static_cast<std::size_t>(comm.all_reduce_scalar(static_cast<double>(bad), ReduceOp::Sum));
      OS_CHECK(bad == 0, "bench comm: {} of {} bytes gave {} wrong elements", name, total * es, bad);
      const double size_bytes = static_cast<double>(total * es);
      // Pick the iteration count from one warm call so large sizes do not take minutes.
      for (int w = 0; w < opt.warmup; ++w) spec.ours();
      const double probe = time_calls(comm, 1, spec.raw);
      const int iters = std::clamp(static_cast<int>(0.05 / std::max(probe, 1e-9)), 1, opt.iters);
      std::vector<double> ours, raws;
      for (int rep = 0; rep < opt.repeats; ++rep) {
        ours.push_back(time_calls(comm, iters, spec.ours));
        raws.push_back(time_calls(comm, iters, spec.raw));
      }
      const double t = median(ours), t_raw = median(raws);
      const double algbw = size_bytes / t / 1e9, busbw = algbw * spec.bus_factor;
      const double raw_busbw = size_bytes / t_raw / 1e9 * spec.bus_factor;
      const double ratio = t_raw / t;
      log::info("{:>14} {:>12} {:>11.1f} {:>10.3f} {:>10.3f} {:>11.1f} {:>10.3f} {:>7.3f}", name, total * es, t * 1e6,
                algbw, busbw, t_raw * 1e6, raw_busbw, ratio);
      rows.push_back({{"op", name},         {"bytes", total * es},    {"ranks", n},
                      {"time_us", t * 1e6}, {"algbw_gbps", algbw},     {"busbw_gbps", busbw},
                      {"mpi_time_us", t_raw * 1e6}, {"mpi_busbw_gbps", raw_busbw}, {"ratio", ratio},
                      {"iters", iters}, {"verified", true}});
      if (bytes > opt.max_bytes / 2) break;  // guard against overflow of bytes *= 2
    }
  }
  if (!opt.json_path.empty() && comm.rank() == 0) {
    write_bench_json(opt.json_path,
                     {{"ranks", n}, {"backend", comm.backend()}, {"memcpy_gbps", mem_gbps}, {"results", rows}});
  }
  return 0;
}

}  // namespace orthoshard
