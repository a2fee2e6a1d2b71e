#!/usr/bin/env python3
"""Checks tools/reference_model/model.py against transformers' DeepseekV32ForCausalLM (eager, fp32).

Needs torch and transformers 5.17 (CPU is enough; a few seconds). On tiny random all-dense
deepseek_v32 configs it checks:
  1. logits, dense-equivalent (index_topk >= T): our "dense" (SDPA) and "dsa" modes vs transformers;
  2. logits, sparse (index_topk < T): our "dsa" mode vs transformers, and our per-layer top-k sets
     equal to transformers' (rows whose k-th/(k+1)-th scores nearly tie are skipped);
  3. an IndexCache pattern: transformers with its S layers' indexers patched to return the
     previous F layer's top-k vs our pattern option;
  4. the indexer KL (dense and sparse) against a direct computation from transformers' attention
     weights (output_attentions) and its indexer scores;
  5. a directory written by save_hf() loads with transformers' from_pretrained unchanged (tied and
     untied embeddings) and gives the same logits.
Exits 1 if a relative L2 error is >= 1e-4 or a check fails. --json writes the numbers.
"""

import argparse
import json
import math
import os
import sys
import tempfile

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import model as M  # noqa: E402

import transformers  # noqa: E402


def tiny(tie, topk, layers=4):
    return M.DSAConfig(vocab_size=256, hidden_size=64, intermediate_size=96, num_hidden_layers=layers,
                       num_attention_heads=4, q_lora_rank=32, kv_lora_rank=32, qk_nope_head_dim=16,
                       qk_rope_head_dim=8, v_head_dim=16, index_n_heads=4, index_head_dim=32,
                       index_topk=topk, max_position_embeddings=512, tie_word_embeddings=tie)


def hf_model(cfg):
    d = cfg.to_hf_dict()
    for k in ("architectures", "model_type", "transformers_version", "dtype", "qk_head_dim", "head_dim"):
        d.pop(k, None)
    config = transformers.DeepseekV32Config(**d)
    config._attn_implementation = "eager"
    return transformers.DeepseekV32ForCausalLM(config).float().eval()


def randomise(model, gen, gain=1.5):
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("norm.weight") or name.endswith("layernorm.weight"):
                p.copy_(1.0 + 0.2 * torch.randn(p.shape, generator=gen))
            elif name.endswith("k_norm.bias"):
                p.copy_(0.2 * torch.randn(p.shape, generator=gen))
            elif "embed_tokens" in name:
                p.copy_(torch.randn(p.shape, generator=gen))
            else:
                p.copy_(torch.randn(p.shape, generator=gen) * (gain / math.sqrt(p.shape[-1])))


def rel(a, b):
    return (torch.linalg.vector_norm((a - b).double()) / torch.linalg.vector_norm(b.double())).item()


class IndexerSpy:
    """Records transformers' indexer score tensors and top-k per call; optionally makes some
    layers reuse the previous F layer's top-k (IndexCache emulation)."""

    def __init__(self, hf, pattern=None):
        self.scores, self.topk = [], []
        self.pattern = pattern
        self.orig_topk = torch.Tensor.topk
        self.hooks = []
        spy = self
        last = {}

        def topk(t, k, *a, **kw):
            r = spy.orig_topk(t, k, *a, **kw)
            if t.dim() == 3 and t.shape[1] == t.shape[2]:
                spy.scores.append(t.detach().clone())
                spy.topk.append(r.indices.detach().clone())
            return r

        self.patched = topk
        for l, layer in enumerate(hf.model.layers):
            ind = layer.self_attn.indexer
            orig = ind.forward

            def fwd(*a, _orig=orig, _l=l, **kw):
                if pattern is not None and pattern[_l] == "S":
                    return last["idx"]
                out = _orig(*a, **kw)
                last["idx"] = out
                return out
            ind.forward = fwd

    def __enter__(self):
        torch.Tensor.topk = self.patched
        return self

    def __exit__(self, *e):
        torch.Tensor.topk = self.orig_topk


def near_ties(scores, k, gap=1e-5):
    s = torch.sort(scores.double(), dim=-1, descending=True).values
    T = scores.shape[-1]
    if k >= T:
        return torch.zeros(scores.shape[:-1], dtype=torch.bool)
    a, b = s[..., k - 1], s[..., k]
    return torch.isfinite(b) & ((a - b).abs() <= gap * (1 + a.abs()))


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--json", help="write the results here")
    ap.add_argument("--seq", type=int, default=96)
    args = ap.parse_args()
    torch.set_grad_enabled(False)
    torch.manual_seed(0)
    res = {"torch": torch.__version__, "transformers": transformers.__version__, "checks": {}}
    ok = True
    T = args.seq

    def record(name, value, limit=1e-4):
        nonlocal ok
        good = value < limit
        ok &= good
        res["checks"][name] = value
        print(f"{name:48s} {value:.3e}  {'ok' if good else 'FAIL'}")

    for tie in (False, True):
        for topk, label in ((T, "dense-equivalent"), (T // 4, "sparse")):
            cfg = tiny(tie, topk)
            hf = hf_model(cfg)
            randomise(hf, torch.Generator().manual_seed(7 + topk + 100 * tie))
            ours = M.DeepseekV32ForCausalLM(cfg).eval()
            ours.load_hf_state_dict(hf.state_dict())
            ids = torch.randint(0, cfg.vocab_size, (2, T), generator=torch.Generator().manual_seed(3))
            with IndexerSpy(hf) as spy:
                ref = hf(input_ids=ids, use_cache=False).logits.float()
            dsa, aux = ours(ids, attn="dsa", return_topk=True)
            tag = f"tie={int(tie)} {label}"
            record(f"{tag}: logits dsa", rel(dsa, ref))
            if label == "dense-equivalent":
                dense, _ = ours(ids, attn="dense")
                record(f"{tag}: logits dense (SDPA causal)", rel(dense, ref))
            else:
                mism = 0
                for l, (hs, hidx) in enumerate(zip(spy.scores, spy.topk)):
                    tie_rows = near_ties(hs, topk)
                    a = torch.sort(aux["topk"][l], -1).values
                    b = torch.sort(hidx.long(), -1).values
                    t = torch.arange(T)[None, :, None]
                    a = torch.where(a <= t, a, -1).sort(-1).values
                    b = torch.where(b <= t, b, -1).sort(-1).values
                    diff = (a != b).any(-1) & ~tie_rows
                    mism += int(diff.sum())
                record(f"{tag}: top-k rows differing (count)", float(mism), limit=0.5)

    # IndexCache pattern emulated in transformers.
    cfg = tiny(True, T // 4, layers=6)
    hf = hf_model(cfg)
    randomise(hf, torch.Generator().manual_seed(11))
    ours = M.DeepseekV32ForCausalLM(cfg).eval()
    ours.load_hf_state_dict(hf.state_dict())
    ids = torch.randint(0, cfg.vocab_size, (2, T), generator=torch.Generator().manual_seed(5))
    pattern = "FSSFSF"
    with IndexerSpy(hf, pattern):
        ref = hf(input_ids=ids, use_cache=False).logits.float()
    got, _ = ours(ids, attn="dsa", pattern=pattern)
    record(f"pattern {pattern}: logits dsa", rel(got, ref))
    allf, _ = ours(ids, attn="dsa")
    res["checks"]["pattern differs from all-F (rel L2, should be > 0)"] = rel(allf, ref)
    print(f"{'pattern differs from all-F (info)':48s} {rel(allf, ref):.3e}")

    # Indexer KL against transformers' attention weights and indexer scores.
    for mode, topk in (("dense", T), ("sparse", T // 4)):
        cfg = tiny(True, topk)
        hf = hf_model(cfg)
        randomise(hf, torch.Generator().manual_seed(21), gain=0.7)
        ours = M.DeepseekV32ForCausalLM(cfg).eval()
        ours.load_hf_state_dict(hf.state_dict())
        ids = torch.randint(0, cfg.vocab_size, (1, T), generator=torch.Generator().manual_seed(9))
        with IndexerSpy(hf) as spy:
            out = hf(input_ids=ids, use_cache=False, output_attentions=True)
        _, aux = ours(ids, attn="dense" if mode == "dense" else "dsa", indexer_loss=mode, kl_chunk=40)
        worst = 0.0
        for l in range(cfg.num_hidden_layers):
            p = out.attentions[l].float().mean(1)[0]  # [T,T] (HF's weights already top-k masked)
            sc = spy.scores[l][0].double()
            tri = torch.ones(T, T, dtype=torch.bool).tril()
            if mode == "sparse":
                sel = torch.zeros(T, T, dtype=torch.bool).scatter_(-1, spy.topk[l][0].long(), True) & tri
            else:
                sel = tri
            logq = torch.log_softmax(sc.masked_fill(~sel, float("-inf")), -1)
            pp = p.double().masked_fill(~sel, 0)
            pp = pp / pp.sum(-1, keepdim=True)
            term = torch.where(pp > 0, pp * (torch.log(pp.clamp_min(1e-300)) - logq), torch.zeros_like(pp))
            ref_kl = term.sum(-1).mean()
            worst = max(worst, abs(aux["indexer_kl"][l].item() - ref_kl.item()) / max(ref_kl.item(), 1e-12))
        record(f"indexer KL {mode}: worst relative error", worst)

    # Gradient of the indexer KL reaches only the indexer, and with indexer_backward.
    cfg = tiny(True, T // 4)
    ours = M.DeepseekV32ForCausalLM(cfg)
    ours.init_weights(std=0.1)
    ids = torch.randint(0, cfg.vocab_size, (1, T), generator=torch.Generator().manual_seed(1))
    with torch.enable_grad():
        _, aux = ours(ids, attn="dsa", indexer_loss="sparse", indexer_backward=True)
    ind_grads = [p.grad is not None and p.grad.abs().sum() > 0 for n, p in ours.named_parameters() if ".indexer." in n and "bias" not in n]
    other = [n for n, p in ours.named_parameters() if ".indexer." not in n and p.grad is not None]
    good = all(ind_grads) and not other
    ok &= good
    res["checks"]["indexer KL grads confined to the indexers"] = bool(good)
    print(f"{'indexer KL grads confined to the indexers':48s} {'ok' if good else 'FAIL'}")

    # save_hf -> transformers from_pretrained, bf16 on disk, both tie settings.
    for tie in (False, True):
        cfg = tiny(tie, T // 2)
        ours = M.DeepseekV32ForCausalLM(cfg).eval()
        ours.init_weights(std=0.1, seed=4)
        with tempfile.TemporaryDirectory() as d:
            M.save_hf(ours, d, dtype=torch.bfloat16, max_shard_bytes=200_000 if tie else None)
            hf = transformers.DeepseekV32ForCausalLM.from_pretrained(d, dtype=torch.float32, attn_implementation="eager").eval()
            back = M.load_hf(d).eval()
        ids = torch.randint(0, cfg.vocab_size, (1, T), generator=torch.Generator().manual_seed(2))
        ref = hf(input_ids=ids, use_cache=False).logits.float()
        got, _ = back(ids, attn="dsa")
        record(f"save_hf tie={int(tie)} -> from_pretrained: logits", rel(got, ref))

    res["passed"] = bool(ok)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(res, f, indent=2)
    print("PASS" if ok else "FAIL")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
