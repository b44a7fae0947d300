"""Mixture-of-experts checkpoints through the gguf backend: Mixtral, Qwen2-MoE, Qwen3-MoE.

HF checkpoints store one 2-D tensor per expert; llama.cpp's converter stacks each layer's experts
into one 3-D tensor (numpy shape [n_expert, rows, cols], GGUF ne {cols, rows, n_expert}). The
judges here are tools qwodel did not write:

* stacking: the F16 output's blk.N.ffn_{gate,up,down}_exps equal the source experts stacked with
  numpy (read back with the `gguf` package), routers and Qwen2-MoE's shared-expert gate are f32;
* metadata: the keys and GGUF value types llama.cpp's converter writes (conversion/base.py and
  qwen.py of the llama.cpp that llama-cpp-python 0.3.36 vendors): expert_count from
  num_local_experts (Mixtral) or num_experts (Qwen), expert_used_count, and for the Qwen MoE
  classes only expert_feed_forward_length / expert_shared_feed_forward_length, all uint32;
  no key for norm_topk_prob (llama.cpp fixes it per architecture);
* llama.cpp loads the F16 and Q4_K_M outputs and generates;
* llama.cpp's own quantizer, run on qwodel's F16 output, writes the same Q4_K_M file as qwodel
  does straight from the checkpoint: every tensor's type and bytes (the routers stay f32);
* memory: peak RSS does not grow with the size of the experts (they stream row by row).
"""
from __future__ import annotations

import ctypes
import json
import pathlib
import shutil
import subprocess

import numpy as np
import pytest

import hf_fixtures
from conftest import run_qwodel

gguf = pytest.importorskip("gguf")
llama_cpp = pytest.importorskip("llama_cpp")

# Small but real: 4 experts, 2 used, hidden 256 so k-quants apply, 2 layers. The llama2
# tokenizer (32000 rows) and tied embeddings where llama.cpp allows them (Qwen2-MoE needs
# output.weight) keep the embeddings quick to quantize under ASan; qwen3_moe comes in two
# shards; qwen2_moe's f16 weights take the copy path to F16.
MOE_MODELS = {
    "mixtral": dict(family="mixtral", tokenizer="llama2", tied=True, dtype="bf16", heads=4,
                    kv_heads=2),
    "qwen2_moe": dict(family="qwen2_moe", tokenizer="llama2", tied=False, dtype="f16", heads=4,
                      kv_heads=4),
    "qwen3_moe": dict(family="qwen3_moe", tokenizer="llama2", tied=True, dtype="bf16", heads=4,
                      kv_heads=2, shards=2),
}
ARCH = {"mixtral": "llama", "qwen2_moe": "qwen2moe", "qwen3_moe": "qwen3moe"}

# HF expert module -> GGUF stacked tensor, per family (w1 = gate, w2 = down, w3 = up in Mixtral)
EXPERT_NAMES = {
    "mixtral": {"block_sparse_moe.experts.{e}.w1": "ffn_gate_exps",
                "block_sparse_moe.experts.{e}.w2": "ffn_down_exps",
                "block_sparse_moe.experts.{e}.w3": "ffn_up_exps"},
    "qwen2_moe": {"mlp.experts.{e}.gate_proj": "ffn_gate_exps",
                  "mlp.experts.{e}.up_proj": "ffn_up_exps",
                  "mlp.experts.{e}.down_proj": "ffn_down_exps"},
}
EXPERT_NAMES["qwen3_moe"] = EXPERT_NAMES["qwen2_moe"]
ROUTER = {"mixtral": "block_sparse_moe.gate", "qwen2_moe": "mlp.gate", "qwen3_moe": "mlp.gate"}


@pytest.fixture(scope="module")
def moe_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("moe")
    made = {}

    def get(key):
        if key not in made:
            made[key] = hf_fixtures.make_checkpoint(root / key, **MOE_MODELS[key])
        return made[key]

    return get


@pytest.fixture(scope="module")
def moe_out(qwodel_bin, moe_dir, tmp_path_factory):
    root = tmp_path_factory.mktemp("moe-out")
    made = {}

    def get(key, fmt):
        if (key, fmt) not in made:
            proc = run_qwodel(qwodel_bin, "quantize", moe_dir(key), "-f", fmt, "-o", root / key,
                              "-q")
            made[key, fmt] = pathlib.Path(proc.stdout.strip())
        return made[key, fmt]

    return get


def read_gguf(path):
    reader = gguf.GGUFReader(str(path))
    return reader, {t.name: t for t in reader.tensors}


def field(reader, key):
    """(value, GGUF value type name) of a scalar metadata key."""
    f = reader.fields[key]
    return f.contents(), f.types[0].name


# ---- stacking ------------------------------------------------------------------------------

@pytest.mark.parametrize("key", list(MOE_MODELS))
def test_f16_stacks_experts_as_the_source(moe_dir, moe_out, key):
    src = hf_fixtures.load_checkpoint(moe_dir(key))
    config = json.loads((moe_dir(key) / "config.json").read_text())
    n_expert = config.get("num_local_experts", config.get("num_experts"))
    _, tensors = read_gguf(moe_out(key, "F16"))
    family = MOE_MODELS[key]["family"]
    for layer in range(config["num_hidden_layers"]):
        p = f"model.layers.{layer}."
        for hf_pattern, gguf_name in EXPERT_NAMES[family].items():
            want = np.stack([src[p + hf_pattern.format(e=e) + ".weight"]
                             for e in range(n_expert)]).astype(np.float16)
            t = tensors[f"blk.{layer}.{gguf_name}.weight"]
            assert t.tensor_type.name == "F16"
            assert list(t.shape) == [want.shape[2], want.shape[1], n_expert]  # ne order
            got = np.asarray(t.data).reshape(want.shape)
            np.testing.assert_array_equal(got, want, err_msg=f"{layer} {gguf_name}")
        router = tensors[f"blk.{layer}.ffn_gate_inp.weight"]
        assert router.tensor_type.name == "F32"
        np.testing.assert_array_equal(np.asarray(router.data).reshape(n_expert, -1),
                                      src[p + ROUTER[family] + ".weight"])
        if family == "qwen2_moe":
            gate = tensors[f"blk.{layer}.ffn_gate_inp_shexp.weight"]
            assert gate.tensor_type.name == "F32"  # the converter keeps it f32
            np.testing.assert_array_equal(np.asarray(gate.data).reshape(1, -1),
                                          src[p + "mlp.shared_expert_gate.weight"])
            for part in ("gate", "up", "down"):
                t = tensors[f"blk.{layer}.ffn_{part}_shexp.weight"]
                want = src[p + f"mlp.shared_expert.{part}_proj.weight"].astype(np.float16)
                np.testing.assert_array_equal(np.asarray(t.data).reshape(want.shape), want)
        else:
            assert not any("shexp" in n for n in tensors)
    # every source tensor is in the output once: experts stacked, the rest one to one
    n_stacked = 3 * config["num_hidden_layers"]
    n_single = len(src) - n_stacked * n_expert
    assert len(tensors) == n_single + n_stacked


@pytest.mark.parametrize("key", list(MOE_MODELS))
def test_metadata_as_the_converter_writes_it(moe_dir, moe_out, key):
    config = json.loads((moe_dir(key) / "config.json").read_text())
    reader, _ = read_gguf(moe_out(key, "F16"))
    arch = ARCH[key]
    assert field(reader, "general.architecture")[0] == arch
    n_expert = config.get("num_local_experts", config.get("num_experts"))
    assert field(reader, f"{arch}.expert_count") == (n_expert, "UINT32")
    assert field(reader, f"{arch}.expert_used_count") == (config["num_experts_per_tok"], "UINT32")
    assert field(reader, f"{arch}.feed_forward_length") == (config["intermediate_size"], "UINT32")
    if key == "mixtral":  # LlamaModel: no expert sizes, but vocab size and rope dimensions
        assert f"{arch}.expert_feed_forward_length" not in reader.fields
        assert field(reader, "llama.vocab_size") == (config["vocab_size"], "UINT32")
        assert field(reader, "llama.rope.dimension_count") == (256 // 4, "UINT32")
    else:
        assert field(reader, f"{arch}.expert_feed_forward_length") == (
            config["moe_intermediate_size"], "UINT32")
    if key == "qwen2_moe":
        assert field(reader, f"{arch}.expert_shared_feed_forward_length") == (
            config["shared_expert_intermediate_size"], "UINT32")
    else:
        assert f"{arch}.expert_shared_feed_forward_length" not in reader.fields
    assert not any("norm" in k and "expert" in k for k in reader.fields)


# ---- llama.cpp -----------------------------------------------------------------------------

@pytest.mark.parametrize("key", list(MOE_MODELS))
@pytest.mark.parametrize("fmt", ["F16", "Q4_K_M"])
def test_llama_cpp_loads_and_generates(moe_out, key, fmt):
    llm = llama_cpp.Llama(model_path=str(moe_out(key, fmt)), n_ctx=64, n_threads=2, n_batch=64,
                          seed=1, logits_all=True, verbose=False)
    tokens = llm.tokenize(b"The quick brown fox", add_bos=True)
    llm.eval(tokens)
    logits = np.asarray(llm.scores[llm.n_tokens - 1], dtype=np.float32)
    assert np.isfinite(logits).all() and logits.std() > 0
    generated = []
    for token in llm.generate(tokens, temp=0.0, reset=True):
        generated.append(token)
        if len(generated) == 4:
            break
    assert len(generated) == 4 and all(0 <= t < llm.n_vocab() for t in generated)


@pytest.mark.parametrize("key", list(MOE_MODELS))
def test_q4_k_m_equals_llama_quantize(qwodel_bin, moe_out, tmp_path, key):
    """qwodel HF -> Q4_K_M in one step == llama.cpp's quantizer on qwodel's own float output.

    That output is F16 for an f16 checkpoint and F32 for a bf16 one: bf16 -> f16 rounds values
    below f16's normal range, so llama.cpp would quantize other numbers than qwodel does."""
    between = "F16" if MOE_MODELS[key]["dtype"] == "f16" else "F32"
    theirs = tmp_path / "theirs.gguf"
    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = llama_cpp.LLAMA_FTYPE_MOSTLY_Q4_K_M
    params.nthread = 2
    rc = llama_cpp.llama_model_quantize(str(moe_out(key, between)).encode(),
                                        str(theirs).encode(), ctypes.byref(params))
    assert rc == 0
    _, t_ours = read_gguf(moe_out(key, "Q4_K_M"))
    _, t_theirs = read_gguf(theirs)
    assert list(t_ours) == list(t_theirs)
    differ = []
    for name, t in t_theirs.items():
        mine = t_ours[name]
        assert mine.tensor_type == t.tensor_type, f"{name}: {mine.tensor_type} vs {t.tensor_type}"
        assert list(mine.shape) == list(t.shape), name
        if np.asarray(mine.data).tobytes() != np.asarray(t.data).tobytes():
            differ.append(name)
    assert not differ, f"bytes differ: {differ}"
    # and qwodel's plan for the same GGUF input (a dry run) has llama.cpp's types and shapes
    proc = run_qwodel(qwodel_bin, "quantize", moe_out(key, between), "-f", "Q4_K_M", "--dry-run",
                      "--json", "-o", tmp_path / "plan")
    plan = {t["name"]: t for t in json.loads(proc.stdout)["tensors"]}
    assert list(plan) == list(t_theirs)
    for name, t in t_theirs.items():
        assert plan[name]["type"].upper() == t.tensor_type.name, name
        assert plan[name]["shape"] == [int(d) for d in t.shape], name
    routers = [n for n in t_theirs if "ffn_gate_inp" in n]
    assert routers and all(t_theirs[n].tensor_type.name == "F32" for n in routers)
    assert any(t.tensor_type.name != "F16" for n, t in t_theirs.items() if "_exps" in n)


# ---- errors and memory ---------------------------------------------------------------------

def test_missing_expert_is_named(qwodel_bin, tmp_path):
    """config.json promises 5 experts, the checkpoint has 4: refused before anything is written."""
    src = hf_fixtures.make_checkpoint(tmp_path / "m", "mixtral", tokenizer="llama2", tied=False,
                                      layers=1, config_overrides={"num_local_experts": 5})
    proc = run_qwodel(qwodel_bin, "quantize", src, "-f", "F16", "-o", tmp_path / "out",
                      check=False)
    assert proc.returncode == 1, proc.stderr
    assert "expert 4" in proc.stderr and "blk.0.ffn_" in proc.stderr and "missing" in proc.stderr
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


def test_topk_normalization_mismatch_is_warned(qwodel_bin, tmp_path):
    src = hf_fixtures.make_checkpoint(tmp_path / "m", "qwen3_moe", tokenizer="llama2", tied=True,
                                      layers=1, config_overrides={"norm_topk_prob": False})
    proc = run_qwodel(qwodel_bin, "quantize", src, "-f", "F16", "-o", tmp_path, "--dry-run")
    assert "norm_topk_prob" in proc.stderr and "qwen3moe" in proc.stderr


def peak_rss_kib(qwodel_bin, src, out_dir):
    time_bin = shutil.which("time") or "/usr/bin/time"
    if not pathlib.Path(time_bin).exists():
        pytest.skip("GNU time is not installed")
    proc = subprocess.run([time_bin, "-f", "RSS %M", str(qwodel_bin), "quantize", str(src), "-f",
                           "F16", "-o", str(out_dir), "-q", "--threads", "1"],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    return int(proc.stderr.strip().splitlines()[-1].split()[-1])


def test_peak_memory_does_not_grow_with_experts(qwodel_bin, tmp_path):
    """16 experts of 1024 x 256 per projection (24 MiB of stacked f32 per layer) need no more
    memory than 2: experts stream row by row, never as a whole stack or a whole model."""
    rss = {}
    for n in (2, 16):
        src = hf_fixtures.make_checkpoint(tmp_path / f"e{n}", "mixtral", tokenizer="llama2",
                                          tied=True, layers=2, intermediate=1024, experts=n)
        rss[n] = peak_rss_kib(qwodel_bin, src, tmp_path / f"out{n}")
    stacked_f32_mib = 16 * 1024 * 256 * 4 / 2**20  # one layer's stacked ffn_up_exps in f32
    assert rss[16] - rss[2] < 1024 * stacked_f32_mib / 2, rss
