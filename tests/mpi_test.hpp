// MPI-aware GoogleTest support: every rank runs every test; a failure on any rank fails the test on all.
#pragma once

#include "runtime/comm/communicator.hpp"

#include <gtest/gtest.h>

namespace orthoshard::testing {

// The world communicator of the test process (set up by mpi_test_main.cpp).
Communicator& world();

// Fixture for multi-rank tests: TearDown aggregates failures across ranks, so ranks agree on the outcome.
// Tests should prefer EXPECT_* before collectives: a rank leaving early would leave the others waiting
// (ctest's timeout still ends such a run).
class MpiTest : public ::testing::Test {
 protected:
  Communicator& comm() { return world(); }
  void TearDown() override;
};

}  // namespace orthoshard::testing
