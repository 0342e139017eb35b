// The CUDA tests' harness: with ORTHOSHARD_CUDA_TEST_GTEST the macros are GoogleTest's; without it a tiny
// self-contained runner (cuda_test_main.cpp), so the standalone build needs nothing but CUDA. Plus the
// helpers the tests share: skipping without a GPU, random data, bf16 rounding, copies, closeness checks.
#pragma once

#include "runtime/cuda/device.hpp"
#include "runtime/cuda/device_buffer.hpp"

#include <cuda_bf16.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <random>
#include <sstream>
#include <string>
#include <type_traits>
#include <vector>

#if defined(ORTHOSHARD_CUDA_TEST_GTEST)
#include <gtest/gtest.h>

#define OS_TEST(suite, name) TEST(suite, name)
#define OS_EXPECT(cond, msg) EXPECT_TRUE(cond) << msg
#define OS_SKIP(msg) GTEST_SKIP() << msg

namespace orthoshard::cuda_test {
inline std::string current_test() {
  const auto* info = ::testing::UnitTest::GetInstance()->current_test_info();
  return info ? std::string(info->test_suite_name()) + "." + info->name() : "?";
}
}  // namespace orthoshard::cuda_test

#else

namespace orthoshard::cuda_test {
struct TestCase {
  std::string name;
  void (*body)();
};
struct State {
  std::vector<TestCase> tests;
  std::string current;
  int failures_in_current = 0;
  bool skipped_current = false;
};
inline State& state() {
  static State s;
  return s;
}
inline bool add(const char* name, void (*body)()) {
  state().tests.push_back({name, body});
  return true;
}
inline void fail(const char* file, int line, const char* cond, const std::string& msg) {
  ++state().failures_in_current;
  std::printf("%s:%d: failure: %s\n  %s\n", file, line, cond, msg.c_str());
}
inline void skip(const std::string& msg) {
  state().skipped_current = true;
  std::printf("  skipped: %s\n", msg.c_str());
}
inline std::string current_test() { return state().current; }
}  // namespace orthoshard::cuda_test

#define OS_TEST(suite, name)                                                                               \
  static void os_test_##suite##_##name();                                                                  \
  [[maybe_unused]] static const bool os_test_registered_##suite##_##name =                                 \
      ::orthoshard::cuda_test::add(#suite "." #name, &os_test_##suite##_##name);                           \
  static void os_test_##suite##_##name()
#define OS_EXPECT(cond, msg)                                                                               \
  do {                                                                                                     \
    if (!(cond)) {                                                                                         \
      std::ostringstream os_test_msg_;                                                                     \
      os_test_msg_ << msg;                                                                                 \
      ::orthoshard::cuda_test::fail(__FILE__, __LINE__, #cond, os_test_msg_.str());                        \
    }                                                                                                      \
  } while (0)
#define OS_SKIP(msg)                                                                                       \
  do {                                                                                                     \
    std::ostringstream os_test_msg_;                                                                       \
    os_test_msg_ << msg;                                                                                   \
    ::orthoshard::cuda_test::skip(os_test_msg_.str());                                                     \
    return;                                                                                                \
  } while (0)

#endif

// First statement of every test that needs a GPU.
#define OS_REQUIRE_GPU()                                                                                   \
  do {                                                                                                     \
    const ::orthoshard::cuda::DeviceQuery os_q_ = ::orthoshard::cuda::query_devices();                     \
    if (os_q_.count == 0)                                                                                  \
      OS_SKIP("no CUDA device: skipping " << ::orthoshard::cuda_test::current_test() << " (" << os_q_.why_none \
                                          << ")");                                                        \
  } while (0)

namespace orthoshard::cuda_test {

using bf16 = __nv_bfloat16;

inline std::vector<double> randn(std::size_t n, std::uint32_t seed, double scale = 1.0) {
  std::mt19937 rng(seed);
  std::normal_distribution<double> d(0.0, scale);
  std::vector<double> v(n);
  for (auto& x : v) x = d(rng);
  return v;
}

// The values a T holds (fp32 or bf16 rounding of double), so CPU references start from the GPU's inputs.
template <typename T> inline double round_to(double x) {
  if constexpr (std::is_same_v<T, float>) return static_cast<double>(static_cast<float>(x));
  else return static_cast<double>(__bfloat162float(__float2bfloat16(static_cast<float>(x))));
}
template <typename T> inline std::vector<double> rounded(std::vector<double> v) {
  for (auto& x : v) x = round_to<T>(x);
  return v;
}

template <typename T> inline T from_double(double x) {
  if constexpr (std::is_same_v<T, float>) return static_cast<float>(x);
  else return __float2bfloat16(static_cast<float>(x));
}
template <typename T> inline double to_double(T x) {
  if constexpr (std::is_same_v<T, float> || std::is_same_v<T, double>) return static_cast<double>(x);
  else return static_cast<double>(__bfloat162float(x));
}

template <typename T> inline cuda::DeviceBuffer<T> upload(const std::vector<double>& v, cudaStream_t s = nullptr) {
  std::vector<T> h(v.size());
  for (std::size_t i = 0; i < v.size(); ++i) h[i] = from_double<T>(v[i]);
  cuda::DeviceBuffer<T> d(v.size());
  d.copy_from_host(h, s);
  OS_CUDA_CHECK(cudaStreamSynchronize(s));  // h goes out of scope
  return d;
}
template <typename T> inline std::vector<double> download(const cuda::DeviceBuffer<T>& d, cudaStream_t s = nullptr) {
  const std::vector<T> h = d.to_host(s);
  std::vector<double> v(h.size());
  for (std::size_t i = 0; i < h.size(); ++i) v[i] = to_double(h[i]);
  return v;
}
inline cuda::DeviceBuffer<std::int32_t> upload_ints(const std::vector<std::int32_t>& v) {
  cuda::DeviceBuffer<std::int32_t> d(v.size());
  d.copy_from_host(v, nullptr);
  OS_CUDA_CHECK(cudaStreamSynchronize(nullptr));
  return d;
}

// Worst violation of |got − ref| <= atol + rtol·|ref|, as a message ("" when all hold).
inline std::string closeness(const std::vector<double>& got, const std::vector<double>& ref, double atol, double rtol) {
  if (got.size() != ref.size()) return "size " + std::to_string(got.size()) + " != " + std::to_string(ref.size());
  double worst = 0;
  std::size_t at = 0;
  bool bad = false;
  for (std::size_t i = 0; i < got.size(); ++i) {
    const double err = std::abs(got[i] - ref[i]), allowed = atol + rtol * std::abs(ref[i]);
    if (!(err <= allowed)) {  // NaN fails too
      const double excess = std::isnan(err) ? INFINITY : err / allowed;
      if (!bad || excess > worst) worst = excess, at = i;
      bad = true;
    }
  }
  if (!bad) return "";
  std::ostringstream os;
  os << "element " << at << ": got " << got[at] << ", reference " << ref[at] << " (|err| " << std::abs(got[at] - ref[at])
     << " > " << atol << " + " << rtol << "·|ref|)";
  return os.str();
}
// ‖got − ref‖_F / ‖ref‖_F.
inline double rel_fro(const std::vector<double>& got, const std::vector<double>& ref) {
  double num = 0, den = 0;
  for (std::size_t i = 0; i < ref.size(); ++i) {
    num += (got[i] - ref[i]) * (got[i] - ref[i]);
    den += ref[i] * ref[i];
  }
  return std::sqrt(num / (den > 0 ? den : 1.0));
}

// Tolerances of a T result: fp32 kernels are compared tightly, bf16 kernels at bf16 resolution (2^-8
// relative per rounding, a few roundings deep).
template <typename T> struct Tol {
  static constexpr double atol = std::is_same_v<T, float> ? 2e-5 : 2e-2;
  static constexpr double rtol = std::is_same_v<T, float> ? 2e-5 : 2e-2;
};

}  // namespace orthoshard::cuda_test

#define OS_EXPECT_CLOSE(what, got, ref, atol, rtol)                                                        \
  do {                                                                                                     \
    const std::string os_close_ = ::orthoshard::cuda_test::closeness((got), (ref), (atol), (rtol));        \
    OS_EXPECT(os_close_.empty(), (what) << ": " << os_close_);                                            \
  } while (0)
