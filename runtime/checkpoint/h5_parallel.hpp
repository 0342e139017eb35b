// One HDF5 file opened by every rank of a communicator over MPI-IO (or by one process, serially):
// collective group and attribute creation, datasets written and read by row hyperslabs (a rank with
// no rows joins with an empty selection), and per-dataset row checksums (row_checksum.hpp) that are
// stored as a `checksum` attribute on write and verified on read, whatever the rank counts.
#pragma once

#include "runtime/checkpoint/row_checksum.hpp"
#include "runtime/comm/communicator.hpp"
#include "runtime/core/tensor.hpp"

#include <hdf5.h>

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

namespace orthoshard {

struct H5ParallelOptions {
  // Collective transfers always (every rank calls every write/read); true lets MPI-IO aggregate the
  // data (two-phase collective buffering), false has each rank write its own contiguous bytes.
  bool collective_buffering = false;
  std::uint64_t align_threshold_bytes = 4u << 20;  // datasets at least this large start on an
  std::uint64_t alignment_bytes = 1u << 20;        // alignment_bytes boundary (stripe-friendly)
};

struct H5DatasetInfo {
  Shape shape;
  DType dtype = DType::F32;  // the stored type (f32, f64, i32, i64, u8)
  std::uint64_t storage_bytes = 0;
  std::optional<std::uint64_t> checksum;  // the `checksum` attribute, when present
};

// A dataset whose checksum does not match (or is missing).
struct H5ChecksumFailure {
  std::string dataset;
  std::string what;  // "stored 0x..., computed 0x..." or "no checksum attribute"
};

class H5ParallelFile {
 public:
  // comm = nullptr: serial (this process alone, no MPI needed). Otherwise every rank of comm (an MPI
  // communicator) calls every method in the same order with the same names and shapes.
  static H5ParallelFile create(const std::string& path, Communicator* comm, const H5ParallelOptions& opt = {});
  static H5ParallelFile open_read(const std::string& path, Communicator* comm, const H5ParallelOptions& opt = {});
  // What open_read checks first, in this process alone: the file exists and has an HDF5 signature.
  // Parallel callers agree on its outcome before the collective open, so no rank opens alone.
  static void check_readable(const std::string& path);
  H5ParallelFile(H5ParallelFile&& o) noexcept;
  H5ParallelFile(const H5ParallelFile&) = delete;
  ~H5ParallelFile();

  const std::string& path() const { return path_; }
  // Writing methods agree on failure: when a write fails on any rank (ENOSPC, EIO, a quota), every rank throws
  // the same error (the lowest failing rank's line), so no rank goes on alone into the next collective step.
  void flush();
  void close();  // collective; the destructor closes too (without throwing)
  // After an agreed failure while writing: frees the file's space (rank 0 truncates it, so that closing can
  // write its metadata on a full disk), closes it on every rank ignoring errors, and rank 0 deletes it.
  // Collective; never throws.
  void discard();

  // ---- writing (collective; every rank passes the same values) ----
  void create_group(const std::string& group);  // parents created as needed
  void set_attr(const std::string& object, const std::string& name, const std::string& value);
  void set_attr(const std::string& object, const std::string& name, std::int64_t value);
  void set_attr(const std::string& object, const std::string& name, double value);
  void set_attr_u64(const std::string& object, const std::string& name, std::uint64_t value);
  // Creates `dataset` with shape `global` and stored type `dt`, and writes this rank's rows
  // [first_row, first_row + rows) from contiguous `data` (rows = 0: nothing; a 0-d dataset has one
  // row). Each row must be written by exactly one rank. The rows' checksum is accumulated.
  void write_rows(const std::string& dataset, const Shape& global, DType dt, std::int64_t first_row,
                  std::int64_t rows, const void* data);
  // All-reduces the accumulated checksums and stores each written dataset's `checksum` attribute.
  void write_checksums();

  // ---- reading ----
  bool exists(const std::string& object) const;
  std::vector<std::string> children(const std::string& group) const;  // by name
  bool is_group(const std::string& object) const;
  bool has_attr(const std::string& object, const std::string& name) const;
  std::string string_attr(const std::string& object, const std::string& name) const;
  std::int64_t int_attr(const std::string& object, const std::string& name) const;
  double double_attr(const std::string& object, const std::string& name) const;
  H5DatasetInfo info(const std::string& dataset) const;
  // Reads rows [first_row, first_row + rows) in the stored type (collective; rows = 0 joins with an
  // empty selection). count_checksum: this rank's copy of those rows is the one verified (each row of a
  // verified dataset counted by exactly one rank).
  Tensor read_rows(const std::string& dataset, std::int64_t first_row, std::int64_t rows, bool count_checksum);
  Tensor read_all(const std::string& dataset, bool count_checksum);
  // The same into caller memory (contiguous, rows x the dataset's row size, of the stored type `dt`).
  void read_rows_into(const std::string& dataset, std::int64_t first_row, std::int64_t rows, bool count_checksum,
                      DType dt, void* out);
  // All-reduces the checksums of the datasets read with count_checksum and compares them with the
  // stored attributes; every rank gets the same list (empty: all good).
  std::vector<H5ChecksumFailure> verify_checksums();

  std::uint64_t bytes_written() const { return bytes_written_; }  // by this rank
  std::uint64_t bytes_read() const { return bytes_read_; }

 private:
  H5ParallelFile(hid_t id, std::string path, Communicator* comm, H5ParallelOptions opt);
  hid_t dxpl() const;
  // Throws on every rank when `error` is non-empty on any rank (collective when comm_ is set).
  void agree(const std::string& error);
  void create_groups(const std::string& group);
  void agreed_attr(const std::string& object, const std::string& name, hid_t type, const void* value);
  std::int64_t writes_ = 0;  // dataset writes so far (the failure-injection hook counts them)
  void record(const std::string& dataset, const RowChecksum& part);
  hid_t id_;
  std::string path_;
  Communicator* comm_;
  H5ParallelOptions opt_;
  hid_t dxpl_ = H5I_INVALID_HID;
  std::vector<std::string> summed_;     // datasets whose checksums are accumulated, in call order
  std::vector<RowChecksum> partials_;
  std::uint64_t bytes_written_ = 0, bytes_read_ = 0;
};

std::string h5_version_string();  // "1.10.8"
hid_t h5_file_type(DType dt);     // little-endian IEEE/integer type stored for dt

}  // namespace orthoshard
