#!/usr/bin/env python3
"""Makes tiny random DSA models with Hugging Face transformers and saves parity fixtures.

Needs torch and transformers >= 5.17 (DeepseekV32ForCausalLM, GlmMoeDsaForCausalLM); runs on the
GPU machine, which has both, or anywhere they are installed (CPU is enough). For each fixture it
writes, under --out/<name>/:
  config.json, model.safetensors (or shards + model.safetensors.index.json),
  tokens.npy      int64 [B, T] or [T]
  logits.npy      float32, same leading shape + [vocab]: transformers' eager forward in fp32
  topk.npy        int32 [n_indexer_calls, B, T, k]: each Full layer's top-k (HF order, sorted
                  ascending per row; entries past a row's causal end are -1)
  hf_bf16_logits.npy  float32: the same model run by transformers in bf16 (weights and
                  activations; on CUDA when available). How far it lands from logits.npy measures
                  how sensitive the fixture is to bf16 rounding, the yardstick for our bf16 backend.

The reference forward always runs in fp32 on the weights exactly as saved: bf16 fixtures round
the weights to bf16 first, FP8 fixtures quantise to e4m3 with block scales and load the
dequantised values back, so the C++ side must reproduce the same numbers to fp32 rounding.

Seeds are rejected (and the next one tried) when a result would hinge on rounding: a row whose
k-th and (k+1)-th index scores are closer than --tie-gap, or a token whose MoE expert or group
choice has such a near tie.
"""

import argparse
import json
import math
import os
import sys

import numpy as np
import torch

import transformers
from safetensors.torch import save_file

FP8_MAX = 448.0


def tiny_common(num_layers, topk):
    return dict(
        vocab_size=256,
        hidden_size=64,
        intermediate_size=96,
        moe_intermediate_size=32,
        num_hidden_layers=num_layers,
        num_attention_heads=4,
        num_key_value_heads=4,
        q_lora_rank=32,
        kv_lora_rank=32,
        qk_nope_head_dim=16,
        qk_rope_head_dim=8,
        v_head_dim=16,
        index_n_heads=8,
        index_head_dim=32,
        index_topk=topk,
        max_position_embeddings=4096,
        tie_word_embeddings=False,
    )


FIXTURES = {
    # deepseek_v32, fp32, default rope, MoE with n_group > 1, two shards, a batch of 2.
    "dsv32_moe_groups": dict(
        kind="deepseek_v32",
        config=dict(
            tiny_common(3, 16),
            n_routed_experts=8,
            n_shared_experts=1,
            num_experts_per_tok=3,
            n_group=4,
            topk_group=2,
            norm_topk_prob=True,
            routed_scaling_factor=2.5,
            first_k_dense_replace=1,
            rope_parameters=dict(rope_type="default", rope_theta=10000.0),
        ),
        batch=2,
        seq=40,
        weights="f32",
        shards=2,
        experts="per_expert",
    ),
    # deepseek_v32, yarn rope (mscale != mscale_all_dim), FP8 block weights with partial edge
    # blocks, config in the released form (rope_theta + rope_scaling, quantization_config).
    "dsv32_yarn_fp8": dict(
        kind="deepseek_v32",
        config=dict(
            tiny_common(3, 16),
            n_routed_experts=4,
            n_shared_experts=1,
            num_experts_per_tok=2,
            n_group=1,
            topk_group=1,
            norm_topk_prob=False,
            routed_scaling_factor=1.5,
            first_k_dense_replace=2,
            max_position_embeddings=512,
            rope_parameters=dict(
                rope_type="yarn",
                rope_theta=10000.0,
                factor=4.0,
                original_max_position_embeddings=128,
                beta_fast=32.0,
                beta_slow=1.0,
                mscale=1.0,
                mscale_all_dim=0.8,
            ),
        ),
        batch=1,
        seq=48,
        weights="fp8",
        block=[16, 24],
        released_config=True,
        experts="per_expert",
    ),
    # A well-conditioned model (smaller weights) for the bf16 backend's absolute tolerance:
    # deepseek_v32, bf16 weights, 4 layers, longer sequences and top-k.
    "dsv32_gentle_bf16": dict(
        kind="deepseek_v32",
        config=dict(
            tiny_common(4, 32),
            n_routed_experts=8,
            n_shared_experts=1,
            num_experts_per_tok=2,
            n_group=2,
            topk_group=1,
            norm_topk_prob=True,
            routed_scaling_factor=1.0,
            first_k_dense_replace=1,
            rope_parameters=dict(rope_type="default", rope_theta=10000.0),
        ),
        batch=1,
        seq=96,
        weights="bf16",
        experts="per_expert",
        gain=0.5,
    ),
    # glm_moe_dsa with an IndexCache pattern: shared layers carry no indexer weights; bf16
    # weights; fused expert tensors as transformers stores them; 1-D tokens.
    "glm_shared_bf16": dict(
        kind="glm_moe_dsa",
        config=dict(
            tiny_common(4, 12),
            n_routed_experts=8,
            n_shared_experts=1,
            num_experts_per_tok=2,
            n_group=1,
            topk_group=1,
            norm_topk_prob=True,
            routed_scaling_factor=2.5,
            first_k_dense_replace=1,
            rms_norm_eps=1e-5,
            index_topk_pattern="FSSF",
            rope_parameters=dict(rope_type="default", rope_theta=10000.0),
        ),
        batch=0,
        seq=36,
        weights="bf16",
        experts="fused",
    ),
}


def build_model(kind, config_kwargs):
    if kind == "deepseek_v32":
        config = transformers.DeepseekV32Config(**config_kwargs)
        cls = transformers.DeepseekV32ForCausalLM
    else:
        config = transformers.GlmMoeDsaConfig(**config_kwargs)
        cls = transformers.GlmMoeDsaForCausalLM
    config._attn_implementation = "eager"
    model = cls(config).float().eval()
    return config, model


def randomise(model, gen, gain=1.5):
    """Weights of a scale that gives non-trivial attention, routing and index scores."""
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("norm.weight") or name.endswith("layernorm.weight"):
                p.copy_(1.0 + 0.2 * torch.randn(p.shape, generator=gen))
            elif name.endswith("k_norm.bias"):
                p.copy_(0.2 * torch.randn(p.shape, generator=gen))
            elif "embed_tokens" in name:
                p.copy_(torch.randn(p.shape, generator=gen))
            else:
                fan_in = p.shape[-1]
                p.copy_(torch.randn(p.shape, generator=gen) * (gain / math.sqrt(fan_in)))
        for name, b in model.named_buffers():
            if name.endswith("e_score_correction_bias"):
                b.copy_(0.1 * torch.randn(b.shape, generator=gen))


def quantise_fp8_blocks(w, block):
    """e4m3 block quantisation: returns (fp8 tensor, fp32 scale_inv [ceil(r/br), ceil(c/bc)])."""
    rows, cols = w.shape
    br, bc = block
    nr, nc = -(-rows // br), -(-cols // bc)
    scale = torch.empty(nr, nc, dtype=torch.float32)
    q = torch.empty(rows, cols, dtype=torch.float8_e4m3fn)
    for i in range(nr):
        for j in range(nc):
            blk = w[i * br:(i + 1) * br, j * bc:(j + 1) * bc]
            s = blk.abs().max().clamp(min=1e-12) / FP8_MAX
            scale[i, j] = s
            q[i * br:(i + 1) * br, j * bc:(j + 1) * bc] = (blk / s).to(torch.float8_e4m3fn)
    return q, scale


def dequantise_fp8_blocks(q, scale, block):
    br, bc = block
    w = q.to(torch.float32)
    full = scale.repeat_interleave(br, 0)[: w.shape[0]].repeat_interleave(bc, 1)[:, : w.shape[1]]
    return w * full


FP8_SUFFIXES = ("q_a_proj.weight", "q_b_proj.weight", "kv_a_proj_with_mqa.weight", "kv_b_proj.weight",
                "o_proj.weight", "wq_b.weight", "wk.weight", "gate_proj.weight", "up_proj.weight",
                "down_proj.weight")


def checkpoint_tensors(model, spec):
    """The tensors to save (names as in released checkpoints) and the fp32 values the model must
    then hold; the model's parameters are overwritten with the latter."""
    state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    out = {}
    for name, t in state.items():
        if ".experts.gate_up_proj" in name and spec["experts"] == "per_expert":
            prefix = name[: -len("gate_up_proj")]
            inter = t.shape[1] // 2
            for e in range(t.shape[0]):
                out[f"{prefix}{e}.gate_proj.weight"] = t[e, :inter].contiguous()
                out[f"{prefix}{e}.up_proj.weight"] = t[e, inter:].contiguous()
        elif ".experts.down_proj" in name and spec["experts"] == "per_expert":
            prefix = name[: -len("down_proj")]
            for e in range(t.shape[0]):
                out[f"{prefix}{e}.down_proj.weight"] = t[e].contiguous()
        else:
            out[name] = t
    saved, effective = {}, {}
    for name, t in out.items():
        t = t.float()
        if spec["weights"] == "bf16" and not name.endswith("e_score_correction_bias"):
            saved[name] = t.to(torch.bfloat16)
            effective[name] = saved[name].float()
        elif spec["weights"] == "fp8" and t.dim() == 2 and name.endswith(FP8_SUFFIXES):
            q, s = quantise_fp8_blocks(t, spec["block"])
            saved[name] = q
            saved[name + "_scale_inv"] = s
            effective[name] = dequantise_fp8_blocks(q, s, spec["block"])
        else:
            saved[name] = t.contiguous()
            effective[name] = t
    # Write the effective values back into the model (fused expert tensors re-assembled).
    new_state = {}
    for name, t in state.items():
        if ".experts.gate_up_proj" in name and spec["experts"] == "per_expert":
            prefix = name[: -len("gate_up_proj")]
            new_state[name] = torch.stack([torch.cat([effective[f"{prefix}{e}.gate_proj.weight"],
                                                      effective[f"{prefix}{e}.up_proj.weight"]]) for e in range(t.shape[0])])
        elif ".experts.down_proj" in name and spec["experts"] == "per_expert":
            prefix = name[: -len("down_proj")]
            new_state[name] = torch.stack([effective[f"{prefix}{e}.down_proj.weight"] for e in range(t.shape[0])])
        else:
            new_state[name] = effective[name]
    model.load_state_dict(new_state, strict=True)
    return saved


class Recorder:
    """Records the indexer's score tensors and top-k, and the MoE routers' inputs."""

    def __init__(self, model, index_topk):
        self.index_scores, self.index_topk_out, self.router_inputs = [], [], []
        self.index_topk = index_topk
        self.original_topk = torch.Tensor.topk
        recorder = self

        def topk(t, k, *args, **kwargs):
            result = recorder.original_topk(t, k, *args, **kwargs)
            # The indexer calls scores.topk(min(index_topk, T), dim=-1) on [B, S, T]; the router
            # calls .topk(2) on grouped scores. Only the former has this k and a square tail.
            if t.dim() == 3 and t.shape[1] == t.shape[2] and k == min(recorder.index_topk, t.shape[-1]) and k > 2:
                recorder.index_scores.append(t.detach().clone())
                recorder.index_topk_out.append(result.indices.detach().clone())
            return result

        self.patched = topk
        self.hooks = []
        for module in model.modules():
            if type(module).__name__.endswith("TopkRouter"):
                self.hooks.append(module.register_forward_hook(
                    lambda mod, inp, out: recorder.router_inputs.append((mod, inp[0].detach().clone()))))

    def __enter__(self):
        torch.Tensor.topk = self.patched
        return self

    def __exit__(self, *exc):
        torch.Tensor.topk = self.original_topk
        for h in self.hooks:
            h.remove()


def index_ties(scores, k, gap):
    """Rows whose k-th and (k+1)-th valid scores are within gap * (1 + |score|)."""
    bad = 0
    s = scores.reshape(-1, scores.shape[-1])
    for row in s:
        valid = row[row > -1e30]
        if valid.numel() <= k:
            continue
        top = torch.sort(valid.double(), descending=True).values
        if top[k - 1] - top[k] <= gap * (1.0 + top[k - 1].abs()):
            bad += 1
    return bad


def router_ties(module, x, gap):
    """Tokens whose group or expert choice is within gap of flipping."""
    x = x.reshape(-1, module.weight.shape[1]).float()
    scores = torch.sigmoid(x @ module.weight.float().t())
    choice = scores + module.e_score_correction_bias.float()
    n_group, topk_group, top_k = module.num_group, module.topk_group, module.top_k
    per = choice.shape[1] // n_group
    bad = 0
    for row in choice:
        row = row.double()
        if n_group > 1:
            g = torch.sort(row.view(n_group, per), dim=-1, descending=True).values[:, :2].sum(-1)
            gs = torch.sort(g, descending=True).values
            if topk_group < n_group and gs[topk_group - 1] - gs[topk_group] <= gap:
                bad += 1
                continue
            keep = torch.topk(g, topk_group).indices
            mask = torch.zeros(n_group, dtype=torch.bool)
            mask[keep] = True
            row = row.masked_fill(~mask.repeat_interleave(per), float("-inf"))
        srt = torch.sort(row, descending=True).values
        if top_k < srt.numel() and srt[top_k] > float("-inf") and srt[top_k - 1] - srt[top_k] <= gap:
            bad += 1
    return bad


def released_config(config_dict, spec):
    """Rewrites a transformers >= 5 config.json into the released checkpoints' form."""
    d = dict(config_dict)
    rope = dict(d.pop("rope_parameters"))
    d["rope_theta"] = rope.pop("rope_theta")
    rope["type"] = rope.pop("rope_type")
    d["rope_scaling"] = rope
    d.pop("mlp_layer_types", None)
    d["quantization_config"] = {"quant_method": "fp8", "fmt": "e4m3", "activation_scheme": "dynamic",
                                "weight_block_size": spec["block"]}
    return d


def save_checkpoint(out_dir, tensors, shards):
    names = sorted(tensors)
    if shards <= 1:
        save_file(tensors, os.path.join(out_dir, "model.safetensors"), metadata={"format": "pt"})
        return
    per = -(-len(names) // shards)
    weight_map, total = {}, 0
    for i in range(shards):
        part = names[i * per:(i + 1) * per]
        fname = f"model-{i + 1:05d}-of-{shards:05d}.safetensors"
        save_file({n: tensors[n] for n in part}, os.path.join(out_dir, fname), metadata={"format": "pt"})
        for n in part:
            weight_map[n] = fname
            total += tensors[n].numel() * tensors[n].element_size()
    with open(os.path.join(out_dir, "model.safetensors.index.json"), "w") as f:
        json.dump({"metadata": {"total_size": total}, "weight_map": weight_map}, f, indent=2)


def make_fixture(name, spec, out_root, tie_gap, max_seeds):
    for seed in range(max_seeds):
        gen = torch.Generator().manual_seed(1000 * (1 + list(FIXTURES).index(name)) + seed)
        config, model = build_model(spec["kind"], spec["config"])
        randomise(model, gen, spec.get("gain", 1.5))
        tensors = checkpoint_tensors(model, spec)
        b = max(spec["batch"], 1)
        tokens = torch.randint(0, config.vocab_size, (b, spec["seq"]), generator=gen)
        with torch.no_grad(), Recorder(model, config.index_topk) as rec:
            logits = model(input_ids=tokens, use_cache=False).logits.float()
        k = min(config.index_topk, spec["seq"])
        n_index_ties = sum(index_ties(s, k, tie_gap) for s in rec.index_scores)
        n_router_ties = sum(router_ties(m, x, tie_gap) for m, x in rec.router_inputs)
        if n_index_ties or n_router_ties:
            print(f"{name}: seed {seed} rejected ({n_index_ties} index-score ties, {n_router_ties} routing ties)")
            continue
        out_dir = os.path.join(out_root, name)
        os.makedirs(out_dir, exist_ok=True)
        cfg = config.to_dict()
        cfg.pop("_attn_implementation", None)
        cfg.pop("_attn_implementation_autoset", None)
        if spec.get("released_config"):
            cfg = released_config(cfg, spec)
        with open(os.path.join(out_dir, "config.json"), "w") as f:
            json.dump(cfg, f, indent=2, sort_keys=True)
        save_checkpoint(out_dir, tensors, spec.get("shards", 1))
        toks = tokens.numpy().astype(np.int64)
        lg = logits.numpy().astype(np.float32)
        if spec["batch"] == 0:
            toks, lg = toks[0], lg[0]
        np.save(os.path.join(out_dir, "tokens.npy"), toks)
        np.save(os.path.join(out_dir, "logits.npy"), lg)
        topk = torch.stack(rec.index_topk_out).to(torch.int32)  # [calls, B, T, k]
        t_idx = torch.arange(spec["seq"]).view(1, 1, -1, 1)
        topk = torch.where(topk <= t_idx, topk, torch.full_like(topk, -1))
        topk = torch.sort(topk, dim=-1).values
        np.save(os.path.join(out_dir, "topk.npy"), topk.numpy())
        device = "cuda" if torch.cuda.is_available() else "cpu"
        model_bf16 = model.to(device).to(torch.bfloat16)
        hf_bf16 = model_bf16(input_ids=tokens.to(device), use_cache=False).logits.float().cpu().numpy()
        if spec["batch"] == 0:
            hf_bf16 = hf_bf16[0]
        np.save(os.path.join(out_dir, "hf_bf16_logits.npy"), hf_bf16.astype(np.float32))
        bf16_err = np.linalg.norm(hf_bf16 - lg) / np.linalg.norm(lg)
        print(f"{name}: seed {seed} accepted; logits {tuple(lg.shape)}, {len(rec.index_scores)} indexer calls, "
              f"transformers bf16 vs fp32 relative L2 {bf16_err:.3e}, "
              f"pattern {''.join('F' if t == 'full' else 'S' for t in getattr(config, 'indexer_types', None) or ['full'] * config.num_hidden_layers)}")
        return
    sys.exit(f"{name}: no seed in {max_seeds} avoided near ties")


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="tests/data", help="output directory (one folder per fixture)")
    parser.add_argument("--only", nargs="*", help="fixture names to make (default: all)")
    parser.add_argument("--tie-gap", type=float, default=2e-5, help="minimum relative score gap at the top-k cut (and MoE choice)")
    parser.add_argument("--max-seeds", type=int, default=50)
    args = parser.parse_args()
    torch.set_grad_enabled(False)
    print(f"torch {torch.__version__}, transformers {transformers.__version__}")
    for name, spec in FIXTURES.items():
        if args.only and name not in args.only:
            continue
        make_fixture(name, spec, args.out, args.tie_gap, args.max_seeds)


if __name__ == "__main__":
    main()
