"""The C forward pass on Gemma, Gemma 2, Gemma 3 (text) and Phi-3, against transformers.

Same method as test_forward.py (forward_run against transformers in float32 with eager
attention, every hidden state, the logits and the AWQ taps of one block), on tiny checkpoints
from hf_fixtures.make_dense_checkpoint whose configs are bent so that each family's extras
change the numbers: a sliding window shorter than the sequence, soft caps of the size of the
scores and logits, query_pre_attn_scalar different from head_dim, Gemma 3's local rope base and
linear scaling on its global layers only, Phi-3's fused projections and longrope.
"""
from __future__ import annotations

import json

import numpy as np
import pytest

import hf_fixtures
from test_forward import (N_SEQ, SEQ_LEN, _close, _compare, _ids, check_gram, output_hooks,
                          run_c)

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

CASES = {
    # hidden 192: sqrt(192) is not a bf16 or f16 value, so the embedding scale's rounding shows
    "gemma": dict(family="gemma", dtype="f32", hidden=192, heads=4, layers=2),
    "gemma2": dict(family="gemma2", dtype="bf16", hidden=256, heads=4, kv_heads=2, layers=3,
                   config_overrides={"sliding_window": 5, "attn_logit_softcapping": 0.05,
                                     "final_logit_softcapping": 0.2,
                                     "query_pre_attn_scalar": 100}),
    "gemma3": dict(family="gemma3", dtype="bf16", hidden=256, heads=4, kv_heads=2, layers=3,
                   tied=False, rope_scaling={"rope_type": "linear", "factor": 4.0},
                   config_overrides={"sliding_window": 5, "sliding_window_pattern": 2,
                                     "query_pre_attn_scalar": 100}),
    "phi3": dict(family="phi3", dtype="f32", hidden=128, heads=4, kv_heads=2, layers=2),
    "phi3_longrope": dict(family="phi3", dtype="bf16", hidden=128, heads=4, layers=2,
                          rope_scaling=hf_fixtures.phi3_longrope(32)),
    # an original context shorter than the sequence: the long factors, and a larger cos/sin
    # factor from max_position_embeddings / original
    "phi3_longrope_long": dict(family="phi3", dtype="f32", hidden=128, heads=4, layers=2,
                               rope_scaling=hf_fixtures.phi3_longrope(32),
                               config_overrides={"original_max_position_embeddings": 8}),
}

# the modules whose inputs are the pass's AWQ taps (attn_in, o_in, mlp_in, down_in)
TAP_MODULES = {
    "phi3": ("self_attn.qkv_proj", "self_attn.o_proj", "mlp.gate_up_proj", "mlp.down_proj"),
}
DEFAULT_TAPS = ("self_attn.q_proj", "self_attn.o_proj", "mlp.gate_proj", "mlp.down_proj")


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    root = tmp_path_factory.mktemp("forward_families")
    made = {}

    def get(name):
        if name not in made:
            made[name] = hf_fixtures.make_dense_checkpoint(root / name, **CASES[name])
        return made[name]

    return get


def run_hf(model_dir, ids, family, taps_layer):
    model = transformers.AutoModelForCausalLM.from_pretrained(
        str(model_dir), dtype=torch.float32, attn_implementation="eager")
    model.eval()
    taps, hooks = {}, []
    layer = model.model.layers[taps_layer]
    for key, path in zip(("attn_in", "o_in", "mlp_in", "down_in"),
                         TAP_MODULES.get(family, DEFAULT_TAPS)):
        hooks.append(layer.get_submodule(path).register_forward_hook(
            lambda m, inp, out, key=key: taps.__setitem__(key, inp[0].detach().numpy())))
    hooks += output_hooks(layer, taps)
    with torch.no_grad():
        out = model(torch.tensor(ids, dtype=torch.long), output_hidden_states=True)
    for h in hooks:
        h.remove()
    return [h.numpy() for h in out.hidden_states], out.logits.numpy(), taps, model.config


@pytest.mark.parametrize("name", list(CASES))
def test_hidden_states_and_logits_equal_transformers(checkpoint, tmp_path, name):
    ck = checkpoint(name)
    cfg_json = json.loads((ck / "config.json").read_text())
    ids = _ids(cfg_json["vocab_size"])
    flat, taps = run_c(ck, ids, tmp_path, taps_layer=1)
    hidden, logits, hf_taps, cfg = run_hf(ck, ids, CASES[name]["family"], 1)
    _compare(flat, hidden, logits, cfg)
    head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads
    widths = {"attn_in": cfg.hidden_size, "o_in": cfg.num_attention_heads * head_dim,
              "mlp_in": cfg.hidden_size, "down_in": cfg.intermediate_size,
              "attn_out": cfg.hidden_size, "mlp_out": cfg.hidden_size}
    offset, n = 0, N_SEQ * SEQ_LEN
    for key in ("attn_in", "o_in", "mlp_in", "down_in", "attn_out", "mlp_out"):
        got = taps[offset: offset + n * widths[key]].reshape(N_SEQ, SEQ_LEN, widths[key])
        offset += n * widths[key]
        _close(got, hf_taps[key], f"tap {key}")
    assert check_gram(taps, offset, n, cfg) == taps.size


def _variant(ck, tmp_path, name, **changes):
    """ck's files with config.json keys changed (None deletes)."""
    d = tmp_path / name
    d.mkdir()
    for f in ck.iterdir():
        if f.name != "config.json":
            (d / f.name).symlink_to(f)
    cfg = json.loads((ck / "config.json").read_text())
    for k, v in changes.items():
        if v is None:
            cfg.pop(k, None)
        else:
            cfg[k] = v
    (d / "config.json").write_text(json.dumps(cfg))
    return d


def test_family_extras_change_the_numbers(checkpoint, tmp_path):
    """Each extra the cases bend matters at these sizes, so a pass ignoring it would fail."""
    ck = checkpoint("gemma2")
    ids = _ids(json.loads((ck / "config.json").read_text())["vocab_size"])
    base, _ = run_c(ck, ids, tmp_path)
    for key, value in (("sliding_window", 4096), ("attn_logit_softcapping", 50.0),
                       ("final_logit_softcapping", 30.0), ("query_pre_attn_scalar", 64)):
        other, _ = run_c(_variant(ck, tmp_path, key, **{key: value}), ids, tmp_path)
        assert not np.allclose(base, other, rtol=1e-4, atol=1e-5), key
    ck3 = checkpoint("gemma3")
    base, _ = run_c(ck3, ids, tmp_path)
    other, _ = run_c(_variant(ck3, tmp_path, "g3_local", rope_local_base_freq=1000000.0), ids,
                     tmp_path)
    assert not np.allclose(base, other, rtol=1e-4, atol=1e-5)


def test_embedding_scale_rounds_to_the_model_dtype(checkpoint, tmp_path):
    """transformers multiplies by sqrt(hidden) cast to the weights' dtype: run in bf16, its
    embeddings are bf16(e * bf16(sqrt(hidden))), which our f32 product must round to."""
    ck = hf_fixtures.make_dense_checkpoint(tmp_path / "g128", "gemma", dtype="bf16", hidden=128,
                                           heads=4, layers=1)
    ids = _ids(json.loads((ck / "config.json").read_text())["vocab_size"])
    flat, _ = run_c(ck, ids, tmp_path)
    ours = torch.tensor(flat[: N_SEQ * SEQ_LEN * 128].reshape(N_SEQ, SEQ_LEN, 128))
    model = transformers.AutoModelForCausalLM.from_pretrained(str(ck), dtype=torch.bfloat16)
    with torch.no_grad():
        want = model.model.embed_tokens(torch.tensor(ids, dtype=torch.long))
    assert torch.equal(ours.to(torch.bfloat16), want)


def test_unsupported_configs_are_named(checkpoint, tmp_path):
    import subprocess
    from conftest import tool
    ck = checkpoint("gemma3")
    _ids(1000).astype("<i4").tofile(tmp_path / "ids.i32")

    def run(d):
        return subprocess.run([str(tool("forward_run")), str(d), str(tmp_path / "ids.i32"),
                               str(N_SEQ), str(SEQ_LEN), str(tmp_path / "o.f32")],
                              capture_output=True, text=True)

    proc = run(_variant(ck, tmp_path, "types", layer_types=["sliding_attention"]))
    assert proc.returncode == 1 and "layer_types" in proc.stderr
    proc = run(_variant(ck, tmp_path, "bidi", use_bidirectional_attention=True))
    assert proc.returncode == 1 and "use_bidirectional_attention" in proc.stderr
    proc = run(_variant(ck, tmp_path, "act", hidden_activation="relu6"))
    assert proc.returncode == 1 and "hidden_activation" in proc.stderr
    ph = checkpoint("phi3_longrope")
    bad = dict(hf_fixtures.phi3_longrope(32))
    bad["short_factor"] = bad["short_factor"][:-1]
    proc = run(_variant(ph, tmp_path, "rope", rope_scaling=bad))
    assert proc.returncode == 1 and "rope_scaling" in proc.stderr


# GGUF metadata holds the published models' settings, not the bent ones of CASES (no
# query_pre_attn_scalar of its own: llama.cpp derives it from the head size)
GGUF_CASES = {
    "gemma2": dict(family="gemma2", dtype="bf16", hidden=256, heads=4, kv_heads=2, layers=3,
                   config_overrides={"sliding_window": 5}),
    "gemma3": dict(family="gemma3", dtype="bf16", hidden=256, heads=4, kv_heads=2, layers=7,
                   config_overrides={"sliding_window": 5}),
    "phi3": CASES["phi3_longrope"],
}


@pytest.mark.parametrize("name", list(GGUF_CASES))
def test_gguf_source_runs_like_its_checkpoint(qwodel_bin, tmp_path, name):
    """An F32 GGUF read back through the HF view (Gemma's norms stored as 1 + w there, Phi-3's
    fused layers, the config rebuilt from metadata) runs as the checkpoint."""
    from conftest import run_qwodel
    ck = hf_fixtures.make_dense_checkpoint(tmp_path / "ck", **GGUF_CASES[name])
    run_qwodel(qwodel_bin, "quantize", ck, "-o", tmp_path, "-f", "F32", "-q")
    gguf_path = next(tmp_path.glob("*.gguf"))
    ids = _ids(json.loads((ck / "config.json").read_text())["vocab_size"])
    from_dir, _ = run_c(ck, ids, tmp_path)
    from_gguf, _ = run_c(gguf_path, ids, tmp_path)
    assert from_dir.shape == from_gguf.shape
    _close(from_gguf, from_dir, "GGUF vs directory")
