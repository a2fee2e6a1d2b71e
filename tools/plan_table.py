#!/usr/bin/env python3
"""Markdown table of `indexcache plan` for the shipped real-model configs (README, docs/scale.md).

Usage: tools/plan_table.py [--binary bazel-bin/tools/indexcache] [--mode eval] [--seq-len 131072]
       [--pattern P] [--loss dense|sparse] [--sequences 16] [--gpus 8,16,32,64]
Every number comes from the command's --json output; nothing is computed here but formatting.
"""
import argparse
import json
import subprocess


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--binary", default="bazel-bin/tools/indexcache")
    ap.add_argument("--mode", default="eval")
    ap.add_argument("--seq-len", default="131072")
    ap.add_argument("--pattern")
    ap.add_argument("--loss", help="train: dense or sparse")
    ap.add_argument("--sequences", default="16", help="sequences per step (fixed global batch)")
    ap.add_argument("--sequences-per-gpu", type=int, help="instead: sequences = this x GPUs (weak scaling)")
    ap.add_argument("--gpus", default="8,16,32,64")
    ap.add_argument("--models", default="deepseek_v32,glm5")
    args = ap.parse_args()
    print("| model | GPUs | sequences | P x D | micro-batches | stage layers | largest GPU GB | pipeline eff. | step s | step s (fp8 GEMM) | tokens/s |")
    print("|---|---:|---:|---|---:|---|---:|---:|---:|---:|---:|")
    for model in args.models.split(","):
        for gpus in args.gpus.split(","):
            cmd = [args.binary, "plan", "--model", "configs/models/" + model, "--gpus", gpus, "--seq-len", args.seq_len,
                   "--mode", args.mode, "--json", "--sequences",
                   str(args.sequences_per_gpu * int(gpus)) if args.sequences_per_gpu else args.sequences]
            if args.pattern:
                cmd += ["--pattern", args.pattern]
            if args.loss:
                cmd += ["--loss", args.loss]
            run = subprocess.run(cmd, capture_output=True, text=True)
            if run.returncode != 0:
                print(f"| {model} | {gpus} | {cmd[cmd.index('--sequences') + 1]} | {run.stderr.strip().split(': error: ')[-1]} ||||||||")
                continue
            j = json.loads(run.stdout)
            layers = " ".join(f"{s['layers'][0]}-{s['layers'][1]}" for s in j["stages"])
            tps = f"{j['tokens_per_s']:,.0f}" if j["tokens_per_s"] else "-"
            print(f"| {model} | {gpus} | {j['sequences']} | {j['pipeline_stages']} x {j['data_parallel']} | {j['micro_batches']} | {layers} | "
                  f"{j['largest_gpu_bytes'] / 1e9:.1f} | {100 * j['pipeline_efficiency']:.0f} % | {j['step_time_s']:.1f} | "
                  f"{j['step_time_fp8_gemm_s']:.1f} | {tps} |")


if __name__ == "__main__":
    main()
