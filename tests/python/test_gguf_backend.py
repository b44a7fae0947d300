"""The gguf backend end to end, judged by tools qwodel did not write.

* the `gguf` package reads every output; float outputs equal the source tensor for tensor
  (after the converter's transforms, computed independently in gguf_oracle);
* llama.cpp (llama-cpp-python) loads every output and generates;
* Q8_0 and Q4_0 tensors are byte-identical to llama.cpp's own quantizer run on the same F16 GGUF.
"""
from __future__ import annotations

import ctypes
import json
import pathlib

import numpy as np
import pytest

from conftest import MODELS, run_qwodel

gguf = pytest.importorskip("gguf")
import gguf_oracle  # noqa: E402

FORMATS = ["F32", "F16", "BF16", "Q8_0", "Q4_0"]


def quantize(qwodel_bin, model, fmt, out_dir, *extra):
    proc = run_qwodel(qwodel_bin, "quantize", model, "-f", fmt, "-o", out_dir, "-q", *extra)
    path = pathlib.Path(proc.stdout.strip())
    assert path.is_file(), proc.stdout
    return path


def read_gguf(path):
    reader = gguf.GGUFReader(str(path))
    tensors = {t.name: t for t in reader.tensors}
    return reader, tensors


def kv(reader, key):
    field = reader.fields[key]
    return field.contents()


# ---- float outputs equal the source ----------------------------------------------------------

@pytest.mark.parametrize("key", list(MODELS))
@pytest.mark.parametrize("fmt", ["F32", "F16", "BF16"])
def test_float_outputs_equal_source(qwodel_bin, model_dir, tmp_path, key, fmt):
    src = model_dir(key)
    out = quantize(qwodel_bin, src, fmt, tmp_path)
    assert out.name == f"{key}-{fmt.lower()}.gguf"
    reader, tensors = read_gguf(out)
    expected = gguf_oracle.expected_tensors(src, fmt)
    assert sorted(tensors) == sorted(expected)
    for name, (values, qtype) in expected.items():
        t = tensors[name]
        assert t.tensor_type.name == qtype, name
        got = np.asarray(t.data)
        if qtype == "BF16":  # the gguf package hands bf16 back as raw 16-bit words
            got = gguf.quants.dequantize(t.data, t.tensor_type)
        got = np.asarray(got, dtype=np.float32).reshape(values.shape)
        want = gguf_oracle.stored_values(values, qtype)
        if name == "rope_freqs.weight":  # float32 pow: the converter's torch vs libm, 1 ulp
            np.testing.assert_allclose(got, want, rtol=2e-6)
        else:
            np.testing.assert_array_equal(got, want, err_msg=name)
    assert kv(reader, "general.architecture") == {"llama": "llama", "mistral": "llama",
                                                  "qwen2": "qwen2", "qwen3": "qwen3"}[
        MODELS[key]["family"]]
    assert kv(reader, "general.file_type") == {"F32": 0, "F16": 1, "BF16": 32}[fmt]
    assert kv(reader, "general.quantization_version") == 2
    arch = kv(reader, "general.architecture")
    config = json.loads((src / "config.json").read_text())
    assert kv(reader, f"{arch}.block_count") == config["num_hidden_layers"]
    assert kv(reader, f"{arch}.embedding_length") == config["hidden_size"]
    assert kv(reader, f"{arch}.attention.head_count_kv") == config["num_key_value_heads"]
    assert len(kv(reader, "tokenizer.ggml.tokens")) == tensors["token_embd.weight"].shape[-1]


# ---- llama.cpp loads and generates -----------------------------------------------------------

llama_cpp = pytest.importorskip("llama_cpp")


@pytest.fixture(scope="module")
def outputs(qwodel_bin, model_dir, tmp_path_factory):
    """Every (model, format) output, made once for the tests below."""
    root = tmp_path_factory.mktemp("outputs")
    cache = {}

    def get(key, fmt):
        if (key, fmt) not in cache:
            cache[key, fmt] = quantize(qwodel_bin, model_dir(key), fmt, root / key)
        return cache[key, fmt]

    return get


@pytest.mark.parametrize("key", list(MODELS))
@pytest.mark.parametrize("fmt", FORMATS)
def test_llama_cpp_loads_and_generates(outputs, key, fmt):
    path = outputs(key, fmt)
    llm = llama_cpp.Llama(model_path=str(path), n_ctx=64, n_threads=2, n_batch=64, seed=1,
                          logits_all=True, verbose=False)
    tokens = llm.tokenize(b"The quick brown fox", add_bos=True)
    assert len(tokens) > 2
    llm.eval(tokens)
    logits = np.asarray(llm.scores[llm.n_tokens - 1], dtype=np.float32)
    assert logits.shape == (llm.n_vocab(),)
    assert np.isfinite(logits).all() and logits.std() > 0
    generated = []
    for token in llm.generate(tokens, temp=0.0, reset=True):
        generated.append(token)
        if len(generated) == 6:
            break
    assert len(generated) >= 1
    assert all(0 <= t < llm.n_vocab() for t in generated)


def test_output_choice_for_q4_0(outputs):
    """llama.cpp's rule: output.weight (or tied token_embd) is q6_K when its rows allow, else
    q8_0; everything else quantizable is q4_0, norms stay f32."""
    _, t = read_gguf(outputs("llama2", "Q4_0"))
    assert t["output.weight"].tensor_type.name == "Q6_K"
    assert t["token_embd.weight"].tensor_type.name == "Q4_0"
    assert t["blk.0.attn_norm.weight"].tensor_type.name == "F32"
    _, t = read_gguf(outputs("qwen2", "Q4_0"))  # tied: token_embd takes output's rule
    assert "output.weight" not in t
    assert t["token_embd.weight"].tensor_type.name == "Q6_K"
    assert t["blk.0.attn_q.bias"].tensor_type.name == "F32"
    _, t = read_gguf(outputs("mistral", "Q4_0"))  # hidden 320: not a multiple of 256
    assert t["output.weight"].tensor_type.name == "Q8_0"


# ---- byte-identical with llama.cpp's quantizer -----------------------------------------------

def llama_quantize(src, dst, ftype):
    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = ftype
    params.nthread = 2
    rc = llama_cpp.llama_model_quantize(str(src).encode(), str(dst).encode(),
                                        ctypes.byref(params))
    assert rc == 0, f"llama_model_quantize failed for {src}"


@pytest.mark.parametrize("key", list(MODELS))
@pytest.mark.parametrize("fmt", ["Q8_0", "Q4_0"])
def test_bytes_equal_llama_cpp_quantizer(qwodel_bin, outputs, tmp_path, key, fmt):
    f16 = outputs(key, "F16")
    theirs = tmp_path / f"llama-{fmt}.gguf"
    llama_quantize(f16, theirs, getattr(llama_cpp, f"LLAMA_FTYPE_MOSTLY_{fmt}"))
    ours = quantize(qwodel_bin, f16, fmt, tmp_path / "ours")
    r_ours, t_ours = read_gguf(ours)
    r_theirs, t_theirs = read_gguf(theirs)
    assert sorted(t_ours) == sorted(t_theirs)
    for name, t in t_theirs.items():
        mine = t_ours[name]
        assert mine.tensor_type == t.tensor_type, f"{name}: {mine.tensor_type} vs {t.tensor_type}"
        assert list(mine.shape) == list(t.shape), name
        assert np.asarray(mine.data).tobytes() == np.asarray(t.data).tobytes(), name
    # the same metadata, apart from what each tool records about itself
    for field in r_theirs.fields:
        if field.startswith("GGUF.") or field.startswith("quantize."):
            continue
        assert field in r_ours.fields, field
        assert r_ours.fields[field].contents() == r_theirs.fields[field].contents(), field


@pytest.mark.parametrize("fmt", ["Q8_0", "Q4_0"])
def test_direct_from_f16_checkpoint_equals_llama_cpp(qwodel_bin, model_dir, outputs, tmp_path,
                                                     fmt):
    """HF (f16 weights) -> Q8_0/Q4_0 in one step writes what convert + llama-quantize write."""
    theirs = tmp_path / "theirs.gguf"
    llama_quantize(outputs("llama2", "F16"), theirs,
                   getattr(llama_cpp, f"LLAMA_FTYPE_MOSTLY_{fmt}"))
    ours = quantize(qwodel_bin, model_dir("llama2"), fmt, tmp_path / "direct")
    _, t_ours = read_gguf(ours)
    _, t_theirs = read_gguf(theirs)
    for name, t in t_theirs.items():
        assert t_ours[name].tensor_type == t.tensor_type, name
        assert np.asarray(t_ours[name].data).tobytes() == np.asarray(t.data).tobytes(), name


def test_thread_count_does_not_change_bytes(qwodel_bin, model_dir, tmp_path):
    one = quantize(qwodel_bin, model_dir("qwen3"), "Q4_0", tmp_path / "t1", "--threads", "1")
    three = quantize(qwodel_bin, model_dir("qwen3"), "Q4_0", tmp_path / "t3", "--threads", "3")
    assert one.read_bytes() == three.read_bytes()


def test_requantize_gguf_input_keeps_metadata(qwodel_bin, outputs, tmp_path):
    q8 = outputs("llama3", "Q8_0")
    proc = run_qwodel(qwodel_bin, "quantize", q8, "-f", "Q4_0", "-o", tmp_path, "-v")
    assert "requantizing" in proc.stderr
    out = pathlib.Path(proc.stdout.strip())
    assert out.name == "llama3-q8_0-q4_0.gguf"
    r_in, _ = read_gguf(q8)
    r_out, t_out = read_gguf(out)
    assert kv(r_out, "general.file_type") == 2
    for key in ("tokenizer.ggml.tokens", "tokenizer.ggml.pre", "llama.block_count"):
        assert r_out.fields[key].contents() == r_in.fields[key].contents()
    assert t_out["blk.0.ffn_down.weight"].tensor_type.name == "Q4_0"
    llm = llama_cpp.Llama(model_path=str(out), n_ctx=32, verbose=False)
    assert len(llm.tokenize(b"hello world")) > 0


# ---- tokenization of the written files equals HF -----------------------------------------------

tokenizers = pytest.importorskip("tokenizers")


@pytest.mark.parametrize("key", ["llama2", "llama3", "qwen3"])
def test_tokenization_of_outputs_equals_hf(outputs, model_dir, key):
    """The full files tokenize exactly like HF, with the same (explained) exceptions as the
    vocabulary-only files of test_tokenizer_vs_hf.py."""
    from test_tokenizer_vs_hf import KNOWN_DIFFERENCES, compare_all

    path = outputs(key, "Q8_0")
    hf = tokenizers.Tokenizer.from_file(str(model_dir(key) / "tokenizer.json"))
    reader, _ = read_gguf(path)
    types = list(kv(reader, "tokenizer.ggml.token_type"))
    llm = llama_cpp.Llama(model_path=str(path), vocab_only=True, verbose=False)
    compare_all(llm, hf, types, KNOWN_DIFFERENCES[MODELS[key]["tokenizer"]])
