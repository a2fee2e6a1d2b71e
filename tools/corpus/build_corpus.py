#!/usr/bin/env python3
"""Builds the reference model's English corpus from Debian packages (issue 9).

Stages (each re-runnable; outputs are byte-identical for the same inputs):
  1. download  `apt-get download` the source packages into WORK/debs, `dpkg -x` them into WORK/x
  2. extract   turn each package into clean documents: WORK/text/<source>.jsonl
  3. split     train / held-out by document (sha256 of the group name), held-out only long documents
  4. tokenizer byte-level BPE (HF tokenizers), vocabulary 8192, trained on the train split only
  5. tokenise  Megatron MMIDIDX datasets (uint16), xz'd token streams for the GPU machine, a small
               committed held-out sample, and WORK/summary.json

See tools/corpus/README.md for the output formats.
"""
import argparse
import bz2
import gzip
import hashlib
import html
import json
import lzma
import os
import re
import shutil
import struct
import subprocess
import sys
import unicodedata
import zlib
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]

VOCAB_SIZE = 8192
# Ids 0..7 in this order; <|endoftext|> ends every document.
SPECIAL_TOKENS = ["<|endoftext|>", "<|pad|>"] + [f"<|reserved_{i}|>" for i in range(6)]
EOT_ID = 0

# Held-out: documents of at least this many bytes (8K+ tokens at ~4 bytes/token), about
# HELDOUT_FRACTION of each family's bytes, families of at least HELDOUT_MIN_FAMILY_BYTES only.
HELDOUT_MIN_BYTES = 40_000
HELDOUT_FRACTION = 0.04
HELDOUT_MIN_FAMILY_BYTES = 2_000_000
# A group that would take a family past this multiple of its share is skipped, except the first
# group of the families in HELDOUT_ALWAYS (a whole Austen novel is held out, whatever its size).
HELDOUT_OVERSHOOT = 1.5
HELDOUT_ALWAYS = {"austen"}

SAMPLE_ROWS = 8
SAMPLE_TOKENS = 8192

# Debian packages: source name -> packages it needs (helpers are extracted, never installed).
PACKAGES = {
    "austen": ["r-cran-janeaustenr"],
    "bible-kjv": ["bible-kjv-text", "bible-kjv", "libreadline8"],
    "bible-web": ["sword-text-web", "libsword-utils", "libsword1.9.0", "libsword-common",
                  "libclucene-core1v5", "libcurl3-gnutls", "libicu72"],
    "gcide": ["dict-gcide"],
    "wordnet": ["wordnet-base"],
    "foldoc": ["dict-foldoc"],
    "jargon": ["dict-jargon"],
    "devil": ["dict-devil"],
    "fortunes": ["fortunes", "fortunes-min"],
    "linux-doc": ["linux-doc-6.1"],
    "python-doc": ["python3.11-doc"],
    "perl-doc": ["perl-doc"],
}
# Sources of one family share held-out groups (the same bible book in two translations).
FAMILY = {"bible-kjv": "bible", "bible-web": "bible"}


def log(*args):
    print(*args, flush=True)


def sha(s):
    return hashlib.sha256(s.encode()).hexdigest()


# ---------------------------------------------------------------- download


def package_available(pkg):
    out = subprocess.run(["apt-cache", "policy", pkg], capture_output=True, text=True).stdout
    m = re.search(r"Candidate:\s*(\S+)", out)
    return bool(m) and m.group(1) != "(none)"


def download(work):
    debs, xdir = work / "debs", work / "x"
    debs.mkdir(parents=True, exist_ok=True)
    xdir.mkdir(parents=True, exist_ok=True)
    wanted = sorted({p for ps in PACKAGES.values() for p in ps})
    if not all(package_available(p) for p in wanted):
        log("apt-cache misses some packages; running apt-get update once")
        subprocess.run(["apt-get", "update"], check=False, stdout=subprocess.DEVNULL)
    missing = [p for p in wanted if not package_available(p)]
    for p in missing:
        log(f"note: package {p} is not available; sources needing it are skipped")
    get = [p for p in wanted if p not in missing and not list(debs.glob(f"{p}_*.deb"))]
    if get:
        # _apt cannot write into root-owned work dirs; apt then downloads unsandboxed (harmless).
        subprocess.run(["apt-get", "download", *get], cwd=debs, check=True)
    for p in wanted:
        if p in missing:
            continue
        (deb,) = sorted(debs.glob(f"{p}_*.deb"))[-1:]
        dest = xdir / p
        stamp = dest / ".extracted"
        if stamp.exists() and stamp.read_text() == deb.name:
            continue
        shutil.rmtree(dest, ignore_errors=True)
        dest.mkdir()
        subprocess.run(["dpkg", "-x", str(deb), str(dest)], check=True)
        stamp.write_text(deb.name)
    versions = {}
    for p in wanted:
        debs_p = sorted(debs.glob(f"{p}_*.deb"))
        if debs_p:
            versions[p] = debs_p[-1].name
    return versions


# ---------------------------------------------------------------- cleaning

_CTRL = re.compile(r"[\x00-\x08\x0b\x0e-\x1f\x7f\u200b\ufeff]")


def decode(data):
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return data.decode("cp1252", errors="replace")


def clean(text):
    """Unicode NFC, \\n line ends, no control characters, no trailing spaces, at most one blank line."""
    text = unicodedata.normalize("NFC", text)
    text = text.replace("\r\n", "\n").replace("\r", "\n").replace("\f", "\n")
    text = _CTRL.sub("", text)
    for special in SPECIAL_TOKENS:  # never let corpus text spell a special token
        text = text.replace(special, special.replace("|", ""))
    text = "\n".join(line.rstrip() for line in text.split("\n"))
    text = re.sub(r"\n{3,}", "\n\n", text)
    return text.strip("\n") + "\n"


def looks_like_text(text):
    """False for binary junk, base64 blobs, ascii-art and the like."""
    if not text.strip():
        return False
    bad = text.count("\ufffd")
    letters = sum(1 for c in text if c.isalpha())
    return bad <= len(text) // 1000 and letters >= 0.45 * len(text.replace(" ", "").replace("\n", ""))


def unwrap_paragraphs(text):
    """Joins the lines of each blank-line-separated paragraph with single spaces."""
    paras = re.split(r"\n\s*\n", text)
    return "\n\n".join(" ".join(l.strip() for l in p.split("\n") if l.strip()) for p in paras if p.strip())


# ---------------------------------------------------------------- R serialization (janeaustenr)


class RVector(list):
    """An R vector; `attrs` holds its attributes ({name: value}), e.g. attrs["names"]."""

    attrs = {}


class RPairList(list):
    """An R pairlist as [(tag, value)]."""


class RReader:
    """Reads R's XDR serialization (format versions 2 and 3) far enough for data objects:
    atomic vectors, lists, pairlists, symbols, attributes, references, environments."""

    PAIRS = (2, 3, 5, 6, 17, 239, 240)  # LISTSXP, CLOSXP, PROMSXP, LANGSXP, DOTSXP, ATTR*SXP

    def __init__(self, data):
        self.d, self.p, self.refs = data, 0, []

    def take(self, n):
        b = self.d[self.p:self.p + n]
        if len(b) != n:
            raise ValueError("R serialization truncated")
        self.p += n
        return b

    def int(self):
        return struct.unpack(">i", self.take(4))[0]

    def length(self):
        n = self.int()
        if n == -1:
            hi, lo = self.int(), self.int()
            n = (hi << 32) + lo
        return n

    def read(self):
        if self.take(2) != b"X\n":
            raise ValueError("not an XDR R serialization")
        version = self.int()
        self.int(), self.int()
        if version == 3:
            self.take(self.int())  # native encoding name
        return self.item()

    def attrs(self, has_attr):
        if not has_attr:
            return {}
        pl = self.item()
        return {t: v for t, v in pl} if isinstance(pl, RPairList) else {}

    def item(self):
        flags = self.int()
        t, has_attr, has_tag = flags & 0xFF, bool(flags & (1 << 9)), bool(flags & (1 << 10))
        if t in (254, 253, 252, 251, 250, 242, 241):  # NULL and the special environments
            return None
        if t == 255:  # REFSXP
            i = flags >> 8
            return self.refs[(i if i else self.int()) - 1]
        if t in (247, 248, 249):  # persistent / package / namespace: a name vector, registered
            self.int()
            v = [self.item() for _ in range(self.int())]
            self.refs.append(v)
            return v
        if t == 1:  # SYMSXP
            slot = len(self.refs)
            self.refs.append(None)
            self.refs[slot] = self.item()
            return self.refs[slot]
        if t == 4:  # ENVSXP
            env = {}
            self.refs.append(env)
            self.int()  # locked
            self.item(), self.item(), self.item(), self.item()  # enclos, frame, hashtab, attrib
            return env
        if t in self.PAIRS:
            out = RPairList()
            while True:
                self.attrs(has_attr)
                tag = self.item() if has_tag else None
                out.append((tag, self.item()))
                nxt = self.int()  # the CDR, read in a loop instead of recursively
                t, has_attr, has_tag = nxt & 0xFF, bool(nxt & (1 << 9)), bool(nxt & (1 << 10))
                if t == 254:
                    return out
                if t not in self.PAIRS:
                    self.p -= 4
                    out.append((None, self.item()))
                    return out
        if t == 9:  # CHARSXP; gp bit 2 marks latin-1
            n = self.int()
            if n == -1:
                return None
            raw = self.take(n)
            return raw.decode("latin-1") if flags & (1 << 14) else raw.decode("utf-8", errors="replace")
        if t in (10, 13):  # logical, integer
            n = self.length()
            v = RVector(struct.unpack(f">{n}i", self.take(4 * n)))
        elif t == 14:  # double
            n = self.length()
            v = RVector(struct.unpack(f">{n}d", self.take(8 * n)))
        elif t == 15:  # complex
            n = self.length()
            v = RVector(struct.unpack(f">{2 * n}d", self.take(16 * n)))
        elif t == 24:  # raw
            v = RVector(self.take(self.length()))
        elif t in (16, 19, 20):  # character vector, list, expression
            v = RVector(self.item() for _ in range(self.length()))
        elif t == 238:  # ALTREP: class info, state, attributes
            info, state = self.item(), self.item()
            self.item()
            return ("altrep", info, state)
        else:
            raise ValueError(f"R serialization: unsupported SEXP type {t}")
        v.attrs = self.attrs(has_attr)
        return v


def r_lazyload(rdb, rdx):
    """{name: object} of an R lazy-load database (<x>.rdb + <x>.rdx). The .rdx is a gzip'd
    serialization of list(variables = list(name = c(offset, length)), ...); each .rdb record is a
    4-byte big-endian uncompressed length and a zlib stream (or a type byte Z/2/X/0 and its data)."""
    raw = rdx.read_bytes()
    index = RReader(gzip.decompress(raw) if raw[:2] == b"\x1f\x8b" else zlib.decompress(raw[4:])).read()
    fields = dict(zip(index.attrs["names"], index))
    variables = fields["variables"]
    data = rdb.read_bytes()
    out = {}
    for name, (off, size) in zip(variables.attrs["names"], variables):
        body = data[off:off + size][4:]
        if body[:1] in (b"Z", b"2", b"X", b"0"):
            kind, body = body[:1], body[1:]
            body = {b"Z": zlib.decompress, b"2": bz2.decompress, b"X": lzma.decompress,
                    b"0": lambda b: b}[kind](body)
        else:
            body = zlib.decompress(body)
        out[name] = RReader(body).read()
    return out


# ---------------------------------------------------------------- sources
# Each returns [(document name, held-out group, text)]; names are unique within the source.


def src_austen(x):
    base = x / "r-cran-janeaustenr/usr/lib/R/site-library/janeaustenr/data"
    objs = r_lazyload(base / "Rdata.rdb", base / "Rdata.rdx")
    titles = {"emma": "Emma", "mansfieldpark": "Mansfield Park", "northangerabbey": "Northanger Abbey",
              "persuasion": "Persuasion", "prideprejudice": "Pride and Prejudice",
              "sensesensibility": "Sense and Sensibility"}
    docs = []
    for key in sorted(objs):
        lines = objs[key]
        if not isinstance(lines, list) or not all(isinstance(s, (str, type(None))) for s in lines):
            continue
        text = unwrap_paragraphs("\n".join(s or "" for s in lines))
        name = titles.get(key, key)
        docs.append((name, "austen/" + name, text))
    return docs


def helper_env(x):
    libdirs = sorted({str(p.parent) for p in x.rglob("*.so*") if p.is_file()})
    env = dict(os.environ, LD_LIBRARY_PATH=":".join(libdirs), LC_ALL="C.UTF-8")
    return env


def bible_group(book):
    book = re.sub(r"^(I|II|III|IV) ", lambda m: {"I": "1", "II": "2", "III": "3", "IV": "4"}[m.group(1)] + " ", book)
    return "bible/" + {"Revelation of John": "Revelation"}.get(book, book)


def src_bible_kjv(x):
    out = subprocess.run([str(x / "bible-kjv/usr/bin/bible"), "-p", str(x / "bible-kjv-text/usr/lib"), "-l0",
                          "gen1:1-rev22:21"], capture_output=True, stdin=subprocess.DEVNULL,
                         env=helper_env(x), check=True).stdout.decode("utf-8")
    books, cur = [], None
    for line in out.split("\n"):
        m = re.fullmatch(r"(\S.*) (\d+)", line)
        if m:
            if m.group(2) == "1":
                cur = [m.group(1), []]
                books.append(cur)
            cur[1].append(f"\nChapter {m.group(2)}\n")
        elif cur is not None and line.strip():
            cur[1].append(re.sub(r"^\s+(\d+) ", r"\1 ", line))
    return [(b, bible_group(b), f"{b} (King James Version)\n" + "\n".join(lines)) for b, lines in books]


_NOTE = re.compile(r"<note\b[^>]*>.*?</note>", re.S)
_TITLE = re.compile(r"<title\b[^>]*>(.*?)</title>", re.S)
_PARA = re.compile(r'<div\b[^>]*type="x-p"[^>]*>')
_BREAK = re.compile(r"<(?:l\b[^>]*sID[^>]*|lb\b[^>]*|lg\b[^>]*)>")
_TAG = re.compile(r"<[^>]+>")


def src_bible_web(x):
    sword = x / "sword-text-web/usr/share/sword"
    env = dict(helper_env(x), SWORD_PATH=str(sword), HOME=str(x))
    imp = subprocess.run([str(x / "libsword-utils/usr/bin/mod2imp"), "engWEB2015eb"], capture_output=True,
                         cwd=sword, env=env, check=True).stdout.decode("utf-8")
    books = {}
    order = []
    for entry in imp.split("$$$")[1:]:
        key, _, body = entry.partition("\n")
        m = re.fullmatch(r"(.+) (\d+):(\d+)", key.strip())
        if not m:
            continue
        book, ch = m.group(1), int(m.group(2))
        body = _NOTE.sub("", body.rstrip("\n").replace("\n", " "))
        body = _TITLE.sub(lambda t: "\n\n" + _TAG.sub("", t.group(1)).strip() + "\n\n", body)
        body = re.sub(r"<chapter\b[^>]*sID[^>]*/>", f"\n\nChapter {ch}\n\n", body)
        body = _PARA.sub("\n\n", body)
        body = _BREAK.sub("\n", body)
        body = html.unescape(_TAG.sub("", body))
        if book not in books:
            books[book] = []
            order.append(book)
        books[book].append(body)
    docs = []
    for book in order:
        text = " ".join(books[book])
        text = re.sub(r"[ \t]+", " ", text)
        text = re.sub(r" *\n *", "\n", text)
        text = re.sub(r"\n{3,}", "\n\n", text)
        docs.append((book, bible_group(book), f"{book} (World English Bible)\n\n" + text.strip()))
    return docs


def dictd_entries(path_prefix):
    """Entry texts of a dictd database in file order, without its 00-database-* entries."""
    data = gzip.decompress(Path(str(path_prefix) + ".dict.dz").read_bytes())
    b64 = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"

    def num(s):
        v = 0
        for c in s:
            v = v * 64 + b64.index(c)
        return v

    spans, skip = {}, set()
    for line in decode(Path(str(path_prefix) + ".index").read_bytes()).split("\n"):
        parts = line.split("\t")
        if len(parts) < 3:
            continue
        off, size = num(parts[1]), num(parts[2])
        if parts[0].startswith("00-database") or parts[0].startswith("00database"):
            skip.add(off)
        spans[off] = max(size, spans.get(off, 0))
    return [decode(data[o:o + spans[o]]) for o in sorted(spans) if o not in skip]


def chunked(source, items, per_chunk, fmt="{:03d}"):
    docs = []
    for i in range(0, len(items), per_chunk):
        name = fmt.format(i // per_chunk)
        docs.append((name, f"{source}/{name}", "\n\n".join(items[i:i + per_chunk])))
    return docs


def src_dictd(x, pkg, name, per_chunk, drop_tags=False):
    entries = dictd_entries(x / pkg / "usr/share/dictd" / name)
    if drop_tags:  # GCIDE's source tags ("[1913 Webster]", "[PJC]") on lines of their own
        entries = [re.sub(r"\n[ \t]*\[[^\]\n]{1,40}\][ \t]*(?=\n|$)", "", e) for e in entries]
    entries = [clean(e).strip("\n") for e in entries]
    return chunked(name, [e for e in entries if e], per_chunk)


_GCIDE_MARKS = {"'": "\u0301", "`": "\u0300", '"': "\u0308", "^": "\u0302", "~": "\u0303", "=": "\u0304", "-": "\u0304",
                ".": "\u0307", ",": "\u0327"}
_GCIDE_NAMED = {"ae": "æ", "AE": "Æ", "oe": "œ", "OE": "Œ", "eth": "ð", "thorn": "þ", "deg": "°", "root": "√",
                "sect": "§", "yogh": "ȝ", "ng": "ŋ", "th": "θ", "aum": "ä", "imac": "ī", "emac": "ē",
                "amac": "ā", "omac": "ō", "umac": "ū", "ymac": "ȳ", "add": "ä", "asl": "a", "udd": "ü",
                "oo^": "o͝o", "oomac": "o͞o", "frac12": "½", "frac14": "¼", "frac34": "¾", "times": "×",
                "divide": "÷", "pound": "£", "cre": "˘", "hand": "☞", "bprime": "″", "prime": "′",
                "sharp": "♯", "flat": "♭", "natural": "♮", "dagger": "†", "dag": "†", "ddag": "‡"}


def _gcide_code(m):
    c = m.group(1)
    if c in _GCIDE_NAMED:
        return _GCIDE_NAMED[c]
    if len(c) == 2 and c[0] in _GCIDE_MARKS and c[1].isalpha():  # ['e] acute, [^o] circumflex, ...
        return unicodedata.normalize("NFC", c[1] + _GCIDE_MARKS[c[0]])
    if len(c) == 2 and c[1] == "^" and c[0].isalpha():  # [e^] breve
        return unicodedata.normalize("NFC", c[0] + "\u0306")
    return m.group(0)


def gcide_clean(entry):
    """Drops the syllabified headword and its pronunciation (`\\A*buse"\\ (a*b[=u]s")`) and turns the
    accent codes ([e^], ['e], [ae], ...) into Unicode letters."""
    entry = re.sub(r' ?\\[^\\\n]{1,80}\\( \([^)]{0,160}\))?', "", entry)
    return re.sub(r"\[([a-zA-Z'`\"^~=.,-]{1,3}|[a-zA-Z]{2,7}\^?|oo\^)\]", _gcide_code, entry)


def src_gcide(x):
    docs = src_dictd(x, "dict-gcide", "gcide", 2000, drop_tags=True)
    return [(n, g, "\n\n".join(gcide_clean(e) for e in t.split("\n\n"))) for n, g, t in docs]


def src_foldoc(x):
    return src_dictd(x, "dict-foldoc", "foldoc", 2000)


def src_jargon(x):
    return src_dictd(x, "dict-jargon", "jargon", 1000)


def src_devil(x):
    return src_dictd(x, "dict-devil", "devil", 1000)


def src_wordnet(x):
    pos_names = {"noun": "noun", "verb": "verb", "adj": "adjective", "adv": "adverb"}
    docs = []
    for pos in ["noun", "verb", "adj", "adv"]:
        lines = []
        for line in decode((x / "wordnet-base/usr/share/wordnet" / f"data.{pos}").read_bytes()).split("\n"):
            if not line or line.startswith("  "):
                continue
            head, _, gloss = line.partition(" | ")
            f = head.split()
            n = int(f[3], 16)
            words = [re.sub(r"\([a-z]+\)$", "", w).replace("_", " ") for w in f[4:4 + 2 * n:2]]
            lines.append(f"{', '.join(words)} ({pos_names[pos]}): {gloss.strip()}")
        docs += [(f"{pos}/{n}", f"wordnet/{pos}/{n}", t) for n, _, t in chunked("wordnet", lines, 2000)]
    for i, (n, g, t) in enumerate(docs):
        docs[i] = (n, g, t.replace("\n\n", "\n"))
    return docs


def src_fortunes(x):
    docs = {}
    for pkg in ["fortunes-min", "fortunes"]:
        d = x / pkg / "usr/share/games/fortunes"
        if not d.is_dir():
            continue
        for f in sorted(d.iterdir()):
            if f.is_file() and not f.is_symlink() and "." not in f.name and f.name != "ascii-art":
                text = decode(f.read_bytes())
                docs[f.name] = re.sub(r"\n%\n", "\n\n", "\n" + text + "\n").replace("\n%\n", "\n")
    return [(n, "fortunes/" + n, t) for n, t in sorted(docs.items())]


def read_maybe_gz(p):
    data = p.read_bytes()
    return decode(gzip.decompress(data) if p.name.endswith(".gz") else data)


def src_tree(x, root, pattern, exclude=()):
    base = x / root
    docs = []
    for p in sorted(base.rglob("*")):
        rel = p.relative_to(base).as_posix()
        if not p.is_file() or p.is_symlink() or not re.search(pattern, rel):
            continue
        if any(re.search(e, rel) for e in exclude):
            continue
        name = rel[:-3] if rel.endswith(".gz") else rel
        docs.append((name, name, read_maybe_gz(p)))
    return docs


def src_linux_doc(x):
    return src_tree(x, "linux-doc-6.1/usr/share/doc/linux-doc-6.1/Documentation", r"\.(rst|txt)(\.gz)?$",
                    exclude=[r"^translations/"])


def src_python_doc(x):
    docs = src_tree(x, "python3.11-doc/usr/share/doc/python3.11/html/_sources", r"\.rst\.txt$")
    return [(n[:-4], g[:-4], t) for n, g, t in docs]


def src_perl_doc(x):
    return src_tree(x, "perl-doc/usr/share", r"\.pod(\.gz)?$", exclude=[r"^man/"])


SOURCES = {
    "austen": src_austen,
    "bible-kjv": src_bible_kjv,
    "bible-web": src_bible_web,
    "gcide": src_gcide,
    "wordnet": src_wordnet,
    "foldoc": src_foldoc,
    "jargon": src_jargon,
    "devil": src_devil,
    "fortunes": src_fortunes,
    "linux-doc": src_linux_doc,
    "python-doc": src_python_doc,
    "perl-doc": src_perl_doc,
}


def extract(work, available):
    tdir = work / "text"
    tdir.mkdir(parents=True, exist_ok=True)
    seen = set()
    stats = {}
    for source, fn in SOURCES.items():
        out = tdir / f"{source}.jsonl"
        if not all(p in available for p in PACKAGES[source]):
            log(f"note: skipping source {source} (package missing)")
            out.unlink(missing_ok=True)
            continue
        raw = fn(work / "x")
        kept, dropped = [], 0
        for name, group, text in sorted(raw, key=lambda d: d[0]):
            text = clean(text)
            digest = sha(text)
            if len(text) < 64 or not looks_like_text(text) or digest in seen:
                dropped += 1
                continue
            seen.add(digest)
            kept.append({"source": source, "name": f"{source}/{name}", "group": group, "text": text})
        with open(out, "w", encoding="utf-8") as f:
            for d in kept:
                f.write(json.dumps(d, ensure_ascii=False, sort_keys=True) + "\n")
        nbytes = sum(len(d["text"].encode()) for d in kept)
        stats[source] = (len(kept), dropped, nbytes)
        log(f"  {source:11s} {len(kept):6d} documents ({dropped} dropped) {nbytes / 1e6:8.2f} MB")
    return stats


def load_docs(work):
    docs = []
    for source in SOURCES:
        p = work / "text" / f"{source}.jsonl"
        if p.exists():
            with open(p, encoding="utf-8") as f:
                docs += [json.loads(l) for l in f]
    return docs


# ---------------------------------------------------------------- split


def split(docs):
    """Marks docs[i]['heldout']. Per family of at least HELDOUT_MIN_FAMILY_BYTES: groups whose
    documents are all long, in sha256 order of the group name, until the family's held-out bytes
    reach HELDOUT_FRACTION of its bytes."""
    fams = {}
    for d in docs:
        d["heldout"] = False
        fams.setdefault(FAMILY.get(d["source"], d["source"]), []).append(d)
    for fam in sorted(fams):
        fdocs = fams[fam]
        total = sum(len(d["text"].encode()) for d in fdocs)
        if total < HELDOUT_MIN_FAMILY_BYTES:
            continue
        groups = {}
        for d in fdocs:
            groups.setdefault(d["group"], []).append(d)
        eligible = sorted((g for g, ds in groups.items() if all(len(d["text"].encode()) >= HELDOUT_MIN_BYTES for d in ds)),
                          key=lambda g: sha("heldout:" + g))
        held, target = 0, HELDOUT_FRACTION * total
        for g in eligible:
            if held >= target:
                break
            size = sum(len(d["text"].encode()) for d in groups[g])
            if held + size > HELDOUT_OVERSHOOT * target and not (fam in HELDOUT_ALWAYS and held == 0):
                continue  # too big for this family's share (a whole dictionary chunk, perltoc.pod)
            for d in groups[g]:
                d["heldout"] = True
            held += size


# ---------------------------------------------------------------- tokenizer


def train_tokenizer(texts, path, jobs):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Digits(individual_digits=True),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True),
    ])
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=VOCAB_SIZE, min_frequency=2, special_tokens=SPECIAL_TOKENS,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(texts, trainer=trainer, length=len(texts))
    if tok.get_vocab_size() != VOCAB_SIZE:
        raise SystemExit(f"tokenizer has {tok.get_vocab_size()} tokens, expected {VOCAB_SIZE}")
    for i, s in enumerate(SPECIAL_TOKENS):
        assert tok.token_to_id(s) == i, s
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(tok.to_str(pretty=True) + "\n", encoding="utf-8")


# ---------------------------------------------------------------- Megatron writer / reader

MAGIC = b"MMIDIDX\x00\x00"


def write_megatron(prefix, seqs):
    """One sequence per document, uint16 (dtype code 8), version 1: the layout documented in
    data/megatron_dataset.h."""
    import numpy as np

    prefix = Path(prefix)
    sizes = np.array([len(s) for s in seqs], dtype="<i4")
    pointers = np.zeros(len(seqs), dtype="<i8")
    if len(seqs) > 1:
        pointers[1:] = np.cumsum(sizes[:-1].astype("<i8") * 2)
    doc_idx = np.arange(len(seqs) + 1, dtype="<i8")
    tmp = prefix.with_name(prefix.name + ".bin.tmp")
    with open(tmp, "wb") as f:
        for s in seqs:
            a = np.asarray(s)
            assert a.min(initial=0) >= 0 and a.max(initial=0) < 65536
            f.write(a.astype("<u2").tobytes())
    os.replace(tmp, str(prefix) + ".bin")
    idx = (MAGIC + struct.pack("<Q", 1) + struct.pack("<B", 8) + struct.pack("<Q", len(seqs)) +
           struct.pack("<Q", len(doc_idx)) + sizes.tobytes() + pointers.tobytes() + doc_idx.tobytes())
    tmp = prefix.with_name(prefix.name + ".idx.tmp")
    tmp.write_bytes(idx)
    os.replace(tmp, str(prefix) + ".idx")


def read_megatron(prefix):
    """Independent reader: returns the documents as lists of ints, validating every field."""
    import numpy as np

    idx = Path(str(prefix) + ".idx").read_bytes()
    binary = Path(str(prefix) + ".bin").read_bytes()
    assert idx[:9] == MAGIC, "magic"
    (version,) = struct.unpack_from("<Q", idx, 9)
    dtype = idx[17]
    n, d = struct.unpack_from("<QQ", idx, 18)
    assert version == 1 and dtype == 8, (version, dtype)
    assert len(idx) == 34 + 12 * n + 8 * d, "idx size"
    sizes = np.frombuffer(idx, "<i4", n, 34)
    pointers = np.frombuffer(idx, "<i8", n, 34 + 4 * n)
    doc_idx = np.frombuffer(idx, "<i8", d, 34 + 12 * n)
    assert doc_idx[0] == 0 and doc_idx[-1] == n and (np.diff(doc_idx) >= 0).all()
    assert int(pointers[-1]) + 2 * int(sizes[-1]) == len(binary) if n else len(binary) == 0
    toks = np.frombuffer(binary, "<u2")
    docs = []
    for j in range(d - 1):
        parts = [toks[pointers[s] // 2: pointers[s] // 2 + sizes[s]] for s in range(doc_idx[j], doc_idx[j + 1])]
        docs.append(np.concatenate(parts) if parts else np.zeros(0, "<u2"))
    return docs


# ---------------------------------------------------------------- main stages


def file_sha(p):
    h = hashlib.sha256()
    with open(p, "rb") as f:
        for b in iter(lambda: f.read(1 << 20), b""):
            h.update(b)
    return h.hexdigest()


def xz_file(src, dst):
    # Single-threaded preset 9: deterministic bytes.
    with open(src, "rb") as f, lzma.open(dst, "wb", format=lzma.FORMAT_XZ, check=lzma.CHECK_CRC64,
                                         preset=9) as g:
        for b in iter(lambda: f.read(1 << 22), b""):
            g.write(b)


def tokenise_and_write(work, docs, tok_path, jobs, sample_dir):
    import numpy as np
    from concurrent.futures import ProcessPoolExecutor
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(tok_path))
    log("tokenising ...")
    ids = []
    batch = 256
    for i in range(0, len(docs), batch):
        enc = tok.encode_batch([d["text"] for d in docs[i:i + batch]], add_special_tokens=False)
        ids += [np.array(e.ids, dtype=np.uint16) for e in enc]
    # Round trip: byte-level BPE without a normaliser decodes to the text exactly.
    step = max(1, len(docs) // 200)
    for d, t in zip(docs[::step], ids[::step]):
        assert tok.decode(t.tolist(), skip_special_tokens=False) == d["text"], d["name"]
    for d, t in zip(docs, ids):
        assert (t >= len(SPECIAL_TOKENS)).all(), d["name"]
        d["tokens"] = len(t)

    gpu = work / "gpu"
    gpu.mkdir(parents=True, exist_ok=True)
    outputs = {}
    for split_name, held in (("train", False), ("heldout", True)):
        sel = [i for i, d in enumerate(docs) if d["heldout"] == held]
        seqs = [np.append(ids[i], np.uint16(EOT_ID)) for i in sel]
        prefix = work / f"{split_name}_text_document"
        write_megatron(prefix, seqs)
        back = read_megatron(prefix)
        assert len(back) == len(seqs) and all(np.array_equal(b, s) for b, s in zip(back, seqs)), split_name
        meta = {
            "format": "raw little-endian uint16 tokens; every document ends with <|endoftext|>",
            "eot_id": EOT_ID, "vocab_size": VOCAB_SIZE, "dtype": "uint16",
            "tokens": int(sum(len(s) for s in seqs)),
            "bin_sha256": file_sha(str(prefix) + ".bin"),
            "doc_names": [docs[i]["name"] for i in sel],
            "doc_lengths": [len(s) for s in seqs],
        }
        (gpu / f"{split_name}_docs.json").write_text(json.dumps(meta, indent=0) + "\n")
        outputs[split_name] = (prefix, len(seqs), meta["tokens"])
    log("xz ...")
    with ProcessPoolExecutor(max_workers=max(1, min(2, jobs))) as ex:
        futs = [ex.submit(xz_file, str(outputs[s][0]) + ".bin", str(gpu / f"{s}_tokens.u16.xz")) for s in outputs]
        for f in futs:
            f.result()

    # Held-out sample: SAMPLE_ROWS held-out documents of >= SAMPLE_TOKENS tokens, round-robin over
    # sources in sha256 order, each cut to its first SAMPLE_TOKENS tokens.
    cands = {}
    for i, d in enumerate(docs):
        if d["heldout"] and len(ids[i]) >= SAMPLE_TOKENS:
            cands.setdefault(d["source"], []).append(i)
    for s in cands:
        cands[s].sort(key=lambda i: sha("sample:" + docs[i]["name"]))
    order = ["austen", "linux-doc", "bible-kjv", "python-doc", "gcide", "perl-doc", "bible-web", "wordnet"]
    order += sorted(s for s in cands if s not in order)
    picked = []
    while len(picked) < SAMPLE_ROWS and any(cands.get(s) for s in order):
        for s in order:
            if cands.get(s) and len(picked) < SAMPLE_ROWS:
                picked.append(cands[s].pop(0))
    sample_dir.mkdir(parents=True, exist_ok=True)
    rows = [ids[i][:SAMPLE_TOKENS].astype(np.int32) for i in picked]
    write_megatron(sample_dir / "heldout_sample_text_document", rows)
    arr = np.array(rows, dtype=np.int32)
    with open(sample_dir / "heldout_sample.npy", "wb") as f:
        np.lib.format.write_array(f, arr, version=(1, 0), allow_pickle=False)
    back = read_megatron(sample_dir / "heldout_sample_text_document")
    assert all((b.astype(np.int32) == r).all() for b, r in zip(back, arr))
    (sample_dir / "heldout_sample.json").write_text(json.dumps({
        "rows": [{"name": docs[i]["name"], "source": docs[i]["source"], "doc_tokens": len(ids[i]),
                  "first_tokens": SAMPLE_TOKENS} for i in picked],
        "shape": list(arr.shape), "dtype": "int32", "vocab_size": VOCAB_SIZE, "eot_id": EOT_ID,
        "note": "row i of heldout_sample.npy == document i of heldout_sample_text_document (uint16); "
                "the first tokens of held-out documents, no <|endoftext|>",
    }, indent=1) + "\n")
    return outputs, picked


def summarise(work, docs, versions, extract_stats, outputs, picked, tok_path, sample_dir):
    src = {}
    for d in docs:
        s = src.setdefault(d["source"], {"documents": 0, "bytes": 0, "tokens": 0, "heldout_documents": 0,
                                          "heldout_bytes": 0, "heldout_tokens": 0})
        b = len(d["text"].encode())
        s["documents"] += 1
        s["bytes"] += b
        s["tokens"] += d["tokens"]
        if d["heldout"]:
            s["heldout_documents"] += 1
            s["heldout_bytes"] += b
            s["heldout_tokens"] += d["tokens"]
    for s in src.values():
        s["MB"] = round(s["bytes"] / 1e6, 2)
        s["tokens_per_byte"] = round(s["tokens"] / s["bytes"], 4)
    tot_b = sum(s["bytes"] for s in src.values())
    tot_t = sum(s["tokens"] for s in src.values())
    held = [d for d in docs if d["heldout"]]
    gpu = work / "gpu"
    summary = {
        "packages": versions,
        "vocab_size": VOCAB_SIZE,
        "special_tokens": {s: i for i, s in enumerate(SPECIAL_TOKENS)},
        "tokenizer_sha256": file_sha(tok_path),
        "sources": src,
        "total": {
            "documents": len(docs), "bytes": tot_b, "MB": round(tot_b / 1e6, 2), "tokens": tot_t,
            "tokens_per_byte": round(tot_t / tot_b, 4),
            "train_documents": outputs["train"][1], "train_tokens_with_eot": outputs["train"][2],
            "heldout_documents": outputs["heldout"][1], "heldout_tokens_with_eot": outputs["heldout"][2],
            "heldout_token_fraction": round(outputs["heldout"][2] / (outputs["train"][2] + outputs["heldout"][2]), 4),
            "heldout_min_doc_tokens": min(d["tokens"] for d in held) if held else 0,
        },
        "heldout_documents": sorted(f'{d["name"]} ({d["tokens"]} tokens)' for d in held),
        "outputs": {
            p.relative_to(work).as_posix(): {"bytes": p.stat().st_size, "sha256": file_sha(p)}
            for p in sorted([*work.glob("*_text_document.*"), *gpu.glob("*")])
        },
        "sample": {
            p.name: {"bytes": p.stat().st_size, "sha256": file_sha(p)} for p in sorted(sample_dir.glob("*"))
        },
    }
    (work / "summary.json").write_text(json.dumps(summary, indent=1) + "\n")
    log("")
    log(f"{'source':11s} {'docs':>6s} {'MB':>8s} {'tokens':>11s} {'tok/B':>6s} {'held docs':>9s} {'held tok':>10s}")
    for name, s in src.items():
        log(f"{name:11s} {s['documents']:6d} {s['MB']:8.2f} {s['tokens']:11d} {s['tokens_per_byte']:6.3f} "
            f"{s['heldout_documents']:9d} {s['heldout_tokens']:10d}")
    t = summary["total"]
    log(f"{'total':11s} {t['documents']:6d} {t['MB']:8.2f} {t['tokens']:11d} {t['tokens_per_byte']:6.3f}")
    log(f"train: {t['train_documents']} documents, {t['train_tokens_with_eot']} tokens; held-out: "
        f"{t['heldout_documents']} documents, {t['heldout_tokens_with_eot']} tokens "
        f"({100 * t['heldout_token_fraction']:.2f} %), shortest held-out document {t['heldout_min_doc_tokens']} tokens")
    for k, v in summary["outputs"].items():
        log(f"  {work / k}: {v['bytes'] / 2**20:.2f} MiB")
    return summary


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--work", default=str(REPO / ".corpus"), help="work directory (default: REPO/.corpus)")
    ap.add_argument("--skip-download", action="store_true", help="reuse WORK/debs and WORK/x")
    ap.add_argument("--skip-extract", action="store_true", help="reuse WORK/text/*.jsonl")
    ap.add_argument("--skip-tokenizer", action="store_true", help="reuse --tokenizer instead of training it")
    ap.add_argument("--jobs", type=int, default=2, help="processes / threads to use (default 2)")
    ap.add_argument("--tokenizer", default=str(REPO / "models/reference/tokenizer.json"))
    ap.add_argument("--sample-dir", default=str(REPO / "models/reference/heldout"))
    ap.add_argument("--summary-copy", default=str(REPO / "tools/corpus/summary.json"),
                    help="where to copy summary.json ('' for nowhere)")
    args = ap.parse_args()
    os.environ["RAYON_NUM_THREADS"] = str(max(1, args.jobs))
    os.environ["RAYON_RS_NUM_CPUS"] = str(max(1, args.jobs))
    os.environ["TOKENIZERS_PARALLELISM"] = "true" if args.jobs > 1 else "false"
    work = Path(args.work).resolve()
    work.mkdir(parents=True, exist_ok=True)

    if args.skip_download:
        versions = {p.name.split("_")[0]: p.name for p in sorted((work / "debs").glob("*.deb"))}
    else:
        log("downloading and extracting packages ...")
        versions = download(work)
    versions = dict(sorted(versions.items()))
    available = {p for p in versions if (work / "x" / p).is_dir()}
    extract_stats = None
    if not args.skip_extract:
        log("extracting documents ...")
        extract_stats = extract(work, available)
    docs = load_docs(work)
    split(docs)
    tok_path = Path(args.tokenizer)
    if not args.skip_tokenizer:
        log(f"training the tokenizer on {sum(not d['heldout'] for d in docs)} train documents ...")
        train_tokenizer([d["text"] for d in docs if not d["heldout"]], tok_path, args.jobs)
    outputs, picked = tokenise_and_write(work, docs, tok_path, args.jobs, Path(args.sample_dir))
    summary = summarise(work, docs, versions, extract_stats, outputs, picked, tok_path, Path(args.sample_dir))
    if args.summary_copy:
        shutil.copyfile(work / "summary.json", args.summary_copy)
    return summary


if __name__ == "__main__":
    main()
