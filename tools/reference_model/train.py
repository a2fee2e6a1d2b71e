#!/usr/bin/env python3
"""Trains the reference DSA model (deepseek_v32 layout) on one GPU, in stages that each fit one
10-minute run of the GPU machine:

  --stage pretrain  dense causal attention (flash through SDPA), real text with synthetic
                    retrieval tasks woven in (retrieval.py), AdamW, warm-up then cosine decay
                    over a WALL-CLOCK budget (--time-budget seconds of training, so the run ends
                    on time with the schedule complete); optionally the first --short-frac of the
                    time at --short-seq tokens per sequence (same tokens per step).
  --stage warmup    the indexers only (model frozen), dense KL to the head-averaged attention
                    over all causal keys (DeepSeek's warm-up; fallback for `indexcache train`).
  --stage sparse    top-k attention (k = index_topk) in every layer; the whole model on the LM
                    loss plus the indexers on the detached sparse KL (DeepSeek's sparse stage).

Each stage writes --out/config.json, model safetensors in bf16 (shards under 15 MiB each, so the
files come back from the GPU machine), train_log.json (every logged step, the summary and the
final evaluation) and copies tokenizer.json. --init DIR continues from such a directory.

  python3 tools/reference_model/train.py --stage pretrain --out $OUT/pretrain
  python3 tools/reference_model/train.py --stage sparse --init models/reference --out $OUT/sparse
"""

import argparse
import json
import math
import os
import shutil
import sys
import time

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import evaluate as E  # noqa: E402
import model as M  # noqa: E402
import retrieval as R  # noqa: E402

# The reference architecture (see models/reference/README.md).
REFERENCE = dict(vocab_size=8192, hidden_size=256, intermediate_size=368, num_hidden_layers=16,
                 num_attention_heads=8, q_lora_rank=128, kv_lora_rank=128, qk_nope_head_dim=32,
                 qk_rope_head_dim=32, v_head_dim=32, index_n_heads=8, index_head_dim=64, index_topk=256,
                 rms_norm_eps=1e-6, rope_theta=10000.0, max_position_embeddings=8192, tie_word_embeddings=True)

TINY = dict(vocab_size=8192, hidden_size=64, intermediate_size=96, num_hidden_layers=4, num_attention_heads=4,
            q_lora_rank=32, kv_lora_rank=32, qk_nope_head_dim=16, qk_rope_head_dim=16, v_head_dim=16,
            index_n_heads=4, index_head_dim=32, index_topk=32, max_position_embeddings=8192,
            tie_word_embeddings=True)


def log_print(*a):
    print(*a, flush=True)


def lr_at(step, progress, args):
    warm = min(1.0, (step + 1) / max(1, args.warmup_steps))
    cos = 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))
    return args.lr * warm * (args.min_lr_frac + (1 - args.min_lr_frac) * cos)


def save(model, out, args, log, summary):
    files = M.save_hf(model, out, dtype=torch.bfloat16, max_shard_bytes=int(15 * 2 ** 20))
    tok = args.tokenizer
    if tok and os.path.exists(tok):
        shutil.copy(tok, os.path.join(out, "tokenizer.json"))
    with open(os.path.join(out, "train_log.json"), "w") as f:
        json.dump({"summary": summary, "steps": log}, f, indent=1)
    log_print(f"saved {out}: {[os.path.basename(x) for x in files]}")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--stage", choices=["pretrain", "warmup", "sparse"], required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--init", help="model directory to continue from (warmup/sparse need one)")
    ap.add_argument("--train", default=".corpus/gpu/train_tokens.u16.xz")
    ap.add_argument("--heldout", default=".corpus/gpu/heldout_tokens.u16.xz")
    ap.add_argument("--tokenizer", default="models/reference/tokenizer.json")
    ap.add_argument("--tiny", action="store_true", help="a tiny config, for tests on the CPU")
    ap.add_argument("--seq", type=int, default=8192)
    ap.add_argument("--short-seq", type=int, default=2048)
    ap.add_argument("--short-frac", type=float, default=0.0, help="fraction of the time budget at --short-seq")
    ap.add_argument("--tokens-per-step", type=int, default=16 * 8192)
    ap.add_argument("--micro-tokens", type=int, default=0, help="tokens per micro-batch (0: the whole step)")
    ap.add_argument("--time-budget", type=float, default=480.0, help="seconds of training (schedule runs on this clock)")
    ap.add_argument("--max-steps", type=int, default=0, help="stop after this many steps (0: time only)")
    ap.add_argument("--max-wall", type=float, default=0.0,
                    help="if > 0: the training budget shrinks so that training ends this many seconds after "
                         "the start of the process minus --eval-reserve (for runs with a hard limit)")
    ap.add_argument("--eval-reserve", type=float, default=60.0)
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--min-lr-frac", type=float, default=0.1)
    ap.add_argument("--warmup-steps", type=int, default=150)
    ap.add_argument("--weight-decay", type=float, default=0.1)
    ap.add_argument("--clip", type=float, default=1.0)
    ap.add_argument("--synth-frac", type=float, default=0.07, help="mean fraction of synthetic retrieval tokens")
    ap.add_argument("--pattern", default=None, help="IndexCache pattern for the sparse stage (default all-F)")
    ap.add_argument("--compile", type=int, default=1, help="torch.compile the dense layers (pretrain)")
    ap.add_argument("--log-every", type=int, default=10)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--eval-windows", type=int, default=16)
    ap.add_argument("--eval-per-cell", type=int, default=4)
    ap.add_argument("--eval-patterns", default="all")
    ap.add_argument("--no-eval", action="store_true")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = ap.parse_args()

    t_start = time.time()
    dev = torch.device(args.device)
    torch.manual_seed(args.seed)
    if dev.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    amp = torch.autocast("cuda", dtype=torch.bfloat16) if dev.type == "cuda" else torch.autocast("cpu", enabled=False)

    # Model.
    if args.init:
        model = M.load_hf(args.init)
        cfg = model.config
    else:
        if args.stage != "pretrain":
            sys.exit("--init is required for --stage warmup / sparse")
        cfg = M.DSAConfig(**(TINY if args.tiny else REFERENCE))
        model = M.DeepseekV32ForCausalLM(cfg)
        model.init_weights(seed=args.seed)
    model.to(dev).train()
    n_params = M.count_params(model)
    log_print(f"torch {torch.__version__} device {dev} ({torch.cuda.get_device_name() if dev.type == 'cuda' else 'cpu'}); "
              f"params {n_params:,} ({n_params * 2 / 1e6:.1f} MB bf16); stage {args.stage}")

    if args.stage == "warmup":
        for n, p in model.named_parameters():
            p.requires_grad_(".indexer." in n)
    params = [p for p in model.parameters() if p.requires_grad]
    decay = [p for p in params if p.dim() >= 2]
    no_decay = [p for p in params if p.dim() < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": args.weight_decay},
                             {"params": no_decay, "weight_decay": 0.0}],
                            lr=args.lr, betas=(0.9, 0.95), eps=1e-8, fused=dev.type == "cuda")

    if args.stage == "pretrain" and args.compile:
        torch._dynamo.config.cache_size_limit = 64
        model.compile_dense(dynamic=False)

    # Data.
    t0 = time.time()
    train = R.load_tokens(args.train)
    heldout = R.load_tokens(args.heldout) if os.path.exists(args.heldout) else None
    tasks = R.Tasks(args.tokenizer) if (args.tokenizer and os.path.exists(args.tokenizer)) else None
    if tasks is None and args.synth_frac > 0:
        log_print(f"warning: no tokenizer at {args.tokenizer}: no synthetic retrieval data")
    synth = args.synth_frac if args.stage != "warmup" else 0.0
    batches = R.Batches(train, tasks, synth, args.seed + 1)
    log_print(f"data: {len(train):,} train tokens, {len(heldout) if heldout is not None else 0:,} held-out "
              f"({time.time() - t0:.1f}s)")
    if int(train.max()) >= cfg.vocab_size:
        sys.exit(f"{args.train}: token id {int(train.max())} >= vocab {cfg.vocab_size}")

    log, summary = [], {"stage": args.stage, "args": vars(args), "config": cfg.to_hf_dict(), "params": n_params}
    step, tokens_seen = 0, 0
    t_train = None
    losses = []
    status = "running"
    try:
        while True:
            now = time.time()
            progress = 0.0 if t_train is None else (now - t_train) / args.time_budget
            if progress >= 1.0 or (args.max_steps and step >= args.max_steps):
                break
            seq = args.short_seq if (args.stage == "pretrain" and progress < args.short_frac) else args.seq
            B = max(1, args.tokens_per_step // seq)
            micro = max(1, (args.micro_tokens or args.tokens_per_step) // seq)
            lr = lr_at(step, progress, args)
            for g in opt.param_groups:
                g["lr"] = lr
            batch = torch.from_numpy(batches.next(B, seq))
            if dev.type == "cuda":
                batch = batch.pin_memory()
            opt.zero_grad(set_to_none=True)
            tot_loss = torch.zeros((), device=dev)
            kl_sum, kl_n = 0.0, 0
            for i in range(0, B, micro):
                ids = batch[i:i + micro].to(dev, non_blocking=True)
                inp, tgt = ids[:, :-1], ids[:, 1:]
                frac = inp.shape[0] / B
                with amp:
                    if args.stage == "pretrain":
                        logits, _ = model(inp, attn="dense")
                        loss = F.cross_entropy(logits.float().reshape(-1, cfg.vocab_size), tgt.reshape(-1))
                    elif args.stage == "warmup":
                        with torch.no_grad():
                            _, aux = model(inp, attn="dense", indexer_loss="dense", indexer_backward=True,
                                           return_hidden=True)
                        loss = None
                        tot_loss += sum(v for v in aux["indexer_kl"].values()) / len(aux["indexer_kl"]) * frac
                    else:
                        logits, aux = model(inp, attn="dsa", pattern=args.pattern, indexer_loss="sparse",
                                            indexer_backward=True)
                        loss = F.cross_entropy(logits.float().reshape(-1, cfg.vocab_size), tgt.reshape(-1))
                if loss is not None:
                    (loss * frac).backward()
                    tot_loss += loss.detach() * frac
                if args.stage != "pretrain":
                    kl_sum += sum(v.item() for v in aux["indexer_kl"].values()) * frac
                    kl_n = len(aux["indexer_kl"])
            if args.stage != "pretrain" and micro < B:
                n_micro = -(-B // micro)
                for n, p in model.named_parameters():  # the KL was back-propagated per micro-batch
                    if ".indexer." in n and p.grad is not None:
                        p.grad.div_(n_micro)
            gn = torch.nn.utils.clip_grad_norm_(params, args.clip) if args.clip > 0 else torch.zeros(())
            opt.step()
            if t_train is None:
                t_train = time.time()  # the clock starts after the first (compiling) step
                if args.max_wall > 0:
                    args.time_budget = min(args.time_budget, args.max_wall - args.eval_reserve - (t_train - t_start))
                log_print(f"first step done at {t_train - t_start:.1f}s after start; training budget {args.time_budget:.0f}s")
            step += 1
            tokens_seen += B * seq
            if step % args.log_every == 0 or step == 1:
                l = tot_loss.item()
                el = time.time() - (t_train or time.time())
                rec = {"step": step, "tokens": tokens_seen, "seq": seq, "lr": lr, "loss": l,
                       "grad_norm": float(gn), "elapsed": round(el, 2),
                       "tok_per_s": round(tokens_seen / el) if el > 0 else None}
                if args.stage != "pretrain":
                    rec["indexer_kl"] = kl_sum / max(kl_n, 1)
                losses.append(l)
                log.append(rec)
                log_print(" ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}" for k, v in rec.items()))
                if not math.isfinite(l):
                    raise FloatingPointError(f"loss is not finite at step {step}")
        status = "completed"
    except KeyboardInterrupt:
        status = "interrupted"
    except Exception as e:  # save what we have, then re-raise
        status = f"failed: {e!r}"
        log_print(status)
        raise
    finally:
        el = time.time() - (t_train or time.time())
        summary.update({"status": status, "steps": step, "tokens_seen": tokens_seen,
                        "synthetic_token_frac": batches.synth / max(1, batches.total),
                        "train_seconds": round(el, 1), "tok_per_s": round(tokens_seen / el) if el > 0 else None,
                        "final_train_loss_mean_last_5_logs": float(np.mean(losses[-5:])) if losses else None,
                        "peak_gpu_mem_gb": (torch.cuda.max_memory_allocated() / 2 ** 30) if dev.type == "cuda" else None})
        if step > 0:
            model._dense_fns = None
            save(model, args.out, args, log, summary)
    log_print("summary " + json.dumps({k: v for k, v in summary.items() if k not in ("args", "config")}))

    if not args.no_eval and heldout is not None:
        torch.cuda.empty_cache() if dev.type == "cuda" else None
        res = E.evaluate(model, heldout, tasks, seq=args.seq, max_windows=args.eval_windows,
                         patterns=args.eval_patterns.split(","),
                         lengths=[L for L in (2048, 4096, 8192) if L <= args.seq],
                         per_cell=args.eval_per_cell, log=log_print)
        summary["eval"] = res
        with open(os.path.join(args.out, "train_log.json"), "w") as f:
            json.dump({"summary": summary, "steps": log}, f, indent=1)
    log_print(f"done in {time.time() - t_start:.0f}s")



if __name__ == "__main__":
    main()
