// main() of the CUDA tests when built without GoogleTest: runs every OS_TEST (optionally those whose name
// contains argv[1]), prints one line per test, exits 1 if any failed. Skipped tests count as passed.
#include "tests/cuda/cuda_test.hpp"

#include <cstring>
#include <exception>

int main(int argc, char** argv) {
  using namespace orthoshard::cuda_test;
  const char* filter = argc > 1 ? argv[1] : nullptr;
  int passed = 0, failed = 0, skipped = 0;
  for (const TestCase& t : state().tests) {
    if (filter && !std::strstr(t.name.c_str(), filter)) continue;
    State& s = state();
    s.current = t.name;
    s.failures_in_current = 0;
    s.skipped_current = false;
    std::printf("[ RUN      ] %s\n", t.name.c_str());
    std::fflush(stdout);
    try {
      t.body();
    } catch (const std::exception& e) {
      ++s.failures_in_current;
      std::printf("  uncaught exception: %s\n", e.what());
    }
    if (s.failures_in_current > 0) {
      ++failed;
      std::printf("[  FAILED  ] %s\n", t.name.c_str());
    } else if (s.skipped_current) {
      ++skipped;
      std::printf("[  SKIPPED ] %s\n", t.name.c_str());
    } else {
      ++passed;
      std::printf("[       OK ] %s\n", t.name.c_str());
    }
  }
  std::printf("%d passed, %d skipped, %d failed\n", passed, skipped, failed);
  return failed > 0 ? 1 : 0;
}
