// Device runtime: device query, error messages, the caching allocator (its bookkeeping on fake memory runs
// without a GPU), streams/events ordering and pinned staged copies (GPU).
#include "runtime/cuda/allocator.hpp"
#include "runtime/cuda/check.hpp"
#include "runtime/cuda/device.hpp"
#include "runtime/cuda/device_buffer.hpp"
#include "models/layers/cuda/layer_kernels.hpp"
#include "models/gpt2/cuda/embedding_kernels.hpp"
#include "runtime/cuda/copy_kernels.hpp"
#include "tests/cuda/cuda_test.hpp"

#include <cstdlib>
#include <cstring>
#include <map>
#include <numeric>

using namespace orthoshard::cuda;
using namespace orthoshard::cuda_test;

namespace {
std::string message_of(void (*f)()) {
  try {
    f();
  } catch (const CudaError& e) {
    return e.what();
  }
  return "";
}
bool contains(const std::string& s, const std::string& part) { return s.find(part) != std::string::npos; }
cudaStream_t fake_stream(std::uintptr_t id) { return reinterpret_cast<cudaStream_t>(id); }

// Host memory standing in for the device, with a byte limit to provoke out-of-memory, a settable "current
// device" and releases that can be made to fail.
struct FakeDevice {
  std::size_t limit = std::size_t(1) << 40, used = 0;
  std::map<void*, std::size_t> blocks;
  int device = 0;
  int failing_releases = 0;  // the next this many releases throw (without freeing)
  RawMemory raw() {
    RawMemory r;
    r.current_device = [this] { return device; };
    r.allocate = [this](std::size_t bytes) -> void* {
      if (used + bytes > limit) return nullptr;
      void* p = std::malloc(bytes);
      blocks[p] = bytes;
      used += bytes;
      return p;
    };
    r.release = [this](void* p) {
      if (failing_releases > 0) {
        --failing_releases;
        throw CudaError("fake release failure");
      }
      used -= blocks.at(p);  // throws std::out_of_range on a double free
      blocks.erase(p);
      std::free(p);
    };
    return r;
  }
};
}  // namespace

OS_TEST(CudaRuntime, DeviceQueryNeverThrows) {
  const DeviceQuery q = query_devices();
  OS_EXPECT(q.count >= 0, "negative device count");
  OS_EXPECT(q.count > 0 || !q.why_none.empty(), "no devices but no reason given");
  OS_EXPECT(device_count() == q.count, "device_count disagrees with query_devices");
  std::printf("  devices: %d%s%s\n", q.count, q.count ? "" : ", ", q.why_none.c_str());
}

OS_TEST(CudaRuntime, NominalPeaksByDeviceName) {
  // MFU's denominator: dense bf16 tensor-core peaks as vendors quote them; unknown devices give 0 (no MFU shown).
  OS_EXPECT(nominal_bf16_peak_flops(std::string("NVIDIA H100 80GB HBM3")) == 989e12, "H100 SXM");
  OS_EXPECT(nominal_bf16_peak_flops(std::string("NVIDIA H100 PCIe")) == 756e12, "H100 PCIe");
  OS_EXPECT(nominal_bf16_peak_flops(std::string("NVIDIA H200")) == 989e12, "H200");
  OS_EXPECT(nominal_bf16_peak_flops(std::string("NVIDIA A100-SXM4-80GB")) == 312e12, "A100");
  OS_EXPECT(nominal_bf16_peak_flops(std::string("NVIDIA GeForce GTX 1080")) == 0, "unknown");
}

OS_TEST(CudaRuntime, ErrorsNameTheCallFileAndLine) {
  const std::string cuda = message_of([] { OS_CUDA_CHECK(cudaErrorInvalidValue); });
  OS_EXPECT(contains(cuda, "cudaErrorInvalidValue failed at "), cuda);
  OS_EXPECT(contains(cuda, "test_cuda_runtime.cpp:"), cuda);
  OS_EXPECT(contains(cuda, "CUDA error 1 ("), cuda);
  const std::string blas = message_of([] { OS_CUBLAS_CHECK(CUBLAS_STATUS_NOT_SUPPORTED); });
  OS_EXPECT(contains(blas, "CUBLAS_STATUS_NOT_SUPPORTED failed at ") && contains(blas, "cuBLAS error 15"), blas);
  const std::string solver = message_of([] { OS_CUSOLVER_CHECK(CUSOLVER_STATUS_INVALID_VALUE); });
  OS_EXPECT(contains(solver, "cuSOLVER error 3 (invalid value)"), solver);
  const std::string req = message_of([] { OS_CUDA_REQUIRE(1 + 1 == 3, "arithmetic"); });
  OS_EXPECT(contains(req, "arithmetic (1 + 1 == 3) at ") && contains(req, "test_cuda_runtime.cpp:"), req);
}

OS_TEST(CudaRuntime, AllocatorSizeClasses) {
  OS_EXPECT(CachingAllocator::size_class(1) == 512, CachingAllocator::size_class(1));
  OS_EXPECT(CachingAllocator::size_class(512) == 512, "");
  OS_EXPECT(CachingAllocator::size_class(513) == 1024, CachingAllocator::size_class(513));
  OS_EXPECT(CachingAllocator::size_class(4097) == 5120, CachingAllocator::size_class(4097));
  OS_EXPECT(CachingAllocator::size_class((std::size_t(64) << 20) + 1) == (std::size_t(66) << 20), "large class");
  std::size_t prev = 0;
  for (std::size_t b = 1; b < (std::size_t(300) << 20); b = b * 9 / 8 + 1) {
    const std::size_t c = CachingAllocator::size_class(b);
    OS_EXPECT(c >= b && c % 512 == 0, "class " << c << " of " << b);
    OS_EXPECT(c >= prev, "classes not monotone at " << b);
    if (b > 2048 && b <= (std::size_t(64) << 20)) {
      OS_EXPECT(c * 4 <= b * 5, "more than 25% waste at " << b);
    }
    if (b > (std::size_t(64) << 20)) {
      OS_EXPECT(c - b < (std::size_t(2) << 20), "large class too loose at " << b);
    }
    prev = c;
  }
}

OS_TEST(CudaRuntime, AllocatorReusesBlocksPerStream) {
  FakeDevice dev;
  CachingAllocator alloc(dev.raw());
  const cudaStream_t s1 = fake_stream(1), s2 = fake_stream(2);
  OS_EXPECT(alloc.allocate(0, s1) == nullptr, "0 bytes gives nullptr");
  void* a = alloc.allocate(1000, s1);
  AllocatorStats st = alloc.stats();
  OS_EXPECT(st.device_mallocs == 1 && st.bytes_in_use == 1024 && st.bytes_requested == 1000 && st.bytes_reserved == 1024,
            alloc.summary());
  alloc.deallocate(a);
  st = alloc.stats();
  OS_EXPECT(st.bytes_in_use == 0 && st.bytes_reserved == 1024 && st.peak_bytes_in_use == 1024, alloc.summary());
  void* b = alloc.allocate(900, s1);  // same class, same stream: the cached block
  OS_EXPECT(b == a && alloc.stats().cache_hits == 1, "same-stream reuse");
  void* c = alloc.allocate(900, s2);  // another stream never gets s1's blocks
  OS_EXPECT(c != a && alloc.stats().device_mallocs == 2, "cross-stream isolation");
  alloc.deallocate(b);
  void* d = alloc.allocate(5000, s1);  // other class: new block
  OS_EXPECT(d != a && alloc.stats().device_mallocs == 3, "class isolation");
  st = alloc.stats();
  OS_EXPECT(st.bytes_in_use == 1024 + 5120 && st.bytes_reserved == 1024 * 2 + 5120 && st.peak_bytes_reserved == st.bytes_reserved,
            alloc.summary());
  alloc.release_cached();  // frees a's block (cached); c and d are live
  st = alloc.stats();
  OS_EXPECT(st.device_frees == 1 && st.bytes_reserved == 1024 + 5120 && dev.blocks.size() == 2, alloc.summary());
  alloc.deallocate(c);
  alloc.deallocate(d);
  alloc.deallocate(nullptr);

  // Pools are keyed by (device, stream): the same handle (here the legacy default stream, nullptr, which every
  // device has) on another device never gets this device's blocks.
  alloc.release_cached();
  const std::uint64_t mallocs0 = alloc.stats().device_mallocs;
  dev.device = 0;
  void* e0 = alloc.allocate(1000, nullptr);
  alloc.deallocate(e0);
  dev.device = 1;
  void* e1 = alloc.allocate(1000, nullptr);
  OS_EXPECT(e1 != e0 && alloc.stats().device_mallocs == mallocs0 + 2, "cross-device isolation for one stream handle");
  alloc.deallocate(e1);
  void* e1b = alloc.allocate(1000, nullptr);
  OS_EXPECT(e1b == e1, "same device and stream: the cached block");
  alloc.deallocate(e1b);
  dev.device = 0;
  void* e0b = alloc.allocate(1000, nullptr);
  OS_EXPECT(e0b == e0, "back on device 0: its own cached block");
  alloc.deallocate(e0b);
  alloc.release_cached();

  // release_stream: the stream's cached blocks go back to the device (other streams' stay cached), and a block
  // still live on it is freed, not cached, when it comes back.
  const cudaStream_t s3 = fake_stream(3);
  void* f1 = alloc.allocate(1000, s1);
  void* f3 = alloc.allocate(1000, s3);
  void* g3 = alloc.allocate(3000, s3);
  alloc.deallocate(f1);
  alloc.deallocate(f3);
  st = alloc.stats();
  const std::uint64_t frees0 = st.device_frees;
  const std::size_t reserved0 = st.bytes_reserved;
  alloc.release_stream(s3);
  st = alloc.stats();
  OS_EXPECT(st.device_frees == frees0 + 1 && st.bytes_reserved == reserved0 - 1024 && dev.blocks.size() == 2,
            "release_stream frees the stream's cached block only: " << alloc.summary());
  alloc.deallocate(g3);  // live on s3 during release_stream: freed now
  st = alloc.stats();
  OS_EXPECT(st.device_frees == frees0 + 2 && st.bytes_reserved == 1024 && dev.blocks.size() == 1,
            "a block of a released stream is freed on deallocate: " << alloc.summary());
  void* f1b = alloc.allocate(900, s1);
  OS_EXPECT(f1b == f1, "other streams keep their cache");
  void* h3 = alloc.allocate(1000, s3);  // a new stream under the old handle starts empty
  OS_EXPECT(alloc.stats().device_mallocs == st.device_mallocs + 1, "no blocks inherited by a reused handle");
  alloc.deallocate(f1b);
  alloc.deallocate(h3);
  alloc.release_stream(fake_stream(99));  // nothing cached there: a no-op
  const std::string bad = message_of(+[] {
    FakeDevice dev2;
    CachingAllocator a2(dev2.raw());
    int x = 0;
    a2.deallocate(&x);
  });
  OS_EXPECT(contains(bad, "not allocated here"), bad);
}

OS_TEST(CudaRuntime, AllocatorReleaseThatThrowsNeverFreesTwice) {
  FakeDevice dev;
  CachingAllocator alloc(dev.raw());
  void* a = alloc.allocate(1000, fake_stream(1));
  void* b = alloc.allocate(1000, fake_stream(1));
  void* c = alloc.allocate(5000, fake_stream(2));
  alloc.deallocate(a);
  alloc.deallocate(b);
  alloc.deallocate(c);
  dev.failing_releases = 1;
  bool threw = false;
  try {
    alloc.release_cached();
  } catch (const CudaError&) {
    threw = true;
  }
  OS_EXPECT(threw, "the release failure must propagate");
  // The failed block left the cache before its release (leaked, not retried); the rest are freed once.
  std::string second;
  try {
    alloc.release_cached();
  } catch (const std::exception& e) {
    second = e.what();
  }
  OS_EXPECT(second.empty(), "second release_cached: " << second);
  const AllocatorStats st = alloc.stats();
  OS_EXPECT(st.bytes_reserved == 0 && st.device_frees == 2 && dev.blocks.size() == 1, alloc.summary());
  for (auto& [p, bytes] : dev.blocks) std::free(p);  // the leaked block
  dev.blocks.clear();
}

OS_TEST(CudaRuntime, AllocatorFreesCacheWhenOutOfMemory) {
  FakeDevice dev;
  dev.limit = 8192;
  CachingAllocator alloc(dev.raw());
  void* a = alloc.allocate(4096, fake_stream(1));
  alloc.deallocate(a);                             // 4096 cached
  void* b = alloc.allocate(6000, fake_stream(1));  // class 6144: fits only after the cache is released
  OS_EXPECT(b != nullptr && alloc.stats().oom_retries == 1 && alloc.stats().device_frees == 1, alloc.summary());
  bool threw = false;
  try {
    (void)alloc.allocate(4096, fake_stream(1));
  } catch (const CudaError& e) {
    threw = contains(e.what(), "out of memory");
  }
  OS_EXPECT(threw, "allocation beyond the limit must throw an out-of-memory CudaError");
  alloc.deallocate(b);
}

OS_TEST(CudaRuntime, EmbeddingBucketsAreStableByToken) {
  const std::vector<std::int32_t> tokens = {5, 3, 5, 0, 3, 5, 7};
  const EmbeddingBuckets b = bucket_tokens(tokens.data(), static_cast<std::int64_t>(tokens.size()));
  OS_EXPECT((b.bucket_token == std::vector<std::int32_t>{0, 3, 5, 7}), "bucket tokens");
  OS_EXPECT((b.starts == std::vector<std::int32_t>{0, 1, 3, 6, 7}), "bucket starts");
  OS_EXPECT((b.order == std::vector<std::int32_t>{3, 1, 4, 0, 2, 5, 6}), "order (ascending within a token)");
}

OS_TEST(CudaRuntime, DeviceAllocatorAndBuffers) {
  OS_REQUIRE_GPU();
  Stream s;
  CachingAllocator alloc;
  void* first = nullptr;
  {
    DeviceBuffer<float> a(1000, alloc, s);
    first = a.data();
    OS_EXPECT((reinterpret_cast<std::uintptr_t>(first) & 255) == 0, "256-byte alignment");
    a.zero(s);
    const std::vector<float> h = a.to_host(s);
    OS_EXPECT(std::all_of(h.begin(), h.end(), [](float x) { return x == 0.f; }), "zeroed");
    DeviceBuffer<float> moved = std::move(a);
    OS_EXPECT(a.data() == nullptr && moved.data() == first, "move");
  }
  DeviceBuffer<float> again(900, alloc, s);
  OS_EXPECT(again.data() == first && alloc.stats().cache_hits == 1, alloc.summary());
  again.reset();
  alloc.release_cached();
  OS_EXPECT(alloc.stats().bytes_reserved == 0, alloc.summary());
}

OS_TEST(CudaRuntime, EventsOrderStreams) {
  OS_REQUIRE_GPU();
  Stream producer, consumer;
  Event ready, t0(true), t1(true);
  const std::size_t n = std::size_t(1) << 22;
  DeviceBuffer<std::uint8_t> a(n), b(n);
  t0.record(producer);
  OS_CUDA_CHECK(cudaMemsetAsync(a.data(), 0x5a, n, producer));
  ready.record(producer);
  t1.record(producer);
  consumer.wait(ready);
  OS_CUDA_CHECK(cudaMemcpyAsync(b.data(), a.data(), n, cudaMemcpyDeviceToDevice, consumer));
  const std::vector<std::uint8_t> h = b.to_host(consumer);
  OS_EXPECT(std::all_of(h.begin(), h.end(), [](std::uint8_t x) { return x == 0x5a; }), "consumer saw the producer's data");
  t1.synchronize();
  OS_EXPECT(ready.done() && t1.elapsed_ms_since(t0) >= 0.f, "events");
}

OS_TEST(CudaRuntime, StagedCopiesRoundTrip) {
  OS_REQUIRE_GPU();
  Stream s;
  StagedCopier copier(4096);
  const std::size_t bytes = 4096 * 3 + 1234;
  std::vector<std::uint8_t> src(bytes), back(bytes, 0);
  // Not periodic in the chunk size: a chunk copied from a slot that already holds a later chunk must differ.
  for (std::size_t i = 0; i < bytes; ++i) src[i] = static_cast<std::uint8_t>((i * 2654435761ull) >> 24);
  const std::vector<std::uint8_t> expect = src;
  DeviceBuffer<std::uint8_t> d(bytes);
  copier.to_device(d.data(), src.data(), bytes, s);
  std::fill(src.begin(), src.end(), 0);  // the source may be reused as soon as to_device returns
  copier.to_host(back.data(), d.data(), bytes, s);
  OS_EXPECT(back == expect, "round trip through pinned chunks");
}
