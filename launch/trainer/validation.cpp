#include "launch/trainer/validation.hpp"

#include "runtime/core/error.hpp"

#include <filesystem>

namespace orthoshard {

std::string validation_path(const TrainConfig& cfg) {
  const std::string& p = cfg.eval.path;
  if (p == "none") return "";
  if (p != "auto") return p;
  const std::string& data = cfg.data.path;
  if (data == "builtin:synthetic") return "builtin:synthetic:val";
  if (data.ends_with(".bin")) {
    const std::string val = data.substr(0, data.size() - 4) + "_val.bin";
    std::error_code ec;
    if (std::filesystem::is_regular_file(val, ec)) return val;
  }
  return "";
}

Validation::Validation(const std::string& path, const TrainConfig& cfg, std::int64_t vocab, int rank, int world)
    : stream_(TokenStream::open(path)),
      T_(cfg.train.seq_len),
      B_(cfg.train.batch_size),
      sequences_(0),
      rank_(rank),
      world_(world) {
  stream_->check_vocab(vocab, rank, world);
  const std::int64_t fit = (stream_->size() - 1) / T_;  // whole windows of T + 1 tokens
  if (fit < 1)
    throw UsageError(fmt::format("eval.path '{}': {} tokens, fewer than one sequence of train.seq_len + 1 = {}", path,
                                 stream_->size(), T_ + 1));
  sequences_ = std::min(cfg.eval.batches * B_, fit);
}

std::string Validation::describe() const {
  return fmt::format("'{}': {} sequences of {} tokens", stream_->spec(), sequences_, T_);
}

double Validation::run(Communicator& world, UnitRunner& runner, const std::function<void()>& forward) {
  runner.set_batch(1, T_, 1);
  Tensor inputs = Tensor::empty({1, T_}, DType::I32);
  Tensor targets = Tensor::empty({1, T_}, DType::I32);
  std::vector<std::int32_t> window(static_cast<std::size_t>(T_ + 1));
  const std::int64_t rounds = (sequences_ + world_ - 1) / world_;
  double sum = 0;
  for (std::int64_t k = 0; k < rounds; ++k) {
    const std::int64_t i = k * world_ + rank_;
    const bool mine = i < sequences_;
    stream_->read((mine ? i : 0) * T_, T_ + 1, window.data());
    std::copy(window.begin(), window.end() - 1, inputs.data<std::int32_t>());
    std::copy(window.begin() + 1, window.end(), targets.data<std::int32_t>());
    runner.set_tokens(inputs, targets);
    forward();
    const double loss = runner.take_loss_sum();
    if (mine) sum += loss;
  }
  return world.all_reduce_scalar(sum, ReduceOp::Sum) / static_cast<double>(sequences_);
}

}  // namespace orthoshard
