"""Every llama-quantize format, option and importance matrix, judged by llama.cpp itself.

The oracle is llama.cpp's own quantizer as llama-cpp-python installs it
(`llama_model_quantize`), run on the F16 GGUF that `qwodel -f F16` writes:

* types: for every format x every test model, the type of every tensor in qwodel's plan
  (`--dry-run --json`, which needs no kernels) equals the type llama.cpp gives it, without and
  with an importance matrix and with each of llama-quantize's options. llama.cpp's types are read
  from its own dry run (`params.dry_run`), whose per-tensor report is the decision its real run
  writes; test_dry_run_oracle_equals_written_types checks that on written files.
* refusals: where llama.cpp refuses (an imatrix-only format without an imatrix, a row length no
  fallback fits), qwodel refuses too, naming the same tensor;
* bytes: for every format whose types this build can encode, the file's tensors are byte-equal to
  llama.cpp's, without an importance matrix and with one given as a legacy .dat and as a GGUF
  file (the same numbers reach llama.cpp through `params.imatrix`). Formats whose kernels are not
  built yet are skipped with the type that is missing; the skip goes away when the kernel lands.

Besides the HF test models of conftest.MODELS, a few GGUF-only models built here reach the rules
those cannot: 40 layers with 4 heads per KV head, an 80-layer "70B", 8 stacked experts with tied
embeddings, Falcon's fused attention, row lengths that fit no block, and names llama.cpp never
quantizes.
"""
from __future__ import annotations

import ctypes
import json
import os
import pathlib
import re
import struct

import numpy as np
import pytest

import hf_fixtures  # noqa: E402
from conftest import MODELS, run_qwodel

gguf = pytest.importorskip("gguf")
llama_cpp = pytest.importorskip("llama_cpp")
import llama_cpp._logger as llama_logger  # noqa: E402

# Every format qwodel has a row for, with its llama_ftype (llama.h).
FORMATS = {
    "Q4_K_M": 15, "Q8_0": 7, "Q2_K": 10, "Q3_K_M": 12, "Q4_0": 2, "Q4_K_S": 14, "Q5_K_M": 17,
    "Q5_K_S": 16, "Q6_K": 18, "IQ4_NL": 25, "IQ3_M": 27, "Q4_1": 3, "Q5_0": 8, "Q5_1": 9,
    "Q3_K_S": 11, "Q3_K_L": 13, "IQ4_XS": 30, "IQ3_S": 26, "IQ3_XS": 22, "Q2_K_S": 21,
    "IQ3_XXS": 23, "IQ2_M": 29, "IQ2_S": 28, "IQ2_XS": 20, "IQ2_XXS": 19, "IQ1_M": 31,
    "IQ1_S": 24, "F16": 1, "BF16": 32, "F32": 0,
}
# Listed whatever the build: the spec's eleven and llama-quantize's formats that need no imatrix.
ALWAYS_LISTED = ["Q4_K_M", "Q8_0", "Q2_K", "Q3_K_M", "Q4_0", "Q4_K_S", "Q5_K_M", "Q5_K_S", "Q6_K",
                 "IQ4_NL", "IQ3_M", "Q4_1", "Q5_0", "Q5_1", "Q3_K_S", "Q3_K_L", "IQ4_XS", "IQ3_S",
                 "IQ3_XS", "F16", "BF16", "F32"]
ALIASES = {"Q4_K": "Q4_K_M", "Q5_K": "Q5_K_M", "Q3_K": "Q3_K_M"}

# GGUF-only models for rules the HF test models do not reach (see make_synthetic).
SYNTHETIC = {
    "deep": dict(arch="llama", n_layer=40, n_head=8, n_head_kv=2),
    "llama70b": dict(arch="llama", n_layer=80, n_head=8, n_head_kv=1, small=True),
    "moe8": dict(arch="llama", n_layer=8, n_head=4, n_head_kv=4, n_expert=8, tied=True),
    "falcon": dict(arch="falcon", n_layer=8, n_head=4, n_head_kv=1, fused_qkv=True),
    "odd": dict(arch="llama", n_layer=2, n_head=4, n_head_kv=4, n_embd=96, n_ff=48),
    "names": dict(arch="llama", n_layer=2, n_head=4, n_head_kv=4, extra_names=True),
}
ALL_MODELS = list(MODELS) + list(SYNTHETIC)

# Qwen2/Qwen3 shapes (q/k/v biases and tied head; q/k norms, GQA, 3 shards) with the 32000-token
# llama2 vocabulary instead of Qwen's 151936 rows: the byte comparison against llama.cpp covers
# each architecture's tensors, and the huge embeddings would only add minutes under ASan.
SMALL_VOCAB = {
    "qwen2-small": dict(MODELS["qwen2"], tokenizer="llama2"),
    "qwen3-small": {**{k: v for k, v in MODELS["qwen3"].items() if k != "vocab_size"},
                    "tokenizer": "llama2"},
}


# ---- llama.cpp, through llama-cpp-python ---------------------------------------------------------

_log = []


@llama_cpp.llama_log_callback
def _capture(level, text, user_data):
    _log.append(text.decode("utf-8", "replace"))


def ggml_type(name: str) -> int:
    return int(gguf.GGMLQuantizationType[name.upper()].value)


def llama_run(src, dst, fmt, *, dry_run=False, imatrix=None, leave_output_tensor=False,
              output_tensor_type=None, token_embedding_type=None, pure=False, tensor_type=(),
              kv_overrides=()):
    """llama_model_quantize with llama-quantize's options; returns (rc, log text)."""
    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = FORMATS[fmt]
    params.nthread = os.cpu_count() or 1
    params.dry_run = dry_run
    params.quantize_output_tensor = not leave_output_tensor
    params.pure = pure
    if output_tensor_type:
        params.output_tensor_type = ggml_type(output_tensor_type)
    if token_embedding_type:
        params.token_embedding_type = ggml_type(token_embedding_type)
    keep = []
    if tensor_type:
        tto = (llama_cpp.llama_model_tensor_override * (len(tensor_type) + 1))()
        for i, (pattern, type_name) in enumerate(tensor_type):
            # llama-quantize lower-cases the pattern before it hands it over
            keep.append(pattern.lower().encode())
            tto[i].pattern = keep[-1]
            tto[i].type = ggml_type(type_name)
        tto[len(tensor_type)].pattern = None
        tto[len(tensor_type)].type = len(gguf.GGMLQuantizationType)
        keep.append(tto)
        params.tt_overrides = ctypes.cast(
            tto, ctypes.POINTER(llama_cpp.llama_model_tensor_override))
    if imatrix is not None:
        arr = (llama_cpp.llama_model_imatrix_data * (len(imatrix) + 1))()
        for i, (name, values) in enumerate(sorted(imatrix.items())):
            values = np.ascontiguousarray(values, dtype=np.float32)
            keep += [name.encode(), values]
            arr[i].name = keep[-2]
            arr[i].data = values.ctypes.data_as(ctypes.POINTER(ctypes.c_float))
            arr[i].size = values.size
        arr[len(imatrix)].name = None
        keep.append(arr)
        params.imatrix = ctypes.cast(arr, ctypes.POINTER(llama_cpp.llama_model_imatrix_data))
    if kv_overrides:
        kvo = (llama_cpp.llama_model_kv_override * (len(kv_overrides) + 1))()
        for i, (key, value) in enumerate(kv_overrides):
            kvo[i].key = key.encode()
            if isinstance(value, str):
                kvo[i].tag = llama_cpp.LLAMA_KV_OVERRIDE_TYPE_STR
                kvo[i].value.val_str = value.encode()[:127]
            else:
                kvo[i].tag = llama_cpp.LLAMA_KV_OVERRIDE_TYPE_INT
                kvo[i].value.val_i64 = value
        kvo[len(kv_overrides)].key = b""
        keep.append(kvo)
        params.kv_overrides = ctypes.cast(kvo, ctypes.POINTER(llama_cpp.llama_model_kv_override))
    _log.clear()
    llama_cpp.llama_log_set(_capture, None)
    try:
        rc = llama_cpp.llama_model_quantize(str(src).encode(), str(dst).encode(),
                                            ctypes.byref(params))
    finally:
        llama_cpp.llama_log_set(llama_logger.llama_log_callback, ctypes.c_void_p(0))
    return rc, "".join(_log)


_REPORT = re.compile(r"\[\s*\d+/\s*\d+\]\s+(\S+)\s+- \[[^\]]*\], type =\s*(\S+), size =\s*"
                     r"[\d.]+ MiB(?: ->\s*[\d.]+ MiB \((\S+)\))?")


def llama_types(src, fmt, tmp_path, **options):
    """What llama.cpp decides for every tensor: (rc, {name: type}, log) from its dry run."""
    rc, log = llama_run(src, tmp_path / "llama-dry-run.gguf", fmt, dry_run=True, **options)
    types = {m.group(1): m.group(3) or m.group(2) for m in _REPORT.finditer(log)}
    return rc, types, log


def llama_refusal(src, fmt, tmp_path, **options):
    """The tensor llama.cpp names when it refuses for want of an imatrix (it stops before
    quantizing anything), or None when its dry run says it needs none (or fails otherwise)."""
    rc, _, log = llama_types(src, fmt, tmp_path, **options)
    if rc != 0 or "will require an imatrix" not in log:  # refused for another reason, or not
        return None
    rc, log = llama_run(src, tmp_path / "llama-refused.gguf", fmt, **options)
    assert rc != 0
    match = re.search(r"offending tensor: (\S+)", log)
    assert match, log[-2000:]
    return match.group(1)


# ---- qwodel ------------------------------------------------------------------------------------

def option_flags(imatrix=None, leave_output_tensor=False, output_tensor_type=None,
                 token_embedding_type=None, pure=False, tensor_type=()):
    flags = []
    if imatrix is not None:
        flags += ["--imatrix", imatrix]
    if leave_output_tensor:
        flags += ["--leave-output-tensor", "true"]
    if output_tensor_type:
        flags += ["--output-tensor-type", output_tensor_type]
    if token_embedding_type:
        flags += ["--token-embedding-type", token_embedding_type]
    if pure:
        flags += ["--pure", "true"]
    if tensor_type:
        flags += ["--tensor-type", ",".join(f"{p}={t}" for p, t in tensor_type)]
    return flags


def qwodel_plan(qwodel_bin, src, fmt, out_dir, *flags):
    """(CompletedProcess, {name: type} or None)."""
    proc = run_qwodel(qwodel_bin, "quantize", src, "-b", "gguf", "-f", fmt, "--dry-run", "--json",
                      "-o", out_dir, *flags, check=False)
    if proc.returncode != 0:
        return proc, None
    plan = json.loads(proc.stdout)
    return proc, {t["name"]: t["type"] for t in plan["tensors"]}


@pytest.fixture(scope="session")
def offered(qwodel_bin):
    """{format: description} of `qwodel list-formats gguf`."""
    out = run_qwodel(qwodel_bin, "list-formats", "gguf").stdout
    listed = {}
    for line in out.splitlines()[1:]:
        name, _, description = line.strip().partition(" ")
        listed[name] = description.strip()
    return listed


def require_offered(qwodel_bin, offered, fmt, tmp_path, src):
    """Skips, with qwodel's reason, a format this build does not offer yet."""
    if fmt in offered:
        return
    proc = run_qwodel(qwodel_bin, "quantize", src, "-b", "gguf", "-f", fmt, "--dry-run", "-o",
                      tmp_path, check=False)
    assert proc.returncode == 1 and "cannot produce yet" in proc.stderr, proc.stderr
    pytest.skip(proc.stderr.strip().splitlines()[-1])


# ---- models ------------------------------------------------------------------------------------

def make_synthetic(path, arch, n_layer, n_head, n_head_kv, n_expert=0, n_embd=256, n_ff=512,
                   n_vocab=512, fused_qkv=False, small=False, extra_names=False, tied=False,
                   seed=7):
    """A GGUF of F16 weights (F32 norms) with llama.cpp's tensor names: what llama.cpp's quantizer
    reads (it loads hyperparameters, not the graph, so shapes need only be consistent)."""
    w = gguf.GGUFWriter(str(path), arch)
    w.add_name(path.stem)
    w.add_block_count(n_layer)
    w.add_context_length(256)
    w.add_embedding_length(n_embd)
    w.add_feed_forward_length(n_ff)
    w.add_head_count(n_head)
    w.add_head_count_kv(n_head_kv)
    w.add_layer_norm_rms_eps(1e-5)
    w.add_layer_norm_eps(1e-5)
    if n_expert:
        w.add_expert_count(n_expert)
        w.add_expert_used_count(2)
    w.add_file_type(1)
    rng = np.random.default_rng(seed)

    def add(name, *shape):  # shape in GGUF order: ne0 first
        dtype = np.float32 if len(shape) == 1 else np.float16
        w.add_tensor(name, (rng.standard_normal(shape[::-1]) * 0.05).astype(dtype))

    head = n_embd // n_head
    rows = 32 if small else None  # the 70B model only needs its names and row lengths
    add("token_embd.weight", n_embd, n_vocab)
    add("output_norm.weight", n_embd)
    if not tied:
        add("output.weight", n_embd, n_vocab)
    if extra_names:
        for name in ("position_embd.weight", "token_types.weight", "per_layer_token_embd.weight",
                     "v.patch_embd.weight", "mm.a.code_embd.weight"):
            add(name, n_embd, 64)
    for i in range(n_layer):
        p = f"blk.{i}."
        add(p + "attn_norm.weight", n_embd)
        if fused_qkv:
            add(p + "attn_qkv.weight", n_embd, n_embd + 2 * head * n_head_kv)
        else:
            add(p + "attn_q.weight", n_embd, rows or n_embd)
            add(p + "attn_k.weight", n_embd, rows or head * n_head_kv)
            add(p + "attn_v.weight", n_embd, rows or head * n_head_kv)
        add(p + "attn_output.weight", n_embd, rows or n_embd)
        add(p + "ffn_norm.weight", n_embd)
        if n_expert:
            add(p + "ffn_gate_inp.weight", n_embd, n_expert)
            add(p + "ffn_gate_exps.weight", n_embd, 64, n_expert)
            add(p + "ffn_up_exps.weight", n_embd, 64, n_expert)
            add(p + "ffn_down_exps.weight", 64, n_embd, n_expert)
        else:
            if not fused_qkv:
                add(p + "ffn_gate.weight", n_embd, rows or n_ff)
            add(p + "ffn_up.weight", n_embd, rows or n_ff)
            add(p + "ffn_down.weight", n_ff, rows or n_embd)
        if extra_names and i == 0:
            for name in ("attn_kv_b.weight", "ssm_conv1d.weight", "time_mix_first.weight",
                         "ffn_gate_tid2eid.weight", "attn_rel_b.weight", "hc_attn_fn.weight"):
                add(p + name, n_embd, 64)
            add(p + "attn_q.bias", n_embd)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


@pytest.fixture(scope="module")
def f16_gguf(qwodel_bin, model_dir, tmp_path_factory):
    """f16_gguf(key) -> the F16 GGUF of a test model: `qwodel -f F16` of MODELS[key], or a
    synthetic GGUF of SYNTHETIC[key]."""
    root = tmp_path_factory.mktemp("f16")
    made = {}

    def get(key):
        if key not in made:
            if key in SYNTHETIC:
                made[key] = make_synthetic(root / f"{key}.gguf", **SYNTHETIC[key])
            else:
                src = (hf_fixtures.make_checkpoint(root / "hf" / key, **SMALL_VOCAB[key])
                       if key in SMALL_VOCAB else model_dir(key))
                proc = run_qwodel(qwodel_bin, "quantize", src, "-f", "F16", "-o", root, "-q")
                made[key] = pathlib.Path(proc.stdout.strip())
        return made[key]

    return get


# ---- importance matrices -----------------------------------------------------------------------

def random_imatrix(src, seed=3):
    """Random positive sums for every weight llama.cpp quantizes except token_embd (which
    llama-imatrix never sees): {name: (sums [n_mat, ne0] f32, counts [n_mat] f32)}."""
    reader = gguf.GGUFReader(str(src))
    rng = np.random.default_rng(seed)
    out = {}
    for t in reader.tensors:
        if len(t.shape) < 2 or not t.name.endswith("weight") or "norm" in t.name:
            continue
        if t.name in ("token_embd.weight", "per_layer_token_embd.weight"):
            continue
        ne0 = int(t.shape[0])
        n_mat = int(t.shape[2]) if len(t.shape) > 2 else 1
        sums = rng.uniform(0.05, 40.0, size=(n_mat, ne0)).astype(np.float32)
        counts = rng.integers(1, 12, size=n_mat).astype(np.float32)
        if n_mat > 1:
            counts[1] = 0  # an expert that saw no tokens: its importance is 1
        out[t.name] = (sums, counts)
    return out


def imatrix_values(data, legacy):
    """What llama-quantize hands llama.cpp for each entry (float32 arithmetic, as in C++)."""
    values = {}
    for name, (sums, counts) in data.items():
        if legacy:  # one call count per entry
            values[name] = (sums.reshape(-1) / np.float32(counts[0])).astype(np.float32)
        else:
            per = np.where(counts[:, None] > 0, sums / np.where(counts > 0, counts, 1)[:, None],
                           np.float32(1))
            values[name] = per.astype(np.float32).reshape(-1)
    return values


def write_legacy_imatrix(path, data, chunks=17, dataset="calibration.txt"):
    with open(path, "wb") as f:
        f.write(struct.pack("<i", len(data)))
        for name, (sums, counts) in data.items():
            raw = name.encode()
            f.write(struct.pack("<i", len(raw)) + raw)
            f.write(struct.pack("<ii", int(counts[0]), sums.size))
            f.write(sums.reshape(-1).astype("<f4").tobytes())
        f.write(struct.pack("<i", chunks))
        f.write(struct.pack("<i", len(dataset.encode())) + dataset.encode())
    return path


def write_gguf_imatrix(path, data, chunks=23, datasets=("wiki.train.raw", "code.txt")):
    w = gguf.GGUFWriter(str(path), "imatrix")
    w.add_type("imatrix")
    w.add_array("imatrix.datasets", list(datasets))
    w.add_uint32("imatrix.chunk_count", chunks)
    w.add_uint32("imatrix.chunk_size", 512)
    for name, (sums, counts) in data.items():
        w.add_tensor(name + ".in_sum2", sums)                       # ne {ne0, n_mat}
        w.add_tensor(name + ".counts", counts.reshape(-1, 1))       # ne {1, n_mat}
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


@pytest.fixture(scope="module")
def imatrix_files(f16_gguf, tmp_path_factory):
    """imatrix_files(key, kind) -> (path, {name: values llama.cpp receives}, metadata), kind
    "dat" (legacy) or "gguf"."""
    root = tmp_path_factory.mktemp("imatrix")
    made = {}

    def get(key, kind):
        if (key, kind) not in made:
            data = random_imatrix(f16_gguf(key))
            if kind == "dat":
                path = write_legacy_imatrix(root / f"{key}.dat", data)
                meta = {"dataset": "calibration.txt", "chunks": 17}
            else:
                path = write_gguf_imatrix(root / f"{key}.imatrix.gguf", data)
                meta = {"dataset": "wiki.train.raw", "chunks": 23}
            meta["entries"] = len(data)
            made[key, kind] = (path, imatrix_values(data, kind == "dat"), meta)
        return made[key, kind]

    return get


def llama_imatrix_kvs(path, meta):
    """The KV overrides llama-quantize passes along with an imatrix."""
    return [("quantize.imatrix.file", str(path)), ("quantize.imatrix.dataset", meta["dataset"]),
            ("quantize.imatrix.entries_count", meta["entries"]),
            ("quantize.imatrix.chunks_count", meta["chunks"])]


# ---- listings and names ------------------------------------------------------------------------

def test_list_formats_shows_every_format_with_a_description(offered, qwodel_bin):
    for fmt in ALWAYS_LISTED:
        assert fmt in offered, fmt
    for fmt, description in offered.items():
        assert fmt in FORMATS, fmt
        assert len(description) > 10, fmt
    assert offered["Q4_K_M"].endswith("(default)")
    spec = {"Q4_K_M": "Best balance of speed and quality. Recommended for most users.",
            "Q8_0": "Near-lossless quality. Requires more RAM.",
            "Q2_K": "Maximum compression. Reduced quality.", "Q3_K_M": "3-bit medium quality.",
            "Q4_0": "Compact 4-bit, slightly smaller than Q4_K_M.",
            "Q4_K_S": "Small 4-bit K-quant.",
            "Q5_K_M": "Better quality than Q4_K_M, slightly larger.",
            "Q5_K_S": "Small 5-bit K-quant.", "Q6_K": "High quality between Q8_0 and Q4_K_M.",
            "IQ4_NL": "4.5 bpw importance-based quantization.",
            "IQ3_M": "3.66 bpw compact importance quantization."}
    for fmt, description in spec.items():
        assert offered[fmt].startswith(description), fmt
    assert list(offered)[:11] == list(spec)


def test_imatrix_only_formats_listed_exactly_when_encodable(offered, qwodel_bin, f16_gguf,
                                                            tmp_path):
    """Q2_K_S, IQ3_XXS, IQ2_*, IQ1_* exist only once every type they can produce has a kernel;
    otherwise qwodel names the missing ones."""
    src = f16_gguf("llama2")
    for fmt in set(FORMATS) - set(ALWAYS_LISTED):
        proc = run_qwodel(qwodel_bin, "quantize", src, "-b", "gguf", "-f", fmt, "--dry-run",
                          "-o", tmp_path, check=False)
        if fmt in offered:
            assert "cannot produce yet" not in proc.stderr, proc.stderr
        else:
            assert proc.returncode == 1 and "cannot produce yet" in proc.stderr, (fmt,
                                                                                  proc.stderr)


@pytest.mark.parametrize("alias", sorted(ALIASES))
def test_llama_quantize_aliases(qwodel_bin, f16_gguf, tmp_path, alias):
    proc = run_qwodel(qwodel_bin, "quantize", f16_gguf("llama2"), "-b", "gguf", "-f", alias,
                      "--dry-run", "--json", "-o", tmp_path)
    assert json.loads(proc.stdout)["output"].endswith(f"-{ALIASES[alias].lower()}.gguf")


def test_default_format_is_q4_k_m(qwodel_bin, f16_gguf, tmp_path):
    proc = run_qwodel(qwodel_bin, "quantize", f16_gguf("llama2"), "--dry-run", "--json", "-o",
                      tmp_path)
    assert json.loads(proc.stdout)["output"].endswith("-q4_k_m.gguf")


# ---- types: every format x every model ---------------------------------------------------------

def check_types(qwodel_bin, src, fmt, tmp_path, imatrix=None, imatrix_values=None, **options):
    """Asserts qwodel's plan equals llama.cpp's decision, or that both refuse."""
    rc, theirs, log = llama_types(src, fmt, tmp_path, imatrix=imatrix_values, **options)
    proc, ours = qwodel_plan(qwodel_bin, src, fmt, tmp_path / "out",
                             *option_flags(imatrix=imatrix, **options))
    if rc != 0:  # llama.cpp refuses the model: no fallback fits some row
        assert ours is None, f"llama.cpp refused ({log.strip().splitlines()[-1]}), qwodel did not"
        assert proc.returncode == 1, proc.stderr
        return None
    if imatrix is None and "will require an imatrix" in log:
        tensor = llama_refusal(src, fmt, tmp_path, **options)
        assert ours is None, f"llama.cpp needs an imatrix for {tensor}; qwodel planned anyway"
        assert proc.returncode == 1, proc.stderr
        assert f'"{tensor}"' in proc.stderr and "importance matrix" in proc.stderr, proc.stderr
        return None
    assert ours is not None, proc.stderr
    assert list(ours) == list(theirs), "tensor order"
    diff = {n: (ours[n], theirs[n]) for n in theirs if ours[n] != theirs[n]}
    assert not diff, f"(qwodel, llama.cpp) types differ: {diff}"
    return ours


@pytest.mark.parametrize("key", ALL_MODELS)
@pytest.mark.parametrize("fmt", list(FORMATS))
def test_types_equal_llama_cpp(qwodel_bin, offered, f16_gguf, tmp_path, key, fmt):
    src = f16_gguf(key)
    require_offered(qwodel_bin, offered, fmt, tmp_path, src)
    check_types(qwodel_bin, src, fmt, tmp_path)


@pytest.mark.parametrize("key", ALL_MODELS)
@pytest.mark.parametrize("fmt", list(FORMATS))
def test_types_with_imatrix_equal_llama_cpp(qwodel_bin, offered, f16_gguf, imatrix_files,
                                            tmp_path, key, fmt):
    src = f16_gguf(key)
    require_offered(qwodel_bin, offered, fmt, tmp_path, src)
    path, values, _ = imatrix_files(key, "dat")
    check_types(qwodel_bin, src, fmt, tmp_path, imatrix=path, imatrix_values=values)


# Options as llama-quantize takes them. Option types are ones every build can write; patterns
# include an upper-case one (llama-quantize lower-cases) and one with a comma.
OPTIONS = {
    "leave_output_tensor": dict(leave_output_tensor=True),
    "output_tensor_type": dict(output_tensor_type="q8_0"),
    "token_embedding_type": dict(token_embedding_type="f16"),
    "both_types": dict(output_tensor_type="f16", token_embedding_type="q8_0"),
    "pure": dict(pure=True),
    "tensor_type": dict(tensor_type=(("ATTN_V", "q8_0"), (r"blk\.[0-9]{1,2}\.ffn_down", "q6_K"),
                                     ("ffn_(up|gate)", "q4_0"), ("blk\\.1\\.", "f16"),
                                     ("token_embd|output", "q8_0"))),
}


@pytest.mark.parametrize("key", ALL_MODELS)
@pytest.mark.parametrize("option", list(OPTIONS))
@pytest.mark.parametrize("fmt", list(FORMATS))
def test_types_with_options_equal_llama_cpp(qwodel_bin, offered, f16_gguf, imatrix_files,
                                            tmp_path, key, option, fmt):
    src = f16_gguf(key)
    require_offered(qwodel_bin, offered, fmt, tmp_path, src)
    kwargs = dict(OPTIONS[option])
    if llama_refusal(src, fmt, tmp_path, **kwargs):  # an imatrix-only format: give it one
        path, values, _ = imatrix_files(key, "dat")
        kwargs.update(imatrix=path, imatrix_values=values)
    check_types(qwodel_bin, src, fmt, tmp_path, **kwargs)


@pytest.mark.parametrize("key", ["llama2", "qwen2", "mistral"])
def test_plan_from_checkpoint_equals_plan_from_f16(qwodel_bin, offered, model_dir, f16_gguf,
                                                   tmp_path, key):
    """Straight from the HF checkpoint, each format plans the types it plans from the F16 GGUF
    (which llama.cpp's types were compared with above)."""
    for fmt in offered:
        _, direct = qwodel_plan(qwodel_bin, model_dir(key), fmt, tmp_path)
        _, via_f16 = qwodel_plan(qwodel_bin, f16_gguf(key), fmt, tmp_path)
        assert direct == via_f16, fmt


def test_dry_run_oracle_equals_written_types(qwodel_bin, offered, f16_gguf, imatrix_files,
                                             tmp_path):
    """The oracle above reads llama.cpp's dry-run report; its real runs write those types."""
    src = f16_gguf("moe8")
    path, values, _ = imatrix_files("moe8", "dat")
    for fmt in FORMATS:
        _, planned, _ = llama_types(src, fmt, tmp_path, imatrix=values)
        out = tmp_path / f"{fmt}.gguf"
        rc, log = llama_run(src, out, fmt, imatrix=values)
        assert rc == 0, log[-2000:]
        written = {t.name: t.tensor_type.name.lower() for t in gguf.GGUFReader(str(out)).tensors}
        assert {n: t.lower() for n, t in planned.items()} == written, fmt
        out.unlink()


# ---- refusals ----------------------------------------------------------------------------------

def test_imatrix_only_format_without_imatrix_names_the_tensor(qwodel_bin, f16_gguf, tmp_path):
    """IQ3_XS makes attn_q/attn_k iq3_xxs, which llama.cpp refuses without an imatrix."""
    src = f16_gguf("llama2")
    proc = run_qwodel(qwodel_bin, "quantize", src, "-f", "IQ3_XS", "-o", tmp_path, check=False)
    assert proc.returncode == 1
    assert '"blk.0.attn_k.weight"' in proc.stderr and "importance matrix" in proc.stderr
    assert "IQ3_XS" in proc.stderr and "iq3_xxs" in proc.stderr
    assert llama_refusal(src, "IQ3_XS", tmp_path) == "blk.0.attn_k.weight"
    assert not list(tmp_path.glob("*.gguf"))


def test_imatrix_without_the_needed_entry_is_refused(qwodel_bin, offered, f16_gguf, tmp_path):
    src = f16_gguf("llama2")
    data = random_imatrix(src)
    del data["blk.1.attn_q.weight"]
    path = write_legacy_imatrix(tmp_path / "partial.dat", data)
    proc = run_qwodel(qwodel_bin, "quantize", src, "-b", "gguf", "-f", "IQ3_XS", "-o", tmp_path,
                      "--imatrix", path, check=False)
    assert proc.returncode == 1
    assert '"blk.1.attn_q.weight"' in proc.stderr and "no entry" in proc.stderr
    rc, log = llama_run(src, tmp_path / "theirs.gguf", "IQ3_XS",
                        imatrix=imatrix_values(data, True))
    assert rc != 0 and "Missing importance matrix for tensor blk.1.attn_q.weight" in log


def test_imatrix_of_another_model_is_refused(qwodel_bin, f16_gguf, tmp_path):
    src = f16_gguf("llama2")
    data = random_imatrix(src)
    sums, counts = data["blk.0.ffn_up.weight"]
    data["blk.0.ffn_up.weight"] = (sums[:, :128], counts)
    path = write_gguf_imatrix(tmp_path / "wrong.gguf", data)
    proc = run_qwodel(qwodel_bin, "quantize", src, "-f", "Q8_0", "-o", tmp_path, "--imatrix",
                      path, check=False)
    assert proc.returncode == 1
    assert '"blk.0.ffn_up.weight"' in proc.stderr and "128 values" in proc.stderr
    rc, log = llama_run(src, tmp_path / "theirs.gguf", "Q8_0", imatrix=imatrix_values(data, False))
    assert rc != 0 and "imatrix size 128 is different from tensor size 256" in log


def test_rows_no_block_fits_fall_back_to_f16(qwodel_bin, f16_gguf, tmp_path):
    """Rows of 48 elements fit neither 256- nor 32-element blocks: llama.cpp's fallback ends in
    f16 (q4_K -> q5_0 -> f16, q8_0 -> f16)."""
    src = f16_gguf("odd")
    for fmt in ("Q8_0", "Q4_0", "Q4_K_M", "IQ4_NL"):
        _, plan = qwodel_plan(qwodel_bin, src, fmt, tmp_path)
        assert plan["blk.0.ffn_down.weight"] == "f16", fmt
        rc, theirs, _ = llama_types(src, fmt, tmp_path)
        assert rc == 0 and theirs["blk.0.ffn_down.weight"] == "f16", fmt
    proc = run_qwodel(qwodel_bin, "quantize", src, "-f", "Q8_0", "-o", tmp_path, "--dry-run",
                      "-v")
    assert "blk.0.ffn_down.weight: rows of 48 are not a multiple of 32 for q8_0: using f16" in \
        proc.stderr


@pytest.mark.parametrize("flag,value,fragment", [
    ("--output-tensor-type", "q9_9", "unknown type"),
    ("--token-embedding-type", "banana", "unknown type"),
    ("--tensor-type", "attn_v", "REGEX=TYPE"),
    ("--tensor-type", "=q8_0", "missing pattern"),
    ("--tensor-type", "attn_v=nope", "unknown type"),
    ("--tensor-type", "attn_v=q8_0,ffn_(=q4_0", "not a valid regular expression"),
    ("--pure", "perhaps", "true or false"),
    ("--leave-output-tensor", "2", "true or false"),
    ("--imatrix", "", "needs the path"),
])
def test_bad_option_values_exit_2_naming_the_option(qwodel_bin, f16_gguf, tmp_path, flag, value,
                                                    fragment):
    proc = run_qwodel(qwodel_bin, "quantize", f16_gguf("llama2"), "-f", "Q8_0", "-o", tmp_path,
                      flag, value, check=False)
    assert proc.returncode == 2, proc.stderr
    option = flag[2:].replace("-", "_")
    assert option in proc.stderr and fragment in proc.stderr, proc.stderr
    assert not any(tmp_path.iterdir())


def test_option_type_that_does_not_fit_the_rows_exits_2(qwodel_bin, f16_gguf, tmp_path):
    """llama.cpp takes --output-tensor-type as given (no fallback) and aborts on rows of 320
    with q6_K; qwodel refuses the option instead."""
    proc = run_qwodel(qwodel_bin, "quantize", f16_gguf("mistral"), "-f", "Q8_0", "-o", tmp_path,
                      "--output-tensor-type", "q6_K", check=False)
    assert proc.returncode == 2 and "output_tensor_type" in proc.stderr
    assert "output.weight" in proc.stderr


def test_missing_and_corrupt_imatrix_files(qwodel_bin, f16_gguf, tmp_path):
    src = f16_gguf("llama2")
    proc = run_qwodel(qwodel_bin, "quantize", src, "-f", "Q8_0", "-o", tmp_path, "--imatrix",
                      tmp_path / "absent.dat", check=False)
    assert proc.returncode == 1 and "imatrix" in proc.stderr and "absent.dat" in proc.stderr
    bad = tmp_path / "bad.dat"
    bad.write_bytes(struct.pack("<ii", 1, 1000) + b"x" * 10)
    proc = run_qwodel(qwodel_bin, "quantize", src, "-f", "Q8_0", "-o", tmp_path, "--imatrix",
                      bad, check=False)
    assert proc.returncode == 1 and "bad.dat" in proc.stderr and "length 1000" in proc.stderr


def test_tensors_without_an_imatrix_entry_are_logged(qwodel_bin, f16_gguf, imatrix_files,
                                                     tmp_path):
    path, _, _ = imatrix_files("llama2", "dat")
    proc = run_qwodel(qwodel_bin, "quantize", f16_gguf("llama2"), "-f", "Q8_0", "-o", tmp_path,
                      "--imatrix", path, "--dry-run", "-v")
    assert "token_embd.weight: no importance matrix entry" in proc.stderr
    assert "has no entry for" not in proc.stderr  # token_embd never has one: no warning
    data = random_imatrix(f16_gguf("llama2"))
    del data["blk.1.ffn_up.weight"], data["output.weight"]
    partial = write_legacy_imatrix(tmp_path / "partial.dat", data)
    proc = run_qwodel(qwodel_bin, "quantize", f16_gguf("llama2"), "-f", "Q8_0", "-o", tmp_path,
                      "--imatrix", partial, "--dry-run", "-v")
    assert "blk.1.ffn_up.weight: no importance matrix entry" in proc.stderr
    assert "output.weight: no importance matrix entry" in proc.stderr
    assert "has no entry for 2 of the 16 tensors quantized" in proc.stderr


# ---- bytes -------------------------------------------------------------------------------------

# plain rows (llama2), qkv biases and tied embeddings (qwen2), q/k norms and GQA (qwen3), rows that
# fit no 256-block (mistral), stacked experts with one importance slice per expert (moe8); the
# importance matrix in both file formats
BYTE_CASES = [("llama2", None), ("qwen2-small", None), ("qwen3-small", None),
              ("mistral", "gguf"), ("moe8", None), ("moe8", "gguf"), ("moe8", "dat")]


def read_gguf(path):
    reader = gguf.GGUFReader(str(path))
    return reader, {t.name: t for t in reader.tensors}


@pytest.mark.parametrize("key,imatrix", BYTE_CASES,
                         ids=[f"{k}-{i or 'none'}" for k, i in BYTE_CASES])
@pytest.mark.parametrize("fmt", list(FORMATS))
def test_bytes_equal_llama_cpp(qwodel_bin, offered, f16_gguf, imatrix_files, tmp_path, key,
                               imatrix, fmt):
    src = f16_gguf(key)
    require_offered(qwodel_bin, offered, fmt, tmp_path, src)
    flags, llama_options = [], {}
    if imatrix:
        path, values, meta = imatrix_files(key, imatrix)
        flags = ["--imatrix", path]
        llama_options = dict(imatrix=values, kv_overrides=llama_imatrix_kvs(path, meta))
    else:
        tensor = llama_refusal(src, fmt, tmp_path)
        if tensor:  # an imatrix-only format: both refuse, naming the same tensor
            proc = run_qwodel(qwodel_bin, "quantize", src, "-b", "gguf", "-f", fmt, "-o",
                              tmp_path / "ours", "-q", check=False)
            assert proc.returncode == 1 and f'"{tensor}"' in proc.stderr, proc.stderr
            return
    proc = run_qwodel(qwodel_bin, "quantize", src, "-b", "gguf", "-f", fmt, "-o",
                      tmp_path / "ours", "-q", *flags, check=False)
    if proc.returncode == 1 and "cannot produce yet" in proc.stderr:
        pytest.skip(proc.stderr.strip().splitlines()[-1])
    assert proc.returncode == 0, proc.stderr
    ours = pathlib.Path(proc.stdout.strip())
    theirs = tmp_path / "theirs.gguf"
    rc, log = llama_run(src, theirs, fmt, **llama_options)
    assert rc == 0, log[-2000:]
    r_ours, t_ours = read_gguf(ours)
    r_theirs, t_theirs = read_gguf(theirs)
    assert list(t_ours) == list(t_theirs)
    differ = []
    for name, t in t_theirs.items():
        mine = t_ours[name]
        assert mine.tensor_type == t.tensor_type, f"{name}: {mine.tensor_type} vs {t.tensor_type}"
        assert list(mine.shape) == list(t.shape), name
        if np.asarray(mine.data).tobytes() != np.asarray(t.data).tobytes():
            differ.append(f"{name} ({t.tensor_type.name})")
    assert not differ, f"bytes differ: {differ}"
    for field in r_theirs.fields:  # the same metadata, quantize.imatrix.* included
        if field.startswith("GGUF."):
            continue
        assert field in r_ours.fields, field
        a, b = r_ours.fields[field], r_theirs.fields[field]
        assert a.types == b.types, field
        assert a.contents() == b.contents(), field
    assert set(r_ours.fields) == set(r_theirs.fields)
