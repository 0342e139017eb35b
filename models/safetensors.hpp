// Hugging Face's safetensors file format (8-byte little-endian header length, a JSON header of name -> dtype,
// shape, data offsets, then the raw tensors): writing f32 tensors, as model families export their weights.
#pragma once

#include "models/family.hpp"

#include <utility>
#include <string>
#include <vector>

namespace orthoshard {

// Writes `tensors` (host f32, contiguous) in this order with `metadata` (in this order) as the header's
// __metadata__, to PATH.tmp then renamed over PATH. Errors name the file.
void write_safetensors(const std::vector<NamedTensor>& tensors, const std::string& path,
                       const std::vector<std::pair<std::string, std::string>>& metadata);

}  // namespace orthoshard
