#!/usr/bin/env python3
"""Tokenization throughput: qwodel's C tokenizer against HuggingFace `tokenizers`.

The text is ~10 MB (--mb) of mixed-script documents generated deterministically from the test
corpus (tests/python/tokenizer_corpus.py: prose in many scripts, code, whitespace runs, numbers,
emoji, special-token strings), cut into documents of a few KB. Both sides encode the documents
one at a time with add_special_tokens=True, on one thread:

- HF: Tokenizer.encode(doc) per document with TOKENIZERS_PARALLELISM=false (encode() of a single
  string does not use the thread pool anyway), timed around the loop in Python; the per-call
  Python overhead is part of the figure but is small next to a few-KB document.
- qwodel: tests/tools/tokenize --bench, which loads the same tokenizer.json and times the encode
  loop in C (qw_tokenizer_encode per document; the BPE word cache is warm after the first
  documents, as HF's is).

Each figure is the best of --repeats runs (this machine is shared and noisy). The token counts
of both sides are printed too and must agree (a cheap cross-check of the same work being done).

    python3 bench/bench_tokenize.py --build build-tok-rel [--mb 10] [--repeats 3]
"""
from __future__ import annotations

import argparse
import os
import pathlib
import random
import subprocess
import sys
import tempfile
import time

os.environ["TOKENIZERS_PARALLELISM"] = "false"

REPO = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests" / "python"))

from tokenizer_corpus import corpus  # noqa: E402

FIXTURES = pathlib.Path(os.environ.get("QWODEL_FIXTURES_DIR",
                                       REPO.parent / "shared" / "fixtures" / "tokenizers"))


def documents(mb: float) -> list[str]:
    rng = random.Random(7)
    pool = [s for s in corpus() if s]
    docs, total, target = [], 0, int(mb * 1e6)
    while total < target:
        parts, size = [], 0
        want = rng.randint(1000, 6000)
        while size < want:
            s = rng.choice(pool)
            parts.append(s)
            size += len(s.encode())
        doc = " ".join(parts).replace("\0", " ")
        docs.append(doc)
        total += len(doc.encode())
    return docs


def bench_hf(path: pathlib.Path, docs: list[str], repeats: int) -> tuple[float, int]:
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(path))
    best, tokens = float("inf"), 0
    for _ in range(repeats):
        t0 = time.perf_counter()
        n = 0
        for d in docs:
            n += len(tok.encode(d).ids)
        best = min(best, time.perf_counter() - t0)
        tokens = n
    return best, tokens


def bench_ours(tool: pathlib.Path, path: pathlib.Path, docfile: str, repeats: int):
    best, tokens = float("inf"), 0
    for _ in range(repeats):
        r = subprocess.run([str(tool), str(path), "--bench", docfile], capture_output=True,
                           text=True, check=True)
        _, secs, n = r.stdout.split()
        best = min(best, float(secs))
        tokens = int(n)
    return best, tokens


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--build", default=str(REPO / "build"), help="a Release build directory")
    ap.add_argument("--mb", type=float, default=10.0)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--tokenizers", default="llama2,llama3,qwen3")
    args = ap.parse_args()
    tool = pathlib.Path(args.build) / "tokenize"
    if not tool.exists():
        sys.exit(f"{tool} is not built")
    docs = documents(args.mb)
    nbytes = sum(len(d.encode()) for d in docs)
    with tempfile.NamedTemporaryFile("wb", suffix=".txt", delete=False) as f:
        f.write(b"\0".join(d.encode() for d in docs))
        docfile = f.name
    print(f"{len(docs)} documents, {nbytes / 1e6:.2f} MB, best of {args.repeats}, one thread")
    print(f"{'tokenizer':<10} {'HF MB/s':>9} {'qwodel MB/s':>12} {'ratio':>7} "
          f"{'HF tokens':>11} {'qw tokens':>11}")
    try:
        for name in args.tokenizers.split(","):
            path = FIXTURES / name / "tokenizer.json"
            t_hf, n_hf = bench_hf(path, docs, args.repeats)
            t_qw, n_qw = bench_ours(tool, path, docfile, args.repeats)
            hf_mbs, qw_mbs = nbytes / 1e6 / t_hf, nbytes / 1e6 / t_qw
            print(f"{name:<10} {hf_mbs:>9.2f} {qw_mbs:>12.2f} {qw_mbs / hf_mbs:>6.2f}x "
                  f"{n_hf:>11} {n_qw:>11}")
    finally:
        os.unlink(docfile)


if __name__ == "__main__":
    main()
