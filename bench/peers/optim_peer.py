"""Muon, NorMuon and Conda steps in PyTorch fp32, following the reference implementations' update rules
(Muon: KellerJordan/Muon SingleDeviceMuonWithAuxAdam; NorMuon: its single-device variant; Conda: conda_torch.Conda;
the rules are spelled out in ../shared/testdata/optim/README.md). Newton-Schulz runs in fp32 (the references
use bf16 on GPUs).

Checks first that these steps reproduce the shared optimizer traces (the same traces `orthoshard replay` passes),
then times one full step over the parameter set orthoshard's `bench optim --json` describes (same shapes, same
rule per tensor, same hyperparameters), median of several steps after one warm-up step.

    optim_peer.py --traces DIR --ours optim.json --threads 2 --steps 3 --json out.json
"""
import argparse
import json
import math
import os
import time

import h5py
import torch

from common import fail, median_time, set_threads, write_json
from ns_peer import newton_schulz5


class Rule:
    """One tensor's update rule with its state."""

    def __init__(self, kind, p, hp):
        self.kind, self.hp = kind, hp
        self.t = 0
        if kind in ("muon", "normuon"):
            self.m = torch.zeros_like(p)
            if kind == "normuon":
                self.v = torch.zeros(p.shape[0], 1, dtype=p.dtype)
        elif kind == "adamw":
            self.m = torch.zeros_like(p)
            self.v = torch.zeros_like(p)
        elif kind in ("conda", "conda(unprojected)"):
            self.m = torch.zeros_like(p)
            self.v = None  # shaped like the projected gradient, made on the first step
            self.proj = None

    def step(self, p, g):
        self.t += 1
        k, hp = self.kind, self.hp
        if k in ("muon", "normuon"):
            beta = hp["momentum"]
            self.m.lerp_(g, 1 - beta)
            u = g.lerp(self.m, beta) if hp.get("nesterov", True) else self.m
            o = newton_schulz5(u, hp.get("ns_steps", 5))
            rows, cols = p.shape
            scale = math.sqrt(max(1.0, rows / cols))
            if k == "normuon":
                b2 = hp["beta2"]
                self.v.lerp_((o * o).mean(dim=1, keepdim=True), 1 - b2)
                on = o / (self.v.sqrt() + 1e-10)
                on.mul_(torch.linalg.norm(o) / (torch.linalg.norm(on) + 1e-10))
                o = on
            p.mul_(1 - hp["lr"] * hp["weight_decay"])
            p.add_(o, alpha=-hp["lr"] * scale)
        elif k == "adamw":
            aux = "adam_lr" in hp
            lr = hp["adam_lr"] if aux else hp["lr"]
            b1, b2 = hp["adam_betas"] if aux else hp["betas"]
            eps = hp["adam_eps"] if aux else hp["eps"]
            wd = hp["adam_weight_decay"] if aux else hp["weight_decay"]
            self.m.lerp_(g, 1 - b1)
            self.v.mul_(b2).addcmul_(g, g, value=1 - b2)
            denom = (self.v / (1 - b2 ** self.t)).sqrt_().add_(eps)
            p.mul_(1 - lr * wd)
            p.addcdiv_(self.m, denom, value=-lr / (1 - b1 ** self.t))
        else:  # Conda
            b1, b2 = hp["betas"]
            self.m.mul_(b1).add_(g, alpha=1 - b1)
            projected = k == "conda" and p.dim() == 2
            if projected:
                if (self.t - 1) % hp["update_proj_gap"] == 0:
                    u, _, vh = torch.linalg.svd(self.m, full_matrices=False)
                    self.right = p.shape[0] >= p.shape[1]
                    self.proj = vh if self.right else u  # P: Vᵀ (n x n) or U (m x m)
                P = self.proj
                gt = g @ P.T if self.right else P.T @ g
                mt = self.m @ P.T if self.right else P.T @ self.m
            else:
                gt, mt = g, self.m
            if self.v is None:
                self.v = torch.zeros_like(gt)
            self.v.mul_(b2).addcmul_(gt, gt, value=1 - b2)
            n = mt / (self.v.sqrt() + hp["eps"])
            if projected:
                n = hp["scale"] * (n @ P if self.right else P @ n)
            step = hp["lr"] * math.sqrt(1 - b2 ** self.t) / (1 - b1 ** self.t)
            p.add_(n, alpha=-step)
            p.add_(p, alpha=-hp["lr"] * hp["weight_decay"])


def check_trace(path, tol):
    """Runs a shared trace in fp32; returns the worst error (README's measure)."""
    with h5py.File(path, "r") as f:
        opt = f.attrs["optimizer"]
        opt = opt.decode() if isinstance(opt, bytes) else opt
        hp = json.loads(f.attrs["hparams"])
        steps = int(f.attrs["steps"])
        worst = 0.0
        for name in f["params"]:
            grp = f["params"][name]
            role = grp.attrs["role"]
            role = role.decode() if isinstance(role, bytes) else role
            p0 = torch.tensor(grp["initial"][()], dtype=torch.float32)
            kind = opt if role == "matrix" else ("conda(unprojected)" if opt == "conda" else "adamw")
            p = p0.clone()
            rule = Rule(kind, p, hp)
            for t in range(steps):
                rule.step(p, torch.tensor(grp["grads"][t], dtype=torch.float32))
                exp = torch.tensor(grp["expected"][t])
                den = torch.linalg.norm(exp - p0.double()).item()
                err = torch.linalg.norm(p.double() - exp).item() / den if den > 0 else 0.0
                worst = max(worst, err)
        if not worst <= tol:
            fail(f"{os.path.basename(path)}: worst error {worst:.2e} > {tol:g}")
        return opt, worst


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--traces", required=True, help="folder with the shared optimizer traces")
    ap.add_argument("--ours", required=True, help="JSON of orthoshard bench optim")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--json", required=True)
    a = ap.parse_args()
    set_threads(a.threads)
    checks = {}
    for name in ("muon", "normuon", "conda"):
        opt, err = check_trace(os.path.join(a.traces, name + ".h5"), 1e-4)
        checks[opt] = err
        print(f"optim peer: {name} trace reproduced in fp32, worst error {err:.2e}")
    ours = json.load(open(a.ours))
    rows = []
    for r in ours["results"]:
        name = r["optimizer"]
        if name == "adamw":
            continue
        gen = torch.Generator().manual_seed(1)
        params, grads, rules = [], [], []
        for spec in r["params"]:
            p = torch.randn(spec["shape"], generator=gen)
            params.append(p)
            grads.append(torch.randn(spec["shape"], generator=gen))
            rules.append(Rule(spec["rule"], p, r["hparams"]))

        def step():
            for rule, p, g in zip(rules, params, grads):
                rule.step(p, g)

        t0 = time.perf_counter()
        step()  # warm-up; Conda computes its SVD bases here
        first = time.perf_counter() - t0
        rows.append({"optimizer": name, "step_ms": median_time(step, a.steps, warmup=0) * 1e3,
                     "first_step_ms": first * 1e3, "check_trace_err": checks.get(name)})
        if name == "conda":  # a step that refreshes the basis, state already allocated: update_proj_gap = 1
            hp1 = dict(r["hparams"], update_proj_gap=1)
            rules = [Rule(spec["rule"], p, hp1) for spec, p in zip(r["params"], params)]
            rows[-1]["refresh_step_ms"] = median_time(step, a.steps) * 1e3
        print(f"optim peer: {name} step {rows[-1]['step_ms']:.1f} ms (first step {first * 1e3:.1f} ms"
              + (f", a step refreshing the basis {rows[-1]['refresh_step_ms']:.1f} ms)" if name == "conda" else ")"))
    write_json(a.json, {"peer": f"torch {torch.__version__}", "threads": torch.get_num_threads(), "results": rows})


if __name__ == "__main__":
    main()
