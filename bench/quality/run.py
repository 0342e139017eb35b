#!/usr/bin/env python3
"""Training-quality benchmark: do Muon, NorMuon and Conda reach AdamW's validation loss in fewer steps inside this
trainer? Driven by bench/quality.sh (which installs the corpus and matplotlib); run by hand, never by the tests.

For each model shape (a small GPT-2 and a LLaMA of about the same size) and each optimizer: a learning-rate sweep
of 4 log-spaced values with the same data order, tokens and seed; the best lr (lowest final validation loss)
again with more seeds; then per model a table of best lr, final val loss (mean ± spread over seeds), the steps to
reach AdamW's best final val loss and their ratio to AdamW's, and wall time per step. Writes the raw metrics
JSONL of every run, a PNG of the best runs' validation curves, a Markdown table and --json.
"""
import argparse
import json
import math
import os
import shutil
import subprocess
import sys
import time

MODELS = {
    # name: [model] overrides. Byte vocabulary, context 128; about 0.8 M parameters each.
    "gpt2": ["--model.arch=gpt2", "--model.L=4", "--model.C=128", "--model.NH=4", "--model.V=256", "--model.Vp=256",
             "--model.maxT=128"],
    "llama": ["--model.arch=llama", "--model.L=4", "--model.C=128", "--model.NH=4", "--model.NKV=2",
              "--model.FF=352", "--model.V=256", "--model.Vp=256", "--model.maxT=128"],
}
# Log-spaced sweeps (factor 2); the matrix optimizers' AdamW (embeddings, head, norms, biases) stays at 3e-3.
LRS = {
    "adamw": [1e-3, 2e-3, 4e-3, 8e-3],
    "muon": [5e-3, 1e-2, 2e-2, 4e-2],
    "normuon": [5e-3, 1e-2, 2e-2, 4e-2],
    "conda": [2e-3, 4e-3, 8e-3, 1.6e-2],
}
OPTIMIZERS = list(LRS)


def run_one(a, out_dir, model, opt, lr, seed, steps, eval_every, extra=(), suffix=""):
    tag = f"{model}-{opt}-lr{lr:g}-s{seed}{suffix}"
    metrics = os.path.join(out_dir, "jsonl", tag + ".jsonl")
    if os.path.exists(metrics) and not a.rerun:
        return tag, metrics, 0.0
    args = [a.mpirun, "--oversubscribe", "-np", str(a.ranks), a.bin, "train", "--data.path=" + a.data,
            "--data.order=sequential", "--train.batch_size=8", "--train.seq_len=128", "--train.grad_accum=1",
            f"--train.steps={steps}", "--train.schedule=cosine", f"--train.warmup_steps={max(1, steps // 10)}",
            "--train.min_lr_ratio=0.1", "--train.grad_clip=1.0", f"--train.seed={seed}", f"--model.seed={seed}",
            f"--train.log_every={steps}", "--train.metrics=" + metrics, "--eval.path=" + a.val,
            f"--eval.every={eval_every}", "--eval.batches=4", "--checkpoint.every=0", "--runtime.backend=cpu",
            "--runtime.comm=mpi", "--optim.name=" + opt, f"--optim.lr={lr}", "--optim.weight_decay=0",
            "--optim.adam_lr=3e-3"] + MODELS[model] + list(extra)
    t0 = time.time()
    env = dict(os.environ, OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1", OMP_WAIT_POLICY="passive")
    r = subprocess.run(args, capture_output=True, text=True, env=env)
    if r.returncode != 0:
        sys.exit(f"{tag}: exit {r.returncode}\n{r.stdout[-2000:]}\n{r.stderr[-2000:]}")
    return tag, metrics, time.time() - t0


def read_metrics(path):
    val, secs = {}, []
    tokens_per_step = 8 * 128  # per rank; times ranks below
    with open(path) as f:
        for line in f:
            rec = json.loads(line)
            if rec.get("val_loss") is not None:
                val[rec["step"]] = rec["val_loss"]
            if rec.get("tokens_per_s"):
                secs.append(1.0 / rec["tokens_per_s"])
    return val, secs


def mean(xs):
    return sum(xs) / len(xs)


def spread(xs):
    return (max(xs) - min(xs)) / 2 if len(xs) > 1 else 0.0


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", required=True, help="training token file (prepare-data)")
    ap.add_argument("--val", required=True, help="validation token file")
    ap.add_argument("--out", default="runs/quality")
    ap.add_argument("--bin", default="build/bin/orthoshard")
    ap.add_argument("--mpirun", default="mpirun")
    ap.add_argument("--ranks", type=int, default=2)
    ap.add_argument("--quick", action="store_true", help="60 steps, the middle two lrs, one seed (about 10 minutes)")
    ap.add_argument("--seeds", type=int, default=2, help="seeds of each optimizer's best lr (full run)")
    ap.add_argument("--steps", type=int, default=0, help="steps per run (default 200, quick 60)")
    ap.add_argument("--models", default="gpt2,llama")
    ap.add_argument("--json", default="", help="also write [{model, optimizer, best_lr, ...}] here")
    ap.add_argument("--rerun", action="store_true", help="run again even where a run's JSONL exists")
    a = ap.parse_args()
    steps = a.steps or (60 if a.quick else 200)
    eval_every = max(1, steps // 12)
    seeds = 1 if a.quick else a.seeds
    os.makedirs(os.path.join(a.out, "jsonl"), exist_ok=True)
    models = a.models.split(",")
    t_start = time.time()
    results, curves = [], {}
    for model in models:
        runs = {}  # (opt, lr, seed) -> metrics path
        for opt in OPTIMIZERS:
            lrs = LRS[opt][1:3] if a.quick else LRS[opt]
            for lr in lrs:
                tag, path, dt = run_one(a, a.out, model, opt, lr, 1, steps, eval_every)
                runs[(opt, lr, 1)] = path
                print(f"{tag}: {dt:.0f} s, final val {read_metrics(path)[0][steps]:.4f}", flush=True)
        best = {}
        for opt in OPTIMIZERS:
            cands = [(read_metrics(p)[0][steps], lr) for (o, lr, s), p in runs.items() if o == opt and s == 1]
            best[opt] = min(cands)[1]
            for seed in range(2, seeds + 1):
                tag, path, dt = run_one(a, a.out, model, opt, best[opt], seed, steps, eval_every)
                runs[(opt, best[opt], seed)] = path
                print(f"{tag}: {dt:.0f} s, final val {read_metrics(path)[0][steps]:.4f}", flush=True)
        # Mean validation curve of each optimizer's best lr over the seeds.
        mean_curve, finals, step_s = {}, {}, {}
        for opt in OPTIMIZERS:
            per_seed = [read_metrics(runs[(opt, best[opt], s)]) for s in range(1, seeds + 1)]
            pts = sorted(per_seed[0][0])
            mean_curve[opt] = [(st, mean([v[st] for v, _ in per_seed])) for st in pts]
            finals[opt] = [v[steps] for v, _ in per_seed]
            step_s[opt] = mean([mean(sec) for _, sec in per_seed]) * 8 * 128 * a.ranks
        target = mean(finals["adamw"])
        def steps_to(opt):
            for st, v in mean_curve[opt]:
                if v <= target:
                    return st
            return None
        adam_steps = steps_to("adamw")
        for opt in OPTIMIZERS:
            s = steps_to(opt)
            results.append({"model": model, "optimizer": opt, "best_lr": best[opt],
                            "final_val_loss": mean(finals[opt]), "spread": spread(finals[opt]), "seeds": seeds,
                            "steps_to_target": s, "ratio": (s / adam_steps) if s and adam_steps else None,
                            "target": target, "wall_s_per_step": step_s[opt]})
        curves[model] = mean_curve
    table = [f"Steps of {8 * 128 * a.ranks} tokens ({a.ranks} ranks x 8 x 128), {steps} steps, validation every "
             f"{eval_every} steps, {seeds} seed(s) of each best lr; target = AdamW's best final val loss.", ""]
    for model in models:
        table += [f"**{model}**", "", "| optimizer | best lr | final val loss | steps to AdamW's best | ratio | s/step |",
                  "| --- | --- | --- | --- | --- | --- |"]
        for r in results:
            if r["model"] != model:
                continue
            table.append(f"| {r['optimizer']} | {r['best_lr']:g} | {r['final_val_loss']:.4f} ± {r['spread']:.4f} | "
                         f"{r['steps_to_target'] if r['steps_to_target'] else 'not reached'} | "
                         f"{'%.2f' % r['ratio'] if r['ratio'] else '-'} | {r['wall_s_per_step']:.3f} |")
        table.append("")
    table.append(f"Total wall time {time.time() - t_start:.0f} s.")
    text = "\n".join(table)
    print(text)
    with open(os.path.join(a.out, "results.md"), "w") as f:
        f.write(text + "\n")
    if a.json:
        with open(a.json, "w") as f:
            json.dump(results, f, indent=2)
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        fig, axes = plt.subplots(1, len(models), figsize=(6 * len(models), 4), squeeze=False)
        for ax, model in zip(axes[0], models):
            for opt, pts in curves[model].items():
                ax.plot([p[0] for p in pts], [p[1] for p in pts], label=opt)
            ax.set_title(f"{model}: validation loss (best lr, mean over seeds)")
            ax.set_xlabel("step")
            ax.set_ylabel("val loss (nats/byte)")
            ax.legend()
        fig.tight_layout()
        fig.savefig(os.path.join(a.out, "val_curves.png"), dpi=100)
        print(f"wrote {os.path.join(a.out, 'val_curves.png')}")
    except ImportError:
        print("matplotlib missing: no PNG (Debian: python3-matplotlib)")


if __name__ == "__main__":
    main()
