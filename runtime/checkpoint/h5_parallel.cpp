// Parallel HDF5 (MPI-IO) file access by row hyperslabs, with per-dataset row checksums.
#include "runtime/checkpoint/h5_parallel.hpp"

#include "runtime/io/h5file.hpp"

#include "runtime/comm/mpi_communicator.hpp"
#include "runtime/comm/mpi_hang_guard.hpp"
#include "runtime/core/error.hpp"

#include <sys/statvfs.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <cstdlib>
#include <cerrno>
#include <filesystem>

namespace orthoshard {
namespace {

struct Handle {  // closes an HDF5 id with the right function
  hid_t id;
  herr_t (*close)(hid_t);
  Handle(hid_t i, herr_t (*c)(hid_t)) : id(i), close(c) {}
  Handle(const Handle&) = delete;
  ~Handle() {
    if (id >= 0) close(id);
  }
};

void silence() { H5Eset_auto2(H5E_DEFAULT, nullptr, nullptr); }

MPI_Comm native_comm(Communicator* comm) {
  auto* mpi = dynamic_cast<MpiCommunicator*>(comm);
  OS_CHECK(mpi != nullptr, "parallel HDF5 needs an MPI communicator, got the {} backend", comm->backend());
  return mpi->native();
}

hid_t make_fapl(Communicator* comm, const H5ParallelOptions& opt) {
  hid_t fapl = H5Pcreate(H5P_FILE_ACCESS);
  if (comm) {
    H5Pset_fapl_mpio(fapl, native_comm(comm), MPI_INFO_NULL);
    H5Pset_all_coll_metadata_ops(fapl, true);  // metadata read once and broadcast
    H5Pset_coll_metadata_write(fapl, true);    // metadata written collectively
  }
  if (opt.alignment_bytes > 1) H5Pset_alignment(fapl, opt.align_threshold_bytes, opt.alignment_bytes);
  H5Pset_meta_block_size(fapl, 64 << 10);  // keep small metadata together
  return fapl;
}

std::vector<hsize_t> dims_of(const Shape& s) { return std::vector<hsize_t>(s.begin(), s.end()); }

// What the OS said about the last failed call, when it said anything (MPI-IO and HDF5 keep errno from the write).
std::string os_error(const std::string& path) {
  const int e = errno;
  if (e != 0) return fmt::format(": {}", std::strerror(e));
  // MPI-IO may not keep errno: a filesystem with no room left says what happened.
  struct statvfs st {};
  const std::string dir = std::filesystem::path(path).parent_path().string();
  if (::statvfs(dir.empty() ? "." : dir.c_str(), &st) == 0 && st.f_bavail * st.f_frsize < (64u << 10))
    return fmt::format(": {} ({} is full)", std::strerror(ENOSPC), dir.empty() ? "." : dir);
  return " (disk full, quota or I/O error?)";
}

// Test hook: ORTHOSHARD_CHECKPOINT_FAIL=write:K fails the K-th dataset write of every file on every rank with
// ENOSPC, write:K@R on rank R only (after the collective write itself, as a real error inside it would).
bool injected_write_failure(std::int64_t write, int rank) {
  const char* v = std::getenv("ORTHOSHARD_CHECKPOINT_FAIL");
  if (!v || std::strncmp(v, "write:", 6) != 0) return false;
  char* end = nullptr;
  const long k = std::strtol(v + 6, &end, 10);
  const long r = (end && *end == '@') ? std::strtol(end + 1, nullptr, 10) : -1;
  return k == write && (r < 0 || r == rank);
}

std::int64_t row_elems(const Shape& s) {
  std::int64_t n = 1;
  for (std::size_t i = 1; i < s.size(); ++i) n *= s[i];
  return n;
}

std::int64_t num_rows(const Shape& s) { return s.empty() ? 1 : s[0]; }

// File space of `dataset` with rows [first, first + rows) selected (none when rows = 0).
hid_t select_rows(hid_t space, const Shape& global, std::int64_t first, std::int64_t rows) {
  if (rows == 0) {
    H5Sselect_none(space);
  } else if (!global.empty()) {
    std::vector<hsize_t> start(global.size(), 0), count = dims_of(global);
    start[0] = static_cast<hsize_t>(first);
    count[0] = static_cast<hsize_t>(rows);
    H5Sselect_hyperslab(space, H5S_SELECT_SET, start.data(), nullptr, count.data(), nullptr);
  }
  return space;
}

hid_t memory_space(const Shape& global, std::int64_t rows) {
  if (global.empty()) {
    hid_t s = H5Screate(H5S_SCALAR);
    if (rows == 0) H5Sselect_none(s);
    return s;
  }
  std::vector<hsize_t> d = dims_of(global);
  d[0] = static_cast<hsize_t>(rows);
  hid_t s = H5Screate_simple(static_cast<int>(d.size()), d.data(), nullptr);
  if (rows == 0) H5Sselect_none(s);
  return s;
}

DType dtype_of_h5(hid_t type, const std::string& where) {
  const H5T_class_t cls = H5Tget_class(type);
  const std::size_t size = H5Tget_size(type);
  if (cls == H5T_FLOAT && size == 4) return DType::F32;
  if (cls == H5T_FLOAT && size == 8) return DType::F64;
  if (cls == H5T_INTEGER) {
    const bool sign = H5Tget_sign(type) == H5T_SGN_2;
    if (size == 8 && sign) return DType::I64;
    if (size == 4 && sign) return DType::I32;
    if (size == 1 && !sign) return DType::U8;
  }
  fail("{}: unsupported stored type (class {}, {} bytes)", where, static_cast<int>(cls), size);
}

}  // namespace

std::string h5_version_string() {
  unsigned maj = 0, min = 0, rel = 0;
  H5get_libversion(&maj, &min, &rel);
  return fmt::format("{}.{}.{}", maj, min, rel);
}

hid_t h5_file_type(DType dt) {
  switch (dt) {
    case DType::F32: return H5T_IEEE_F32LE;
    case DType::F64: return H5T_IEEE_F64LE;
    case DType::I32: return H5T_STD_I32LE;
    case DType::I64: return H5T_STD_I64LE;
    case DType::U8: return H5T_STD_U8LE;
    case DType::BF16: break;
  }
  fail("checkpoint datasets cannot store {}", dtype_name(dt));
}

H5ParallelFile::H5ParallelFile(hid_t id, std::string path, Communicator* comm, H5ParallelOptions opt)
    : id_(id), path_(std::move(path)), comm_(comm), opt_(opt) {
  dxpl_ = H5Pcreate(H5P_DATASET_XFER);
  if (comm_) {
    H5Pset_dxpl_mpio(dxpl_, H5FD_MPIO_COLLECTIVE);
    if (!opt_.collective_buffering) H5Pset_dxpl_mpio_collective_opt(dxpl_, H5FD_MPIO_INDIVIDUAL_IO);
  }
}

H5ParallelFile::H5ParallelFile(H5ParallelFile&& o) noexcept
    : id_(o.id_), path_(std::move(o.path_)), comm_(o.comm_), opt_(o.opt_), dxpl_(o.dxpl_),
      summed_(std::move(o.summed_)), partials_(std::move(o.partials_)), bytes_written_(o.bytes_written_),
      bytes_read_(o.bytes_read_) {
  o.id_ = H5I_INVALID_HID;
  o.dxpl_ = H5I_INVALID_HID;
}

H5ParallelFile::~H5ParallelFile() {
  if (dxpl_ >= 0) H5Pclose(dxpl_);
  if (id_ >= 0) {
    const MpiHangGuard::Watch watch("HDF5 close (collective)", 0);
    H5Fclose(id_);
  }
}

void H5ParallelFile::agree(const std::string& error) {
  if (!comm_) {
    if (!error.empty()) throw Error(error);
    return;
  }
  // The lowest failing rank's message goes to every rank.
  const int n = comm_->size();
  const double mine = error.empty() ? n : comm_->rank();
  const int first = static_cast<int>(-comm_->all_reduce_scalar(-mine, ReduceOp::Max));
  if (first >= n) return;
  std::int64_t len = comm_->rank() == first ? static_cast<std::int64_t>(error.size()) : 0;
  comm_->broadcast(&len, 1, DType::I64, first);
  std::string msg = comm_->rank() == first ? error : std::string(static_cast<std::size_t>(len), '\0');
  if (len > 0) comm_->broadcast(msg.data(), static_cast<std::size_t>(len), DType::U8, first);
  throw Error(comm_->rank() == first || n == 1 ? msg : fmt::format("{} (on rank {})", msg, first));
}

void H5ParallelFile::discard() {
  if (dxpl_ >= 0) H5Pclose(dxpl_);
  dxpl_ = H5I_INVALID_HID;
  const bool lead = !comm_ || comm_->rank() == 0;
  if (lead) {
    [[maybe_unused]] const int rc = ::truncate(path_.c_str(), 0);  // frees the space a full disk needs to close
  }
  try {
    if (comm_) comm_->barrier();
  } catch (const std::exception&) {
  }
  if (id_ >= 0) {
    const MpiHangGuard::Watch watch("HDF5 close of a failed file (collective)", 0);
    H5Fclose(id_);  // errors ignored: the file is deleted next
    id_ = H5I_INVALID_HID;
  }
  try {
    if (comm_) comm_->barrier();
  } catch (const std::exception&) {
  }
  if (lead) ::unlink(path_.c_str());
}

hid_t H5ParallelFile::dxpl() const { return dxpl_; }

H5ParallelFile H5ParallelFile::create(const std::string& path, Communicator* comm, const H5ParallelOptions& opt) {
  silence();
  const MpiHangGuard::Watch watch("HDF5 file create (collective)", 0);
  Handle fapl(make_fapl(comm, opt), H5Pclose);
  hid_t id = H5Fcreate(path.c_str(), H5F_ACC_TRUNC, H5P_DEFAULT, fapl.id);
  if (id < 0) fail("'{}': cannot create the HDF5 file (directory missing or not writable?)", path);
  return H5ParallelFile(id, path, comm, opt);
}

H5ParallelFile H5ParallelFile::open_read(const std::string& path, Communicator* comm, const H5ParallelOptions& opt) {
  check_readable(path);
  const MpiHangGuard::Watch watch("HDF5 file open (collective)", 0);
  Handle fapl(make_fapl(comm, opt), H5Pclose);
  hid_t id = H5Fopen(path.c_str(), H5F_ACC_RDONLY, fapl.id);
  if (id < 0) fail("'{}': cannot be opened as HDF5 (corrupt or truncated?)", path);
  return H5ParallelFile(id, path, comm, opt);
}

void H5ParallelFile::check_readable(const std::string& path) {
  silence();
  if (!std::filesystem::is_regular_file(path)) throw UsageError("'" + path + "': no such file");
  if (H5Fis_hdf5(path.c_str()) <= 0) fail("'{}': not an HDF5 file (corrupt or truncated?)", path);
}

void H5ParallelFile::flush() {
  const MpiHangGuard::Watch watch("HDF5 flush (collective)", 0);
  errno = 0;
  agree(H5Fflush(id_, H5F_SCOPE_GLOBAL) < 0 ? fmt::format("'{}': flush failed{}", path_, os_error(path_)) : "");
}

void H5ParallelFile::close() {
  if (dxpl_ >= 0) H5Pclose(dxpl_);
  dxpl_ = H5I_INVALID_HID;
  if (id_ < 0) return;
  const MpiHangGuard::Watch watch("HDF5 close (collective)", 0);
  errno = 0;
  const herr_t rc = H5Fclose(id_);
  const std::string error = rc < 0 ? fmt::format("'{}': closing the file failed{}", path_, os_error(path_)) : "";
  if (rc >= 0) id_ = H5I_INVALID_HID;  // else still open: discard() closes it once the space is freed
  agree(error);
}

// ---------------------------------------------------------------- writing

void H5ParallelFile::create_group(const std::string& group) {
  const MpiHangGuard::Watch watch("HDF5 group create (collective metadata)", 0);
  std::string error;
  try {
    create_groups(group);
  } catch (const std::exception& e) {
    error = e.what();
  }
  agree(error);
}

void H5ParallelFile::create_groups(const std::string& group) {
  std::string partial;
  std::size_t pos = 0;
  while (pos < group.size()) {
    const std::size_t next = group.find('/', pos + 1);
    partial = group.substr(0, next);
    if (!partial.empty() && partial != "/" && H5Lexists(id_, partial.c_str(), H5P_DEFAULT) <= 0) {
      Handle g(H5Gcreate2(id_, partial.c_str(), H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT), H5Gclose);
      if (g.id < 0) fail("'{}': cannot create group '{}'", path_, partial);
    }
    if (next == std::string::npos) break;
    pos = next;
  }
}

namespace {
void write_attr(hid_t file, const std::string& path, const std::string& object, const std::string& name, hid_t type,
                const void* value) {
  const MpiHangGuard::Watch watch("HDF5 attribute write (collective metadata)", 0);
  if (H5Aexists_by_name(file, object.c_str(), name.c_str(), H5P_DEFAULT) > 0)
    H5Adelete_by_name(file, object.c_str(), name.c_str(), H5P_DEFAULT);
  Handle space(H5Screate(H5S_SCALAR), H5Sclose);
  Handle a(H5Acreate_by_name(file, object.c_str(), name.c_str(), type, space.id, H5P_DEFAULT, H5P_DEFAULT,
                             H5P_DEFAULT),
           H5Aclose);
  if (a.id < 0 || H5Awrite(a.id, type, value) < 0)
    fail("'{}': cannot write attribute {}@{}{}", path, object, name, os_error(path));
}
}  // namespace

void H5ParallelFile::agreed_attr(const std::string& object, const std::string& name, hid_t type, const void* value) {
  std::string error;
  errno = 0;
  try {
    write_attr(id_, path_, object, name, type, value);
  } catch (const std::exception& e) {
    error = e.what();
  }
  agree(error);
}

void H5ParallelFile::set_attr(const std::string& object, const std::string& name, const std::string& value) {
  Handle type(H5Tcopy(H5T_C_S1), H5Tclose);
  H5Tset_size(type.id, H5T_VARIABLE);
  H5Tset_cset(type.id, H5T_CSET_UTF8);
  const char* p = value.c_str();
  agreed_attr(object, name, type.id, &p);
}

void H5ParallelFile::set_attr(const std::string& object, const std::string& name, std::int64_t value) {
  agreed_attr(object, name, H5T_NATIVE_INT64, &value);
}

void H5ParallelFile::set_attr(const std::string& object, const std::string& name, double value) {
  agreed_attr(object, name, H5T_NATIVE_DOUBLE, &value);
}

void H5ParallelFile::set_attr_u64(const std::string& object, const std::string& name, std::uint64_t value) {
  agreed_attr(object, name, H5T_NATIVE_UINT64, &value);
}

void H5ParallelFile::record(const std::string& dataset, const RowChecksum& part) {
  auto it = std::find(summed_.begin(), summed_.end(), dataset);
  if (it == summed_.end()) {
    summed_.push_back(dataset);
    partials_.push_back(part);
  } else {
    RowChecksum& c = partials_[static_cast<std::size_t>(it - summed_.begin())];
    c.lo += part.lo;
    c.hi += part.hi;
  }
}

void H5ParallelFile::write_rows(const std::string& dataset, const Shape& global, DType dt, std::int64_t first_row,
                                std::int64_t rows, const void* data) {
  OS_CHECK(rows >= 0 && first_row >= 0 && first_row + rows <= num_rows(global),
           "'{}': rows [{}, {}) outside dataset {} {}", path_, first_row, first_row + rows, dataset, shape_str(global));
  OS_CHECK(rows == 0 || data != nullptr, "'{}': no data for {}", path_, dataset);
  const MpiHangGuard::Watch watch("HDF5 collective write", static_cast<std::size_t>(rows * row_elems(global)) * dtype_size(dt));
  Handle fspace(global.empty() ? H5Screate(H5S_SCALAR)
                               : H5Screate_simple(static_cast<int>(global.size()), dims_of(global).data(), nullptr),
                H5Sclose);
  Handle dcpl(H5Pcreate(H5P_DATASET_CREATE), H5Pclose);
  H5Pset_layout(dcpl.id, H5D_CONTIGUOUS);
  H5Pset_fill_time(dcpl.id, H5D_FILL_TIME_NEVER);  // every byte is written
  if (comm_) H5Pset_alloc_time(dcpl.id, H5D_ALLOC_TIME_EARLY);
  errno = 0;
  Handle d(H5Dcreate2(id_, dataset.c_str(), h5_file_type(dt), fspace.id, H5P_DEFAULT, dcpl.id, H5P_DEFAULT),
           H5Dclose);
  agree(d.id < 0 ? fmt::format("'{}': cannot create dataset '{}' {}{}", path_, dataset, shape_str(global), os_error(path_))
                 : "");
  Handle mspace(memory_space(global, rows), H5Sclose);
  select_rows(fspace.id, global, first_row, rows);
  errno = 0;
  std::string error;
  if (H5Dwrite(d.id, h5_file_type(dt), mspace.id, fspace.id, dxpl(), data) < 0)
    error = fmt::format("'{}': writing dataset '{}' failed{}", path_, dataset, os_error(path_));
  ++writes_;
  if (error.empty() && injected_write_failure(writes_, comm_ ? comm_->rank() : 0))
    error = fmt::format("'{}': writing dataset '{}' failed: {} (injected: ORTHOSHARD_CHECKPOINT_FAIL)", path_, dataset,
                        std::strerror(ENOSPC));
  agree(error);
  const std::size_t row_bytes = static_cast<std::size_t>(row_elems(global)) * dtype_size(dt);
  RowChecksum part;
  part.add_rows(data, first_row, rows, row_bytes);
  record(dataset, part);
  bytes_written_ += static_cast<std::uint64_t>(rows) * row_bytes;
}

void H5ParallelFile::write_checksums() {
  std::vector<std::int64_t> sums(2 * partials_.size());
  for (std::size_t i = 0; i < partials_.size(); ++i) {
    sums[2 * i] = partials_[i].lo;
    sums[2 * i + 1] = partials_[i].hi;
  }
  if (comm_ && !sums.empty()) comm_->all_reduce(sums.data(), sums.data(), sums.size(), DType::I64, ReduceOp::Sum);
  for (std::size_t i = 0; i < summed_.size(); ++i)
    set_attr_u64(summed_[i], "checksum", RowChecksum{sums[2 * i], sums[2 * i + 1]}.value());
  summed_.clear();
  partials_.clear();
}

// ---------------------------------------------------------------- reading

bool H5ParallelFile::exists(const std::string& object) const { return h5_exists(id_, object); }

bool H5ParallelFile::is_group(const std::string& object) const {
  if (!exists(object)) return false;
  H5O_info_t info;
  if (H5Oget_info_by_name(id_, object.c_str(), &info, H5P_DEFAULT) < 0) return false;
  return info.type == H5O_TYPE_GROUP;
}

std::vector<std::string> H5ParallelFile::children(const std::string& group) const {
  if (!is_group(group)) fail("'{}': no group '{}'", path_, group);
  Handle g(H5Gopen2(id_, group.c_str(), H5P_DEFAULT), H5Gclose);
  H5G_info_t info;
  if (H5Gget_info(g.id, &info) < 0) fail("'{}': cannot list group '{}'", path_, group);
  std::vector<std::string> out;
  for (hsize_t i = 0; i < info.nlinks; ++i) {
    const ssize_t len = H5Lget_name_by_idx(g.id, ".", H5_INDEX_NAME, H5_ITER_INC, i, nullptr, 0, H5P_DEFAULT);
    if (len < 0) fail("'{}': cannot list group '{}'", path_, group);
    std::string name(static_cast<std::size_t>(len), '\0');
    H5Lget_name_by_idx(g.id, ".", H5_INDEX_NAME, H5_ITER_INC, i, name.data(), static_cast<std::size_t>(len) + 1,
                       H5P_DEFAULT);
    out.push_back(name);
  }
  return out;
}

bool H5ParallelFile::has_attr(const std::string& object, const std::string& name) const {
  return h5_has_attr(id_, object, name);
}
std::string H5ParallelFile::string_attr(const std::string& object, const std::string& name) const {
  return h5_string_attr(id_, path_, object, name);
}
std::int64_t H5ParallelFile::int_attr(const std::string& object, const std::string& name) const {
  return h5_int_attr(id_, path_, object, name);
}
double H5ParallelFile::double_attr(const std::string& object, const std::string& name) const {
  return h5_double_attr(id_, path_, object, name);
}

H5DatasetInfo H5ParallelFile::info(const std::string& dataset) const {
  if (!exists(dataset)) fail("'{}': no dataset '{}'", path_, dataset);
  Handle d(H5Dopen2(id_, dataset.c_str(), H5P_DEFAULT), H5Dclose);
  if (d.id < 0) fail("'{}': '{}' is not a dataset (corrupt?)", path_, dataset);
  Handle space(H5Dget_space(d.id), H5Sclose);
  Handle type(H5Dget_type(d.id), H5Tclose);
  const int nd = H5Sget_simple_extent_ndims(space.id);
  if (nd < 0) fail("'{}': cannot read the shape of '{}' (corrupt?)", path_, dataset);
  std::vector<hsize_t> dims(static_cast<std::size_t>(nd));
  H5Sget_simple_extent_dims(space.id, dims.data(), nullptr);
  H5DatasetInfo out;
  out.shape = Shape(dims.begin(), dims.end());
  out.dtype = dtype_of_h5(type.id, "'" + path_ + "': " + dataset);
  out.storage_bytes = H5Dget_storage_size(d.id);
  if (H5Aexists(d.id, "checksum") > 0) {
    Handle a(H5Aopen(d.id, "checksum", H5P_DEFAULT), H5Aclose);
    std::uint64_t v = 0;
    if (H5Aread(a.id, H5T_NATIVE_UINT64, &v) >= 0) out.checksum = v;
  }
  return out;
}

Tensor H5ParallelFile::read_rows(const std::string& dataset, std::int64_t first_row, std::int64_t rows,
                                 bool count_checksum) {
  const H5DatasetInfo in = info(dataset);
  Shape local = in.shape;
  if (!local.empty()) local[0] = rows;
  Tensor t = Tensor::empty(local, in.dtype);  // 0-d: one element, filled only when read
  read_rows_into(dataset, first_row, rows, count_checksum, in.dtype, t.raw());
  return t;
}

void H5ParallelFile::read_rows_into(const std::string& dataset, std::int64_t first_row, std::int64_t rows,
                                    bool count_checksum, DType dt, void* out) {
  const H5DatasetInfo in = info(dataset);
  const Shape& global = in.shape;
  OS_CHECK(rows >= 0 && first_row >= 0 && first_row + rows <= num_rows(global),
           "'{}': rows [{}, {}) outside dataset {} {}", path_, first_row, first_row + rows, dataset, shape_str(global));
  OS_CHECK(dt == in.dtype, "'{}': dataset {} is {}, read as {}", path_, dataset, dtype_name(in.dtype), dtype_name(dt));
  OS_CHECK(rows == 0 || out != nullptr, "'{}': no memory to read {} into", path_, dataset);
  const MpiHangGuard::Watch watch("HDF5 collective read", static_cast<std::size_t>(rows * row_elems(global)) * dtype_size(dt));
  Handle d(H5Dopen2(id_, dataset.c_str(), H5P_DEFAULT), H5Dclose);
  Handle fspace(H5Dget_space(d.id), H5Sclose);
  Handle mspace(memory_space(global, rows), H5Sclose);
  select_rows(fspace.id, global, first_row, rows);
  errno = 0;
  const bool bad = H5Dread(d.id, h5_file_type(in.dtype), mspace.id, fspace.id, dxpl(), out) < 0;
  const int err = errno;
  // Agreed like writes: an I/O error on one rank reaches every rank at this read.
  agree(bad ? fmt::format("'{}': cannot read dataset '{}'{}", path_, dataset,
                          err != 0 ? fmt::format(": {}", std::strerror(err)) : std::string(" (corrupt or truncated?)"))
            : "");
  const std::size_t row_bytes = static_cast<std::size_t>(row_elems(global)) * dtype_size(in.dtype);
  RowChecksum part;
  if (count_checksum) part.add_rows(out, first_row, rows, row_bytes);
  record(dataset, part);
  bytes_read_ += static_cast<std::uint64_t>(rows) * row_bytes;
}

Tensor H5ParallelFile::read_all(const std::string& dataset, bool count_checksum) {
  const Shape s = info(dataset).shape;
  return read_rows(dataset, 0, num_rows(s), count_checksum);
}

std::vector<H5ChecksumFailure> H5ParallelFile::verify_checksums() {
  std::vector<std::int64_t> sums(2 * partials_.size());
  for (std::size_t i = 0; i < partials_.size(); ++i) {
    sums[2 * i] = partials_[i].lo;
    sums[2 * i + 1] = partials_[i].hi;
  }
  if (comm_ && !sums.empty()) comm_->all_reduce(sums.data(), sums.data(), sums.size(), DType::I64, ReduceOp::Sum);
  std::vector<H5ChecksumFailure> bad;
  for (std::size_t i = 0; i < summed_.size(); ++i) {
    const std::uint64_t got = RowChecksum{sums[2 * i], sums[2 * i + 1]}.value();
    const auto stored = info(summed_[i]).checksum;
    if (!stored) bad.push_back({summed_[i], "no checksum attribute"});
    else if (*stored != got)
      bad.push_back({summed_[i], fmt::format("checksum mismatch: stored {:#018x}, data {:#018x}", *stored, got)});
  }
  summed_.clear();
  partials_.clear();
  return bad;
}

}  // namespace orthoshard
