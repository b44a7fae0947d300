"""The coreml backend's stateful (iOS 18) generation model, checked by programs no one here wrote.

`--stateful` keeps the key/value cache in two Core ML states, keyCache and valueCache (fp16,
[layers, batch, kv heads, seq_length, head_dim]); input_ids holds only the new tokens and
attention_mask covers the cached and the new ones, so the program writes the new keys at
past = len(attention_mask) - len(input_ids).

* coremltools reads each package (`load_spec`, `MLModel(skip_model_load=True)`) and its milproto
  loader rebuilds the program with type inference, states included.
* Numerics: test_coreml's numpy evaluator, with the state ops added here (read_state,
  write_state, slice_update, shape, sub, slice_by_index with squeeze_mask), runs generation as a
  client would (prefill, then a few tokens at a time with a growing attention_mask, the states
  carried between calls) and every step's logits are compared with transformers' logits of the
  whole sequence.
Nothing on Linux can run an ML Program, so a device run is not part of this file.
"""
from __future__ import annotations

import json
import logging

import numpy as np
import pytest

from conftest import run_qwodel
import hf_fixtures
from test_coreml import (CHECKPOINTS, MIL_NP, OPS, SEQ_LENGTH, _BlobStorageReader, ct,
                         decode, dequantize, hf_logits, lut_to_dense, main_block, milproto_load,
                         weights_dir)

logging.getLogger("coremltools").setLevel(logging.ERROR)

FLOAT_ARRAY = ct.proto.FeatureTypes_pb2.ArrayFeatureType


@pytest.fixture(scope="module")
def stateful(qwodel_bin, tmp_path_factory):
    """stateful(key, fmt, *extra) -> path of the written stateful .mlpackage (cached);
    stateful.plain(key, fmt) the same model without --stateful; stateful.checkpoint(key)."""
    root = tmp_path_factory.mktemp("coreml_state")
    made: dict = {}

    def checkpoint(key):
        if ("ck", key) not in made:
            made[("ck", key)] = hf_fixtures.make_checkpoint(root / "ck" / key,
                                                            **CHECKPOINTS[key])
        return made[("ck", key)]

    def write(key, fmt, extra):
        k = (key, fmt, extra)
        if k not in made:
            out = root / f"out-{len(made)}"
            run_qwodel(qwodel_bin, "quantize", checkpoint(key), "-b", "coreml", "-f", fmt, "-o",
                       out, "--seq-length", SEQ_LENGTH, "-q", *extra)
            made[k] = out / f"{key}_{fmt.replace('_', '-')}.mlpackage"
        return made[k]

    def get(key, fmt, *extra):
        return write(key, fmt, ("--stateful",) + extra)

    get.plain = lambda key, fmt: write(key, fmt, ())
    get.checkpoint = checkpoint
    return get


# ---- loading --------------------------------------------------------------------------------

@pytest.mark.parametrize("key,fmt", [("llama", "float16"), ("llama", "int8_linear"),
                                     ("llama", "int8_symmetric"), ("llama", "int6"),
                                     ("llama", "int4"), ("qwen3", "float16"),
                                     ("qwen3", "int4"), ("mistral", "float16")])
def test_coremltools_loads_stateful(stateful, key, fmt):
    pkg = stateful(key, fmt)
    spec = ct.utils.load_spec(str(pkg))
    # states are iOS 18: spec 9 and opset CoreML8 whatever the weights' format
    assert spec.specificationVersion == 9
    fn, block = main_block(spec)
    assert fn.opset == "CoreML8"
    model = ct.models.MLModel(str(pkg), skip_model_load=True)
    assert model.get_spec().specificationVersion == 9
    desc = spec.description
    assert [i.name for i in desc.input] == ["input_ids", "attention_mask"]
    for feat in desc.input:  # both range-flexible, none fixed (coremltools #2548)
        arr = feat.type.multiArrayType
        assert arr.dataType == FLOAT_ARRAY.INT32
        assert [(r.lowerBound, r.upperBound) for r in arr.shapeRange.sizeRanges] == \
            [(1, 1), (1, SEQ_LENGTH)]
    ck = stateful.checkpoint(key)
    config = json.loads((ck / "config.json").read_text())
    heads = config["num_attention_heads"]
    kv_heads = config.get("num_key_value_heads", heads)
    head_dim = config.get("head_dim") or config["hidden_size"] // heads
    want = [config["num_hidden_layers"], 1, kv_heads, SEQ_LENGTH, head_dim]
    assert [s.name for s in desc.state] == ["keyCache", "valueCache"]
    for s in desc.state:
        arr = s.type.stateType.arrayType
        assert arr.dataType == FLOAT_ARRAY.FLOAT16
        assert list(arr.shape) == want
        assert not arr.HasField("shapeRange") and not s.type.isOptional
    # a state is a function input of stateType, and never a description input
    fn_inputs = {i.name: i.type.WhichOneof("type") for i in fn.inputs}
    assert fn_inputs == {"input_ids": "tensorType", "attention_mask": "tensorType",
                         "keyCache": "stateType", "valueCache": "stateType"}
    for i in fn.inputs:
        if i.name.endswith("Cache"):
            tt = i.type.stateType.wrappedType.tensorType
            assert tt.dataType == 10 and [d.constant.size for d in tt.dimensions] == want
    types = [op.type for op in block.operations]
    n_layers = config["num_hidden_layers"]
    # coreml_update_state on the wire: write_state (no outputs), then read_state
    assert types.count("write_state") == 2 * n_layers
    assert types.count("read_state") == 2 * n_layers + 2
    assert types.count("slice_update") == 2 * n_layers
    for op in block.operations:
        if op.type == "write_state":
            assert len(op.outputs) == 0 and set(op.inputs) == {"input", "data"}
    meta = dict(desc.metadata.userDefined)
    assert meta["qwodel.stateful"] == "true" and meta["qwodel.format"] == fmt
    # the milproto loader re-runs type inference on every op, the state ops included
    prog = milproto_load(spec, specification_version=9, file_weights_dir=weights_dir(pkg))
    ops = [op.op_type for op in prog.functions["main"].operations]
    assert ops.count("coreml_update_state") == 2 * n_layers
    if fmt != "float16":
        assert any(t.startswith("constexpr_") for t in ops)


# (the program loaded from the proto has lost the inputs' ranges; coremltools says so)
@pytest.mark.filterwarnings("ignore:Some dimensions in the input shape are unknown")
def test_coremltools_writes_the_same_state_interface(stateful):
    """The loaded program, saved again by coremltools' own backend (ct.convert from MIL at
    iOS18), declares the states exactly as we do: the same function input types and the same
    description.state types, and it writes the same write_state / read_state pairs."""
    pkg = stateful("llama", "float16")
    spec = ct.utils.load_spec(str(pkg))
    prog = milproto_load(spec, specification_version=9, file_weights_dir=weights_dir(pkg))
    theirs = ct.convert(prog, convert_to="mlprogram", minimum_deployment_target=ct.target.iOS18,
                        skip_model_load=True).get_spec()
    assert theirs.specificationVersion == 9
    ours_fn, ours_block = main_block(spec)
    their_fn, their_block = main_block(theirs)
    assert their_fn.opset == ours_fn.opset
    assert {i.name: i.type for i in their_fn.inputs} == {i.name: i.type for i in ours_fn.inputs}
    assert [(s.name, s.type) for s in theirs.description.state] == \
        [(s.name, s.type) for s in spec.description.state]
    assert [i.name for i in theirs.description.input] == ["input_ids", "attention_mask"]

    def count(block):
        types = [op.type for op in block.operations]
        return types.count("write_state"), types.count("read_state")

    assert count(their_block) == count(ours_block)


def test_plain_program_is_not_stateful(stateful):
    spec = ct.utils.load_spec(str(stateful.plain("llama", "float16")))
    assert spec.specificationVersion == 7 and len(spec.description.state) == 0
    assert "qwodel.stateful" not in spec.description.metadata.userDefined
    assert not any(op.type.endswith("_state") for op in main_block(spec)[1].operations)


def test_run_result_reports_stateful(qwodel_bin, stateful, tmp_path):
    proc = run_qwodel(qwodel_bin, "quantize", stateful.checkpoint("llama"), "-b", "coreml",
                      "-o", tmp_path, "--seq-length", SEQ_LENGTH, "--stateful", "--json", "-q")
    info = json.loads(proc.stdout)
    assert info["stateful"] is True and info["specification_version"] == 9
    assert info["opset"] == "CoreML8"
    # two fp16 caches of 2 layers x 1 x 2 kv heads x 64 x 16
    assert info["state_bytes"] == 2 * 2 * (2 * 1 * 2 * SEQ_LENGTH * 16)
    proc = run_qwodel(qwodel_bin, "quantize", stateful.checkpoint("llama"), "-b", "coreml",
                      "-o", tmp_path / "plain", "--seq-length", SEQ_LENGTH, "--json", "-q")
    assert json.loads(proc.stdout)["stateful"] is False


def test_neural_engine_warning(qwodel_bin, stateful, tmp_path):
    """head_dim 16: a warning that the Neural Engine may refuse the states, unless the compute
    units leave it out."""
    ck = stateful.checkpoint("llama")
    proc = run_qwodel(qwodel_bin, "quantize", ck, "-b", "coreml", "-o", tmp_path / "a",
                      "--seq-length", SEQ_LENGTH, "--stateful")
    assert "not a multiple of 32" in proc.stderr and "#2631" in proc.stderr, proc.stderr
    proc = run_qwodel(qwodel_bin, "quantize", ck, "-b", "coreml", "-o", tmp_path / "b",
                      "--seq-length", SEQ_LENGTH, "--stateful", "--compute-units", "CPU_AND_GPU")
    assert "#2631" not in proc.stderr, proc.stderr


# ---- a numpy evaluator of the stateful program ----------------------------------------------

def _slice_indices(shape, begin, end, begin_mask, end_mask, squeeze_mask):
    idx = []
    for d in range(len(shape)):
        if squeeze_mask is not None and squeeze_mask[d]:
            idx.append(int(begin[d]))
            continue
        b = 0 if begin_mask[d] else int(begin[d])
        e = shape[d] if end_mask[d] else int(end[d])
        assert 0 <= b <= e <= shape[d], (d, b, e, shape)  # the device would read out of bounds
        idx.append(slice(b, e))
    return tuple(idx)


def _slice_by_index(a):
    return a["x"][_slice_indices(a["x"].shape, a["begin"], a["end"], a["begin_mask"],
                                 a["end_mask"], a.get("squeeze_mask"))]


def _slice_update(a):
    x = a["x"].copy()
    idx = _slice_indices(x.shape, a["begin"], a["end"], a.get("begin_mask", [False] * x.ndim),
                         a.get("end_mask", [False] * x.ndim), a.get("squeeze_mask"))
    assert x[idx].shape == a["update"].shape, (x[idx].shape, a["update"].shape)
    x[idx] = a["update"]
    return x


STATE_OPS = dict(OPS)
STATE_OPS.update({
    "shape": lambda a: np.array(a["x"].shape, np.int32),
    "sub": lambda a: a["x"] - a["y"] if a["x"].dtype == np.int32
    else a["x"].astype(np.float32) - a["y"],
    "slice_by_index": _slice_by_index,
    "slice_update": _slice_update,
})


class StatefulProgram:
    """The program's main block with its weights decoded once; run() is one prediction, which
    reads and updates `states` (name -> fp16 array) in place, as MLState does."""

    def __init__(self, pkg):
        spec = ct.utils.load_spec(str(pkg))
        reader = _BlobStorageReader(weights_dir(pkg) + "/weight.bin")
        _, self.block = main_block(spec)
        self.consts = {}
        for op in self.block.operations:
            name = op.outputs[0].name if op.outputs else None
            if op.type == "const":
                self.consts[name] = decode(op.attributes["val"], reader)
            elif op.type == "constexpr_affine_dequantize":
                self.consts[name] = dequantize(op.attributes, reader)
            elif op.type == "constexpr_lut_to_dense":
                self.consts[name] = lut_to_dense(op, reader)
        self.state_shapes = {
            s.name: tuple(s.type.stateType.arrayType.shape) for s in spec.description.state}

    def new_states(self):
        # Core ML leaves a new state's contents unspecified: NaN shows any read of a slot
        # that no call wrote
        return {name: np.full(shape, np.nan, np.float16)
                for name, shape in self.state_shapes.items()}

    def run(self, inputs, states):
        env = dict(self.consts)
        env.update(inputs)
        for op in self.block.operations:
            if op.type in ("const", "constexpr_affine_dequantize", "constexpr_lut_to_dense"):
                continue
            if op.type == "read_state":
                env[op.outputs[0].name] = states[op.inputs["input"].arguments[0].name].copy()
                continue
            if op.type == "write_state":
                state = op.inputs["input"].arguments[0].name
                data = env[op.inputs["data"].arguments[0].name]
                assert data.dtype == np.float16 and data.shape == states[state].shape
                states[state][...] = data
                continue
            args = {}
            for key, arg in op.inputs.items():
                vals = [env[b.name] for b in arg.arguments]
                args[key] = vals if key == "values" else vals[0]
            out = op.outputs[0]
            env[out.name] = np.asarray(STATE_OPS[op.type](args)).astype(
                MIL_NP[out.type.tensorType.dataType])
        return {name: env[name] for name in self.block.outputs}


def generate(pkg, ids, mask, chunks):
    """Feeds ids [B, T] in chunks (prefill first) with attention_mask = mask[:, :end]; returns
    the logits of every position, [B, T, vocab], gathered from the steps."""
    program = StatefulProgram(pkg)
    states = program.new_states()
    out, start = [], 0
    for n in chunks:
        end = start + n
        logits = program.run({"input_ids": ids[:, start:end].astype(np.int32),
                              "attention_mask": mask[:, :end].astype(np.int32)},
                             states)["logits"]
        assert logits.shape[:2] == (ids.shape[0], n) and logits.dtype == np.float32
        out.append(logits)
        start = end
    assert start == ids.shape[1]
    return np.concatenate(out, axis=1)


def compare(ours, ref, mask, label, rel, argmax=0.9):
    """The same check as test_coreml.test_program_matches_transformers, at non-padded positions."""
    valid = mask == 1
    err = np.abs(ours[valid] - ref[valid]).max()
    scale = np.abs(ref[valid]).max()
    agree = (ours[valid].argmax(-1) == ref[valid].argmax(-1)).mean()
    print(f"{label}: max |ours - reference| {err:.3g}, max |logit| {scale:.3g}, "
          f"argmax agreement {agree:.2f}")
    assert err <= rel * scale + 1e-3, (label, err, scale)
    assert agree >= argmax, (label, agree)


# prefill 5, then one token at a time, then 3 at once, then the rest one by one
CHUNKS = [5, 1, 1, 3, 1, 1, 1]


@pytest.mark.parametrize("key", sorted(CHECKPOINTS))
def test_generation_matches_transformers(stateful, key):
    """Each family, float16: prefill and step-by-step logits equal transformers' logits of the
    whole sequence, with the first two tokens left-padded."""
    pkg = stateful(key, "float16")
    vocab = json.loads((stateful.checkpoint(key) / "config.json").read_text())["vocab_size"]
    ids = np.random.default_rng(7).integers(0, vocab, size=(1, 13)).astype(np.int32)
    mask = np.ones_like(ids)
    mask[0, :2] = 0
    ours = generate(pkg, ids, mask, CHUNKS)
    ref = hf_logits(stateful.checkpoint(key), ids, mask)
    assert ours.shape == ref.shape
    compare(ours, ref, mask, f"{key} stateful", 1e-2)


def test_generation_batch_of_two(stateful):
    """Batch 2, one row left-padded by 3 and one not: the cache keeps the rows apart."""
    pkg = stateful("qwen2", "float16", "--input-shape", "(2, 8)")
    spec = ct.utils.load_spec(str(pkg))
    assert [list(s.type.stateType.arrayType.shape)[:2] for s in spec.description.state] == \
        [[2, 2], [2, 2]]
    ids = np.random.default_rng(11).integers(0, 32000, size=(2, 10)).astype(np.int32)
    mask = np.ones_like(ids)
    mask[1, :3] = 0
    ours = generate(pkg, ids, mask, [4, 1, 2, 1, 1, 1])
    ref = hf_logits(stateful.checkpoint("qwen2"), ids, mask)
    compare(ours, ref, mask, "qwen2 batch 2 stateful", 1e-2)


@pytest.mark.parametrize("fmt,tol", [("int8_linear", 5e-2), ("int6", 0.25), ("int4", 0.5)])
def test_compressed_generation(stateful, fmt, tol):
    """Compressed weights: generation is what the same format's plain program computes on the
    whole sequence (same weights, same ops), and close to transformers as
    test_compressed_program_close_to_transformers requires of the plain one."""
    from test_coreml import evaluate
    pkg = stateful("llama", fmt)
    ids = np.random.default_rng(3).integers(0, 32000, size=(1, 9)).astype(np.int32)
    mask = np.ones_like(ids)
    ours = generate(pkg, ids, mask, [4, 1, 2, 1, 1])
    plain = evaluate(stateful.plain("llama", fmt),
                     {"input_ids": ids, "attention_mask": mask})["logits"]
    compare(ours, plain, mask, f"{fmt} stateful vs plain", 2e-3, argmax=1.0)
    ref = hf_logits(stateful.checkpoint("llama"), ids, mask)
    compare(ours, ref, mask, f"{fmt} stateful vs transformers", tol, argmax=0.0)


def test_prefill_of_the_whole_context(stateful):
    """A prefill as long as the cache, and a step at the last free position: nothing is read
    or written past seq_length (the evaluator checks every slice's bounds)."""
    pkg = stateful("llama", "float16")
    ids = np.random.default_rng(5).integers(0, 32000, size=(1, SEQ_LENGTH)).astype(np.int32)
    mask = np.ones_like(ids)
    ours = generate(pkg, ids, mask, [SEQ_LENGTH - 1, 1])
    ref = hf_logits(stateful.checkpoint("llama"), ids, mask)
    compare(ours, ref, mask, "llama full context", 1e-2)


# ---- refusals -------------------------------------------------------------------------------

def test_bad_stateful_combinations_leave_nothing(qwodel_bin, stateful, tmp_path):
    ck = stateful.checkpoint("llama")
    out = tmp_path / "out"
    # 2 layers x 64 x 2 heads x 1048576 x 16: 4.3e9 fp16 values per cache, past 2^31
    proc = run_qwodel(qwodel_bin, "quantize", ck, "-b", "coreml", "-o", out, "--stateful",
                      "--input-shape", "(64, 1048576)", check=False)
    assert proc.returncode != 0, proc.stderr
    assert "stateful" in proc.stderr and "seq_length" in proc.stderr, proc.stderr
    assert "Sanitizer" not in proc.stderr
    proc = run_qwodel(qwodel_bin, "quantize", ck, "-b", "coreml", "-o", out, "--stateful=maybe",
                      check=False)
    assert proc.returncode != 0 and "stateful" in proc.stderr, proc.stderr
    # a dry run refuses the same way, before anything is written
    proc = run_qwodel(qwodel_bin, "quantize", ck, "-b", "coreml", "-o", out, "--stateful",
                      "--input-shape", "(64, 1048576)", "--dry-run", check=False)
    assert proc.returncode != 0 and "2^31" in proc.stderr, proc.stderr
    assert not out.exists() or not any(out.iterdir())


def test_stateful_output_is_deterministic(qwodel_bin, stateful, tmp_path):
    pkg = stateful("qwen3", "int4")
    run_qwodel(qwodel_bin, "quantize", stateful.checkpoint("qwen3"), "-b", "coreml", "-f",
               "int4", "-o", tmp_path, "--seq-length", SEQ_LENGTH, "--stateful", "-q")
    again = tmp_path / pkg.name
    for rel in ("Manifest.json", "Data/com.apple.CoreML/model.mlmodel",
                "Data/com.apple.CoreML/weights/weight.bin"):
        assert (pkg / rel).read_bytes() == (again / rel).read_bytes(), rel
