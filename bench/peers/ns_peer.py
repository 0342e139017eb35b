"""Newton-Schulz (NS5) in PyTorch fp32, the algorithm of the Muon reference implementation:
X = G (transposed when rows > cols) / (||G||_F + 1e-7); 5 times A = X Xᵀ, B = b A + c A A, X = a X + B X.

Checks first that torch's result equals orthoshard's on the same input (files from `orthoshard bench ns --dump`),
then times each size.

    ns_peer.py --dump DIR --sizes 512,1024 --threads 2 --repeats 5 --json out.json
"""
import argparse
import os

import numpy as np
import torch

from common import fail, median_time, rel_fro, set_threads, write_json

A_COEF, B_COEF, C_COEF = 3.4445, -4.7750, 2.0315


def newton_schulz5(g, steps=5):
    x = g
    transposed = x.shape[0] > x.shape[1]
    if transposed:
        x = x.T
    x = x / (torch.linalg.norm(x) + 1e-7)
    for _ in range(steps):
        a = x @ x.T
        b = B_COEF * a + C_COEF * (a @ a)
        x = A_COEF * x + b @ x
    return x.T if transposed else x


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--dump", required=True, help="folder written by orthoshard bench ns --dump")
    ap.add_argument("--sizes", required=True)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--tolerance", type=float, default=1e-4)
    ap.add_argument("--json", required=True)
    a = ap.parse_args()
    set_threads(a.threads)
    rows = []
    for n in [int(s) for s in a.sizes.split(",")]:
        base = os.path.join(a.dump, f"ns_{n}x{n}")
        g = torch.from_numpy(np.fromfile(base + "_in.f32", dtype=np.float32).reshape(n, n))
        ours = torch.from_numpy(np.fromfile(base + "_out.f32", dtype=np.float32).reshape(n, n))
        out = newton_schulz5(g)
        err = rel_fro(ours, out)
        print(f"ns {n}x{n}: ||orthoshard - torch|| / ||torch|| = {err:.2e}")
        if not err <= a.tolerance:
            fail(f"NS5 {n}x{n}: orthoshard and torch differ by {err:.2e} (tolerance {a.tolerance:g})")
        t = median_time(lambda: newton_schulz5(g), a.repeats)
        rows.append({"n": n, "ms": t * 1e3, "check_rel_err": err})
    write_json(a.json, {"peer": f"torch {torch.__version__}", "threads": torch.get_num_threads(), "results": rows})


if __name__ == "__main__":
    main()
