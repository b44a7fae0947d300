"""AWQ on Gemma, Gemma 2, Gemma 3 (text) and Phi-3: the per-family mappings and the backend.

* `awq_block` (tests/tools) runs the scale search on each family's tiny checkpoint: the
  mappings are llm-compressor's registry entries for the family (Gemma 2 balances gate/up
  against pre_feedforward_layernorm, Gemma 3 drops input_layernorm -> q/k/v, Phi-3 works on the
  fused qkv_proj / gate_up_proj), v -> o is skipped exactly under GQA, each searched mapping's
  error is at most plain rounding's, and folding the scales is an identity (the scaled,
  unquantized block computes what the original did — a fold that mistook Gemma's 1 + w norms
  for plain ones, or divided the wrong rows of a fused layer, fails here);
* `qwodel quantize -b awq` end to end: compressed-tensors' decompressor plus the output's other
  tensors make a transformers model whose logits are close to the source's; Phi-3's fused
  layers stay fused under their HF names; norms no mapping smooths come out bit for bit as the
  source stored them (Gemma's stored w, not the 1 + w the pass works with).
"""
from __future__ import annotations

import json
import subprocess

import numpy as np
import pytest

import hf_fixtures
import tokenizer_corpus
from conftest import run_qwodel, tool

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
pytest.importorskip("compressed_tensors")
import safetensors.torch  # noqa: E402

from test_awq import _decompressed_model, _logits  # noqa: E402

N_SEQ, SEQ_LEN = 2, 32

DEFAULT_NAMES = ["input_layernorm -> q_proj,k_proj,v_proj", "v_proj -> o_proj",
                 "post_attention_layernorm -> gate_proj,up_proj", "up_proj -> down_proj"]
# llm-compressor's AWQ_MAPPING_REGISTRY (research/awq.md §1.2): Gemma 1 is not in it (default)
MAPPING_NAMES = {
    "gemma": DEFAULT_NAMES,
    "gemma2": ["input_layernorm -> q_proj,k_proj,v_proj", "v_proj -> o_proj",
               "pre_feedforward_layernorm -> gate_proj,up_proj", "up_proj -> down_proj"],
    "gemma3": ["v_proj -> o_proj", "pre_feedforward_layernorm -> gate_proj,up_proj",
               "up_proj -> down_proj"],
    "phi3": ["input_layernorm -> qkv_proj", "qkv_proj -> o_proj",
             "post_attention_layernorm -> gate_up_proj", "gate_up_proj -> down_proj"],
}

# two heads of 64: kv_heads 2 is MHA (v -> o searched), 1 is GQA (skipped)
SEARCH_CASES = {
    "gemma": dict(kv_heads=2),
    "gemma2": dict(kv_heads=1, config_overrides={"sliding_window": 8}),
    "gemma3": dict(kv_heads=2, config_overrides={"sliding_window": 8,
                                                 "sliding_window_pattern": 2}),
    "phi3": dict(kv_heads=2),
    "phi3_gqa": dict(family="phi3", kv_heads=1),
}


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    return tmp_path_factory.mktemp("awq_families")


def _make(root, name, dtype, **kw):
    kw = dict(kw)
    family = kw.pop("family", name)
    return hf_fixtures.make_dense_checkpoint(root / f"{name}_{dtype}", family, dtype=dtype,
                                             hidden=128, heads=2, layers=2, **kw)


@pytest.mark.parametrize("name", list(SEARCH_CASES))
def test_search_mappings_and_identity(root, tmp_path, name):
    case = SEARCH_CASES[name]
    family = case.get("family", name)
    ck = _make(root, name, "f32", **case)
    vocab = json.loads((ck / "config.json").read_text())["vocab_size"]
    rng = np.random.default_rng(5)
    rng.integers(0, vocab, (N_SEQ, SEQ_LEN), dtype=np.int32).tofile(tmp_path / "calib.i32")
    rng.integers(0, vocab, (N_SEQ, SEQ_LEN), dtype=np.int32).tofile(tmp_path / "held.i32")
    proc = subprocess.run([str(tool("awq_block")), str(ck), str(tmp_path / "calib.i32"),
                           str(tmp_path / "held.i32"), str(N_SEQ), str(SEQ_LEN), "128", "0",
                           "on", "f32"], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    blocks = [json.loads(line) for line in proc.stdout.splitlines()]
    assert len(blocks) == 2
    gqa = case["kv_heads"] != 2
    for blk in blocks:
        assert blk["identity_error"] < 1e-5, blk
        assert [m["name"] for m in blk["mappings"]] == MAPPING_NAMES[family]
        for m in blk["mappings"]:
            if "o_proj" in m["name"].split(" -> ")[1]:
                assert m["skipped"] == gqa, m
            if not m["skipped"]:
                assert m["loss"] <= m["loss_plain"], m


# the end-to-end cases: bf16 as published; Gemma 3 untied to cover a dense head copy of its own
E2E_CASES = {
    "gemma": dict(kv_heads=1),
    "gemma2": dict(kv_heads=1),
    "gemma3": dict(kv_heads=1, tied=False),
    "phi3": dict(kv_heads=1),
}
# norms no mapping of the family smooths: the output must hold the source's stored bits
UNTOUCHED_NORMS = {
    "gemma": [],
    "gemma2": ["post_attention_layernorm", "post_feedforward_layernorm"],
    "gemma3": ["input_layernorm", "post_attention_layernorm", "post_feedforward_layernorm",
               "self_attn.q_norm", "self_attn.k_norm"],
    "phi3": [],
}


@pytest.mark.parametrize("family", list(E2E_CASES))
def test_backend_end_to_end(qwodel_bin, root, family):
    ck = _make(root, family, "bf16", **E2E_CASES[family])
    calib = root / "calib.txt"
    if not calib.exists():
        calib.write_text("\n".join(s.replace("\n", " ") for s in tokenizer_corpus.corpus(3000)
                                   if s.strip()))
    out_root = root / f"out_{family}"
    run_qwodel(qwodel_bin, "quantize", ck, "-b", "awq", "-o", out_root,
               "--calibration-dataset", calib, "--num-samples", "4", "--seq-length", "48", "-q")
    out = out_root / f"{ck.name}-awq-int4"
    got_t = safetensors.torch.load_file(str(out / "model.safetensors"))
    src_t = safetensors.torch.load_file(str(ck / "model.safetensors"))
    if family == "phi3":  # fused layers stay fused, under their HF names
        assert "model.layers.0.self_attn.qkv_proj.weight_packed" in got_t
        assert "model.layers.0.mlp.gate_up_proj.weight_packed" in got_t
        assert not any("q_proj" in n or "gate_proj." in n for n in got_t)
    for layer in range(2):
        for norm in UNTOUCHED_NORMS[family]:
            name = f"model.layers.{layer}.{norm}.weight"
            assert torch.equal(got_t[name], src_t[name]), name
    assert torch.equal(got_t["model.norm.weight"], src_t["model.norm.weight"])
    qc = json.loads((out / "config.json").read_text())["quantization_config"]
    assert qc["format"] == "pack-quantized" and qc["ignore"] == ["lm_head"]

    model = _decompressed_model(out, False)
    ref = transformers.AutoModelForCausalLM.from_pretrained(str(ck), dtype=torch.float32)
    vocab = json.loads((ck / "config.json").read_text())["vocab_size"]
    ids = np.random.default_rng(11).integers(0, min(vocab, 32000), (1, 16)).tolist()
    got, want = _logits(model, ids), _logits(ref, ids)
    rel = _rel(got, want)
    # int4 noise, not a different function: about what plain rounding of the source's linear
    # layers costs (a norm written as 1 + w, or scales folded into the wrong rows, cost far more)
    rel_rtn = _rel(_logits(_rtn_model(ck), ids), want)
    assert rel < 1.25 * rel_rtn + 0.01, (rel, rel_rtn)
    assert not np.array_equal(got, want)


def _rel(got, want):
    return float(np.sqrt(np.mean((got - want) ** 2) / np.mean(want ** 2)))


def _rtn_model(ck, group=128):
    """The source with every decoder linear rounded to asymmetric int4 groups (min/max)."""
    model = transformers.AutoModelForCausalLM.from_pretrained(str(ck), dtype=torch.float32)
    with torch.no_grad():
        for name, mod in model.model.layers.named_modules():
            if not isinstance(mod, torch.nn.Linear):
                continue
            w = mod.weight.reshape(mod.weight.shape[0], -1, group)
            lo = torch.clamp(w.amin(-1, keepdim=True), max=0.0)
            hi = torch.clamp(w.amax(-1, keepdim=True), min=0.0)
            scale = (hi - lo) / 15.0
            zp = torch.round(-lo / scale)
            q = torch.clamp(torch.round(w / scale) + zp, 0, 15)
            mod.weight.copy_(((q - zp) * scale).reshape(mod.weight.shape))
    return model.eval()
