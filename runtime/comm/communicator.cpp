// Backend-independent parts of the communicator: Request handles and tensor conveniences.
#include "runtime/comm/communicator.hpp"

#include "runtime/core/error.hpp"
#include "runtime/core/log.hpp"

namespace orthoshard {

std::string_view reduce_op_name(ReduceOp op) {
  switch (op) {
    case ReduceOp::Sum: return "sum";
    case ReduceOp::Mean: return "mean";
    case ReduceOp::Max: return "max";
  }
  return "invalid";
}

Request& Request::operator=(Request&& other) noexcept {
  if (this != &other) {
    if (op_) {
      try {
        op_->wait();
      } catch (const std::exception& e) {
        log::error_all("pending collective failed while its handle was replaced: {}", e.what());
      }
    }
    op_ = std::move(other.op_);
  }
  return *this;
}

Request::~Request() {
  if (!op_) return;
  try {
    op_->wait();
  } catch (const std::exception& e) {
    log::error_all("pending collective failed while its handle was destroyed: {}", e.what());
  }
}

void Request::wait() {
  if (!op_) return;
  auto op = std::move(op_);
  op->wait();
}

bool Request::test() {
  if (!op_) return true;
  if (!op_->test()) return false;
  op_.reset();
  return true;
}

static void check_host_contiguous(const Tensor& t, const char* what) {
  OS_CHECK(t.is_contiguous(), "{}: tensor {} is not contiguous", what, t.describe());
}

void Communicator::all_reduce(Tensor& t, ReduceOp op) {
  check_host_contiguous(t, "all_reduce");
  all_reduce(t.raw(), t.raw(), static_cast<std::size_t>(t.numel()), t.dtype(), op);
}

void Communicator::broadcast(Tensor& t, int root) {
  check_host_contiguous(t, "broadcast");
  broadcast(t.raw(), static_cast<std::size_t>(t.numel()), t.dtype(), root);
}

void Communicator::all_gather(const Tensor& shard, Tensor& full) {
  check_host_contiguous(shard, "all_gather");
  check_host_contiguous(full, "all_gather");
  OS_CHECK(shard.dtype() == full.dtype(), "all_gather: shard {} and output {} differ in dtype", shard.describe(),
           full.describe());
  OS_CHECK(full.numel() == shard.numel() * size(), "all_gather: output {} must hold {} x shard {}", full.describe(),
           size(), shard.describe());
  all_gather(shard.raw(), full.raw(), static_cast<std::size_t>(shard.numel()), shard.dtype());
}

void Communicator::reduce_scatter(const Tensor& full, Tensor& shard, ReduceOp op) {
  check_host_contiguous(shard, "reduce_scatter");
  check_host_contiguous(full, "reduce_scatter");
  OS_CHECK(shard.dtype() == full.dtype(), "reduce_scatter: input {} and shard {} differ in dtype", full.describe(),
           shard.describe());
  OS_CHECK(full.numel() == shard.numel() * size(), "reduce_scatter: input {} must hold {} x shard {}",
           full.describe(), size(), shard.describe());
  reduce_scatter(full.raw(), shard.raw(), static_cast<std::size_t>(shard.numel()), shard.dtype(), op);
}

double Communicator::all_reduce_scalar(double v, ReduceOp op) {
  all_reduce(&v, &v, 1, DType::F64, op);
  return v;
}

}  // namespace orthoshard
