#!/usr/bin/env python3
"""HF checkpoint -> FORMAT end to end: qwodel against llama.cpp's quantizer, per format.

A synthetic Llama-shaped checkpoint (bf16, sharded; about 0.75B parameters by default: hidden
2048, 14 layers, 32 heads / 4 KV heads, FFN 5632, the Llama-2 vocabulary, untied) is quantized
to each FORMAT by:

  llama.cpp  F16 GGUF -> FORMAT   llama_model_quantize (the library call behind llama-quantize,
                                  via llama-cpp-python, in a fresh Python process)
  qwodel     F16 GGUF -> FORMAT   the same input as llama.cpp
  qwodel     HF bf16  -> FORMAT   qwodel's own one-step route

llama.cpp quantizes from a GGUF file and its converter (convert_hf_to_gguf.py) needs torch, so
the F16 GGUF is made once by qwodel; llama.cpp's real HF -> FORMAT route costs that conversion
on top of the figure timed here. Runs alternate (format by format, route by route, round by
round: this machine is noisy); each is a fresh process whose wall time and peak resident memory
(ru_maxrss from wait4) are recorded; medians and ratios are printed. The two F16 GGUF -> FORMAT
outputs are compared tensor by tensor (types and data bytes) when the `gguf` package is there.

    python3 bench/bench_e2e.py --qwodel build-rel/qwodel [Q4_K_M Q8_0 ...] [--runs 3]
    python3 bench/bench_e2e.py --hidden 1024 --layers 4 --runs 1 Q8_0      # a quick look

--reference-kernels adds a route running qwodel with QWODEL_KERNELS=reference, to show what the
SIMD kernels are worth end to end.
"""
from __future__ import annotations

import argparse
import os
import pathlib
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

HERE = pathlib.Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests" / "python"))
sys.path.insert(0, str(HERE))

from bench_q8_0 import PYTHON_BASELINE  # noqa: E402
from bench_q8_0 import measure_wait4  # noqa: E402

DEFAULT_FORMATS = ["Q4_K_M", "Q8_0", "Q4_0", "Q6_K", "IQ4_NL"]

LLAMA_QUANTIZE = r"""
import ctypes, sys, llama_cpp
p = llama_cpp.llama_model_quantize_default_params()
p.ftype = getattr(llama_cpp, "LLAMA_FTYPE_MOSTLY_" + sys.argv[3])
p.nthread = int(sys.argv[4])
sys.exit(llama_cpp.llama_model_quantize(sys.argv[1].encode(), sys.argv[2].encode(),
                                        ctypes.byref(p)))
"""


GNU_TIME = "/usr/bin/time"


def measure(cmd: list[str]) -> tuple[float, int]:
    """(wall seconds, peak RSS in bytes) of one process.

    A child's ru_maxrss (what wait4 reports) also counts the memory of the process it was
    forked from, up to its exec: a child of this script, whose own peak includes making the
    checkpoint, would report at least that peak. So the command runs under GNU time (a small
    process that forks it and reports its ru_maxrss); without /usr/bin/time it falls back to
    bench_q8_0's wait4 measure, whose RSS figures then have this script's peak as a floor."""
    if not os.access(GNU_TIME, os.X_OK):
        return measure_wait4(cmd)
    with tempfile.NamedTemporaryFile(prefix="qwodel-bench-rss-") as f:
        start = time.perf_counter()
        proc = subprocess.run([GNU_TIME, "-f", "%M", "-o", f.name, *cmd],
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        seconds = time.perf_counter() - start
        if proc.returncode != 0:
            raise SystemExit(f"bench: {' '.join(cmd)} failed:\n"
                             f"{proc.stderr.decode(errors='replace')}")
        rss_kib = int(pathlib.Path(f.name).read_text().split()[-1])
    return seconds, rss_kib * 1024


def qwodel_formats(qwodel: str) -> list[str]:
    out = subprocess.run([qwodel, "list-formats", "gguf"], check=True, capture_output=True,
                         text=True).stdout
    return [line.split()[0] for line in out.splitlines()[1:] if line.strip()]


def llama_has(fmt: str) -> bool:
    code = ("import llama_cpp, sys; "
            f"sys.exit(0 if hasattr(llama_cpp, 'LLAMA_FTYPE_MOSTLY_{fmt}') else 1)")
    return subprocess.run([sys.executable, "-c", code]).returncode == 0


def compare_tensors(a: pathlib.Path, b: pathlib.Path) -> str:
    """'identical (N tensors)' or what differs, for two GGUF files' tensors (not metadata)."""
    try:
        import gguf
        import numpy as np
    except ImportError:
        return "not compared (no gguf package)"
    ta = {t.name: t for t in gguf.GGUFReader(str(a)).tensors}
    tb = {t.name: t for t in gguf.GGUFReader(str(b)).tensors}
    if sorted(ta) != sorted(tb):
        return f"different tensor names ({len(ta)} vs {len(tb)})"
    bad_type = [n for n in ta if ta[n].tensor_type != tb[n].tensor_type]
    bad_data = [n for n in ta if n not in bad_type and not np.array_equal(
        np.asarray(ta[n].data).view(np.uint8), np.asarray(tb[n].data).view(np.uint8))]
    if bad_type or bad_data:
        return (f"{len(bad_type)} tensor types and {len(bad_data)} tensors' bytes differ "
                f"(e.g. {(bad_type + bad_data)[0]})")
    return f"identical ({len(ta)} tensors)"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("formats", nargs="*",
                    help=f"llama.cpp format names (default: those of {' '.join(DEFAULT_FORMATS)} "
                         "this build supports)")
    ap.add_argument("--qwodel", default="build/qwodel")
    ap.add_argument("--hidden", type=int, default=2048)
    ap.add_argument("--layers", type=int, default=14)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--reference-kernels", action="store_true",
                    help="also time qwodel HF -> FORMAT with QWODEL_KERNELS=reference")
    ap.add_argument("--workdir", help="where to write the checkpoint and outputs (default: tmp; "
                                      "a given workdir is kept and its checkpoint reused)")
    args = ap.parse_args()

    import hf_fixtures

    qwodel = str(pathlib.Path(args.qwodel).resolve())
    supported = qwodel_formats(qwodel)
    if args.formats:
        formats = [f.upper() for f in args.formats]
        for f in formats:
            if f not in supported:
                raise SystemExit(f"bench: this qwodel build has no format {f} "
                                 f"(it has {' '.join(supported)})")
    else:
        formats = [f for f in DEFAULT_FORMATS if f in supported]
    missing = [f for f in formats if not llama_has(f)]
    if missing:
        raise SystemExit(f"bench: llama-cpp-python knows no format {' '.join(missing)}")

    work = pathlib.Path(args.workdir or tempfile.mkdtemp(prefix="qwodel-bench-e2e-"))
    work.mkdir(parents=True, exist_ok=True)
    model = work / "bench-llama"
    if not (model / "config.json").exists():
        print(f"making a synthetic Llama checkpoint (hidden {args.hidden}, {args.layers} layers, "
              f"bf16, sharded) in {model} ...", flush=True)
        hf_fixtures.make_checkpoint(model, "llama", tokenizer="llama2", tied=False,
                                    hidden=args.hidden, layers=args.layers,
                                    heads=args.hidden // 64, kv_heads=max(1, args.hidden // 512),
                                    dtype="bf16", shards=4)
    f16_dir = work / "f16"
    f16_file = f16_dir / "bench-llama-f16.gguf"
    if not f16_file.exists():
        subprocess.run([qwodel, "quantize", str(model), "-f", "F16", "-o", str(f16_dir), "-q"],
                       check=True, stdout=subprocess.DEVNULL)
    params = sum(os.path.getsize(p) for p in model.glob("*.safetensors")) // 2
    print(f"model: {params / 1e6:.0f}M parameters, F16 GGUF {f16_file.stat().st_size / 2**20:.0f} "
          f"MiB; {args.threads} threads; formats {' '.join(formats)}; {args.runs} alternating runs",
          flush=True)

    out = work / "out"

    def routes(fmt: str) -> dict[str, list[str]]:
        low = fmt.lower()
        r = {
            "llama.cpp F16 GGUF": [sys.executable, "-c", LLAMA_QUANTIZE, str(f16_file),
                                   str(out / f"llama-{low}.gguf"), fmt, str(args.threads)],
            "qwodel    F16 GGUF": [qwodel, "quantize", str(f16_file), "-f", fmt, "-o",
                                   str(out / "ours-f16"), "-q", "--threads", str(args.threads)],
            "qwodel    HF bf16 ": [qwodel, "quantize", str(model), "-f", fmt, "-o",
                                   str(out / "ours-hf"), "-q", "--threads", str(args.threads)],
        }
        if args.reference_kernels:
            r["qwodel    HF, ref "] = ["env", "QWODEL_KERNELS=reference", *r["qwodel    HF bf16 "]]
        return r

    results: dict[tuple[str, str], list[tuple[float, int]]] = {}
    same: dict[str, str] = {}
    for run in range(args.runs):
        for fmt in formats:
            for name, cmd in routes(fmt).items():
                out.mkdir(parents=True, exist_ok=True)
                results.setdefault((fmt, name), []).append(measure(cmd))
            if run == 0:
                ours = out / "ours-f16" / f"bench-llama-f16-{fmt.lower()}.gguf"
                same[fmt] = compare_tensors(out / f"llama-{fmt.lower()}.gguf", ours)
            shutil.rmtree(out)
            print(f"run {run + 1}/{args.runs} {fmt} done", file=sys.stderr, flush=True)
    _, python_rss = measure([sys.executable, "-c", PYTHON_BASELINE])

    print(f"\n{'format':8} {'route':20} {'wall s':>8} {'peak RSS MiB':>13} "
          f"{'llama.cpp/this: time':>21} {'RSS':>6}")
    for fmt in formats:
        med = {}
        for name in routes(fmt):
            runs = results[(fmt, name)]
            med[name] = (statistics.median(r[0] for r in runs),
                         statistics.median(r[1] for r in runs))
        ref_s, ref_rss = med["llama.cpp F16 GGUF"]
        for name, (sec, rss) in med.items():
            ratio = ("" if name.startswith("llama")
                     else f"{ref_s / sec:20.2f}x {ref_rss / rss:5.2f}x")
            print(f"{fmt:8} {name:20} {sec:8.2f} {rss / 2**20:13.0f} {ratio}")
    print(f"\n(llama.cpp's figures include a Python interpreter with llama_cpp imported, which "
          f"alone peaks at {python_rss / 2**20:.0f} MiB)")
    for fmt in formats:
        print(f"{fmt}: F16 GGUF -> {fmt} tensors, qwodel vs llama.cpp: {same[fmt]}")
    if not args.workdir:
        shutil.rmtree(work)
    return 0


if __name__ == "__main__":
    sys.exit(main())
