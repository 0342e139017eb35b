"""GPT-2 in PyTorch (fp32, eager), in llm.c's parameter layout: the peer of `orthoshard bench model` and
`orthoshard bench train`.

    gpt2_peer.py check   --ref DIR [--procs 2]                 the shared GPT-2 reference case: logits, loss and
                                                               the AdamW losses (at --procs 2: DDP over gloo)
    gpt2_peer.py fwdbwd  --L 4 --C 256 --T 256 --B 4 ...       forward+backward tokens/s (one process)
    gpt2_peer.py ddp     --L 4 --C 256 --T 256 --B 4 --procs 2 training tokens/s, DDP over gloo, AdamW
"""
import argparse
import json
import math
import os
import time

import numpy as np
import torch
import torch.nn.functional as F

from common import fail, median_time, set_threads, write_json

NAMES = ["wte", "wpe", "ln1w", "ln1b", "qkvw", "qkvb", "attprojw", "attprojb", "ln2w", "ln2b", "fcw", "fcb",
         "fcprojw", "fcprojb", "lnfw", "lnfb"]


def shapes(L, C, Vp, maxT):
    return {"wte": (Vp, C), "wpe": (maxT, C), "ln1w": (L, C), "ln1b": (L, C), "qkvw": (L, 3 * C, C),
            "qkvb": (L, 3 * C), "attprojw": (L, C, C), "attprojb": (L, C), "ln2w": (L, C), "ln2b": (L, C),
            "fcw": (L, 4 * C, C), "fcb": (L, 4 * C), "fcprojw": (L, C, 4 * C), "fcprojb": (L, C), "lnfw": (C,),
            "lnfb": (C,)}


class Gpt2(torch.nn.Module):
    def __init__(self, L, C, NH, V, Vp, maxT, tensors=None, seed=0):
        super().__init__()
        self.L, self.C, self.NH, self.V = L, C, NH, V
        gen = torch.Generator().manual_seed(seed)
        for name, shp in shapes(L, C, Vp, maxT).items():
            if tensors is not None:
                t = torch.from_numpy(np.array(tensors[name], dtype=np.float32)).reshape(shp)
            elif name.startswith("ln") and name.endswith("w"):
                t = torch.ones(shp)
            elif name.endswith("b"):
                t = torch.zeros(shp)
            else:
                t = torch.randn(shp, generator=gen) * 0.02
            self.register_parameter(name, torch.nn.Parameter(t))

    def forward(self, idx, targets):
        B, T = idx.shape
        C, NH = self.C, self.NH
        x = self.wte[idx] + self.wpe[:T]
        mask = torch.ones(T, T, dtype=torch.bool).tril()
        for l in range(self.L):
            h = F.layer_norm(x, (C,), self.ln1w[l], self.ln1b[l], 1e-5)
            qkv = F.linear(h, self.qkvw[l], self.qkvb[l])
            q, k, v = qkv.split(C, dim=2)
            q, k, v = (t.view(B, T, NH, C // NH).transpose(1, 2) for t in (q, k, v))
            att = (q @ k.transpose(-2, -1)) * (1.0 / math.sqrt(C // NH))
            att = att.masked_fill(~mask, float("-inf")).softmax(dim=-1)
            y = (att @ v).transpose(1, 2).reshape(B, T, C)
            x = x + F.linear(y, self.attprojw[l], self.attprojb[l])
            h = F.layer_norm(x, (C,), self.ln2w[l], self.ln2b[l], 1e-5)
            h = F.gelu(F.linear(h, self.fcw[l], self.fcb[l]), approximate="tanh")
            x = x + F.linear(h, self.fcprojw[l], self.fcprojb[l])
        x = F.layer_norm(x, (C,), self.lnfw, self.lnfb, 1e-5)
        logits = x @ self.wte.T
        loss = F.cross_entropy(logits[..., :self.V].reshape(-1, self.V), targets.reshape(-1))
        return logits, loss


def load_llmc(path):
    with open(path, "rb") as f:
        header = np.frombuffer(f.read(256 * 4), dtype=np.int32)
        if header[0] != 20240326:
            fail(f"{path}: not an llm.c model file")
        maxT, V, L, NH, C, Vp = (int(v) for v in header[2:8])
        data = np.frombuffer(f.read(), dtype=np.float32)
    tensors, off = {}, 0
    for name, shp in shapes(L, C, Vp, maxT).items():
        n = int(np.prod(shp))
        tensors[name] = data[off:off + n]
        off += n
    return dict(L=L, C=C, NH=NH, V=V, Vp=Vp, maxT=maxT), tensors


def load_tokens(path):
    with open(path, "rb") as f:
        header = np.frombuffer(f.read(256 * 4), dtype=np.int32)
        return np.frombuffer(f.read(), dtype=np.uint16)[: int(header[2])].astype(np.int64)


def dist_setup(rank, procs, port):
    import torch.distributed as dist
    os.environ["MASTER_ADDR"] = "127.0.0.1"
    os.environ["MASTER_PORT"] = str(port)
    dist.init_process_group("gloo", rank=rank, world_size=procs)
    return dist


def check_reference(rank, procs, ref, port, out):
    """The reference case: logits and loss of batch 0, then AdamW losses, each rank taking B / procs rows."""
    import h5py
    set_threads(1 if procs > 1 else 2)
    cfg, tensors = load_llmc(os.path.join(ref, "model.bin"))
    tokens = load_tokens(os.path.join(ref, "tokens.bin"))
    f = h5py.File(os.path.join(ref, "reference.h5"), "r")
    B, T = int(f.attrs["B"]), int(f.attrs["T"])
    hp = json.loads(f.attrs["adamw"])
    want = f["adamw_losses"][()]
    model = Gpt2(**cfg, tensors=tensors)
    dist = dist_setup(rank, procs, port) if procs > 1 else None
    if dist:
        model = torch.nn.parallel.DistributedDataParallel(model)
    opt = torch.optim.AdamW(model.parameters(), lr=hp["lr"], betas=hp["betas"], eps=hp["eps"],
                            weight_decay=hp["weight_decay"])
    rows = slice(rank * B // procs, (rank + 1) * B // procs)
    worst = 0.0
    for k in range(len(want)):
        chunk = torch.from_numpy(tokens[k * B * T: k * B * T + B * T + 1])
        x, y = chunk[:-1].view(B, T)[rows], chunk[1:].view(B, T)[rows]
        logits, loss = model(x, y)
        if k == 0 and procs == 1:
            ref_logits = torch.from_numpy(f["logits"][()])
            err = (logits.double() - ref_logits).abs().max().item()
            if not err <= 1e-4 * ref_logits.abs().max().item():
                fail(f"GPT-2 reference logits: max abs error {err:.2e}")
        opt.zero_grad()
        loss.backward()
        opt.step()
        mean = loss.detach().clone()
        if dist:
            dist.all_reduce(mean)
            mean /= procs
        worst = max(worst, abs(mean.item() - want[k]) / abs(want[k]))
    if not worst <= 1e-4:
        fail(f"GPT-2 reference AdamW losses at {procs} process(es): relative error {worst:.2e} > 1e-4")
    if rank == 0:
        print(f"gpt2 peer: reference case at {procs} process(es): {len(want)} AdamW losses within {worst:.1e}")
        write_json(out, {"procs": procs, "adamw_loss_rel_err": worst})


def random_batch(B, T, V, seed):
    gen = torch.Generator().manual_seed(seed)
    return torch.randint(0, V, (B, T), generator=gen), torch.randint(0, V, (B, T), generator=gen)


def fwdbwd(a):
    set_threads(a.threads)
    model = Gpt2(a.L, a.C, a.C // 64 if a.NH == 0 else a.NH, a.V, a.Vp, a.T)
    x, y = random_batch(a.B, a.T, a.V, 7)

    def step():
        for p in model.parameters():
            p.grad = None
        _, loss = model(x, y)
        loss.backward()

    t = median_time(step, a.steps)
    print(f"gpt2 peer: L={a.L} C={a.C} T={a.T} B={a.B}: fwd+bwd {t * 1e3:.1f} ms, {a.B * a.T / t:.0f} tokens/s")
    write_json(a.json, {"peer": f"torch {torch.__version__}", "threads": torch.get_num_threads(), "L": a.L, "C": a.C,
                        "T": a.T, "B": a.B, "step_ms": t * 1e3, "tokens_per_s": a.B * a.T / t})


def ddp_train(rank, a):
    set_threads(1)
    dist = dist_setup(rank, a.procs, a.port)
    model = Gpt2(a.L, a.C, a.C // 64 if a.NH == 0 else a.NH, a.V, a.Vp, a.T)
    model = torch.nn.parallel.DistributedDataParallel(model)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=0.0)
    ts = []
    for s in range(a.steps):
        x, y = random_batch(a.B, a.T, a.V, 100 * s + rank)
        dist.barrier()
        t0 = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        _, loss = model(x, y)
        loss.backward()
        opt.step()
        dist.barrier()
        ts.append(time.perf_counter() - t0)
    t = sum(ts[1:]) / len(ts[1:])  # the steps after the first, as orthoshard's trainer reports
    tok = a.B * a.T * a.procs / t
    if rank == 0:
        print(f"gpt2 peer: DDP gloo {a.procs} procs, L={a.L} C={a.C} T={a.T} B={a.B}/proc: {t * 1e3:.1f} ms/step, "
              f"{tok:.0f} tokens/s")
        write_json(a.json, {"peer": f"torch {torch.__version__} DDP gloo", "procs": a.procs, "L": a.L, "C": a.C,
                            "T": a.T, "B": a.B, "step_ms": t * 1e3, "tokens_per_s": tok})


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("mode", choices=["check", "fwdbwd", "ddp"])
    ap.add_argument("--ref", help="folder of the shared GPT-2 reference case")
    ap.add_argument("--L", type=int, default=4)
    ap.add_argument("--C", type=int, default=256)
    ap.add_argument("--NH", type=int, default=0)
    ap.add_argument("--T", type=int, default=256)
    ap.add_argument("--B", type=int, default=4)
    ap.add_argument("--V", type=int, default=50257)
    ap.add_argument("--Vp", type=int, default=50304)
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--procs", type=int, default=1)
    ap.add_argument("--port", type=int, default=29531)
    ap.add_argument("--json", required=True)
    a = ap.parse_args()
    if a.mode == "fwdbwd":
        fwdbwd(a)
        return
    import torch.multiprocessing as mp
    if a.mode == "check":
        if a.procs == 1:
            check_reference(0, 1, a.ref, a.port, a.json)
        else:
            mp.spawn(check_reference, args=(a.procs, a.ref, a.port, a.json), nprocs=a.procs)
    else:
        mp.spawn(ddp_train, args=(a,), nprocs=a.procs)


if __name__ == "__main__":
    main()
