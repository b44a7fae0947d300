"""The coreml backend, checked by programs no one here wrote.

* coremltools (pip, Linux) reads every package: `ct.utils.load_spec`, `MLModel(...,
  skip_model_load=True)`, and its milproto loader rebuilds the MIL program op by op with its own
  type inference, which refuses any declared type that differs from the inferred one; the blob
  reader it uses checks every blob's sentinel and dtype.
* Numerics: a small numpy evaluator of the ops the program holds (weights decoded through
  coremltools' own blob reader, each op's result rounded to the dtype the program declares) on
  random token ids is compared with transformers' logits (torch, CPU, float32).
* int8 weights: dequantized from the package and compared with what coremltools' own quantizer
  (`compute_qparams`, the function `linear_quantize_weights` runs) makes of the same fp16 weights.
Nothing on Linux can run an ML Program, so a device run is not part of this file.
"""
from __future__ import annotations

import json
import logging
import math
import pathlib

import numpy as np
import pytest

from conftest import run_qwodel
import hf_fixtures

# coremltools' Linux wheel logs that its macOS-only runtime is missing: expected here
logging.getLogger("coremltools").setLevel(logging.ERROR)
ct = pytest.importorskip("coremltools")
from coremltools.converters.mil.frontend.milproto.load import load as milproto_load  # noqa: E402
from coremltools.libmilstoragepython import _BlobStorageReader  # noqa: E402
from coremltools.optimize._utils import compute_qparams  # noqa: E402

FORMATS = ["float16", "int8_linear", "int8_symmetric", "int6", "int4"]
SPEC = {"int4": 9}  # iOS18 for grouped LUTs; the others iOS16 (spec 7)
SEQ_LENGTH = 64
WINDOW = 5

# Small checkpoints covering what the program has to get right: GQA with llama3 rope scaling
# and a tied head (llama), q/k/v biases (qwen2), per-head q/k norms, an untied head and a
# k_proj of exactly 2048 elements, which coremltools' threshold leaves uncompressed (qwen3),
# a single key/value head in float32 (mistral), Gemma's 1 + w norms, scaled embeddings,
# tanh GELU and a head size other than hidden / heads (gemma), and Gemma 2's sandwich norms,
# query_pre_attn_scalar and soft caps set low enough to bite (gemma2), and Gemma 3's 1 + w q/k
# norms and its local layer's own unscaled rope next to a global one with linear scaling (gemma3),
# and Phi-3's fused qkv_proj / gate_up_proj with longrope's short factors and attention factor
# (phi3; its original context is the package's length, so the long factors never apply).
# Mixture-of-experts layers: Mixtral's (top 2 of 4, renormalized), Qwen2-MoE's (not
# renormalized, with a gated shared expert) and Qwen3-MoE's (top 3 of 8, renormalized, next to
# a dense layer as mlp_only_layers makes it).
# Mistral, Phi-3 and Gemma 2/3 have a sliding window of WINDOW tokens, shorter than the test's
# sequences: on every layer (mistral, phi3), on the even layers (gemma2), on the layers
# layer_types names (gemma3); Qwen2 and Qwen3 state one and switch it off (use_sliding_window
# false), except in WINDOWED.
CHECKPOINTS = {
    "llama": dict(family="llama", tokenizer="llama2", tied=True, dtype="bf16", hidden=64,
                  heads=4, kv_heads=2,
                  rope_scaling={"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
                                "high_freq_factor": 4.0,
                                "original_max_position_embeddings": 16}),
    "qwen2": dict(family="qwen2", tokenizer="llama2", tied=True, dtype="bf16", hidden=128,
                  heads=4, kv_heads=2),
    "qwen3": dict(family="qwen3", tokenizer="llama2", tied=False, shards=2, dtype="bf16",
                  hidden=64, heads=4, kv_heads=2, intermediate=128),
    "mistral": dict(family="mistral", tokenizer="llama2", tied=False, dtype="f32", hidden=160,
                    heads=5, kv_heads=1, intermediate=320,
                    config_overrides={"sliding_window": WINDOW}),
    "gemma": dict(family="gemma", tokenizer="llama2", tied=True, dtype="bf16", hidden=64,
                  heads=4, kv_heads=1, head_dim=32, intermediate=256),
    "gemma2": dict(family="gemma2", tokenizer="llama2", tied=True, dtype="f32", hidden=64,
                   heads=4, kv_heads=2, intermediate=192,
                   config_overrides={"attn_logit_softcapping": 2.0,
                                     "final_logit_softcapping": 1.0,
                                     "query_pre_attn_scalar": 24, "sliding_window": WINDOW}),
    "gemma3": dict(family="gemma3", tokenizer="llama2", tied=True, dtype="bf16", hidden=64,
                   heads=4, kv_heads=2, intermediate=192,
                   rope_scaling={"rope_type": "linear", "factor": 4.0},
                   config_overrides={"layer_types": ["sliding_attention", "full_attention"],
                                     "sliding_window": WINDOW}),
    "mixtral": dict(family="mixtral", tokenizer="llama2", tied=False, dtype="bf16", hidden=64,
                    heads=4, kv_heads=2, intermediate=96, experts=4, experts_used=2),
    "qwen2_moe": dict(family="qwen2_moe", tokenizer="llama2", tied=False, dtype="f16",
                      hidden=64, heads=4, kv_heads=2, experts=4, experts_used=2,
                      moe_intermediate=48, shared_intermediate=128),
    "qwen3_moe": dict(family="qwen3_moe", tokenizer="llama2", tied=True, dtype="bf16", hidden=64,
                      heads=4, kv_heads=2, intermediate=160, experts=8, experts_used=3,
                      moe_intermediate=32, dense_layers=[1]),
    "phi3": dict(family="phi3", tokenizer="llama2", tied=False, dtype="bf16", hidden=64, heads=4,
                 intermediate=128, rope_scaling=hf_fixtures.phi3_longrope(16),
                 config_overrides={"original_max_position_embeddings": SEQ_LENGTH,
                                   "sliding_window": WINDOW}),
}
# Qwen2 with its window switched on, for the layers from max_window_layers (its second): judged
# against transformers only (the GGUF qwodel writes of a Qwen2 carries no window)
WINDOWED = {
    "qwen2_window": dict(family="qwen2", tokenizer="llama2", tied=True, dtype="bf16", hidden=128,
                         heads=4, kv_heads=2,
                         config_overrides={"use_sliding_window": True, "sliding_window": WINDOW,
                                           "max_window_layers": 1}),
}


@pytest.fixture(scope="module")
def packages(qwodel_bin, tmp_path_factory):
    """packages(key, fmt, *extra) -> path of the written .mlpackage (cached)."""
    root = tmp_path_factory.mktemp("coreml")
    made: dict = {}

    def get(key, fmt, *extra):
        ck_key = ("ck", key)
        if ck_key not in made:
            made[ck_key] = hf_fixtures.make_checkpoint(root / "ck" / key,
                                                       **{**CHECKPOINTS, **WINDOWED}[key])
        k = (key, fmt, extra)
        if k not in made:
            out = root / f"out-{len(made)}"
            run_qwodel(qwodel_bin, "quantize", made[ck_key], "-b", "coreml", "-f", fmt, "-o", out,
                       "--seq-length", SEQ_LENGTH, "-q", *extra)
            made[k] = out / f"{key}_{fmt.replace('_', '-')}.mlpackage"
        return made[k]

    get.checkpoint = lambda key: (get(key, "float16"), made[("ck", key)])[1]
    return get


def weights_dir(pkg: pathlib.Path) -> str:
    return str(pkg / "Data" / "com.apple.CoreML" / "weights")


def main_block(spec):
    fn = spec.mlProgram.functions["main"]
    return fn, fn.block_specializations[fn.opset]


# ---- loading --------------------------------------------------------------------------------


LOAD_CASES = [(key, fmt) for key in sorted(CHECKPOINTS) for fmt in FORMATS
              # grouped 4-bit k-means is the slow one under ASan: two families cover its paths
              if fmt != "int4" or key in ("llama", "qwen3")]


@pytest.mark.parametrize("key,fmt", LOAD_CASES)
def test_coremltools_loads_and_rebuilds(packages, key, fmt):
    pkg = packages(key, fmt)
    spec = ct.utils.load_spec(str(pkg))
    want = SPEC.get(fmt, 7)
    assert spec.specificationVersion == want
    assert spec.mlProgram.functions["main"].opset == f"CoreML{want - 1}"
    model = ct.models.MLModel(str(pkg), skip_model_load=True)
    assert model.get_spec().specificationVersion == want
    # the milproto loader re-runs type inference on every op and refuses mismatched types
    prog = milproto_load(spec, specification_version=spec.specificationVersion,
                         file_weights_dir=weights_dir(pkg))
    ops = list(prog.functions["main"].operations)
    types = [op.op_type for op in ops]
    n_constexpr = types.count("constexpr_affine_dequantize") + \
        types.count("constexpr_lut_to_dense")
    if fmt == "float16":
        assert n_constexpr == 0
    else:
        assert n_constexpr > 0
    desc = spec.description
    assert [i.name for i in desc.input] == ["input_ids", "attention_mask"]
    for feat in desc.input:
        arr = feat.type.multiArrayType
        assert arr.dataType == ct.proto.FeatureTypes_pb2.ArrayFeatureType.INT32
        ranges = [(r.lowerBound, r.upperBound) for r in arr.shapeRange.sizeRanges]
        assert ranges == [(1, 1), (1, SEQ_LENGTH)]
    assert [o.name for o in desc.output] == ["logits"]
    assert desc.output[0].type.multiArrayType.dataType == \
        ct.proto.FeatureTypes_pb2.ArrayFeatureType.FLOAT32
    meta = dict(desc.metadata.userDefined)
    assert meta["qwodel.compute_units"] == "ALL" and meta["qwodel.format"] == fmt
    assert meta["qwodel.source"].endswith(key)


def test_options_reach_the_interface(packages):
    pkg = packages("qwen3", "float16", "--input-shape", "(2, 16)", "--compute-units",
                   "cpu_and_gpu", "--seq-length", "32")
    spec = ct.utils.load_spec(str(pkg))
    arr = spec.description.input[0].type.multiArrayType
    assert list(arr.shape) == [2, 16]
    assert [(r.lowerBound, r.upperBound) for r in arr.shapeRange.sizeRanges] == [(2, 2), (1, 32)]
    assert spec.description.metadata.userDefined["qwodel.compute_units"] == "CPU_AND_GPU"
    milproto_load(spec, specification_version=7, file_weights_dir=weights_dir(pkg))


def test_weight_file_layout(packages):
    """Blob storage v2 as the reader expects it: the header's count, 64-byte records, and
    every blob the program names readable with the dtype it declares."""
    pkg = packages("qwen2", "int8_linear")
    data = (pathlib.Path(weights_dir(pkg)) / "weight.bin").read_bytes()
    count, version = np.frombuffer(data[:8], "<u4")
    assert version == 2
    spec = ct.utils.load_spec(str(pkg))
    _, block = main_block(spec)
    offsets = []
    for op in block.operations:
        for v in op.attributes.values():
            if v.WhichOneof("value") == "blobFileValue":
                assert v.blobFileValue.fileName == "@model_path/weights/weight.bin"
                offsets.append(v.blobFileValue.offset)
    assert len(offsets) == count == len(set(offsets))
    for off in offsets:
        assert off % 64 == 0
        sentinel, _dtype = np.frombuffer(data[off:off + 8], "<u4")
        assert sentinel == 0xDEADBEEF


# ---- a numpy evaluator of the written program ----------------------------------------------

MIL_NP = {1: np.bool_, 10: np.float16, 11: np.float32, 21: np.int8, 23: np.int32, 31: np.uint8,
          33: np.uint32, 35: np.uint8, 38: np.uint8}
CAST = {"fp16": np.float16, "fp32": np.float32, "int32": np.int32, "bool": np.bool_}


def decode(value, reader):
    tt = value.type.tensorType
    shape = [d.constant.size for d in tt.dimensions]
    dt = MIL_NP.get(tt.dataType)
    if value.WhichOneof("value") == "blobFileValue":
        read = {10: reader.read_fp16_data, 11: reader.read_float_data,
                21: reader.read_int8_data, 31: reader.read_uint8_data,
                35: reader.read_uint4_data, 38: reader.read_uint6_data}[tt.dataType]
        raw = np.asarray(read(value.blobFileValue.offset))
        # the reader hands fp16 back as its uint16 bit patterns
        arr = raw.view(np.float16) if tt.dataType == 10 else raw.astype(dt)
        return arr.reshape(shape)
    tv = value.immediateValue.tensor
    kind = tv.WhichOneof("value")
    if kind == "strings":
        return tv.strings.values[0]
    if kind == "bytes":
        return np.frombuffer(tv.bytes.values, dt).reshape(shape)  # (no sub-byte immediates here)
    vals = getattr(tv, kind).values
    return np.array(list(vals), dtype=dt).reshape(shape)


def _slice(x, begin, end, begin_mask, end_mask):
    idx = []
    for d in range(x.ndim):
        b = None if begin_mask[d] else int(begin[d])
        e = None if end_mask[d] else int(end[d])
        idx.append(slice(b, e))
    return x[tuple(idx)]


def _cumsum(x, axis, exclusive, reverse):
    assert not reverse
    c = np.cumsum(x, axis=axis)
    return c - x if exclusive else c


def _reshape(x, shape):
    return x.reshape([int(s) for s in shape])


OPS = {
    "gather": lambda a: np.take(a["x"], a["indices"], axis=int(a["axis"])),
    "mul": lambda a: a["x"].astype(np.float32) * a["y"] if a["x"].dtype != np.int32
    else a["x"] * a["y"],
    "add": lambda a: a["x"].astype(np.float32) + a["y"] if a["x"].dtype != np.int32
    else a["x"] + a["y"],
    "greater": lambda a: a["x"] > a["y"],
    "equal": lambda a: a["x"] == a["y"],
    "logical_or": lambda a: np.logical_or(a["x"], a["y"]),
    "cumsum": lambda a: _cumsum(a["x"], int(a["axis"]), bool(a["exclusive"]), bool(a["reverse"])),
    "expand_dims": lambda a: np.expand_dims(a["x"], tuple(int(v) for v in a["axes"])),
    "cast": lambda a: a["x"].astype(CAST[a["dtype"]]),
    "reduce_mean": lambda a: a["x"].mean(axis=tuple(int(v) for v in a["axes"]),
                                         keepdims=bool(a["keep_dims"])),
    "rsqrt": lambda a: 1.0 / np.sqrt(a["x"] + a["epsilon"]),
    "linear": lambda a: a["x"].astype(np.float32) @ a["weight"].astype(np.float32).T
    + (a["bias"].astype(np.float32) if "bias" in a else 0.0),
    "reshape": lambda a: _reshape(a["x"], a["shape"]),
    "transpose": lambda a: np.transpose(a["x"], [int(v) for v in a["perm"]]),
    "slice_by_index": lambda a: _slice(a["x"], a["begin"], a["end"], a["begin_mask"],
                                       a["end_mask"]),
    "concat": lambda a: np.concatenate(a["values"], axis=int(a["axis"])),
    "matmul": lambda a: np.matmul(
        np.swapaxes(a["x"], -1, -2) if a["transpose_x"] else a["x"],
        np.swapaxes(a["y"], -1, -2) if a["transpose_y"] else a["y"], dtype=np.float32),
    "softmax": lambda a: _softmax(a["x"].astype(np.float32), int(a["axis"])),
    "silu": lambda a: a["x"].astype(np.float32) / (1.0 + np.exp(-a["x"].astype(np.float32))),
    "sub": lambda a: a["x"].astype(np.float32) - a["y"],
    "tanh": lambda a: np.tanh(a["x"].astype(np.float32)),
    "relu": lambda a: np.maximum(a["x"].astype(np.float32), 0.0),
    "gelu": lambda a: _gelu(a["x"].astype(np.float64), a["mode"]),
    "tile": lambda a: np.tile(a["x"], [int(v) for v in a["reps"]]),
    "greater_equal": lambda a: a["x"] >= a["y"],
    "less": lambda a: a["x"] < a["y"],
    "logical_and": lambda a: np.logical_and(a["x"], a["y"]),
    "reduce_sum": lambda a: a["x"].astype(np.float32).sum(axis=tuple(int(v) for v in a["axes"]),
                                                          keepdims=bool(a["keep_dims"])),
    "real_div": lambda a: a["x"].astype(np.float32) / a["y"],
    "sigmoid": lambda a: 1.0 / (1.0 + np.exp(-a["x"].astype(np.float32))),
}


def _gelu(x, mode):
    if mode == "EXACT":
        return 0.5 * x * (1.0 + np.vectorize(math.erf)(x / math.sqrt(2.0)))
    assert mode == "TANH_APPROXIMATION", mode
    return 0.5 * x * (1.0 + np.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x ** 3)))


def _softmax(x, axis):
    e = np.exp(x - x.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)


def dequantize(attrs, reader):
    q = decode(attrs["quantized_data"], reader).astype(np.float32)
    zp = decode(attrs["zero_point"], reader).astype(np.float32)
    scale = decode(attrs["scale"], reader).astype(np.float32)
    assert int(decode(attrs["axis"], reader)) == 0
    return ((q - zp[:, None]) * scale[:, None]).astype(np.float16)


def unpack_bits(packed, nbits, count):
    """LSB-first bit stream -> values (the iOS16 LUT's packed indices)."""
    bits = np.unpackbits(np.asarray(packed, np.uint8), bitorder="little")[:count * nbits]
    return (bits.reshape(count, nbits) << np.arange(nbits)).sum(axis=1)


def lut_to_dense(op, reader):
    if "indices" in op.attributes:  # iOS16: one table, packed indices, explicit shape
        a = op.attributes
        lut = decode(a["lut"], reader)
        shape = [int(v) for v in decode(a["shape"], reader)]
        nbits = int(np.log2(lut.size))
        idx = unpack_bits(decode(a["indices"], reader), nbits, int(np.prod(shape)))
        return lut[idx].reshape(shape)
    # iOS18: indices shaped like the weight, lut [groups, 1, 2^n, 1]
    idx = decode(op.inputs["indices"].arguments[0].value, reader).astype(np.int64)
    lut = decode(op.inputs["lut"].arguments[0].value, reader)
    rows_per = idx.shape[0] // lut.shape[0]
    tables = np.repeat(lut[:, 0, :, 0], rows_per, axis=0)
    return np.take_along_axis(tables, idx, axis=1)


def evaluate(pkg, inputs):
    """Runs the program's main block on `inputs` (name -> int32 array); returns its outputs."""
    spec = ct.utils.load_spec(str(pkg))
    reader = _BlobStorageReader(weights_dir(pkg) + "/weight.bin")
    _, block = main_block(spec)
    env = dict(inputs)
    for op in block.operations:
        out = op.outputs[0]
        if op.type == "const":
            env[out.name] = decode(op.attributes["val"], reader)
            continue
        if op.type == "constexpr_affine_dequantize":
            env[out.name] = dequantize(op.attributes, reader)
            continue
        if op.type == "constexpr_lut_to_dense":
            env[out.name] = lut_to_dense(op, reader)
            continue
        args = {}
        for key, arg in op.inputs.items():
            vals = [env[b.name] for b in arg.arguments]
            args[key] = vals if key == "values" else vals[0]
        result = np.asarray(OPS[op.type](args))
        env[out.name] = result.astype(MIL_NP[out.type.tensorType.dataType])
    return {name: env[name] for name in block.outputs}


def hf_logits(ck, ids, mask):
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    model = transformers.AutoModelForCausalLM.from_pretrained(str(ck), torch_dtype=torch.float32)
    model.eval()
    with torch.no_grad():
        out = model(input_ids=torch.tensor(ids, dtype=torch.long),
                    attention_mask=torch.tensor(mask, dtype=torch.long))
    return out.logits.float().numpy()


@pytest.mark.parametrize("key", sorted(CHECKPOINTS) + sorted(WINDOWED))
def test_program_matches_transformers(packages, key):
    pkg = packages(key, "float16")
    ck = packages.checkpoint(key)
    rng = np.random.default_rng(7)
    vocab = json.loads((ck / "config.json").read_text())["vocab_size"]
    ids = rng.integers(0, vocab, size=(1, 13)).astype(np.int32)
    # left padding: the first two keys are masked out; positions still count from 0 as
    # transformers counts them without position_ids
    mask = np.ones_like(ids)
    mask[0, :2] = 0
    ours = evaluate(pkg, {"input_ids": ids, "attention_mask": mask})["logits"]
    ref = hf_logits(ck, ids, mask)
    assert ours.shape == ref.shape and ours.dtype == np.float32
    valid = mask[0] == 1
    err = np.abs(ours[0, valid] - ref[0, valid]).max()
    scale = np.abs(ref[0, valid]).max()
    # float16 weights and activations against a float32 reference
    print(f"{key}: max |ours - transformers| {err:.3g}, max |logit| {scale:.3g}")
    assert err <= 1e-2 * scale + 1e-3, (err, scale)
    assert (ours[0, valid].argmax(-1) == ref[0, valid].argmax(-1)).mean() >= 0.9


@pytest.mark.parametrize("fmt,tol", [("int8_linear", 5e-2), ("int6", 0.25), ("int4", 0.5)])
def test_compressed_program_close_to_transformers(packages, fmt, tol):
    pkg = packages("llama", fmt)
    ck = packages.checkpoint("llama")
    ids = np.random.default_rng(3).integers(0, 32000, size=(1, 9)).astype(np.int32)
    mask = np.ones_like(ids)
    ours = evaluate(pkg, {"input_ids": ids, "attention_mask": mask})["logits"]
    ref = hf_logits(ck, ids, mask)
    err = np.abs(ours - ref).max()
    print(f"{fmt}: max |ours - transformers| {err:.3g}, max |logit| {np.abs(ref).max():.3g}")
    assert err <= tol * np.abs(ref).max(), err


@pytest.mark.parametrize("key", ["qwen2", "mixtral"])
def test_gguf_source_gives_the_same_program(qwodel_bin, packages, tmp_path, key):
    """A GGUF source goes through the same HF view: a lossless BF16 GGUF of the checkpoint
    gives a package whose program computes exactly what the directory's package computes
    (Mixtral's experts come back from llama.cpp's stacked tensors one by one)."""
    ck = packages.checkpoint(key)
    run_qwodel(qwodel_bin, "quantize", ck, "-f", "BF16", "-o", tmp_path, "-q")
    gguf = tmp_path / f"{key}-bf16.gguf"
    run_qwodel(qwodel_bin, "quantize", gguf, "-b", "coreml", "-o", tmp_path / "o",
               "--seq-length", SEQ_LENGTH, "-q")
    pkg = tmp_path / "o" / f"{key}-bf16_float16.mlpackage"
    spec = ct.utils.load_spec(str(pkg))
    milproto_load(spec, specification_version=7, file_weights_dir=weights_dir(pkg))
    ids = np.random.default_rng(5).integers(0, 32000, size=(1, 7)).astype(np.int32)
    feed = {"input_ids": ids, "attention_mask": np.ones_like(ids)}
    ours = evaluate(pkg, feed)["logits"]
    ref = evaluate(packages(key, "float16"), feed)["logits"]
    assert np.array_equal(ours, ref)


# ---- compression against coremltools' own quantizer ----------------------------------------

@pytest.mark.parametrize("fmt", ["int8_linear", "int4"])
def test_moe_routers_stay_fp16(qwodel_bin, tmp_path, fmt):
    """A router picks experts, so it is left in fp16 even past coremltools' size threshold
    (40 experts x 64 = 2560 elements) while every expert's weights are compressed; the
    program still loads and rebuilds."""
    ck = hf_fixtures.make_checkpoint(tmp_path / "mixtral40", "mixtral", tokenizer="llama2",
                                     tied=True, dtype="bf16", hidden=64, heads=4, kv_heads=2,
                                     intermediate=64, experts=40, experts_used=2)
    run_qwodel(qwodel_bin, "quantize", ck, "-b", "coreml", "-f", fmt, "-o", tmp_path / "o",
               "--seq-length", SEQ_LENGTH, "-q")
    pkg = tmp_path / "o" / f"mixtral40_{fmt.replace('_', '-')}.mlpackage"
    spec = ct.utils.load_spec(str(pkg))
    milproto_load(spec, specification_version=spec.specificationVersion,
                  file_weights_dir=weights_dir(pkg))
    kinds = {op.outputs[0].name: op.type for op in main_block(spec)[1].operations}
    for layer in range(2):
        assert kinds[f"layers_{layer}_router_weight"] == "const"
        experts = [kinds[f"layers_{layer}_expert_{e}_{w}_weight"]
                   for e in range(40) for w in ("gate", "up", "down")]
        assert set(experts) == {"constexpr_affine_dequantize" if fmt == "int8_linear"
                                else "constexpr_lut_to_dense"}


@pytest.mark.parametrize("fmt", ["int8_linear", "int8_symmetric"])
def test_int8_weights_match_coremltools(packages, fmt):
    """Every const coremltools would compress (rank >= 2, more than 2048 elements) is
    compressed, nothing else; the dequantized weights' error is within 5% of what coremltools'
    quantizer gives on the same fp16 weights, and the int8 codes are coremltools' bit for bit."""
    key = "qwen3"
    fp16 = packages(key, "float16")
    pkg = packages(key, fmt)
    mode = "LINEAR" if fmt == "int8_linear" else "LINEAR_SYMMETRIC"
    ref_reader = _BlobStorageReader(weights_dir(fp16) + "/weight.bin")
    reader = _BlobStorageReader(weights_dir(pkg) + "/weight.bin")
    ref_consts = {op.outputs[0].name: decode(op.attributes["val"], ref_reader)
                  for op in main_block(ct.utils.load_spec(str(fp16)))[1].operations
                  if op.type == "const"}
    n_compressed = n_checked = 0
    for op in main_block(ct.utils.load_spec(str(pkg)))[1].operations:
        name = op.outputs[0].name
        if name not in ref_consts or not isinstance(ref_consts[name], np.ndarray):
            continue
        w = ref_consts[name]
        should = w.dtype == np.float16 and w.ndim >= 2 and w.size > 2048
        assert (op.type == "constexpr_affine_dequantize") == should, name
        if not should:
            continue
        n_compressed += 1
        ours = dequantize(op.attributes, reader).astype(np.float32)
        q, scale, zp = compute_qparams(w, nbits=8, signed=True, quantization_mode=mode,
                                       dtype=np.int8, block_sizes=[1, 0])
        zp = np.zeros_like(scale) if zp is None else zp
        theirs = (q.astype(np.float32) - zp.astype(np.float32).reshape(-1, 1)) * \
            scale.astype(np.float32).reshape(-1, 1)
        err_ours = np.abs(ours - w.astype(np.float32)).mean()
        err_theirs = np.abs(theirs.astype(np.float16).astype(np.float32) -
                            w.astype(np.float32)).mean()
        print(f"{fmt} {name}: mean error {err_ours:.4g} (coremltools {err_theirs:.4g}), "
              f"codes equal {(decode(op.attributes['quantized_data'], reader) == q).mean():.4f}")
        assert err_ours <= 1.05 * err_theirs + 1e-9, (name, err_ours, err_theirs)
        codes = decode(op.attributes["quantized_data"], reader)
        assert np.array_equal(codes, q), name  # coremltools' own rounding, bit for bit
        n_checked += 1
    assert n_compressed == n_checked > 0


@pytest.mark.parametrize("fmt", ["int6", "int4"])
def test_palettized_weights_match_coremltools(packages, fmt):
    """The tables are exact k-means: every palettized weight's squared error is within 5% of
    (in fact at most) what coremltools' kmeans1d path gives on the same fp16 values, with
    coremltools' grouping (one table per tensor for int6, per 32 output channels for int4)."""
    from coremltools.models.neural_network.quantization_utils import \
        _get_kmeans_lookup_table_and_weight
    key = "qwen3"
    nbits, group = {"int6": (6, None), "int4": (4, 32)}[fmt]
    fp16 = packages(key, "float16")
    pkg = packages(key, fmt)
    ref_reader = _BlobStorageReader(weights_dir(fp16) + "/weight.bin")
    reader = _BlobStorageReader(weights_dir(pkg) + "/weight.bin")
    ref_consts = {op.outputs[0].name: decode(op.attributes["val"], ref_reader)
                  for op in main_block(ct.utils.load_spec(str(fp16)))[1].operations
                  if op.type == "const"}
    n = 0
    for op in main_block(ct.utils.load_spec(str(pkg)))[1].operations:
        name = op.outputs[0].name
        w = ref_consts.get(name)
        if not isinstance(w, np.ndarray):
            continue
        should = w.ndim >= 2 and w.size > 2048 and (group is None or w.shape[0] % group == 0)
        assert (op.type == "constexpr_lut_to_dense") == should, name
        if not should:
            continue
        ours = lut_to_dense(op, reader).astype(np.float64)
        rows = group or w.shape[0]
        err_ours = err_theirs = 0.0
        for g in range(0, w.shape[0], rows):
            block = w[g:g + rows]
            lut, q = _get_kmeans_lookup_table_and_weight(nbits, block, force_kmeans1d=True)
            theirs = lut.astype(np.float16).astype(np.float64)[q].reshape(block.shape)
            err_theirs += ((theirs - block) ** 2).sum()
            err_ours += ((ours[g:g + rows] - block) ** 2).sum()
        print(f"{fmt} {name}: squared error {err_ours:.4g} (coremltools {err_theirs:.4g})")
        assert err_ours <= 1.05 * err_theirs + 1e-12, (name, err_ours, err_theirs)
        n += 1
    assert n > 0


# ---- refusals -------------------------------------------------------------------------------

def _falcon_gguf(path):
    """A one-layer GGUF of llama.cpp's falcon architecture (fused q/k/v, no gate)."""
    gguf = pytest.importorskip("gguf")
    w = gguf.GGUFWriter(str(path), "falcon")
    w.add_block_count(1)
    w.add_context_length(64)
    w.add_embedding_length(64)
    w.add_feed_forward_length(128)
    w.add_head_count(4)
    w.add_head_count_kv(1)
    w.add_layer_norm_eps(1e-5)
    rng = np.random.default_rng(0)
    shapes = {"token_embd.weight": (256, 64), "output_norm.weight": (64,),
              "output_norm.bias": (64,), "blk.0.attn_norm.weight": (64,),
              "blk.0.attn_norm.bias": (64,), "blk.0.attn_qkv.weight": (96, 64),
              "blk.0.attn_output.weight": (64, 64), "blk.0.ffn_up.weight": (128, 64),
              "blk.0.ffn_down.weight": (64, 128)}
    for name, shape in shapes.items():
        w.add_tensor(name, rng.standard_normal(shape).astype(np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


def test_bad_options_and_families_leave_nothing(qwodel_bin, packages, tmp_path):
    ck = packages.checkpoint("qwen3")
    out = tmp_path / "out"
    cases = [
        (("--compute-units", "GPU"), "compute_units"),
        (("--input-shape", "1x"), "input_shape"),
        (("--seq-length", "0"), "seq_length"),
    ]
    for extra, word in cases:
        proc = run_qwodel(qwodel_bin, "quantize", ck, "-b", "coreml", "-o", out, *extra,
                          check=False)
        assert proc.returncode != 0 and word in proc.stderr, (extra, proc.stderr)
    proc = run_qwodel(qwodel_bin, "quantize", ck, "-b", "coreml", "-f", "int3", "-o", out,
                      check=False)
    assert proc.returncode != 0 and "int3" in proc.stderr
    # a dense MLP in a layer the router makes sparse would never be read: refused by name
    moe = hf_fixtures.make_checkpoint(tmp_path / "moe", **CHECKPOINTS["qwen3_moe"])
    tensors = hf_fixtures.read_safetensors(moe / "model.safetensors")
    stray = "model.layers.0.mlp.gate_proj.weight"
    tensors[stray] = tensors["model.layers.1.mlp.gate_proj.weight"]
    hf_fixtures.write_safetensors(moe / "model.safetensors", dict(sorted(tensors.items())))
    proc = run_qwodel(qwodel_bin, "quantize", moe, "-b", "coreml", "-o", out, check=False)
    assert proc.returncode != 0 and stray in proc.stderr, proc.stderr
    falcon = _falcon_gguf(tmp_path / "falcon.gguf")  # an architecture with no program here
    proc = run_qwodel(qwodel_bin, "quantize", falcon, "-b", "coreml", "-o", out, check=False)
    assert proc.returncode != 0 and 'does not write architecture "falcon"' in proc.stderr, \
        proc.stderr
    # longrope switches factors past the original context: a longer package is refused
    phi3 = packages.checkpoint("phi3")
    proc = run_qwodel(qwodel_bin, "quantize", phi3, "-b", "coreml", "-o", out, "--seq-length",
                      str(2 * SEQ_LENGTH), check=False)
    assert proc.returncode != 0 and "original context" in proc.stderr, proc.stderr
    multimodal = hf_fixtures.make_gemma3_multimodal_checkpoint(tmp_path / "gemma3mm")
    proc = run_qwodel(qwodel_bin, "quantize", multimodal, "-b", "coreml", "-o", out, check=False)
    assert proc.returncode != 0 and "does not write the multimodal" in proc.stderr, proc.stderr
    assert not out.exists() or not any(out.iterdir())


def test_non_finite_weights_are_refused_and_nothing_left(qwodel_bin, tmp_path):
    st_numpy = pytest.importorskip("safetensors.numpy")
    ck = hf_fixtures.make_checkpoint(tmp_path / "nan", "llama", tokenizer="llama2", tied=True,
                                     dtype="f16", hidden=64, heads=4, kv_heads=2)
    path = ck / "model.safetensors"
    tensors = st_numpy.load_file(str(path))
    tensors["model.layers.1.mlp.up_proj.weight"][3, 5] = np.nan
    st_numpy.save_file(tensors, str(path), metadata={"format": "pt"})
    out = tmp_path / "out"
    for fmt in ("int8_linear", "int6"):  # (int4 tables go through the same check)
        proc = run_qwodel(qwodel_bin, "quantize", ck, "-b", "coreml", "-f", fmt, "-o", out,
                          check=False)
        assert proc.returncode == 1, proc.stderr
        assert "model.layers.1.mlp.up_proj.weight" in proc.stderr and "not finite" in proc.stderr
        assert "Sanitizer" not in proc.stderr
        assert not out.exists() or not any(out.iterdir())


def test_output_is_deterministic(qwodel_bin, packages, tmp_path):
    pkg = packages("qwen3", "int6")
    run_qwodel(qwodel_bin, "quantize", packages.checkpoint("qwen3"), "-b", "coreml", "-f", "int6",
               "-o", tmp_path, "--seq-length", SEQ_LENGTH, "-q")
    again = tmp_path / pkg.name
    for rel in ("Manifest.json", "Data/com.apple.CoreML/model.mlmodel",
                "Data/com.apple.CoreML/weights/weight.bin"):
        assert (pkg / rel).read_bytes() == (again / rel).read_bytes(), rel


def test_does_not_replace_other_files(qwodel_bin, packages, tmp_path):
    ck = packages.checkpoint("qwen3")
    target = tmp_path / "qwen3_float16.mlpackage"
    target.mkdir()
    (target / "keep.txt").write_text("mine")
    proc = run_qwodel(qwodel_bin, "quantize", ck, "-b", "coreml", "-o", tmp_path, check=False)
    assert proc.returncode != 0 and "not an .mlpackage" in proc.stderr
    assert (target / "keep.txt").read_text() == "mine"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["qwen3_float16.mlpackage"]
