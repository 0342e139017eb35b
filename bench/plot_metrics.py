#!/usr/bin/env python3
"""Turns orthoshard metrics files (train.metrics JSONL) into one PNG loss curve, one line per run.

    python3 bench/plot_metrics.py runs/a.jsonl runs/b.jsonl --out loss.png [--floor 1.1005] [--logy]

Each file is one run (its name is the legend label unless given as LABEL=PATH). Needs matplotlib
(Debian: python3-matplotlib).
"""
import argparse
import json
import sys


def read_run(path):
    steps, losses = [], []
    with open(path) as f:
        for n, line in enumerate(f, 1):
            line = line.strip()
            if not line:
                continue
            try:
                rec = json.loads(line)
            except json.JSONDecodeError as e:
                sys.exit(f"{path}:{n}: not a JSON line ({e})")
            if "step" not in rec or "loss" not in rec:
                sys.exit(f"{path}:{n}: missing 'step' or 'loss'")
            if rec["loss"] is None:  # NaN/Inf are written as null
                continue
            steps.append(rec["step"])
            losses.append(rec["loss"])
    return steps, losses


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("runs", nargs="+", help="metrics JSONL files, optionally LABEL=PATH")
    ap.add_argument("--out", default="loss.png", help="PNG to write (default loss.png)")
    ap.add_argument("--floor", type=float, help="draw a horizontal line at this loss (e.g. the entropy rate)")
    ap.add_argument("--logy", action="store_true", help="logarithmic loss axis")
    args = ap.parse_args()
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        sys.exit("plot_metrics.py needs matplotlib (Debian: apt-get install python3-matplotlib)")
    fig, ax = plt.subplots(figsize=(8, 5))
    for spec in args.runs:
        label, _, path = spec.rpartition("=") if "=" in spec else (spec, "", spec)
        steps, losses = read_run(path)
        ax.plot(steps, losses, label=label, linewidth=1.2)
    if args.floor is not None:
        ax.axhline(args.floor, color="gray", linestyle="--", linewidth=1, label=f"floor {args.floor:g}")
    ax.set_xlabel("step")
    ax.set_ylabel("loss (nats/token)")
    if args.logy:
        ax.set_yscale("log")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(args.out, dpi=120)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
