"""Tests of the fixture generator (hf_fixtures) and the GGUF oracle (gguf_oracle) themselves.

Both are used as ground truth by other tests, so each claim they make is checked here by a
second, independent route: bf16 rounding against exact float64 arithmetic, the Q/K
permutation against rows worked out by hand and against llama.cpp's reshape formula, each
corrupt variant against a checker that looks for its one defect.
"""

from __future__ import annotations

import json
import math
import struct
import sys
import time
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

import gguf_oracle as oracle  # noqa: E402
import hf_fixtures as hf  # noqa: E402

pytestmark = pytest.mark.skipif(
    not (hf.TOKENIZER_DIR / "llama2" / "tokenizer.json").is_file(),
    reason=f"tokenizer fixtures not found at {hf.TOKENIZER_DIR}",
)

LLAMA3_ROPE = {
    "rope_type": "llama3",
    "factor": 8.0,
    "low_freq_factor": 1.0,
    "high_freq_factor": 4.0,
    "original_max_position_embeddings": 8192,
}


# --------------------------------------------------------------------------- helpers


def _header(path: Path):
    blob = path.read_bytes()
    (n,) = struct.unpack("<Q", blob[:8])
    return json.loads(blob[8:8 + n]), 8 + n, blob


def _bf16_reference(x: np.ndarray) -> np.ndarray:
    """Round-to-nearest-even float32 -> bf16 by comparing the two neighbours in float64."""
    out = np.empty(x.size, dtype=np.uint16)
    for i, v in enumerate(np.asarray(x, dtype=np.float32).ravel()):
        bits = struct.unpack("<I", struct.pack("<f", float(v)))[0]
        if math.isnan(v):
            out[i] = (bits >> 16) | 0x40
            continue
        if math.isinf(v):
            out[i] = bits >> 16
            continue
        lo = bits >> 16  # truncation: same sign, magnitude <= |v|
        hi = lo + 1  # next magnitude away from zero

        def value(b):
            if (b & 0x7FFF) == 0x7F80:  # one past the largest finite: 2**128 for rounding purposes
                return math.copysign(2.0 ** 128, v)
            return struct.unpack("<f", struct.pack("<I", b << 16))[0]

        dlo, dhi = abs(float(v) - value(lo)), abs(value(hi) - float(v))
        if dlo < dhi or (dlo == dhi and lo % 2 == 0):
            out[i] = lo
        else:
            out[i] = hi
    return out.reshape(np.shape(x))


@pytest.fixture(scope="module")
def small_dir(tmp_path_factory):
    """A small llama checkpoint (llama2 tokenizer, hidden 64) in one file."""
    d = tmp_path_factory.mktemp("small") / "model"
    return hf.make_checkpoint(d, "llama", tokenizer="llama2", tied=False, hidden=64, heads=2, layers=2)


@pytest.fixture(scope="module")
def small_sharded_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("small_sharded") / "model"
    return hf.make_checkpoint(d, "qwen2", tokenizer="llama2", tied=True, hidden=64, heads=2, layers=2, shards=2)


# --------------------------------------------------------------------------- safetensors


@pytest.mark.parametrize("dtype", ["F32", "F16", "BF16"])
def test_safetensors_roundtrip(tmp_path, dtype):
    rng = np.random.default_rng(1)
    tensors = {
        "b.weight": rng.standard_normal((3, 5)).astype(np.float32),
        "a.bias": rng.standard_normal(7).astype(np.float32) * 1000,
        "scalar": np.array(2.5, dtype=np.float32),
        "empty": np.zeros((0, 4), dtype=np.float32),
    }
    path = tmp_path / "t.safetensors"
    size = hf.write_safetensors(path, tensors, dtype)
    assert size == path.stat().st_size

    header, base, blob = _header(path)
    assert (base - 8) % 8 == 0
    assert blob[8:base].decode().rstrip(" ") == blob[8:base].decode().strip()
    assert list(header)[0] == "__metadata__" and header["__metadata__"] == {"format": "pt"}
    assert [k for k in header if k != "__metadata__"] == list(tensors)  # order kept
    pos = 0
    for name, arr in tensors.items():
        info = header[name]
        assert info["dtype"] == dtype and info["shape"] == list(arr.shape)
        assert info["data_offsets"][0] == pos
        pos = info["data_offsets"][1]
    assert base + pos == len(blob)

    back = hf.read_safetensors(path)
    assert list(back) == list(tensors)
    for name, arr in tensors.items():
        assert back[name].dtype == np.float32 and back[name].shape == arr.shape
        if dtype == "F32":
            expect = arr
        elif dtype == "F16":
            expect = arr.astype(np.float16).astype(np.float32)
        else:
            expect = hf.bf16_bits_to_float32(_bf16_reference(arr)).reshape(arr.shape)
        np.testing.assert_array_equal(back[name], expect)
    # raw bytes are little-endian, row-major
    raw = hf.read_safetensors_raw(path)["b.weight"].data
    if dtype == "F32":
        assert raw == tensors["b.weight"].astype("<f4").tobytes()


def test_bf16_rounding_matches_exact_reference():
    special = np.array(
        [
            0.0, -0.0, 1.0, -1.0, np.inf, -np.inf, np.nan,
            3.4028235e38, -3.4028235e38,  # rounds to +-inf
            1e-45, -1e-45, 1.1754942e-38,  # subnormals
            65504.0, 1.0 / 3.0, math.pi,
        ],
        dtype=np.float32,
    )
    # exact ties: halfway between two bf16 values, even and odd lower neighbours
    ties = np.array([0x3F808000, 0x3F818000, 0xBF808000, 0xBF818000, 0x7F7F8000, 0x00008000, 0x00018000],
                    dtype=np.uint32).view(np.float32)
    rng = np.random.default_rng(7)
    randoms = rng.standard_normal(4000).astype(np.float32) * np.float32(0.02)
    random_bits = rng.integers(0, 2 ** 32, 4000, dtype=np.uint64).astype(np.uint32).view(np.float32)
    x = np.concatenate([special, ties, randoms, random_bits])
    got = hf.float32_to_bf16_bits(x)
    ref = _bf16_reference(x)
    nan = np.isnan(x)
    np.testing.assert_array_equal(got[~nan], ref[~nan])
    assert np.all((got[nan] & 0x7F80) == 0x7F80) and np.all((got[nan] & 0x7F) != 0)
    # the ties by hand: 0x3F80|8000 -> 0x3F80 (even), 0x3F81|8000 -> 0x3F82
    assert list(got[len(special):len(special) + 4]) == [0x3F80, 0x3F82, 0xBF80, 0xBF82]
    assert got[len(special) + 4] == 0x7F80  # halfway above the largest finite -> inf


# --------------------------------------------------------------------------- checkpoints

CASES = [
    ("llama", "llama2", False),
    ("llama", "llama3", True),
    ("mistral", "llama2", False),
    ("qwen2", "qwen3", True),
    ("qwen3", "qwen3", True),
    ("qwen3", "qwen3", False),
]


@pytest.mark.parametrize("family,tokenizer,tied", CASES)
def test_checkpoint_layout(tmp_path, family, tokenizer, tied):
    t0 = time.perf_counter()
    d = hf.make_checkpoint(tmp_path / "m", family, tokenizer=tokenizer, tied=tied)
    elapsed = time.perf_counter() - t0
    assert elapsed < 5.0, f"generation took {elapsed:.1f} s"

    config = json.loads((d / "config.json").read_text())
    arch = {"llama": "LlamaForCausalLM", "mistral": "MistralForCausalLM",
            "qwen2": "Qwen2ForCausalLM", "qwen3": "Qwen3ForCausalLM"}[family]
    assert config["architectures"] == [arch]
    assert config["model_type"] == family
    vocab = hf.tokenizer_vocab_size(tokenizer)
    assert config["vocab_size"] == vocab
    assert config["tie_word_embeddings"] is tied
    assert config["torch_dtype"] == "bfloat16"
    for key in ("hidden_size", "intermediate_size", "num_attention_heads", "num_key_value_heads",
                "num_hidden_layers", "rms_norm_eps", "rope_theta", "max_position_embeddings",
                "bos_token_id", "eos_token_id"):
        assert key in config, key
    assert ("head_dim" in config) == (family == "qwen3" or tokenizer == "llama3")
    if family in ("qwen2", "qwen3"):
        assert config["sliding_window"] is None
    assert "attention_bias" not in config if family == "qwen2" else True

    gen = json.loads((d / "generation_config.json").read_text())
    assert gen["bos_token_id"] == config["bos_token_id"] and gen["eos_token_id"] == config["eos_token_id"]

    for f in ("tokenizer.json", "tokenizer_config.json"):
        assert (d / f).read_bytes() == (hf.TOKENIZER_DIR / tokenizer / f).read_bytes()

    header, base, blob = _header(d / "model.safetensors")
    names = [k for k in header if k != "__metadata__"]
    assert names == sorted(names)
    H, L = config["hidden_size"], config["num_hidden_layers"]
    nh, nkv = config["num_attention_heads"], config["num_key_value_heads"]
    hd = config.get("head_dim", H // nh)
    ff = config["intermediate_size"]
    expect = {"model.embed_tokens.weight": [vocab, H], "model.norm.weight": [H]}
    if not tied:
        expect["lm_head.weight"] = [vocab, H]
    for i in range(L):
        p = f"model.layers.{i}."
        expect.update({
            p + "input_layernorm.weight": [H],
            p + "post_attention_layernorm.weight": [H],
            p + "self_attn.q_proj.weight": [nh * hd, H],
            p + "self_attn.k_proj.weight": [nkv * hd, H],
            p + "self_attn.v_proj.weight": [nkv * hd, H],
            p + "self_attn.o_proj.weight": [H, nh * hd],
            p + "mlp.gate_proj.weight": [ff, H],
            p + "mlp.up_proj.weight": [ff, H],
            p + "mlp.down_proj.weight": [H, ff],
        })
        if family == "qwen2":
            expect.update({p + "self_attn.q_proj.bias": [nh * hd], p + "self_attn.k_proj.bias": [nkv * hd],
                           p + "self_attn.v_proj.bias": [nkv * hd]})
        if family == "qwen3":
            expect.update({p + "self_attn.q_norm.weight": [hd], p + "self_attn.k_norm.weight": [hd]})
    assert {n: header[n]["shape"] for n in names} == expect
    assert all(header[n]["dtype"] == "BF16" for n in names)

    tensors = hf.load_checkpoint(d)
    emb = tensors["model.embed_tokens.weight"]
    assert 0.015 < float(emb.std()) < 0.025 and abs(float(emb.mean())) < 1e-3
    norm = tensors["model.norm.weight"]
    assert abs(float(norm.mean()) - 1.0) < 0.02 and 0.0 < float(norm.std()) < 0.2


def test_vocab_size_matches_tokenizers_library():
    tokenizers = pytest.importorskip("tokenizers")
    for name in hf.TOKENIZERS:
        tok = tokenizers.Tokenizer.from_file(str(hf.TOKENIZER_DIR / name / "tokenizer.json"))
        assert hf.tokenizer_vocab_size(name) == tok.get_vocab_size(with_added_tokens=True)
    assert hf.tokenizer_vocab_size("llama2") == 32000
    assert hf.tokenizer_vocab_size("llama3") == 128256
    assert hf.tokenizer_vocab_size("qwen3") == 151669


def test_vocab_size_larger_allowed_smaller_refused(tmp_path):
    d = hf.make_checkpoint(tmp_path / "big", "qwen2", tokenizer="qwen3", tied=True, hidden=64, heads=2,
                           vocab_size=151936)
    assert json.loads((d / "config.json").read_text())["vocab_size"] == 151936
    assert hf.read_safetensors(d / "model.safetensors")["model.embed_tokens.weight"].shape == (151936, 64)
    with pytest.raises(ValueError):
        hf.make_checkpoint(tmp_path / "small", "qwen2", tokenizer="qwen3", tied=True, vocab_size=151000)


def test_options_reach_config_and_shapes(tmp_path):
    d = hf.make_checkpoint(tmp_path / "m", "llama", tokenizer="llama3", tied=False, dtype="f16", hidden=128,
                           layers=3, heads=8, kv_heads=2, intermediate=320, head_dim=32, rope_scaling=LLAMA3_ROPE,
                           config_overrides={"rms_norm_eps": 1e-6, "pretraining_tp": ...})
    c = json.loads((d / "config.json").read_text())
    assert (c["hidden_size"], c["num_hidden_layers"], c["num_attention_heads"], c["num_key_value_heads"],
            c["intermediate_size"], c["head_dim"]) == (128, 3, 8, 2, 320, 32)
    assert c["rope_scaling"] == LLAMA3_ROPE and c["max_position_embeddings"] == 131072
    assert c["torch_dtype"] == "float16" and c["rms_norm_eps"] == 1e-6 and "pretraining_tp" not in c
    header, _, _ = _header(d / "model.safetensors")
    assert header["model.layers.2.self_attn.k_proj.weight"] == {**header["model.layers.2.self_attn.k_proj.weight"],
                                                                "dtype": "F16", "shape": [64, 128]}


def test_deterministic_and_independent_of_layout(tmp_path):
    a = hf.load_checkpoint(hf.make_checkpoint(tmp_path / "a", "qwen3", tokenizer="llama2", tied=False, hidden=64,
                                              heads=2, layers=3, seed=5))
    b = hf.load_checkpoint(hf.make_checkpoint(tmp_path / "b", "qwen3", tokenizer="llama2", tied=False, hidden=64,
                                              heads=2, layers=3, seed=5, shards=3))
    c = hf.load_checkpoint(hf.make_checkpoint(tmp_path / "c", "qwen3", tokenizer="llama2", tied=True, hidden=64,
                                              heads=2, layers=3, seed=5))
    e = hf.load_checkpoint(hf.make_checkpoint(tmp_path / "e", "qwen3", tokenizer="llama2", tied=False, hidden=64,
                                              heads=2, layers=3, seed=6))
    assert list(a) == list(b)
    for k in a:
        np.testing.assert_array_equal(a[k], b[k])
    assert set(a) - set(c) == {"lm_head.weight"}
    np.testing.assert_array_equal(a["model.embed_tokens.weight"], c["model.embed_tokens.weight"])
    assert not np.array_equal(a["model.embed_tokens.weight"], e["model.embed_tokens.weight"])
    assert not np.array_equal(a["model.embed_tokens.weight"], a["lm_head.weight"])


@pytest.mark.parametrize("shards", [2, 3, 4])
def test_shards_and_index_consistent(tmp_path, shards):
    d = hf.make_checkpoint(tmp_path / "m", "qwen2", tokenizer="llama2", tied=False, hidden=64, heads=2, shards=shards)
    assert not (d / "model.safetensors").exists()
    index = json.loads((d / "model.safetensors.index.json").read_text())
    assert set(index) == {"metadata", "weight_map"}
    wm = index["weight_map"]
    assert list(wm) == sorted(wm)
    files = [f"model-{k:05d}-of-{shards:05d}.safetensors" for k in range(1, shards + 1)]
    assert sorted(set(wm.values())) == files
    assert sorted(p.name for p in d.glob("*.safetensors")) == files

    total = 0
    seen = {}
    layer_of_file = {}
    for f in files:
        header, base, blob = _header(d / f)
        names = [k for k in header if k != "__metadata__"]
        assert names and names == sorted(names)
        for n in names:
            assert wm[n] == f and n not in seen
            seen[n] = f
            b, e = header[n]["data_offsets"]
            total += e - b
            if n.startswith("model.layers."):
                layer_of_file.setdefault(int(n.split(".")[2]), set()).add(f)
    assert set(seen) == set(wm)
    assert index["metadata"]["total_size"] == total
    # a layer is never split across shards; the embedding is in the first, the head in the last
    assert all(len(v) == 1 for v in layer_of_file.values())
    assert wm["model.embed_tokens.weight"] == files[0]
    assert wm["lm_head.weight"] == files[-1] and wm["model.norm.weight"] == files[-1]

    single = hf.load_checkpoint(hf.make_checkpoint(tmp_path / "s", "qwen2", tokenizer="llama2", tied=False,
                                                   hidden=64, heads=2))
    sharded = hf.load_checkpoint(d)
    assert set(single) == set(sharded)
    for k in single:
        np.testing.assert_array_equal(single[k], sharded[k])


def test_too_many_shards_refused(tmp_path):
    with pytest.raises(ValueError):
        hf.make_checkpoint(tmp_path / "m", "llama", tokenizer="llama2", tied=True, hidden=64, heads=2, layers=2,
                           shards=5)


# --------------------------------------------------------------------------- corrupt variants


def _files_equal_except(variant: Path, src: Path, changed: set):
    """Every file of the source not in `changed` is present and byte-identical in the variant."""
    for f in src.iterdir():
        if f.name in changed:
            continue
        assert (variant / f.name).read_bytes() == f.read_bytes(), f.name


def _spans(header):
    return sorted((v["data_offsets"][0], v["data_offsets"][1], k) for k, v in header.items() if k != "__metadata__")


def _numel(shape):
    n = 1
    for s in shape:
        n *= s
    return n


ELEM = {"F32": 4, "F16": 2, "BF16": 2}


def _check_variant(name: str, d: Path, src: Path, root: Path):
    first = sorted(p for p in d.glob("*.safetensors"))
    src_first = sorted(p for p in src.glob("*.safetensors"))
    index_path = d / "model.safetensors.index.json"

    def st_only():
        f = first[0]
        assert f.name == src_first[0].name
        _files_equal_except(d, src, {f.name})
        return f

    if name == "truncated":
        f = st_only()
        header, base, blob = _header(f)
        assert base + max(e for _, e, _ in _spans(header)) > len(blob)
        assert blob == src_first[0].read_bytes()[:len(blob)]
    elif name == "header_len_past_eof":
        f = st_only()
        blob = f.read_bytes()
        (n,) = struct.unpack("<Q", blob[:8])
        assert 8 + n > len(blob) and blob[8:] == src_first[0].read_bytes()[8:]
    elif name == "header_len_overflow":
        f = st_only()
        blob = f.read_bytes()
        (n,) = struct.unpack("<Q", blob[:8])
        assert n == 2 ** 64 - 1 and (8 + n) % 2 ** 64 < 8
    elif name == "header_not_json":
        f = st_only()
        blob, orig = f.read_bytes(), src_first[0].read_bytes()
        assert len(blob) == len(orig) and blob[:8] == orig[:8]
        (n,) = struct.unpack("<Q", blob[:8])
        with pytest.raises(ValueError):
            json.loads(blob[8:8 + n])
        assert blob[8 + n:] == orig[8 + n:]
    elif name == "overlapping_offsets":
        f = st_only()
        header, base, blob = _header(f)
        spans = _spans(header)
        assert any(spans[i + 1][0] < spans[i][1] for i in range(len(spans) - 1))
        assert not any(spans[i + 1][0] > spans[i][1] for i in range(len(spans) - 1))  # no hole
        assert spans[0][0] == 0 and base + spans[-1][1] == len(blob)
        for k, v in header.items():
            if k != "__metadata__":
                assert v["data_offsets"][1] - v["data_offsets"][0] == _numel(v["shape"]) * ELEM[v["dtype"]]
    elif name == "offsets_past_end":
        f = st_only()
        header, base, blob = _header(f)
        assert any(base + e > len(blob) for _, e, _ in _spans(header))
    elif name == "hole_between_tensors":
        f = st_only()
        header, base, blob = _header(f)
        spans = _spans(header)
        assert any(spans[i + 1][0] > spans[i][1] for i in range(len(spans) - 1))
        assert not any(spans[i + 1][0] < spans[i][1] for i in range(len(spans) - 1))
        assert base + spans[-1][1] == len(blob)
        for k, v in header.items():
            if k != "__metadata__":
                assert v["data_offsets"][1] - v["data_offsets"][0] == _numel(v["shape"]) * ELEM[v["dtype"]]
    elif name == "unknown_dtype":
        f = st_only()
        header, _, _ = _header(f)
        assert [v["dtype"] for k, v in header.items() if k != "__metadata__"].count("Q9") == 1
    elif name == "shape_mismatch":
        f = st_only()
        header, _, _ = _header(f)
        bad = [k for k, v in header.items() if k != "__metadata__"
               and v["data_offsets"][1] - v["data_offsets"][0] != _numel(v["shape"]) * ELEM[v["dtype"]]]
        assert len(bad) == 1 and all(s < 2 ** 20 for s in header[bad[0]]["shape"])
    elif name == "dim_overflow":
        f = st_only()
        header, _, _ = _header(f)
        bad = [k for k, v in header.items() if k != "__metadata__"
               and v["data_offsets"][1] - v["data_offsets"][0] != _numel(v["shape"]) * ELEM[v["dtype"]]]
        assert len(bad) == 1
        v = header[bad[0]]
        nbytes = _numel(v["shape"]) * ELEM[v["dtype"]]
        assert nbytes >= 2 ** 64 and nbytes % 2 ** 64 == v["data_offsets"][1] - v["data_offsets"][0]
        assert all(0 <= s < 2 ** 64 for s in v["shape"])
    elif name == "index_missing_shard":
        wm = json.loads(index_path.read_text())["weight_map"]
        missing = [s for s in set(wm.values()) if not (d / s).exists()]
        assert len(missing) == 1
    elif name == "index_outside_dir":
        wm = json.loads(index_path.read_text())["weight_map"]
        outside = {s for s in wm.values() if "/" in s or "\\" in s}
        assert outside == {"../x.safetensors"}
        assert (d / "../x.safetensors").resolve() == (root / "x.safetensors").resolve()
        assert (root / "x.safetensors").is_file()
        hf.read_safetensors_raw(root / "x.safetensors")  # the escaped-to file itself is valid
    elif name == "config_invalid_json":
        _files_equal_except(d, src, {"config.json"})
        with pytest.raises(ValueError):
            json.loads((d / "config.json").read_text())
    elif name == "config_no_architectures":
        _files_equal_except(d, src, {"config.json"})
        cfg = json.loads((d / "config.json").read_text())
        assert "architectures" not in cfg
        src_cfg = json.loads((src / "config.json").read_text())
        del src_cfg["architectures"]
        assert cfg == src_cfg
    elif name == "config_unsupported_arch":
        _files_equal_except(d, src, {"config.json"})
        assert json.loads((d / "config.json").read_text())["architectures"] == ["FooForCausalLM"]
    elif name == "tokenizer_truncated":
        _files_equal_except(d, src, {"tokenizer.json"})
        data = (d / "tokenizer.json").read_bytes()
        assert 0 < len(data) < (src / "tokenizer.json").stat().st_size
        with pytest.raises(ValueError):
            json.loads(data)
    elif name == "duplicate_tensor":
        owners = {}
        for f in first:
            header, _, _ = _header(f)
            for k in header:
                if k != "__metadata__":
                    owners.setdefault(k, []).append(f.name)
        dups = {k: v for k, v in owners.items() if len(v) > 1}
        assert len(dups) == 1 and len(next(iter(dups.values()))) == 2
        for f in first:  # each shard is a well-formed file by itself
            hf.read_safetensors_raw(f)
    else:
        raise AssertionError(f"no checker for variant {name!r}")


@pytest.mark.parametrize("source", ["single", "sharded"])
def test_corrupt_variants_each_have_their_defect(tmp_path, small_dir, small_sharded_dir, source):
    src = small_dir if source == "single" else small_sharded_dir
    before = {f.name: f.read_bytes() for f in src.iterdir()}
    variants = hf.corrupt_variants(src, tmp_path / "bad")
    assert set(variants) == set(hf.CORRUPT_VARIANTS)
    assert len(hf.CORRUPT_VARIANTS) >= 16
    for name, d in variants.items():
        assert d.is_dir() and (d / "tokenizer_config.json").is_file(), name
        _check_variant(name, d, src, tmp_path / "bad")
    # the source is untouched (variants share unchanged files by hard link)
    assert {f.name: f.read_bytes() for f in src.iterdir()} == before
    hf.load_checkpoint(src)

    # the strict reader here rejects every weight-file defect, and accepts the non-weight ones
    weight_defects = {"truncated", "header_len_past_eof", "header_len_overflow", "header_not_json",
                      "overlapping_offsets", "offsets_past_end", "hole_between_tensors", "unknown_dtype",
                      "shape_mismatch", "dim_overflow", "index_missing_shard", "index_outside_dir",
                      "duplicate_tensor"}
    for name, d in variants.items():
        if name in weight_defects:
            with pytest.raises((ValueError, OSError, UnicodeDecodeError)):
                hf.load_checkpoint(d)
        else:
            hf.load_checkpoint(d)


# --------------------------------------------------------------------------- gguf oracle


def _llamacpp_permute(w: np.ndarray, n_head: int, n_head_kv: int | None) -> np.ndarray:
    """llama.cpp's LlamaModel.permute, restated: (H, 2, rows/H/2, ...) with axes 1, 2 swapped."""
    if n_head_kv is not None and n_head != n_head_kv:
        n_head = n_head_kv
    return w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def _tiny_dir(tmp_path: Path, arch: str, *, hidden: int, heads: int, kv_heads: int, head_dim: int,
              extra_config=None, tensors=None) -> Path:
    d = tmp_path / arch
    d.mkdir()
    config = {"architectures": [arch], "hidden_size": hidden, "num_attention_heads": heads,
              "num_key_value_heads": kv_heads, "num_hidden_layers": 1, "head_dim": head_dim,
              "rope_theta": 10000.0, "vocab_size": 3, "tie_word_embeddings": True}
    config.update(extra_config or {})
    (d / "config.json").write_text(json.dumps(config))
    hf.write_safetensors(d / "model.safetensors", tensors, "F32")
    return d


def _row_tagged(rows: int, cols: int) -> np.ndarray:
    """Row r holds r*100 + c, so a row's origin can be read off its values."""
    return (np.arange(rows)[:, None] * 100 + np.arange(cols)[None, :]).astype(np.float32)


def test_oracle_permutation_worked_by_hand(tmp_path):
    # 2 query heads of head_dim 4, 1 key/value head, hidden 8.
    # Within a head of 4 rows (hd/2 = 2), output row 2j+k comes from input row 2k+j:
    #   out 0 <- in 0 (j0,k0), out 1 <- in 2 (j0,k1), out 2 <- in 1 (j1,k0), out 3 <- in 3 (j1,k1)
    q = _row_tagged(8, 8)
    k = _row_tagged(4, 8)
    qb = np.arange(8, dtype=np.float32)
    kb = np.arange(4, dtype=np.float32) + 10
    v = _row_tagged(4, 8) + 0.5
    tensors = {
        "model.embed_tokens.weight": _row_tagged(3, 8),
        "model.layers.0.self_attn.q_proj.weight": q,
        "model.layers.0.self_attn.q_proj.bias": qb,
        "model.layers.0.self_attn.k_proj.weight": k,
        "model.layers.0.self_attn.k_proj.bias": kb,
        "model.layers.0.self_attn.v_proj.weight": v,
        "model.layers.0.self_attn.o_proj.weight": _row_tagged(8, 8),
        "model.layers.0.input_layernorm.weight": np.ones(8, np.float32),
        "model.norm.weight": np.ones(8, np.float32),
    }
    d = _tiny_dir(tmp_path, "LlamaForCausalLM", hidden=8, heads=2, kv_heads=1, head_dim=4, tensors=tensors)
    exp = oracle.expected_tensors(d)

    q_rows = [0, 2, 1, 3, 4, 6, 5, 7]
    k_rows = [0, 2, 1, 3]
    aq, tq = exp["blk.0.attn_q.weight"]
    assert tq == "F16" and aq.shape == (8, 8)
    np.testing.assert_array_equal(aq[:, 0] // 100, q_rows)
    np.testing.assert_array_equal(aq, q[q_rows])
    np.testing.assert_array_equal(exp["blk.0.attn_q.bias"][0], [0, 2, 1, 3, 4, 6, 5, 7])
    assert exp["blk.0.attn_q.bias"][1] == "F32"
    np.testing.assert_array_equal(exp["blk.0.attn_k.weight"][0], k[k_rows])
    np.testing.assert_array_equal(exp["blk.0.attn_k.bias"][0], [10, 12, 11, 13])
    np.testing.assert_array_equal(exp["blk.0.attn_v.weight"][0], v)  # V and O are not permuted
    np.testing.assert_array_equal(exp["blk.0.attn_output.weight"][0], _row_tagged(8, 8))
    assert "output.weight" not in exp and "rope_freqs.weight" not in exp

    # head_dim 8 by hand: rows [0, 4, 1, 5, 2, 6, 3, 7] in each head
    w = _row_tagged(16, 2)
    np.testing.assert_array_equal(oracle.permute_rows(w, 2)[:, 0] // 100,
                                  [0, 4, 1, 5, 2, 6, 3, 7, 8, 12, 9, 13, 10, 14, 11, 15])


def test_oracle_permutation_equals_llamacpp_formula():
    rng = np.random.default_rng(3)
    for n_head, n_kv, hd, cols in [(4, 4, 64, 32), (8, 2, 16, 24), (6, 3, 10, 5), (1, 1, 2, 3)]:
        q = rng.standard_normal((n_head * hd, cols)).astype(np.float32)
        k = rng.standard_normal((n_kv * hd, cols)).astype(np.float32)
        np.testing.assert_array_equal(oracle.permute_rows(q, n_head), _llamacpp_permute(q, n_head, n_head))
        np.testing.assert_array_equal(oracle.permute_rows(k, n_kv), _llamacpp_permute(k, n_head, n_kv))
        b = rng.standard_normal(n_kv * hd).astype(np.float32)
        np.testing.assert_array_equal(oracle.permute_rows(b, n_kv), _llamacpp_permute(b, n_head, n_kv))


def test_oracle_names_and_types(tmp_path):
    d = hf.make_checkpoint(tmp_path / "q2", "qwen2", tokenizer="llama2", tied=False, hidden=64, heads=2, layers=2,
                           shards=2)
    src = hf.load_checkpoint(d)
    exp = oracle.expected_tensors(d)
    assert len(exp) == len(src)  # one GGUF tensor per HF tensor, nothing added or dropped
    assert list(exp)[:1] == ["token_embd.weight"]  # shard 1 first, header order within
    for name, (arr, qtype) in exp.items():
        assert arr.dtype == np.float32
        if name.endswith(".bias") or name.endswith("_norm.weight"):
            assert qtype == "F32", name
        else:
            assert qtype == "F16", name
    # qwen2 is not permuted: values pass through unchanged
    np.testing.assert_array_equal(exp["blk.1.attn_q.weight"][0], src["model.layers.1.self_attn.q_proj.weight"])
    np.testing.assert_array_equal(exp["blk.0.attn_k.bias"][0], src["model.layers.0.self_attn.k_proj.bias"])
    np.testing.assert_array_equal(exp["output.weight"][0], src["lm_head.weight"])
    np.testing.assert_array_equal(exp["blk.0.ffn_down.weight"][0], src["model.layers.0.mlp.down_proj.weight"])
    assert exp["blk.0.ffn_down.weight"][0].shape == (64, 256)
    assert set(exp) == {oracle.gguf_name(n) for n in src}

    d3 = hf.make_checkpoint(tmp_path / "q3", "qwen3", tokenizer="llama2", tied=True, hidden=64, heads=2, layers=1)
    exp3 = oracle.expected_tensors(d3, outtype="BF16")
    assert exp3["blk.0.attn_q_norm.weight"][1] == "F32" and exp3["blk.0.attn_k_norm.weight"][0].shape == (32,)
    assert exp3["token_embd.weight"][1] == "BF16" and "output.weight" not in exp3
    assert oracle.expected_tensors(d3, outtype="F32")["blk.0.ffn_up.weight"][1] == "F32"
    assert oracle.expected_tensors(d3, outtype="Q8_0")["blk.0.ffn_up.weight"][1] == "Q8_0"

    dm = hf.make_checkpoint(tmp_path / "m", "mistral", tokenizer="llama2", tied=False, hidden=64, heads=4,
                            kv_heads=2, layers=1)
    srcm = hf.load_checkpoint(dm)
    expm = oracle.expected_tensors(dm)
    np.testing.assert_array_equal(expm["blk.0.attn_k.weight"][0],
                                  _llamacpp_permute(srcm["model.layers.0.self_attn.k_proj.weight"], 4, 2))
    np.testing.assert_array_equal(expm["blk.0.attn_q.weight"][0],
                                  _llamacpp_permute(srcm["model.layers.0.self_attn.q_proj.weight"], 4, 4))
    assert "rope_freqs.weight" not in expm


def test_oracle_refuses_unknown_architecture(tmp_path, small_dir):
    variants = hf.corrupt_variants(small_dir, tmp_path / "bad")
    with pytest.raises(ValueError):
        oracle.expected_tensors(variants["config_unsupported_arch"])
    with pytest.raises(ValueError):
        oracle.expected_tensors(variants["config_no_architectures"])


def _rope_freqs_f64(theta, dim, factor, low, high, orig):
    out = []
    for i in range(0, dim, 2):
        freq = 1.0 / theta ** (i / dim)
        wl = 2 * math.pi / freq
        if wl < orig / high:
            out.append(1.0)
        elif wl > orig / low:
            out.append(factor)
        else:
            s = (orig / wl - low) / (high - low)
            out.append(1.0 / ((1 - s) / factor + s))
    return np.array(out)


def test_oracle_llama3_rope_freqs(tmp_path):
    d = hf.make_checkpoint(tmp_path / "l3", "llama", tokenizer="llama3", tied=True, hidden=256, heads=2,
                           layers=1, rope_scaling=LLAMA3_ROPE)  # head_dim 128, theta 500000
    exp = oracle.expected_tensors(d)
    assert list(exp)[0] == "rope_freqs.weight"
    freqs, qtype = exp["rope_freqs.weight"]
    assert qtype == "F32" and freqs.shape == (64,) and freqs.dtype == np.float32
    ref = _rope_freqs_f64(500000.0, 128, 8.0, 1.0, 4.0, 8192.0)
    np.testing.assert_allclose(freqs, ref, rtol=2e-6)
    # by hand: the fastest rotations keep factor 1, the slowest get the full factor 8, and the
    # band between wavelengths 2048 and 8192 is smoothed, strictly between the two
    assert freqs[0] == 1.0 and freqs[-1] == 8.0
    wl = 2 * math.pi * 500000.0 ** (np.arange(0, 128, 2) / 128)
    band = (wl >= 2048) & (wl <= 8192)
    assert band.any() and np.all((freqs[band] > 1) & (freqs[band] < 8))
    assert np.all(np.diff(freqs) >= 0)

    # the converter reads original_max_position_embeddings from the top level of the config
    cfg = json.loads((d / "config.json").read_text())
    cfg["rope_scaling"] = {**LLAMA3_ROPE, "original_max_position_embeddings": 4096}
    (d / "config.json").write_text(json.dumps(cfg))
    np.testing.assert_allclose(oracle.expected_tensors(d)["rope_freqs.weight"][0], ref, rtol=2e-6)
    cfg["original_max_position_embeddings"] = 4096
    (d / "config.json").write_text(json.dumps(cfg))
    np.testing.assert_allclose(oracle.expected_tensors(d)["rope_freqs.weight"][0],
                               _rope_freqs_f64(500000.0, 128, 8.0, 1.0, 4.0, 4096.0), rtol=2e-6)

    # no llama3 scaling, or a qwen model: no rope_freqs
    d2 = hf.make_checkpoint(tmp_path / "l3b", "llama", tokenizer="llama3", tied=True, hidden=64, heads=2, layers=1)
    assert "rope_freqs.weight" not in oracle.expected_tensors(d2)
    d3 = hf.make_checkpoint(tmp_path / "q3", "qwen3", tokenizer="llama2", tied=True, hidden=64, heads=2, layers=1,
                            rope_scaling=LLAMA3_ROPE)
    assert "rope_freqs.weight" not in oracle.expected_tensors(d3)


def test_oracle_stored_values():
    x = np.array([1.0, 1.0 + 2 ** -11, 1.0 + 3 * 2 ** -11, 70000.0, 1e-8], dtype=np.float32)
    np.testing.assert_array_equal(oracle.stored_values(x, "F32"), x)
    np.testing.assert_array_equal(oracle.stored_values(x, "F16"), [1.0, 1.0, 1.0 + 2 ** -9, np.inf, 0.0])
    np.testing.assert_array_equal(oracle.stored_values(x, "BF16")[:3], [1.0, 1.0, 1.0])


def test_oracle_shapes_are_what_ggufreader_gives(tmp_path):
    """Write the oracle's tensors with gguf's own writer and read them back with GGUFReader."""
    gguf = pytest.importorskip("gguf")
    d = hf.make_checkpoint(tmp_path / "m", "llama", tokenizer="llama2", tied=False, hidden=64, heads=2, layers=1,
                           dtype="f32")
    exp = oracle.expected_tensors(d)
    path = tmp_path / "o.gguf"
    w = gguf.GGUFWriter(str(path), "llama")
    for name, (arr, qtype) in exp.items():
        data = arr if qtype == "F32" else arr.astype(np.float16)
        w.add_tensor(name, data)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    r = gguf.GGUFReader(str(path))
    got = {t.name: t for t in r.tensors}
    assert list(got) == list(exp)
    for name, (arr, qtype) in exp.items():
        t = got[name]
        assert t.tensor_type.name == qtype
        assert tuple(t.data.shape) == arr.shape, name
        assert [int(x) for x in t.shape] == list(reversed(arr.shape))  # ne is the numpy shape reversed
        np.testing.assert_array_equal(np.asarray(t.data, dtype=np.float32), oracle.stored_values(arr, qtype))


def test_llamacpp_reader_reads_our_files(tmp_path):
    """gguf.utility.SafetensorsLocal (what convert_hf_to_gguf.py reads with) sees the same tensors."""
    gguf = pytest.importorskip("gguf")
    utility = pytest.importorskip("gguf.utility")
    if not hasattr(utility, "SafetensorsLocal"):
        pytest.skip(f"gguf {getattr(gguf, '__version__', '?')} has no SafetensorsLocal")
    d = hf.make_checkpoint(tmp_path / "m", "qwen3", tokenizer="llama2", tied=False, hidden=64, heads=2, shards=2)
    ours = hf.load_checkpoint(d)
    seen = {}
    for f in sorted(d.glob("*.safetensors")):
        with utility.SafetensorsLocal(f) as tensors:
            for name, t in tensors.items():
                assert t.dtype == "BF16"
                raw = np.asarray(t.mmap_bytes()).view(np.uint16).reshape(t.shape)
                seen[name] = hf.bf16_bits_to_float32(raw).reshape(t.shape)
    assert set(seen) == set(ours)
    for name in ours:
        np.testing.assert_array_equal(seen[name], ours[name])


def test_oracle_order_follows_converter_not_header(tmp_path):
    """Within a file the converter takes tensors sorted by name, whatever the header order."""
    tensors = {
        "model.norm.weight": np.ones(8, np.float32),
        "model.layers.0.input_layernorm.weight": np.ones(8, np.float32),
        "model.embed_tokens.weight": _row_tagged(3, 8),
        "lm_head.weight": _row_tagged(3, 8),
    }
    d = _tiny_dir(tmp_path, "Qwen2ForCausalLM", hidden=8, heads=2, kv_heads=1, head_dim=4, tensors=tensors,
                  extra_config={"tie_word_embeddings": False})
    assert list(oracle.expected_tensors(d)) == ["output.weight", "token_embd.weight", "blk.0.attn_norm.weight",
                                                "output_norm.weight"]
