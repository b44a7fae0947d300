"""GGUF back to a HuggingFace model for Gemma 1/2/3, Phi-3 and the MoE families, judged by
transformers.

Each family's tiny checkpoint (hf_fixtures) is written by the built `qwodel` as a GGUF in the
checkpoint's own float type (and as Q8_0); `model_export` (tests/tools) opens the GGUF through
the model layer's HuggingFace view and writes model.safetensors, config.json and the tokenizer.
Then, with tools qwodel's authors did not write:

* tensors: the source's names, none missing and none extra (MoE experts unstacked from the 3-D
  GGUF tensors, Phi-3's qkv/gate_up still fused); matrices bit for bit in the source dtype;
  vectors equal as values, except Gemma's norms, which llama.cpp's converter stores as w + 1
  rounded (in f16 for f16 checkpoints, in f32 otherwise): they come back as that rounding minus
  1, computed here with numpy (exact for bf16 checkpoints, within half an ulp of 1 otherwise);
* config: transformers' AutoConfig reads both config.json files to the same dict, every key but
  IGNORED_CONFIG_KEYS (each with its reason);
* model: transformers' AutoModelForCausalLM loads the exported directory with no missing,
  unexpected or mismatched weights, and its logits equal the source checkpoint's exactly (Gemma:
  the source with the converter-rounded norms, exactly; the source itself within 0.5 %);
* Q8_0 (qwodel's, and llama.cpp's own quantizer's from qwodel's F16): the exported dequantized
  model loads and its logits are within quantization error;
* tokenizer: the rebuilt tokenizer.json encodes as the checkpoint's (HF `tokenizers`);
* the float GGUF as a quantization source gives the same Q8_0 file as the checkpoint (read with
  the `gguf` package); damaged MoE GGUFs are errors naming the file, never crashes.
"""
from __future__ import annotations

import json
import pathlib
import subprocess

import numpy as np
import pytest

import hf_fixtures
from conftest import run_qwodel, tool

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
tokenizers = pytest.importorskip("tokenizers")
import tokenizer_samples  # noqa: E402

transformers.logging.set_verbosity_error()

# The smallest shapes that still exercise each family's quirks, with values that differ from the
# HF classes' defaults where a key could otherwise go missing unnoticed. Gemma 2/3 get a sliding
# window of 4 so that the 12-token logits depend on it, Gemma 2 soft-caps that bite; Gemma 3 has
# 6 layers, so that layer 5 is a global one (rope base 1e6 with linear scaling) among local ones
# (rope_local_base_freq, not the class default).
FAMILIES = {
    "gemma": dict(family="gemma", dtype="bf16", hidden=64, heads=2, kv_heads=1, layers=2,
                  intermediate=128),
    "gemma2": dict(family="gemma2", dtype="f32", hidden=64, heads=4, kv_heads=2, layers=2,
                   intermediate=128, config_overrides={"sliding_window": 4,
                                                       "attn_logit_softcapping": 5.0,
                                                       "final_logit_softcapping": 2.0}),
    "gemma3": dict(family="gemma3", dtype="f16", hidden=64, heads=2, kv_heads=1, layers=6,
                   intermediate=128, head_dim=32, tied=False,
                   rope_scaling={"factor": 8.0, "rope_type": "linear"},
                   config_overrides={"sliding_window": 4, "rope_local_base_freq": 20000.0}),
    # Phi-3-mini-128k: fused qkv and gate_up, longrope factors
    "phi3": dict(family="phi3", dtype="bf16", hidden=64, heads=2, layers=1, intermediate=128,
                 rope_scaling=hf_fixtures.phi3_longrope(32)),
    # Phi-3-mini-4k: no rope scaling; half of each head rotated (as Phi-4-mini does), which
    # GGUF keeps as rope.dimension_count
    "phi3_4k": dict(family="phi3", dtype="bf16", hidden=64, heads=2, layers=1, intermediate=128,
                    n_ctx=4096, config_overrides={"sliding_window": 2047,
                                                  "max_position_embeddings": 4096,
                                                  "partial_rotary_factor": 0.5}),
    "mixtral": dict(family="mixtral", tokenizer="llama2", tied=True, dtype="bf16", hidden=64,
                    heads=4, kv_heads=2, intermediate=64, layers=2),
    "qwen2_moe": dict(family="qwen2_moe", tokenizer="llama2", tied=False, dtype="f16", hidden=64,
                      heads=4, kv_heads=4, intermediate=64, moe_intermediate=32,
                      shared_intermediate=64, layers=2),
    "qwen3_moe": dict(family="qwen3_moe", tokenizer="llama2", tied=True, dtype="bf16", hidden=64,
                      heads=4, kv_heads=2, intermediate=64, moe_intermediate=32, layers=2),
}
GEMMAS = ("gemma", "gemma2", "gemma3")
NATIVE = {"bfloat16": "BF16", "float16": "F16", "float32": "F32"}

# AutoConfig keys the comparison leaves out, and why: none of them changes what the model
# computes from its weights.
IGNORED_CONFIG_KEYS = {
    "_name_or_path": "the directory loaded from",
    "transformers_version": "the writer's version",
    "cache_implementation": "Gemma 2/3's generation cache default ('hybrid'), not the network; "
                            "GGUF does not keep it",
    "router_aux_loss_coef": "a training loss weight (Mixtral's published 0.02); GGUF does not "
                            "keep it",
    "max_window_layers": "read only when use_sliding_window is true, which it is not for these "
                         "Qwen MoE models (the derived layer_types are compared)",
}


# Expert routers (and Qwen2-MoE's shared-expert gate), which the converter writes as F32.
ROUTERS = ("block_sparse_moe.gate.weight", "mlp.gate.weight", "mlp.shared_expert_gate.weight")


def _make(out, kwargs):
    kwargs = dict(kwargs)
    family = kwargs.pop("family")
    if family in hf_fixtures.DENSE_FAMILIES:
        return hf_fixtures.make_dense_checkpoint(out, family, **kwargs)
    return hf_fixtures.make_checkpoint(out, family, **kwargs)


@pytest.fixture(scope="module")
def exported(qwodel_bin, tmp_path_factory):
    """exported(name, fmt) -> (checkpoint dir, GGUF path, exported dir), made once. fmt None is
    the checkpoint's own float type."""
    root = tmp_path_factory.mktemp("families")
    cache: dict = {}

    def get(name, fmt=None):
        if name not in cache:
            cache[name] = _make(root / "ck" / name, FAMILIES[name])
        src = cache[name]
        fmt = fmt or NATIVE[json.loads((src / "config.json").read_text())["torch_dtype"]]
        if (name, fmt) not in cache:
            proc = run_qwodel(qwodel_bin, "quantize", src, "-f", fmt, "-o", root / "gguf" / name,
                              "-q")
            path = pathlib.Path(proc.stdout.strip())
            out = root / "hf" / f"{name}-{fmt}"
            res = subprocess.run([str(tool("model_export")), str(path), str(out)],
                                 capture_output=True, text=True, timeout=300)
            assert res.returncode == 0, res.stderr
            cache[name, fmt] = (src, path, out)
        return cache[name, fmt]

    return get


def _gemma_norm_back(name: str, w: np.ndarray, torch_dtype: str) -> np.ndarray:
    """What a Gemma norm becomes through llama.cpp's converter and back: w + 1 rounded as the
    converter's torch addition rounds it (f16 for f16 checkpoints, f32 otherwise), minus 1."""
    if torch_dtype == "float16":
        shifted = (w.astype(np.float16) + np.float16(1)).astype(np.float32)
    else:
        shifted = w.astype(np.float32) + np.float32(1)
    return shifted - np.float32(1)


def _is_gemma_norm(family: str, hf_name: str) -> bool:
    return family in GEMMAS and hf_name.endswith("norm.weight")


# ---- (1) tensors -----------------------------------------------------------------------------

@pytest.mark.parametrize("name", list(FAMILIES))
def test_float_gguf_gives_the_source_tensors_back(exported, name):
    src, _, out = exported(name)
    family = FAMILIES[name]["family"]
    torch_dtype = json.loads((src / "config.json").read_text())["torch_dtype"]
    got = hf_fixtures.read_safetensors_raw(out / "model.safetensors")
    want = {}
    for f in sorted(src.glob("*.safetensors")):
        want.update(hf_fixtures.read_safetensors_raw(f))
    assert sorted(got) == sorted(want)
    for tname, w in want.items():
        g = got[tname]
        assert g.shape == w.shape, tname
        if _is_gemma_norm(family, tname):
            source = hf_fixtures._decode(w)
            expected = _gemma_norm_back(tname, source, torch_dtype)
            np.testing.assert_array_equal(hf_fixtures._decode(g), expected, err_msg=tname)
            if torch_dtype == "bfloat16":
                # 8 significant bits fit beside the 1 in f32: nothing was lost
                np.testing.assert_array_equal(expected, source, err_msg=tname)
            else:
                ulp_half = 2.0 ** -11 if torch_dtype == "float16" else 2.0 ** -24
                assert np.max(np.abs(expected - source)) <= ulp_half, tname
        elif len(w.shape) >= 2 and not tname.endswith(ROUTERS):
            assert g.dtype == w.dtype and g.data == w.data, tname
        else:
            # vectors and MoE routers are F32 in GGUF (the converter's rule); bf16/f16 -> f32
            # is exact
            assert g.dtype in (w.dtype, "F32"), tname
            np.testing.assert_array_equal(hf_fixtures._decode(g), hf_fixtures._decode(w),
                                          err_msg=tname)


# ---- (2) config ------------------------------------------------------------------------------

def _config_dict(path) -> dict:
    return transformers.AutoConfig.from_pretrained(str(path)).to_dict()


def _without_legacy_type(d: dict) -> dict:
    """rope_parameters keeps a legacy "type" key beside "rope_type" when the config spelled it
    that way (Phi-3's published config does); both say the same."""
    rp = d.get("rope_parameters")
    if isinstance(rp, dict) and "type" in rp:
        assert rp["type"] == rp.get("rope_type"), rp
        d["rope_parameters"] = {k: v for k, v in rp.items() if k != "type"}
    return d


@pytest.mark.parametrize("name", list(FAMILIES))
def test_config_reads_as_the_source_config(exported, name):
    src, _, out = exported(name)
    want = _without_legacy_type(_config_dict(src))
    got = _without_legacy_type(_config_dict(out))
    differ = {k: (want.get(k, "<absent>"), got.get(k, "<absent>"))
              for k in sorted(set(want) | set(got))
              if k not in IGNORED_CONFIG_KEYS and want.get(k, "<absent>") != got.get(k, "<absent>")}
    assert not differ, differ
    raw = json.loads((out / "config.json").read_text())
    assert raw["architectures"] == json.loads((src / "config.json").read_text())["architectures"]


# ---- (3) transformers computes the same model ------------------------------------------------

TOKEN_IDS = [2, 5, 17, 42, 100, 7, 300, 11, 64, 9, 250, 33]


def _load(path):
    model, info = transformers.AutoModelForCausalLM.from_pretrained(
        str(path), dtype=torch.float32, output_loading_info=True)
    problems = {k: v for k, v in info.items() if v}
    assert not problems, (path, problems)
    model.eval()
    return model


def _logits(model) -> np.ndarray:
    with torch.no_grad():
        return model(torch.tensor([TOKEN_IDS])).logits[0].numpy()


@pytest.mark.parametrize("name", list(FAMILIES))
def test_transformers_logits_equal_the_source(exported, name):
    src, _, out = exported(name)
    family = FAMILIES[name]["family"]
    torch_dtype = json.loads((src / "config.json").read_text())["torch_dtype"]
    original = _load(src)
    rebuilt = _load(out)
    assert type(rebuilt) is type(original)
    want = _logits(original)
    got = _logits(rebuilt)
    if family in GEMMAS:
        # the source with its norms rounded as the converter rounds them computes exactly what
        # the export does
        # (near the source: each norm is off by at most half an f16 ulp of 1, 2^-11)
        scale = float(np.max(np.abs(want)))
        assert np.max(np.abs(got - want)) <= 5e-3 * scale
        with torch.no_grad():
            for pname, p in original.named_parameters():
                if _is_gemma_norm(family, pname):
                    back = _gemma_norm_back(pname, p.detach().numpy(), torch_dtype)
                    p.copy_(torch.from_numpy(back))
        want = _logits(original)
    np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("name", ["gemma2", "gemma3", "phi3", "mixtral", "qwen2_moe",
                                  "qwen3_moe"])
def test_q8_0_gguf_loads_with_logits_near_the_source(exported, name):
    src, path, out = exported(name, "Q8_0")
    want = _logits(_load(src))
    got = _logits(_load(out))
    rel_rms = float(np.sqrt(np.mean((got - want) ** 2) / np.mean(want ** 2)))
    # Q8_0 gives about 1-2 % here; a wrong layout, permutation or config gives ~100 %
    assert rel_rms < 0.05, rel_rms


# ---- tokenizer -------------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["gemma", "gemma3", "phi3"])
def test_tokenizer_json_encodes_like_the_source(exported, name):
    src, _, out = exported(name)
    original = tokenizers.Tokenizer.from_file(str(src / "tokenizer.json"))
    rebuilt = tokenizers.Tokenizer.from_file(str(out / "tokenizer.json"))
    assert rebuilt.get_vocab(with_added_tokens=True) == original.get_vocab(with_added_tokens=True)
    tok_config = json.loads((src / "tokenizer_config.json").read_text())
    bos_id = original.token_to_id(tok_config["bos_token"])
    # the fixture's Gemma tokenizer.json has no post-processor; its tokenizer_config asks for
    # <bos>, which GGUF keeps as add_bos_token and the rebuilt file's post-processor adds
    adds_bos = original.encode("x").ids[:1] == [bos_id]
    differ = []
    for text in tokenizer_samples.SAMPLES:
        plain = original.encode(text, add_special_tokens=False).ids
        with_specials = (original.encode(text).ids if adds_bos or not tok_config.get(
            "add_bos_token") else [bos_id] + plain)
        if rebuilt.encode(text, add_special_tokens=False).ids != plain or \
                rebuilt.encode(text).ids != with_specials:
            differ.append(text)
        assert rebuilt.decode(plain) == original.decode(plain), text
    assert not differ, differ[:5]


# ---- a GGUF qwodel did not write -------------------------------------------------------------

@pytest.mark.parametrize("name", ["gemma3", "qwen2_moe"])
def test_llama_cpp_quantized_gguf_loads_with_logits_near_the_source(exported, tmp_path, name):
    """llama.cpp's own quantizer (Q8_0 from qwodel's F16) lays out the file its way: Qwen2-MoE's
    shared-expert gate becomes a vector, and the experts stay stacked."""
    import ctypes
    llama_cpp = pytest.importorskip("llama_cpp")
    src, f16, _ = exported(name, "F16")
    path = tmp_path / f"{name}-q8_0.gguf"
    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = llama_cpp.LLAMA_FTYPE_MOSTLY_Q8_0
    params.nthread = 2
    assert llama_cpp.llama_model_quantize(str(f16).encode(), str(path).encode(),
                                          ctypes.byref(params)) == 0
    out = tmp_path / "hf"
    res = subprocess.run([str(tool("model_export")), str(path), str(out)], capture_output=True,
                         text=True, timeout=300)
    assert res.returncode == 0, res.stderr
    want = _logits(_load(src))
    got = _logits(_load(out))
    rel_rms = float(np.sqrt(np.mean((got - want) ** 2) / np.mean(want ** 2)))
    assert rel_rms < 0.05, rel_rms


# ---- damaged MoE GGUFs: an error naming the file, never a crash -------------------------------

def test_damaged_moe_gguf_is_an_error_not_a_crash(exported, tmp_path):
    """Random bytes changed in the metadata and tensor table of a MoE GGUF (expert counts,
    shapes, types, offsets among them): model_export (built with ASan/UBSan in the test build)
    either exports or fails with a message; it never crashes."""
    gguf = pytest.importorskip("gguf")
    _, path, _ = exported("qwen2_moe", "Q8_0")
    data = path.read_bytes()
    header_end = gguf.GGUFReader(str(path)).data_offset
    rng = np.random.default_rng(5)
    outcomes = {0: 0, 1: 0}
    for i in range(25):
        bad = bytearray(data)
        for pos in rng.integers(0, header_end, size=4):
            bad[pos] = int(rng.integers(0, 256))
        src = tmp_path / f"bad{i}.gguf"
        src.write_bytes(bytes(bad))
        res = subprocess.run([str(tool("model_export")), str(src), str(tmp_path / f"out{i}")],
                             capture_output=True, text=True, timeout=120)
        assert res.returncode in (0, 1), (i, res.returncode, res.stderr[-2000:])
        assert "Sanitizer" not in res.stderr and "runtime error" not in res.stderr, res.stderr
        if res.returncode == 1:
            assert f"bad{i}.gguf" in res.stderr, res.stderr
        outcomes[res.returncode] += 1
        src.unlink()
    assert outcomes[1] > 0  # the damage was seen


@pytest.mark.parametrize("count, message", [(3, "should stack 3 experts"),
                                            (0, "stacks experts, but the model has no "
                                                "expert_count"),
                                            (9, "should stack 9 experts")])
def test_expert_count_that_does_not_fit_the_stack_is_named(exported, tmp_path, count, message):
    _, path, _ = exported("qwen2_moe", "Q8_0")
    data = bytearray(path.read_bytes())
    key = b"qwen2moe.expert_count"
    at = data.index(key) + len(key)
    assert int.from_bytes(data[at:at + 4], "little") == 4  # GGUF type uint32, then the value
    data[at + 4:at + 8] = count.to_bytes(4, "little")
    bad = tmp_path / "count.gguf"
    bad.write_bytes(bytes(data))
    res = subprocess.run([str(tool("model_export")), str(bad), str(tmp_path / "out")],
                         capture_output=True, text=True, timeout=120)
    assert res.returncode == 1, res.stderr
    assert "count.gguf" in res.stderr and "ffn_" in res.stderr and message in res.stderr, \
        res.stderr
    assert not (tmp_path / "out" / "model.safetensors").exists()


# ---- a GGUF source quantizes as its checkpoint does -----------------------------------------

def _gguf_contents(path):
    gguf = pytest.importorskip("gguf")
    reader = gguf.GGUFReader(str(path))
    fields = {k: f.contents() for k, f in reader.fields.items()
              if not k.startswith("GGUF.") and k != "general.name"}
    tensors = {t.name: (t.tensor_type.name, bytes(t.data)) for t in reader.tensors}
    return fields, tensors


@pytest.mark.parametrize("name", [n for n in FAMILIES if n != "phi3_4k"])  # phi3 has its layout
def test_float_gguf_source_quantizes_like_the_checkpoint(qwodel_bin, exported, tmp_path, name):
    """The float GGUF as the source of a Q8_0 quantization (through the same HF view) gives the
    file the checkpoint gives, key for key and byte for byte: experts restacked, Gemma's norms
    shifted back to the very floats llama.cpp's converter stores. The checkpoint's Q8_0 is what
    test_arch_families / test_moe_families compare with llama.cpp."""
    _, from_checkpoint, _ = exported(name, "Q8_0")
    _, native, _ = exported(name)
    proc = run_qwodel(qwodel_bin, "quantize", native, "-f", "Q8_0", "-o", tmp_path, "-q")
    fields_a, tensors_a = _gguf_contents(from_checkpoint)
    fields_b, tensors_b = _gguf_contents(pathlib.Path(proc.stdout.strip()))
    assert fields_b == fields_a
    assert sorted(tensors_b) == sorted(tensors_a)
    for tname, want in tensors_a.items():
        assert tensors_b[tname] == want, tname
