// Tensor storage, views and checks.
#include "runtime/core/tensor.hpp"

#include "runtime/core/error.hpp"

#include <cstdlib>
#include <new>

namespace orthoshard {

std::string_view device_name(Device d) { return d == Device::CPU ? "cpu" : "cuda"; }

std::string shape_str(const Shape& s) {
  std::string out = "(";
  for (std::size_t i = 0; i < s.size(); ++i) out += (i ? ", " : "") + std::to_string(s[i]);
  return out + (s.size() == 1 ? ",)" : ")");
}

std::int64_t shape_numel(const Shape& s) {
  std::int64_t n = 1;
  for (auto d : s) n *= d;
  return n;
}

std::shared_ptr<std::byte> aligned_host_alloc(std::size_t bytes) {
  std::size_t padded = (bytes + kHostAlignment - 1) / kHostAlignment * kHostAlignment;
  if (padded == 0) padded = kHostAlignment;
  void* p = std::aligned_alloc(kHostAlignment, padded);
  if (!p) fail("out of host memory allocating {} bytes", bytes);
  return std::shared_ptr<std::byte>(static_cast<std::byte*>(p), [](std::byte* q) { std::free(q); });
}

static Shape contiguous_strides(const Shape& shape) {
  Shape st(shape.size());
  std::int64_t s = 1;
  for (std::size_t i = shape.size(); i-- > 0;) {
    st[i] = s;
    s *= shape[i];
  }
  return st;
}

static void check_shape(const Shape& shape) {
  for (auto d : shape) OS_CHECK(d >= 0, "negative dimension in shape {}", shape_str(shape));
}

Tensor Tensor::empty(Shape shape, DType dtype) {
  check_shape(shape);
  Tensor t;
  t.dtype_ = dtype;
  t.storage_ = aligned_host_alloc(static_cast<std::size_t>(shape_numel(shape)) * dtype_size(dtype));
  t.data_ = t.storage_.get();
  t.strides_ = contiguous_strides(shape);
  t.shape_ = std::move(shape);
  return t;
}

Tensor Tensor::zeros(Shape shape, DType dtype) {
  Tensor t = empty(std::move(shape), dtype);
  t.fill_zero();
  return t;
}

Tensor Tensor::borrow(void* data, Shape shape, DType dtype, Device device) {
  check_shape(shape);
  OS_CHECK(data != nullptr || shape_numel(shape) == 0, "borrowing a null pointer for a tensor of shape {}",
           shape_str(shape));
  Tensor t;
  t.dtype_ = dtype;
  t.device_ = device;
  t.data_ = static_cast<std::byte*>(data);
  t.strides_ = contiguous_strides(shape);
  t.shape_ = std::move(shape);
  return t;
}

std::int64_t Tensor::dim(int i) const {
  OS_CHECK(i >= 0 && i < ndim(), "dimension {} out of range for tensor {}", i, describe());
  return shape_[i];
}

bool Tensor::is_contiguous() const { return strides_ == contiguous_strides(shape_); }

Tensor Tensor::rows(std::int64_t begin, std::int64_t end) const {
  OS_CHECK(ndim() >= 1, "row view of a 0-d tensor");
  OS_CHECK(0 <= begin && begin <= end && end <= shape_[0], "row range [{}, {}) out of bounds for tensor {}", begin,
           end, describe());
  Tensor v = *this;
  v.shape_[0] = end - begin;
  if (data_) v.data_ = data_ + begin * strides_[0] * static_cast<std::int64_t>(dtype_size(dtype_));
  return v;
}

Tensor Tensor::reshape(Shape shape) const {
  check_shape(shape);
  OS_CHECK(is_contiguous(), "reshape of a non-contiguous tensor {}", describe());
  OS_CHECK(shape_numel(shape) == numel(), "cannot reshape tensor {} to {}", describe(), shape_str(shape));
  Tensor v = *this;
  v.strides_ = contiguous_strides(shape);
  v.shape_ = std::move(shape);
  return v;
}

Tensor Tensor::as_matrix() const {
  OS_CHECK(ndim() >= 1, "matrix view of a 0-d tensor");
  return reshape({shape_[0], shape_[0] == 0 ? 0 : numel() / shape_[0]});
}

Tensor Tensor::clone() const {
  OS_CHECK(device_ == Device::CPU, "clone of a {} tensor on the host", device_name(device_));
  OS_CHECK(is_contiguous(), "clone of a non-contiguous tensor {}", describe());
  Tensor c = empty(shape_, dtype_);
  if (nbytes()) std::memcpy(c.data_, data_, nbytes());
  return c;
}

void Tensor::fill_zero() {
  OS_CHECK(device_ == Device::CPU && is_contiguous(), "fill_zero needs a contiguous host tensor, got {}", describe());
  if (nbytes()) std::memset(data_, 0, nbytes());
}

std::string Tensor::describe() const {
  return fmt::format("{}{} {}", dtype_name(dtype_), shape_str(shape_), device_name(device_));
}

void Tensor::check_access(DType want) const {
  OS_CHECK(want == dtype_, "tensor {} accessed as {}", describe(), dtype_name(want));
}

}  // namespace orthoshard
