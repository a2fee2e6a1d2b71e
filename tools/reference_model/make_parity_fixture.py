#!/usr/bin/env python3
"""Writes the reference model's parity fixture: what transformers computes for one held-out window.

transformers 5.17 DeepseekV32ForCausalLM (eager attention, fp32 compute from the bf16 weights)
runs the first --tokens tokens of row --row of models/reference/heldout/heldout_sample.npy. Since
index_topk is 256, every position past 256 is sparse. Stored (models/reference/parity/):
  tokens.npy      [1, T] int32
  nll.npy         [T-1] float64   next-token loss at every position (from transformers' logits)
  logits_rows.npy [R, V] float32  full logits at R positions spread over the window
  positions.npy   [R] int32       those positions
`//tests:reference_parity_test` checks `indexcache`'s CPU forward against them. The logits of all
positions would be 12 MB; the per-position loss covers every row, the R rows every vocabulary entry.

Rows whose 256th and 257th indexer scores tie would make the top-k (and so the logits) depend on
tie-breaking (transformers' torch.topk keeps either key, indexcache the lower index). The warmed-up
indexers make such ties unlikely; the C++ test would show one as a row far off, and then another
--row should be chosen.
"""

import argparse
import os

import numpy as np
import torch
import transformers


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="models/reference")
    ap.add_argument("--row", type=int, default=0)
    ap.add_argument("--tokens", type=int, default=384)
    ap.add_argument("--rows", type=int, default=8)
    ap.add_argument("--out", default="models/reference/parity")
    args = ap.parse_args()

    sample = np.load(os.path.join(args.model, "heldout", "heldout_sample.npy"))
    ids = torch.tensor(sample[args.row, : args.tokens], dtype=torch.long)[None]
    model = transformers.DeepseekV32ForCausalLM.from_pretrained(
        args.model, torch_dtype=torch.float32, attn_implementation="eager").eval()

    with torch.no_grad():
        out = model(ids)
    logits = out.logits[0].double()
    logp = torch.log_softmax(logits, dim=-1)
    nll = -logp[:-1].gather(1, ids[0, 1:, None]).squeeze(1)
    positions = np.linspace(0, args.tokens - 1, args.rows).astype(np.int32)
    os.makedirs(args.out, exist_ok=True)
    np.save(os.path.join(args.out, "tokens.npy"), ids.numpy().astype(np.int32))
    np.save(os.path.join(args.out, "nll.npy"), nll.numpy())
    np.save(os.path.join(args.out, "logits_rows.npy"), logits[positions].float().numpy())
    np.save(os.path.join(args.out, "positions.npy"), positions)
    print(f"wrote {args.out}: {args.tokens} tokens, mean loss {nll.mean().item():.6f}, rows {positions.tolist()}")


if __name__ == "__main__":
    main()
