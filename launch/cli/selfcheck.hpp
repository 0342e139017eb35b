// `orthoshard selfcheck`: runs every collective on small known data and checks the results on every rank.
#pragma once

#include "runtime/comm/communicator.hpp"

namespace orthoshard {

// inject_failure_rank >= 0 makes that rank throw mid-check, to prove a failing rank ends the whole job.
int run_selfcheck(Communicator& comm, int inject_failure_rank);

}  // namespace orthoshard
