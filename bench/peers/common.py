"""Shared helpers of the PyTorch peer benchmarks (bench/peers/*.py, run by bench/compare.sh).

Every peer first checks that it computes the same thing as orthoshard (against orthoshard's own output or
against the shared reference data both sides are tested on), then times the same work: warm-up, then the
median of several runs. Results go to a JSON file that bench/peers/table.py turns into the comparison table.
"""
import json
import os
import statistics
import sys
import time


def set_threads(n):
    import torch
    torch.set_num_threads(int(n))
    try:
        torch.set_num_interop_threads(1)
    except RuntimeError:  # already set once in this process
        pass


def median_time(fn, repeats, warmup=1, prepare=None):
    """Median wall time of fn() over `repeats` runs after `warmup` runs; prepare() runs untimed before each."""
    for _ in range(warmup):
        if prepare:
            prepare()
        fn()
    ts = []
    for _ in range(repeats):
        if prepare:
            prepare()
        t0 = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t0)
    return statistics.median(ts)


def rel_fro(a, b):
    """||a - b||_F / ||b||_F (0 when both are zero)."""
    import torch
    a = torch.as_tensor(a, dtype=torch.float64)
    b = torch.as_tensor(b, dtype=torch.float64)
    den = torch.linalg.norm(b).item()
    num = torch.linalg.norm(a - b).item()
    return num / den if den > 0 else num


def fail(msg):
    print(f"peer check FAILED: {msg}", file=sys.stderr)
    sys.exit(1)


def write_json(path, doc):
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(doc, f, indent=2)
        f.write("\n")
    os.replace(tmp, path)


def read_json(path):
    with open(path) as f:
        return json.load(f)
