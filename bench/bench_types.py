#!/usr/bin/env python3
"""Per-type quantization throughput: qwodel's kernels against llama.cpp's ggml_quantize_chunk.

Both quantize the same Gaussian rows (written once to a file that tests/tools/quant_bench
reads), for every type both can produce without an importance matrix (so the list grows as
encoders land), with 1 and 2 threads:

- ggml: llama.cpp's own library (libggml-base from the llama-cpp-python wheel) through ctypes.
  ggml_quantize_chunk is single-threaded; for N threads the rows are split into N contiguous
  chunks quantized by N Python threads at once (ctypes releases the GIL), which is how
  llama-quantize splits a tensor.
- qwodel: tests/tools/quant_bench, which runs the type table's row kernels on the library's
  thread pool, both the scalar reference kernels and the active (SIMD) ones.

Each figure is the median of --repeats timed passes over all rows, in million values per second.
Runs alternate between the two tools, type by type and round by round, because this machine is
noisy; the CPU-time figures (process CPU seconds, all threads) are less sensitive to other load
than wall time and are printed as well. No assertion is made on speed.

    python3 bench/bench_types.py --build build-rel [--types q4_0,q6_K] [--rows 512 --rounds 2]
"""
from __future__ import annotations

import argparse
import ctypes
import json
import os
import pathlib
import statistics
import subprocess
import sys
import tempfile
import threading
import time

import numpy as np


# ---- llama.cpp's side --------------------------------------------------------------------------

class Ggml:
    def __init__(self):
        import llama_cpp  # the wheel's libraries are the reference; imported only here

        libdir = pathlib.Path(llama_cpp.__file__).parent / "lib"
        self.lib = lib = ctypes.CDLL(str(libdir / "libggml-base.so"))
        lib.ggml_type_name.restype = ctypes.c_char_p
        lib.ggml_type_name.argtypes = [ctypes.c_int]
        lib.ggml_row_size.restype = ctypes.c_size_t
        lib.ggml_row_size.argtypes = [ctypes.c_int, ctypes.c_int64]
        lib.ggml_quantize_requires_imatrix.restype = ctypes.c_bool
        lib.ggml_quantize_requires_imatrix.argtypes = [ctypes.c_int]
        lib.ggml_quantize_init.restype = None
        lib.ggml_quantize_init.argtypes = [ctypes.c_int]
        lib.ggml_quantize_chunk.restype = ctypes.c_size_t
        lib.ggml_quantize_chunk.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p,
                                            ctypes.c_int64, ctypes.c_int64, ctypes.c_int64,
                                            ctypes.c_void_p]

    def pass_fn(self, type_id: int, x: np.ndarray, threads: int):
        """A function that quantizes all rows of x once with `threads` threads."""
        rows, n_per_row = x.shape
        dst = np.empty(rows * self.lib.ggml_row_size(type_id, n_per_row), dtype=np.uint8)
        self.lib.ggml_quantize_init(type_id)
        bounds = [rows * k // threads for k in range(threads + 1)]
        chunks = [(bounds[k], bounds[k + 1]) for k in range(threads) if bounds[k + 1] > bounds[k]]

        def run(chunk):
            r0, r1 = chunk
            self.lib.ggml_quantize_chunk(type_id, x.ctypes.data, dst.ctypes.data, r0 * n_per_row,
                                         r1 - r0, n_per_row, None)

        if len(chunks) == 1:
            return lambda: run(chunks[0])

        def parallel():
            workers = [threading.Thread(target=run, args=(c,)) for c in chunks[1:]]
            for w in workers:
                w.start()
            run(chunks[0])  # the calling thread takes a share, as qwodel's pool does
            for w in workers:
                w.join()

        return parallel


def measure(fn, seconds: float, repeats: int) -> tuple[float, float]:
    """(median wall seconds, median CPU seconds) per call, as quant_bench measures."""
    t0 = time.perf_counter()
    fn()  # warm-up and a first estimate
    one = max(time.perf_counter() - t0, 1e-9)
    passes = max(1, int(np.ceil(seconds / repeats / one)))
    wall, cpu = [], []
    for _ in range(repeats):
        t0, c0 = time.perf_counter(), time.process_time()
        for _ in range(passes):
            fn()
        wall.append((time.perf_counter() - t0) / passes)
        cpu.append((time.process_time() - c0) / passes)
    return statistics.median(wall), statistics.median(cpu)


# ---- qwodel's side -----------------------------------------------------------------------------

def our_types(bench: pathlib.Path) -> dict[str, int]:
    """name -> GGUF id of every type this build can encode."""
    out = subprocess.run([str(bench), "--list"], check=True, capture_output=True, text=True).stdout
    return {line.split()[0]: int(line.split()[1]) for line in out.splitlines() if line.strip()}


def run_ours(bench, data_path, n_per_row, name, threads, seconds, repeats) -> list[dict]:
    cmd = [str(bench), "--input", str(data_path), "--n-per-row", str(n_per_row), "--types", name,
           "--threads", str(threads), "--kernels", "both", "--seconds", str(seconds),
           "--repeats", str(repeats)]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    return json.loads(out)["results"]


# ---- main --------------------------------------------------------------------------------------

def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--build", default=os.environ.get("QWODEL_BUILD_DIR", "build"),
                    help="build directory holding quant_bench (default: build)")
    ap.add_argument("--types", help="comma-separated subset (default: every common type)")
    ap.add_argument("--threads", default="1,2")
    ap.add_argument("--rows", type=int, default=512)
    ap.add_argument("--n-per-row", type=int, default=4096)
    ap.add_argument("--seconds", type=float, default=0.6, help="per measurement (default 0.6)")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--rounds", type=int, default=2,
                    help="alternating rounds; each figure is the best round's median")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--json", help="also write every measurement here")
    args = ap.parse_args()

    bench = pathlib.Path(args.build).resolve() / "quant_bench"
    if not bench.exists():
        raise SystemExit(f"{bench} not found: build it (cmake --build {args.build}) or pass "
                         "--build")
    which = subprocess.run([str(bench), "--which"], check=True, capture_output=True,
                           text=True).stdout.strip()
    ggml = Ggml()
    ours = our_types(bench)
    names = [n for n in ours if not ggml.lib.ggml_quantize_requires_imatrix(ours[n])]
    if args.types:
        wanted = [t.strip().lower() for t in args.types.split(",")]
        names = [n for n in names if n.lower() in wanted]
    names = [n for n in names if args.n_per_row % _block(bench, n) == 0]
    threads = [int(t) for t in args.threads.split(",")]

    rng = np.random.default_rng(args.seed)
    x = rng.standard_normal((args.rows, args.n_per_row)).astype(np.float32)
    n_values = x.size
    print(f"{n_values / 1e6:.1f}M Gaussian values ({args.rows} rows of {args.n_per_row}); "
          f"qwodel kernels: reference and {which}; {args.rounds} alternating rounds of "
          f"{args.repeats} x {args.seconds:.2f}s; M values/s (median pass, best round)",
          flush=True)

    # results[(name, threads)][tool] = (best wall M/s, best cpu M/s) over rounds
    results: dict = {}
    log = []
    with tempfile.TemporaryDirectory(prefix="qwodel-bench-types-") as tmp:
        data_path = pathlib.Path(tmp) / "x.f32"
        x.astype("<f4").tofile(data_path)
        for rnd in range(args.rounds):
            for name in names:
                for t in threads:
                    slot = results.setdefault((name, t), {})
                    wall, cpu = measure(ggml.pass_fn(ours[name], x, t), args.seconds,
                                        args.repeats)
                    entries = [("llama.cpp", n_values / wall / 1e6, n_values / cpu / 1e6)]
                    for r in run_ours(bench, data_path, args.n_per_row, name, t, args.seconds,
                                      args.repeats):
                        label = "ours-ref" if r["kernels"] == "reference" else "ours-simd"
                        entries.append((label, r["mvalues_per_s"], r["mvalues_per_cpu_s"]))
                    for label, w, c in entries:
                        best = slot.get(label, (0.0, 0.0))
                        slot[label] = (max(best[0], w), max(best[1], c))
                        log.append(dict(round=rnd, type=name, threads=t, tool=label,
                                        mvalues_per_s=w, mvalues_per_cpu_s=c))
            print(f"round {rnd + 1}/{args.rounds} done", file=sys.stderr, flush=True)

    for t in threads:
        print(f"\n{t} thread{'s' if t > 1 else ''}: M values per wall-clock second; the 'cpu' "
              f"columns are M values per CPU-second (all threads together)")
        print(f"{'type':8} {'llama.cpp':>10} {'ours-ref':>10} {'ours-simd':>10} "
              f"{'ours/llama':>11} {'cpu: llama':>11} {'cpu: ours':>10} {'ratio':>6}")
        for name in names:
            slot = results[(name, t)]
            ref = slot["llama.cpp"]
            best = slot.get("ours-simd", slot["ours-ref"])
            simd = f"{slot['ours-simd'][0]:10.1f}" if "ours-simd" in slot else f"{'-':>10}"
            print(f"{name:8} {ref[0]:10.1f} {slot['ours-ref'][0]:10.1f} {simd} "
                  f"{best[0] / ref[0]:10.2f}x {ref[1]:11.1f} {best[1]:10.1f} "
                  f"{best[1] / ref[1]:5.2f}x")
    if args.json:
        pathlib.Path(args.json).write_text(json.dumps(log, indent=1))
    return 0


def _block(bench: pathlib.Path, name: str, _cache: dict = {}) -> int:
    if not _cache:
        out = subprocess.run([str(bench), "--list"], check=True, capture_output=True,
                             text=True).stdout
        _cache.update({ln.split()[0]: int(ln.split()[2]) for ln in out.splitlines() if ln.strip()})
    return _cache[name]


if __name__ == "__main__":
    sys.exit(main())
