"""Token data and synthetic retrieval tasks for the reference model (training and evaluation).

Token files: `*.u16.xz` / `*.u16` (raw little-endian uint16, documents separated by the
separator token, 0 unless told otherwise) or `.npy`.

Synthetic tasks are written in the real tokenizer's tokens and woven into windows of real text:
  passkey   "The pass key is 48213. Remember it. 48213 is the pass key." ... later
            "What is the pass key? The pass key is 48213."
  named     "The secret number for <word> is 7391." ... "What is the secret number for <word>?
            The secret number for <word> is 7391."  (several per window: multi-needle)
  kv        a block of "<word>-<word>: <number>" records, later "Look up <word>-<word>: <number>"
  copy      a span of 32-256 tokens of the window repeated later (induction / copying)
Every text piece is encoded separately (prompt and answer too), so the evaluation's prompts
tokenize exactly as in training.
"""

import lzma
import os

import numpy as np


def load_tokens(path):
    if path.endswith(".npy"):
        return np.load(path).astype(np.uint16).reshape(-1)
    if path.endswith(".xz"):
        with lzma.open(path) as f:
            data = f.read()
    else:
        with open(path, "rb") as f:
            data = f.read()
    return np.frombuffer(data, dtype="<u2").copy()


def split_docs(tokens, sep=0):
    """(start, end) of each document (separator tokens excluded)."""
    cuts = np.flatnonzero(tokens == sep)
    starts = np.concatenate([[0], cuts + 1])
    ends = np.concatenate([cuts, [len(tokens)]])
    keep = ends > starts
    return list(zip(starts[keep].tolist(), ends[keep].tolist()))


class Tasks:
    def __init__(self, tokenizer_path):
        from tokenizers import Tokenizer
        self.tok = Tokenizer.from_file(tokenizer_path)
        self._cache = {}
        # Single-token lower-case words (as they appear after a space) for names and keys.
        words = set()
        for piece in self.tok.get_vocab():
            text = self.tok.decode([self.tok.token_to_id(piece)])
            w = text.strip()
            if text.startswith(" ") and w.isascii() and w.isalpha() and w.islower() and 3 <= len(w) <= 9:
                words.add(w)
        self.words = sorted(words)
        if len(self.words) < 50:
            raise ValueError(f"{tokenizer_path}: only {len(self.words)} word tokens found")

    def enc(self, text):
        ids = self._cache.get(text)
        if ids is None:
            ids = self.tok.encode(text, add_special_tokens=False).ids
            if len(self._cache) < 20000:
                self._cache[text] = ids
        return ids

    def decode(self, ids):
        return self.tok.decode(list(ids))

    @staticmethod
    def number(rng, digits=None):
        d = digits or int(rng.integers(3, 8))
        return str(int(rng.integers(10 ** (d - 1), 10 ** d)))

    # Each task returns (first piece, second piece, answer start in the second piece or None).
    def passkey(self, rng, digits=None):
        n = self.number(rng, digits)
        needle = self.enc(f"\nThe pass key is {n}. Remember it. {n} is the pass key.\n")
        prompt, answer, tail = self.passkey_question(n)
        return needle, prompt + answer + tail, len(prompt)

    def passkey_question(self, n):
        """(question, answer = the number, tail); encoded separately so a prompt that ends with the
        question tokenizes as in training."""
        return self.enc("\nWhat is the pass key? The pass key is"), self.enc(f" {n}"), self.enc(".\n")

    def named(self, rng):
        w = self.words[int(rng.integers(len(self.words)))]
        n = self.number(rng)
        needle = self.enc(f"\nThe secret number for {w} is {n}.\n")
        prompt = self.enc(f"\nWhat is the secret number for {w}? The secret number for {w} is")
        return needle, prompt + self.enc(f" {n}") + self.enc(".\n"), len(prompt)

    def kv(self, rng):
        m = int(rng.integers(4, 17))
        keys = set()
        while len(keys) < m:
            a, b = rng.integers(len(self.words), size=2)
            keys.add(f"{self.words[a]}-{self.words[b]}")
        keys = sorted(keys)
        vals = [self.number(rng, int(rng.integers(2, 6))) for _ in keys]
        block = self.enc("\nRecords:\n") + [t for k, v in zip(keys, vals) for t in self.enc(f"{k}: {v}\n")]
        q = []
        for i in rng.choice(m, size=int(rng.integers(1, min(m, 4) + 1)), replace=False):
            q += self.enc(f"\nLook up {keys[i]}:") + self.enc(f" {vals[i]}") + self.enc("\n")
        return block, q, None

    def weave(self, real, L, rng, synth_frac):
        """A window of L tokens: real text (at least L tokens given) with synthetic tasks inserted.
        Returns (tokens int64 [L], number of synthetic tokens)."""
        budget = rng.uniform(0.0, 2.0 * synth_frac) * L
        items = []  # (position in the base text, tokens); positions refer to the base
        used = 0
        base_len = L
        have_passkey = False
        while True:
            kind = int(rng.integers(4))
            if kind == 0 and have_passkey:  # one "the pass key" per window, else it is ambiguous
                kind = 1
            if kind == 3:
                m = int(rng.integers(32, 257))
                item, size = ("copy", m), m
            else:
                a, b, _ = (self.passkey(rng) if kind == 0 else self.named(rng) if kind == 1 else self.kv(rng))
                item, size = ("pair", a, b), len(a) + len(b)
            if used + size / 2 > budget:  # so that the mean count matches the budget
                break
            have_passkey |= kind == 0
            used += size
            items.append(item)
        base_len = max(L - used, L // 2)
        base = list(real[:base_len])
        inserts = []
        for it in items:
            if it[0] == "copy":
                m = it[1]
                if base_len < 2 * m + 2:
                    continue
                src = int(rng.integers(0, base_len - 2 * m))
                dst = int(rng.integers(src + m, base_len + 1))
                inserts.append((dst, base[src:src + m]))
            else:
                p1, p2 = sorted(rng.integers(0, base_len + 1, size=2).tolist())
                inserts.append((p1, it[1]))
                inserts.append((p2, it[2]))
        # Stable order: at equal positions the needle (inserted first) stays before its question.
        inserts.sort(key=lambda x: x[0])
        out, prev, synth = [], 0, 0
        for pos, toks in inserts:
            out.extend(base[prev:pos])
            out.extend(toks)
            synth += len(toks)
            prev = pos
        out.extend(base[prev:])
        if len(out) < L:  # when the base was cut short for a large budget that was not used
            out.extend(real[base_len:base_len + L - len(out)])
        return np.asarray(out[:L], dtype=np.int64), synth


class Batches:
    """Random windows of the training stream with synthetic tasks woven in."""

    def __init__(self, tokens, tasks, synth_frac, seed):
        self.tokens = tokens
        self.tasks = tasks
        self.synth_frac = synth_frac
        self.rng = np.random.default_rng(seed)
        self.synth = 0
        self.total = 0

    def next(self, B, T):
        L = T + 1
        out = np.empty((B, L), dtype=np.int64)
        for b in range(B):
            start = int(self.rng.integers(0, len(self.tokens) - L))
            real = self.tokens[start:start + L]
            if self.tasks is not None and self.synth_frac > 0:
                out[b], s = self.tasks.weave(real, L, self.rng, self.synth_frac)
                self.synth += s
            else:
                out[b] = real
        self.total += B * L
        return out


def passkey_prompts(tasks, heldout, lengths, depths, per_cell, seed=1234, digits=5):
    """Prompts [(length, depth, prompt ids, answer ids)]: held-out text of `length` tokens in all
    (prompt + answer) with the needle at `depth` (fraction of the haystack) and the question at
    the end."""
    rng = np.random.default_rng(seed)
    out = []
    for L in lengths:
        for d in depths:
            for _ in range(per_cell):
                n = tasks.number(rng, digits)
                needle = tasks.enc(f"\nThe pass key is {n}. Remember it. {n} is the pass key.\n")
                q, a, tail = tasks.passkey_question(n)
                a = a + tail[:1]  # the number, then the token that ends it
                hay_len = L - len(needle) - len(q) - len(a)
                start = int(rng.integers(0, len(heldout) - hay_len))
                hay = heldout[start:start + hay_len].astype(np.int64).tolist()
                p = int(round(d * hay_len))
                prompt = hay[:p] + needle + hay[p:] + q
                out.append((L, d, prompt, a))
    return out
