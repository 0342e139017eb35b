// HDF5 read helpers.
#include "runtime/io/h5file.hpp"

#include "runtime/core/error.hpp"

#include <filesystem>
#include <memory>

namespace orthoshard {

void h5_silence_errors() { H5Eset_auto2(H5E_DEFAULT, nullptr, nullptr); }

hid_t h5_native_type(DType dt) {
  switch (dt) {
    case DType::F32: return H5T_NATIVE_FLOAT;
    case DType::F64: return H5T_NATIVE_DOUBLE;
    case DType::I32: return H5T_NATIVE_INT32;
    case DType::I64: return H5T_NATIVE_INT64;
    case DType::U8: return H5T_NATIVE_UINT8;
    case DType::BF16: break;
  }
  fail("HDF5 has no native type for {}", dtype_name(dt));
}

namespace {
struct Handle {  // closes an HDF5 id with the right function
  hid_t id;
  herr_t (*close)(hid_t);
  ~Handle() {
    if (id >= 0) close(id);
  }
};
}  // namespace

H5File H5File::open_read(const std::string& path) {
  h5_silence_errors();
  if (!std::filesystem::exists(path)) throw UsageError("'" + path + "': no such file");
  if (H5Fis_hdf5(path.c_str()) <= 0) throw UsageError("'" + path + "': not an HDF5 file");
  hid_t id = H5Fopen(path.c_str(), H5F_ACC_RDONLY, H5P_DEFAULT);
  if (id < 0) throw UsageError("'" + path + "': cannot be opened as HDF5 (corrupt or truncated?)");
  return H5File(id, path);
}

H5File::~H5File() {
  if (id_ >= 0) H5Fclose(id_);
}

bool h5_exists(hid_t id_, const std::string& object) {
  // Check each path component so that a missing parent is not an error.
  std::string partial;
  std::size_t pos = 0;
  while (pos < object.size()) {
    std::size_t next = object.find('/', pos + 1);
    partial = object.substr(0, next);
    if (partial != "/" && !partial.empty() && H5Lexists(id_, partial.c_str(), H5P_DEFAULT) <= 0) return false;
    if (next == std::string::npos) break;
    pos = next;
  }
  return object == "/" || H5Oexists_by_name(id_, object.c_str(), H5P_DEFAULT) > 0;
}

bool h5_has_attr(hid_t id_, const std::string& object, const std::string& name) {
  return h5_exists(id_, object) && H5Aexists_by_name(id_, object.c_str(), name.c_str(), H5P_DEFAULT) > 0;
}

std::string h5_string_attr(hid_t id_, const std::string& path_, const std::string& object, const std::string& name) {
  if (!h5_has_attr(id_, object, name)) fail("'{}': {} has no attribute '{}'", path_, object, name);
  Handle a{H5Aopen_by_name(id_, object.c_str(), name.c_str(), H5P_DEFAULT, H5P_DEFAULT), H5Aclose};
  Handle type{H5Aget_type(a.id), H5Tclose};
  if (H5Tget_class(type.id) != H5T_STRING) fail("'{}': attribute {}@{} is not a string", path_, object, name);
  if (H5Tis_variable_str(type.id) > 0) {
    Handle mem{H5Tcopy(H5T_C_S1), H5Tclose};
    H5Tset_size(mem.id, H5T_VARIABLE);
    H5Tset_cset(mem.id, H5Tget_cset(type.id));
    char* s = nullptr;
    if (H5Aread(a.id, mem.id, &s) < 0) fail("'{}': cannot read attribute {}@{}", path_, object, name);
    std::string out = s ? s : "";
    H5free_memory(s);
    return out;
  }
  const std::size_t n = H5Tget_size(type.id);
  std::string out(n, '\0');
  if (H5Aread(a.id, type.id, out.data()) < 0) fail("'{}': cannot read attribute {}@{}", path_, object, name);
  while (!out.empty() && out.back() == '\0') out.pop_back();
  return out;
}

std::int64_t h5_int_attr(hid_t id_, const std::string& path_, const std::string& object, const std::string& name) {
  if (!h5_has_attr(id_, object, name)) fail("'{}': {} has no attribute '{}'", path_, object, name);
  Handle a{H5Aopen_by_name(id_, object.c_str(), name.c_str(), H5P_DEFAULT, H5P_DEFAULT), H5Aclose};
  Handle type{H5Aget_type(a.id), H5Tclose};
  if (H5Tget_class(type.id) != H5T_INTEGER) fail("'{}': attribute {}@{} is not an integer", path_, object, name);
  std::int64_t v = 0;
  if (H5Aread(a.id, H5T_NATIVE_INT64, &v) < 0) fail("'{}': cannot read attribute {}@{}", path_, object, name);
  return v;
}

double h5_double_attr(hid_t id_, const std::string& path_, const std::string& object, const std::string& name) {
  if (!h5_has_attr(id_, object, name)) fail("'{}': {} has no attribute '{}'", path_, object, name);
  Handle a{H5Aopen_by_name(id_, object.c_str(), name.c_str(), H5P_DEFAULT, H5P_DEFAULT), H5Aclose};
  Handle type{H5Aget_type(a.id), H5Tclose};
  const H5T_class_t cls = H5Tget_class(type.id);
  if (cls != H5T_FLOAT && cls != H5T_INTEGER) fail("'{}': attribute {}@{} is not a number", path_, object, name);
  double v = 0;
  if (H5Aread(a.id, H5T_NATIVE_DOUBLE, &v) < 0) fail("'{}': cannot read attribute {}@{}", path_, object, name);
  return v;
}

bool H5File::exists(const std::string& object) const { return h5_exists(id_, object); }
bool H5File::has_attr(const std::string& object, const std::string& name) const {
  return h5_has_attr(id_, object, name);
}
std::string H5File::string_attr(const std::string& object, const std::string& name) const {
  return h5_string_attr(id_, path_, object, name);
}
std::int64_t H5File::int_attr(const std::string& object, const std::string& name) const {
  return h5_int_attr(id_, path_, object, name);
}
double H5File::double_attr(const std::string& object, const std::string& name) const {
  return h5_double_attr(id_, path_, object, name);
}

std::vector<std::string> H5File::children(const std::string& group) const {
  if (!exists(group)) fail("'{}': no group '{}'", path_, group);
  Handle g{H5Gopen2(id_, group.c_str(), H5P_DEFAULT), H5Gclose};
  if (g.id < 0) fail("'{}': '{}' is not a group", path_, group);
  H5G_info_t info;
  H5Gget_info(g.id, &info);
  std::vector<std::string> out;
  for (hsize_t i = 0; i < info.nlinks; ++i) {
    ssize_t len = H5Lget_name_by_idx(g.id, ".", H5_INDEX_NAME, H5_ITER_INC, i, nullptr, 0, H5P_DEFAULT);
    std::string name(static_cast<std::size_t>(len), '\0');
    H5Lget_name_by_idx(g.id, ".", H5_INDEX_NAME, H5_ITER_INC, i, name.data(), static_cast<std::size_t>(len) + 1,
                       H5P_DEFAULT);
    out.push_back(name);
  }
  return out;
}

Shape H5File::dataset_shape(const std::string& dataset) const {
  if (!exists(dataset)) fail("'{}': no dataset '{}'", path_, dataset);
  Handle d{H5Dopen2(id_, dataset.c_str(), H5P_DEFAULT), H5Dclose};
  if (d.id < 0) fail("'{}': '{}' is not a dataset", path_, dataset);
  Handle space{H5Dget_space(d.id), H5Sclose};
  const int nd = H5Sget_simple_extent_ndims(space.id);
  std::vector<hsize_t> dims(static_cast<std::size_t>(std::max(nd, 0)));
  H5Sget_simple_extent_dims(space.id, dims.data(), nullptr);
  return Shape(dims.begin(), dims.end());
}

Tensor H5File::read(const std::string& dataset, DType as) const {
  Shape shape = dataset_shape(dataset);
  Tensor t = Tensor::empty(shape, as);
  Handle d{H5Dopen2(id_, dataset.c_str(), H5P_DEFAULT), H5Dclose};
  if (H5Dread(d.id, h5_native_type(as), H5S_ALL, H5S_ALL, H5P_DEFAULT, t.raw()) < 0)
    fail("'{}': cannot read dataset '{}' as {} (corrupt, or not numeric?)", path_, dataset, dtype_name(as));
  return t;
}

}  // namespace orthoshard
