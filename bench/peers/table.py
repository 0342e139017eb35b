"""Collects the JSON files of one bench/compare.sh run into the comparison table (markdown on stdout) and a JSON
list of {work, orthoshard, peer, unit, ratio, goal, check}; ratio > 1 means orthoshard is better.

    table.py WORKDIR [--json PATH]
"""
import argparse
import os
import sys

from common import read_json, write_json


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("workdir")
    ap.add_argument("--json")
    a = ap.parse_args()
    w = lambda name: os.path.join(a.workdir, name)  # noqa: E731
    have = lambda name: os.path.exists(w(name))  # noqa: E731
    rows = []

    def add(work, ours, peer, unit, higher_is_better, goal, check):
        ratio = ours / peer if higher_is_better else peer / ours
        rows.append({"work": work, "orthoshard": round(ours, 4), "peer": round(peer, 4), "unit": unit,
                     "ratio": round(ratio, 3), "goal": goal, "check": check})

    if have("ns.json") and have("ns_peer.json"):
        ours = {r["m"]: r for r in read_json(w("ns.json"))["results"]}
        peer = read_json(w("ns_peer.json"))
        for r in peer["results"]:
            add(f"Newton-Schulz {r['n']}x{r['n']}, fp32, {peer['threads']} threads", ours[r["n"]]["ns_ms"], r["ms"],
                "ms", False, 1.3, f"outputs agree to {r['check_rel_err']:.1e}")
    if have("optim.json") and have("optim_peer.json"):
        o = read_json(w("optim.json"))
        ours = {r["optimizer"]: r for r in o["results"]}
        peer = read_json(w("optim_peer.json"))
        nparams = sum(1 for _ in ours[next(iter(ours))]["params"])
        what = f"GPT-2 set L={o['layers']} C={o['channels']} ({nparams} tensors), 1 rank"
        for r in peer["results"]:
            name = r["optimizer"]
            check = f"both reproduce {name}.h5 (torch {r['check_trace_err']:.1e})"
            add(f"{name} step, {what}", ours[name]["step_ms"], r["step_ms"], "ms", False, 1.3, check)
            if name == "conda":
                add(f"conda step that refreshes the basis (update_proj_gap = 1), {what}",
                    ours[name]["refresh_step_ms"], r["refresh_step_ms"], "ms", False, 1.3, check)
    for tag in ("small", "large"):
        if have(f"model_{tag}.json") and have(f"model_{tag}_peer.json"):
            o, p = read_json(w(f"model_{tag}.json")), read_json(w(f"model_{tag}_peer.json"))
            check = "both reproduce the GPT-2 reference case" if have("ref_ours_np1.json") else ""
            add(f"GPT-2 forward+backward L={p['L']} C={p['C']} T={p['T']} B={p['B']}, fp32 eager, "
                f"{p['threads']} threads", o["tokens_per_s"], p["tokens_per_s"], "tokens/s", True, 1.0, check)
    if have("train.json") and have("ddp.json"):
        o, p = read_json(w("train.json")), read_json(w("ddp.json"))
        check = "both reproduce the reference AdamW losses at 2 ranks" if have("ref_ours_np2.json") else ""
        add(f"training step at {o['ranks']} ranks, L={o['L']} C={o['C']} T={o['T']} B={o['B']}/rank, AdamW "
            f"(orthoshard FSDP over MPI vs torch DDP over gloo)", o["overlap"]["tokens_per_s"], p["tokens_per_s"],
            "tokens/s", True, 1.0, check)
    if have("ckpt.json") and have("ckpt_peer.json"):
        o, p = read_json(w("ckpt.json"))[-1], read_json(w("ckpt_peer.json"))
        gb = p["tensor_bytes"] / 1e9
        add(f"checkpoint save, model + NorMuon state ({p['tensors']} tensors, {gb:.2f} GB), {o['ranks']} rank, "
            f"with fsync and rename", gb / o["save_s"], gb / p["save_s"], "GB/s", True, 1.0,
            "torch.load returns the tensors h5py reads from our file")
    if have("comm.json") and have("comm_peer.json"):
        o, p = read_json(w("comm.json")), read_json(w("comm_peer.json"))
        ours = {(r["op"], r["bytes"]): r for r in o["results"]}
        for r in p["results"]:
            mine = ours.get((r["op"], r["bytes"]))
            if mine:
                add(f"{r['op']} busbw, {r['bytes'] >> 20} MiB, {p['procs']} ranks (MPI vs gloo)",
                    mine["busbw_gbps"], r["busbw_gbps"], "GB/s", True, 1.0, "values checked on both sides")

    print("| work | orthoshard | peer | unit | ratio | goal | check |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for r in rows:
        mark = "" if r["ratio"] >= r["goal"] else " (below goal)"
        print(f"| {r['work']} | {r['orthoshard']:.4g} | {r['peer']:.4g} | {r['unit']} | {r['ratio']:.2f}x{mark} "
              f"| >= {r['goal']:g}x | {r['check']} |")
    if a.json:
        write_json(a.json, rows)
    if not rows:
        print("no results found in " + a.workdir, file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
