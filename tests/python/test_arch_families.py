"""Gemma 1/2/3, Phi-3 and Mistral (with its sliding window) through the GGUF backend.

Each family's tiny checkpoint (hf_fixtures) is quantized by the built `qwodel` and checked by
tools qwodel's authors did not write:

- llama.cpp (llama-cpp-python) loads the Q4_K_M and F16 files and generates;
- the F16 file's tensors equal the checkpoint's after the transforms llama.cpp's converter
  applies (names from gguf-py's tensor map, Gemma's norm + 1, f16/f32 rounding), computed here
  with numpy;
- llama.cpp's own converter (convert_hf_to_gguf.py from the llama-cpp-python 0.3.36 sources,
  when torch and those sources are present) converts the same checkpoint: its architecture
  metadata (keys, types, values) and its tensors (names, shapes, types, bytes) must equal ours;
- llama.cpp tokenizes sample text as HF `tokenizers` does with the checkpoint's tokenizer.json.
"""
from __future__ import annotations

import json
import os
import pathlib
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import hf_fixtures
from conftest import BUILD, REPO, run_qwodel

gguf = pytest.importorskip("gguf")
llama_cpp = pytest.importorskip("llama_cpp")

# name -> (make_checkpoint keyword arguments, gguf-py MODEL_ARCH name)
FAMILIES = {
    "gemma": (dict(family="gemma", tokenizer=None, tied=True, dtype="bf16"), "GEMMA"),
    "gemma2": (dict(family="gemma2", tokenizer=None, tied=True, dtype="f32", heads=4, kv_heads=2),
               "GEMMA2"),
    # untied, head_dim * heads != hidden, linear rope scaling (Gemma 3 4B+), and f16 weights, so
    # the + 1 on norms is rounded to f16 as the converter's torch addition does
    "gemma3": (dict(family="gemma3", tokenizer=None, tied=False, dtype="f16", head_dim=128,
                    rope_scaling={"factor": 8.0, "rope_type": "linear"}), "GEMMA3"),
    # Phi-3-mini-128k: fused qkv and gate_up, longrope factors, sliding window
    "phi3": (dict(family="phi3", tokenizer=None, tied=False, dtype="bf16", heads=2, layers=1,
                  rope_scaling=hf_fixtures.phi3_longrope(128)), "PHI3"),
    # Phi-3-mini-4k: no rope scaling, partial rotary off, smaller
    "phi3_4k": (dict(family="phi3", tokenizer=None, tied=False, dtype="bf16", hidden=128,
                     heads=2, layers=1, n_ctx=4096,
                     config_overrides={"sliding_window": 2047, "max_position_embeddings": 4096}),
                "PHI3"),
    # Mistral-7B-v0.1's sliding_window 4096: llama.cpp's converter maps Mistral to llama and
    # writes no window
    "mistral_swa": (dict(family="mistral", tokenizer="llama2", tied=True, dtype="bf16",
                         hidden=128, heads=4, kv_heads=2, intermediate=256, layers=1,
                         config_overrides={"sliding_window": 4096}), "LLAMA"),
}
GEMMAS = ("gemma", "gemma2", "gemma3")

CONVERTER_ENV = "QWODEL_LLAMA_CPP_SRC"  # a llama.cpp tree with convert_hf_to_gguf.py


def _make(out, kwargs):
    kwargs = dict(kwargs)
    family = kwargs.pop("family")
    if family in hf_fixtures.DENSE_FAMILIES:
        kwargs.pop("tokenizer")
        return hf_fixtures.make_dense_checkpoint(out, family, **kwargs)
    return hf_fixtures.make_checkpoint(out, family, **kwargs)


@pytest.fixture(scope="module")
def built(tmp_path_factory, qwodel_bin):
    """built(name, fmt) -> (checkpoint dir, our GGUF path), made once per module."""
    root = tmp_path_factory.mktemp("arch_families")
    cache: dict = {}

    def get(name, fmt):
        if (name, None) not in cache:
            cache[(name, None)] = _make(root / "ck" / name, FAMILIES[name][0])
        src = cache[(name, None)]
        if (name, fmt) not in cache:
            run_qwodel(qwodel_bin, "quantize", src, "-o", root / "out", "-f", fmt, "-q")
            cache[(name, fmt)] = root / "out" / f"{name}-{fmt.lower()}.gguf"
        return src, cache[(name, fmt)]

    return get


def _read(path):
    """({key: (type name, value)}, {tensor: (type name, shape, bytes)}) of a GGUF file."""
    r = gguf.GGUFReader(str(path))
    kv = {}
    for k, f in r.fields.items():
        if k.startswith("GGUF."):
            continue
        kv[k] = (f.types[0].name if len(f.types) == 1 else tuple(t.name for t in f.types),
                 f.contents())
    ts = {t.name: (t.tensor_type.name, tuple(int(x) for x in t.shape), np.array(t.data))
          for t in r.tensors}
    return kv, ts


# ---- llama.cpp loads and generates -----------------------------------------------------------

# Q4_K_M for the small models (phi3_4k stands for Phi-3's; the existing mistral tests cover its
# quantized files), F16 for all: the 32k-row vocabularies are what cost time under ASan.
LOAD_CASES = [(n, "Q4_K_M") for n in ("gemma", "gemma2", "gemma3", "phi3_4k")] + \
             [(n, "F16") for n in FAMILIES]


@pytest.mark.parametrize("name, fmt", LOAD_CASES)
def test_llama_cpp_loads_and_generates(built, name, fmt):
    _, path = built(name, fmt)
    kv, _ = _read(path)
    assert kv["general.architecture"][1] == gguf.MODEL_ARCH_NAMES[getattr(gguf.MODEL_ARCH,
                                                                            FAMILIES[name][1])]
    m = llama_cpp.Llama(model_path=str(path), n_ctx=64, n_threads=2, verbose=False, seed=1,
                        logits_all=True)
    try:
        tokens = m.tokenize(b"The quick brown fox", add_bos=True)
        m.eval(tokens)
        logits = np.array(m.scores[m.n_tokens - 1], dtype=np.float32)
        assert logits.shape == (m.n_vocab(),) and np.isfinite(logits).all()
        assert float(logits.std()) > 0
        out = m.create_completion("The quick brown fox", max_tokens=4, temperature=0)
        assert out["usage"]["completion_tokens"] >= 1
    finally:
        m.close()


# ---- F16 tensors are the checkpoint's after the converter's transforms ------------------------

def _expected_tensors(src: pathlib.Path, name: str) -> dict:
    """{gguf name: float32/float16 array} that llama.cpp's converter writes at --outtype f16,
    computed from the checkpoint with gguf-py's tensor map (not qwodel's tables)."""
    config = json.loads((src / "config.json").read_text())
    arch = getattr(gguf.MODEL_ARCH, FAMILIES[name][1])
    tmap = gguf.get_tensor_name_map(arch, config["num_hidden_layers"])
    gemma = name in GEMMAS
    out = {}
    for hf_name, a in hf_fixtures.load_checkpoint(src).items():
        if gemma and name != "gemma3" and hf_name == "lm_head.weight":
            continue  # Gemma 1/2 converters skip lm_head
        new = tmap.get_name(hf_name, try_suffixes=(".weight", ".bias"))
        assert new is not None, hf_name
        if gemma and hf_name.endswith("norm.weight"):
            # torch adds in the tensor's dtype: f32 for bf16/f32 sources, f16 for f16 ones
            a = (a.astype(np.float16) + np.float16(1)) if config["torch_dtype"] == "float16" else a + np.float32(1)
        if name == "mistral_swa" and hf_name.endswith(("q_proj.weight", "k_proj.weight")):
            heads = config["num_attention_heads"] if "q_proj" in hf_name else config["num_key_value_heads"]
            a = a.reshape(heads, 2, a.shape[0] // heads // 2, *a.shape[1:]).swapaxes(1, 2).reshape(a.shape)
        out[new] = a.astype(np.float32) if a.ndim == 1 else a.astype(np.float16)
    rs = config.get("rope_scaling") or {}
    if rs.get("long_factor"):
        out["rope_factors_long.weight"] = np.array(rs["long_factor"], dtype=np.float32)
        out["rope_factors_short.weight"] = np.array(rs["short_factor"], dtype=np.float32)
    return out


@pytest.mark.parametrize("name", list(FAMILIES))
def test_f16_tensors_equal_source_after_transforms(built, name):
    src, path = built(name, "F16")
    _, ours = _read(path)
    expected = _expected_tensors(src, name)
    assert sorted(ours) == sorted(expected)
    for tname, want in expected.items():
        ttype, shape, data = ours[tname]
        assert ttype == ("F32" if want.dtype == np.float32 else "F16"), tname
        got = data.reshape(want.shape)
        assert got.dtype == want.dtype, tname
        assert np.array_equal(got.view(np.uint8), want.view(np.uint8)), tname


def test_gemma_norms_really_shifted(built):
    """The +1 is visible: Gemma's stored norm offsets are near 0, llama.cpp's weights near 1."""
    src, path = built("gemma2", "F16")
    _, ours = _read(path)
    hf = hf_fixtures.load_checkpoint(src)
    got = ours["blk.0.post_attention_norm.weight"][2]
    assert abs(float(np.mean(hf["model.layers.0.post_attention_layernorm.weight"]))) < 0.1
    assert abs(float(np.mean(got)) - 1.0) < 0.1


# ---- the same as llama.cpp's quantizer --------------------------------------------------------

@pytest.mark.parametrize("name", ["gemma", "gemma2", "gemma3", "phi3_4k"])
def test_q4_k_m_equals_llama_quantize_of_f16(built, qwodel_bin, tmp_path, name):
    """Our F16 file -> Q4_K_M, and (for bf16/f16 checkpoints, whose values the F16 file holds
    exactly) HF -> Q4_K_M in one step, write what llama.cpp's quantizer makes of the F16 file:
    the per-tensor type rules hold for these architectures (fused attn_qkv / ffn_up, Gemma's
    tied output) and the bytes are the same."""
    import ctypes
    src, f16 = built(name, "F16")
    run_qwodel(qwodel_bin, "quantize", f16, "-o", tmp_path, "-f", "Q4_K_M", "-q")
    candidates = [tmp_path / f"{f16.stem}-q4_k_m.gguf"]
    if json.loads((src / "config.json").read_text())["torch_dtype"] != "float32":
        candidates.append(built(name, "Q4_K_M")[1])
    theirs = tmp_path / "theirs.gguf"
    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = llama_cpp.LLAMA_FTYPE_MOSTLY_Q4_K_M
    params.nthread = 2
    assert llama_cpp.llama_model_quantize(str(f16).encode(), str(theirs).encode(),
                                          ctypes.byref(params)) == 0
    _, t_theirs = _read(theirs)
    for ours in candidates:
        _, t_ours = _read(ours)
        assert sorted(t_ours) == sorted(t_theirs)
        for tname, (ttype, shape, data) in t_theirs.items():
            assert t_ours[tname][:2] == (ttype, shape), (ours.name, tname)
            assert t_ours[tname][2].tobytes() == data.tobytes(), (ours.name, tname)


# ---- the same as llama.cpp's converter --------------------------------------------------------

_CONVERTER_DRIVER = textwrap.dedent("""
    # Runs convert_hf_to_gguf.py for several checkpoints in one interpreter (torch loads once).
    # transformers is absent here: a stub AutoConfig makes the converter read config.json itself
    # (its own fallback). Vocabularies are not converted (that needs sentencepiece and a
    # tokenizer.model); the tokenizer is checked against HF tokenizers separately.
    import runpy, sys, types
    src = sys.argv[1]
    jobs = [sys.argv[i:i + 3] for i in range(2, len(sys.argv), 3)]
    tf = types.ModuleType("transformers")
    class AutoConfig:
        @staticmethod
        def from_pretrained(*a, **k):
            raise OSError("no transformers: read config.json")
    tf.AutoConfig = AutoConfig
    sys.modules.setdefault("transformers", tf)
    sys.path.insert(0, src)
    import conversion.gemma, conversion.phi, conversion.llama
    for cls in (conversion.gemma.GemmaModel, conversion.gemma.Gemma2Model,
                conversion.gemma.Gemma3Model, conversion.phi.Phi3MiniModel,
                conversion.llama.LlamaModel):
        cls.set_vocab = lambda self: None
    for model, outfile, outtype in jobs:
        sys.argv = ["convert_hf_to_gguf.py", model, "--outfile", outfile, "--outtype", outtype]
        runpy.run_path(src + "/convert_hf_to_gguf.py", run_name="__main__")
""")


def _converter_source() -> pathlib.Path | None:
    candidates = [os.environ.get(CONVERTER_ENV)] if os.environ.get(CONVERTER_ENV) else []
    # where scripts/ensure-deps.sh test puts it, for the llama-cpp-python installed
    cache = pathlib.Path(os.environ.get("XDG_CACHE_HOME", pathlib.Path.home() / ".cache"))
    candidates.append(str(cache / "qwodel-tests" / f"llama-cpp-python-{llama_cpp.__version__}"))
    for c in candidates:
        if c and (pathlib.Path(c) / "convert_hf_to_gguf.py").is_file() and \
                (pathlib.Path(c) / "conversion").is_dir():
            return pathlib.Path(c)
    return None


@pytest.fixture(scope="module")
def converted(built, tmp_path_factory):
    """{name: converter's F16 GGUF}, all made in one converter run."""
    try:
        import torch  # noqa: F401
    except ImportError:
        pytest.skip("torch is not installed, so llama.cpp's convert_hf_to_gguf.py cannot run "
                    "(pip install torch==2.13.0)")
    src = _converter_source()
    if src is None:
        pytest.skip(f"no llama.cpp source tree with convert_hf_to_gguf.py (set {CONVERTER_ENV}, "
                    "e.g. to the vendor/llama.cpp of the llama-cpp-python 0.3.36 sdist)")
    out = tmp_path_factory.mktemp("converted")
    args, paths = [], {}
    for name in FAMILIES:
        ck, _ = built(name, "F16")
        paths[name] = out / f"{name}.gguf"
        args += [str(ck), str(paths[name]), "f16"]
    proc = subprocess.run([sys.executable, "-c", _CONVERTER_DRIVER, str(src), *args],
                          capture_output=True, text=True, timeout=600,
                          env={**os.environ, "LD_PRELOAD": ""})
    assert proc.returncode == 0, proc.stderr[-4000:]
    return paths


@pytest.mark.parametrize("name", list(FAMILIES))
def test_same_as_llama_cpp_converter(built, converted, name):
    _, path = built(name, "F16")
    kv_ours, t_ours = _read(path)
    kv_ref, t_ref = _read(converted[name])
    arch = kv_ref["general.architecture"][1]
    assert kv_ours["general.architecture"] == kv_ref["general.architecture"]
    assert kv_ours["general.file_type"] == kv_ref["general.file_type"]
    ours = {k: v for k, v in kv_ours.items() if k.startswith(arch + ".")}
    ref = {k: v for k, v in kv_ref.items() if k.startswith(arch + ".")}
    assert ours == ref
    assert sorted(t_ours) == sorted(t_ref)
    for tname in t_ref:
        assert t_ours[tname][:2] == t_ref[tname][:2], tname
        assert t_ours[tname][2].tobytes() == t_ref[tname][2].tobytes(), tname


def test_mistral_sliding_window_not_written(built):
    _, path = built("mistral_swa", "F16")
    kv, _ = _read(path)
    assert kv["general.architecture"][1] == "llama"
    assert not any("sliding_window" in k for k in kv)


# ---- tokenizers ------------------------------------------------------------------------------

TEXTS = [
    "The quick brown fox jumps over the lazy dog.",
    "Hello, world!  Two  spaces\tand a tab.\nNew line.",
    "Numbers 3.14159 and 1,000,000; code: def f(x): return x*2",
    "Café naïve Straße добрый день 你好世界 🦙",
    "   leading spaces, trailing ones   ",
]


@pytest.mark.parametrize("name", ["gemma", "gemma3", "phi3"])
def test_tokenizer_matches_hf(built, name):
    tokenizers = pytest.importorskip("tokenizers")
    src, path = built(name, "F16")
    kv, _ = _read(path)
    # what llama.cpp's converter writes for these SentencePiece vocabularies
    assert kv["tokenizer.ggml.model"][1] == "llama" and kv["tokenizer.ggml.pre"][1] == "default"
    if name in GEMMAS:
        assert kv["tokenizer.ggml.add_space_prefix"][1] is False
    tok = tokenizers.Tokenizer.from_file(str(src / "tokenizer.json"))
    m = llama_cpp.Llama(model_path=str(path), vocab_only=True, verbose=False)
    try:
        for text in TEXTS:
            want = tok.encode(text, add_special_tokens=False).ids
            got = m.tokenize(text.encode("utf-8"), add_bos=False, special=False)
            assert got == want, text
        bos = tok.token_to_id("<bos>" if name in GEMMAS else "<s>")
        assert m.token_bos() == bos
    finally:
        m.close()


def test_gemma_fim_ids_as_converter(built):
    """Gemma 1's converter writes CodeGemma's FIM ids whatever the vocabulary."""
    _, path = built("gemma", "Q4_K_M")
    kv, _ = _read(path)
    want = {"prefix": 67, "suffix": 69, "middle": 68, "fsep": 70, "eot": 107}
    for k, v in want.items():
        assert kv[f"tokenizer.ggml.{k}_token_id"] == ("UINT32", v)


# ---- bad configurations are refused, naming what is wrong ------------------------------------

@pytest.mark.parametrize("overrides, needle", [
    ({"original_max_position_embeddings": ...}, "original_max_position_embeddings"),
    ({"rope_scaling": {"type": "longrope", "long_factor": [1.0] * 3, "short_factor": [1.0] * 3}},
     "rope_scaling"),
    ({"rope_scaling": {"type": "longrope", "long_factor": [1.0] * 64, "short_factor": [1.0]}},
     "short_factor"),
    ({"sliding_window": "wide"}, "sliding_window"),
])
def test_bad_phi3_config_is_refused(qwodel_bin, tmp_path, overrides, needle):
    src = hf_fixtures.make_dense_checkpoint(tmp_path / "phi3", "phi3", hidden=128, heads=2,
                                            layers=1, config_overrides=overrides)
    proc = run_qwodel(qwodel_bin, "quantize", src, "-o", tmp_path / "o", "-f", "Q8_0",
                      check=False)
    assert proc.returncode not in (0, -6, -11), proc.stderr  # refused, not crashed
    assert needle in proc.stderr
    assert not list((tmp_path / "o").glob("*.gguf")) if (tmp_path / "o").exists() else True


def test_dry_run_shows_gemma_norm_transform(qwodel_bin, built):
    src, _ = built("gemma2", "F16")
    proc = run_qwodel(qwodel_bin, "quantize", src, "--dry-run", "-f", "Q8_0")
    lines = [l for l in proc.stdout.splitlines() if "blk.0.post_ffw_norm.weight" in l]
    assert lines and "add 1" in lines[0], proc.stdout[-2000:]


# ---- unsupported architectures ---------------------------------------------------------------

NEW_CLASSES = ["GemmaForCausalLM", "Gemma2ForCausalLM", "Gemma3ForCausalLM", "Phi3ForCausalLM"]


def _bad_model(tmp_path):
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "config.json").write_text(json.dumps({"architectures": ["FooForCausalLM"],
                                                 "model_type": "foo"}))
    return bad


def test_unsupported_architecture_cli_lists_supported(qwodel_bin, tmp_path):
    proc = run_qwodel(qwodel_bin, "quantize", _bad_model(tmp_path), "-o", tmp_path / "o",
                      "-f", "Q8_0", check=False)
    assert proc.returncode != 0
    assert "FooForCausalLM" in proc.stderr
    for cls in NEW_CLASSES + ["LlamaForCausalLM", "MistralForCausalLM"]:
        assert cls in proc.stderr, cls


def test_unsupported_architecture_is_validation_error_at_creation(tmp_path):
    lib = BUILD / "libqwodel.so"
    if not lib.exists():
        pytest.skip(f"{lib} is not built")
    bad = _bad_model(tmp_path)
    code = textwrap.dedent(f"""
        import qwodel, sys
        try:
            qwodel.Quantizer("gguf", {str(bad)!r})
        except qwodel.ValidationError as e:
            print(e)
            sys.exit(0)
        sys.exit("no ValidationError")
    """)
    preload = ":".join(subprocess.run(["gcc", f"-print-file-name={n}"], capture_output=True,
                                      text=True).stdout.strip() for n in ("libasan.so", "libubsan.so"))
    env = {**os.environ, "QWODEL_LIB": str(lib), "PYTHONPATH": str(REPO / "python"),
           "LD_PRELOAD": preload, "ASAN_OPTIONS": "detect_leaks=0"}
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "FooForCausalLM" in proc.stdout
    for cls in NEW_CLASSES:
        assert cls in proc.stdout, cls
