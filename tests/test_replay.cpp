// `orthoshard replay` as a library call: the shared traces pass, a too-tight tolerance fails, and bad
// inputs (missing file, not HDF5, not a trace, a trace lacking a dataset) are errors naming the problem.
#include "launch/cli/replay.hpp"
#include "tests/mpi_test.hpp"

#include "runtime/core/error.hpp"

#include <hdf5.h>

#include <filesystem>
#include <fstream>

using namespace orthoshard;
using orthoshard::testing::MpiTest;

namespace {
const std::string kData = ORTHOSHARD_TESTDATA;

std::string error_of(Communicator& comm, const ReplayOptions& o) {
  try {
    run_replay(comm, o);
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}
}  // namespace

TEST_F(MpiTest, ReplayTracesAndRefusals) {
  // Every rank runs its row shards through the sharded optimizer path, at any rank count.
  for (const char* t : {"adamw", "muon", "normuon", "conda"})
    for (const char* p : {"f32", "f64"})
      for (const char* scheme : {"owner", "gram"})
        EXPECT_EQ(run_replay(comm(), {kData + "/optim/" + t + ".h5", p, -1, scheme}), 0) << t << " " << p;
  // A tolerance below what f32 reaches must fail (the check can fail).
  EXPECT_EQ(run_replay(comm(), {kData + "/optim/muon.h5", "f32", 1e-9, "auto"}), 1);
}

TEST_F(MpiTest, ReplayBadInputsNameTheProblem) {
  namespace fs = std::filesystem;
  const fs::path dir = fs::temp_directory_path() / ("orthoshard_replay_" + std::to_string(::getpid()) + "_" +
                                                     std::to_string(comm().rank()));
  fs::create_directories(dir);
  EXPECT_NE(error_of(comm(), {(dir / "nope.h5").string(), "f32", -1, "auto"}).find("no such file"), std::string::npos);
  std::ofstream(dir / "text.h5") << "hello";
  EXPECT_NE(error_of(comm(), {(dir / "text.h5").string(), "f32", -1, "auto"}).find("not an HDF5 file"), std::string::npos);
  EXPECT_NE(error_of(comm(), {kData + "/gpt2/reference.h5", "f32", -1, "auto"}).find("not an optimizer trace"),
            std::string::npos);
  // A trace with one dataset removed.
  const fs::path broken = dir / "broken.h5";
  fs::copy_file(kData + "/optim/normuon.h5", broken, fs::copy_options::overwrite_existing);
  hid_t f = H5Fopen(broken.c_str(), H5F_ACC_RDWR, H5P_DEFAULT);
  ASSERT_GE(f, 0);
  ASSERT_GE(H5Ldelete(f, "/params/tall/grads", H5P_DEFAULT), 0);
  H5Fclose(f);
  const std::string msg = error_of(comm(), {broken.string(), "f32", -1, "auto"});
  EXPECT_NE(msg.find("/params/tall/grads"), std::string::npos) << msg;
  fs::remove_all(dir);
}
