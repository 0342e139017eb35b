#include "launch/trainer/init_checkpoint.hpp"

#include "launch/trainer/checkpoint.hpp"
#include "runtime/core/error.hpp"

#include <fmt/ranges.h>
#include <hdf5.h>

#include <algorithm>
#include <filesystem>

namespace orthoshard {

bool CheckpointInit::is_checkpoint(const std::string& path) {
  std::error_code ec;
  if (!std::filesystem::is_regular_file(path, ec)) return false;
  H5Eset_auto2(H5E_DEFAULT, nullptr, nullptr);
  return H5Fis_hdf5(path.c_str()) > 0;
}

CheckpointInit::CheckpointInit(Communicator& world, const std::string& path) : path_(path) {
  H5ParallelFile::check_readable(path);
  file_ = std::make_unique<H5ParallelFile>(H5ParallelFile::open_read(path, &world));
  const H5ParallelFile& f = *file_;
  const std::string format = f.has_attr("/", "format") ? f.string_attr("/", "format") : "";
  if (format != kCheckpointFormat)
    throw UsageError(fmt::format("model.init_from '{}': an HDF5 file but not an orthoshard checkpoint (format '{}')",
                                 path, format));
  const std::string arch = f.has_attr("/model", "architecture") ? f.string_attr("/model", "architecture") : "gpt2";
  const std::vector<std::string> known = model_family_names();
  if (std::find(known.begin(), known.end(), arch) == known.end())
    throw UsageError(fmt::format("model.init_from '{}': architecture '{}' is not a model family this build knows ({})",
                                 path, arch, fmt::join(known, ", ")));
  model_ = model_family(arch).from_attributes(CheckpointModelAttributes(f));
  for (const ParamInfo& p : model_->parameters()) {
    const std::string ds = "/model/" + p.name;
    if (!f.exists(ds)) fail("model.init_from '{}': tensor {} of the model is missing", path, ds);
    const H5DatasetInfo di = f.info(ds);
    if (di.shape != p.shape || di.dtype != DType::F32)
      fail("model.init_from '{}': {} is {} {}, the model needs f32 {}", path, ds, dtype_name(di.dtype),
           shape_str(di.shape), shape_str(p.shape));
  }
}

void CheckpointInit::read_rows(const std::string& name, std::int64_t begin, std::int64_t end, bool count, float* out) {
  file_->read_rows_into("/model/" + name, begin, end - begin, count, DType::F32, out);
}

void CheckpointInit::finish() {
  const auto bad = file_->verify_checksums();
  file_->close();
  if (!bad.empty())
    fail("model.init_from '{}' is corrupt: {} ({}){}", path_, bad.front().dataset, bad.front().what,
         bad.size() > 1 ? fmt::format(" and {} more", bad.size() - 1) : "");
}

}  // namespace orthoshard
