"""AWQ's per-block scale search (src/backends/awq_search.c), judged by what it promises.

`awq_block` (tests/tools) runs the search on every block of a checkpoint over calibration ids
and reports, per block, each mapping's chosen exponent and parent-output error, whether the
scaled block still computes the same function (unquantized), and the int4 block's error on
held-out ids with and without the scales. Checked:

* folding the scales is an identity: the scaled, unquantized block equals the original to f32
  rounding (so a wrong fold, e.g. dividing the wrong rows of v_proj, fails);
* every searched mapping's error is at most plain round-to-nearest's (identity is a candidate);
* v_proj -> o_proj is searched only when v's outputs are o's inputs (MHA), skipped under GQA;
* on a checkpoint whose norms make a few activation channels large (what AWQ exists for), the
  int4 block's error on held-out tokens is clearly lower with AWQ than without, in every block.
"""
from __future__ import annotations

import json
import subprocess

import numpy as np
import pytest

import hf_fixtures
from conftest import tool

N_SEQ, SEQ_LEN = 4, 32
OUTLIER_CHANNELS = [3, 17, 64, 200]


def _outlier_checkpoint(path, **kwargs):
    """A checkpoint whose norm weights boost a few channels 30x, giving the activation
    outliers of trained models."""
    ck = hf_fixtures.make_checkpoint(path, **kwargs)
    st = ck / "model.safetensors"
    tensors = hf_fixtures.read_safetensors(st)
    for name, arr in tensors.items():
        if name.endswith(("input_layernorm.weight", "post_attention_layernorm.weight")):
            arr[OUTLIER_CHANNELS] *= 30.0
    hf_fixtures.write_safetensors(st, tensors, dtype="F32")
    return ck


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    root = tmp_path_factory.mktemp("awq_search")
    return {
        # MHA (v -> o searched), f32
        "mha": _outlier_checkpoint(root / "mha", family="llama", tokenizer="llama2", tied=False,
                                   dtype="f32", layers=2, heads=4, kv_heads=4),
        # GQA with Qwen3's q/k norms (v -> o skipped)
        "gqa": _outlier_checkpoint(root / "gqa", family="qwen3", tokenizer="qwen3", tied=False,
                                   dtype="f32", layers=2, heads=4, kv_heads=2),
        # MHA with 512-row o_proj and down_proj: wide enough for ranking on a sample of rows
        "wide": _outlier_checkpoint(root / "wide", family="llama", tokenizer="llama2",
                                    tied=False, dtype="f32", layers=2, heads=8, kv_heads=8,
                                    hidden=512),
    }


def run_awq(model, tmp_path, duo="on", dtype="f32", sym=False, n_seq=N_SEQ, seq_len=SEQ_LEN,
            rank_stride=1, ignored=0):
    vocab = json.loads((model / "config.json").read_text())["vocab_size"]
    rng = np.random.default_rng(7)
    rng.integers(0, vocab, (n_seq, seq_len), dtype=np.int32).tofile(tmp_path / "calib.i32")
    rng.integers(0, vocab, (n_seq, seq_len), dtype=np.int32).tofile(tmp_path / "held.i32")
    proc = subprocess.run([str(tool("awq_block")), str(model), str(tmp_path / "calib.i32"),
                           str(tmp_path / "held.i32"), str(n_seq), str(seq_len), "128",
                           str(int(sym)), duo, dtype, str(rank_stride), str(ignored)],
                          capture_output=True,
                          text=True,
                          timeout=600)
    assert proc.returncode == 0, proc.stderr
    return [json.loads(line) for line in proc.stdout.splitlines()]


@pytest.mark.parametrize("name, duo", [("mha", "on"), ("mha", "off"), ("mha", "both"),
                                       ("gqa", "on")])
def test_search_properties(models, tmp_path, name, duo):
    blocks = run_awq(models[name], tmp_path, duo=duo)
    assert len(blocks) == 2
    for blk in blocks:
        assert blk["identity_error"] < 1e-5, blk
        names = [m["name"] for m in blk["mappings"]]
        assert names == ["input_layernorm -> q_proj,k_proj,v_proj", "v_proj -> o_proj",
                         "post_attention_layernorm -> gate_proj,up_proj", "up_proj -> down_proj"]
        v_o = blk["mappings"][1]
        assert v_o["skipped"] == (name == "gqa")
        for m in blk["mappings"]:
            if m["skipped"]:
                continue
            assert m["loss"] <= m["loss_plain"], m
            if duo == "off":
                assert not m["duo"]
        # the boosted channels are what the norm mappings must protect
        assert blk["mappings"][0]["loss"] < 0.9 * blk["mappings"][0]["loss_plain"], blk
        assert blk["awq_error"] < 0.9 * blk["rtn_error"], blk


def test_bf16_scheme_and_symmetric(models, tmp_path):
    """bf16 rounding of the folded weights keeps the fold an identity to bf16 precision."""
    blocks = run_awq(models["mha"], tmp_path, dtype="bf16", sym=True)
    for blk in blocks:
        assert blk["identity_error"] < 3e-2, blk
        assert blk["awq_error"] < blk["rtn_error"], blk


@pytest.mark.parametrize("n_seq, seq_len", [(4, 32), (16, 96)])
def test_linear_parent_error_equals_transformers(models, tmp_path, n_seq, seq_len):
    """up_proj -> down_proj judges a candidate by down_proj's output error alone. With few
    tokens it is computed from the outputs, with many through the Gram matrix of down_proj's
    inputs; either way the plain-rounding candidate's error in block 0 must be the one computed
    from transformers' own down_proj inputs and compressed-tensors' int4 of the weights."""
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    ct_quant = pytest.importorskip("compressed_tensors.quantization")
    from compressed_tensors.quantization.lifecycle.forward import dequantize, quantize
    from compressed_tensors.quantization.utils import calculate_qparams

    model_dir = models["mha"]
    blocks = run_awq(model_dir, tmp_path, n_seq=n_seq, seq_len=seq_len)
    ids = np.fromfile(tmp_path / "calib.i32", dtype=np.int32).reshape(n_seq, seq_len)
    model = transformers.AutoModelForCausalLM.from_pretrained(str(model_dir),
                                                              dtype=torch.float32).eval()
    captured = {}
    hooks = [layer.mlp.down_proj.register_forward_pre_hook(
        lambda mod, args, i=i: captured.__setitem__(i, args[0]))
        for i, layer in enumerate(model.model.layers)]
    with torch.no_grad():
        model(torch.from_numpy(ids.astype(np.int64)))
    for h in hooks:
        h.remove()
    # block 1 too: its calibration input is block 0's output as the search's pass left it
    for i, layer in enumerate(model.model.layers):
        got = blocks[i]["mappings"][3]
        assert got["name"] == "up_proj -> down_proj"
        down = layer.mlp.down_proj
        x = captured[i].reshape(-1, down.in_features).double()
        w = down.weight.detach()
        args = ct_quant.QuantizationArgs(num_bits=4, type="int", symmetric=False,
                                         strategy="group", group_size=128)
        grouped = w.unflatten(-1, (w.shape[-1] // 128, 128))
        scale, zp = calculate_qparams(grouped.amin(-1), grouped.amax(-1), args)
        fake = dequantize(quantize(w, scale, zp, args), scale, zp, args, dtype=w.dtype)
        want = float(((x @ (fake.double() - w.double()).T) ** 2).mean())
        assert got["loss_plain"] == pytest.approx(want, rel=1e-3), i


@pytest.mark.parametrize("name, seq_len", [("mha", SEQ_LEN), ("gqa", SEQ_LEN), ("mha", 256),
                                           ("gqa", 256), ("wide", SEQ_LEN), ("wide", 256)])
def test_ranking_on_a_subset_keeps_the_choice(models, tmp_path, name, seq_len):
    """qwodel ranks the attention and MLP candidates on every 4th sequence (all of them on the
    first half of those, the best four on the second half too) and judges the best three (and
    plain rounding) on all tokens; with 16 x 256 tokens the MLP is ranked on every 9th token
    instead (16 x 32 are too few for that). Finalists the subset shows to be worse beyond doubt
    (plain rounding, most often) skip the other tokens, and the first half of the others prunes
    again. The wide model's 512-row o_proj and down_proj rank theirs on a sample of rows, the
    best five then on every row. Against the exhaustive search
    (every candidate on every token, as llm-compressor): the same or an almost as good
    candidate in every mapping, never worse than plain rounding, and the same held-out error of
    the int4 block. (A finalist's error is summed over the ranking subset and the other
    sequences apart, so an equal choice may differ from the exhaustive error by rounding; a
    pruned plain rounding reports its error on the subset.)"""
    full = run_awq(models[name], tmp_path, n_seq=16, seq_len=seq_len, rank_stride=1)
    ranked = run_awq(models[name], tmp_path, n_seq=16, seq_len=seq_len, rank_stride=4)
    same = total = pruned = 0
    for a, b in zip(full, ranked):
        for m, r in zip(a["mappings"], b["mappings"]):
            if m["skipped"]:
                continue
            total += 1
            same += (m["ratio"], m["duo"]) == (r["ratio"], r["duo"])
            if r["loss_plain"] != pytest.approx(m["loss_plain"], rel=1e-6):
                pruned += 1  # a subset's error, so only roughly the whole's
                assert r["loss_plain"] == pytest.approx(m["loss_plain"], rel=0.5), (m, r)
            assert m["loss"] * (1 - 1e-6) <= r["loss"] <= min(1.02 * m["loss"],
                                                              m["loss_plain"]), (m, r)
        assert b["awq_error"] <= 1.02 * a["awq_error"], (a, b)
    print(f"{name} x {seq_len}: {same} of {total} mappings chose the exhaustive search's "
          f"candidate; plain rounding ruled out on the subset in {pruned}")
    assert same >= total - 1
    assert pruned > 0  # the boosted channels leave plain rounding far behind


DOWN_PROJ = 1 << 6  # qw_awq_params.ignored: bit i of q, k, v, o, gate, up, down


@pytest.mark.parametrize("rank_stride", [1, 4])
def test_an_ignored_linear_parent_has_no_error(models, tmp_path, rank_stride):
    """With down_proj left unquantized (ignore), up_proj -> down_proj still folds scales (up_proj
    is quantized), but no candidate changes down_proj's output: every error is 0, and the first
    candidate (plain rounding, scale 1) is kept. The wide model's 512-row down_proj on 16 x 96
    tokens goes through the Gram matrix, ranked on a sample of its rows with rank_stride 4."""
    blocks = run_awq(models["wide"], tmp_path, n_seq=16, seq_len=96, rank_stride=rank_stride,
                     ignored=DOWN_PROJ)
    for blk in blocks:
        up_down = blk["mappings"][3]
        assert up_down["name"] == "up_proj -> down_proj"
        assert up_down["loss"] == 0.0 and up_down["loss_plain"] == 0.0, up_down
        assert up_down["ratio"] == 0.0 and not up_down["duo"], up_down
        assert blk["identity_error"] < 1e-5, blk
