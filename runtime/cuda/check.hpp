// Error checks for CUDA runtime, cuBLAS and cuSOLVER calls: a failing status becomes a CudaError that names
// the call's text, its file:line and the library's error string. Needs only the CUDA headers (no fmt).
#pragma once

#include <cublasLt.h>
#include <cublas_v2.h>
#include <cuda_runtime.h>
#include <cusolverDn.h>

#include <stdexcept>
#include <string>

namespace orthoshard::cuda {

// Every failure of this library is a CudaError (a std::runtime_error, so the CLI's catch-all prints it).
class CudaError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

const char* cusolver_status_string(cusolverStatus_t s);

// "<call> failed at <file>:<line>: <library> error <code> (<text>)"; [[noreturn]] helpers keep the macros small.
[[noreturn]] void throw_cuda_error(cudaError_t e, const char* call, const char* file, int line);
[[noreturn]] void throw_cublas_error(cublasStatus_t s, const char* call, const char* file, int line);
[[noreturn]] void throw_cusolver_error(cusolverStatus_t s, const char* call, const char* file, int line);
[[noreturn]] void throw_usage(const std::string& what, const char* file, int line);

}  // namespace orthoshard::cuda

#define OS_CUDA_CHECK(call)                                                                    \
  do {                                                                                         \
    const cudaError_t os_cuda_status_ = (call);                                                \
    if (os_cuda_status_ != cudaSuccess)                                                        \
      ::orthoshard::cuda::throw_cuda_error(os_cuda_status_, #call, __FILE__, __LINE__);        \
  } while (0)

#define OS_CUBLAS_CHECK(call)                                                                  \
  do {                                                                                         \
    const cublasStatus_t os_cublas_status_ = (call);                                           \
    if (os_cublas_status_ != CUBLAS_STATUS_SUCCESS)                                            \
      ::orthoshard::cuda::throw_cublas_error(os_cublas_status_, #call, __FILE__, __LINE__);    \
  } while (0)

#define OS_CUSOLVER_CHECK(call)                                                                \
  do {                                                                                         \
    const cusolverStatus_t os_cusolver_status_ = (call);                                       \
    if (os_cusolver_status_ != CUSOLVER_STATUS_SUCCESS)                                        \
      ::orthoshard::cuda::throw_cusolver_error(os_cusolver_status_, #call, __FILE__, __LINE__); \
  } while (0)

// A kernel launch: checks the launch error (bad configuration, no kernel image for this GPU) right away.
#define OS_CUDA_CHECK_LAUNCH() OS_CUDA_CHECK(cudaGetLastError())

// Argument checks of the public entry points (shapes, null pointers): a CudaError naming the condition.
#define OS_CUDA_REQUIRE(cond, what)                                                            \
  do {                                                                                         \
    if (!(cond)) ::orthoshard::cuda::throw_usage(std::string(what) + " (" #cond ")", __FILE__, __LINE__); \
  } while (0)
