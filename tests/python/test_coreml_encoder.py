"""The coreml backend's BERT encoder: an ML Program whose output is last_hidden_state.

Checked as test_coreml.py checks the decoders: coremltools loads every package and its milproto
loader rebuilds the program with type inference; the numpy evaluator of test_coreml runs the
written program on random token ids (with padding) and its hidden states are compared with
transformers' BertModel (torch, CPU, float32). The GGUF and AWQ backends refuse encoders by name.
"""
from __future__ import annotations

import json
import logging

import numpy as np
import pytest

from conftest import run_qwodel
import hf_fixtures

logging.getLogger("coremltools").setLevel(logging.ERROR)
ct = pytest.importorskip("coremltools")
from coremltools.converters.mil.frontend.milproto.load import load as milproto_load  # noqa: E402

from test_coreml import FORMATS, SPEC, evaluate, main_block, weights_dir  # noqa: E402

SEQ_LENGTH = 32

# A BertModel with exact GELU, a BertForMaskedLM (encoder under "bert.", masked-LM head left
# out) with the tanh GELU in float32, and one with ReLU and a hidden size whose matrices fall
# on both sides of coremltools' compression threshold.
CHECKPOINTS = {
    "bert": dict(hidden=64, heads=4, dtype="bf16"),
    "bert-mlm": dict(hidden=96, heads=6, dtype="f32", head="mlm", hidden_act="gelu_new"),
    "bert-relu": dict(hidden=32, heads=2, intermediate=128, dtype="f16", hidden_act="relu",
                      layers=3),
}


@pytest.fixture(scope="module")
def packages(qwodel_bin, tmp_path_factory):
    root = tmp_path_factory.mktemp("coreml-encoder")
    made: dict = {}

    def checkpoint(key):
        if key not in made:
            made[key] = hf_fixtures.make_bert_checkpoint(root / "ck" / key, **CHECKPOINTS[key])
        return made[key]

    def get(key, fmt):
        k = (key, fmt)
        if k not in made:
            out = root / f"out-{len(made)}"
            run_qwodel(qwodel_bin, "quantize", checkpoint(key), "-b", "coreml", "-f", fmt, "-o",
                       out, "--seq-length", SEQ_LENGTH, "-q")
            made[k] = out / f"{key}_{fmt.replace('_', '-')}.mlpackage"
        return made[k]

    get.checkpoint = checkpoint
    return get


@pytest.mark.parametrize("fmt", FORMATS)
def test_coremltools_loads_and_rebuilds(packages, fmt):
    pkg = packages("bert", fmt)
    spec = ct.utils.load_spec(str(pkg))
    want = SPEC.get(fmt, 7)
    assert spec.specificationVersion == want
    ct.models.MLModel(str(pkg), skip_model_load=True)
    prog = milproto_load(spec, specification_version=want, file_weights_dir=weights_dir(pkg))
    types = [op.op_type for op in prog.functions["main"].operations]
    assert "gelu" in types and "layer_norm" not in types
    desc = spec.description
    assert [i.name for i in desc.input] == ["input_ids", "attention_mask"]
    for feat in desc.input:
        ranges = [(r.lowerBound, r.upperBound)
                  for r in feat.type.multiArrayType.shapeRange.sizeRanges]
        assert ranges == [(1, 1), (1, SEQ_LENGTH)]
    assert [o.name for o in desc.output] == ["last_hidden_state"]
    assert desc.output[0].type.multiArrayType.dataType == \
        ct.proto.FeatureTypes_pb2.ArrayFeatureType.FLOAT32
    assert dict(desc.metadata.userDefined)["qwodel.format"] == fmt


def test_task_heads_and_pooler_are_left_out(packages):
    """The masked-LM checkpoint's encoder is read from under "bert."; neither its head nor a
    BertModel's pooler becomes part of the program."""
    for key in ("bert", "bert-mlm"):
        spec = ct.utils.load_spec(str(packages(key, "float16")))
        names = [op.outputs[0].name for op in main_block(spec)[1].operations]
        assert "word_embeddings_weight" in names
        assert not any("pooler" in n or "cls" in n or "predictions" in n for n in names), key


def hf_hidden_states(ck, ids, mask):
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    model = transformers.AutoModel.from_pretrained(str(ck), torch_dtype=torch.float32)
    model.eval()
    with torch.no_grad():
        out = model(input_ids=torch.tensor(ids, dtype=torch.long),
                    attention_mask=torch.tensor(mask, dtype=torch.long))
    return out.last_hidden_state.float().numpy()


def vocab_size(packages, key):
    return json.loads((packages.checkpoint(key) / "config.json").read_text())["vocab_size"]


def compare(packages, key, fmt, ids, mask):
    ours = evaluate(packages(key, fmt), {"input_ids": ids, "attention_mask": mask})
    ours = ours["last_hidden_state"]
    ref = hf_hidden_states(packages.checkpoint(key), ids, mask)
    assert ours.shape == ref.shape and ours.dtype == np.float32
    valid = mask.astype(bool)
    err = np.abs(ours[valid] - ref[valid]).max()
    scale = np.abs(ref[valid]).max()
    print(f"{key} {fmt}: max |ours - transformers| {err:.3g}, max |hidden| {scale:.3g}")
    return err, scale


@pytest.mark.parametrize("key", sorted(CHECKPOINTS))
def test_hidden_states_match_transformers(packages, key):
    """Right padding in the first row, left padding in the second (batch 1 each): padded keys are
    masked out of every query, positions still count from 0 as transformers counts them."""
    rng = np.random.default_rng(11)
    vocab = vocab_size(packages, key)
    for pad_left in (False, True):
        ids = rng.integers(5, vocab, size=(1, 12)).astype(np.int32)
        mask = np.ones_like(ids)
        if pad_left:
            mask[0, :3] = 0
        else:
            mask[0, -4:] = 0
        err, scale = compare(packages, key, "float16", ids, mask)
        # float16 weights and activations against a float32 reference
        assert err <= 1e-2 * scale + 1e-3, (pad_left, err, scale)


def test_masking_matters(packages):
    """The comparison can fail: the same ids with the padding ignored give other states."""
    ids = np.random.default_rng(2).integers(5, vocab_size(packages, "bert"),
                                            size=(1, 10)).astype(np.int32)
    mask = np.ones_like(ids)
    mask[0, -3:] = 0
    ours = evaluate(packages("bert", "float16"), {"input_ids": ids, "attention_mask": mask})
    ref = hf_hidden_states(packages.checkpoint("bert"), ids, np.ones_like(ids))
    assert np.abs(ours["last_hidden_state"][0, :7] - ref[0, :7]).max() > 0.05


@pytest.mark.parametrize("fmt,tol", [("int8_linear", 5e-2), ("int8_symmetric", 5e-2),
                                     ("int6", 0.25), ("int4", 0.5)])
def test_compressed_encoder_close_to_transformers(packages, fmt, tol):
    ids = np.random.default_rng(4).integers(5, vocab_size(packages, "bert"),
                                            size=(1, 9)).astype(np.int32)
    err, scale = compare(packages, "bert", fmt, ids, np.ones_like(ids))
    assert err <= tol * scale, err


# ---- refusals -------------------------------------------------------------------------------

def test_other_backends_refuse_encoders(qwodel_bin, packages, tmp_path):
    ck = packages.checkpoint("bert")
    out = tmp_path / "out"
    for backend, words in (("gguf", "does not write bert encoder models"),
                           ("awq", "does not run architecture \"bert\"")):
        proc = run_qwodel(qwodel_bin, "quantize", ck, "-b", backend, "-o", out, check=False)
        assert proc.returncode != 0 and words in proc.stderr, (backend, proc.stderr)
        assert "Sanitizer" not in proc.stderr
    assert not out.exists() or not any(out.iterdir())


@pytest.mark.parametrize("overrides,extra,words", [
    ({"position_embedding_type": "relative_key"}, (), "position_embedding_type"),
    ({"hidden_act": "mish"}, (), "hidden_act \"mish\""),
    ({"is_decoder": True}, (), "is_decoder"),
    ({}, ("--seq-length", "200"), "max_position_embeddings"),
    ({}, ("--seq-length", "32", "--stateful"), "is an encoder"),
])
def test_unsupported_configs_are_refused(qwodel_bin, tmp_path, overrides, extra, words):
    ck = hf_fixtures.make_bert_checkpoint(tmp_path / "ck", hidden=32, heads=2, layers=1,
                                          config_overrides=overrides)
    out = tmp_path / "out"
    proc = run_qwodel(qwodel_bin, "quantize", ck, "-b", "coreml", "-o", out, *extra, check=False)
    assert proc.returncode != 0 and words in proc.stderr, proc.stderr
    assert not out.exists() or not any(out.iterdir())


def test_unknown_tensor_is_refused(qwodel_bin, tmp_path):
    """A tensor the program has no place for (here a classifier head) is named, not dropped."""
    ck = hf_fixtures.make_bert_checkpoint(tmp_path / "ck", hidden=32, heads=2, layers=1)
    tensors = hf_fixtures.read_safetensors(ck / "model.safetensors")
    tensors["classifier.weight"] = np.zeros((2, 32), np.float32)
    hf_fixtures.write_safetensors(ck / "model.safetensors", dict(sorted(tensors.items())), "BF16")
    out = tmp_path / "out"
    proc = run_qwodel(qwodel_bin, "quantize", ck, "-b", "coreml", "-o", out, check=False)
    assert proc.returncode != 0 and "classifier.weight" in proc.stderr, proc.stderr
    assert not out.exists() or not any(out.iterdir())


def test_default_length_is_the_models_limit(qwodel_bin, tmp_path):
    """Without --seq-length the default of 512 would pass the 128 positions of this model: the
    package accepts up to the model's limit instead (an explicit longer length is refused, see
    test_unsupported_configs_are_refused)."""
    ck = hf_fixtures.make_bert_checkpoint(tmp_path / "ck", hidden=32, heads=2, layers=1)
    run_qwodel(qwodel_bin, "quantize", ck, "-b", "coreml", "-o", tmp_path, "-q")
    spec = ct.utils.load_spec(str(tmp_path / "ck_float16.mlpackage"))
    for feat in spec.description.input:
        arr = feat.type.multiArrayType
        assert [(r.lowerBound, r.upperBound) for r in arr.shapeRange.sizeRanges] == \
            [(1, 1), (1, 128)]
        assert list(arr.shape) == [1, 128]
