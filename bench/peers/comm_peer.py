"""all_gather and reduce_scatter bus bandwidth with torch.distributed over gloo: the peer of
`orthoshard bench comm` (same sizes, f32, busbw = algbw x (n-1)/n).

Gloo in torch has no reduce_scatter (nor all_gather_into_tensor): a gloo user does an all_reduce and keeps
their block, and gathers into the blocks of one output tensor with all_gather; that is what is timed. Each
size is checked first (rank k sends k + 1).

    comm_peer.py --procs 2 --sizes 1048576,16777216 --json out.json
"""
import argparse
import os
import statistics
import time

import torch

from common import fail, write_json


def run(rank, a):
    import torch.distributed as dist
    torch.set_num_threads(1)
    os.environ["MASTER_ADDR"] = "127.0.0.1"
    os.environ["MASTER_PORT"] = str(a.port)
    dist.init_process_group("gloo", rank=rank, world_size=a.procs)
    n = a.procs
    rows = []
    for size in [int(s) for s in a.sizes.split(",")]:
        per = max(1, size // 4 // n)
        total = per * n
        for op in ("all_gather", "reduce_scatter"):
            if op == "all_gather":
                send = torch.full((per,), float(rank + 1))
                out = torch.empty(total)
                blocks = list(out.chunk(n))

                def call():
                    dist.all_gather(blocks, send)

                def ok():
                    return torch.equal(out, torch.arange(1, n + 1, dtype=torch.float32).repeat_interleave(per))
            else:
                buf = torch.empty(total)
                mine = torch.empty(per)

                buf.fill_(float(rank + 1))  # for the check; zeros after it, so repeated sums stay finite

                def call():
                    dist.all_reduce(buf)
                    mine.copy_(buf[rank * per:(rank + 1) * per])

                def ok():
                    return bool((mine == n * (n + 1) / 2).all())
            call()
            if not ok():
                fail(f"{op} of {total * 4} bytes gave wrong values on rank {rank}")
            if op == "reduce_scatter":
                buf.zero_()
            dist.barrier()
            t0 = time.perf_counter()
            call()
            probe = torch.tensor([time.perf_counter() - t0])
            dist.all_reduce(probe, op=dist.ReduceOp.MAX)  # every rank must run the same number of calls
            iters = max(1, min(a.iters, int(0.05 / max(probe.item(), 1e-9))))
            ts = []
            for _ in range(a.repeats):
                dist.barrier()
                t0 = time.perf_counter()
                for _ in range(iters):
                    call()
                t = torch.tensor([(time.perf_counter() - t0) / iters])
                dist.all_reduce(t, op=dist.ReduceOp.MAX)
                ts.append(t.item())
            t = statistics.median(ts)
            busbw = total * 4 / t / 1e9 * (n - 1) / n
            rows.append({"op": op, "bytes": total * 4, "time_us": t * 1e6, "busbw_gbps": busbw})
            if rank == 0:
                print(f"comm peer: {op:>14} {total * 4:>10} bytes: {t * 1e6:10.1f} us, busbw {busbw:.3f} GB/s")
    if rank == 0:
        write_json(a.json, {"peer": f"torch {torch.__version__} gloo", "procs": n, "results": rows})


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--procs", type=int, default=2)
    ap.add_argument("--sizes", required=True, help="bytes per collective, comma-separated")
    ap.add_argument("--iters", type=int, default=20)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--port", type=int, default=29541)
    ap.add_argument("--json", required=True)
    a = ap.parse_args()
    import torch.multiprocessing as mp
    mp.spawn(run, args=(a,), nprocs=a.procs)


if __name__ == "__main__":
    main()
