// Streams of the CUDA emulator, for the emulated libraries (emu_libs.cpp, emu_nccl.cpp) and the runtime.
//
// Work given to a stream is queued, not done: it runs, in the stream's order, only when something needs it (a
// synchronization, an event another stream or the host waits for, a blocking copy, cudaFree). Work on different
// streams with no event between them therefore runs in an order a GPU may also choose, and a missing wait shows
// as stale or poisoned data instead of happening to work. CUDA_EMU_STREAMS selects the order:
//   lazy (default)  each stream runs as late as possible: a reader that does not wait for its producer on
//                   another stream runs first and sees the old contents;
//   others-first    when the host needs one stream, every other stream first runs as far as it can without
//                   waiting: a producer that overwrites what another stream still reads runs first;
//   immediate       everything runs when it is issued (no reordering; the emulator's original behaviour).
// The legacy default stream (nullptr) runs its work at once, after the work of every blocking stream, as the
// legacy stream's implicit synchronization orders it; non-blocking streams are not waited for.
// CUDA_EMU_TRACE=1 prints each operation (with `what` and its stream) as it runs.
#pragma once

#include <cuda_runtime.h>

#include <functional>
#include <string>

namespace cuda_emu {

// Queues `work` on `stream` (see above); `what` names it in the trace (a string literal: it is kept).
void enqueue(cudaStream_t stream, const char* what, std::function<void()> work);
// Returns once every piece of work queued on `stream` so far has run (and whatever it waits for).
void complete(cudaStream_t stream);
// Stops the process with a message (the emulator found a bug in the program).
[[noreturn]] void fatal(const std::string& what);

}  // namespace cuda_emu
