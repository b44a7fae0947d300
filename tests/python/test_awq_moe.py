"""AWQ on mixture-of-experts checkpoints: Mixtral, Qwen2-MoE (shared expert), Qwen3-MoE.

The mappings are llm-compressor's MoE ones (research/awq.md §1.2, its mappings.py and PR #2451):
post_attention_layernorm balanced against the router, every expert's gate/up and Qwen2-MoE's
shared expert with the whole sparse block as the parent, then each expert's up -> down on the
tokens routed to it. Judged by:

* `awq_block` (tests/tools): the scaled, unquantized block computes what the original does (the
  fold is an identity, router included: a router left out would route differently); every
  searched mapping's error is at most plain rounding's; on a checkpoint with outlier channels
  the int4 block's held-out error is lower with AWQ than without;
* end to end through `qwodel`: the output's layout (experts pack-quantized, routers and
  shared_expert_gate dense and listed in quantization_config's ignore, as llm-compressor's MoE
  recipes ignore "re:.*mlp.gate$"); compressed-tensors' own decompressor turns the packed
  experts back into weights, and transformers, loading that decompressed checkpoint, computes
  logits close to the source model's;
* the clip option searches the experts on their own tokens, leaves routers and ignored experts
  alone, and lowers the error.
"""
from __future__ import annotations

import json

import numpy as np
import pytest

import hf_fixtures
import tokenizer_corpus
from conftest import run_qwodel
from test_awq_search import run_awq

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
pytest.importorskip("compressed_tensors")
from compressed_tensors.compressors.pack_quantized.base import (  # noqa: E402
    PackedQuantizationCompressor)
from compressed_tensors.quantization import QuantizationArgs, QuantizationScheme  # noqa: E402
import safetensors.torch  # noqa: E402

SMALL = dict(tokenizer="llama2", hidden=128, heads=4, kv_heads=2, layers=2, experts=4,
             experts_used=2)
CASES = {
    "mixtral": dict(family="mixtral", tied=False, dtype="bf16", intermediate=128, **SMALL),
    "qwen2_moe": dict(family="qwen2_moe", tied=False, dtype="bf16", moe_intermediate=128,
                      shared_intermediate=256, **SMALL),
    "qwen3_moe": dict(family="qwen3_moe", tied=True, dtype="bf16", moe_intermediate=128,
                      **SMALL),
}
ROUTER = {"mixtral": "block_sparse_moe.gate", "qwen2_moe": "mlp.gate", "qwen3_moe": "mlp.gate"}
EXPERT = {"mixtral": ("block_sparse_moe.experts.{e}", ("w1", "w3", "w2")),
          "qwen2_moe": ("mlp.experts.{e}", ("gate_proj", "up_proj", "down_proj")),
          "qwen3_moe": ("mlp.experts.{e}", ("gate_proj", "up_proj", "down_proj"))}
OUTLIERS = [3, 17, 64, 100]


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    root = tmp_path_factory.mktemp("awq_moe")
    made = {}

    def get(name, outliers=False):
        key = (name, outliers)
        if key not in made:
            ck = hf_fixtures.make_checkpoint(root / f"{name}{'_out' if outliers else ''}",
                                             **dict(CASES[name], dtype="f32" if outliers
                                                    else CASES[name]["dtype"]))
            if outliers:  # a few large activation channels, what AWQ exists for
                st = ck / "model.safetensors"
                tensors = hf_fixtures.read_safetensors(st)
                for n, arr in tensors.items():
                    if n.endswith(("input_layernorm.weight", "post_attention_layernorm.weight")):
                        arr[OUTLIERS] *= 30.0
                hf_fixtures.write_safetensors(st, tensors, dtype="F32")
            made[key] = ck
        return made[key]

    return get


@pytest.mark.parametrize("name", list(CASES))
def test_search_properties(models, tmp_path, name):
    blocks = run_awq(models(name, outliers=True), tmp_path, duo="on")
    assert len(blocks) == 2
    for blk in blocks:
        assert blk["identity_error"] < 1e-5, blk
        names = [m["name"] for m in blk["mappings"]]
        want = ["input_layernorm -> q_proj,k_proj,v_proj", "v_proj -> o_proj",
                "post_attention_layernorm -> router, experts' gate/up, shared expert",
                "experts' up_proj -> down_proj"]
        if name == "qwen2_moe":
            want.append("shared_expert.up_proj -> shared_expert.down_proj")
        assert names == want
        for m in blk["mappings"][2:]:
            assert not m["skipped"], m
        for m in blk["mappings"]:
            if not m["skipped"]:
                assert m["loss"] <= m["loss_plain"] * (1 + 1e-9), m
        # the boosted channels are what the norm mapping must protect
        moe_norm = blk["mappings"][2]
        assert moe_norm["loss"] < 0.9 * moe_norm["loss_plain"], blk
        assert blk["awq_error"] < blk["rtn_error"], blk


@pytest.fixture(scope="module")
def calib(tmp_path_factory):
    path = tmp_path_factory.mktemp("awq_moe_calib") / "calib.txt"
    path.write_text("\n".join(s.replace("\n", " ") for s in tokenizer_corpus.corpus(3000)
                              if s.strip()))
    return path


def _decompressed_checkpoint(out, dest):
    """The output with every packed layer replaced by compressed-tensors' decompression of it,
    written as a plain checkpoint transformers loads (its own per-expert -> fused mapping)."""
    qc = json.loads((out / "config.json").read_text())["quantization_config"]
    scheme = QuantizationScheme(targets=["Linear"],
                                weights=QuantizationArgs(**qc["config_groups"]["group_0"]["weights"]))
    t = safetensors.torch.load_file(str(out / "model.safetensors"))
    state = {n: v.float().contiguous() for n, v in t.items() if ".weight_" not in n}
    for m in {n.rsplit(".weight_", 1)[0] for n in t if ".weight_" in n}:
        local = {k.rsplit(".", 1)[1]: t[k] for k in t if k.startswith(m + ".weight_")}
        state[m + ".weight"] = PackedQuantizationCompressor.decompress(local, scheme)["weight"] \
            .float().contiguous()
    dest.mkdir()
    safetensors.torch.save_file(state, str(dest / "model.safetensors"))
    cfg = json.loads((out / "config.json").read_text())
    del cfg["quantization_config"]
    (dest / "config.json").write_text(json.dumps(cfg))
    return dest


def _logits(model_dir, ids):
    model = transformers.AutoModelForCausalLM.from_pretrained(str(model_dir), dtype=torch.float32)
    with torch.no_grad():
        return model.eval()(torch.tensor(ids)).logits.numpy()


@pytest.mark.parametrize("name", list(CASES))
def test_end_to_end(qwodel_bin, models, calib, tmp_path, name):
    src = models(name)
    run_qwodel(qwodel_bin, "quantize", src, "-b", "awq", "-o", tmp_path,
               "--calibration-dataset", calib, "--num-samples", "8", "--seq-length", "64", "-q")
    out = next(tmp_path.glob("*-awq-int4"))
    cfg = json.loads((out / "config.json").read_text())
    ignore = cfg["quantization_config"]["ignore"]
    routers = [f"model.layers.{i}.{ROUTER[name]}" for i in range(2)]
    gates = [f"model.layers.{i}.mlp.shared_expert_gate" for i in range(2)] \
        if name == "qwen2_moe" else []
    assert sorted(ignore) == sorted(routers + gates + ([] if CASES[name]["tied"] else [])
                                    + ["lm_head"])
    t = safetensors.torch.load_file(str(out / "model.safetensors"))
    prefix, parts = EXPERT[name]
    for i in range(2):
        for r in routers[i:i + 1] + gates[i:i + 1]:
            assert t[r + ".weight"].dtype == torch.bfloat16 and r + ".weight_packed" not in t
        for e in range(4):
            for part in parts:
                m = f"model.layers.{i}.{prefix.format(e=e)}.{part}"
                assert m + ".weight" not in t and t[m + ".weight_packed"].dtype == torch.int32
        if name == "qwen2_moe":
            assert f"model.layers.{i}.mlp.shared_expert.down_proj.weight_packed" in t
    dec = _decompressed_checkpoint(out, tmp_path / "dec")
    ids = [[1, 450, 4996, 17354, 1701, 29916, 432, 17204, 975, 278, 17366, 11203]]
    got, want = _logits(dec, ids), _logits(src, ids)
    rel = np.sqrt(np.mean((got - want) ** 2) / np.mean(want ** 2))
    assert rel < 0.5, rel  # int4 noise on random weights, not a different function
    assert not np.array_equal(got, want)


@pytest.mark.parametrize("name", list(CASES))
def test_clip_searches_the_experts(qwodel_bin, models, calib, tmp_path, name):
    """--clip (AutoAWQ's auto_clip) searches every expert's linears on the tokens routed to
    them, and Qwen2-MoE's shared expert on all: after the same scale search, routers, q_proj and
    k_proj come out as without it, the experts' ranges narrow in some groups, and the
    decompressed model is closer to the source on held-out tokens. An expert the user ignores
    is not clipped: its dense weights are those of the run without --clip."""
    src = models(name)
    outs = {}
    ignore = f"re:.*{EXPERT[name][0].format(e=1)}\\..*"
    for kind, extra in (("plain", []), ("clip", ["--clip"])):
        run_qwodel(qwodel_bin, "quantize", src, "-b", "awq", "-o", tmp_path / kind,
                   "--calibration-dataset", calib, "--num-samples", "8", "--seq-length", "64",
                   "--ignore", "lm_head", "--ignore", ignore, "-q", *extra)
        outs[kind] = next((tmp_path / kind).glob("*-awq-int4"))
    tp, tc = (safetensors.torch.load_file(str(outs[k] / "model.safetensors"))
              for k in ("plain", "clip"))
    assert tp.keys() == tc.keys()
    prefix, parts = EXPERT[name]
    changed = 0
    for i in range(2):
        for m in (ROUTER[name], "self_attn.q_proj", "self_attn.k_proj"):
            for k in (k for k in tp if k.startswith(f"model.layers.{i}.{m}.")):
                assert torch.equal(tp[k], tc[k]), k
        for part in parts:
            dense = f"model.layers.{i}.{prefix.format(e=1)}.{part}.weight"
            assert torch.equal(tp[dense], tc[dense]), dense  # ignored: not clipped
            for e in (0, 2, 3):
                k = f"model.layers.{i}.{prefix.format(e=e)}.{part}.weight_packed"
                changed += not torch.equal(tp[k], tc[k])
        if name == "qwen2_moe":
            k = f"model.layers.{i}.mlp.shared_expert.down_proj.weight_packed"
            changed += not torch.equal(tp[k], tc[k])
    assert changed > 0
    tok = transformers.PreTrainedTokenizerFast(tokenizer_file=str(src / "tokenizer.json"))
    text = " ".join(t.replace("\n", " ") for t in tokenizer_corpus.corpus(6000)[3000:])
    ids = [tok(text)["input_ids"][:256]]  # text the calibration (the corpus' head) did not use
    want = _logits(src, ids)

    def error(out):
        got = _logits(_decompressed_checkpoint(out, tmp_path / f"dec-{out.parent.name}"), ids)
        return float(np.sqrt(np.mean((got - want) ** 2) / np.mean(want ** 2)))

    e_clip, e_plain = error(outs["clip"]), error(outs["plain"])
    print(f"{name}: held-out logits error: clip {e_clip:.4f}, without {e_plain:.4f}")
    assert e_clip < e_plain


def test_gemm_layout_of_experts(qwodel_bin, models, calib, tmp_path):
    """--layout gemm on a MoE model: every expert decodes, through AutoAWQ's own
    dequantize_gemm, to exactly what compressed-tensors decompresses from the pack-quantized
    run; routers stay dense float16 and are AutoAWQ's modules_to_not_convert."""
    from test_awq import _autoawq_packing
    packing = _autoawq_packing()
    # float16, as the GEMM layout stores everything: the same scales in both layouts
    src = hf_fixtures.make_checkpoint(tmp_path / "qwen2_moe16",
                                      **dict(CASES["qwen2_moe"], dtype="f16"))
    outs = {}
    for layout in ("pack-quantized", "gemm"):
        run_qwodel(qwodel_bin, "quantize", src, "-b", "awq", "-o", tmp_path / layout,
                   "--calibration-dataset", calib, "--num-samples", "4", "--seq-length", "64",
                   "--layout", layout, "-q")
        outs[layout] = next((tmp_path / layout).glob("*-awq-int4"))
    qc = json.loads((outs["gemm"] / "config.json").read_text())["quantization_config"]
    routers = [f"model.layers.{i}.{m}" for i in range(2)
               for m in ("mlp.gate", "mlp.shared_expert_gate")]
    assert sorted(qc["modules_to_not_convert"]) == sorted(routers + ["lm_head"])
    tg = safetensors.torch.load_file(str(outs["gemm"] / "model.safetensors"))
    tp = safetensors.torch.load_file(str(outs["pack-quantized"] / "model.safetensors"))
    for r in routers:
        assert tg[r + ".weight"].dtype == torch.float16
    pq = json.loads((outs["pack-quantized"] / "config.json").read_text())["quantization_config"]
    scheme = QuantizationScheme(
        targets=["Linear"], weights=QuantizationArgs(**pq["config_groups"]["group_0"]["weights"]))
    modules = [f"model.layers.{i}.mlp.{x}.{p}" for i in range(2)
               for x in ["experts.0", "experts.1", "experts.2", "experts.3", "shared_expert"]
               for p in ("gate_proj", "up_proj", "down_proj")]
    for m in modules:
        w_gemm = packing.dequantize_gemm(tg[m + ".qweight"], tg[m + ".qzeros"],
                                         tg[m + ".scales"], 4, 128)
        local = {k.rsplit(".", 1)[1]: tp[k] for k in tp if k.startswith(m + ".weight_")}
        w_ct = PackedQuantizationCompressor.decompress(local, scheme)["weight"]
        assert torch.equal(w_gemm.T.contiguous(), w_ct.to(torch.float16)), m

