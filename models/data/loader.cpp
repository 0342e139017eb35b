// DataLoader: window arithmetic, the per-epoch permutation, and batch assembly.
#include "models/data/loader.hpp"

#include "models/random.hpp"
#include "runtime/core/error.hpp"

#include <algorithm>
#include <numeric>

namespace orthoshard {

DataOrder parse_data_order(const std::string& s) {
  if (s == "sequential") return DataOrder::Sequential;
  if (s == "shuffled") return DataOrder::Shuffled;
  throw UsageError("data.order: '" + s + "' is not sequential or shuffled");
}

std::string_view data_order_name(DataOrder o) { return o == DataOrder::Sequential ? "sequential" : "shuffled"; }

DataLoader::DataLoader(std::shared_ptr<const TokenStream> stream, LoaderConfig cfg)
    : stream_(std::move(stream)), cfg_(cfg) {
  OS_CHECK(stream_ != nullptr, "data loader without a token stream");
  if (cfg_.B <= 0 || cfg_.T <= 0 || cfg_.world_size <= 0 || cfg_.grad_accum <= 0)
    throw UsageError(fmt::format("data loader: B = {}, T = {}, W = {}, K = {} must all be positive", cfg_.B, cfg_.T,
                                 cfg_.world_size, cfg_.grad_accum));
  OS_CHECK(cfg_.rank >= 0 && cfg_.rank < cfg_.world_size, "data loader: rank {} outside [0, {})", cfg_.rank,
           cfg_.world_size);
  const std::int64_t W = cfg_.world_size;
  global_ = cfg_.global_B > 0 ? cfg_.global_B : cfg_.B * W;
  if (global_ < W)
    throw UsageError(fmt::format("train.global_batch_size = {} is smaller than the {} ranks (each needs a sequence)",
                                 global_, W));
  begin_ = cfg_.rank * global_ / W;
  end_ = (cfg_.rank + 1) * global_ / W;
  num_sequences_ = (stream_->size() - 1) / cfg_.T;
  const std::int64_t per_step = global_ * cfg_.grad_accum;
  steps_per_epoch_ = num_sequences_ / per_step;
  if (steps_per_epoch_ == 0)
    throw UsageError(fmt::format("{}: too few tokens for one step, which reads K·G·T + 1 = {}·{}·{} + 1 = {}",
                                 stream_->describe(), cfg_.grad_accum, global_, cfg_.T, per_step * cfg_.T + 1));
  scratch_.resize(static_cast<std::size_t>(cfg_.T + 1));
  build_permutation();
}

void DataLoader::build_permutation() {
  perm_.clear();
  if (cfg_.order != DataOrder::Shuffled) return;
  perm_.resize(static_cast<std::size_t>(num_sequences_));
  std::iota(perm_.begin(), perm_.end(), std::int64_t{0});
  rng::Stream r(rng::key(cfg_.seed, rng::hash_name("data-order") ^ rng::mix64(static_cast<std::uint64_t>(pos_.epoch))));
  for (std::int64_t i = num_sequences_ - 1; i > 0; --i)  // Fisher-Yates
    std::swap(perm_[static_cast<std::size_t>(i)],
              perm_[static_cast<std::size_t>(r.below(static_cast<std::uint64_t>(i + 1)))]);
}

std::int64_t DataLoader::sequence_start(int j, std::int64_t b) const {
  OS_CHECK(j >= 0 && j < cfg_.grad_accum, "micro-step {} outside [0, {})", j, cfg_.grad_accum);
  OS_CHECK(b >= 0 && b < rank_batch(), "sequence {} outside the batch [0, {})", b, rank_batch());
  const std::int64_t q = (pos_.step * cfg_.grad_accum + j) * global_ + begin_ + b;
  const std::int64_t seq = cfg_.order == DataOrder::Shuffled ? perm_[static_cast<std::size_t>(q)] : q;
  return seq * cfg_.T;
}

void DataLoader::load(int j, Tensor& inputs, Tensor& targets) const {
  const Shape want{rank_batch(), cfg_.T};
  if (!inputs.defined() || inputs.shape() != want || inputs.dtype() != DType::I32) inputs = Tensor::empty(want, DType::I32);
  if (!targets.defined() || targets.shape() != want || targets.dtype() != DType::I32)
    targets = Tensor::empty(want, DType::I32);
  std::int32_t* in = inputs.data<std::int32_t>();
  std::int32_t* tg = targets.data<std::int32_t>();
  for (std::int64_t b = 0; b < rank_batch(); ++b) {
    stream_->read(sequence_start(j, b), cfg_.T + 1, scratch_.data(), cfg_.vocab_size);
    std::copy_n(scratch_.begin(), cfg_.T, in + b * cfg_.T);
    std::copy_n(scratch_.begin() + 1, cfg_.T, tg + b * cfg_.T);
  }
}

void DataLoader::advance() {
  if (++pos_.step < steps_per_epoch_) return;
  pos_.step = 0;
  ++pos_.epoch;
  build_permutation();
}

void DataLoader::restore(const DataPosition& pos) {
  if (pos.epoch < 0 || pos.step < 0 || pos.step >= steps_per_epoch_)
    throw UsageError(fmt::format("data position (epoch {}, step {}) is outside this data ({} steps per epoch)",
                                 pos.epoch, pos.step, steps_per_epoch_));
  const bool reshuffle = pos.epoch != pos_.epoch;
  pos_ = pos;
  if (reshuffle) build_permutation();
}

}  // namespace orthoshard
