// dtype names and sizes.
#include "runtime/core/dtype.hpp"

#include "runtime/core/error.hpp"

namespace orthoshard {

std::size_t dtype_size(DType t) {
  switch (t) {
    case DType::F32: return 4;
    case DType::BF16: return 2;
    case DType::F64: return 8;
    case DType::I32: return 4;
    case DType::I64: return 8;
    case DType::U8: return 1;
  }
  fail("invalid dtype code {}", static_cast<int>(t));
}

std::string_view dtype_name(DType t) {
  switch (t) {
    case DType::F32: return "f32";
    case DType::BF16: return "bf16";
    case DType::F64: return "f64";
    case DType::I32: return "i32";
    case DType::I64: return "i64";
    case DType::U8: return "u8";
  }
  return "invalid";
}

DType parse_dtype(std::string_view name) {
  for (DType t : {DType::F32, DType::BF16, DType::F64, DType::I32, DType::I64, DType::U8})
    if (dtype_name(t) == name) return t;
  if (name == "float32" || name == "fp32") return DType::F32;
  if (name == "bfloat16") return DType::BF16;
  if (name == "float64" || name == "fp64") return DType::F64;
  throw UsageError(fmt::format("unknown dtype '{}' (expected f32, bf16, f64, i32, i64 or u8)", name));
}

void rethrow_with_context(const std::string& context) {
  try {
    throw;
  } catch (const UsageError& e) {
    throw UsageError(context + ": " + e.what());
  } catch (const std::exception& e) {
    throw Error(context + ": " + e.what());
  }
}

}  // namespace orthoshard
