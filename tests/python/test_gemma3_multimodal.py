"""Gemma 3 4B/12B/27B checkpoints (Gemma3ForConditionalGeneration): their text model to GGUF.

The tiny checkpoints (hf_fixtures.make_gemma3_multimodal_checkpoint) are shaped like
google/gemma-3-4b-it: a config.json whose text_config leaves most keys to transformers'
Gemma3TextConfig defaults, the text model under "language_model.model." (transformers < 4.52) or
"model.language_model." (newer, with a top-level lm_head), a SigLIP vision tower and the
multimodal projector, and an embedding with rows past the tokenizer. Checked by tools qwodel's
authors did not write:

- llama.cpp (llama-cpp-python) loads the Q4_K_M files and generates, and tokenizes as HF
  `tokenizers` does;
- llama.cpp's own converter (convert_hf_to_gguf.py of the llama-cpp-python 0.3.36 sources, run
  with the installed transformers, as its requirements ask) converts the same checkpoints: its
  architecture metadata and tensors must equal ours;
- the hyperparameters the config leaves out are the ones transformers' AutoConfig fills in.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import hf_fixtures
from conftest import run_qwodel
from test_arch_families import CONVERTER_ENV, _converter_source, _read

gguf = pytest.importorskip("gguf")
llama_cpp = pytest.importorskip("llama_cpp")

# name -> make_gemma3_multimodal_checkpoint keyword arguments
CASES = {
    "old": dict(layout="old", tied=True, dtype="bf16"),
    # the newer layout, untied, f16 (so the norms' + 1 is rounded in f16 as torch does)
    "new": dict(layout="new", tied=False, dtype="f16"),
    # text-only Gemma3ForCausalLM (flat config): the converter trims its embedding as well
    "causal": None,
    # "old" with its own rope bases, saved again by transformers 5, which writes them as
    # rope_parameters (one object per layer type) instead of rope_theta / rope_scaling /
    # rope_local_base_freq
    "resaved": dict(layout="old", tied=True, dtype="bf16",
                    text_overrides={"rope_theta": 500000.0, "rope_local_base_freq": 20000.0}),
}


def _make(name, out):
    if name == "resaved":
        transformers = pytest.importorskip("transformers")
        src = hf_fixtures.make_gemma3_multimodal_checkpoint(out, **CASES[name])
        transformers.AutoConfig.from_pretrained(str(src)).save_pretrained(str(src))
        text = json.loads((src / "config.json").read_text())["text_config"]
        assert "rope_parameters" in text and "rope_theta" not in text, text
        return src
    if CASES[name] is not None:
        return hf_fixtures.make_gemma3_multimodal_checkpoint(out, **CASES[name])
    tok = json.loads(hf_fixtures.gemma_tokenizer_json(split_on_space=True))
    return hf_fixtures.make_dense_checkpoint(out, "gemma3", tied=True, dtype="bf16", layers=1,
                                             vocab_size=len(tok["model"]["vocab"]) + 64)


@pytest.fixture(scope="module")
def built(tmp_path_factory, qwodel_bin):
    """built(name, fmt) -> (checkpoint dir, our GGUF path), made once per module."""
    root = tmp_path_factory.mktemp("gemma3_mm")
    cache: dict = {}

    def get(name, fmt):
        if (name, None) not in cache:
            cache[(name, None)] = _make(name, root / "ck" / f"g3mm_{name}")
        src = cache[(name, None)]
        if (name, fmt) not in cache:
            run_qwodel(qwodel_bin, "quantize", src, "-o", root / "out", "-f", fmt, "-q")
            cache[(name, fmt)] = root / "out" / f"g3mm_{name}-{fmt.lower()}.gguf"
        return src, cache[(name, fmt)]

    return get


def _tokenizer_json(src):
    return json.loads((src / "tokenizer.json").read_text(encoding="utf-8"))


def _converter_rows(src) -> int:
    """Embedding rows llama.cpp's converter keeps for a checkpoint without tokenizer.model:
    len(model.vocab) + len(added_tokens) (Gemma3Model.modify_tensors)."""
    tj = _tokenizer_json(src)
    return len(tj["model"]["vocab"]) + len(tj["added_tokens"])


# ---- llama.cpp loads, generates and tokenizes ---------------------------------------------------

@pytest.mark.parametrize("name", list(CASES))
def test_llama_cpp_loads_and_generates(built, name):
    src, path = built(name, "Q4_K_M")
    kv, tensors = _read(path)
    assert kv["general.architecture"][1] == gguf.MODEL_ARCH_NAMES[gguf.MODEL_ARCH.GEMMA3]
    assert not any("vision" in t or "mm" in t.split(".")[0] for t in tensors), sorted(tensors)
    m = llama_cpp.Llama(model_path=str(path), n_ctx=64, n_threads=2, verbose=False, seed=1,
                        logits_all=True)
    try:
        assert m.n_vocab() == _converter_rows(src)
        tokens = m.tokenize(b"The quick brown fox", add_bos=True)
        m.eval(tokens)
        logits = np.array(m.scores[m.n_tokens - 1], dtype=np.float32)
        assert logits.shape == (m.n_vocab(),) and np.isfinite(logits).all()
        assert float(logits.std()) > 0
        out = m.create_completion("The quick brown fox", max_tokens=4, temperature=0)
        assert out["usage"]["completion_tokens"] >= 1
    finally:
        m.close()


def test_tokenizer_matches_hf(built):
    tokenizers = pytest.importorskip("tokenizers")
    src, path = built("old", "Q4_K_M")
    tok = tokenizers.Tokenizer.from_file(str(src / "tokenizer.json"))
    m = llama_cpp.Llama(model_path=str(path), vocab_only=True, verbose=False)
    try:
        for text in ("The quick brown fox jumps over the lazy dog.",
                     "Two  spaces\tand a tab.\nCafé naïve 你好",
                     "an image: <image_soft_token> here"):
            want = tok.encode(text, add_special_tokens=False).ids
            assert m.tokenize(text.encode("utf-8"), add_bos=False, special=True) == want, text
        assert m.token_bos() == tok.token_to_id("<bos>")
    finally:
        m.close()


# ---- the hyperparameters the config leaves out ---------------------------------------------------

def test_omitted_keys_are_transformers_defaults(built):
    """Each key the text_config leaves out is written with the value transformers' AutoConfig
    fills in (Gemma3TextConfig's defaults)."""
    transformers = pytest.importorskip("transformers")
    src, path = built("old", "Q4_K_M")
    omitted = json.loads((src / "config.json").read_text())["text_config"]
    tc = transformers.AutoConfig.from_pretrained(str(src)).text_config
    for key in ("num_attention_heads", "num_key_value_heads", "head_dim", "rms_norm_eps",
                "max_position_embeddings"):
        assert key not in omitted, key
    rope = tc.rope_parameters
    want = {
        "gemma3.attention.head_count": tc.num_attention_heads,
        "gemma3.attention.head_count_kv": tc.num_key_value_heads,
        "gemma3.attention.key_length": tc.head_dim,
        "gemma3.attention.value_length": tc.head_dim,
        "gemma3.context_length": tc.max_position_embeddings,
        "gemma3.attention.layer_norm_rms_epsilon": float(np.float32(tc.rms_norm_eps)),
        "gemma3.rope.freq_base": float(np.float32(rope["full_attention"]["rope_theta"])),
        "gemma3.rope.freq_base_swa": float(np.float32(rope["sliding_attention"]["rope_theta"])),
        "gemma3.rope.scaling.factor": float(np.float32(rope["full_attention"]["factor"])),
        "gemma3.attention.sliding_window": tc.sliding_window,
        "gemma3.block_count": tc.num_hidden_layers,
        "gemma3.embedding_length": tc.hidden_size,
    }
    kv, _ = _read(path)
    for key, value in want.items():
        assert float(kv[key][1]) == float(value), key
    assert kv["gemma3.rope.scaling.type"][1] == rope["full_attention"]["rope_type"]


# ---- the same as llama.cpp's converter ----------------------------------------------------------

_DRIVER = textwrap.dedent("""
    # convert_hf_to_gguf.py for several checkpoints in one interpreter, with the installed
    # transformers (the converter loads config.json through AutoConfig, which fills in
    # Gemma3TextConfig's defaults). The vocabulary is not converted (the tokenizer is checked
    # against HF tokenizers separately).
    import runpy, sys
    src = sys.argv[1]
    jobs = [sys.argv[i:i + 3] for i in range(2, len(sys.argv), 3)]
    sys.path.insert(0, src)
    import conversion.gemma
    conversion.gemma.Gemma3Model.set_vocab = lambda self: None
    for model, outfile, outtype in jobs:
        sys.argv = ["convert_hf_to_gguf.py", model, "--outfile", outfile, "--outtype", outtype]
        runpy.run_path(src + "/convert_hf_to_gguf.py", run_name="__main__")
""")


@pytest.fixture(scope="module")
def converted(built, tmp_path_factory):
    """{name: the converter's F16 GGUF}, all made in one converter run."""
    for module in ("torch", "transformers"):
        pytest.importorskip(module, reason=f"llama.cpp's convert_hf_to_gguf.py needs {module}")
    src = _converter_source()
    if src is None:
        pytest.skip(f"no llama.cpp source tree with convert_hf_to_gguf.py (set {CONVERTER_ENV})")
    out = tmp_path_factory.mktemp("gemma3_mm_converted")
    args, paths = [], {}
    for name in CASES:
        ck, _ = built(name, "F16")
        paths[name] = out / f"{name}.gguf"
        args += [str(ck), str(paths[name]), "f16"]
    proc = subprocess.run([sys.executable, "-c", _DRIVER, str(src), *args], capture_output=True,
                          text=True, timeout=600, env={**os.environ, "LD_PRELOAD": ""})
    assert proc.returncode == 0, proc.stderr[-4000:]
    return paths


@pytest.mark.parametrize("name", list(CASES))
def test_same_as_llama_cpp_converter(built, converted, name):
    src, path = built(name, "F16")
    kv_ours, t_ours = _read(path)
    kv_ref, t_ref = _read(converted[name])
    assert kv_ours["general.architecture"] == kv_ref["general.architecture"] == ("STRING", "gemma3")
    assert kv_ours["general.file_type"] == kv_ref["general.file_type"]
    ours = {k: v for k, v in kv_ours.items() if k.startswith("gemma3.")}
    ref = {k: v for k, v in kv_ref.items() if k.startswith("gemma3.")}
    assert ours == ref
    assert sorted(t_ours) == sorted(t_ref)
    rows = _converter_rows(src)
    assert t_ref["token_embd.weight"][1][1] == rows  # the converter trims the embedding...
    for tname in t_ref:
        want_type, want_shape, want = t_ref[tname]
        if tname == "output.weight" and want_shape[1] > rows:
            # ...and leaves an untied lm_head whole, which llama.cpp then refuses to load
            # (output.weight must have one row per token); qwodel keeps its first rows
            want_shape, want = (want_shape[0], rows), want[:rows]
        assert t_ours[tname][:2] == (want_type, want_shape), tname
        assert t_ours[tname][2].tobytes() == want.tobytes(), tname


# ---- the plan and the errors ----------------------------------------------------------------

def test_embedding_has_rows_past_the_tokenizer(built):
    """The fixtures are what the trim is about: more embedding rows than the converter keeps."""
    for name in CASES:
        src, _ = built(name, "F16")
        header, _ = hf_fixtures.read_safetensors_header(src / "model.safetensors")
        rows = [v["shape"][0] for k, v in header.items() if k.endswith("embed_tokens.weight")]
        assert rows and rows[0] > _converter_rows(src), name


def test_dry_run_reports_skipped_vision_tensors(qwodel_bin, built):
    src, _ = built("new", "F16")
    header, _ = hf_fixtures.read_safetensors_header(src / "model.safetensors")
    skipped = [n for n in header if n.startswith(("model.vision_tower.",
                                                  "model.multi_modal_projector."))]
    proc = run_qwodel(qwodel_bin, "quantize", src, "--dry-run", "-f", "Q8_0")
    assert f"{len(skipped)} tensors of the vision tower and projector" in proc.stderr
    assert "vision" not in proc.stdout and "projector" not in proc.stdout
    embd = [line for line in proc.stdout.splitlines() if " token_embd.weight " in line]
    assert embd and f"256 x {_converter_rows(src)}" in embd[0], proc.stdout[-2000:]


@pytest.mark.parametrize("overrides, needle", [
    (dict(config_overrides={"text_config": ...}), "text_config"),
    (dict(text_overrides=[1, 2]), "text_config"),
    (dict(text_overrides={"num_hidden_layers": "two"}), "num_hidden_layers"),
    (dict(text_overrides={"num_key_value_heads": 3}), "num_key_value_heads"),
    (dict(text_overrides={"rope_scaling": "linear"}), "rope_scaling"),
    (dict(text_overrides={"rope_parameters": {"full_attention": 3}}), "full_attention"),
    # a default that does not fit the weights (Gemma3TextConfig's hidden_size is 2304)
    (dict(text_overrides={"hidden_size": ...}), "hidden_size"),
])
def test_bad_nested_config_is_refused(qwodel_bin, tmp_path, overrides, needle):
    src = hf_fixtures.make_gemma3_multimodal_checkpoint(tmp_path / "g3", layers=1, **overrides)
    proc = run_qwodel(qwodel_bin, "quantize", src, "-o", tmp_path / "o", "-f", "Q8_0",
                      check=False)
    assert proc.returncode not in (0, -6, -11), proc.stderr  # refused, not crashed
    assert needle in proc.stderr, proc.stderr
    assert not (tmp_path / "o").exists() or not list((tmp_path / "o").glob("*.gguf"))
