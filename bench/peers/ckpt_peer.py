"""`torch.save` of the tensors an orthoshard checkpoint holds (model + optimizer state): the peer of
`orthoshard bench ckpt`.

Reads every dataset of a checkpoint written by `orthoshard bench ckpt --keep FILE` (h5py), so both sides save
the same tensors, then times torch.save to a new file with the same durability orthoshard's save gives
(write, fsync, rename into place), best of several runs, and checks that torch.load returns them unchanged.

    ckpt_peer.py --ckpt FILE.h5 --dir DIR --repeats 3 --json out.json
"""
import argparse
import os
import time

import h5py
import numpy as np
import torch

from common import fail, write_json


def tensors_of(path):
    out = {}

    def visit(name, obj):
        if isinstance(obj, h5py.Dataset) and obj.dtype.kind in "fiu":
            arr = np.ascontiguousarray(obj[()])
            if arr.dtype.kind == "u" and arr.dtype.itemsize > 1:  # torch has uint8 only: keep the bytes
                arr = arr.view(f"i{arr.dtype.itemsize}")
            out[name] = torch.from_numpy(arr)

    with h5py.File(path, "r") as f:
        f.visititems(visit)
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--ckpt", required=True)
    ap.add_argument("--dir", required=True, help="folder on the same filesystem orthoshard wrote to")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--json", required=True)
    a = ap.parse_args()
    ts = tensors_of(a.ckpt)
    nbytes = sum(t.numel() * t.element_size() for t in ts.values())
    path = os.path.join(a.dir, "peer_ckpt.pt")
    best = float("inf")
    for _ in range(a.repeats):
        t0 = time.perf_counter()
        with open(path + ".partial", "wb") as f:
            torch.save(ts, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(path + ".partial", path)
        dfd = os.open(a.dir, os.O_RDONLY)
        os.fsync(dfd)
        os.close(dfd)
        best = min(best, time.perf_counter() - t0)
    back = torch.load(path)
    for k, t in ts.items():
        if k not in back or not torch.equal(back[k], t):
            fail(f"torch.load of the saved file differs in {k}")
    size = os.path.getsize(path)
    os.remove(path)
    print(f"ckpt peer: torch.save of {len(ts)} tensors, {nbytes / 1e6:.1f} MB: {best:.3f} s, "
          f"{nbytes / best / 1e9:.3f} GB/s (file {size / 1e6:.1f} MB)")
    write_json(a.json, {"peer": f"torch {torch.__version__}", "tensors": len(ts), "tensor_bytes": nbytes,
                        "file_bytes": size, "save_s": best})


if __name__ == "__main__":
    main()
