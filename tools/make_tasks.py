#!/usr/bin/env python3
"""Builds retrieval tasks for `indexcache eval --tasks` from any tokenizer and any haystack text.

    pip install tokenizers        # Hugging Face tokenizers from PyPI (tools/setup.sh installs it)
    python3 tools/make_tasks.py --tokenizer MODEL/tokenizer.json --haystack book.txt \
        --lengths 4096,16384,65536 --depths 0,0.25,0.5,0.75,1 --per-cell 4 --seed 0 --out tasks.jsonl

Three kinds, each prompt exactly --lengths tokens long (filler cut from the haystack, repeated
when it is too short), the needle placed at the given depth of the filler (0 = start, 1 = end):

  passkey  "The pass key is 48213. Remember it." hidden in the filler; the prompt ends with
           "What is the pass key? The pass key is" and the answer is " 48213".
  niah     multi-key needle-in-a-haystack with distractors (RULER-style): --keys needles
           "One of the special magic numbers for <word> is: <number>." spread over the filler, the
           queried one at the given depth; the answer is the queried key's number.
  kv       key-value recall (MQAR-style): --pairs "<key>: <value>" lines, the queried pair at the
           given depth; the prompt ends with "<key>:" and the answer is " <value>".

One JSON object per line: prompt and answer (token ids), kind, context (the prompt length),
depth, seed, and the answer's text. The same arguments give the same file.
"""
import argparse
import json
import random
import sys

WORDS = ("amber birch cobalt delta ember falcon garnet harbor indigo juniper kestrel lantern meadow "
         "nectar onyx pepper quartz raven saffron tundra umber velvet willow xenon yarrow zephyr").split()


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--tokenizer", required=True, help="a Hugging Face tokenizer.json")
    p.add_argument("--haystack", required=True, help="a UTF-8 text file used as filler")
    p.add_argument("--out", required=True, help="output .jsonl")
    p.add_argument("--lengths", default="1024,4096", help="comma-separated prompt lengths in tokens")
    p.add_argument("--depths", default="0,0.25,0.5,0.75,1", help="comma-separated needle depths in [0, 1]")
    p.add_argument("--kinds", default="passkey,niah,kv", help="comma-separated: passkey, niah, kv")
    p.add_argument("--per-cell", type=int, default=2, help="tasks per kind x length x depth")
    p.add_argument("--keys", type=int, default=4, help="needles per niah task (one queried, the rest distractors)")
    p.add_argument("--pairs", type=int, default=16, help="key-value pairs per kv task")
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args(argv)
    a.lengths = [int(x) for x in a.lengths.split(",")]
    a.depths = [float(x) for x in a.depths.split(",")]
    a.kinds = a.kinds.split(",")
    for k in a.kinds:
        if k not in ("passkey", "niah", "kv"):
            p.error(f"--kinds: unknown kind '{k}'")
    if any(not 0.0 <= d <= 1.0 for d in a.depths):
        p.error("--depths must lie in [0, 1]")
    if any(n < 16 or n > (1 << 22) for n in a.lengths):
        p.error("--lengths must lie in [16, 4194304]")
    if not 1 <= a.per_cell <= 10000 or not 1 <= a.keys <= 64 or not 1 <= a.pairs <= 4096:
        p.error("--per-cell in [1, 10000], --keys in [1, 64], --pairs in [1, 4096]")
    return a


class Builder:
    def __init__(self, tokenizer, haystack_text):
        self.tok = tokenizer
        self.filler = self.encode(haystack_text)
        if not self.filler:
            raise SystemExit("make_tasks.py: error: the haystack text encodes to no tokens")

    def encode(self, text):
        return self.tok.encode(text, add_special_tokens=False).ids

    def filler_tokens(self, n, rng):
        """n filler tokens from a random start, wrapping around the haystack."""
        start = rng.randrange(len(self.filler))
        return [self.filler[(start + i) % len(self.filler)] for i in range(n)]

    def assemble(self, length, inserts, question, rng):
        """Filler of the right size with (depth, ids) inserts at their depths, then the question.

        Inserts are placed at sentence-free token offsets: depth * filler length."""
        fixed = sum(len(ids) for _, ids in inserts) + len(question)
        n = length - fixed
        if n < 1:
            return None  # the needles alone exceed the length
        filler = self.filler_tokens(n, rng)
        out, pos = [], 0
        for depth, ids in sorted(inserts, key=lambda x: x[0]):
            cut = int(round(depth * n))
            out += filler[pos:cut] + ids
            pos = cut
        return out + filler[pos:] + question

    def passkey(self, length, depth, rng):
        key = str(rng.randrange(10000, 100000))
        needle = self.encode(f" The pass key is {key}. Remember it. {key} is the pass key. ")
        question = self.encode(" What is the pass key? The pass key is")
        return self.assemble(length, [(depth, needle)], question, rng), f" {key}"

    def niah(self, length, depth, rng, keys):
        names = rng.sample(WORDS, min(keys, len(WORDS)))
        values = [str(rng.randrange(1000000, 10000000)) for _ in names]
        inserts = []
        for i, (name, value) in enumerate(zip(names, values)):
            # The queried needle (i == 0) at `depth`, the distractors spread evenly elsewhere.
            d = depth if i == 0 else (depth + i / len(names)) % 1.0
            inserts.append((d, self.encode(f" One of the special magic numbers for {name} is: {value}. ")))
        question = self.encode(f" What is the special magic number for {names[0]} mentioned in the text? "
                               f"The special magic number for {names[0]} is:")
        return self.assemble(length, inserts, question, rng), f" {values[0]}"

    def kv(self, length, depth, rng, pairs):
        keys = [f"{rng.choice(WORDS)}-{rng.randrange(100, 1000)}" for _ in range(pairs)]
        keys = list(dict.fromkeys(keys))  # distinct keys
        values = [str(rng.randrange(100, 1000)) for _ in keys]
        queried = min(int(round(depth * (len(keys) - 1))), len(keys) - 1)
        block = [self.encode(f" {k}: {v}.") for k, v in zip(keys, values)]
        # The pairs sit together as one block at `depth` of the filler; the queried pair's place in
        # the block follows the depth too.
        ids = [t for b in block for t in b]
        question = self.encode(f" {keys[queried]}:")
        return self.assemble(length, [(depth, ids)], question, rng), f" {values[queried]}"


def main(argv):
    a = parse_args(argv)
    try:
        from tokenizers import Tokenizer
    except ImportError:
        raise SystemExit("make_tasks.py: error: needs Hugging Face tokenizers: pip install tokenizers")
    tok = Tokenizer.from_file(a.tokenizer)
    with open(a.haystack, encoding="utf-8") as f:
        builder = Builder(tok, f.read())
    rng = random.Random(a.seed)
    written = skipped = 0
    with open(a.out, "w") as out:
        for kind in a.kinds:
            for length in a.lengths:
                for depth in a.depths:
                    for _ in range(a.per_cell):
                        if kind == "passkey":
                            prompt, answer = builder.passkey(length, depth, rng)
                        elif kind == "niah":
                            prompt, answer = builder.niah(length, depth, rng, a.keys)
                        else:
                            prompt, answer = builder.kv(length, depth, rng, a.pairs)
                        if prompt is None:
                            skipped += 1
                            continue
                        out.write(json.dumps({"prompt": prompt, "answer": builder.encode(answer), "kind": kind,
                                              "context": length, "depth": depth, "seed": a.seed,
                                              "answer_text": answer}) + "\n")
                        written += 1
    print(f"wrote {written} tasks to {a.out}" + (f" ({skipped} skipped: needles longer than the length)" if skipped else ""))


if __name__ == "__main__":
    main(sys.argv[1:])
