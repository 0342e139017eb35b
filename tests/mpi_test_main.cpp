// GoogleTest main for MPI test binaries: MPI up before the tests, rank 0 prints the report,
// other ranks print only their failures (rank-prefixed), and results are aggregated per test.
#include "tests/mpi_test.hpp"

#include "runtime/comm/mpi_communicator.hpp"
#include "runtime/core/log.hpp"

#include <cstdio>
#include <memory>
#include <string>
#include <vector>

namespace orthoshard::testing {
namespace {
std::unique_ptr<Communicator> g_world;

class RankFailurePrinter : public ::testing::EmptyTestEventListener {
 public:
  explicit RankFailurePrinter(int rank) : rank_(rank) {}
  void OnTestPartResult(const ::testing::TestPartResult& r) override {
    if (!r.failed()) return;
    std::fprintf(stderr, "[rank %d] %s:%d: failure\n%s\n", rank_, r.file_name() ? r.file_name() : "?",
                 r.line_number(), r.summary());
    std::fflush(stderr);
  }

 private:
  int rank_;
};
}  // namespace

Communicator& world() { return *g_world; }

void MpiTest::TearDown() {
  const int n = world().size();
  std::int32_t mine = HasFailure() ? 1 : 0;
  std::vector<std::int32_t> all(static_cast<std::size_t>(n));
  world().all_gather(&mine, all.data(), 1, DType::I32);
  std::string failed;
  for (int r = 0; r < n; ++r)
    if (all[static_cast<std::size_t>(r)]) failed += (failed.empty() ? "" : ", ") + std::to_string(r);
  if (!failed.empty() && !mine) ADD_FAILURE() << "test failed on rank(s) " << failed;
}

}  // namespace orthoshard::testing

int main(int argc, char** argv) {
  ::testing::InitGoogleTest(&argc, argv);
  orthoshard::MpiRuntime mpi(&argc, &argv);
  orthoshard::testing::g_world = mpi.world();
  const int rank = orthoshard::testing::g_world->rank();
  auto& listeners = ::testing::UnitTest::GetInstance()->listeners();
  if (rank != 0) {
    delete listeners.Release(listeners.default_result_printer());
    listeners.Append(new orthoshard::testing::RankFailurePrinter(rank));
  }
  int rc = RUN_ALL_TESTS();
  // Every rank agrees on the exit status.
  rc = static_cast<int>(orthoshard::testing::g_world->all_reduce_scalar(rc, orthoshard::ReduceOp::Max));
  orthoshard::testing::g_world.reset();
  return rc;
}
