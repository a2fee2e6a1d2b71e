#!/usr/bin/env python3
"""Evaluates a reference model directory (config.json + safetensors):

  * held-out LM loss (nats per predicted token; also over positions >= 2048) on non-overlapping
    windows of --seq tokens cut inside held-out documents, under dense attention and under DSA
    with each --patterns entry ("all" = every layer Full; "1/4", "FSSS...");
  * passkey retrieval accuracy at each --passkey-lengths (total tokens) x --depths: the needle
    "The pass key is N. ..." woven into held-out text, the question at the end; an answer counts
    when greedy decoding produces exactly the number followed by its closing token (checked in
    one teacher-forced pass: greedy decoding emits a sequence iff every token of it is the
    argmax given the ones before).

  python3 tools/reference_model/evaluate.py --model models/reference \
      --heldout .corpus/gpu/heldout_tokens.u16.xz --json eval.json
"""

import argparse
import json
import os
import sys
import time

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import model as M  # noqa: E402
import retrieval as R  # noqa: E402


def heldout_windows(tokens, seq, max_windows, sep=0):
    """Non-overlapping windows of seq tokens inside documents (long documents first in file
    order); falls back to windows of the raw stream if the documents give too few."""
    wins = []
    for s, e in R.split_docs(tokens, sep):
        for a in range(s, e - seq + 1, seq):
            wins.append(tokens[a:a + seq])
            if len(wins) >= max_windows:
                return np.stack(wins).astype(np.int64)
    a = 0
    while len(wins) < max_windows and a + seq <= len(tokens):
        wins.append(tokens[a:a + seq])
        a += seq
    return np.stack(wins).astype(np.int64) if wins else np.zeros((0, seq), np.int64)


def _autocast(device):
    return torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda" else torch.autocast("cpu", enabled=False)


@torch.no_grad()
def eval_loss(model, windows, attn="dense", pattern=None, batch=4, far_from=2048):
    dev = next(model.parameters()).device
    tot, n, tot_far, n_far = 0.0, 0, 0.0, 0
    for i in range(0, len(windows), batch):
        ids = torch.from_numpy(windows[i:i + batch]).to(dev)
        with _autocast(dev):
            logits, _ = model(ids, attn=attn, pattern=pattern)
        lp = F.cross_entropy(logits[:, :-1].float().reshape(-1, logits.shape[-1]), ids[:, 1:].reshape(-1),
                             reduction="none").view(ids.shape[0], -1)
        tot += lp.sum().item()
        n += lp.numel()
        if lp.shape[1] > far_from:
            tot_far += lp[:, far_from:].sum().item()
            n_far += lp[:, far_from:].numel()
    return {"loss": tot / max(n, 1), "loss_pos_ge_%d" % far_from: (tot_far / n_far) if n_far else None,
            "tokens": n}


@torch.no_grad()
def eval_passkey(model, prompts, attn="dense", pattern=None, batch=4):
    dev = next(model.parameters()).device
    by_cell = {}
    groups = {}
    for L, d, p, a in prompts:
        groups.setdefault((L, d), []).append((p, a))
    for (L, d), items in sorted(groups.items()):
        for i in range(0, len(items), batch):
            chunk = items[i:i + batch]
            seqs = [p + a for p, a in chunk]
            T = max(len(s) for s in seqs)
            ids = torch.zeros(len(seqs), T, dtype=torch.long)
            for j, s in enumerate(seqs):
                ids[j, :len(s)] = torch.tensor(s)
            ids = ids.to(dev)
            with _autocast(dev):
                logits, _ = model(ids, attn=attn, pattern=pattern)
            pred = logits.argmax(-1).cpu()
            for j, (p, a) in enumerate(chunk):
                got = pred[j, len(p) - 1:len(p) - 1 + len(a)].tolist()
                by_cell.setdefault((L, d), []).append(got == list(a))
    acc_len = {}
    for (L, d), v in by_cell.items():
        acc_len.setdefault(L, []).extend(v)
    return {
        "by_length": {str(L): float(np.mean(v)) for L, v in sorted(acc_len.items())},
        "by_length_depth": {f"{L}@{d:g}": float(np.mean(v)) for (L, d), v in sorted(by_cell.items())},
        "n": sum(len(v) for v in by_cell.values()),
    }


def evaluate(model, heldout, tasks, seq=8192, max_windows=16, patterns=("all",), lengths=(2048, 4096, 8192),
             depths=(0.1, 0.3, 0.5, 0.7, 0.9), per_cell=4, batch=4, log=print):
    model.eval()
    res = {"seq": seq}
    t0 = time.time()
    windows = heldout_windows(heldout, seq, max_windows)
    res["heldout_windows"] = int(len(windows))
    res["loss"] = {"dense": eval_loss(model, windows, "dense", None, batch)}
    for p in patterns:
        res["loss"][f"dsa:{p}"] = eval_loss(model, windows, "dsa", p, batch)
    log(f"eval loss {json.dumps(res['loss'])} ({time.time() - t0:.0f}s)")
    if tasks is not None and lengths:
        prompts = R.passkey_prompts(tasks, heldout, lengths, depths, per_cell)
        res["passkey"] = {"dense": eval_passkey(model, prompts, "dense", None, batch)}
        for p in patterns:
            res["passkey"][f"dsa:{p}"] = eval_passkey(model, prompts, "dsa", p, batch)
        log("eval passkey " + json.dumps({k: v["by_length"] for k, v in res["passkey"].items()}) +
            f" ({time.time() - t0:.0f}s)")
    res["eval_seconds"] = time.time() - t0
    return res


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", required=True)
    ap.add_argument("--heldout", default=".corpus/gpu/heldout_tokens.u16.xz")
    ap.add_argument("--tokenizer", default=None, help="default: <model>/tokenizer.json or models/reference/tokenizer.json")
    ap.add_argument("--seq", type=int, default=8192)
    ap.add_argument("--max-windows", type=int, default=16)
    ap.add_argument("--patterns", default="all", help="comma-separated DSA patterns (all, 1/N, FS...)")
    ap.add_argument("--passkey-lengths", default="2048,4096,8192")
    ap.add_argument("--depths", default="0.1,0.3,0.5,0.7,0.9")
    ap.add_argument("--per-cell", type=int, default=4)
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--json")
    args = ap.parse_args()
    dev = torch.device(args.device)
    model = M.load_hf(args.model, dev)
    heldout = R.load_tokens(args.heldout)
    tok = args.tokenizer or next((p for p in (os.path.join(args.model, "tokenizer.json"), "models/reference/tokenizer.json")
                                  if os.path.exists(p)), None)
    tasks = R.Tasks(tok) if tok else None
    lengths = [int(x) for x in args.passkey_lengths.split(",") if x]
    res = evaluate(model, heldout, tasks, args.seq, args.max_windows, args.patterns.split(","), lengths,
                   [float(x) for x in args.depths.split(",")], args.per_cell, args.batch)
    res["model"] = args.model
    print(json.dumps(res, indent=2))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(res, f, indent=2)


if __name__ == "__main__":
    main()
