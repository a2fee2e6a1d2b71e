"""A compact PyTorch module for the `deepseek_v32` architecture (MLA + DSA lightning indexer).

Tensor names are exactly those of transformers' `DeepseekV32ForCausalLM`, so a state dict saved
from this module loads there (and in our C++ runtime) unchanged. Dense MLP layers only (the
reference model has no MoE layers); default RoPE only.

Attention modes (`attn` argument of `forward`):
  "dense"  causal attention over all keys through F.scaled_dot_product_attention (flash on the GPU;
           v is zero-padded to the qk head dim so the flash kernel applies). No indexer work.
  "dsa"    every layer's indexer scores I[t,s] = sum_h w[t,h] H^-0.5 relu(q[t,h].k[s] D^-0.5)
           (half-split RoPE on the first qk_rope_head_dim dims; the MLA uses interleaved RoPE),
           keeps the top index_topk causal keys per query and attention sees only those.
           With an IndexCache `pattern` (one letter per layer, F/S), S layers run no indexer and
           reuse the top-k of the nearest preceding F layer.

Indexer training losses (`indexer_loss` argument), computed per F layer on detached inputs:
  "dense"  KL(p || softmax(I)) over all causal keys, p = head-averaged causal attention of the
           layer (DeepSeek's indexer warm-up; the model itself should be frozen);
  "sparse" the same restricted to the layer's top-k set, p renormalised over it (DeepSeek's
           sparse stage; use with attn="dsa").
  With IndexCache patterns, an F layer's target is the mean of the distributions of the layers
  it serves (itself and the following S layers): the multi-layer distillation loss.
The per-F-layer mean KL per query is returned in `aux["indexer_kl"]`. With
`indexer_backward=True` each layer's KL is back-propagated into its indexer as soon as it is
computed (the graphs are disjoint from the LM loss), which bounds the memory at long context.
"""

import json
import math
import os
from dataclasses import dataclass, field

import torch
import torch.nn as nn
import torch.nn.functional as F


@dataclass
class DSAConfig:
    vocab_size: int = 8192
    hidden_size: int = 256
    intermediate_size: int = 768
    num_hidden_layers: int = 16
    num_attention_heads: int = 8
    q_lora_rank: int = 128
    kv_lora_rank: int = 128
    qk_nope_head_dim: int = 32
    qk_rope_head_dim: int = 32
    v_head_dim: int = 32
    index_n_heads: int = 4
    index_head_dim: int = 64
    index_topk: int = 256
    rms_norm_eps: float = 1e-6
    rope_theta: float = 10000.0
    max_position_embeddings: int = 8192
    tie_word_embeddings: bool = True
    extra: dict = field(default_factory=dict)

    @property
    def qk_head_dim(self):
        return self.qk_nope_head_dim + self.qk_rope_head_dim

    @classmethod
    def from_dict(cls, d):
        if d.get("model_type", "deepseek_v32") != "deepseek_v32":
            raise ValueError(f"model_type {d.get('model_type')!r}: only deepseek_v32 is supported")
        n = d["num_hidden_layers"]
        types = d.get("mlp_layer_types") or (["dense"] * min(d.get("first_k_dense_replace", 3), n) +
                                             ["sparse"] * max(n - d.get("first_k_dense_replace", 3), 0))
        if d.get("n_routed_experts") and any(t == "sparse" for t in types):
            raise ValueError("MoE layers are not supported by this module (all-dense MLP only)")
        rope = d.get("rope_parameters") or {"rope_type": (d.get("rope_scaling") or {}).get("type", "default"),
                                            "rope_theta": d.get("rope_theta", 10000.0)}
        if rope.get("rope_type", "default") != "default":
            raise ValueError("only default RoPE is supported")
        if d.get("num_key_value_heads", d["num_attention_heads"]) != d["num_attention_heads"]:
            raise ValueError("num_key_value_heads must equal num_attention_heads")
        keys = [f for f in cls.__dataclass_fields__ if f not in ("extra", "rope_theta")]
        kw = {k: d[k] for k in keys if k in d}
        kw["rope_theta"] = float(rope.get("rope_theta", 10000.0))
        return cls(**kw)

    @classmethod
    def load(cls, path):
        if os.path.isdir(path):
            path = os.path.join(path, "config.json")
        with open(path) as f:
            return cls.from_dict(json.load(f))

    def to_hf_dict(self):
        """config.json content as transformers 5.17 writes it for DeepseekV32Config (all-dense)."""
        n = self.num_hidden_layers
        return {
            "architectures": ["DeepseekV32ForCausalLM"],
            "model_type": "deepseek_v32",
            "attention_bias": False,
            "attention_dropout": 0.0,
            # models/reference/tokenizer.json: 0 = <|endoftext|> (ends every document), 1 = <|pad|>.
            "bos_token_id": None,
            "eos_token_id": 0,
            "pad_token_id": 1,
            "first_k_dense_replace": n,
            "mlp_layer_types": ["dense"] * n,
            "layer_types": ["deepseek_sparse_attention"] * n,
            "head_dim": self.qk_rope_head_dim,
            "qk_head_dim": self.qk_head_dim,
            "hidden_act": "silu",
            "hidden_size": self.hidden_size,
            "intermediate_size": self.intermediate_size,
            "index_head_dim": self.index_head_dim,
            "index_n_heads": self.index_n_heads,
            "index_topk": self.index_topk,
            "initializer_range": 0.02,
            "kv_lora_rank": self.kv_lora_rank,
            "q_lora_rank": self.q_lora_rank,
            "qk_nope_head_dim": self.qk_nope_head_dim,
            "qk_rope_head_dim": self.qk_rope_head_dim,
            "v_head_dim": self.v_head_dim,
            "max_position_embeddings": self.max_position_embeddings,
            "mlp_bias": False,
            # MoE fields are unused (every layer dense) but written so that readers that look at
            # them find consistent values.
            "moe_intermediate_size": self.intermediate_size,
            "n_routed_experts": 0,
            "n_shared_experts": 0,
            "num_experts_per_tok": 1,
            "n_group": 1,
            "topk_group": 1,
            "norm_topk_prob": True,
            "routed_scaling_factor": 1.0,
            "num_attention_heads": self.num_attention_heads,
            "num_key_value_heads": self.num_attention_heads,
            "num_hidden_layers": n,
            "rms_norm_eps": self.rms_norm_eps,
            "rope_parameters": {"rope_type": "default", "rope_theta": self.rope_theta},
            "tie_word_embeddings": self.tie_word_embeddings,
            "use_cache": True,
            "vocab_size": self.vocab_size,
            "dtype": "bfloat16",
            "transformers_version": "5.17.0",
        }


# ----------------------------------------------------------------------------------------------
# Building blocks


class RMSNorm(nn.Module):
    def __init__(self, dim, eps=1e-6):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.eps = eps

    def forward(self, x):
        dtype = x.dtype
        h = x.float()
        h = h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + self.eps)
        return self.weight * h.to(dtype)


def rope_interleaved(x, cos, sin):
    """MLA rope: pairs (x0,x1),(x2,x3)...; output de-interleaved (evens then odds), as transformers
    does (q and k are permuted alike, so dot products are unchanged). cos/sin: [..., r/2]."""
    x1, x2 = x[..., 0::2], x[..., 1::2]
    return torch.cat([x1 * cos - x2 * sin, x2 * cos + x1 * sin], dim=-1)


def rope_half(x, cos, sin):
    """Indexer rope (deepseek_v32): half-split pairs (x_i, x_{i+r/2})."""
    h = x.shape[-1] // 2
    x1, x2 = x[..., :h], x[..., h:]
    return torch.cat([x1 * cos - x2 * sin, x2 * cos + x1 * sin], dim=-1)


class MLP(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.gate_proj = nn.Linear(cfg.hidden_size, cfg.intermediate_size, bias=False)
        self.up_proj = nn.Linear(cfg.hidden_size, cfg.intermediate_size, bias=False)
        self.down_proj = nn.Linear(cfg.intermediate_size, cfg.hidden_size, bias=False)

    def forward(self, x):
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


def _no_autocast(device_type):
    return torch.autocast(device_type=device_type, enabled=False)


class Indexer(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.n_heads = cfg.index_n_heads
        self.head_dim = cfg.index_head_dim
        self.rope_dim = cfg.qk_rope_head_dim
        self.wq_b = nn.Linear(cfg.q_lora_rank, self.n_heads * self.head_dim, bias=False)
        self.wk = nn.Linear(cfg.hidden_size, self.head_dim, bias=False)
        self.k_norm = nn.LayerNorm(self.head_dim, eps=1e-6)
        self.weights_proj = nn.Linear(cfg.hidden_size, self.n_heads, bias=False)

    def project(self, x, q_resid, cos, sin):
        """fp32 indexer queries [B,T,Hi,D], keys [B,T,D] (roped) and head weights [B,T,Hi]
        (already times Hi^-0.5)."""
        B, T, _ = x.shape
        r = self.rope_dim
        with _no_autocast(x.device.type):
            x = x.float()
            q = self.wq_b(q_resid.float()).view(B, T, self.n_heads, self.head_dim)
            k = self.k_norm(self.wk(x))
            c, s = cos[:T, None, :], sin[:T, None, :]
            q = torch.cat([rope_half(q[..., :r], c, s), q[..., r:]], dim=-1)
            k = torch.cat([rope_half(k[..., :r], cos[:T], sin[:T]), k[..., r:]], dim=-1)
            w = self.weights_proj(x) * (self.n_heads ** -0.5)
        return q, k, w

    def scores(self, q, k, w, q0=0):
        """I[b, t, s] for queries q0..q0+Tq-1 against all keys, fp32, -inf where s > t."""
        with _no_autocast(q.device.type):
            Tq, T = q.shape[1], k.shape[1]
            dots = torch.matmul(q, k.transpose(-1, -2).unsqueeze(1)) * (self.head_dim ** -0.5)  # [B,Tq,Hi,T]
            sc = torch.matmul(w.unsqueeze(-2), F.relu(dots)).squeeze(-2)  # [B,Tq,T]
            t = torch.arange(q0, q0 + Tq, device=q.device)[:, None]
            s = torch.arange(T, device=q.device)[None, :]
            return sc.masked_fill(s > t, float("-inf"))

    def scores_at(self, q, k, w, idx):
        """I at the given key indices idx [B,T,K] (entries past the row's end are masked -inf)."""
        with _no_autocast(q.device.type):
            B, T, K = idx.shape
            bi = torch.arange(B, device=idx.device)[:, None, None]
            ks = k[bi, idx.long()]  # [B,T,K,D]
            dots = torch.matmul(q, ks.transpose(-1, -2)) * (self.head_dim ** -0.5)  # [B,T,Hi,K]
            sc = torch.matmul(w.unsqueeze(-2), F.relu(dots)).squeeze(-2)  # [B,T,K]
            t = torch.arange(T, device=idx.device)[None, :, None]
            return sc.masked_fill(idx > t, float("-inf"))

    @torch.no_grad()
    def topk(self, x, q_resid, cos, sin, k, chunk=2048):
        """Top-k key indices [B,T,min(k,T)] (int64), as transformers' topk over the causal scores
        (rows with fewer valid keys than k also list some future positions; masks drop them)."""
        q, kk, w = self.project(x, q_resid, cos, sin)
        T = x.shape[1]
        k = min(k, T)
        out = []
        for q0 in range(0, T, chunk):
            sc = self.scores(q[:, q0:q0 + chunk], kk, w[:, q0:q0 + chunk], q0)
            out.append(sc.topk(k, dim=-1).indices)
        return torch.cat(out, dim=1)


class Attention(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.cfg = cfg
        self.n_heads = cfg.num_attention_heads
        self.q_a_proj = nn.Linear(cfg.hidden_size, cfg.q_lora_rank, bias=False)
        self.q_a_layernorm = RMSNorm(cfg.q_lora_rank, cfg.rms_norm_eps)
        self.q_b_proj = nn.Linear(cfg.q_lora_rank, self.n_heads * cfg.qk_head_dim, bias=False)
        self.kv_a_proj_with_mqa = nn.Linear(cfg.hidden_size, cfg.kv_lora_rank + cfg.qk_rope_head_dim, bias=False)
        self.kv_a_layernorm = RMSNorm(cfg.kv_lora_rank, cfg.rms_norm_eps)
        self.kv_b_proj = nn.Linear(cfg.kv_lora_rank, self.n_heads * (cfg.qk_nope_head_dim + cfg.v_head_dim), bias=False)
        self.o_proj = nn.Linear(self.n_heads * cfg.v_head_dim, cfg.hidden_size, bias=False)
        self.indexer = Indexer(cfg)
        self.scaling = cfg.qk_head_dim ** -0.5

    def qkv(self, x, cos, sin):
        """Per-head q, k [B,H,T,dqk] and v [B,H,T,dv], and the q latent (indexer input)."""
        cfg = self.cfg
        B, T, _ = x.shape
        nope, r = cfg.qk_nope_head_dim, cfg.qk_rope_head_dim
        q_resid = self.q_a_layernorm(self.q_a_proj(x))
        q = self.q_b_proj(q_resid).view(B, T, self.n_heads, cfg.qk_head_dim).transpose(1, 2)
        q_pass, q_rot = q[..., :nope], q[..., nope:]
        ckv = self.kv_a_proj_with_mqa(x)
        kv_pass, k_rot = ckv[..., :cfg.kv_lora_rank], ckv[..., cfg.kv_lora_rank:]
        kv = self.kv_b_proj(self.kv_a_layernorm(kv_pass)).view(B, T, self.n_heads, nope + cfg.v_head_dim).transpose(1, 2)
        k_pass, v = kv[..., :nope], kv[..., nope:]
        c, s = cos[:T].to(q_rot.dtype), sin[:T].to(q_rot.dtype)
        q_rot = rope_interleaved(q_rot, c, s)
        k_rot = rope_interleaved(k_rot.view(B, 1, T, r), c.to(k_rot.dtype), s.to(k_rot.dtype))
        dt = v.dtype
        q = torch.cat([q_pass.to(dt), q_rot.to(dt)], dim=-1)
        k = torch.cat([k_pass, k_rot.to(dt).expand(B, self.n_heads, T, r)], dim=-1)
        return q, k, v, q_resid

    def attend(self, q, k, v, mask=None):
        dqk, dv = q.shape[-1], v.shape[-1]
        if dv < dqk:
            v = F.pad(v, (0, dqk - dv))
        if mask is None:
            o = F.scaled_dot_product_attention(q, k, v, is_causal=True, scale=self.scaling)
        else:
            o = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=self.scaling)
        B, H, T, _ = o.shape
        return self.o_proj(o[..., :dv].transpose(1, 2).reshape(B, T, H * dv))

    def forward_dense(self, x, cos, sin):
        q, k, v, _ = self.qkv(x, cos, sin)
        return self.attend(q, k, v)

    @torch.no_grad()
    def head_avg_probs(self, q, k, q0, q1, idx=None):
        """Head-averaged attention of queries q0..q1-1: over all causal keys [B,Tq,T] (idx None)
        or over the keys idx [B,Tq,K] (renormalised over the valid ones) [B,Tq,K]. fp32."""
        with _no_autocast(q.device.type):
            qc = q[:, :, q0:q1].float()
            logits = torch.matmul(qc, k.float().transpose(-1, -2)) * self.scaling  # [B,H,Tq,T]
            T = k.shape[2]
            t = torch.arange(q0, q1, device=q.device)[:, None]
            if idx is None:
                logits = logits.masked_fill(torch.arange(T, device=q.device)[None, :] > t, float("-inf"))
            else:
                ii = idx.long().unsqueeze(1).expand(-1, logits.shape[1], -1, -1)
                logits = logits.gather(-1, ii).masked_fill((idx > t).unsqueeze(1), float("-inf"))
            return torch.softmax(logits, dim=-1).mean(dim=1)


class DecoderLayer(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.self_attn = Attention(cfg)
        self.mlp = MLP(cfg)
        self.input_layernorm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)
        self.post_attention_layernorm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)

    def forward_dense(self, x, cos, sin):
        """Dense causal layer: a pure function of its inputs (torch.compile friendly)."""
        x = x + self.self_attn.forward_dense(self.input_layernorm(x), cos, sin)
        return x + self.mlp(self.post_attention_layernorm(x))

    def mlp_block(self, x):
        return x + self.mlp(self.post_attention_layernorm(x))


def _kl_rows(p, logq, valid):
    """sum_s p (log p - log q) per row, 0 where not valid."""
    term = torch.where(valid & (p > 0), p * (torch.log(p.clamp_min(1e-30)) - logq), torch.zeros_like(p))
    return term.sum(-1)


def parse_pattern(pattern, n_layers):
    """None / 'all' -> all F; 'FSSF...' string; '1/N' -> layer l is F iff l % N == 0."""
    if pattern is None or pattern == "all":
        return "F" * n_layers
    if pattern.startswith("1/"):
        n = int(pattern[2:])
        return "".join("F" if l % n == 0 else "S" for l in range(n_layers))
    p = pattern.upper()
    if len(p) != n_layers or set(p) - {"F", "S"} or p[0] != "F":
        raise ValueError(f"pattern {pattern!r}: need {n_layers} letters F/S starting with F")
    return p


class DSAModel(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.embed_tokens = nn.Embedding(cfg.vocab_size, cfg.hidden_size)
        self.layers = nn.ModuleList([DecoderLayer(cfg) for _ in range(cfg.num_hidden_layers)])
        self.norm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)


class DeepseekV32ForCausalLM(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.config = cfg
        self.model = DSAModel(cfg)
        self.lm_head = nn.Linear(cfg.hidden_size, cfg.vocab_size, bias=False)
        if cfg.tie_word_embeddings:
            self.lm_head.weight = self.model.embed_tokens.weight
        r = cfg.qk_rope_head_dim
        inv_freq = 1.0 / (cfg.rope_theta ** (torch.arange(0, r, 2, dtype=torch.float) / r))
        self.register_buffer("inv_freq", inv_freq, persistent=False)
        # Compiled variants of the dense layer (set by compile_dense()); same weights.
        self._dense_fns = None

    # -- weights -----------------------------------------------------------------------------

    def init_weights(self, std=0.02, seed=0):
        """GPT-style init: N(0, std), residual output projections scaled by 1/sqrt(2L)."""
        g = torch.Generator().manual_seed(seed)
        L = self.config.num_hidden_layers
        for name, p in self.named_parameters():
            with torch.no_grad():
                if p.dim() == 1:
                    p.copy_(torch.zeros_like(p) if name.endswith("k_norm.bias") else torch.ones_like(p))
                else:
                    s = std / math.sqrt(2 * L) if name.endswith(("o_proj.weight", "down_proj.weight")) else std
                    p.copy_(torch.randn(p.shape, generator=g) * s)

    def hf_state_dict(self, dtype=torch.bfloat16):
        sd = {k: v.detach().to(dtype).contiguous() for k, v in self.state_dict().items()}
        if self.config.tie_word_embeddings:
            sd.pop("lm_head.weight", None)
        return sd

    def load_hf_state_dict(self, sd, strict=True):
        sd = dict(sd)
        if self.config.tie_word_embeddings:
            sd.pop("lm_head.weight", None)
            sd["lm_head.weight"] = sd["model.embed_tokens.weight"]
        missing, unexpected = self.load_state_dict({k: v.float() for k, v in sd.items()}, strict=False)
        if strict and (missing or unexpected):
            raise KeyError(f"missing {missing}, unexpected {unexpected}")

    # -- forward -----------------------------------------------------------------------------

    def rope(self, T, device):
        pos = torch.arange(T, device=device, dtype=torch.float32)
        freqs = pos[:, None] * self.inv_freq.to(device)[None, :]
        return freqs.cos(), freqs.sin()

    def compile_dense(self, **kw):
        """torch.compile the dense layer function once (the layers share the code; the weights
        are inputs)."""
        fn = torch.compile(lambda layer, x, cos, sin: layer.forward_dense(x, cos, sin), **kw)
        self._dense_fns = fn

    def forward(self, input_ids, attn="dense", pattern=None, index_topk=None, indexer_loss=None,
                indexer_backward=False, return_topk=False, return_hidden=False, kl_chunk=1024):
        """Returns (logits or final hidden states [B,T,*], aux dict).

        aux: "topk" (list per layer of [B,T,k] indices, F layers' own, S layers' reused) when
        return_topk; "indexer_kl" ({layer: scalar tensor}) when indexer_loss is set.
        """
        cfg = self.config
        B, T = input_ids.shape
        cos, sin = self.rope(T, input_ids.device)
        x = self.model.embed_tokens(input_ids)
        aux = {}
        L = cfg.num_hidden_layers
        pat = parse_pattern(pattern, L)
        k_sel = index_topk or cfg.index_topk
        if indexer_loss is not None:
            aux["indexer_kl"] = {}
        if return_topk:
            aux["topk"] = []
        if attn == "dense" and indexer_loss is None and not return_topk:
            for layer in self.model.layers:
                if self._dense_fns is not None:
                    x = self._dense_fns(layer, x, cos, sin)
                else:
                    x = layer.forward_dense(x, cos, sin)
        else:
            # Groups: an F layer and the S layers after it share its top-k (and its KL target).
            idx = mask = None
            pending = None  # (F layer's indexer tensors, [targets]) for the multi-layer KL
            for l, layer in enumerate(self.model.layers):
                at = layer.self_attn
                h = layer.input_layernorm(x)
                q, k, v, q_resid = at.qkv(h, cos, sin)
                if pat[l] == "F":
                    if pending is not None:
                        self._finish_kl(pending, aux, indexer_backward)
                        pending = None
                    if attn == "dsa" or indexer_loss == "sparse" or return_topk:
                        idx = at.indexer.topk(h, q_resid, cos, sin, k_sel)
                        mask = None
                    if indexer_loss is not None:
                        pending = dict(layer=l, indexer=at.indexer, h=h.detach(), q_resid=q_resid.detach(),
                                       cos=cos, sin=sin, idx=idx if indexer_loss == "sparse" else None,
                                       targets=[], chunk=kl_chunk)
                if pending is not None:
                    pending["targets"].append((at, q.detach(), k.detach()))
                if attn == "dsa":
                    if mask is None:  # one mask per F layer, reused by the S layers after it
                        sel = torch.zeros(B, T, T, dtype=torch.bool, device=x.device).scatter_(-1, idx, True)
                        causal = torch.ones(T, T, dtype=torch.bool, device=x.device).tril_()
                        mask = (sel & causal).unsqueeze(1)
                    o = at.attend(q, k, v, mask)
                else:
                    o = at.attend(q, k, v)
                if return_topk:
                    aux["topk"].append(idx)
                x = layer.mlp_block(x + o)
            if pending is not None:
                self._finish_kl(pending, aux, indexer_backward)
        x = self.model.norm(x)
        if return_hidden:
            return x, aux
        return self.lm_head(x), aux

    def _finish_kl(self, pending, aux, backward):
        """Mean over queries of KL(mean_j p^(j) || softmax(I)) for one F layer; the KL against
        the mean target has the gradient of the multi-layer loss (1/|S| sum_j KL(p^(j)||q))."""
        ind = pending["indexer"]
        idx = pending["idx"]
        with torch.enable_grad():
            qi, ki, wi = ind.project(pending["h"], pending["q_resid"], pending["cos"], pending["sin"])
            B, T = qi.shape[:2]
            total = 0.0
            chunk = pending["chunk"] if idx is None else T
            for q0 in range(0, T, chunk):
                q1 = min(T, q0 + chunk)
                ic = None if idx is None else idx[:, q0:q1]
                p = sum(at.head_avg_probs(q, k, q0, q1, ic) for at, q, k in pending["targets"])
                p = p / len(pending["targets"])
                if ic is None:
                    sc = ind.scores(qi[:, q0:q1], ki, wi[:, q0:q1], q0)
                else:
                    sc = ind.scores_at(qi, ki, wi, idx)
                logq = torch.log_softmax(sc, dim=-1)
                valid = torch.isfinite(sc)
                total = total + _kl_rows(p, logq, valid).sum()
            loss = total / (B * T)
            if backward:
                loss.backward()
                loss = loss.detach()
        aux["indexer_kl"][pending["layer"]] = loss


def save_hf(model, out_dir, dtype=torch.bfloat16, max_shard_bytes=None, extra_config=None):
    """config.json + model.safetensors (or shards with model.safetensors.index.json)."""
    from safetensors.torch import save_file
    os.makedirs(out_dir, exist_ok=True)
    cfgd = model.config.to_hf_dict()
    if extra_config:
        cfgd.update(extra_config)
    with open(os.path.join(out_dir, "config.json"), "w") as f:
        json.dump(cfgd, f, indent=2, sort_keys=True)
    sd = model.hf_state_dict(dtype)
    names = sorted(sd)
    total = sum(sd[n].numel() * sd[n].element_size() for n in names)
    if not max_shard_bytes or total <= max_shard_bytes:
        save_file(sd, os.path.join(out_dir, "model.safetensors"), metadata={"format": "pt"})
        return [os.path.join(out_dir, "model.safetensors")]
    shards, cur, size = [], [], 0
    for n in names:
        b = sd[n].numel() * sd[n].element_size()
        if cur and size + b > max_shard_bytes:
            shards.append(cur)
            cur, size = [], 0
        cur.append(n)
        size += b
    shards.append(cur)
    weight_map, files = {}, []
    for i, part in enumerate(shards):
        fname = f"model-{i + 1:05d}-of-{len(shards):05d}.safetensors"
        save_file({n: sd[n] for n in part}, os.path.join(out_dir, fname), metadata={"format": "pt"})
        files.append(os.path.join(out_dir, fname))
        for n in part:
            weight_map[n] = fname
    with open(os.path.join(out_dir, "model.safetensors.index.json"), "w") as f:
        json.dump({"metadata": {"total_size": total}, "weight_map": weight_map}, f, indent=2)
    return files


def load_hf(model_dir, device="cpu"):
    """Loads config.json + model.safetensors (or shards); weights in fp32."""
    from safetensors.torch import load_file
    cfg = DSAConfig.load(model_dir)
    model = DeepseekV32ForCausalLM(cfg)
    index = os.path.join(model_dir, "model.safetensors.index.json")
    if os.path.exists(index):
        with open(index) as f:
            files = sorted(set(json.load(f)["weight_map"].values()))
    else:
        files = ["model.safetensors"]
    sd = {}
    for fn in files:
        sd.update(load_file(os.path.join(model_dir, fn)))
    model.load_hf_state_dict(sd)
    return model.to(device)


def count_params(model):
    seen, n = set(), 0
    for p in model.parameters():
        if id(p) not in seen:
            seen.add(id(p))
            n += p.numel()
    return n
