// LPT owner assignment, batching, and the owner-vs-Gram choice.
#include "optim/distributed/plan.hpp"

#include "runtime/core/error.hpp"

#include <algorithm>
#include <numeric>

namespace orthoshard {

OrthoScheme parse_ortho_scheme(const std::string& s) {
  if (s == "auto") return OrthoScheme::Auto;
  if (s == "owner") return OrthoScheme::Owner;
  if (s == "gram") return OrthoScheme::Gram;
  throw UsageError("optim.ortho_scheme: '" + s + "' is not auto, owner or gram");
}

std::string_view ortho_scheme_name(OrthoScheme s) {
  switch (s) {
    case OrthoScheme::Auto: return "auto";
    case OrthoScheme::Owner: return "owner";
    case OrthoScheme::Gram: return "gram";
  }
  return "?";
}

double OrthoPlan::imbalance() const {
  if (rank_flops.empty()) return 1.0;
  const double mx = *std::max_element(rank_flops.begin(), rank_flops.end());
  const double mean = std::accumulate(rank_flops.begin(), rank_flops.end(), 0.0) / rank_flops.size();
  return mean > 0 ? mx / mean : 1.0;
}

double ns_flops(std::int64_t m, std::int64_t n, int steps) {
  const double r = static_cast<double>(std::min(m, n)), s = static_cast<double>(std::max(m, n));
  return steps * (r * r * s + r * r * r + 2 * r * r * s);  // syrk + syrk + gemm
}

double gram_ns_flops_per_rank(std::int64_t m, std::int64_t n, int steps, int nranks) {
  const double rows = static_cast<double>((m + nranks - 1) / nranks), nd = static_cast<double>(n);
  return steps * (rows * nd * nd + nd * nd * nd + 2 * rows * nd * nd);
}

namespace {

// Assigns owner tasks by LPT and returns per-rank owner flops.
std::vector<double> assign_owners(std::vector<OrthoTask>& tasks, int nranks) {
  std::vector<std::size_t> order;
  for (std::size_t i = 0; i < tasks.size(); ++i)
    if (!tasks[i].gram) order.push_back(i);
  std::stable_sort(order.begin(), order.end(), [&](std::size_t a, std::size_t b) {
    return tasks[a].flops > tasks[b].flops;
  });
  std::vector<double> load(static_cast<std::size_t>(nranks), 0.0);
  std::vector<int> count(static_cast<std::size_t>(nranks), 0);
  for (std::size_t i : order) {
    const int r = static_cast<int>(std::min_element(load.begin(), load.end()) - load.begin());
    tasks[i].owner = r;
    tasks[i].batch = count[static_cast<std::size_t>(r)]++;
    load[static_cast<std::size_t>(r)] += tasks[i].flops;
  }
  return load;
}

// Estimated seconds of the step's orthogonalization: slowest owner plus every Gram task (all ranks).
double estimate_seconds(std::vector<OrthoTask> tasks, int nranks, int steps, const CostModel& cm) {
  std::vector<double> owner_s(static_cast<std::size_t>(nranks), 0.0);
  double gram_s = 0;
  for (auto& t : tasks)
    if (t.gram) {
      const double allreduce_bytes = 2.0 * (nranks - 1) / nranks * t.n * t.n * 4.0;
      gram_s += gram_ns_flops_per_rank(t.m, t.n, steps, nranks) / cm.flops_per_s +
                steps * (allreduce_bytes / cm.bytes_per_s + 2 * cm.latency_s);
    }
  auto load = assign_owners(tasks, nranks);
  for (const auto& t : tasks)
    if (!t.gram) {
      const double moved = 2.0 * (nranks - 1) / nranks * t.m * t.n * 4.0;  // in and back, at the owner
      owner_s[static_cast<std::size_t>(t.owner)] += t.flops / cm.flops_per_s + moved / cm.bytes_per_s;
    }
  return *std::max_element(owner_s.begin(), owner_s.end()) + gram_s;
}

}  // namespace

OrthoPlan make_ortho_plan(std::vector<OrthoTask> tasks, int nranks, OrthoScheme scheme, int ns_steps,
                          const CostModel& model) {
  OS_CHECK(nranks >= 1, "ortho plan for {} ranks", nranks);
  for (auto& t : tasks) {
    t.gram = false;
    if (t.flops <= 0) t.flops = ns_flops(t.m, t.n, ns_steps);
  }
  // The Gram form works on tall matrices (m >= n); with one rank it is just the local iteration.
  auto gram_ok = [&](const OrthoTask& t) { return nranks > 1 && t.allow_gram && t.m >= t.n && t.n > 0; };
  if (scheme == OrthoScheme::Gram) {
    for (auto& t : tasks) t.gram = gram_ok(t);
  } else if (scheme == OrthoScheme::Auto) {
    std::vector<std::size_t> order(tasks.size());
    std::iota(order.begin(), order.end(), 0);
    std::stable_sort(order.begin(), order.end(),
                     [&](std::size_t a, std::size_t b) { return tasks[a].flops > tasks[b].flops; });
    double best = estimate_seconds(tasks, nranks, ns_steps, model);
    for (std::size_t i : order) {
      if (!gram_ok(tasks[i])) continue;
      tasks[i].gram = true;
      const double t = estimate_seconds(tasks, nranks, ns_steps, model);
      if (t < best) best = t;
      else tasks[i].gram = false;
    }
  }
  OrthoPlan plan;
  plan.nranks = nranks;
  plan.rank_flops = assign_owners(tasks, nranks);
  for (const auto& t : tasks) {
    if (t.gram)
      for (auto& f : plan.rank_flops) f += gram_ns_flops_per_rank(t.m, t.n, ns_steps, nranks);
    else plan.batches = std::max(plan.batches, t.batch + 1);
  }
  plan.tasks = std::move(tasks);
  return plan;
}

void group_batches_by_shape(OrthoPlan& plan, std::int64_t max_elements) {
  struct Group {
    std::int64_t m, n, elements;
  };
  std::vector<std::vector<Group>> groups(static_cast<std::size_t>(plan.nranks));
  std::vector<std::size_t> order;
  for (std::size_t i = 0; i < plan.tasks.size(); ++i)
    if (!plan.tasks[i].gram) order.push_back(i);
  std::stable_sort(order.begin(), order.end(),
                   [&](std::size_t a, std::size_t b) { return plan.tasks[a].batch < plan.tasks[b].batch; });
  plan.batches = 0;
  for (std::size_t i : order) {
    OrthoTask& t = plan.tasks[i];
    OS_CHECK(t.owner >= 0 && t.owner < plan.nranks, "ortho plan: owner {} of {} ranks", t.owner, plan.nranks);
    auto& mine = groups[static_cast<std::size_t>(t.owner)];
    const std::int64_t size = t.m * t.n;
    auto g = std::find_if(mine.begin(), mine.end(), [&](const Group& x) {
      return x.m == t.m && x.n == t.n && x.elements + size <= max_elements;
    });
    if (g == mine.end()) {
      mine.push_back({t.m, t.n, 0});
      g = mine.end() - 1;
    }
    g->elements += size;
    t.batch = static_cast<int>(g - mine.begin());
    plan.batches = std::max(plan.batches, t.batch + 1);
  }
}

}  // namespace orthoshard
