// The FSDP engine in host memory (CPU training): the ShardedEngine of sharded_engine.hpp over MPI, with
// f32 computation on the gathered parameters and f32 gradient accumulation.
#pragma once

#include "runtime/comm/communicator.hpp"
#include "runtime/fsdp/sharded_engine.hpp"

#include <memory>
#include <string>
#include <vector>

namespace orthoshard {

struct FsdpOptions {
  DType param_dtype = DType::F32;   // dtype of all-gathers (f32 or bf16; compute is f32)
  DType reduce_dtype = DType::F32;  // dtype of gradient reductions (f32 or bf16)
  // true: prefetch and reduce_grads start non-blocking collectives that complete later; false: every
  // collective runs blocking where it is issued (prefetch does nothing). With MPI on the CPU nothing
  // progresses in the background, and the blocking calls use the faster tuned algorithms.
  bool overlap = true;
};

class FsdpEngine final : public ShardedEngine {
 public:
  // shard: the group parameters are sharded over. replica: ranks holding the same shards (hybrid
  // sharding), or null.
  FsdpEngine(std::vector<FsdpUnitSpec> units, Communicator& shard, Communicator* replica, FsdpOptions opt = {});
  ~FsdpEngine() override;

  Tensor shard(const std::string& param) const override;
  Tensor grad_shard(const std::string& param) const override;
  void shard_to_host(const std::string& param, Tensor& dst) const override;
  void shard_from_host(const std::string& param, const Tensor& src) override;
  Tensor full(const std::string& param) const override;  // f32
  double clip_grad_norm(double max_norm) override;
  FsdpMemory memory() const override;

 private:
  struct Unit;
  void start_gather(std::size_t u) override;
  void finish_gather(std::size_t u) override;
  void drop_full(std::size_t u) override;
  void alloc_grads(std::size_t u) override;
  void free_grads(std::size_t u) override;
  Tensor grad_view(const std::string& param) const override;  // f32
  void start_reduce(std::size_t u, bool add) override;
  void finish_reduce(std::size_t u, bool add, bool replica) override;
  Tensor view(const Tensor& buffer, const std::string& param, bool full_layout) const;

  Communicator& shard_;
  Communicator* replica_;
  FsdpOptions opt_;
  std::vector<std::unique_ptr<Unit>> units_;
};

}  // namespace orthoshard
