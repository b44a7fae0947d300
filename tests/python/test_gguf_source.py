"""A GGUF file as a model source for the HF-shaped backends, judged against what it came from.

qwodel writes a GGUF from each test checkpoint; `model_export` (tests/tools) opens that GGUF with
the model layer's HuggingFace view and writes the view's tensors to one safetensors file plus
config.json. Then:

* float GGUFs (F16 from the f16 checkpoint, BF16 from the bf16 ones, F32 from the f32 one) give
  the source tensors back bit for bit, under their HF names, none missing and none extra;
* quantized GGUFs (Q8_0, Q4_K_M) give exactly what the `gguf` package's own dequantizer makes of
  each tensor, un-permuted here with the converter's row permutation (gguf_oracle, not qwodel's
  code), and that is within the quantization error of the source;
* config.json carries the source's hyperparameters (rope scaling from rope_freqs.weight
  included) and the tied/untied head.
"""
from __future__ import annotations

import json
import pathlib
import subprocess

import numpy as np
import pytest

import hf_fixtures
from conftest import MODELS, run_qwodel, tool

gguf = pytest.importorskip("gguf")
import gguf_oracle  # noqa: E402

# The GGUF float type that keeps each checkpoint's own dtype.
NATIVE = {"F16": "F16", "BF16": "BF16", "F32": "F32"}
SOURCE_DTYPE = {"f16": "F16", "bf16": "BF16", "f32": "F32"}


@pytest.fixture(scope="module")
def gguf_of(qwodel_bin, model_dir, tmp_path_factory):
    """gguf_of(key, fmt) -> path of the checkpoint MODELS[key] quantized to fmt (cached)."""
    root = tmp_path_factory.mktemp("gguf")
    made: dict = {}

    def get(key, fmt):
        if (key, fmt) not in made:
            proc = run_qwodel(qwodel_bin, "quantize", model_dir(key), "-f", fmt, "-o",
                              root / f"{key}-{fmt}", "-q")
            made[key, fmt] = pathlib.Path(proc.stdout.strip())
        return made[key, fmt]

    return get


def export(path, out_dir, *flags):
    proc = subprocess.run([str(tool("model_export")), *flags, str(path), str(out_dir)],
                          capture_output=True, text=True, timeout=600)
    return proc


def export_ok(path, out_dir, *flags):
    proc = export(path, out_dir, *flags)
    assert proc.returncode == 0, proc.stderr
    config = json.loads((out_dir / "config.json").read_text(encoding="utf-8"))
    return hf_fixtures.read_safetensors_raw(out_dir / "model.safetensors"), config


def source_raw(src: pathlib.Path) -> dict:
    index = src / "model.safetensors.index.json"
    if not index.is_file():
        return hf_fixtures.read_safetensors_raw(src / "model.safetensors")
    out = {}
    for shard in sorted(set(json.loads(index.read_text())["weight_map"].values())):
        out.update(hf_fixtures.read_safetensors_raw(src / shard))
    return out


def decode(raw) -> np.ndarray:
    return hf_fixtures._decode(raw)


def source_config(src: pathlib.Path) -> dict:
    return json.loads((src / "config.json").read_text(encoding="utf-8"))


def gguf_metadata(path) -> dict:
    """The GGUF's metadata as llama.cpp reads it (the `gguf` package's reader takes ~30 s over
    a 152k-token vocabulary under load; llama.cpp's takes one)."""
    llama_cpp = pytest.importorskip("llama_cpp")
    return llama_cpp.Llama(model_path=str(path), vocab_only=True, verbose=False).metadata


def check_config(config: dict, src_config: dict, metadata: dict):
    """The exported config against the checkpoint's; eos/bos against the GGUF's tokenizer ids."""
    expected_class = {"LlamaForCausalLM": "LlamaForCausalLM",
                      "MistralForCausalLM": "LlamaForCausalLM",  # GGUF calls both "llama"
                      "Qwen2ForCausalLM": "Qwen2ForCausalLM",
                      "Qwen3ForCausalLM": "Qwen3ForCausalLM"}[src_config["architectures"][0]]
    assert config["architectures"] == [expected_class]
    for key in ("hidden_size", "intermediate_size", "num_attention_heads", "num_hidden_layers",
                "num_key_value_heads", "max_position_embeddings", "vocab_size",
                "tie_word_embeddings", "rope_theta", "rms_norm_eps"):
        assert config[key] == src_config[key], key
    head_dim = src_config["hidden_size"] // src_config["num_attention_heads"]
    assert config.get("head_dim", head_dim) == src_config.get("head_dim", head_dim)
    src_rope = src_config.get("rope_scaling")
    if src_rope:
        got = config["rope_scaling"]
        assert got["rope_type"] == src_rope["rope_type"]
        for k in ("factor", "low_freq_factor", "high_freq_factor",
                  "original_max_position_embeddings"):
            assert got[k] == pytest.approx(src_rope[k], rel=1e-6), k
    else:
        assert config.get("rope_scaling") is None
    for key in ("bos_token_id", "eos_token_id"):
        value = metadata.get(f"tokenizer.ggml.{key}")
        if value is not None:
            assert config[key] == int(value), key


# ---- float GGUFs come back bit for bit --------------------------------------------------------

@pytest.mark.parametrize("key", list(MODELS))
def test_float_gguf_gives_source_back_exactly(gguf_of, model_dir, tmp_path, key):
    src = model_dir(key)
    dtype = SOURCE_DTYPE[MODELS[key]["dtype"]]
    path = gguf_of(key, NATIVE[dtype])
    tensors, config = export_ok(path, tmp_path / "out")
    expected = source_raw(src)
    assert sorted(tensors) == sorted(expected)
    for name, want in expected.items():
        got = tensors[name]
        assert got.shape == want.shape, name
        if len(want.shape) >= 2:
            # matrices keep the checkpoint's dtype in the GGUF, so the bytes must match
            assert got.dtype == want.dtype, name
            assert got.data == want.data, name
        else:
            # vectors are F32 in GGUF (the converter's rule); bf16/f16 -> f32 is exact
            assert np.array_equal(decode(got), decode(want)), name
    check_config(config, source_config(src), gguf_metadata(path))
    assert config["torch_dtype"] == hf_fixtures._TORCH_DTYPE_NAMES[dtype]


def test_hf_directory_view_is_the_identity(model_dir, tmp_path):
    src = model_dir("llama2")
    tensors, config = export_ok(src, tmp_path / "out")
    expected = source_raw(src)
    assert sorted(tensors) == sorted(expected)
    for name, want in expected.items():
        assert tensors[name].dtype == want.dtype and tensors[name].data == want.data, name
    assert config == source_config(src)


# ---- quantized GGUFs: the reference dequantizer's values, near the source ---------------------

def unpermute(values: np.ndarray, heads: int) -> np.ndarray:
    index = gguf_oracle.permute_rows(np.arange(values.shape[0]), heads)  # gguf row i <- hf index[i]
    out = np.empty_like(values)
    out[index] = values
    return out


# Relative RMS error of a tensor's round trip, per format: generous bounds well under what a
# wrong block layout, scale or permutation would give (~1.0 and above).
RMS_BOUND = {"Q8_0": 0.01, "Q4_K_M": 0.12}


# MODELS' llama3 and qwen2 stand-ins with the 32000-token llama2 vocabulary (their 128k/152k
# embeddings would take most of the time budget to quantize under ASan): the same GQA, tied
# head, Llama-3 rope scaling and q/k/v biases.
SMALL_MODELS = {
    "llama3-small": dict(MODELS["llama3"], tokenizer="llama2", shards=1),
    "qwen2-small": dict(MODELS["qwen2"], tokenizer="llama2"),
}


@pytest.fixture(scope="module")
def small_model_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("small")
    made: dict = {}

    def get(key):
        if key not in made:
            made[key] = hf_fixtures.make_checkpoint(root / key, **SMALL_MODELS[key])
        return made[key]

    return get


def llama_cpp_quantize(src, dst, fmt):
    """llama.cpp's own quantizer, so that a GGUF qwodel did not write is read too."""
    import ctypes
    llama_cpp = pytest.importorskip("llama_cpp")
    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = getattr(llama_cpp, f"LLAMA_FTYPE_MOSTLY_{fmt}")
    params.nthread = 2
    rc = llama_cpp.llama_model_quantize(str(src).encode(), str(dst).encode(),
                                        ctypes.byref(params))
    assert rc == 0, f"llama_model_quantize failed for {src}"
    return dst


@pytest.mark.parametrize("key,fmt,writer", [("llama3-small", "Q8_0", "qwodel"),
                                            ("mistral", "Q4_K_M", "qwodel"),
                                            ("qwen2-small", "Q4_K_M", "qwodel"),
                                            ("llama2", "Q4_K_M", "llama.cpp")])
def test_quantized_gguf_matches_reference_dequantizer(qwodel_bin, model_dir, small_model_dir,
                                                      tmp_path, key, fmt, writer):
    src = small_model_dir(key) if key in SMALL_MODELS else model_dir(key)
    if writer == "qwodel":
        proc = run_qwodel(qwodel_bin, "quantize", src, "-f", fmt, "-o", tmp_path / "gguf", "-q")
        path = pathlib.Path(proc.stdout.strip())
    else:
        proc = run_qwodel(qwodel_bin, "quantize", src, "-f", "F16", "-o", tmp_path / "f16", "-q")
        path = llama_cpp_quantize(proc.stdout.strip(), tmp_path / f"{key}-{fmt}.gguf", fmt)
    tensors, config = export_ok(path, tmp_path / "out")
    expected = hf_fixtures.load_checkpoint(src)
    assert sorted(tensors) == sorted(expected)
    src_config = source_config(src)
    by_gguf = {t.name: t for t in gguf.GGUFReader(str(path)).tensors}
    n_head = src_config["num_attention_heads"]
    n_head_kv = src_config.get("num_key_value_heads") or n_head
    permuted = src_config["architectures"][0] in gguf_oracle.PERMUTED_ARCHITECTURES
    quantized = 0
    for name, want in expected.items():
        t = by_gguf[gguf_oracle.gguf_name(name)]
        ref = np.asarray(gguf.quants.dequantize(t.data, t.tensor_type), dtype=np.float32)
        ref = ref.reshape(want.shape)
        if permuted and ".self_attn.q_proj." in name:
            ref = unpermute(ref, n_head)
        elif permuted and ".self_attn.k_proj." in name:
            ref = unpermute(ref, n_head_kv)
        got = decode(tensors[name])
        assert got.shape == want.shape, name
        np.testing.assert_array_equal(got, ref, err_msg=name)
        if t.tensor_type.name in ("F32", "F16", "BF16"):
            continue
        quantized += 1
        rms = np.sqrt(np.mean((got - want) ** 2) / np.mean(want ** 2))
        assert rms < RMS_BOUND[fmt], (name, t.tensor_type.name, rms)
    assert quantized > 0
    check_config(config, src_config, gguf_metadata(path))


def test_export_f32_flag_converts_every_tensor(gguf_of, tmp_path):
    path = gguf_of("llama3", "BF16")
    tensors, _ = export_ok(path, tmp_path / "out", "--f32")
    assert {t.dtype for t in tensors.values()} == {"F32"}


# ---- the tokenizer comes back as tokenizer.json ----------------------------------------------

tokenizers = pytest.importorskip("tokenizers")
import tokenizer_samples  # noqa: E402

# One GGUF per tokenizer: SentencePiece (llama2), Llama-3 byte-level BPE, Qwen byte-level BPE.
TOKENIZER_SOURCES = {"llama2": ("llama2", "F16"), "llama3": ("llama3", "BF16"),
                     "qwen3": ("qwen2", "BF16")}
# What GGUF cannot keep: llama.cpp marks Qwen's FIM tokens as control tokens, so they come back
# special (decode with skip_special_tokens drops them) though HF lists them as not special.
FIM_NOT_SPECIAL = {"<|fim_prefix|>", "<|fim_middle|>", "<|fim_suffix|>", "<|fim_pad|>",
                   "<|repo_name|>", "<|file_sep|>"}


@pytest.mark.parametrize("tok", list(TOKENIZER_SOURCES))
def test_tokenizer_json_encodes_like_the_original(gguf_of, tmp_path, tok):
    key, fmt = TOKENIZER_SOURCES[tok]
    out = tmp_path / "out"
    export_ok(gguf_of(key, fmt), out)
    original = tokenizers.Tokenizer.from_file(
        str(hf_fixtures.TOKENIZER_DIR / tok / "tokenizer.json"))
    rebuilt = tokenizers.Tokenizer.from_file(str(out / "tokenizer.json"))
    assert rebuilt.get_vocab(with_added_tokens=True) == original.get_vocab(with_added_tokens=True)
    differ = []
    for text in tokenizer_samples.SAMPLES:
        for specials in (False, True):
            want = original.encode(text, add_special_tokens=specials).ids
            got = rebuilt.encode(text, add_special_tokens=specials).ids
            if got != want:
                differ.append((text, specials, want[:16], got[:16]))
        if not any(t in text for t in FIM_NOT_SPECIAL):
            assert rebuilt.decode(want) == original.decode(want), text
    assert not differ, differ[:5]
    special = {t.content for t in original.get_added_tokens_decoder().values() if t.special}
    got_special = {t.content for t in rebuilt.get_added_tokens_decoder().values() if t.special}
    assert got_special - FIM_NOT_SPECIAL == special
    config = json.loads((out / "tokenizer_config.json").read_text(encoding="utf-8"))
    src_config = json.loads(
        (hf_fixtures.TOKENIZER_DIR / tok / "tokenizer_config.json").read_text(encoding="utf-8"))
    for k in ("bos_token", "chat_template"):
        if isinstance(src_config.get(k), str):
            assert config[k] == src_config[k], k


# ---- the exported directory is a model qwodel converts back to the same GGUF -----------------

def gguf_contents(path):
    reader = gguf.GGUFReader(str(path))
    fields = {k: f.contents() for k, f in reader.fields.items()
              if not k.startswith("GGUF.") and k != "general.name"}
    tensors = {t.name: (t.tensor_type.name, bytes(t.data)) for t in reader.tensors}
    return fields, tensors


def test_export_then_convert_gives_the_same_gguf(qwodel_bin, small_model_dir, tmp_path):
    # Llama-3 layout (Q/K permuted, rope_freqs, tied head) with a SentencePiece tokenizer
    src = small_model_dir("llama3-small")
    fmt = "BF16"
    first = pathlib.Path(run_qwodel(qwodel_bin, "quantize", src, "-f", fmt, "-o", tmp_path / "a",
                                    "-q").stdout.strip())
    export_ok(first, tmp_path / "hf")
    second = pathlib.Path(run_qwodel(qwodel_bin, "quantize", tmp_path / "hf", "-f", fmt, "-o",
                                     tmp_path / "b", "-q").stdout.strip())
    fields_a, tensors_a = gguf_contents(first)
    fields_b, tensors_b = gguf_contents(second)
    assert fields_b == fields_a
    assert tensors_b.keys() == tensors_a.keys()
    for name in tensors_a:
        assert tensors_b[name] == tensors_a[name], name


# ---- bad GGUFs: a clear error, no crash --------------------------------------------------------

def test_truncated_gguf_is_an_error(gguf_of, tmp_path):
    data = gguf_of("llama2", "Q8_0").read_bytes()
    bad = tmp_path / "cut.gguf"
    bad.write_bytes(data[: len(data) // 2])
    proc = export(bad, tmp_path / "out")
    assert proc.returncode == 1, proc.stderr
    assert "cut.gguf" in proc.stderr and "QW_ERR_CORRUPT" in proc.stderr
    assert not (tmp_path / "out" / "model.safetensors").exists()


@pytest.mark.parametrize("tokens_key", ["tokenizer.ggml.tokens", "tokenizer.ggml.merges"])
def test_token_that_is_not_utf8_is_named(gguf_of, tmp_path, tokens_key):
    """A vocabulary string that is not UTF-8 (GGUF strings are UTF-8) cannot go into
    tokenizer.json: the export fails naming the file and the entry, instead of writing JSON that
    no reader accepts."""
    import gguf

    key = "qwen3" if tokens_key.endswith("merges") else "llama2"  # merges: a BPE vocabulary
    path = gguf_of(key, "Q8_0")
    field = gguf.GGUFReader(str(path)).fields[tokens_key]
    first = field.parts[field.data[0]]  # the bytes of entry 0, and where they are in the file
    data = bytearray(path.read_bytes())
    at = data.index(len(first).to_bytes(8, "little") + first.tobytes()) + 8
    data[at] = 0xFF  # never a UTF-8 byte
    bad = tmp_path / "bad-token.gguf"
    bad.write_bytes(bytes(data))
    proc = export(bad, tmp_path / "out")
    assert proc.returncode == 1, proc.stderr
    assert "bad-token.gguf" in proc.stderr, proc.stderr
    assert f"{tokens_key}[0] is not valid UTF-8" in proc.stderr, proc.stderr
    assert not (tmp_path / "out" / "tokenizer.json").exists()
