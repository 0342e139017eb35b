// Tensor: shape + strides over owned (64-byte aligned host) or borrowed memory, with a device tag.
#pragma once

#include "runtime/core/dtype.hpp"

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

namespace orthoshard {

enum class Device : std::uint8_t { CPU, CUDA };
std::string_view device_name(Device d);

using Shape = std::vector<std::int64_t>;
std::string shape_str(const Shape& s);  // "(3, 4)"
std::int64_t shape_numel(const Shape& s);

// Host allocation aligned to kHostAlignment bytes (cache line / AVX-512 friendly).
inline constexpr std::size_t kHostAlignment = 64;
std::shared_ptr<std::byte> aligned_host_alloc(std::size_t bytes);

class Tensor {
 public:
  Tensor() = default;

  // Owning, uninitialised host tensor.
  static Tensor empty(Shape shape, DType dtype);
  static Tensor zeros(Shape shape, DType dtype);
  // Non-owning view of memory the caller keeps alive (host or device pointer).
  static Tensor borrow(void* data, Shape shape, DType dtype, Device device = Device::CPU);
  template <typename T>
  static Tensor borrow(T* data, Shape shape) {
    return borrow(static_cast<void*>(data), std::move(shape), dtype_of<std::remove_const_t<T>>());
  }

  bool defined() const { return data_ != nullptr || numel() == 0; }
  bool owns_memory() const { return storage_ != nullptr; }
  const Shape& shape() const { return shape_; }
  const Shape& strides() const { return strides_; }  // in elements
  int ndim() const { return static_cast<int>(shape_.size()); }
  std::int64_t dim(int i) const;
  std::int64_t numel() const { return shape_numel(shape_); }
  std::size_t nbytes() const { return static_cast<std::size_t>(numel()) * dtype_size(dtype_); }
  DType dtype() const { return dtype_; }
  Device device() const { return device_; }
  bool is_contiguous() const;

  void* raw() const { return data_; }
  template <typename T>
  T* data() const {
    check_access(dtype_of<std::remove_const_t<T>>());
    return reinterpret_cast<T*>(data_);
  }

  // View of rows [begin, end) along dim 0; shares memory (and ownership) with this tensor.
  Tensor rows(std::int64_t begin, std::int64_t end) const;
  // View with another shape of the same numel; needs a contiguous tensor.
  Tensor reshape(Shape shape) const;
  // 2-D view (dim 0, product of the rest): how matrix optimizers see 3-D/4-D weights.
  Tensor as_matrix() const;
  // Deep copy into a new owning contiguous host tensor.
  Tensor clone() const;
  void fill_zero();

  std::string describe() const;  // "f32(3, 4) cpu"

 private:
  void check_access(DType want) const;

  std::shared_ptr<std::byte> storage_;  // null when borrowed
  std::byte* data_ = nullptr;
  Shape shape_;
  Shape strides_;
  DType dtype_ = DType::F32;
  Device device_ = Device::CPU;
};

}  // namespace orthoshard
