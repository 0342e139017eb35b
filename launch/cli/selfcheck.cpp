// Communicator self-check: each collective against a closed-form expectation; any mismatch is an error.
#include "launch/cli/selfcheck.hpp"

#include "runtime/core/error.hpp"
#include "runtime/core/log.hpp"

#include <cmath>
#include <numeric>
#include <vector>

namespace orthoshard {
namespace {

void expect(bool ok, Communicator& comm, const char* what) {
  OS_CHECK(ok, "selfcheck: {} gave a wrong result on rank {}", what, comm.rank());
}

}  // namespace

int run_selfcheck(Communicator& comm, int inject_failure_rank) {
  const int n = comm.size(), r = comm.rank();
  log::info("selfcheck: {} ranks, backend {}, {} rank(s) on rank 0's node", n, comm.backend(), comm.local_size());
  comm.barrier();

  if (inject_failure_rank == r)
    throw Error(fmt::format("injected failure on rank {} (selfcheck --inject-failure)", r));

  // all_reduce sum/mean/max of f32: element i of rank r is r + i.
  const std::size_t k = 1000;
  std::vector<float> v(k);
  for (std::size_t i = 0; i < k; ++i) v[i] = static_cast<float>(r + i);
  std::vector<float> out(k);
  comm.all_reduce(v.data(), out.data(), k, DType::F32, ReduceOp::Sum);
  bool ok = true;
  for (std::size_t i = 0; i < k; ++i) ok &= out[i] == static_cast<float>(n * (n - 1) / 2 + n * i);
  expect(ok, comm, "all_reduce(sum)");
  comm.all_reduce(v.data(), out.data(), k, DType::F32, ReduceOp::Max);
  ok = true;
  for (std::size_t i = 0; i < k; ++i) ok &= out[i] == static_cast<float>(n - 1 + i);
  expect(ok, comm, "all_reduce(max)");
  log::info("  all_reduce      ok");

  // all_gather with variable counts: rank j contributes j+1 copies of j.
  std::vector<std::size_t> counts(n);
  for (int j = 0; j < n; ++j) counts[j] = static_cast<std::size_t>(j + 1);
  std::vector<std::int32_t> mine(static_cast<std::size_t>(r + 1), r);
  std::vector<std::int32_t> all(std::accumulate(counts.begin(), counts.end(), std::size_t{0}));
  comm.all_gather_v(mine.data(), mine.size(), all.data(), counts, DType::I32);
  ok = true;
  std::size_t pos = 0;
  for (int j = 0; j < n; ++j)
    for (int c = 0; c <= j; ++c) ok &= all[pos++] == j;
  expect(ok, comm, "all_gather_v");
  log::info("  all_gather      ok");

  // reduce_scatter mean: block j of every rank's input holds j + rank; the mean of block r is r + (n-1)/2.
  std::vector<double> full(static_cast<std::size_t>(n) * 4);
  for (int j = 0; j < n; ++j)
    for (int c = 0; c < 4; ++c) full[static_cast<std::size_t>(j * 4 + c)] = j + r;
  std::vector<double> shard(4);
  comm.reduce_scatter(full.data(), shard.data(), 4, DType::F64, ReduceOp::Mean);
  ok = true;
  for (double x : shard) ok &= std::abs(x - (r + (n - 1) / 2.0)) < 1e-12;
  expect(ok, comm, "reduce_scatter(mean)");
  log::info("  reduce_scatter  ok");

  // all_to_all: rank r sends 100*r + j to rank j, so it receives 100*j + r from rank j.
  std::vector<std::int64_t> send(static_cast<std::size_t>(n)), recv(static_cast<std::size_t>(n));
  for (int j = 0; j < n; ++j) send[static_cast<std::size_t>(j)] = 100 * r + j;
  comm.all_to_all(send.data(), recv.data(), 1, DType::I64);
  ok = true;
  for (int j = 0; j < n; ++j) ok &= recv[static_cast<std::size_t>(j)] == 100 * j + r;
  expect(ok, comm, "all_to_all");
  log::info("  all_to_all      ok");

  // broadcast and a ring of send/recv.
  std::int64_t token = r == 0 ? 424242 : 0;
  comm.broadcast(&token, 1, DType::I64, 0);
  expect(token == 424242, comm, "broadcast");
  if (n > 1) {
    std::int64_t got = -1, sent = r;
    Request rq = comm.recv_async(&got, 1, DType::I64, (r + n - 1) % n, 7);
    comm.send(&sent, 1, DType::I64, (r + 1) % n, 7);
    rq.wait();
    expect(got == (r + n - 1) % n, comm, "send/recv ring");
  }
  log::info("  broadcast, p2p  ok");
  comm.barrier();
  log::info("selfcheck: all collectives ok on {} ranks", n);
  return 0;
}

}  // namespace orthoshard
