// Read access to HDF5 files (serial open): attributes, group listings and whole datasets as tensors,
// with errors that name the file and the object.
#pragma once

#include "runtime/core/tensor.hpp"

#include <hdf5.h>

#include <cstdint>
#include <string>
#include <vector>

namespace orthoshard {

class H5File {
 public:
  // Opens read-only; a missing file or one that is not HDF5 is an error naming the path.
  static H5File open_read(const std::string& path);
  H5File(H5File&& o) noexcept : id_(o.id_), path_(std::move(o.path_)) { o.id_ = H5I_INVALID_HID; }
  H5File(const H5File&) = delete;
  ~H5File();

  const std::string& path() const { return path_; }
  bool exists(const std::string& object) const;  // "/params/w/grads"
  bool has_attr(const std::string& object, const std::string& name) const;
  std::string string_attr(const std::string& object, const std::string& name) const;
  std::int64_t int_attr(const std::string& object, const std::string& name) const;
  double double_attr(const std::string& object, const std::string& name) const;  // float or integer attribute
  std::vector<std::string> children(const std::string& group) const;  // names, in creation/name order
  Shape dataset_shape(const std::string& dataset) const;
  // The whole dataset converted to `as` (f32, f64, i32, i64 or u8).
  Tensor read(const std::string& dataset, DType as) const;

 private:
  H5File(hid_t id, std::string path) : id_(id), path_(std::move(path)) {}
  hid_t id_;
  std::string path_;
};

// Attribute and link helpers on an open file id, shared by H5File and the parallel checkpoint file.
// `path` names the file in error messages; `object` is an absolute path inside it ("/params/w").
bool h5_exists(hid_t file, const std::string& object);
bool h5_has_attr(hid_t file, const std::string& object, const std::string& name);
std::string h5_string_attr(hid_t file, const std::string& path, const std::string& object, const std::string& name);
std::int64_t h5_int_attr(hid_t file, const std::string& path, const std::string& object, const std::string& name);
double h5_double_attr(hid_t file, const std::string& path, const std::string& object, const std::string& name);

// Turns off HDF5's automatic error-stack printing; our errors carry the message instead.
void h5_silence_errors();
hid_t h5_native_type(DType dt);

}  // namespace orthoshard
