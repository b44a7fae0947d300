"""The C forward pass (src/model/forward_cpu.c) against transformers' own modeling code.

`forward_run` (tests/tools) runs token ids through the embedding, every decoder block and the
head, writing each hidden state and the logits. transformers (torch, CPU, float32, eager
attention) runs the same checkpoint with output_hidden_states=True; every block's output and
the logits must agree within float32 rounding. Forward hooks on q_proj, o_proj, gate_proj and
down_proj check the activations the C pass exposes for AWQ statistics. The same model read
from qwodel's F32 GGUF (the HF view: un-permuted Q/K rows, rebuilt config) must give the same
numbers as the HF directory.
"""
from __future__ import annotations

import json
import subprocess

import numpy as np
import pytest

import hf_fixtures
from conftest import MODELS, run_qwodel, tool

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

N_SEQ, SEQ_LEN = 2, 12

CASES = {
    # the shared test checkpoints: MHA f16 (llama2), GQA + llama3 rope + tied (llama3),
    # q/k/v biases (qwen2), per-head q/k norms in 3 shards (qwen3), hidden 320 f32 (mistral)
    **{k: MODELS[k] for k in ("llama2", "llama3", "qwen2", "qwen3", "mistral")},
    # Mistral's sliding window shorter than the sequence: the mask must drop old tokens
    "mistral_window": dict(family="mistral", tokenizer="llama2", tied=False, dtype="bf16",
                           hidden=128, heads=4, kv_heads=2, intermediate=256, layers=2,
                           config_overrides={"sliding_window": 5}),
    # Qwen2's window switched on, on the layers from max_window_layers up: layer 1, not 0
    "qwen2_window": dict(family="qwen2", tokenizer="qwen3", tied=False, dtype="bf16",
                         hidden=128, heads=4, kv_heads=2, intermediate=256, layers=2,
                         config_overrides={"use_sliding_window": True, "sliding_window": 5,
                                           "max_window_layers": 1}),
    # linear rope scaling
    "llama_linear": dict(family="llama", tokenizer="llama3", tied=False, dtype="bf16",
                         hidden=128, heads=4, kv_heads=2, layers=2,
                         rope_scaling={"rope_type": "linear", "factor": 4.0}),
}


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    root = tmp_path_factory.mktemp("forward")
    made = {}

    def get(name):
        if name not in made:
            made[name] = hf_fixtures.make_checkpoint(root / name, **CASES[name])
        return made[name]

    return get


def _ids(vocab: int, seed: int = 3) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.integers(0, vocab, size=(N_SEQ, SEQ_LEN), dtype=np.int32)


def run_c(model, ids: np.ndarray, tmp_path, taps_layer=None):
    """(hidden states [n_layer + 1, N, S, d], logits [N, S, vocab], taps or None)."""
    ids_path, out_path, taps_path = tmp_path / "ids.i32", tmp_path / "out.f32", tmp_path / "t.f32"
    ids.astype("<i4").tofile(ids_path)
    cmd = [str(tool("forward_run")), str(model), str(ids_path), str(N_SEQ), str(SEQ_LEN),
           str(out_path)]
    if taps_layer is not None:
        cmd += ["--taps", str(taps_layer), str(taps_path)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    return np.fromfile(out_path, dtype="<f4"), (np.fromfile(taps_path, dtype="<f4")
                                                if taps_layer is not None else None)


def run_hf(model_dir, ids: np.ndarray, taps_layer=None):
    model = transformers.AutoModelForCausalLM.from_pretrained(
        str(model_dir), dtype=torch.float32, attn_implementation="eager")
    model.eval()
    taps, hooks = {}, []
    if taps_layer is not None:
        layer = model.model.layers[taps_layer]
        for name, mod in (("attn_in", layer.self_attn.q_proj), ("o_in", layer.self_attn.o_proj),
                          ("mlp_in", layer.mlp.gate_proj), ("down_in", layer.mlp.down_proj)):
            hooks.append(mod.register_forward_hook(
                lambda m, inp, out, name=name: taps.__setitem__(name, inp[0].detach().numpy())))
        hooks += output_hooks(layer, taps)
    with torch.no_grad():
        out = model(torch.tensor(ids, dtype=torch.long), output_hidden_states=True)
    for h in hooks:
        h.remove()
    hidden = [h.numpy() for h in out.hidden_states]
    return hidden, out.logits.numpy(), taps, model.config


def check_gram(taps, offset, n, cfg):
    """After the six taps (which end at offset) forward_run writes qw_forward_gram of our own
    down_in: X^T X's upper triangle, the lower one left as it was (0). Returns the end."""
    ff, d = cfg.intermediate_size, cfg.hidden_size
    x = taps[offset - n * (ff + 2 * d):][:n * ff].reshape(n, ff).astype(np.float64)
    gram = taps[offset: offset + ff * ff].reshape(ff, ff)
    want = x.T @ x
    upper = np.triu(np.ones((ff, ff), dtype=bool))
    assert np.abs(gram - want)[upper].max() <= 1e-5 * np.abs(want).max()
    assert not gram[~upper].any()
    return offset + ff * ff


def output_hooks(layer, taps):
    """Hooks that keep the attention's and the MLP's outputs (attn_out, mlp_out taps)."""
    def keep(key):
        def hook(m, inp, out):
            taps[key] = (out[0] if isinstance(out, tuple) else out).detach().numpy()
        return hook
    return [layer.self_attn.register_forward_hook(keep("attn_out")),
            layer.mlp.register_forward_hook(keep("mlp_out"))]


def _close(got, want, what):
    scale = max(float(np.abs(want).max()), 1e-6)
    err = float(np.abs(got - want).max())
    assert err <= 2e-5 * scale + 1e-6, f"{what}: max error {err:.3g} (values up to {scale:.3g})"


def _split(flat, n_layer, d, vocab):
    n = N_SEQ * SEQ_LEN
    hs = flat[: (n_layer + 1) * n * d].reshape(n_layer + 1, N_SEQ, SEQ_LEN, d)
    logits = flat[(n_layer + 1) * n * d:].reshape(N_SEQ, SEQ_LEN, vocab)
    assert flat.size == (n_layer + 1) * n * d + n * vocab
    return hs, logits


def _compare(flat, hidden, logits, cfg):
    n_layer, d = cfg.num_hidden_layers, cfg.hidden_size
    hs, got_logits = _split(flat, n_layer, d, logits.shape[-1])
    # transformers' hidden_states: the embeddings, then each block's output, except that the
    # last entry is after the final norm (ours: the raw block output; the norm is in the logits)
    for i in range(n_layer):
        _close(hs[i], hidden[i], f"hidden state {i}")
    _close(got_logits, logits, "logits")


@pytest.mark.parametrize("name", list(CASES))
def test_hidden_states_and_logits_equal_transformers(checkpoint, tmp_path, name):
    ck = checkpoint(name)
    vocab = json.loads((ck / "config.json").read_text())["vocab_size"]
    ids = _ids(vocab)
    flat, taps = run_c(ck, ids, tmp_path, taps_layer=1)
    hidden, logits, hf_taps, cfg = run_hf(ck, ids, taps_layer=1)
    _compare(flat, hidden, logits, cfg)
    widths = {"attn_in": cfg.hidden_size, "o_in": cfg.num_attention_heads * (
        getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads),
        "mlp_in": cfg.hidden_size, "down_in": cfg.intermediate_size,
        "attn_out": cfg.hidden_size, "mlp_out": cfg.hidden_size}
    offset = 0
    n = N_SEQ * SEQ_LEN
    for key in ("attn_in", "o_in", "mlp_in", "down_in", "attn_out", "mlp_out"):
        got = taps[offset: offset + n * widths[key]].reshape(N_SEQ, SEQ_LEN, widths[key])
        offset += n * widths[key]
        _close(got, hf_taps[key], f"tap {key}")
    assert check_gram(taps, offset, n, cfg) == taps.size


def test_sliding_window_matters(checkpoint, tmp_path):
    """The windowed model differs from the same weights with no window (the test can fail)."""
    ck = checkpoint("mistral_window")
    ids = _ids(32000)
    windowed, _ = run_c(ck, ids, tmp_path)
    unwindowed_dir = tmp_path / "nowin"
    unwindowed_dir.mkdir()
    for f in ck.iterdir():
        (unwindowed_dir / f.name).symlink_to(f)
    cfg = json.loads((ck / "config.json").read_text())
    cfg["sliding_window"] = None
    (unwindowed_dir / "config.json").unlink()
    (unwindowed_dir / "config.json").write_text(json.dumps(cfg))
    plain, _ = run_c(unwindowed_dir, ids, tmp_path)
    assert not np.allclose(windowed, plain)


@pytest.mark.parametrize("name", ["llama3", "qwen3"])
def test_gguf_source_runs_like_its_checkpoint(checkpoint, qwodel_bin, tmp_path, name):
    """An F32 GGUF read back through the HF view (Q/K rows un-permuted) runs as the checkpoint."""
    ck = checkpoint(name)
    run_qwodel(qwodel_bin, "quantize", ck, "-o", tmp_path, "-f", "F32", "-q")
    gguf_path = next(tmp_path.glob("*.gguf"))
    vocab = json.loads((ck / "config.json").read_text())["vocab_size"]
    ids = _ids(vocab)
    from_dir, _ = run_c(ck, ids, tmp_path)
    from_gguf, _ = run_c(gguf_path, ids, tmp_path)
    assert from_dir.shape == from_gguf.shape
    _close(from_gguf, from_dir, "GGUF vs directory")


def test_bad_inputs_are_errors(checkpoint, tmp_path):
    ck = checkpoint("llama_linear")
    vocab = json.loads((ck / "config.json").read_text())["vocab_size"]
    ids = _ids(vocab)
    ids[1, 3] = vocab  # one past the end
    ids.astype("<i4").tofile(tmp_path / "ids.i32")
    proc = subprocess.run([str(tool("forward_run")), str(ck), str(tmp_path / "ids.i32"),
                           str(N_SEQ), str(SEQ_LEN), str(tmp_path / "o.f32")],
                          capture_output=True, text=True)
    assert proc.returncode == 1 and "outside the vocabulary" in proc.stderr
    # a rope scaling the pass does not implement is named, not run wrongly
    yarn = tmp_path / "yarn"
    yarn.mkdir()
    for f in ck.iterdir():
        (yarn / f.name).symlink_to(f)
    cfg = json.loads((ck / "config.json").read_text())
    cfg["rope_scaling"] = {"rope_type": "yarn", "factor": 4.0,
                           "original_max_position_embeddings": 2048}
    (yarn / "config.json").unlink()
    (yarn / "config.json").write_text(json.dumps(cfg))
    _ids(vocab).astype("<i4").tofile(tmp_path / "ids.i32")
    proc = subprocess.run([str(tool("forward_run")), str(yarn), str(tmp_path / "ids.i32"),
                           str(N_SEQ), str(SEQ_LEN), str(tmp_path / "o.f32")],
                          capture_output=True, text=True)
    assert proc.returncode == 1 and "yarn" in proc.stderr and "rope_scaling" in proc.stderr
