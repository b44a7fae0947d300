#!/usr/bin/env python3
"""Peak memory against model size: a ~1B and a ~3B parameter checkpoint quantized to Q4_K_M.

Issue 9 asks that qwodel run in bounded memory, whatever the model's size: the peak RSS of
quantizing a 1B-parameter and a 3B-parameter synthetic checkpoint to Q4_K_M must differ by less
than 20%. This bench measures that, and llama.cpp's quantizer beside it.

Checkpoints: synthetic Llama ones (random weights, bf16, the Llama-2 tokenizer and vocabulary of
32000, untied; sharded like published checkpoints, shards of at most about 1.6 GB):

  1b   hidden 2048, 22 layers, 32 heads / 4 KV heads, FFN 5632   (TinyLlama's shapes, 1.10B)
  3b   hidden 3072, 28 layers, 24 heads / 8 KV heads, FFN 8192   (Llama-3.2-3B's, 3.01B)

They are written tensor by tensor (so this script's own memory is bounded by the largest
tensor, not the model), with the same tensor values tests/python/hf_fixtures.make_checkpoint
would give, under --workdir (default ~/.cache/qwodel-bench/rss), and reused by later runs.

Routes, per size, each one fresh process timed with GNU time (wall seconds, peak RSS: ru_maxrss,
which counts the file pages a process maps and touches as well as its heap), as bench_e2e does:

  qwodel    HF bf16  -> F16     makes the F16 GGUF the next two routes read (reported as well)
  llama.cpp F16 GGUF -> Q4_K_M  llama_model_quantize through llama-cpp-python, in a fresh
                                Python process (whose interpreter alone is reported below)
  qwodel    F16 GGUF -> Q4_K_M  the same input as llama.cpp
  qwodel    HF bf16  -> Q4_K_M  the route issue 9's criterion is about

The table gives size, parameters, route, wall seconds and peak RSS; then, per route, the ratio
of the 3B peak RSS to the 1B one. The exit status is 1 when qwodel's HF bf16 -> Q4_K_M ratio is
1.20 or more (issue 9's criterion fails), 0 otherwise (or when only one size was run). Wall
times are indicative only on a loaded machine; the peak RSS is what this bench is for.

The GGUF outputs (the F16 ones included) are deleted once measured unless --keep; the
checkpoints stay (about 2.2 GB and 6.0 GB). Without --keep at most one size's F16 GGUF and one
Q4_K_M output exist at a time: about 16 GB on disk in all at the peak; --keep leaves about 16 GB
of GGUF files more (both F16 GGUFs and three Q4_K_M outputs per size), so 24 GB in all.

    python3 bench/bench_rss.py --qwodel build-rel/qwodel [--sizes 1b 3b] [--threads 2]
        [--workdir ~/.cache/qwodel-bench/rss] [--keep]
"""
from __future__ import annotations

import argparse
import json
import math
import os
import pathlib
import shutil
import struct
import sys

HERE = pathlib.Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests" / "python"))
sys.path.insert(0, str(HERE))

from bench_e2e import LLAMA_QUANTIZE, measure  # noqa: E402  (GNU time: the command's own peak)
from bench_q8_0 import PYTHON_BASELINE  # noqa: E402

import hf_fixtures  # noqa: E402

# name -> (hidden, layers, heads, kv_heads, intermediate)
SIZES = {
    "1b": (2048, 22, 32, 4, 5632),
    "3b": (3072, 28, 24, 8, 8192),
}
TOKENIZER = "llama2"
MAX_SHARD_BYTES = 1_600_000_000
FORMAT = "Q4_K_M"
CRITERION = 1.20


def write_shard(path: pathlib.Path, tensors: list[tuple[str, tuple, str]], seed: int) -> None:
    """One bf16 safetensors file, tensors sorted by name, each made, written and freed in turn:
    the header is known from the shapes alone. Written to a temporary name, then renamed."""
    tensors = sorted(tensors)
    header: dict = {"__metadata__": {"format": "pt"}}
    offset = 0
    for name, shape, _ in tensors:
        size = math.prod(shape) * 2
        header[name] = {"dtype": "BF16", "shape": list(shape), "data_offsets": [offset, offset + size]}
        offset += size
    head = hf_fixtures._header_bytes(header)
    tmp = path.with_name(path.name + ".part")
    with open(tmp, "wb") as f:
        f.write(struct.pack("<Q", len(head)))
        f.write(head)
        for name, shape, kind in tensors:
            arr = hf_fixtures.tensor_values(seed, name, shape, kind)
            bits = hf_fixtures.float32_to_bf16_bits(arr)
            del arr
            f.write(bits.data)
            del bits
    tmp.replace(path)


def make_checkpoint(model: pathlib.Path, size: str, seed: int = 0) -> int:
    """Write (or find already written) the size's checkpoint; returns its parameter count.
    config.json is written last: its presence means the checkpoint is complete."""
    hidden, layers, heads, kv_heads, intermediate = SIZES[size]
    vocab = hf_fixtures.tokenizer_vocab_size(TOKENIZER)
    entries = hf_fixtures.model_tensor_shapes("llama", hidden=hidden, layers=layers, heads=heads,
                                              kv_heads=kv_heads, intermediate=intermediate,
                                              head_dim=hidden // heads, vocab_size=vocab,
                                              tied=False)
    params = sum(math.prod(shape) for _, _, shape, _ in entries)
    if (model / "config.json").exists():
        return params
    print(f"making the {size} checkpoint ({params / 1e9:.2f}B parameters, bf16) in {model} ...",
          flush=True)
    model.mkdir(parents=True, exist_ok=True)
    shards = max(2, math.ceil(params * 2 / MAX_SHARD_BYTES))
    weight_map: dict = {}
    # _split_groups only groups the third element of each entry, whatever it is.
    parts = hf_fixtures._split_groups([(g, n, (s, k)) for g, n, s, k in entries], shards)
    for k, part in enumerate(parts):
        fname = f"model-{k + 1:05d}-of-{shards:05d}.safetensors"
        write_shard(model / fname, [(n, s, kind) for n, (s, kind) in part], seed)
        weight_map.update((n, fname) for n, _ in part)
        print(f"  {fname} written", flush=True)
    index = {"metadata": {"total_size": params * 2},
             "weight_map": dict(sorted(weight_map.items()))}
    (model / "model.safetensors.index.json").write_text(json.dumps(index, indent=2) + "\n")
    for f in sorted((hf_fixtures.TOKENIZER_DIR / TOKENIZER).iterdir()):
        if f.is_file():
            shutil.copyfile(f, model / f.name)
    config = hf_fixtures._config("llama", TOKENIZER, hidden=hidden, layers=layers, heads=heads,
                                 kv_heads=kv_heads, intermediate=intermediate,
                                 head_dim=hidden // heads, head_dim_given=False, vocab_size=vocab,
                                 tied=False, dtype="BF16", rope_scaling=None)
    (model / "generation_config.json").write_text(
        json.dumps(hf_fixtures._generation_config(config), indent=2) + "\n")
    (model / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    return params


def only_gguf(directory: pathlib.Path) -> pathlib.Path:
    files = list(directory.glob("*.gguf"))
    if len(files) != 1:
        raise SystemExit(f"bench: expected one .gguf in {directory}, found {len(files)}")
    return files[0]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--qwodel", default="build-rel/qwodel")
    ap.add_argument("--workdir", default=str(pathlib.Path.home() / ".cache" / "qwodel-bench" / "rss"),
                    help="checkpoints (kept, reused) and outputs (default %(default)s)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--sizes", nargs="+", choices=sorted(SIZES), default=sorted(SIZES),
                    help="which checkpoints (default: both)")
    ap.add_argument("--keep", action="store_true",
                    help="keep the GGUF outputs (default: delete each once measured)")
    args = ap.parse_args()

    qwodel = str(pathlib.Path(args.qwodel).resolve())
    if not os.access(qwodel, os.X_OK):
        raise SystemExit(f"bench: no qwodel at {qwodel} (--qwodel)")
    work = pathlib.Path(args.workdir).expanduser()
    work.mkdir(parents=True, exist_ok=True)
    threads = ["--threads", str(args.threads)]

    rows: list[tuple[str, int, str, float, int]] = []
    for size in args.sizes:
        model = work / f"llama-{size}"
        params = make_checkpoint(model, size)
        out = work / f"out-{size}"
        if out.exists():
            shutil.rmtree(out)
        f16_dir, ours_f16, ours_hf = out / "f16", out / "ours-f16", out / "ours-hf"
        llama_out = out / f"llama-{FORMAT.lower()}.gguf"
        out.mkdir(parents=True)

        def run(route: str, cmd: list[str]) -> None:
            sec, rss = measure(cmd)
            rows.append((size, params, route, sec, rss))
            print(f"  {size} {route}: {sec:.1f} s, {rss / 2**20:.0f} MiB", file=sys.stderr,
                  flush=True)

        run("qwodel    HF bf16  -> F16",
            [qwodel, "quantize", str(model), "-f", "F16", "-o", str(f16_dir), "-q", *threads])
        f16 = only_gguf(f16_dir)
        run(f"llama.cpp F16 GGUF -> {FORMAT}",
            [sys.executable, "-c", LLAMA_QUANTIZE, str(f16), str(llama_out), FORMAT,
             str(args.threads)])
        if not args.keep:
            llama_out.unlink()
        run(f"qwodel    F16 GGUF -> {FORMAT}",
            [qwodel, "quantize", str(f16), "-f", FORMAT, "-o", str(ours_f16), "-q", *threads])
        if not args.keep:
            shutil.rmtree(f16_dir)
            shutil.rmtree(ours_f16)
        run(f"qwodel    HF bf16  -> {FORMAT}",
            [qwodel, "quantize", str(model), "-f", FORMAT, "-o", str(ours_hf), "-q", *threads])
        if not args.keep:
            shutil.rmtree(out)
    _, python_rss = measure([sys.executable, "-c", PYTHON_BASELINE])

    print(f"\n{'size':4} {'params':>7} {'route':28} {'wall s':>8} {'peak RSS MiB':>13}")
    for size, params, route, sec, rss in rows:
        print(f"{size:4} {params / 1e9:6.2f}B {route:28} {sec:8.1f} {rss / 2**20:13.0f}")
    print(f"(llama.cpp's figures include a Python interpreter with llama_cpp imported, which "
          f"alone peaks at {python_rss / 2**20:.0f} MiB)")

    failed = False
    if {"1b", "3b"} <= set(args.sizes):
        peak = {(size, route): rss for size, _, route, _, rss in rows}
        print(f"\npeak RSS 3b / 1b (issue 9: qwodel HF bf16 -> {FORMAT} below {CRITERION:.2f}):")
        for route in dict.fromkeys(route for _, _, route, _, _ in rows):
            ratio = peak[("3b", route)] / peak[("1b", route)]
            judged = route == f"qwodel    HF bf16  -> {FORMAT}"
            verdict = ("  PASS" if ratio < CRITERION else "  FAIL") if judged else ""
            failed |= judged and ratio >= CRITERION
            print(f"  {route:28} {ratio:5.2f}{verdict}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
