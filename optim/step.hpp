// The optimizer step, written once for both backends (see sharded_optimizer.hpp): (A) the elementwise rules and
// the momenta, (B) the distributed orthogonalization (Gram-sharded tasks, then the owner-exchange batches,
// pipelined: batch k+1's rows travel while batch k is orthogonalized) or Conda's basis refresh and projections,
// (C) NorMuon's row statistics with exact global norms, and the parameter update. Included only by the files
// that instantiate it with their kernels (optim/optimizer.cpp, optim/cuda/device_optimizer.cpp).
//
// `Kernels` is what a backend supplies, over elements of type Kernels::Elem (T below) in its memory:
//   buffers    T* update(param, count): this rank's rows of the parameter's update (grown to count elements);
//              T* state(param, name, shape): a named state tensor, created zero-filled;
//              std::vector<T*> owned(batch, tasks): where the matrices of an exchange batch this rank owns land,
//              release_owned(batch): once their results are back;
//              T* refresh(count), T* left(param, count): Conda's basis input and its left-projection inputs;
//              Exchange exchange(items): a RowExchange over the backend's memory;
//   rules      adamw, conda_plain, momentum, conda_momentum, decay_then_apply, scale, conda_apply;
//   matrices   gram(tasks) (Gram-sharded Newton-Schulz, host only), newton_schulz(tasks, full),
//              normuon_rows / row_sums (each row's sum of squares before and after NorMuon's normalization),
//              basis (Conda's SVD basis), conda_right / conda_left (project, normalize, map back).
#pragma once

#include "optim/distributed/row_exchange.hpp"
#include "optim/rules.hpp"
#include "optim/sharded_optimizer.hpp"
#include "runtime/core/error.hpp"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <memory>
#include <string>
#include <vector>

namespace orthoshard {

template <typename Kernels>
class OptimizerStep {
 public:
  using T = typename Kernels::Elem;

  OptimizerStep(ShardedOptimizer& opt, Kernels& k) : o_(opt), k_(k) {}

  void run(const std::vector<Tensor>& params, const std::vector<Tensor>& grads, double lr_scale,
           const std::vector<Tensor>& copies) {
    const OptimConfig& c = o_.config_;
    o_.stats_ = {};
    const double lr = c.lr * lr_scale;
    auto copy = [&](std::size_t i) { return copies.empty() ? Tensor() : copies[i]; };

    // (A) Local: elementwise rules, Muon/NorMuon momentum, Conda's first moment.
    auto t0 = Clock::now();
    for (std::size_t i = 0; i < o_.specs_.size(); ++i) {
      const ParamSpec& s = o_.specs_[i];
      try {
        switch (s.rule) {
          case RuleKind::AdamW: {
            // With optim.name = adamw every tensor uses the main hyperparameters; otherwise the adam_* ones.
            AdamHparams hp = c.adam;
            if (c.name == "adamw") hp = {c.lr, c.beta1, c.beta2_adam, c.eps, c.weight_decay};
            k_.adamw(i, params[i], grads[i], copy(i), hp, hp.lr * lr_scale);
            break;
          }
          case RuleKind::CondaPlain: k_.conda_plain(i, params[i], grads[i], copy(i), lr); break;
          case RuleKind::Muon:
          case RuleKind::NorMuon:
            advance_step(o_.states_[i]);
            k_.momentum(i, grads[i]);
            break;
          case RuleKind::Conda:
            advance_step(o_.states_[i]);
            k_.conda_momentum(i, grads[i]);
            break;
        }
      } catch (...) {
        rethrow_with_context("optimizer step, parameter " + s.name);
      }
    }
    o_.stats_.local_ms = ms_since(t0);

    // (B) + (C)
    const RuleKind matrix = c.matrix_rule();
    if (o_.plan_.tasks.empty()) return;
    if (matrix == RuleKind::Conda) {
      t0 = Clock::now();
      conda_matrices(params, grads, copies, lr);
      o_.stats_.ortho_ms = ms_since(t0);
      return;
    }
    t0 = Clock::now();
    orthogonalize();
    o_.stats_.ortho_ms = ms_since(t0);
    t0 = Clock::now();
    if (matrix == RuleKind::NorMuon) {
      normuon_finish(params, copies, lr);
    } else {
      for (const auto& t : o_.plan_.tasks)
        k_.decay_then_apply(t.param, params[t.param], copy(t.param), lr, c.weight_decay,
                            matrix_scale_factor(c.scale, t.m, t.n));
    }
    o_.stats_.post_ms = ms_since(t0);
  }

 private:
  using Clock = std::chrono::steady_clock;
  static double ms_since(Clock::time_point t0) {
    return std::chrono::duration<double, std::milli>(Clock::now() - t0).count();
  }
  std::int64_t local_rows(std::size_t param) const { return o_.local_shapes_[param][0]; }
  std::int64_t local_numel(std::size_t param) const { return shape_numel(o_.local_shapes_[param]); }
  template <typename Exchange> void count_bytes(const Exchange& ex) {
    o_.stats_.bytes_sent += ex.bytes_sent();
    o_.stats_.bytes_received += ex.bytes_received();
  }

  void orthogonalize() {
    const int me = o_.rank_;
    // Gram-sharded tasks (host plans only): global norms in one all-reduce, then one Gram all-reduce per iteration.
    std::vector<const OrthoTask*> gram;
    for (const auto& t : o_.plan_.tasks)
      if (t.gram) gram.push_back(&t);
    if (!gram.empty()) {
      const std::uint64_t bytes = k_.gram(gram);
      o_.stats_.bytes_sent += bytes;
      o_.stats_.bytes_received += bytes;
      for (const OrthoTask* t : gram)
        o_.stats_.ortho_flops += gram_ns_flops_per_rank(t->m, t->n, o_.config_.ns_steps, o_.nranks_);
    }
    // Owner tasks, batch by batch: batch b+1's rows travel while batch b is orthogonalized, and batch b-1's
    // results return meanwhile; a batch's exchange buffers go as soon as its results are back, so about three
    // batches are in flight at once whatever the model's size.
    std::vector<std::vector<const OrthoTask*>> batches(static_cast<std::size_t>(o_.plan_.batches));
    for (const auto& t : o_.plan_.tasks)
      if (!t.gram) batches[static_cast<std::size_t>(t.batch)].push_back(&t);
    using Exchange = typename Kernels::Exchange;
    std::vector<std::unique_ptr<Exchange>> ex(batches.size());
    auto start = [&](std::size_t b) {
      std::vector<ExchangeItem> items;
      std::vector<const T*> local;
      for (const OrthoTask* t : batches[b]) {
        items.push_back({t->m, t->n, t->owner});
        local.push_back(k_.update(t->param, local_numel(t->param)));
      }
      ex[b] = k_.exchange(std::move(items));
      ex[b]->start_gather(local);
    };
    auto finish = [&](std::size_t b) {
      std::vector<T*> local;
      for (const OrthoTask* t : batches[b]) local.push_back(k_.update(t->param, local_numel(t->param)));
      ex[b]->finish_return(local);
      count_bytes(*ex[b]);
      ex[b].reset();
      k_.release_owned(b);  // (one rank: the return copies straight from them, at finish_return)
    };
    if (!batches.empty()) start(0);
    for (std::size_t b = 0; b < batches.size(); ++b) {
      if (b + 1 < batches.size()) start(b + 1);
      std::vector<const OrthoTask*> mine;  // the batch's matrices this rank owns
      for (const OrthoTask* t : batches[b])
        if (t->owner == me) mine.push_back(t);
      const std::vector<T*> dst = mine.empty() ? std::vector<T*>{} : k_.owned(b, mine);
      std::vector<T*> full;
      std::size_t j = 0;
      for (const OrthoTask* t : batches[b]) full.push_back(t->owner == me ? dst[j++] : nullptr);
      ex[b]->finish_gather(full);
      if (!mine.empty()) {
        k_.newton_schulz(mine, dst);
        for (const OrthoTask* t : mine) o_.stats_.ortho_flops += ns_flops(t->m, t->n, o_.config_.ns_steps);
      }
      std::vector<const T*> back(full.size());  // (not the iterator-range constructor: GCC 12 misreports it)
      std::copy(full.begin(), full.end(), back.begin());
      ex[b]->start_return(back);
      if (b > 0) finish(b - 1);
    }
    if (!batches.empty()) finish(batches.size() - 1);
  }

  void normuon_finish(const std::vector<Tensor>& params, const std::vector<Tensor>& copies, double lr) {
    const OptimConfig& c = o_.config_;
    // Row statistics are local; the two Frobenius norms per matrix are sums over all rows. Every rank's per-row
    // sums of squares are gathered and added in global row order, so the norms (and the update) do not depend on
    // the number of ranks.
    std::int64_t total_rows = 0;
    for (const auto& t : o_.plan_.tasks) total_rows += local_rows(t.param);
    k_.begin_row_sums(2 * total_rows);
    std::vector<std::int64_t> matrix_rows;
    std::int64_t off = 0;
    for (const auto& t : o_.plan_.tasks) {
      const std::int64_t rows = local_rows(t.param);
      T* v = k_.state(t.param, "row_second_moment", {rows, 1});
      k_.normuon_rows(t.param, rows, t.n, v, c.beta2, off);
      off += 2 * rows;
      matrix_rows.push_back(t.m);
    }
    const auto sums = global_row_sums(k_.row_sums(), matrix_rows, 2, o_.nranks_ > 1 ? o_.comm_ : nullptr);
    const std::vector<double>& before = sums[0];
    const std::vector<double>& after = sums[1];
    for (std::size_t j = 0; j < o_.plan_.tasks.size(); ++j) {
      const OrthoTask& t = o_.plan_.tasks[j];
      const double hat_norm = std::sqrt(after[j]);
      double factor;
      if (c.scale == MatrixScale::Paper) {
        factor = 0.2 * std::sqrt(static_cast<double>(t.m) * static_cast<double>(t.n)) / (hat_norm + 1e-10);
      } else {
        // Reference order: rescale to ‖O‖_F first (rounded to the element type), then the shape factor.
        k_.scale(t.param, std::sqrt(before[j]) / (hat_norm + 1e-10));
        factor = matrix_scale_factor(c.scale, t.m, t.n);
      }
      k_.decay_then_apply(t.param, params[t.param], copies.empty() ? Tensor() : copies[t.param], lr, c.weight_decay,
                          factor);
    }
  }

  void conda_matrices(const std::vector<Tensor>& params, const std::vector<Tensor>& grads,
                      const std::vector<Tensor>& copies, double lr) {
    const OptimConfig& c = o_.config_;
    const int me = o_.rank_;
    std::vector<const OrthoTask*> refresh, left;
    for (const auto& t : o_.plan_.tasks) {
      const ParamState& st = o_.states_[t.param];
      if ((st.get_int("step") - 1) % c.update_proj_gap == 0 || st.get_int("conda_basis_step") == 0)
        refresh.push_back(&t);
    }

    // Basis refresh: the owner gathers the whole first moment and computes its basis; a right basis (Vᵀ, k x n) is
    // broadcast to every rank, a left basis (U, m x k) stays with the owner. One matrix at a time through one
    // reused buffer: refreshes are rare.
    for (const OrthoTask* tp : refresh) {
      const OrthoTask& t = *tp;
      ParamState& st = o_.states_[t.param];
      const bool right = conda_right_side(c.proj_type, t.m, t.n);
      const std::int64_t k = std::min(t.m, t.n);
      const Shape bshape = right ? Shape{k, t.n} : Shape{t.m, k};
      T* f = t.owner == me ? k_.refresh(t.m * t.n) : nullptr;
      {
        auto ex = k_.exchange({{t.m, t.n, t.owner}});
        ex->start_gather({k_.state(t.param, "exp_avg", o_.local_shapes_[t.param])});
        ex->finish_gather({f});
        count_bytes(*ex);
      }
      T* basis = (right || t.owner == me) ? k_.state(t.param, "conda_basis", bshape) : nullptr;
      std::string failure;
      if (t.owner == me && k > 0) {
        try {
          k_.basis(f, t.m, t.n, right, basis);
          o_.stats_.ortho_flops += svd_flops(t.m, t.n);
        } catch (const std::exception& e) {
          failure = e.what();
        }
      }
      // Every rank learns whether the owner's SVD failed before anyone goes on (the others would otherwise wait
      // in the broadcast or the next exchange).
      if (o_.nranks_ > 1 && o_.comm_->all_reduce_scalar(failure.empty() ? 0.0 : 1.0, ReduceOp::Max) > 0)
        fail("optimizer step, parameter {}: Conda's basis SVD failed on rank {}{}", o_.specs_[t.param].name, t.owner,
             failure.empty() ? "" : ": " + failure);
      if (!failure.empty())
        fail("optimizer step, parameter {}: Conda's basis SVD failed: {}", o_.specs_[t.param].name, failure);
      if (right && o_.nranks_ > 1)
        o_.comm_->broadcast(basis, static_cast<std::size_t>(k * t.n), dtype_of<T>(), t.owner);
      st.set_int("conda_basis_step", st.get_int("step"));
      st.set_int("conda_basis_side", right ? 0 : 1);
    }

    // Right basis: everything row-local, (rows x n)(n x k) projections, normalization, back (rows x k)(k x n).
    for (const auto& t : o_.plan_.tasks) {
      const std::int64_t rows = local_rows(t.param), k = std::min(t.m, t.n);
      T* upd = k_.update(t.param, rows * t.n);
      if (!conda_right_side(c.proj_type, t.m, t.n)) {
        left.push_back(&t);
        continue;
      }
      T* v = k_.state(t.param, "exp_avg_sq", {rows, k});
      if (rows == 0) continue;
      const T* p = k_.state(t.param, "conda_basis", {k, t.n});
      k_.conda_right(grads[t.param], k_.state(t.param, "exp_avg", o_.local_shapes_[t.param]), rows, t.n, p, k, v,
                     upd);
      o_.stats_.ortho_flops += 6.0 * static_cast<double>(rows * t.n * k);
    }

    // Left basis: the owner gathers G and the first moment, projects Uᵀ X (k x n), normalizes, maps back U N.
    if (!left.empty()) {
      std::vector<ExchangeItem> gather_items, return_items;
      std::vector<const T*> local;
      std::vector<T*> full;
      for (const OrthoTask* t : left) {
        for (int part = 0; part < 2; ++part) gather_items.push_back({t->m, t->n, t->owner});
        return_items.push_back({t->m, t->n, t->owner});
        local.push_back(static_cast<const T*>(grads[t->param].raw()));
        local.push_back(k_.state(t->param, "exp_avg", o_.local_shapes_[t->param]));
        T* f = t->owner == me ? k_.left(t->param, 2 * t->m * t->n) : nullptr;
        full.push_back(f);
        full.push_back(f ? f + t->m * t->n : nullptr);
      }
      auto in = k_.exchange(gather_items);
      auto out = k_.exchange(return_items);
      in->start_gather(local);
      in->finish_gather(full);
      std::vector<const T*> results;
      for (std::size_t j = 0; j < left.size(); ++j) {
        const OrthoTask& t = *left[j];
        if (t.owner != me) {
          results.push_back(nullptr);
          continue;
        }
        const std::int64_t k = std::min(t.m, t.n);
        T* g_full = full[2 * j];
        k_.conda_left(g_full, full[2 * j + 1], t.m, t.n, k_.state(t.param, "conda_basis", {t.m, k}), k,
                      k_.state(t.param, "exp_avg_sq", {k, t.n}));  // the update, in G's buffer
        results.push_back(g_full);
        o_.stats_.ortho_flops += 6.0 * static_cast<double>(t.m * t.n * k);
      }
      out->start_return(results);
      std::vector<T*> dest;
      for (const OrthoTask* t : left) dest.push_back(k_.update(t->param, local_numel(t->param)));
      out->finish_return(dest);
      count_bytes(*in);
      count_bytes(*out);
    }

    for (const auto& t : o_.plan_.tasks) {
      const double step = conda_step_size(c, o_.states_[t.param].get_int("step"), lr) * c.conda_scale;
      k_.conda_apply(t.param, params[t.param], copies.empty() ? Tensor() : copies[t.param], step, lr,
                     c.weight_decay);
    }
  }

  ShardedOptimizer& o_;
  Kernels& k_;
};

}  // namespace orthoshard
