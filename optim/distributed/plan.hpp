// Planner of the distributed orthogonalization: which rank owns each matrix (longest-processing-time
// greedy on estimated cost), in which exchange batch it travels, and which tall matrices use the
// Gram-sharded Newton-Schulz instead (cost model, or forced by optim.ortho_scheme).
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

namespace orthoshard {

enum class OrthoScheme { Auto, Owner, Gram };
OrthoScheme parse_ortho_scheme(const std::string& s);  // auto|owner|gram, UsageError otherwise
std::string_view ortho_scheme_name(OrthoScheme s);

// Rough machine constants of the cost model (per rank). They only rank alternatives against each other.
struct CostModel {
  double flops_per_s = 50e9;
  double bytes_per_s = 4e9;
  double latency_s = 20e-6;
};

struct OrthoTask {
  std::size_t param = 0;     // index in the optimizer's parameter list
  std::int64_t m = 0, n = 0; // global matrix shape
  bool allow_gram = true;    // false for work that needs the whole matrix (Conda's SVD)
  double flops = 0;          // estimated flops of the whole task on one rank
  // Filled by the planner:
  int owner = 0;
  bool gram = false;
  int batch = 0;             // owner-scheme exchange batch (pipelined: batch b+1 moves while b computes)
};

struct OrthoPlan {
  int nranks = 1;
  int batches = 0;
  std::vector<OrthoTask> tasks;
  std::vector<double> rank_flops;  // estimated flops per rank (owner work + its share of Gram work)
  double imbalance() const;        // max / mean of rank_flops (1 = perfect)
};

// NS5 flops of one m x n matrix done by one rank (the symmetric products counted at half a GEMM).
double ns_flops(std::int64_t m, std::int64_t n, int steps);
// Per-rank flops of the Gram scheme on N ranks (local row products + the redundant n x n work).
double gram_ns_flops_per_rank(std::int64_t m, std::int64_t n, int steps, int nranks);

// Regroups the owner-scheme exchange batches so that each owner's tasks of one shape travel in one batch (at
// most max_elements matrix elements per owner and batch; a larger task is a batch of its own), which lets the
// owner orthogonalize them together (the GPU's batched Newton-Schulz). An owner's batches keep the order of
// their first task in the LPT order; owners, Gram flags and rank_flops are unchanged.
void group_batches_by_shape(OrthoPlan& plan, std::int64_t max_elements);

OrthoPlan make_ortho_plan(std::vector<OrthoTask> tasks, int nranks, OrthoScheme scheme, int ns_steps,
                          const CostModel& model = {});

}  // namespace orthoshard
