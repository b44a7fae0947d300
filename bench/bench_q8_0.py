#!/usr/bin/env python3
"""HF checkpoint -> Q8_0 GGUF: qwodel against llama.cpp's quantizer, same input, same machine.

llama.cpp quantizes from a GGUF file, so its route is two steps: convert the checkpoint to an F16
GGUF, then `llama_model_quantize` (the library call behind llama-quantize, through
llama-cpp-python) to Q8_0. Its converter (convert_hf_to_gguf.py) needs torch and is not on PyPI,
so the F16 GGUF is made once by qwodel and only llama.cpp's quantizer is timed; qwodel is timed
for both the same F16 -> Q8_0 step and its own one-step HF -> Q8_0 route.

Runs alternate (this machine is noisy) and each one is a fresh process whose wall time and peak
resident memory (ru_maxrss from wait4) are recorded; the medians and ratios are printed.

    python3 bench/bench_q8_0.py --qwodel build/qwodel [--hidden 1024 --layers 12 --runs 3]
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

LLAMA_QUANTIZE = r"""
import ctypes, sys, llama_cpp
p = llama_cpp.llama_model_quantize_default_params()
p.ftype = llama_cpp.LLAMA_FTYPE_MOSTLY_Q8_0
p.nthread = int(sys.argv[3])
sys.exit(llama_cpp.llama_model_quantize(sys.argv[1].encode(), sys.argv[2].encode(),
                                        ctypes.byref(p)))
"""

PYTHON_BASELINE = "import ctypes, sys, llama_cpp"


def measure_wait4(cmd: list[str]) -> tuple[float, int]:
    """(wall seconds, peak RSS in bytes) of one process, from wait4. A child's ru_maxrss counts
    what it inherited from this process until its exec, so bench_e2e.measure (GNU time) is used
    when available."""
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    seconds = time.perf_counter() - start
    err = proc.stderr.read().decode(errors="replace") if proc.stderr else ""
    proc.stderr.close()
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"bench: {' '.join(cmd)} failed:\n{err}")
    return seconds, usage.ru_maxrss * 1024


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--qwodel", default="build/qwodel")
    ap.add_argument("--hidden", type=int, default=1024)
    ap.add_argument("--layers", type=int, default=12)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--workdir", help="where to write the checkpoint and outputs (default: tmp)")
    args = ap.parse_args()

    import hf_fixtures

    work = pathlib.Path(args.workdir or tempfile.mkdtemp(prefix="qwodel-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    model = work / "bench-llama"
    if not (model / "config.json").exists():
        print(f"making a synthetic Llama checkpoint (hidden {args.hidden}, {args.layers} layers, "
              f"bf16) in {model} ...", flush=True)
        hf_fixtures.make_checkpoint(model, "llama", tokenizer="llama2", tied=False,
                                    hidden=args.hidden, layers=args.layers,
                                    heads=args.hidden // 64, kv_heads=args.hidden // 256,
                                    dtype="bf16", shards=2)
    qwodel = str(pathlib.Path(args.qwodel).resolve())
    f16 = work / "f16"
    subprocess.run([qwodel, "quantize", str(model), "-f", "F16", "-o", str(f16), "-q"],
                   check=True, stdout=subprocess.DEVNULL)
    f16_file = f16 / "bench-llama-f16.gguf"
    params = sum(os.path.getsize(p) for p in model.glob("*.safetensors")) // 2
    print(f"model: {params / 1e6:.0f}M parameters, F16 GGUF {f16_file.stat().st_size / 2**20:.0f} "
          f"MiB, {args.threads} threads, {args.runs} alternating runs")

    from bench_e2e import measure  # GNU time: a peak RSS that is the command's own

    routes = {
        "llama.cpp F16 GGUF -> Q8_0": [sys.executable, "-c", LLAMA_QUANTIZE, str(f16_file),
                                       str(work / "llama-q8_0.gguf"), str(args.threads)],
        "qwodel    F16 GGUF -> Q8_0": [qwodel, "quantize", str(f16_file), "-f", "Q8_0", "-o",
                                       str(work / "ours-from-f16"), "-q",
                                       "--threads", str(args.threads)],
        "qwodel    HF bf16  -> Q8_0": [qwodel, "quantize", str(model), "-f", "Q8_0", "-o",
                                       str(work / "ours-from-hf"), "-q",
                                       "--threads", str(args.threads)],
    }
    results: dict[str, list[tuple[float, int]]] = {name: [] for name in routes}
    for _ in range(args.runs):
        for name, cmd in routes.items():
            results[name].append(measure(cmd))
    _, python_rss = measure([sys.executable, "-c", PYTHON_BASELINE])

    med = {name: (statistics.median(r[0] for r in runs), statistics.median(r[1] for r in runs))
           for name, runs in results.items()}
    print(f"{'route':30} {'wall s':>8} {'peak RSS MiB':>13}")
    for name, (sec, rss) in med.items():
        print(f"{name:30} {sec:8.2f} {rss / 2**20:13.0f}")
    print(f"(the Python interpreter with llama_cpp imported alone peaks at "
          f"{python_rss / 2**20:.0f} MiB; it is part of llama.cpp's figure)")
    ref_s, ref_rss = med["llama.cpp F16 GGUF -> Q8_0"]
    for name in list(med)[1:]:
        sec, rss = med[name]
        print(f"ratio llama.cpp / {name.split()[0]} {' '.join(name.split()[1:])}: "
              f"time {ref_s / sec:.2f}x, peak RSS {ref_rss / rss:.2f}x")
    ours = (work / "ours-from-f16" / "bench-llama-f16-q8_0.gguf").read_bytes()
    theirs = (work / "llama-q8_0.gguf").read_bytes()
    print(f"F16 -> Q8_0 files identical in size: {len(ours) == len(theirs)}")
    if not args.workdir:
        shutil.rmtree(work)
    return 0


if __name__ == "__main__":
    sys.exit(main())
