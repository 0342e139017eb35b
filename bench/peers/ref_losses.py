"""Checks orthoshard's metrics (train.metrics JSONL of a run on the shared GPT-2 reference case) against the
reference AdamW losses; writes the worst relative error to a JSON file, exit 1 above 1e-4.

    ref_losses.py --metrics m.jsonl --ref DIR/reference.h5 --json out.json
    ref_losses.py --print-args --ref DIR/reference.h5     the trainer overrides of the reference AdamW run
"""
import argparse
import json

import h5py

from common import fail, write_json


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--metrics")
    ap.add_argument("--ref", required=True)
    ap.add_argument("--json")
    ap.add_argument("--print-args", action="store_true")
    a = ap.parse_args()
    f = h5py.File(a.ref, "r")
    if a.print_args:
        hp = json.loads(f.attrs["adamw"])
        print(f"--optim.name=adamw --optim.lr={hp['lr']!r} --optim.betas={hp['betas'][0]!r},{hp['betas'][1]!r} "
              f"--optim.eps={hp['eps']!r} --optim.weight_decay={hp['weight_decay']!r} --train.schedule=constant "
              f"--train.warmup_steps=0 --train.grad_clip=0 --data.order=sequential "
              f"--train.steps={len(f['adamw_losses'])}")
        return
    if not a.metrics or not a.json:
        fail("--metrics and --json are needed")
    want = f["adamw_losses"][()]
    got = [json.loads(line)["loss"] for line in open(a.metrics) if line.strip()]
    if len(got) != len(want):
        fail(f"{a.metrics}: {len(got)} steps, the reference has {len(want)}")
    worst = max(abs(g - r) / abs(r) for g, r in zip(got, want))
    if not worst <= 1e-4:
        fail(f"orthoshard's AdamW losses on the reference case differ by {worst:.2e} (> 1e-4)")
    print(f"orthoshard: reference case, {len(got)} AdamW losses within {worst:.1e}")
    write_json(a.json, {"adamw_loss_rel_err": worst})


if __name__ == "__main__":
    main()
