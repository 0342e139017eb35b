// Core types: bf16 rounding against an exact reference, tensor views and ownership, errors, logging.
#include "runtime/core/dtype.hpp"
#include "runtime/core/error.hpp"
#include "runtime/core/log.hpp"
#include "runtime/core/tensor.hpp"

#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <limits>
#include <random>

using namespace orthoshard;

namespace {
// Reference rounding computed in double: the nearest bf16 value, ties to the even mantissa.
float bf16_reference(float x) {
  if (std::isnan(x) || std::isinf(x) || x == 0.0f) return x;
  std::uint32_t u;
  std::memcpy(&u, &x, 4);
  std::uint32_t lo_bits = u & 0xffff0000u, hi_bits = lo_bits + 0x10000u;
  float lo, hi;
  std::memcpy(&lo, &lo_bits, 4);
  std::memcpy(&hi, &hi_bits, 4);
  // Past the largest finite bf16 the next representable point is 2^128, which rounds to infinity.
  const double hid = std::isinf(hi) ? std::copysign(std::ldexp(1.0, 128), double(x)) : double(hi);
  const double dl = std::abs(double(x) - double(lo)), dh = std::abs(hid - double(x));
  if (dl < dh) return lo;
  if (dh < dl) return hi;
  return ((lo_bits >> 16) & 1u) ? hi : lo;  // tie: even mantissa
}
}  // namespace

TEST(BF16, RoundsToNearestEvenOnRandomBitPatterns) {
  std::mt19937 rng(7);
  std::uniform_int_distribution<std::uint32_t> bits;
  for (int i = 0; i < 200000; ++i) {
    std::uint32_t u = bits(rng);
    float x;
    std::memcpy(&x, &u, 4);
    if (std::isnan(x)) continue;
    const float got = bf16_to_float(float_to_bf16(x));
    const float want = bf16_reference(x);
    ASSERT_EQ(std::memcmp(&got, &want, 4), 0) << "x=" << x << " bits=" << std::hex << u;
  }
}

TEST(BF16, TiesSpecialValuesAndOverflow) {
  // 1 + 2^-8 lies exactly between 1 and 1 + 2^-7: ties to even gives 1.
  EXPECT_EQ(bf16_to_float(float_to_bf16(1.0f + std::ldexp(1.0f, -8))), 1.0f);
  // 1 + 3*2^-8 lies between 1+2^-7 (odd) and 1+2^-6 (even): rounds up to 1 + 2^-6.
  EXPECT_EQ(bf16_to_float(float_to_bf16(1.0f + 3 * std::ldexp(1.0f, -8))), 1.0f + std::ldexp(1.0f, -6));
  EXPECT_TRUE(std::isnan(bf16_to_float(float_to_bf16(std::numeric_limits<float>::quiet_NaN()))));
  EXPECT_TRUE(std::isinf(bf16_to_float(float_to_bf16(std::numeric_limits<float>::infinity()))));
  EXPECT_TRUE(std::isinf(bf16_to_float(float_to_bf16(std::numeric_limits<float>::max()))));
  EXPECT_TRUE(std::signbit(bf16_to_float(float_to_bf16(-0.0f))));
  // A signalling NaN whose payload sits only in the low bits must not become infinity.
  std::uint32_t snan = 0x7f800001u;
  float f;
  std::memcpy(&f, &snan, 4);
  EXPECT_TRUE(std::isnan(bf16_to_float(float_to_bf16(f))));
}

TEST(DType, SizesNamesAndParsing) {
  EXPECT_EQ(dtype_size(DType::BF16), 2u);
  EXPECT_EQ(dtype_size(DType::F64), 8u);
  EXPECT_EQ(dtype_size(DType::U8), 1u);
  for (DType t : {DType::F32, DType::BF16, DType::F64, DType::I32, DType::I64, DType::U8})
    EXPECT_EQ(parse_dtype(dtype_name(t)), t);
  EXPECT_EQ(parse_dtype("bfloat16"), DType::BF16);
  try {
    parse_dtype("f16");
    FAIL() << "expected an error";
  } catch (const UsageError& e) {
    EXPECT_NE(std::string(e.what()).find("'f16'"), std::string::npos);
  }
}

TEST(Tensor, AlignedOwningAllocation) {
  for (std::int64_t n : {1, 3, 17, 1000}) {
    Tensor t = Tensor::zeros({n, 3}, DType::F32);
    EXPECT_EQ(reinterpret_cast<std::uintptr_t>(t.raw()) % kHostAlignment, 0u);
    EXPECT_TRUE(t.owns_memory());
    EXPECT_EQ(t.nbytes(), static_cast<std::size_t>(n * 3 * 4));
    for (std::int64_t i = 0; i < n * 3; ++i) ASSERT_EQ(t.data<float>()[i], 0.0f);
  }
}

TEST(Tensor, RowViewsShareMemoryAndKeepOwnerAlive) {
  Tensor view;
  {
    Tensor t = Tensor::empty({5, 4}, DType::F64);
    for (int i = 0; i < 20; ++i) t.data<double>()[i] = i;
    view = t.rows(2, 4);
  }  // t gone; the view keeps the storage alive
  ASSERT_EQ(view.shape(), (Shape{2, 4}));
  EXPECT_TRUE(view.is_contiguous());
  EXPECT_EQ(view.data<double>()[0], 8.0);
  EXPECT_EQ(view.data<double>()[7], 15.0);
  Tensor empty_rows = view.rows(1, 1);
  EXPECT_EQ(empty_rows.numel(), 0);
  EXPECT_THROW(view.rows(1, 3), Error);
  EXPECT_THROW(view.data<float>(), Error);
}

TEST(Tensor, ReshapeMatrixViewBorrowAndClone) {
  Tensor t = Tensor::empty({4, 2, 3}, DType::F32);
  Tensor m = t.as_matrix();
  EXPECT_EQ(m.shape(), (Shape{4, 6}));
  EXPECT_EQ(m.raw(), t.raw());
  EXPECT_THROW(t.reshape({5, 5}), Error);
  float buf[6] = {1, 2, 3, 4, 5, 6};
  Tensor b = Tensor::borrow(buf, {2, 3});
  EXPECT_FALSE(b.owns_memory());
  EXPECT_EQ(b.dtype(), DType::F32);
  Tensor c = b.clone();
  buf[0] = 100;
  EXPECT_EQ(c.data<float>()[0], 1.0f);
  EXPECT_EQ(b.data<float>()[0], 100.0f);
  EXPECT_EQ(b.describe(), "f32(2, 3) cpu");
  Tensor dev = Tensor::borrow(reinterpret_cast<void*>(0x1000), {8}, DType::BF16, Device::CUDA);
  EXPECT_EQ(dev.device(), Device::CUDA);
  EXPECT_THROW(dev.clone(), Error);
}

TEST(Errors, ContextIsPrependedAndTypeKept) {
  try {
    try {
      throw UsageError("missing key 'lr'");
    } catch (...) {
      rethrow_with_context("config.toml [optim]");
    }
  } catch (const UsageError& e) {
    EXPECT_STREQ(e.what(), "config.toml [optim]: missing key 'lr'");
    return;
  }
  FAIL() << "context was lost or the type changed";
}

TEST(Log, RankZeroPrintsAndAllRanksArePrefixed) {
  log::set_rank(0, 4);
  ::testing::internal::CaptureStdout();
  log::info("hello {}", 1);
  log::info_all("from every rank");
  std::string out = ::testing::internal::GetCapturedStdout();
  EXPECT_EQ(out, "hello 1\n[rank 0/4] from every rank\n");
  log::set_rank(2, 4);
  ::testing::internal::CaptureStdout();
  log::info("only rank 0");
  log::info_all("x");
  out = ::testing::internal::GetCapturedStdout();
  EXPECT_EQ(out, "[rank 2/4] x\n");
  log::set_rank(0, 1);
}
