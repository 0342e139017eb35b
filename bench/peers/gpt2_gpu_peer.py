"""GPT-2 124M training steps on one GPU in PyTorch: the peer of the model part of `orthoshard bench gpu`.

    gpt2_gpu_peer.py --json FILE [--mode eager|compile|both] [--B 8] [--T 1024] [--steps 10] [--warmup N] [--seed 0]

The model is gpt2_peer.py's (llm.c's parameter layout and names: L=12, C=768, NH=12, V=50257 padded to Vp=50304 for
the tied embedding / LM head, learned position embeddings, pre-LayerNorm blocks, GELU tanh, biases), with causal
attention by scaled_dot_product_attention and the block parameters held one layer per Parameter. As llm.c's PyTorch
reference trains it: fp32 parameters (the master weights), forward and backward under bf16 autocast, AdamW (lr 6e-4,
betas 0.9/0.95, weight decay 0.1 on the matrices, fused where this torch has it); TF32 is allowed for fp32 matmuls.
Each step is zero_grad, forward, backward, optimizer step and loss.item() (the trainer reads every step's loss, as
the bench does), on one fixed batch of random tokens. Per mode (eager, then torch.compile): warm-up steps (default 3
eager, 5 compile: its first steps compile), then the median of --steps timed steps, as tokens/s, TFLOP/s at
6N + 6*L*C*T flops per token (N: every parameter, the padded wte and wpe included, as the bench counts), MFU against
the nominal dense bf16 peak and peak memory. Exits 2 without CUDA; a failing torch.compile is recorded, not fatal.
"""
import argparse
import inspect
import statistics
import sys
import time
import traceback

try:
    import torch
    import torch.nn.functional as F
    from gpt2_peer import shapes
except ImportError as e:
    print(f"gpt2_gpu_peer: cannot import: {e}", file=sys.stderr)
    sys.exit(2)

from common import write_json

L, C, NH, V, Vp = 12, 768, 12, 50257, 50304
TOP = ("wte", "wpe", "lnfw", "lnfb")  # the parameters outside the blocks; the others are (L, ...) in shapes()


def nominal_bf16_peak(name):
    """Dense bf16 FLOP/s by device name, as bench/gpu_bench.cpp has it (SXM figures); 0 when unknown."""
    if any(k in name for k in ("H100", "H200", "H800", "GH200")):
        return 989e12
    if "A100" in name or "A800" in name:
        return 312e12
    return 0.0


class Params(torch.nn.Module):
    def __init__(self, shp, gen):
        super().__init__()
        for name, s in shp.items():
            if name.startswith("ln") and name.endswith("w"):
                t = torch.ones(s)
            elif name.endswith("b"):
                t = torch.zeros(s)
            else:
                t = torch.randn(s, generator=gen) * 0.02
            self.register_parameter(name, torch.nn.Parameter(t))


class Gpt2Gpu(torch.nn.Module):
    """gpt2_peer.Gpt2's parameters, each layer's own (indexing a stacked (L, ...) Parameter in the forward would make
    backward build L full-size gradients per tensor and add them)."""

    def __init__(self, maxT, seed):
        super().__init__()
        gen = torch.Generator().manual_seed(seed)
        shp = shapes(L, C, Vp, maxT)
        self.top = Params({n: shp[n] for n in TOP}, gen)
        self.blocks = torch.nn.ModuleList(Params({n: s[1:] for n, s in shp.items() if n not in TOP}, gen)
                                          for _ in range(L))

    def forward(self, idx, targets):
        B, T = idx.shape
        top = self.top
        x = F.embedding(idx, top.wte) + top.wpe[:T]
        for p in self.blocks:
            h = F.layer_norm(x, (C,), p.ln1w, p.ln1b, 1e-5)
            q, k, v = F.linear(h, p.qkvw, p.qkvb).view(B, T, 3, NH, C // NH).permute(2, 0, 3, 1, 4)
            y = F.scaled_dot_product_attention(q, k, v, is_causal=True).transpose(1, 2).reshape(B, T, C)
            x = x + F.linear(y, p.attprojw, p.attprojb)
            h = F.layer_norm(x, (C,), p.ln2w, p.ln2b, 1e-5)
            x = x + F.linear(F.gelu(F.linear(h, p.fcw, p.fcb), approximate="tanh"), p.fcprojw, p.fcprojb)
        x = F.layer_norm(x, (C,), top.lnfw, top.lnfb, 1e-5)
        logits = F.linear(x, top.wte)  # (B, T, Vp): the tied head over the padded vocabulary
        return F.cross_entropy(logits[..., :V].float().reshape(-1, V), targets.reshape(-1))  # loss over V only


FUSED = "fused" in inspect.signature(torch.optim.AdamW).parameters


def make_optimizer(model):
    groups = [{"params": [p for p in model.parameters() if p.dim() >= 2], "weight_decay": 0.1},
              {"params": [p for p in model.parameters() if p.dim() < 2], "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=6e-4, betas=(0.9, 0.95), eps=1e-8, **({"fused": True} if FUSED else {}))


def run_mode(mode, a, x, y, N, flops_per_token, peak):
    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats()
    model = Gpt2Gpu(a.T, a.seed).cuda()
    assert sum(p.numel() for p in model.parameters()) == N
    opt = make_optimizer(model)
    fwd = torch.compile(model) if mode == "compile" else model
    warmup = a.warmup if a.warmup is not None else (5 if mode == "compile" else 3)

    def step():
        opt.zero_grad(set_to_none=True)
        with torch.autocast("cuda", dtype=torch.bfloat16):
            loss = fwd(x, y)
        loss.backward()
        opt.step()
        return loss.item()

    for _ in range(warmup):
        step()
    times, losses = [], []
    for _ in range(a.steps):
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        losses.append(step())
        torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
    s = statistics.median(times)
    tok_s = a.B * a.T / s
    run = {"mode": mode, "warmup": warmup, "steps": a.steps, "median_step_ms": s * 1e3, "tokens_per_s": tok_s,
           "tflops": tok_s * flops_per_token / 1e12, "peak_mem_gib": torch.cuda.max_memory_allocated() / 2**30,
           "loss_first": losses[0], "loss_last": losses[-1]}
    if peak > 0:
        run["mfu"] = tok_s * flops_per_token / peak
    return run


def main():
    ap = argparse.ArgumentParser(description="GPT-2 124M bf16 training steps on one GPU (PyTorch peer of bench gpu)")
    ap.add_argument("--B", type=int, default=8)
    ap.add_argument("--T", type=int, default=1024)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--warmup", type=int, default=None, help="warm-up steps (default: 3 eager, 5 compile)")
    ap.add_argument("--mode", choices=["eager", "compile", "both"], default="both")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", required=True)
    a = ap.parse_args()
    if not torch.cuda.is_available():
        print("gpt2_gpu_peer: no CUDA device", file=sys.stderr)
        sys.exit(2)
    if not (1 <= a.T <= 1024 and a.B >= 1 and a.steps >= 1):
        ap.error("need 1 <= T <= 1024, B >= 1, steps >= 1")
    sys.stdout.reconfigure(line_buffering=True)
    torch.backends.cuda.matmul.allow_tf32 = True
    torch.backends.cudnn.allow_tf32 = True
    device = torch.cuda.get_device_name()
    peak = nominal_bf16_peak(device)
    # N as the bench counts it: every parameter, wte with its padded Vp rows (the tied head) and wpe (maxT = T rows,
    # as the bench sizes it; GPT-2's 1024 at the default T).
    N = sum(int(torch.Size(s).numel()) for s in shapes(L, C, Vp, a.T).values())
    flops_per_token = 6 * N + 6 * L * C * a.T
    gen = torch.Generator().manual_seed(a.seed)
    tokens = torch.randint(0, V, (a.B, a.T + 1), generator=gen)
    x, y = tokens[:, :-1].contiguous().cuda(), tokens[:, 1:].contiguous().cuda()
    doc = {"device": device, "torch": torch.__version__, "B": a.B, "T": a.T, "L": L, "C": C, "NH": NH, "V": V,
           "Vp": Vp, "params": N,
           "params_counted": "all parameters: wte with the padded Vp rows (tied LM head), wpe (T rows), blocks, lnf",
           "flops_per_token": flops_per_token, "flops_per_token_formula": "6N + 6*L*C*T", "peak_flops": peak,
           "precision": "fp32 master weights, bf16 autocast forward/backward, TF32 allowed for fp32 matmuls",
           "optimizer": "AdamW lr 6e-4 betas 0.9/0.95 wd 0.1 (matrices) " +
                        ("fused" if FUSED else "(no fused AdamW in this torch)"),
           "runs": []}
    print(f"gpt2 gpu peer: {device}, torch {torch.__version__}; GPT-2 L={L} C={C} NH={NH} Vp={Vp}, B={a.B} "
          f"T={a.T}; {doc['precision']}; {doc['optimizer']}")
    print(f"N = {N} parameters ({doc['params_counted']}); flops/token = 6N + 6*L*C*T = {flops_per_token:.4g}; "
          f"nominal bf16 peak " + (f"{peak / 1e12:.0f} TFLOP/s" if peak else "unknown (no MFU)"))
    for mode in (["eager", "compile"] if a.mode == "both" else [a.mode]):
        try:
            doc["runs"].append(run_mode(mode, a, x, y, N, flops_per_token, peak))
        except Exception as e:  # noqa: BLE001 - a failing compile (no Triton, no compiler) is a result, not a crash
            if mode != "compile":
                traceback.print_exc()
            lines = str(e).strip().splitlines()
            why = f"{type(e).__name__}: {lines[0] if lines else ''}"[:300]
            print(f"gpt2_gpu_peer: {mode} failed: {why}")
            doc["runs"].append({"mode": mode, "error": why})
        write_json(a.json, doc)
    print(f"{'mode':<8} {'step ms':>8} {'tokens/s':>10} {'TFLOP/s':>8} {'MFU':>6} {'peak GiB':>8}  loss first -> last")
    for r in doc["runs"]:
        if "error" in r:
            print(f"{r['mode']:<8} failed: {r['error']}")
        else:
            mfu = f"{100 * r['mfu']:.1f}%" if "mfu" in r else "-"
            print(f"{r['mode']:<8} {r['median_step_ms']:8.2f} {r['tokens_per_s']:10.0f} {r['tflops']:8.1f} {mfu:>6} "
                  f"{r['peak_mem_gib']:8.2f}  {r['loss_first']:.3f} -> {r['loss_last']:.3f}")
    good = [r["mode"] for r in doc["runs"] if "error" not in r]
    sys.exit(0 if good and ("eager" in good or a.mode == "compile") else 1)


if __name__ == "__main__":
    main()
