// Emulated NCCL over MPI for the CUDA emulator: each "GPU" is a process and device memory is host memory, so a
// collective is an MPI call on host buffers. Reductions gather every rank's input and add in rank order (bf16 in
// fp32, rounded once), so results do not depend on MPI's algorithms.
// Streams (emu_streams.hpp): a call first runs its stream's earlier work, so its inputs are what the stream has
// produced, and exchanges the data at once, so every rank makes its MPI calls in program order (deferring them
// could deadlock ranks whose host threads reach other MPI calls first). What the stream would do later is
// queued: the results reach the receive buffer only when the stream runs the op's completion. Until then the
// receive buffer holds a NaN pattern, and the completion stops the process if anything wrote the send or the
// receive buffer in between: work on another stream that neither waited for the op nor was waited for by it.
// The communicator of a unique id: the id made by the group's rank 0 carries that process's MPI_COMM_WORLD rank
// and a serial number; in ncclCommInitRank every member sends its world rank there, gets the member list back,
// and the members build their MPI communicator with MPI_Comm_create_group (collective over the members only).
#include <cuda_bf16.h>
#include <mpi.h>
#include <nccl.h>

#include "emu_streams.hpp"

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

struct ncclComm {
  MPI_Comm mpi = MPI_COMM_NULL;
  int rank = 0, size = 0;
};

namespace {

constexpr int kTagBase = 32000;  // point-to-point tags of the bootstrap (serial number modulo 700)
int g_group_depth = 0;
struct P2P {
  bool send;
  void* buf;
  std::size_t bytes;
  int peer;
  ncclComm_t comm;
  cudaStream_t stream;
};
std::vector<P2P> g_pending;

std::size_t type_size(ncclDataType_t t) {
  switch (t) {
    case ncclInt8: case ncclUint8: case ncclFloat8e4m3: case ncclFloat8e5m2: return 1;
    case ncclFloat16: case ncclBfloat16: return 2;
    case ncclInt32: case ncclUint32: case ncclFloat32: return 4;
    default: return 8;
  }
}

double load(const void* p, ncclDataType_t t, std::size_t i) {
  switch (t) {
    case ncclInt8: return static_cast<const std::int8_t*>(p)[i];
    case ncclUint8: return static_cast<const std::uint8_t*>(p)[i];
    case ncclInt32: return static_cast<const std::int32_t*>(p)[i];
    case ncclUint32: return static_cast<const std::uint32_t*>(p)[i];
    case ncclInt64: return static_cast<double>(static_cast<const std::int64_t*>(p)[i]);
    case ncclUint64: return static_cast<double>(static_cast<const std::uint64_t*>(p)[i]);
    case ncclFloat32: return static_cast<const float*>(p)[i];
    case ncclFloat64: return static_cast<const double*>(p)[i];
    case ncclBfloat16: return __bfloat162float(static_cast<const __nv_bfloat16*>(p)[i]);
    default: return 0;
  }
}
void store(void* p, ncclDataType_t t, std::size_t i, double v) {
  switch (t) {
    case ncclInt8: static_cast<std::int8_t*>(p)[i] = static_cast<std::int8_t>(v); break;
    case ncclUint8: static_cast<std::uint8_t*>(p)[i] = static_cast<std::uint8_t>(v); break;
    case ncclInt32: static_cast<std::int32_t*>(p)[i] = static_cast<std::int32_t>(v); break;
    case ncclUint32: static_cast<std::uint32_t*>(p)[i] = static_cast<std::uint32_t>(v); break;
    case ncclInt64: static_cast<std::int64_t*>(p)[i] = static_cast<std::int64_t>(v); break;
    case ncclUint64: static_cast<std::uint64_t*>(p)[i] = static_cast<std::uint64_t>(v); break;
    case ncclFloat32: static_cast<float*>(p)[i] = static_cast<float>(v); break;
    case ncclFloat64: static_cast<double*>(p)[i] = v; break;
    case ncclBfloat16: static_cast<__nv_bfloat16*>(p)[i] = __float2bfloat16_rn(static_cast<float>(v)); break;
    default: break;
  }
}
bool supported(ncclDataType_t t) { return t != ncclFloat16 && t != ncclFloat8e4m3 && t != ncclFloat8e5m2; }

bool overlaps(const void* a, std::size_t an, const void* b, std::size_t bn) {
  const char *x = static_cast<const char*>(a), *y = static_cast<const char*>(b);
  return an > 0 && bn > 0 && x < y + bn && y < x + an;
}

// The rest of an op whose data has been exchanged (see the top): the receive buffer is poisoned now and gets
// `result` when `stream` runs the completion, which first checks that nothing touched the two buffers.
void finish(const char* what, cudaStream_t stream, const void* send, std::size_t send_bytes, void* recv,
            std::vector<char> result) {
  const std::size_t recv_bytes = result.size();
  std::vector<char> send_copy;
  if (!overlaps(send, send_bytes, recv, recv_bytes))  // in place: the receive buffer's check covers it
    send_copy.assign(static_cast<const char*>(send), static_cast<const char*>(send) + send_bytes);
  if (recv_bytes) std::memset(recv, 0xff, recv_bytes);
  auto state =
      std::make_shared<std::pair<std::vector<char>, std::vector<char>>>(std::move(send_copy), std::move(result));
  cuda_emu::enqueue(stream, what, [what, send, recv, state] {
    const std::vector<char>& sent = state->first;
    const std::vector<char>& out = state->second;
    if (!sent.empty() && std::memcmp(send, sent.data(), sent.size()) != 0)
      cuda_emu::fatal(std::string(what) + ": its send buffer changed while the op was in flight on its stream: "
                      "work on another stream wrote it, and either the op did not wait for that work or that work "
                      "did not wait for the op (a missing event wait)");
    for (std::size_t i = 0; i < out.size(); ++i)
      if (static_cast<const unsigned char*>(recv)[i] != 0xff)
        cuda_emu::fatal(std::string(what) + ": its receive buffer was written while the op was in flight on its "
                        "stream: work on another stream wrote it, and either the op did not wait for that work or "
                        "that work did not wait for the op (a missing event wait)");
    if (!out.empty()) std::memcpy(recv, out.data(), out.size());
  });
}

// Every rank's `count` elements, in rank order (the inputs of a reduction).
std::vector<char> gather_all(const void* send, std::size_t bytes, ncclComm_t c) {
  std::vector<char> all(bytes * static_cast<std::size_t>(c->size));
  MPI_Allgather(send, static_cast<int>(bytes), MPI_BYTE, all.data(), static_cast<int>(bytes), MPI_BYTE, c->mpi);
  return all;
}

// out[i] = op over ranks r (in order) of in_r[offset + i], i < count; float types add in the element type's
// precision the device would use (fp32 for 16-bit floats, the type itself otherwise).
void reduce(const std::vector<char>& all, std::size_t per_rank, std::size_t offset, std::size_t count,
            ncclDataType_t t, ncclRedOp_t op, void* out, ncclComm_t c) {
  const std::size_t es = type_size(t);
  for (std::size_t i = 0; i < count; ++i) {
    double acc = 0;
    float accf = 0;
    for (int r = 0; r < c->size; ++r) {
      const double v = load(all.data() + static_cast<std::size_t>(r) * per_rank * es, t, offset + i);
      if (r == 0) {
        acc = v;
        accf = static_cast<float>(v);
      } else if (op == ncclMax) {
        acc = std::max(acc, v);
      } else if (op == ncclMin) {
        acc = std::min(acc, v);
      } else if (op == ncclProd) {
        acc *= v;
        accf *= static_cast<float>(v);
      } else {
        acc += v;
        accf += static_cast<float>(v);
      }
    }
    const bool single = t == ncclFloat32 || t == ncclBfloat16;
    double result = (single && (op == ncclSum || op == ncclAvg || op == ncclProd)) ? accf : acc;
    if (op == ncclAvg) result = single ? static_cast<float>(result) / static_cast<float>(c->size) : result / c->size;
    store(out, t, i, result);
  }
}

}  // namespace

extern "C" {

ncclResult_t ncclGetVersion(int* version) {
  *version = NCCL_VERSION_CODE;
  return ncclSuccess;
}
const char* ncclGetErrorString(ncclResult_t r) {
  switch (r) {
    case ncclSuccess: return "no error";
    case ncclInvalidArgument: return "invalid argument (emulated NCCL)";
    case ncclInvalidUsage: return "invalid usage (emulated NCCL)";
    case ncclInProgress: return "in progress";
    default: return "emulated NCCL error";
  }
}
const char* ncclGetLastError(ncclComm_t) { return ""; }

ncclResult_t ncclGetUniqueId(ncclUniqueId* id) {
  static int serial = 0;
  int initialized = 0;
  MPI_Initialized(&initialized);
  if (!initialized) return ncclInvalidUsage;
  int world = 0;
  MPI_Comm_rank(MPI_COMM_WORLD, &world);
  std::memset(id, 0, sizeof *id);
  const int s = serial++;
  std::memcpy(id->internal, "cuda-emu", 8);
  std::memcpy(id->internal + 8, &world, sizeof world);
  std::memcpy(id->internal + 12, &s, sizeof s);
  return ncclSuccess;
}

ncclResult_t ncclCommInitRank(ncclComm_t* comm, int nranks, ncclUniqueId id, int rank) {
  if (std::memcmp(id.internal, "cuda-emu", 8) != 0 || nranks < 1 || rank < 0 || rank >= nranks)
    return ncclInvalidArgument;
  int root = 0, serial = 0, world = 0;
  std::memcpy(&root, id.internal + 8, sizeof root);
  std::memcpy(&serial, id.internal + 12, sizeof serial);
  MPI_Comm_rank(MPI_COMM_WORLD, &world);
  const int tag = kTagBase + serial % 700;
  std::vector<int> members(static_cast<std::size_t>(nranks), -1);
  if (rank == 0) {
    members[0] = world;
    for (int i = 1; i < nranks; ++i) {
      int msg[2];
      MPI_Recv(msg, 2, MPI_INT, MPI_ANY_SOURCE, tag, MPI_COMM_WORLD, MPI_STATUS_IGNORE);
      if (msg[0] < 0 || msg[0] >= nranks || members[static_cast<std::size_t>(msg[0])] != -1) return ncclInvalidUsage;
      members[static_cast<std::size_t>(msg[0])] = msg[1];
    }
    for (int i = 1; i < nranks; ++i)
      MPI_Send(members.data(), nranks, MPI_INT, members[static_cast<std::size_t>(i)], tag, MPI_COMM_WORLD);
  } else {
    const int msg[2] = {rank, world};
    MPI_Send(msg, 2, MPI_INT, root, tag, MPI_COMM_WORLD);
    MPI_Recv(members.data(), nranks, MPI_INT, root, tag, MPI_COMM_WORLD, MPI_STATUS_IGNORE);
  }
  MPI_Group world_group = MPI_GROUP_NULL, group = MPI_GROUP_NULL;
  MPI_Comm_group(MPI_COMM_WORLD, &world_group);
  MPI_Group_incl(world_group, nranks, members.data(), &group);
  auto* c = new ncclComm;
  MPI_Comm_create_group(MPI_COMM_WORLD, group, tag, &c->mpi);
  MPI_Group_free(&group);
  MPI_Group_free(&world_group);
  c->rank = rank;
  c->size = nranks;
  *comm = c;
  return ncclSuccess;
}

ncclResult_t ncclCommDestroy(ncclComm_t comm) {
  if (!comm) return ncclSuccess;
  if (comm->mpi != MPI_COMM_NULL) MPI_Comm_free(&comm->mpi);
  delete comm;
  return ncclSuccess;
}
ncclResult_t ncclCommAbort(ncclComm_t comm) {
  delete comm;  // no collective clean-up: the other ranks may be gone
  return ncclSuccess;
}
ncclResult_t ncclCommGetAsyncError(ncclComm_t, ncclResult_t* err) {
  *err = ncclSuccess;
  return ncclSuccess;
}

ncclResult_t ncclBroadcast(const void* send, void* recv, size_t count, ncclDataType_t t, int root, ncclComm_t c,
                           cudaStream_t stream) {
  if (!supported(t) || root < 0 || root >= c->size) return ncclInvalidArgument;
  const std::size_t bytes = count * type_size(t);
  cuda_emu::complete(stream);
  std::vector<char> out(bytes);
  if (c->rank == root && bytes) std::memcpy(out.data(), send, bytes);
  MPI_Bcast(out.data(), static_cast<int>(bytes), MPI_BYTE, root, c->mpi);
  finish("ncclBroadcast", stream, send, c->rank == root ? bytes : 0, recv, std::move(out));
  return ncclSuccess;
}

ncclResult_t ncclAllReduce(const void* send, void* recv, size_t count, ncclDataType_t t, ncclRedOp_t op,
                           ncclComm_t c, cudaStream_t stream) {
  if (!supported(t) || op >= ncclNumOps) return ncclInvalidArgument;
  const std::size_t bytes = count * type_size(t);
  cuda_emu::complete(stream);
  const std::vector<char> all = gather_all(send, bytes, c);
  std::vector<char> out(bytes);
  reduce(all, count, 0, count, t, op, out.data(), c);
  finish("ncclAllReduce", stream, send, bytes, recv, std::move(out));
  return ncclSuccess;
}

ncclResult_t ncclReduceScatter(const void* send, void* recv, size_t count, ncclDataType_t t, ncclRedOp_t op,
                               ncclComm_t c, cudaStream_t stream) {
  if (!supported(t) || op >= ncclNumOps) return ncclInvalidArgument;
  const std::size_t per_rank = count * static_cast<std::size_t>(c->size);
  cuda_emu::complete(stream);
  const std::vector<char> all = gather_all(send, per_rank * type_size(t), c);
  std::vector<char> out(count * type_size(t));
  reduce(all, per_rank, count * static_cast<std::size_t>(c->rank), count, t, op, out.data(), c);
  finish("ncclReduceScatter", stream, send, per_rank * type_size(t), recv, std::move(out));
  return ncclSuccess;
}

ncclResult_t ncclAllGather(const void* send, void* recv, size_t count, ncclDataType_t t, ncclComm_t c,
                           cudaStream_t stream) {
  if (!supported(t)) return ncclInvalidArgument;
  const std::size_t bytes = count * type_size(t);
  cuda_emu::complete(stream);
  std::vector<char> out(bytes * static_cast<std::size_t>(c->size));
  MPI_Allgather(send, static_cast<int>(bytes), MPI_BYTE, out.data(), static_cast<int>(bytes), MPI_BYTE, c->mpi);
  finish("ncclAllGather", stream, send, bytes, recv, std::move(out));
  return ncclSuccess;
}

ncclResult_t ncclGroupStart() {
  ++g_group_depth;
  return ncclSuccess;
}

static ncclResult_t run_pending() {
  for (const P2P& p : g_pending) cuda_emu::complete(p.stream);
  std::vector<MPI_Request> reqs(g_pending.size());
  std::vector<std::vector<char>> got(g_pending.size());
  for (std::size_t i = 0; i < g_pending.size(); ++i) {
    const P2P& p = g_pending[i];
    if (p.send) {
      MPI_Isend(p.buf, static_cast<int>(p.bytes), MPI_BYTE, p.peer, 7, p.comm->mpi, &reqs[i]);
    } else {
      got[i].resize(p.bytes);
      MPI_Irecv(got[i].data(), static_cast<int>(p.bytes), MPI_BYTE, p.peer, 7, p.comm->mpi, &reqs[i]);
    }
  }
  MPI_Waitall(static_cast<int>(reqs.size()), reqs.data(), MPI_STATUSES_IGNORE);
  for (std::size_t i = 0; i < g_pending.size(); ++i) {
    const P2P& p = g_pending[i];
    if (p.send) finish("ncclSend", p.stream, p.buf, p.bytes, nullptr, {});
    else finish("ncclRecv", p.stream, nullptr, 0, p.buf, std::move(got[i]));
  }
  g_pending.clear();
  return ncclSuccess;
}

ncclResult_t ncclGroupEnd() {
  if (g_group_depth == 0) return ncclInvalidUsage;
  if (--g_group_depth == 0) return run_pending();
  return ncclSuccess;
}

static ncclResult_t p2p(bool send, void* buf, size_t count, ncclDataType_t t, int peer, ncclComm_t c,
                        cudaStream_t stream) {
  if (!supported(t) || peer < 0 || peer >= c->size) return ncclInvalidArgument;
  g_pending.push_back({send, buf, count * type_size(t), peer, c, stream});
  return g_group_depth == 0 ? run_pending() : ncclSuccess;  // alone, a send waits for its receive (as NCCL)
}
ncclResult_t ncclSend(const void* buf, size_t count, ncclDataType_t t, int peer, ncclComm_t c, cudaStream_t stream) {
  return p2p(true, const_cast<void*>(buf), count, t, peer, c, stream);
}
ncclResult_t ncclRecv(void* buf, size_t count, ncclDataType_t t, int peer, ncclComm_t c, cudaStream_t stream) {
  return p2p(false, buf, count, t, peer, c, stream);
}

}  // extern "C"
