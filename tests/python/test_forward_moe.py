"""The C forward pass on mixture-of-experts checkpoints against transformers' own modeling code.

Mixtral (block_sparse_moe, top-k weights always renormalized), Qwen2-MoE (q/k/v biases, a shared
expert scaled by sigmoid(shared_expert_gate), norm_topk_prob false) and Qwen3-MoE (q/k norms,
norm_topk_prob true, and a variant with a dense layer from mlp_only_layers). transformers (torch,
CPU, float32, eager attention) runs the same checkpoint; every block's output, the logits and
the MoE block's normed input (the AWQ statistic tap) must agree within float32 rounding.
"""
from __future__ import annotations

import json

import numpy as np
import pytest

import hf_fixtures
from test_forward import N_SEQ, SEQ_LEN, _close, _compare, _ids, run_c

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

SMALL = dict(tokenizer="llama2", hidden=128, heads=4, kv_heads=2, layers=2, experts=4,
             experts_used=2)
CASES = {
    "mixtral": dict(family="mixtral", tied=False, dtype="bf16", intermediate=128, **SMALL),
    "qwen2_moe": dict(family="qwen2_moe", tied=False, dtype="f16", moe_intermediate=64,
                      shared_intermediate=192, **SMALL),
    "qwen3_moe": dict(family="qwen3_moe", tied=True, dtype="bf16", moe_intermediate=64,
                      **SMALL),
}


def make_moe(root, name):
    """CASES[name]; "qwen3_moe_dense1": qwen3_moe whose layer 1 is dense (mlp_only_layers)."""
    if name in CASES:
        return hf_fixtures.make_checkpoint(root / name, **CASES[name])
    assert name == "qwen3_moe_dense1"
    ck = hf_fixtures.make_checkpoint(root / name, **CASES["qwen3_moe"], intermediate=192)
    tensors = hf_fixtures.load_checkpoint(ck)
    tensors = {k: v for k, v in tensors.items() if not k.startswith("model.layers.1.mlp.")}
    rng = np.random.default_rng(5)
    d, ff = 128, 192
    for proj, shape in (("gate_proj", (ff, d)), ("up_proj", (ff, d)), ("down_proj", (d, ff))):
        tensors[f"model.layers.1.mlp.{proj}.weight"] = (
            rng.standard_normal(shape) * 0.02).astype(np.float32)
    for f in list(ck.glob("model*.safetensors")) + list(ck.glob("*.index.json")):
        f.unlink()
    hf_fixtures.write_safetensors(ck / "model.safetensors", dict(sorted(tensors.items())))
    cfg = json.loads((ck / "config.json").read_text())
    cfg["mlp_only_layers"] = [1]
    (ck / "config.json").write_text(json.dumps(cfg))
    return ck


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    root = tmp_path_factory.mktemp("forward_moe")
    made = {}

    def get(name):
        if name not in made:
            made[name] = make_moe(root, name)
        return made[name]

    return get


def run_hf(model_dir, ids, taps_layer):
    model = transformers.AutoModelForCausalLM.from_pretrained(
        str(model_dir), dtype=torch.float32, attn_implementation="eager")
    model.eval()
    layer = model.model.layers[taps_layer]
    mlp = getattr(layer, "block_sparse_moe", None) or layer.mlp
    taps, hooks = {}, []
    for name, mod in (("attn_in", layer.self_attn.q_proj), ("o_in", layer.self_attn.o_proj),
                      ("mlp_in", mlp)):
        hooks.append(mod.register_forward_hook(
            lambda m, inp, out, name=name: taps.__setitem__(name, inp[0].detach().numpy())))
    with torch.no_grad():
        out = model(torch.tensor(ids, dtype=torch.long), output_hidden_states=True)
    for h in hooks:
        h.remove()
    return [h.numpy() for h in out.hidden_states], out.logits.numpy(), taps, model.config


@pytest.mark.parametrize("name", [*CASES, "qwen3_moe_dense1"])
def test_moe_hidden_states_and_logits_equal_transformers(checkpoint, tmp_path, name):
    ck = checkpoint(name)
    cfg_json = json.loads((ck / "config.json").read_text())
    ids = _ids(cfg_json["vocab_size"])
    flat, taps = run_c(ck, ids, tmp_path, taps_layer=0)
    hidden, logits, hf_taps, cfg = run_hf(ck, ids, 0)
    _compare(flat, hidden, logits, cfg)
    d, n = cfg.hidden_size, N_SEQ * SEQ_LEN
    q_width = cfg.num_attention_heads * (getattr(cfg, "head_dim", None) or d // cfg.num_attention_heads)
    widths = {"attn_in": d, "o_in": q_width, "mlp_in": d}
    offset = 0
    for key in ("attn_in", "o_in", "mlp_in"):
        got = taps[offset: offset + n * widths[key]].reshape(N_SEQ, SEQ_LEN, widths[key])
        offset += n * widths[key]
        _close(got, hf_taps[key].reshape(N_SEQ, SEQ_LEN, -1), f"tap {key}")


def test_routing_matters(checkpoint, tmp_path):
    """The test can fail: with one expert per token instead of two, the output changes."""
    ck = checkpoint("qwen3_moe")
    ids = _ids(json.loads((ck / "config.json").read_text())["vocab_size"])
    two, _ = run_c(ck, ids, tmp_path)
    one_dir = tmp_path / "one"
    one_dir.mkdir()
    for f in ck.iterdir():
        (one_dir / f.name).symlink_to(f)
    cfg = json.loads((ck / "config.json").read_text())
    cfg["num_experts_per_tok"] = 1
    (one_dir / "config.json").unlink()
    (one_dir / "config.json").write_text(json.dumps(cfg))
    one, _ = run_c(one_dir, ids, tmp_path)
    assert not np.allclose(two, one)
