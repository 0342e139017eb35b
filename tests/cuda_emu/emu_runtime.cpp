// The emulated CUDA runtime: kernel launches as fibers (one per CUDA thread, blocks one after another), and the
// subset of the runtime API the project calls. "Device" memory is host memory. Work on streams is queued and
// runs when something needs it, in an order a GPU may choose too (emu_streams.hpp), so events and
// synchronizations have to be right for the results to be.
#include "cuda_emu.hpp"
#include "emu_streams.hpp"

#include <sys/mman.h>
#include <unistd.h>

#if defined(__SANITIZE_ADDRESS__)  // AddressSanitizer is told about every stack switch (else it misreads them)
#include <sanitizer/asan_interface.h>
#include <sanitizer/common_interface_defs.h>
#define EMU_ASAN_UNPOISON(p, n) ASAN_UNPOISON_MEMORY_REGION(p, n)
#define EMU_ASAN_START(save, bottom, size) __sanitizer_start_switch_fiber(save, bottom, size)
#define EMU_ASAN_FINISH(save, bottom, size) __sanitizer_finish_switch_fiber(save, bottom, size)
#else
#define EMU_ASAN_UNPOISON(p, n) ((void)(p), (void)(n))
#define EMU_ASAN_START(save, bottom, size) ((void)(save), (void)(bottom), (void)(size))
#define EMU_ASAN_FINISH(save, bottom, size) ((void)(save), (void)(bottom), (void)(size))
#endif

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <deque>
#include <map>
#include <memory>
#include <mutex>
#include <new>
#include <string>
#include <vector>

namespace cuda_emu {
namespace {

thread_local cudaError_t g_last_error = cudaSuccess;

cudaError_t fail(cudaError_t e) {
  g_last_error = e;
  return e;
}

[[noreturn]] void die(const std::string& what) {
  std::fprintf(stderr, "cuda-emu: %s\n", what.c_str());
  std::fflush(stderr);
  std::abort();
}

// ---------------- fibers ----------------
// A fiber switch saves the callee-saved registers and the floating-point control words on the current stack and
// loads another stack pointer: about 20 instructions (ucontext's swapcontext makes a system call per switch,
// which dominated the run time). x86-64 System V only, which is what the project builds on.

#if !defined(__x86_64__)
#error "the CUDA emulator's fiber switch is written for x86-64"
#endif

extern "C" void cuda_emu_switch(void** save_sp, void* load_sp);
asm(R"(
.text
.globl cuda_emu_switch
.type cuda_emu_switch,@function
cuda_emu_switch:
  pushq %rbp
  pushq %rbx
  pushq %r12
  pushq %r13
  pushq %r14
  pushq %r15
  subq $8, %rsp
  stmxcsr (%rsp)
  fnstcw 4(%rsp)
  movq %rsp, (%rdi)
  movq %rsi, %rsp
  ldmxcsr (%rsp)
  fldcw 4(%rsp)
  addq $8, %rsp
  popq %r15
  popq %r14
  popq %r13
  popq %r12
  popq %rbx
  popq %rbp
  ret
.size cuda_emu_switch, .-cuda_emu_switch
.section .note.GNU-stack,"",@progbits
.text
)");

// A new fiber's stack as cuda_emu_switch leaves a suspended one: control words, six registers, and `entry` as
// the return address (entered with the stack aligned as after a call).
void* fresh_stack(char* region, std::size_t size, void (*entry)()) {
  EMU_ASAN_UNPOISON(region, size);  // a previous fiber's frames may have left poisoned redzones
  auto top = reinterpret_cast<std::uintptr_t>(region + size) & ~std::uintptr_t(15);
  auto* sp = reinterpret_cast<std::uint64_t*>(top);
  *--sp = 0;  // entry's (never used) return address
  *--sp = reinterpret_cast<std::uint64_t>(entry);
  for (int i = 0; i < 6; ++i) *--sp = 0;
  --sp;
  std::uint32_t mxcsr = 0;  // the caller's modes, so fibers and plain calls (direct mode) compute alike
  std::uint16_t fpucw = 0;
  asm volatile("stmxcsr %0" : "=m"(mxcsr));
  asm volatile("fnstcw %0" : "=m"(fpucw));
  std::memcpy(reinterpret_cast<char*>(sp), &mxcsr, 4);
  std::memcpy(reinterpret_cast<char*>(sp) + 4, &fpucw, 2);
  return sp;
}

constexpr std::size_t kStackBytes = std::size_t(256) << 10;

struct Stack {
  void* base = nullptr;  // guard page, then the stack
  std::size_t bytes = 0;
  Stack() {
    const std::size_t page = static_cast<std::size_t>(sysconf(_SC_PAGESIZE));
    bytes = kStackBytes + page;
    base = mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (base == MAP_FAILED) die("cannot map a fiber stack");
    mprotect(base, page, PROT_NONE);  // a kernel overflowing its stack faults instead of corrupting a neighbour
  }
  ~Stack() { munmap(base, bytes); }
  Stack(const Stack&) = delete;
  Stack& operator=(const Stack&) = delete;
  char* top_region(std::size_t* size) const {
    const std::size_t page = static_cast<std::size_t>(sysconf(_SC_PAGESIZE));
    *size = bytes - page;
    return static_cast<char*>(base) + page;
  }
};

enum class Wait { None, Block, Warp };

struct Fiber {
  void* sp = nullptr;
  void* asan_fake_stack = nullptr;
  std::unique_ptr<Stack> stack;
  ThreadCoords coords{};
  bool done = false;
  Wait wait = Wait::None;
  std::uint64_t wait_gen = 0;
};

struct WarpState {
  int lanes = 0;
  unsigned arrived = 0;  // bit per lane that reached the current shuffle
  std::uint64_t gen = 0;
  unsigned char slot[2][32][kWarpSlotBytes]{};
};

struct BlockRun {
  const std::function<void()>* body = nullptr;
  std::vector<Fiber> fibers;
  int threads = 0, live = 0, arrived = 0;
  std::uint64_t gen = 0;
  std::vector<WarpState> warps;
  void* scheduler_sp = nullptr;
  void* scheduler_fake_stack = nullptr;              // AddressSanitizer's bookkeeping of the two stacks
  const void* scheduler_bottom = nullptr;
  std::size_t scheduler_size = 0;
  int current = -1;
  bool direct = false;             // threads called one after another, no fibers (see run_grid)
  bool reverse = false;            // CUDA_EMU_ORDER=reverse: blocks and threads from the last to the first
  std::uint64_t barrier_calls = 0;  // __syncthreads and shuffles in the launch so far
};

// Every __shared__ variable of the program lies in this section (cuda_emu.hpp); the linker names its bounds.
extern "C" char __start_cuda_emu_shared[] __attribute__((weak));
extern "C" char __stop_cuda_emu_shared[] __attribute__((weak));
void poison_shared_memory() {
  char* const begin = __start_cuda_emu_shared;
  char* const end = __stop_cuda_emu_shared;
  if (begin && end > begin) std::memset(begin, 0xff, static_cast<std::size_t>(end - begin));
}
std::mutex g_launch_mu;  // one launch at a time in the process: the shared-memory section is global

thread_local BlockRun* g_run = nullptr;
thread_local std::unique_ptr<BlockRun> g_pool;  // fibers and stacks reused across launches

// CUDA_EMU_ORDER=reverse runs the blocks of a grid, and the threads of a block between barriers, from the last
// to the first: a read that lacks its barrier (or depends on another block) then sees stale data instead of
// happening to work.
bool reverse_order() {
  const char* v = std::getenv("CUDA_EMU_ORDER");
  return v && std::string(v) == "reverse";
}

void yield_to_scheduler() {
  BlockRun& r = *g_run;
  Fiber& f = r.fibers[static_cast<std::size_t>(r.current)];
  EMU_ASAN_START(&f.asan_fake_stack, r.scheduler_bottom, r.scheduler_size);
  cuda_emu_switch(&f.sp, r.scheduler_sp);
  EMU_ASAN_FINISH(f.asan_fake_stack, nullptr, nullptr);
}

[[noreturn]] void fiber_entry() {
  BlockRun& r = *g_run;
  EMU_ASAN_FINISH(nullptr, &r.scheduler_bottom, &r.scheduler_size);
  const int me = r.current;
  (*r.body)();
  Fiber& f = r.fibers[static_cast<std::size_t>(me)];
  f.done = true;
  --r.live;
  if (r.arrived > 0 && r.arrived == r.live) {  // the exited thread no longer holds a __syncthreads back
    ++r.gen;
    r.arrived = 0;
  }
  void* dead_sp = nullptr;
  EMU_ASAN_START(nullptr, r.scheduler_bottom, r.scheduler_size);  // this fiber's frames are gone
  cuda_emu_switch(&dead_sp, r.scheduler_sp);                      // never resumed
  __builtin_unreachable();
}

std::string describe_block() {
  const BlockRun& r = *g_run;
  const ThreadCoords& c = r.fibers[0].coords;
  char buf[160];
  std::snprintf(buf, sizeof buf, "block (%u,%u,%u) of grid (%u,%u,%u), block shape (%u,%u,%u)", c.block_idx.x,
                c.block_idx.y, c.block_idx.z, c.grid_dim.x, c.grid_dim.y, c.grid_dim.z, c.block_dim.x, c.block_dim.y,
                c.block_dim.z);
  return buf;
}

void run_block(BlockRun& r) {
  const int n = r.threads;
  r.live = n;
  r.arrived = 0;
  r.gen = 0;
  for (int w = 0; w < (n + 31) / 32; ++w) {
    WarpState& ws = r.warps[static_cast<std::size_t>(w)];
    ws.lanes = std::min(32, n - 32 * w);
    ws.arrived = 0;
    ws.gen = 0;
  }
  for (int t = 0; t < n; ++t) {
    Fiber& f = r.fibers[static_cast<std::size_t>(t)];
    f.done = false;
    f.wait = Wait::None;
    std::size_t size = 0;
    char* region = f.stack->top_region(&size);
    f.sp = fresh_stack(region, size, fiber_entry);
  }
  int remaining = n;
  const bool rev = r.reverse;
  while (remaining > 0) {
    bool progress = false;
    for (int k = 0; k < n; ++k) {
      const int t = rev ? n - 1 - k : k;
      Fiber& f = r.fibers[static_cast<std::size_t>(t)];
      if (f.done) continue;
      if (f.wait == Wait::Block && r.gen == f.wait_gen) continue;
      if (f.wait == Wait::Warp && r.warps[static_cast<std::size_t>(t / 32)].gen == f.wait_gen) continue;
      f.wait = Wait::None;
      r.current = t;
      std::size_t stack_size = 0;
      const char* stack_bottom = f.stack->top_region(&stack_size);
      EMU_ASAN_START(&r.scheduler_fake_stack, stack_bottom, stack_size);
      cuda_emu_switch(&r.scheduler_sp, f.sp);
      EMU_ASAN_FINISH(r.scheduler_fake_stack, nullptr, nullptr);
      progress = true;
      if (f.done) --remaining;
    }
    if (!progress) {
      int at_sync = 0, at_shfl = 0;
      for (const Fiber& f : r.fibers) {
        if (&f - r.fibers.data() >= n) break;
        if (!f.done && f.wait == Wait::Block) ++at_sync;
        if (!f.done && f.wait == Wait::Warp) ++at_shfl;
      }
      die("deadlock in " + describe_block() + ": " + std::to_string(at_sync) + " threads wait at __syncthreads and " +
          std::to_string(at_shfl) + " at a warp shuffle that the other threads never reach (divergent barrier, or "
          "a shuffle whose lanes exited)");
    }
  }
  r.current = -1;
}

[[noreturn]] void barrier_in_direct_mode(const char* what) {
  die(std::string(what) + " in " + describe_block() + ", although the launch's first block used none: the "
      "emulator ran the later blocks without fibers and cannot suspend this thread");
}

}  // namespace

const ThreadCoords& coords() {
  if (!g_run || g_run->current < 0) die("threadIdx/blockIdx read outside a kernel");
  return g_run->fibers[static_cast<std::size_t>(g_run->current)].coords;
}

void syncthreads() {
  if (!g_run || g_run->current < 0) die("__syncthreads outside a kernel");
  BlockRun& r = *g_run;
  if (r.direct) barrier_in_direct_mode("__syncthreads");
  ++r.barrier_calls;
  Fiber& f = r.fibers[static_cast<std::size_t>(r.current)];
  f.wait = Wait::Block;
  f.wait_gen = r.gen;
  if (++r.arrived == r.live) {
    ++r.gen;
    r.arrived = 0;
  }
  yield_to_scheduler();
}

namespace {
// Publishes this lane's `bytes` and waits until every lane of its (full) warp has; returns the slots of that
// exchange (lane i's at + i * kWarpSlotBytes), which stay valid until this lane's next exchange.
const unsigned char* warp_publish(unsigned mask, const void* value, std::size_t bytes, const char* what) {
  if (!g_run || g_run->current < 0) die(std::string(what) + " outside a kernel");
  BlockRun& r = *g_run;
  if (r.direct) barrier_in_direct_mode(what);
  if (bytes > kWarpSlotBytes) die(std::string(what) + ": more bytes per lane than the emulator exchanges");
  ++r.barrier_calls;
  const int me = r.current, lane = me & 31;
  WarpState& w = r.warps[static_cast<std::size_t>(me / 32)];
  if (mask != 0xffffffffu || w.lanes != 32)
    die(std::string(what) + " with mask " + std::to_string(mask) + " in a warp of " + std::to_string(w.lanes) +
        " threads (" + describe_block() + "): only full masks over full warps are emulated (anything else is "
        "undefined on a GPU unless every named lane exists and takes part)");
  const std::uint64_t gen = w.gen;
  if (bytes > 0) std::memcpy(w.slot[gen & 1][lane], value, bytes);
  w.arrived |= 1u << lane;
  Fiber& f = r.fibers[static_cast<std::size_t>(me)];
  f.wait = Wait::Warp;
  f.wait_gen = gen;
  if (w.arrived == mask) {
    ++w.gen;
    w.arrived = 0;
  }
  yield_to_scheduler();
  return &w.slot[gen & 1][0][0];
}
}  // namespace

const void* warp_exchange(unsigned mask, const void* value, std::size_t bytes, int src_lane) {
  return warp_publish(mask, value, bytes, "a warp shuffle") + static_cast<std::size_t>(src_lane) * kWarpSlotBytes;
}

const unsigned char* warp_gather(const void* value, std::size_t bytes, const char* what) {
  return warp_publish(0xffffffffu, value, bytes, what);
}

[[noreturn]] void kernel_error(const std::string& what) { die(what + " (" + describe_block() + ")"); }

namespace {
void execute_grid(dim3 grid, dim3 block, const std::function<void()>& body);
}

cudaError_t run_grid(dim3 grid, dim3 block, std::size_t dynamic_smem, cudaStream_t stream, std::function<void()> body) {
  const std::uint64_t threads = std::uint64_t(block.x) * block.y * block.z;
  if (threads == 0 || threads > 1024 || block.z > 64 || grid.x == 0 || grid.y == 0 || grid.z == 0 ||
      grid.x > 0x7fffffffu || grid.y > 65535 || grid.z > 65535)
    return fail(cudaErrorInvalidConfiguration);
  if (dynamic_smem > 0) {
    std::fprintf(stderr, "cuda-emu: dynamic shared memory is not emulated\n");
    return fail(cudaErrorInvalidValue);
  }
  if (g_run) die("kernel launched from inside a kernel");
  enqueue(stream, "a kernel", [grid, block, body = std::move(body)] { execute_grid(grid, block, body); });
  return cudaSuccess;
}

namespace {
void execute_grid(dim3 grid, dim3 block, const std::function<void()>& body) {
  const std::uint64_t threads = std::uint64_t(block.x) * block.y * block.z;
  std::lock_guard<std::mutex> launch_lock(g_launch_mu);
  if (!g_pool) g_pool = std::make_unique<BlockRun>();
  BlockRun& r = *g_pool;
  const int n = static_cast<int>(threads);
  while (static_cast<int>(r.fibers.size()) < n) {
    r.fibers.emplace_back();
    r.fibers.back().stack = std::make_unique<Stack>();
  }
  if (static_cast<int>(r.warps.size()) < (n + 31) / 32) r.warps.resize(static_cast<std::size_t>((n + 31) / 32));
  r.threads = n;
  r.body = &body;
  r.direct = false;
  r.barrier_calls = 0;
  r.reverse = reverse_order();
  g_run = &r;
  const bool rev = r.reverse;
  // The first block runs as fibers. When none of its threads reached a barrier, the kernel has none (kernels call
  // them unconditionally), and the other blocks run as plain calls, thread after thread: the fibers' switches
  // cost far more than elementwise work. A later block that does reach a barrier stops the process.
  const std::uint64_t blocks = std::uint64_t(grid.x) * grid.y * grid.z;
  for (std::uint64_t i = 0; i < blocks; ++i) {
    const std::uint64_t b = rev ? blocks - 1 - i : i;
    const uint3 bi{static_cast<unsigned>(b % grid.x), static_cast<unsigned>(b / grid.x % grid.y),
                   static_cast<unsigned>(b / (std::uint64_t(grid.x) * grid.y))};
    for (int t = 0; t < n; ++t) {
      ThreadCoords& c = r.fibers[static_cast<std::size_t>(t)].coords;
      c.thread_idx = uint3{static_cast<unsigned>(t) % block.x, static_cast<unsigned>(t) / block.x % block.y,
                           static_cast<unsigned>(t) / (block.x * block.y)};
      c.block_idx = bi;
      c.block_dim = block;
      c.grid_dim = grid;
    }
    poison_shared_memory();
    if (r.direct) {
      for (int k = 0; k < n; ++k) {
        r.current = rev ? n - 1 - k : k;
        body();
      }
      r.current = -1;
    } else {
      run_block(r);
      r.direct = r.barrier_calls == 0;
    }
  }
  g_run = nullptr;
}
}  // namespace

// ---------------- memory bookkeeping ----------------

namespace {

struct Allocation {
  std::size_t bytes;
  cudaMemoryType type;
};

std::mutex g_mem_mu;
std::map<const char*, Allocation>& allocations() {
  static std::map<const char*, Allocation> m;
  return m;
}
std::size_t g_device_bytes = 0;

std::size_t device_memory_bytes() {
  static const std::size_t b = [] {
    const char* v = std::getenv("CUDA_EMU_MEMORY_MB");
    return (v ? std::strtoull(v, nullptr, 10) : 16384ull) << 20;
  }();
  return b;
}

int device_count() {
  static const int n = [] {
    const char* v = std::getenv("CUDA_EMU_DEVICES");  // default: a node of 8 GPUs, one per local rank
    return v ? std::atoi(v) : 8;
  }();
  return n;
}

thread_local int g_device = 0;

// ---------------- streams and events ----------------
// A stream is a queue of operations; an event record is a token the queue completes in order, a stream wait an
// operation that needs a token. Dependencies always point at earlier operations (a wait names a record already
// issued), so running a stream's queue up to an operation, and for each wait first the recording stream up to
// its token, always terminates. Only one host thread runs operations (under g_sched_mu); other threads (the
// project's watchdog) may query events, which reads their tokens' flags.

struct StreamObj;
struct Token {
  std::atomic<bool> done{false};
  std::chrono::steady_clock::time_point t{};
  StreamObj* stream = nullptr;
  std::uint64_t seq = 0;
};
struct Op {
  std::uint64_t seq = 0;
  const char* what = "";
  std::function<void()> work;     // empty for records and waits
  std::shared_ptr<Token> signal;  // a record completes this token
  std::shared_ptr<Token> wait;    // a wait needs this token first
};
struct StreamObj {
  int device = 0;
  bool blocking = true;  // synchronizes with the legacy default stream (not cudaStreamNonBlocking)
  std::deque<Op> queue;
};
struct EventObj {
  std::shared_ptr<Token> latest;  // the last record (null: never recorded)
  bool timing = true;
};

enum class Order { Lazy, OthersFirst, Immediate };
// Read at every use (the emulator's tests switch it between synchronized sections).
Order stream_order() {
  const char* v = std::getenv("CUDA_EMU_STREAMS");
  if (!v || !*v || std::strcmp(v, "lazy") == 0) return Order::Lazy;
  if (std::strcmp(v, "others-first") == 0) return Order::OthersFirst;
  if (std::strcmp(v, "immediate") == 0) return Order::Immediate;
  die(std::string("CUDA_EMU_STREAMS=") + v + ": expected lazy, others-first or immediate");
}

std::recursive_mutex g_sched_mu;
std::vector<StreamObj*> g_streams;  // creation order
std::uint64_t g_seq = 0;

bool is_legacy(cudaStream_t s) { return s == nullptr || s == cudaStreamLegacy || s == cudaStreamPerThread; }
StreamObj* obj(cudaStream_t s) { return reinterpret_cast<StreamObj*>(s); }

// CUDA_EMU_TRACE=1 prints every operation as it runs (with its stream), to follow an order that went wrong.
void execute(Op& op, const StreamObj* s) {
  static const bool trace = [] {
    const char* v = std::getenv("CUDA_EMU_TRACE");
    return v && *v && std::strcmp(v, "0") != 0;
  }();
  if (trace) std::fprintf(stderr, "cuda-emu: op %llu on stream %p: %s\n", static_cast<unsigned long long>(op.seq),
                          static_cast<const void*>(s), op.what);
  if (op.work) op.work();
  if (op.signal) {
    op.signal->t = std::chrono::steady_clock::now();
    op.signal->done.store(true, std::memory_order_release);
  }
}

void run_until(StreamObj* s, std::uint64_t seq);
// Runs what `t` needs: its stream up to the record.
void satisfy(const std::shared_ptr<Token>& t) {
  if (t && !t->done.load(std::memory_order_acquire)) run_until(t->stream, t->seq);
}
// Runs the operations at the front of every stream but `except` that need no other stream, until none is left.
void advance_others(const StreamObj* except) {
  for (bool progress = true; progress;) {
    progress = false;
    for (StreamObj* o : g_streams) {
      while (o != except && !o->queue.empty()) {
        Op& op = o->queue.front();
        if (op.wait && !op.wait->done.load(std::memory_order_acquire)) break;
        Op run = std::move(op);
        o->queue.pop_front();
        execute(run, o);
        progress = true;
      }
    }
  }
}
void run_until(StreamObj* s, std::uint64_t seq) {
  if (stream_order() == Order::OthersFirst) advance_others(s);
  while (!s->queue.empty() && s->queue.front().seq <= seq) {
    satisfy(s->queue.front().wait);
    Op run = std::move(s->queue.front());
    s->queue.pop_front();
    execute(run, s);
  }
}
// The legacy default stream's implicit synchronization: the work of every blocking stream, before a call on it.
void complete_blocking_streams() {
  for (std::size_t i = 0; i < g_streams.size(); ++i)
    if (g_streams[i]->blocking) run_until(g_streams[i], UINT64_MAX);
}
void complete_all_streams() {
  for (std::size_t i = 0; i < g_streams.size(); ++i) run_until(g_streams[i], UINT64_MAX);
}

// Issues one operation on `s`: on the legacy stream it runs now, after the blocking streams' work.
void issue(cudaStream_t s, Op op) {
  std::lock_guard<std::recursive_mutex> lock(g_sched_mu);
  op.seq = ++g_seq;
  if (op.signal) {
    op.signal->seq = op.seq;
    op.signal->stream = is_legacy(s) ? nullptr : obj(s);
  }
  if (is_legacy(s)) {
    complete_blocking_streams();
    satisfy(op.wait);
    execute(op, nullptr);
    return;
  }
  StreamObj* so = obj(s);
  so->queue.push_back(std::move(op));
  if (stream_order() == Order::Immediate) run_until(so, UINT64_MAX);
}

void* host_alloc(std::size_t bytes) {
  // 256-byte aligned like cudaMalloc; contents start as garbage on a GPU, so fill with a NaN pattern to find
  // reads of memory nobody wrote.
  void* p = nullptr;
  if (posix_memalign(&p, 256, bytes) != 0) return nullptr;  // exactly `bytes`: a sanitizer sees any overrun
  std::memset(p, 0xff, bytes);
  return p;
}

// Whether [p, p + bytes) lies inside one allocation of type `type` (device or pinned host).
bool inside(const void* p, std::size_t bytes, cudaMemoryType type) {
  std::lock_guard<std::mutex> lock(g_mem_mu);
  auto& m = allocations();
  auto it = m.upper_bound(static_cast<const char*>(p));
  if (it == m.begin()) return false;
  --it;
  const char* c = static_cast<const char*>(p);
  return it->second.type == type && c >= it->first && c + bytes <= it->first + it->second.bytes;
}
bool touches_device(const void* p) {
  std::lock_guard<std::mutex> lock(g_mem_mu);
  auto& m = allocations();
  auto it = m.upper_bound(static_cast<const char*>(p));
  if (it == m.begin()) return false;
  --it;
  return it->second.type == cudaMemoryTypeDevice && static_cast<const char*>(p) < it->first + it->second.bytes;
}

// A copy's device side must lie inside one cudaMalloc allocation and its host side outside them (a GPU fails
// such copies, or corrupts memory): the emulator reports the call instead of copying.
cudaError_t check_side(const char* call, const char* side, const void* p, std::size_t bytes, bool device) {
  if (bytes == 0) return cudaSuccess;
  const bool ok = device ? inside(p, bytes, cudaMemoryTypeDevice) : !touches_device(p);
  if (ok) return cudaSuccess;
  std::fprintf(stderr, "cuda-emu: %s: the %s (%p, %zu bytes) is %s\n", call, side, p, bytes,
               device ? "not inside one device allocation" : "device memory, but the copy's kind says host");
  return fail(cudaErrorInvalidValue);
}
cudaError_t check_copy(const char* call, void* dst, const void* src, std::size_t bytes, cudaMemcpyKind kind) {
  bool dst_dev = false, src_dev = false;
  switch (kind) {
    case cudaMemcpyHostToHost: break;
    case cudaMemcpyHostToDevice: dst_dev = true; break;
    case cudaMemcpyDeviceToHost: src_dev = true; break;
    case cudaMemcpyDeviceToDevice: dst_dev = src_dev = true; break;
    default:  // cudaMemcpyDefault: the pointers say which; a device side must still fit its allocation
      dst_dev = touches_device(dst);
      src_dev = touches_device(src);
  }
  if (const cudaError_t e = check_side(call, "destination", dst, bytes, dst_dev)) return e;
  return check_side(call, "source", src, bytes, src_dev);
}

// A host buffer of an asynchronous copy that is not pinned (cudaMallocHost): the copy is synchronous for it.
bool pageable(const void* p, std::size_t bytes) {
  return bytes > 0 && !inside(p, bytes, cudaMemoryTypeHost) && !touches_device(p);
}

// An asynchronous copy: from pageable memory the source is read at the call (CUDA stages it then), into pageable
// memory the call returns when the copy is done; otherwise both sides are touched when the stream runs it.
cudaError_t async_copy(void* dst, const void* src, std::size_t rows, std::size_t width, std::size_t dpitch,
                       std::size_t spitch, cudaStream_t stream) {
  if (rows == 0 || width == 0) return cudaSuccess;
  const std::size_t span_src = (rows - 1) * spitch + width, span_dst = (rows - 1) * dpitch + width;
  auto* d = static_cast<char*>(dst);
  if (pageable(src, span_src)) {
    std::vector<char> staged(rows * width);
    for (std::size_t r = 0; r < rows; ++r)
      std::memcpy(staged.data() + r * width, static_cast<const char*>(src) + r * spitch, width);
    enqueue(stream, "a copy from pageable host memory", [d, staged = std::move(staged), rows, width, dpitch] {
      for (std::size_t r = 0; r < rows; ++r) std::memmove(d + r * dpitch, staged.data() + r * width, width);
    });
    return cudaSuccess;
  }
  const auto* sp = static_cast<const char*>(src);
  enqueue(stream, "a copy", [d, sp, rows, width, dpitch, spitch] {
    for (std::size_t r = 0; r < rows; ++r) std::memmove(d + r * dpitch, sp + r * spitch, width);
  });
  if (pageable(dst, span_dst)) complete(stream);
  return cudaSuccess;
}

}  // namespace

void enqueue(cudaStream_t stream, const char* what, std::function<void()> work) {
  Op op;
  op.what = what;
  op.work = std::move(work);
  issue(stream, std::move(op));
}

void complete(cudaStream_t stream) {
  std::lock_guard<std::recursive_mutex> lock(g_sched_mu);
  if (is_legacy(stream)) complete_blocking_streams();
  else run_until(obj(stream), UINT64_MAX);
}

void fatal(const std::string& what) { die(what); }

}  // namespace cuda_emu

using namespace cuda_emu;

extern "C" {

cudaError_t CUDARTAPI cudaGetLastError(void) {
  const cudaError_t e = g_last_error;
  g_last_error = cudaSuccess;
  return e;
}
cudaError_t CUDARTAPI cudaPeekAtLastError(void) { return g_last_error; }
const char* CUDARTAPI cudaGetErrorString(cudaError_t e) {
  switch (e) {
    case cudaSuccess: return "no error";
    case cudaErrorInvalidValue: return "invalid argument";
    case cudaErrorMemoryAllocation: return "out of memory";
    case cudaErrorInvalidConfiguration: return "invalid configuration argument";
    case cudaErrorInvalidDevice: return "invalid device ordinal";
    case cudaErrorNoDevice: return "no CUDA-capable device is detected";
    case cudaErrorNotReady: return "device not ready";
    default: return "emulated CUDA error";
  }
}
const char* CUDARTAPI cudaGetErrorName(cudaError_t e) {
  switch (e) {
    case cudaSuccess: return "cudaSuccess";
    case cudaErrorInvalidValue: return "cudaErrorInvalidValue";
    case cudaErrorMemoryAllocation: return "cudaErrorMemoryAllocation";
    case cudaErrorInvalidConfiguration: return "cudaErrorInvalidConfiguration";
    case cudaErrorInvalidDevice: return "cudaErrorInvalidDevice";
    case cudaErrorNoDevice: return "cudaErrorNoDevice";
    case cudaErrorNotReady: return "cudaErrorNotReady";
    default: return "cudaErrorUnknown";
  }
}

cudaError_t CUDARTAPI cudaGetDeviceCount(int* count) {
  *count = device_count();
  return device_count() > 0 ? cudaSuccess : fail(cudaErrorNoDevice);
}
cudaError_t CUDARTAPI cudaSetDevice(int device) {
  if (device < 0 || device >= device_count()) return fail(cudaErrorInvalidDevice);
  g_device = device;
  return cudaSuccess;
}
cudaError_t CUDARTAPI cudaGetDevice(int* device) {
  *device = g_device;
  return cudaSuccess;
}
cudaError_t CUDARTAPI cudaGetDeviceProperties(cudaDeviceProp* p, int device) {
  if (device < 0 || device >= device_count()) return fail(cudaErrorInvalidDevice);
  *p = cudaDeviceProp{};
  std::snprintf(p->name, sizeof p->name, "orthoshard CUDA emulator (CPU)");
  for (int i = 0; i < 16; ++i) p->uuid.bytes[i] = static_cast<char>(0xe0 + i + 16 * device);
  p->totalGlobalMem = device_memory_bytes();
  p->major = 9;
  p->minor = 0;
  p->multiProcessorCount = 4;
  p->warpSize = 32;
  p->maxThreadsPerBlock = 1024;
  p->sharedMemPerBlock = 48 << 10;
  p->pciBusID = 1 + device;
  return cudaSuccess;
}
cudaError_t CUDARTAPI cudaDeviceGetAttribute(int* value, cudaDeviceAttr attr, int device) {
  if (device < 0 || device >= device_count()) return fail(cudaErrorInvalidDevice);
  switch (attr) {
    case cudaDevAttrComputeCapabilityMajor: *value = 9; break;
    case cudaDevAttrComputeCapabilityMinor: *value = 0; break;
    case cudaDevAttrMultiProcessorCount: *value = 4; break;
    case cudaDevAttrWarpSize: *value = 32; break;
    case cudaDevAttrMaxThreadsPerBlock: *value = 1024; break;
    default: *value = 0;
  }
  return cudaSuccess;
}
cudaError_t CUDARTAPI cudaDeviceGetStreamPriorityRange(int* least, int* greatest) {
  if (least) *least = 0;
  if (greatest) *greatest = -5;
  return cudaSuccess;
}
cudaError_t CUDARTAPI cudaRuntimeGetVersion(int* v) {
  *v = CUDART_VERSION;
  return cudaSuccess;
}
cudaError_t CUDARTAPI cudaDriverGetVersion(int* v) {
  *v = CUDART_VERSION;
  return cudaSuccess;
}
cudaError_t CUDARTAPI cudaDeviceSynchronize(void) {
  std::lock_guard<std::recursive_mutex> lock(g_sched_mu);
  complete_all_streams();
  return cudaSuccess;
}
cudaError_t CUDARTAPI cudaMemGetInfo(size_t* free_bytes, size_t* total) {
  std::lock_guard<std::mutex> lock(g_mem_mu);
  *total = device_memory_bytes();
  *free_bytes = *total > g_device_bytes ? *total - g_device_bytes : 0;
  return cudaSuccess;
}

cudaError_t CUDARTAPI cudaMalloc(void** p, size_t bytes) {
  *p = nullptr;
  if (bytes == 0) return cudaSuccess;
  std::lock_guard<std::mutex> lock(g_mem_mu);
  if (g_device_bytes + bytes > device_memory_bytes()) return fail(cudaErrorMemoryAllocation);
  void* q = host_alloc(bytes);
  if (!q) return fail(cudaErrorMemoryAllocation);
  allocations()[static_cast<const char*>(q)] = Allocation{bytes, cudaMemoryTypeDevice};
  g_device_bytes += bytes;
  *p = q;
  return cudaSuccess;
}
cudaError_t CUDARTAPI cudaMallocHost(void** p, size_t bytes) {
  void* q = host_alloc(bytes ? bytes : 1);
  if (!q) return fail(cudaErrorMemoryAllocation);
  std::lock_guard<std::mutex> lock(g_mem_mu);
  allocations()[static_cast<const char*>(q)] = Allocation{bytes, cudaMemoryTypeHost};
  *p = q;
  return cudaSuccess;
}
static cudaError_t free_kind(void* p, cudaMemoryType kind) {
  if (!p) return cudaSuccess;
  {
    std::lock_guard<std::recursive_mutex> sched(g_sched_mu);  // freeing synchronizes the device first
    complete_all_streams();
  }
  std::lock_guard<std::mutex> lock(g_mem_mu);
  auto it = allocations().find(static_cast<const char*>(p));
  if (it == allocations().end() || it->second.type != kind) return fail(cudaErrorInvalidValue);
  if (kind == cudaMemoryTypeDevice) g_device_bytes -= it->second.bytes;
  allocations().erase(it);
  std::free(p);
  return cudaSuccess;
}
cudaError_t CUDARTAPI cudaFree(void* p) { return free_kind(p, cudaMemoryTypeDevice); }
cudaError_t CUDARTAPI cudaFreeHost(void* p) { return free_kind(p, cudaMemoryTypeHost); }

cudaError_t CUDARTAPI cudaPointerGetAttributes(cudaPointerAttributes* a, const void* ptr) {
  *a = cudaPointerAttributes{};
  a->type = cudaMemoryTypeUnregistered;
  std::lock_guard<std::mutex> lock(g_mem_mu);
  auto& m = allocations();
  auto it = m.upper_bound(static_cast<const char*>(ptr));
  if (it != m.begin()) {
    --it;
    if (static_cast<const char*>(ptr) < it->first + std::max<std::size_t>(it->second.bytes, 1)) {
      a->type = it->second.type;
      a->device = 0;
      a->devicePointer = const_cast<void*>(ptr);
      a->hostPointer = it->second.type == cudaMemoryTypeHost ? const_cast<void*>(ptr) : nullptr;
    }
  }
  return cudaSuccess;
}

// The blocking calls use the legacy default stream: they run after every blocking stream's work, not after the
// non-blocking streams' (cudaStreamNonBlocking) work.
cudaError_t CUDARTAPI cudaMemcpy(void* dst, const void* src, size_t bytes, cudaMemcpyKind kind) {
  if (const cudaError_t e = check_copy("cudaMemcpy", dst, src, bytes, kind)) return e;
  if (bytes) enqueue(nullptr, "cudaMemcpy", [=] { std::memmove(dst, src, bytes); });
  return cudaSuccess;
}
cudaError_t CUDARTAPI cudaMemcpyAsync(void* dst, const void* src, size_t bytes, cudaMemcpyKind kind, cudaStream_t s) {
  if (const cudaError_t e = check_copy("cudaMemcpyAsync", dst, src, bytes, kind)) return e;
  return async_copy(dst, src, 1, bytes, bytes, bytes, s);
}
cudaError_t CUDARTAPI cudaMemcpy2DAsync(void* dst, size_t dpitch, const void* src, size_t spitch, size_t width,
                                        size_t height, cudaMemcpyKind kind, cudaStream_t s) {
  if (width > dpitch || width > spitch) return fail(cudaErrorInvalidValue);
  if (height == 0 || width == 0) return cudaSuccess;
  // the first and the last row (the rows between lie within their span)
  if (const cudaError_t e = check_copy("cudaMemcpy2D", dst, src, width, kind)) return e;
  if (const cudaError_t e = check_copy("cudaMemcpy2D", static_cast<char*>(dst) + (height - 1) * dpitch,
                                       static_cast<const char*>(src) + (height - 1) * spitch, width, kind))
    return e;
  return async_copy(dst, src, height, width, dpitch, spitch, s);
}
cudaError_t CUDARTAPI cudaMemset(void* p, int value, size_t bytes) { return cudaMemsetAsync(p, value, bytes, nullptr); }
cudaError_t CUDARTAPI cudaMemsetAsync(void* p, int value, size_t bytes, cudaStream_t s) {
  if (const cudaError_t e = check_side("cudaMemset", "destination", p, bytes, true)) return e;
  if (bytes) enqueue(s, "a memset", [=] { std::memset(p, value, bytes); });
  return cudaSuccess;
}
cudaError_t CUDARTAPI cudaMemset2DAsync(void* p, size_t pitch, int value, size_t width, size_t height, cudaStream_t s) {
  if (width > pitch) return fail(cudaErrorInvalidValue);
  if (height == 0 || width == 0) return cudaSuccess;
  if (const cudaError_t e = check_side("cudaMemset2D", "destination", p, width, true)) return e;
  if (const cudaError_t e = check_side("cudaMemset2D", "destination", static_cast<char*>(p) + (height - 1) * pitch,
                                       width, true))
    return e;
  auto* d = static_cast<char*>(p);
  enqueue(s, "a 2-D memset", [=] {
    for (size_t r = 0; r < height; ++r) std::memset(d + r * pitch, value, width);
  });
  return cudaSuccess;
}

cudaError_t CUDARTAPI cudaStreamCreateWithPriority(cudaStream_t* s, unsigned int flags, int) {
  std::lock_guard<std::recursive_mutex> lock(g_sched_mu);
  auto* o = new StreamObj;
  o->device = g_device;
  o->blocking = (flags & cudaStreamNonBlocking) == 0;
  g_streams.push_back(o);
  *s = reinterpret_cast<cudaStream_t>(o);
  return cudaSuccess;
}
cudaError_t CUDARTAPI cudaStreamCreateWithFlags(cudaStream_t* s, unsigned int flags) {
  return cudaStreamCreateWithPriority(s, flags, 0);
}
cudaError_t CUDARTAPI cudaStreamCreate(cudaStream_t* s) {
  return cudaStreamCreateWithPriority(s, cudaStreamDefault, 0);
}
cudaError_t CUDARTAPI cudaStreamDestroy(cudaStream_t s) {
  if (is_legacy(s)) return fail(cudaErrorInvalidResourceHandle);
  std::lock_guard<std::recursive_mutex> lock(g_sched_mu);
  run_until(obj(s), UINT64_MAX);  // its work still completes (CUDA releases the stream afterwards)
  g_streams.erase(std::find(g_streams.begin(), g_streams.end(), obj(s)));
  delete obj(s);
  return cudaSuccess;
}
cudaError_t CUDARTAPI cudaStreamSynchronize(cudaStream_t s) {
  complete(s);
  return cudaSuccess;
}
cudaError_t CUDARTAPI cudaStreamQuery(cudaStream_t s) {
  std::lock_guard<std::recursive_mutex> lock(g_sched_mu);
  if (is_legacy(s)) {
    for (const StreamObj* o : g_streams)
      if (o->blocking && !o->queue.empty()) return cudaErrorNotReady;
    return cudaSuccess;
  }
  return obj(s)->queue.empty() ? cudaSuccess : cudaErrorNotReady;
}
cudaError_t CUDARTAPI cudaStreamWaitEvent(cudaStream_t s, cudaEvent_t e, unsigned int) {
  if (!e) return fail(cudaErrorInvalidValue);
  std::shared_ptr<Token> t;
  {
    std::lock_guard<std::recursive_mutex> lock(g_sched_mu);
    t = reinterpret_cast<EventObj*>(e)->latest;  // the record at the time of the call
  }
  if (!t) return cudaSuccess;  // never recorded: nothing to wait for
  Op op;
  op.what = "a stream wait";
  op.wait = std::move(t);
  issue(s, std::move(op));
  return cudaSuccess;
}

cudaError_t CUDARTAPI cudaEventCreateWithFlags(cudaEvent_t* e, unsigned int flags) {
  auto* o = new EventObj{};
  o->timing = (flags & cudaEventDisableTiming) == 0;
  *e = reinterpret_cast<cudaEvent_t>(o);
  return cudaSuccess;
}
cudaError_t CUDARTAPI cudaEventCreate(cudaEvent_t* e) { return cudaEventCreateWithFlags(e, cudaEventDefault); }
cudaError_t CUDARTAPI cudaEventDestroy(cudaEvent_t e) {
  std::lock_guard<std::recursive_mutex> lock(g_sched_mu);  // another thread may be querying it
  delete reinterpret_cast<EventObj*>(e);                    // a pending record keeps its token alive
  return cudaSuccess;
}
cudaError_t CUDARTAPI cudaEventRecord(cudaEvent_t e, cudaStream_t s) {
  if (!e) return fail(cudaErrorInvalidValue);
  auto t = std::make_shared<Token>();
  {
    std::lock_guard<std::recursive_mutex> lock(g_sched_mu);
    reinterpret_cast<EventObj*>(e)->latest = t;
  }
  Op op;
  op.what = "an event record";
  op.signal = std::move(t);
  issue(s, std::move(op));
  return cudaSuccess;
}
cudaError_t CUDARTAPI cudaEventSynchronize(cudaEvent_t e) {
  if (!e) return fail(cudaErrorInvalidValue);
  std::lock_guard<std::recursive_mutex> lock(g_sched_mu);
  satisfy(reinterpret_cast<EventObj*>(e)->latest);
  return cudaSuccess;
}
// Never runs work (the project's watchdog thread calls this): only reports whether the record has run.
cudaError_t CUDARTAPI cudaEventQuery(cudaEvent_t e) {
  if (!e) return fail(cudaErrorInvalidValue);
  std::shared_ptr<Token> t;
  {
    std::lock_guard<std::recursive_mutex> lock(g_sched_mu);
    t = reinterpret_cast<EventObj*>(e)->latest;
  }
  return !t || t->done.load(std::memory_order_acquire) ? cudaSuccess : cudaErrorNotReady;
}
cudaError_t CUDARTAPI cudaEventElapsedTime(float* ms, cudaEvent_t start, cudaEvent_t end) {
  auto* a = reinterpret_cast<EventObj*>(start);
  auto* b = reinterpret_cast<EventObj*>(end);
  if (!a || !b || !a->timing || !b->timing) return fail(cudaErrorInvalidResourceHandle);
  std::lock_guard<std::recursive_mutex> lock(g_sched_mu);
  if (!a->latest || !b->latest) return fail(cudaErrorInvalidResourceHandle);
  if (!a->latest->done || !b->latest->done) return fail(cudaErrorNotReady);
  *ms = std::chrono::duration<float, std::milli>(b->latest->t - a->latest->t).count();
  return cudaSuccess;
}

}  // extern "C"
