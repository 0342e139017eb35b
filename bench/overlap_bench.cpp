// `orthoshard bench comm --overlap`: how much of a collective this machine and MPI can hide behind compute.
// For each collective, at one size: the collective alone, a block of sgemm calls sized to take about as long
// (alone), the two one after the other (serial), the collective started non-blocking through our layer with
// the compute in between (what FSDP's overlap does), and the blocking collective on a helper thread over a
// second communicator while the main thread computes (what a communication thread would give; needs
// MPI_THREAD_MULTIPLE). hidden = (serial − mode) / collective alone: 100% means the collective cost nothing.
#include "bench/comm_bench.hpp"
#include "bench/bench_json.hpp"
#include "optim/linalg.hpp"
#include "runtime/core/error.hpp"
#include "runtime/core/log.hpp"
#include "runtime/core/tensor.hpp"

#include <mpi.h>
#include <nlohmann/json.hpp>

#include <algorithm>
#include <cmath>
#include <exception>
#include <functional>
#include <thread>
#include <vector>

namespace orthoshard {
namespace {

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

// Seconds of one run of `work`, the slowest rank's.
double timed(Communicator& comm, const std::function<void()>& work) {
  comm.barrier();
  const double t0 = MPI_Wtime();
  work();
  return comm.all_reduce_scalar(MPI_Wtime() - t0, ReduceOp::Max);
}

}  // namespace

int run_overlap_bench(Communicator& comm, const CommBenchOptions& opt) {
  for (const auto& op : opt.ops)
    if (op != "all_gather" && op != "reduce_scatter" && op != "all_reduce" && op != "all_to_all")
      throw UsageError("bench comm: unknown collective '" + op + "'");
  OS_CHECK(opt.overlap_bytes >= 4, "bench comm: --overlap-bytes must be at least 4");
  const int n = comm.size();
  int level = MPI_THREAD_SINGLE;
  MPI_Query_thread(&level);
  const bool threads_ok = level >= MPI_THREAD_MULTIPLE;
  // The helper thread's collectives go over their own communicator so they never interleave with the main
  // thread's barriers and timing reductions.
  const std::unique_ptr<Communicator> helper = comm.split(0, comm.rank());

  const std::size_t per = std::max<std::size_t>(1, opt.overlap_bytes / sizeof(float) / static_cast<std::size_t>(n));
  const std::size_t total = per * static_cast<std::size_t>(n);
  Tensor sendbuf = Tensor::empty({static_cast<std::int64_t>(total)}, DType::F32);
  Tensor recvbuf = Tensor::zeros({static_cast<std::int64_t>(total)}, DType::F32);
  float* s = sendbuf.data<float>();
  float* r = recvbuf.data<float>();
  std::fill_n(s, total, 1.0f);

  // The compute: square sgemm calls, as many as the collective takes time (calibrated per collective).
  constexpr std::int64_t kDim = 384;
  Tensor a = Tensor::empty({kDim, kDim}, DType::F32), b = Tensor::empty({kDim, kDim}, DType::F32);
  Tensor c = Tensor::zeros({kDim, kDim}, DType::F32);
  std::fill_n(a.data<float>(), kDim * kDim, 0.5f);
  std::fill_n(b.data<float>(), kDim * kDim, 0.25f);
  const auto gemm_once = [&] {
    linalg::gemm<float>(false, false, kDim, kDim, kDim, 1.0f, a.data<float>(), kDim, b.data<float>(), kDim, 0.0f,
                        c.data<float>(), kDim);
  };
  gemm_once();
  std::vector<double> one;
  for (int i = 0; i < 5; ++i) one.push_back(timed(comm, [&] { for (int k = 0; k < 4; ++k) gemm_once(); }) / 4);
  const double t_gemm = median(one);

  log::info("# orthoshard bench comm --overlap: {} ranks ({} backend), f32, {} bytes per collective, compute = "
            "{}^3 sgemm calls ({:.2f} ms each), median of {} repeats",
            n, comm.backend(), total * sizeof(float), kDim, t_gemm * 1e3, opt.repeats);
  log::info("# hidden = (serial - mode) / collective alone; 100% = the collective costs nothing, 0% = no gain");
  if (!threads_ok) log::info("# helper thread: skipped (MPI gave no MPI_THREAD_MULTIPLE)");
  log::info("{:>14} {:>10} {:>10} {:>10} {:>14} {:>8} {:>14} {:>8}", "op", "comm_ms", "compute_ms", "serial_ms",
            "nonblocking_ms", "hidden", "thread_ms", "hidden");

  nlohmann::json rows = nlohmann::json::array();
  for (const auto& name : opt.ops) {
    std::function<void(Communicator&)> blocking;
    std::function<Request()> start;
    if (name == "all_gather") {
      blocking = [&](Communicator& cm) { cm.all_gather(s, r, per, DType::F32); };
      start = [&] { return comm.all_gather_async(s, r, per, DType::F32); };
    } else if (name == "reduce_scatter") {
      blocking = [&](Communicator& cm) { cm.reduce_scatter(s, r, per, DType::F32, ReduceOp::Sum); };
      start = [&] { return comm.reduce_scatter_async(s, r, per, DType::F32, ReduceOp::Sum); };
    } else if (name == "all_reduce") {
      blocking = [&](Communicator& cm) { cm.all_reduce(s, r, total, DType::F32, ReduceOp::Sum); };
      start = [&] { return comm.all_reduce_async(s, r, total, DType::F32, ReduceOp::Sum); };
    } else {
      blocking = [&](Communicator& cm) { cm.all_to_all(s, r, per, DType::F32); };
      start = [&] { return comm.all_to_all_async(s, r, per, DType::F32); };
    }
    blocking(comm);  // warm: first touch, connection setup
    if (threads_ok) blocking(*helper);
    std::vector<double> alone;
    for (int i = 0; i < 3; ++i) alone.push_back(timed(comm, [&] { blocking(comm); }));
    const int k = std::max(1, static_cast<int>(std::lround(median(alone) / t_gemm)));
    const auto compute = [&] { for (int i = 0; i < k; ++i) gemm_once(); };

    std::vector<double> t_comm, t_comp, t_serial, t_nb, t_thread;
    for (int rep = 0; rep < opt.repeats; ++rep) {
      t_comm.push_back(timed(comm, [&] { blocking(comm); }));
      t_comp.push_back(timed(comm, compute));
      t_serial.push_back(timed(comm, [&] { compute(); blocking(comm); }));
      t_nb.push_back(timed(comm, [&] {
        Request req = start();
        compute();
        req.wait();
      }));
      if (threads_ok) {
        t_thread.push_back(timed(comm, [&] {
          std::exception_ptr failed;
          std::thread th([&] {
            try {
              blocking(*helper);
            } catch (...) {
              failed = std::current_exception();
            }
          });
          compute();
          th.join();
          if (failed) std::rethrow_exception(failed);
        }));
      }
    }
    const double tc = median(t_comm), tk = median(t_comp), ts = median(t_serial), tn = median(t_nb);
    const double hidden_nb = (ts - tn) / tc;
    nlohmann::json row = {{"op", name},          {"bytes", total * sizeof(float)}, {"ranks", n},
                          {"gemm_calls", k},     {"comm_ms", tc * 1e3},           {"compute_ms", tk * 1e3},
                          {"serial_ms", ts * 1e3}, {"nonblocking_ms", tn * 1e3},  {"hidden_nonblocking", hidden_nb}};
    if (threads_ok) {
      const double tt = median(t_thread), hidden_th = (ts - tt) / tc;
      row["thread_ms"] = tt * 1e3;
      row["hidden_thread"] = hidden_th;
      log::info("{:>14} {:>10.2f} {:>10.2f} {:>10.2f} {:>14.2f} {:>7.0f}% {:>14.2f} {:>7.0f}%", name, tc * 1e3,
                tk * 1e3, ts * 1e3, tn * 1e3, 100 * hidden_nb, tt * 1e3, 100 * hidden_th);
    } else {
      log::info("{:>14} {:>10.2f} {:>10.2f} {:>10.2f} {:>14.2f} {:>7.0f}% {:>14} {:>8}", name, tc * 1e3, tk * 1e3,
                ts * 1e3, tn * 1e3, 100 * hidden_nb, "-", "-");
    }
    rows.push_back(row);
  }
  if (!opt.json_path.empty() && comm.rank() == 0) {
    write_bench_json(opt.json_path, {{"ranks", n}, {"backend", comm.backend()}, {"gemm_ms", t_gemm * 1e3},
                                     {"thread_multiple", threads_ok}, {"results", rows}});
  }
  return 0;
}

}  // namespace orthoshard
