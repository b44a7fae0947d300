"""Tiny but real HuggingFace checkpoints for qwodel's tests, made at run time.

The directories written here are what `transformers` would load for the four
families qwodel's GGUF path supports first (llama, mistral, qwen2, qwen3): a
config.json with the keys the published models' configs have, a
generation_config.json, the real tokenizer files (copied from
shared/fixtures/tokenizers/<name>/ when the checkpoint is made), and the weights
in safetensors, in one file or in shards with a model.safetensors.index.json.

Only numpy and the standard library are used: the safetensors writer and reader
below are written from the format description (8-byte little-endian header
length, a JSON header padded with spaces to a multiple of 8, tensors contiguous
after it), not taken from the `safetensors` package, so the files do not depend
on any one implementation being right.

Every tensor is drawn from its own generator, seeded from (seed, tensor name), so
a tensor's values depend only on the seed, its name, its shape and the dtype: the
same model written tied or untied, sharded or not, shares its values.

`corrupt_variants` makes copies of a small checkpoint that each carry one defect
(see CORRUPT_VARIANTS for the list), for the readers' error paths.
"""

from __future__ import annotations

import functools
import json
import os
import shutil
import struct
import zlib
from pathlib import Path
from typing import Iterable, NamedTuple

import numpy as np

__all__ = [
    "FAMILIES",
    "MOE_FAMILIES",
    "TOKENIZERS",
    "TOKENIZER_DIR",
    "CORRUPT_VARIANTS",
    "make_checkpoint",
    "tokenizer_vocab_size",
    "float32_to_bf16_bits",
    "bf16_bits_to_float32",
    "write_safetensors",
    "write_safetensors_raw",
    "read_safetensors_header",
    "read_safetensors",
    "read_safetensors_raw",
    "load_checkpoint",
    "corrupt_variants",
]

FAMILIES = ("llama", "mistral", "qwen2", "qwen3")
# Mixture-of-experts families: one tensor per expert, as the published checkpoints store them.
MOE_FAMILIES = ("mixtral", "qwen2_moe", "qwen3_moe")
TOKENIZERS = ("llama2", "llama3", "qwen3")

# tests/python/ -> repository root -> its parent holds shared/ (see shared/fixtures/README.md).
_REPO_ROOT = Path(__file__).resolve().parents[2]
TOKENIZER_DIR = Path(
    os.environ.get("QWODEL_TOKENIZER_FIXTURES", _REPO_ROOT.parent / "shared" / "fixtures" / "tokenizers")
)

_TRANSFORMERS_VERSION = "4.51.3"

# safetensors dtype string -> (numpy dtype used for the raw bytes, bytes per element)
_ST_DTYPES = {
    "F32": (np.dtype("<f4"), 4),
    "F16": (np.dtype("<f2"), 2),
    "BF16": (np.dtype("<u2"), 2),
}
_DTYPE_ALIASES = {
    "f32": "F32", "float32": "F32", "fp32": "F32",
    "f16": "F16", "float16": "F16", "fp16": "F16",
    "bf16": "BF16", "bfloat16": "BF16",
}
_TORCH_DTYPE_NAMES = {"F32": "float32", "F16": "float16", "BF16": "bfloat16"}

_ARCHITECTURES = {
    "llama": "LlamaForCausalLM",
    "mistral": "MistralForCausalLM",
    "qwen2": "Qwen2ForCausalLM",
    "qwen3": "Qwen3ForCausalLM",
    "mixtral": "MixtralForCausalLM",
    "qwen2_moe": "Qwen2MoeForCausalLM",
    "qwen3_moe": "Qwen3MoeForCausalLM",
}


# --------------------------------------------------------------------------- bf16


def float32_to_bf16_bits(x: np.ndarray) -> np.ndarray:
    """bf16 bit patterns (uint16) of float32 values, rounded to nearest, ties to even.

    NaNs stay NaNs (quiet bit set), infinities stay infinities, values that round
    past the largest finite bf16 become infinity, as torch's `.to(torch.bfloat16)`.
    """
    f = np.ascontiguousarray(x, dtype=np.float32)
    u = f.view(np.uint32)
    # Adding 0x7FFF plus the lowest kept bit rounds half to even; the carry may run into
    # the exponent, which is exactly right (it rounds up to the next binade or to inf).
    # In place on one temporary: the embeddings are tens of millions of values.
    r = u >> np.uint32(16)
    r &= np.uint32(1)
    r += np.uint32(0x7FFF)
    r += u
    r >>= np.uint32(16)
    rounded = r.astype(np.uint16)
    del r
    nan = np.isnan(f)
    if nan.any():
        rounded[nan] = ((u[nan] >> np.uint32(16)) | np.uint32(0x0040)).astype(np.uint16)
    return rounded


def bf16_bits_to_float32(bits: np.ndarray) -> np.ndarray:
    """float32 values of bf16 bit patterns (exact)."""
    b = np.ascontiguousarray(bits, dtype=np.uint16)
    return (b.astype(np.uint32) << np.uint32(16)).view(np.float32)


# --------------------------------------------------------------------------- safetensors


class RawTensor(NamedTuple):
    """One tensor as stored: safetensors dtype string, shape, little-endian bytes."""

    dtype: str
    shape: tuple
    data: bytes


def _encode(array: np.ndarray, dtype: str) -> RawTensor:
    dtype = _DTYPE_ALIASES.get(dtype.lower(), dtype) if isinstance(dtype, str) else dtype
    if dtype not in _ST_DTYPES:
        raise ValueError(f"unsupported dtype {dtype!r}")
    a = np.asarray(array)
    if dtype == "BF16":
        payload = float32_to_bf16_bits(a.astype(np.float32, copy=False))
    else:
        payload = np.ascontiguousarray(a, dtype=_ST_DTYPES[dtype][0])
    return RawTensor(dtype, tuple(int(d) for d in a.shape), payload.tobytes())


def _header_bytes(header: dict) -> bytes:
    text = json.dumps(header, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    text += b" " * (-len(text) % 8)
    return text


def write_safetensors_raw(path, tensors: Iterable[tuple], metadata: dict | None = None) -> int:
    """Write (name, dtype, shape, data_bytes) tuples in the order given; returns the file size.

    `__metadata__` comes first in the header, as the reference writer puts it; the
    header is compact JSON padded with spaces to a multiple of 8 bytes; tensor data
    follow one another with no gaps, in header order.
    """
    header: dict = {"__metadata__": dict(metadata if metadata is not None else {"format": "pt"})}
    chunks = []
    offset = 0
    for name, dtype, shape, data in tensors:
        if name in header:
            raise ValueError(f"duplicate tensor name {name!r}")
        header[name] = {"dtype": dtype, "shape": list(shape), "data_offsets": [offset, offset + len(data)]}
        chunks.append(data)
        offset += len(data)
    head = _header_bytes(header)
    path = Path(path)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(head)))
        f.write(head)
        for c in chunks:
            f.write(c)
    return 8 + len(head) + offset


def write_safetensors(path, tensors: dict, dtype: str = "BF16", metadata: dict | None = None) -> int:
    """Write a {name: array} dict (in its order) converted to `dtype` (F32, F16 or BF16)."""
    raws = []
    for name, arr in tensors.items():
        r = _encode(arr, dtype)
        raws.append((name, r.dtype, r.shape, r.data))
    return write_safetensors_raw(path, raws, metadata)


def read_safetensors_header(path) -> tuple[dict, int]:
    """(header dict including __metadata__, byte offset of the data buffer)."""
    with open(path, "rb") as f:
        raw_len = f.read(8)
        if len(raw_len) != 8:
            raise ValueError(f"{path}: shorter than 8 bytes")
        (n,) = struct.unpack("<Q", raw_len)
        size = os.fstat(f.fileno()).st_size
        if n > size - 8:
            raise ValueError(f"{path}: header length {n} runs past the end of the file ({size} bytes)")
        head = f.read(n)
    return json.loads(head.decode("utf-8")), 8 + n


def read_safetensors_raw(path) -> dict:
    """{name: RawTensor} in header order, with the checks the format requires.

    Raises ValueError on a malformed file: offsets must tile the data buffer exactly
    (no holes, no overlaps, nothing past the end), byte counts must match the shapes,
    dtypes must be known (F32, F16, BF16).
    """
    header, base = read_safetensors_header(path)
    data = Path(path).read_bytes()[base:]
    spans = []
    out = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        dtype = info["dtype"]
        if dtype not in _ST_DTYPES:
            raise ValueError(f"{path}: {name}: unknown dtype {dtype!r}")
        shape = tuple(int(d) for d in info["shape"])
        if any(d < 0 for d in shape):
            raise ValueError(f"{path}: {name}: negative dimension")
        begin, end = (int(v) for v in info["data_offsets"])
        numel = 1
        for d in shape:
            numel *= d  # Python ints: no wraparound, so huge shapes fail the size test below
        if end < begin or end - begin != numel * _ST_DTYPES[dtype][1]:
            raise ValueError(f"{path}: {name}: {end - begin} bytes for shape {list(shape)} {dtype}")
        spans.append((begin, end, name))
        out[name] = RawTensor(dtype, shape, data[begin:end])
    pos = 0
    for begin, end, name in sorted(spans):
        if begin != pos:
            raise ValueError(f"{path}: {name}: data starts at {begin}, expected {pos} (hole or overlap)")
        pos = end
    if pos != len(data):
        raise ValueError(f"{path}: tensors cover {pos} data bytes, the file holds {len(data)}")
    return out


def _decode(raw: RawTensor) -> np.ndarray:
    np_dtype, _ = _ST_DTYPES[raw.dtype]
    a = np.frombuffer(raw.data, dtype=np_dtype)
    if raw.dtype == "BF16":
        a = bf16_bits_to_float32(a)
    return a.astype(np.float32).reshape(raw.shape)


def read_safetensors(path) -> dict:
    """{name: float32 ndarray} of one safetensors file, in header order."""
    return {name: _decode(raw) for name, raw in read_safetensors_raw(path).items()}


def load_checkpoint(model_dir) -> dict:
    """{name: float32 ndarray} of a whole checkpoint directory, single file or sharded.

    A sharded checkpoint must have an index whose weight_map names every tensor of
    every shard exactly once, and only files inside the directory.
    """
    model_dir = Path(model_dir)
    index = model_dir / "model.safetensors.index.json"
    if not index.is_file():
        return read_safetensors(model_dir / "model.safetensors")
    weight_map = json.loads(index.read_text(encoding="utf-8"))["weight_map"]
    out: dict = {}
    for shard in sorted(set(weight_map.values())):
        if Path(shard).name != shard:
            raise ValueError(f"shard {shard!r} is not a file name inside {model_dir}")
        for name, arr in read_safetensors(model_dir / shard).items():
            if name in out:
                raise ValueError(f"tensor {name!r} appears in more than one shard")
            if weight_map.get(name) != shard:
                raise ValueError(f"tensor {name!r} is in {shard} but the index says {weight_map.get(name)!r}")
            out[name] = arr
    missing = set(weight_map) - set(out)
    if missing:
        raise ValueError(f"index names tensors no shard holds: {sorted(missing)[:5]}")
    return {name: out[name] for name in sorted(out)}


# --------------------------------------------------------------------------- tokenizers


@functools.lru_cache(maxsize=None)
def tokenizer_vocab_size(tokenizer: str) -> int:
    """Largest token id + 1 over model.vocab and added_tokens of the fixture's tokenizer.json."""
    tj = json.loads((TOKENIZER_DIR / tokenizer / "tokenizer.json").read_text(encoding="utf-8"))
    ids = list(tj["model"]["vocab"].values()) if isinstance(tj["model"]["vocab"], dict) else [
        i for i, _ in enumerate(tj["model"]["vocab"])
    ]
    ids += [t["id"] for t in tj.get("added_tokens", [])]
    return max(ids) + 1


# Special token ids and context lengths as the published configs have them.
_TOKEN_IDS = {
    # tokenizer: (bos, eos)
    "llama2": (1, 2),
    "llama3": (128000, 128001),
    "qwen3": (151643, 151643),
}


# --------------------------------------------------------------------------- config


def _config(family, tokenizer, *, hidden, layers, heads, kv_heads, intermediate, head_dim,
            head_dim_given, vocab_size, tied, dtype, rope_scaling, moe=None) -> dict:
    bos, eos = _TOKEN_IDS[tokenizer]
    torch_dtype = _TORCH_DTYPE_NAMES[dtype]
    c: dict = {"architectures": [_ARCHITECTURES[family]]}
    if family == "llama":
        llama3 = tokenizer == "llama3"
        c.update({
            "attention_bias": False,
            "attention_dropout": 0.0,
            "bos_token_id": bos,
            "eos_token_id": eos,
        })
        if llama3 or head_dim_given:
            c["head_dim"] = head_dim
        c.update({
            "hidden_act": "silu",
            "hidden_size": hidden,
            "initializer_range": 0.02,
            "intermediate_size": intermediate,
            "max_position_embeddings": (131072 if rope_scaling else 8192) if llama3 else 4096,
            "mlp_bias": False,
            "model_type": "llama",
            "num_attention_heads": heads,
            "num_hidden_layers": layers,
            "num_key_value_heads": kv_heads,
            "pretraining_tp": 1,
            "rms_norm_eps": 1e-05,
            "rope_scaling": rope_scaling,
            "rope_theta": 500000.0 if llama3 else 10000.0,
            "tie_word_embeddings": tied,
            "torch_dtype": torch_dtype,
            "transformers_version": _TRANSFORMERS_VERSION,
            "use_cache": True,
            "vocab_size": vocab_size,
        })
    elif family == "mistral":
        # Mistral-7B-v0.1's keys; head_dim only when asked for (Mistral-Nemo style).
        c.update({
            "attention_dropout": 0.0,
            "bos_token_id": bos,
            "eos_token_id": eos,
        })
        if head_dim_given:
            c["head_dim"] = head_dim
        c.update({
            "hidden_act": "silu",
            "hidden_size": hidden,
            "initializer_range": 0.02,
            "intermediate_size": intermediate,
            "max_position_embeddings": 32768,
            "model_type": "mistral",
            "num_attention_heads": heads,
            "num_hidden_layers": layers,
            "num_key_value_heads": kv_heads,
            "rms_norm_eps": 1e-05,
        })
        if rope_scaling is not None:
            c["rope_scaling"] = rope_scaling
        c.update({
            "rope_theta": 10000.0,
            "sliding_window": 4096,
            "tie_word_embeddings": tied,
            "torch_dtype": torch_dtype,
            "transformers_version": _TRANSFORMERS_VERSION,
            "use_cache": True,
            "vocab_size": vocab_size,
        })
    elif family == "qwen2":
        # Qwen2.5's keys. Qwen2 configs carry no attention_bias key: the q/k/v biases are
        # part of the architecture, so a reader must not wait for the key to expect them.
        c.update({
            "attention_dropout": 0.0,
            "bos_token_id": bos,
            "eos_token_id": eos,
        })
        if head_dim_given:
            c["head_dim"] = head_dim
        c.update({
            "hidden_act": "silu",
            "hidden_size": hidden,
            "initializer_range": 0.02,
            "intermediate_size": intermediate,
            "max_position_embeddings": 32768,
            "max_window_layers": layers,
            "model_type": "qwen2",
            "num_attention_heads": heads,
            "num_hidden_layers": layers,
            "num_key_value_heads": kv_heads,
            "rms_norm_eps": 1e-06,
        })
        if rope_scaling is not None:
            c["rope_scaling"] = rope_scaling
        c.update({
            "rope_theta": 1000000.0,
            "sliding_window": None,
            "tie_word_embeddings": tied,
            "torch_dtype": torch_dtype,
            "transformers_version": _TRANSFORMERS_VERSION,
            "use_cache": True,
            "use_sliding_window": False,
            "vocab_size": vocab_size,
        })
    elif family == "qwen3":
        c.update({
            "attention_bias": False,
            "attention_dropout": 0.0,
            "bos_token_id": bos,
            "eos_token_id": 151645 if tokenizer == "qwen3" else eos,
            "head_dim": head_dim,
            "hidden_act": "silu",
            "hidden_size": hidden,
            "initializer_range": 0.02,
            "intermediate_size": intermediate,
            "max_position_embeddings": 40960,
            "max_window_layers": layers,
            "model_type": "qwen3",
            "num_attention_heads": heads,
            "num_hidden_layers": layers,
            "num_key_value_heads": kv_heads,
            "rms_norm_eps": 1e-06,
            "rope_scaling": rope_scaling,
            "rope_theta": 1000000,
            "sliding_window": None,
            "tie_word_embeddings": tied,
            "torch_dtype": torch_dtype,
            "transformers_version": _TRANSFORMERS_VERSION,
            "use_cache": True,
            "use_sliding_window": False,
            "vocab_size": vocab_size,
        })
    elif family in MOE_FAMILIES:
        c.update(_moe_config(family, tokenizer, hidden=hidden, layers=layers, heads=heads,
                             kv_heads=kv_heads, intermediate=intermediate, head_dim=head_dim,
                             vocab_size=vocab_size, tied=tied, torch_dtype=torch_dtype,
                             rope_scaling=rope_scaling, moe=moe or {}))
    else:
        raise ValueError(f"unknown family {family!r}; expected one of {FAMILIES + MOE_FAMILIES}")
    return c


def _moe_config(family, tokenizer, *, hidden, layers, heads, kv_heads, intermediate, head_dim,
                vocab_size, tied, torch_dtype, rope_scaling, moe) -> dict:
    """The keys of Mixtral-8x7B-v0.1, Qwen1.5-MoE-A2.7B and Qwen3-30B-A3B's configs, in their
    order, with this checkpoint's sizes."""
    bos, eos = _TOKEN_IDS[tokenizer]
    n_experts, n_used = moe["experts"], moe["experts_used"]
    if family == "mixtral":
        c = {
            "attention_dropout": 0.0,
            "bos_token_id": bos,
            "eos_token_id": eos,
            "hidden_act": "silu",
            "hidden_size": hidden,
            "initializer_range": 0.02,
            "intermediate_size": intermediate,  # each expert's
            "max_position_embeddings": 32768,
            "model_type": "mixtral",
            "num_attention_heads": heads,
            "num_experts_per_tok": n_used,
            "num_hidden_layers": layers,
            "num_key_value_heads": kv_heads,
            "num_local_experts": n_experts,
            "output_router_logits": False,
            "rms_norm_eps": 1e-05,
        }
        if rope_scaling is not None:
            c["rope_scaling"] = rope_scaling
        c.update({
            "rope_theta": 1000000.0,
            "router_aux_loss_coef": 0.02,
            "sliding_window": None,
        })
    elif family == "qwen2_moe":
        c = {
            "attention_dropout": 0.0,
            "bos_token_id": bos,
            "eos_token_id": eos,
            "hidden_act": "silu",
            "hidden_size": hidden,
            "initializer_range": 0.02,
            "intermediate_size": intermediate,
            "max_position_embeddings": 8192,
            "max_window_layers": layers,
            "model_type": "qwen2_moe",
            "num_attention_heads": heads,
            "num_hidden_layers": layers,
            "num_key_value_heads": kv_heads,
            "rms_norm_eps": 1e-06,
        }
        if rope_scaling is not None:
            c["rope_scaling"] = rope_scaling
        c.update({
            "rope_theta": 1000000.0,
            "sliding_window": 32768,
            "use_sliding_window": False,
            "decoder_sparse_step": 1,
            "moe_intermediate_size": moe["intermediate"],
            "shared_expert_intermediate_size": moe["shared_intermediate"],
            "num_experts_per_tok": n_used,
            "num_experts": n_experts,
            "norm_topk_prob": False,
            "output_router_logits": False,
            "router_aux_loss_coef": 0.001,
        })
        if moe["dense_layers"]:  # Qwen1.5-MoE's config has no such key; transformers reads it
            c["mlp_only_layers"] = sorted(moe["dense_layers"])
    else:  # qwen3_moe
        c = {
            "attention_bias": False,
            "attention_dropout": 0.0,
            "bos_token_id": bos,
            "decoder_sparse_step": 1,
            "eos_token_id": 151645 if tokenizer == "qwen3" else eos,
            "head_dim": head_dim,
            "hidden_act": "silu",
            "hidden_size": hidden,
            "initializer_range": 0.02,
            "intermediate_size": intermediate,
            "max_position_embeddings": 40960,
            "max_window_layers": layers,
            "mlp_only_layers": sorted(moe["dense_layers"]),
            "model_type": "qwen3_moe",
            "moe_intermediate_size": moe["intermediate"],
            "norm_topk_prob": True,
            "num_attention_heads": heads,
            "num_experts": n_experts,
            "num_experts_per_tok": n_used,
            "num_hidden_layers": layers,
            "num_key_value_heads": kv_heads,
            "output_router_logits": False,
            "rms_norm_eps": 1e-06,
            "rope_scaling": rope_scaling,
            "rope_theta": 1000000.0,
            "router_aux_loss_coef": 0.001,
            "sliding_window": None,
        }
    c.update({
        "tie_word_embeddings": tied,
        "torch_dtype": torch_dtype,
        "transformers_version": _TRANSFORMERS_VERSION,
        "use_cache": True,
    })
    if family != "mixtral":
        c["use_sliding_window"] = False
    c["vocab_size"] = vocab_size
    return c


def _apply_overrides(config: dict, overrides: dict | None) -> None:
    """Sets each key of overrides in config, or deletes it when the value is ... (Ellipsis)."""
    for k, v in (overrides or {}).items():
        if v is Ellipsis:
            config.pop(k, None)
        else:
            config[k] = v


def _generation_config(config: dict) -> dict:
    return {
        "_from_model_config": True,
        "bos_token_id": config["bos_token_id"],
        "eos_token_id": config["eos_token_id"],
        "transformers_version": _TRANSFORMERS_VERSION,
    }


# --------------------------------------------------------------------------- weights


def _tensor_rng(seed: int, name: str) -> np.random.Generator:
    return np.random.default_rng([int(seed) & 0xFFFFFFFF, zlib.crc32(name.encode("utf-8"))])


def _gaussian(seed, name, shape, std=0.02) -> np.ndarray:
    a = _tensor_rng(seed, name).standard_normal(shape, dtype=np.float32)
    a *= np.float32(std)
    return a


def _norm(seed, name, n) -> np.ndarray:
    a = _tensor_rng(seed, name).standard_normal(n, dtype=np.float32)
    a *= np.float32(0.05)
    a += np.float32(1.0)
    return a


def _moe_mlp(family, p, hidden, intermediate, moe):
    """(name, shape, kind) of one MoE layer's feed-forward tensors, HF's one tensor per expert."""
    t = []
    if family == "mixtral":
        t.append((p + "block_sparse_moe.gate.weight", (moe["experts"], hidden), "w"))
        for e in range(moe["experts"]):
            q = f"{p}block_sparse_moe.experts.{e}."
            t.append((q + "w1.weight", (intermediate, hidden), "w"))  # gate
            t.append((q + "w2.weight", (hidden, intermediate), "w"))  # down
            t.append((q + "w3.weight", (intermediate, hidden), "w"))  # up
        return t
    ff = moe["intermediate"]
    t.append((p + "mlp.gate.weight", (moe["experts"], hidden), "w"))
    for e in range(moe["experts"]):
        q = f"{p}mlp.experts.{e}."
        t.append((q + "gate_proj.weight", (ff, hidden), "w"))
        t.append((q + "up_proj.weight", (ff, hidden), "w"))
        t.append((q + "down_proj.weight", (hidden, ff), "w"))
    if family == "qwen2_moe":
        sff = moe["shared_intermediate"]
        t.append((p + "mlp.shared_expert.gate_proj.weight", (sff, hidden), "w"))
        t.append((p + "mlp.shared_expert.up_proj.weight", (sff, hidden), "w"))
        t.append((p + "mlp.shared_expert.down_proj.weight", (hidden, sff), "w"))
        t.append((p + "mlp.shared_expert_gate.weight", (1, hidden), "w"))
    return t


def model_tensor_shapes(family, *, hidden, layers, heads, kv_heads, intermediate, head_dim,
                        vocab_size, tied, moe=None):
    """[(group, name, shape, kind)] in module order, without data; group is 'embed', a layer
    index, or 'final'; kind 'w' (a weight, Gaussian) or 'n' (a norm)."""
    out = [("embed", "model.embed_tokens.weight", (vocab_size, hidden), "w")]
    q_out, kv_out = heads * head_dim, kv_heads * head_dim
    for i in range(layers):
        p = f"model.layers.{i}."
        t = []
        t.append((p + "self_attn.q_proj.weight", (q_out, hidden), "w"))
        if family in ("qwen2", "qwen2_moe"):
            t.append((p + "self_attn.q_proj.bias", (q_out,), "w"))
        t.append((p + "self_attn.k_proj.weight", (kv_out, hidden), "w"))
        if family in ("qwen2", "qwen2_moe"):
            t.append((p + "self_attn.k_proj.bias", (kv_out,), "w"))
        t.append((p + "self_attn.v_proj.weight", (kv_out, hidden), "w"))
        if family in ("qwen2", "qwen2_moe"):
            t.append((p + "self_attn.v_proj.bias", (kv_out,), "w"))
        t.append((p + "self_attn.o_proj.weight", (hidden, q_out), "w"))
        if family in ("qwen3", "qwen3_moe"):
            t.append((p + "self_attn.q_norm.weight", (head_dim,), "n"))
            t.append((p + "self_attn.k_norm.weight", (head_dim,), "n"))
        if family in MOE_FAMILIES and i not in moe["dense_layers"]:
            t += _moe_mlp(family, p, hidden, intermediate, moe)
        else:
            t.append((p + "mlp.gate_proj.weight", (intermediate, hidden), "w"))
            t.append((p + "mlp.up_proj.weight", (intermediate, hidden), "w"))
            t.append((p + "mlp.down_proj.weight", (hidden, intermediate), "w"))
        t.append((p + "input_layernorm.weight", (hidden,), "n"))
        t.append((p + "post_attention_layernorm.weight", (hidden,), "n"))
        out += [(i, name, shape, kind) for name, shape, kind in t]
    out.append(("final", "model.norm.weight", (hidden,), "n"))
    if not tied:
        out.append(("final", "lm_head.weight", (vocab_size, hidden), "w"))
    return out


def tensor_values(seed, name, shape, kind) -> np.ndarray:
    """The values make_checkpoint gives the tensor model_tensor_shapes lists."""
    return _norm(seed, name, shape[0]) if kind == "n" else _gaussian(seed, name, shape)


def _model_tensors(family, *, seed, **shape):
    """[(group, name, array)] in module order; group is 'embed', a layer index, or 'final'."""
    return [(group, name, tensor_values(seed, name, dims, kind))
            for group, name, dims, kind in model_tensor_shapes(family, **shape)]


def _split_groups(entries, shards):
    """Contiguous runs of groups (embedding, each layer, final norm + head) per shard."""
    groups: list = []
    for g, name, arr in entries:
        if not groups or groups[-1][0] != g:
            groups.append((g, []))
        groups[-1][1].append((name, arr))
    if shards > len(groups):
        raise ValueError(f"{shards} shards for only {len(groups)} groups of tensors (embedding, layers, final)")
    n = len(groups)
    bounds = [round(k * n / shards) for k in range(shards + 1)]
    return [[t for _, ts in groups[bounds[k]:bounds[k + 1]] for t in ts] for k in range(shards)]


def make_checkpoint(out_dir, family, *, tokenizer, tied, shards=1, dtype="bf16", hidden=256, layers=2,
                    heads=4, kv_heads=None, intermediate=None, head_dim=None, vocab_size=None,
                    rope_scaling=None, seed=0, config_overrides=None, experts=4, experts_used=2,
                    moe_intermediate=256, shared_intermediate=512, dense_layers=()) -> Path:
    """Write a HuggingFace checkpoint directory at `out_dir` and return its path.

    family: "llama" | "mistral" | "qwen2" | "qwen3"; tokenizer: "llama2" | "llama3" | "qwen3".
    Gemma and Phi-3 families (DENSE_FAMILIES) are handed to make_dense_checkpoint, which makes
    their own tokenizers (`tokenizer` is ignored for them).
    dtype: "bf16" | "f16" | "f32" (also "BF16", "float16", ...).
    kv_heads defaults to `heads` for llama with the llama2 tokenizer (Llama-2 is MHA) and to
    heads // 2 otherwise; head_dim to hidden // heads; intermediate to 8/3 * hidden rounded up to
    a multiple of 256; vocab_size to the tokenizer's full size (it may be larger, never smaller).
    rope_scaling is written as given (e.g. Llama-3 {"rope_type": "llama3", ...}).
    config_overrides: keys to set (or, with value ..., i.e. Ellipsis, to delete) in config.json after
    it is built, for tests that need one unusual key.
    MoE families (MOE_FAMILIES) also take experts / experts_used (num_local_experts or num_experts,
    num_experts_per_tok), moe_intermediate (Qwen's moe_intermediate_size; Mixtral's experts use
    `intermediate`) and shared_intermediate (Qwen2-MoE's shared expert); the Qwen ones also
    dense_layers, layers with a dense MLP of `intermediate` (config mlp_only_layers).
    Within each file tensors are sorted by name, as the reference safetensors writer orders them;
    shards hold contiguous runs of the model's modules (embedding, layers, final norm + head) and the
    index's weight_map is sorted by tensor name, as transformers writes it.
    """
    if family in DENSE_FAMILIES:  # Gemma / Phi-3: their own tokenizers and tensor names
        return make_dense_checkpoint(out_dir, family, tied=tied, shards=shards, dtype=dtype,
                                     hidden=hidden, layers=layers, heads=heads, kv_heads=kv_heads,
                                     intermediate=intermediate, head_dim=head_dim,
                                     vocab_size=vocab_size, rope_scaling=rope_scaling, seed=seed,
                                     config_overrides=config_overrides)
    if family not in FAMILIES + MOE_FAMILIES:
        raise ValueError(f"unknown family {family!r}; expected one of {FAMILIES + MOE_FAMILIES}")
    moe = dict(experts=experts, experts_used=experts_used, intermediate=moe_intermediate,
               shared_intermediate=shared_intermediate,
               dense_layers=tuple(dense_layers)) if family in MOE_FAMILIES else None
    if dense_layers and family not in ("qwen2_moe", "qwen3_moe"):
        raise ValueError("dense_layers is a Qwen MoE config key (mlp_only_layers)")
    if tokenizer not in TOKENIZERS:
        raise ValueError(f"unknown tokenizer {tokenizer!r}; expected one of {TOKENIZERS}")
    st_dtype = _DTYPE_ALIASES.get(str(dtype).lower(), dtype)
    if st_dtype not in _ST_DTYPES:
        raise ValueError(f"unsupported dtype {dtype!r}")
    if kv_heads is None:
        kv_heads = heads if (family == "llama" and tokenizer == "llama2") or heads % 2 else heads // 2
    if heads % kv_heads:
        raise ValueError(f"heads ({heads}) must be a multiple of kv_heads ({kv_heads})")
    head_dim_given = head_dim is not None
    if head_dim is None:
        if hidden % heads:
            raise ValueError(f"hidden ({hidden}) is not a multiple of heads ({heads}); give head_dim")
        head_dim = hidden // heads
    if head_dim % 2:
        raise ValueError("head_dim must be even (rotary embedding)")
    if intermediate is None:
        intermediate = -(-(hidden * 8 // 3) // 256) * 256
    tok_vocab = tokenizer_vocab_size(tokenizer)
    if vocab_size is None:
        vocab_size = tok_vocab
    if vocab_size < tok_vocab:
        raise ValueError(f"vocab_size {vocab_size} is smaller than the {tokenizer} tokenizer's {tok_vocab}")
    if shards < 1:
        raise ValueError("shards must be >= 1")

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)

    config = _config(family, tokenizer, hidden=hidden, layers=layers, heads=heads, kv_heads=kv_heads,
                     intermediate=intermediate, head_dim=head_dim, head_dim_given=head_dim_given,
                     vocab_size=vocab_size, tied=bool(tied), dtype=st_dtype, rope_scaling=rope_scaling,
                     moe=moe)
    _apply_overrides(config, config_overrides)
    (out / "config.json").write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")
    (out / "generation_config.json").write_text(json.dumps(_generation_config(config), indent=2) + "\n",
                                                encoding="utf-8")
    for f in sorted((TOKENIZER_DIR / tokenizer).iterdir()):
        if f.is_file():
            shutil.copyfile(f, out / f.name)
            os.chmod(out / f.name, 0o644)

    entries = _model_tensors(family, hidden=hidden, layers=layers, heads=heads, kv_heads=kv_heads,
                             intermediate=intermediate, head_dim=head_dim, vocab_size=vocab_size,
                             tied=bool(tied), seed=seed, moe=moe)
    for stale in list(out.glob("model*.safetensors")) + list(out.glob("model.safetensors.index.json")):
        stale.unlink()
    if shards == 1:
        ordered = sorted(((n, a) for _, n, a in entries), key=lambda t: t[0])
        write_safetensors(out / "model.safetensors", dict(ordered), st_dtype)
        return out

    weight_map: dict = {}
    total = 0
    for k, part in enumerate(_split_groups(entries, shards)):
        fname = f"model-{k + 1:05d}-of-{shards:05d}.safetensors"
        ordered = sorted(part, key=lambda t: t[0])
        write_safetensors(out / fname, dict(ordered), st_dtype)
        for name, arr in ordered:
            weight_map[name] = fname
            total += arr.size * _ST_DTYPES[st_dtype][1]
    index = {"metadata": {"total_size": total}, "weight_map": dict(sorted(weight_map.items()))}
    (out / "model.safetensors.index.json").write_text(json.dumps(index, indent=2) + "\n", encoding="utf-8")
    return out


# --------------------------------------------------------------------------- corrupt variants

# name -> what is wrong with that copy (exactly one thing, as far as the format allows).
CORRUPT_VARIANTS = {
    "truncated": "a safetensors file cut off in the middle of its tensor data",
    "header_len_past_eof": "the 8-byte header length is larger than the whole file",
    "header_len_overflow": "the header length is 2**64-1, so 8 + length overflows 64 bits",
    "header_not_json": "the header bytes (same length) are not JSON",
    "overlapping_offsets": "the last tensor's data_offsets start inside the one before it "
                           "(the file is shortened to match, so there is no hole)",
    "offsets_past_end": "the last tensor's data_offsets point 4096 bytes past the end of the file",
    "hole_between_tensors": "8 unused bytes between two tensors (later offsets shifted to match)",
    "unknown_dtype": "one tensor's dtype is \"Q9\"",
    "shape_mismatch": "one 1-D tensor's shape is one element longer than its bytes",
    "dim_overflow": "a 1-D tensor's shape becomes [2**64/(n*elem)+1, n]: its element count times the "
                    "element size wraps around 2**64 to exactly the right byte count",
    "index_missing_shard": "model.safetensors.index.json points at a shard file that does not exist",
    "index_outside_dir": "the index names \"../x.safetensors\" (which exists, one level up) for some tensors",
    "config_invalid_json": "config.json is cut off, not valid JSON",
    "config_no_architectures": "config.json has no \"architectures\" key",
    "config_unsupported_arch": "config.json's architectures is [\"FooForCausalLM\"]",
    "tokenizer_truncated": "tokenizer.json is cut off halfway",
    "duplicate_tensor": "one tensor is stored in two shards (the index names one of them)",
}


def _link_or_copy_tree(src: Path, dst: Path) -> None:
    """A copy of src's files in dst, hard-linked where possible; files we rewrite are unlinked first."""
    if dst.exists():
        shutil.rmtree(dst)
    dst.mkdir(parents=True)
    for f in src.iterdir():
        if f.is_file():
            try:
                os.link(f, dst / f.name)
            except OSError:
                shutil.copy2(f, dst / f.name)


def _replace(path: Path, data: bytes) -> None:
    if path.exists():
        path.unlink()  # never write through a hard link into the source checkpoint
    path.write_bytes(data)


def _data_files(model_dir: Path) -> list:
    index = model_dir / "model.safetensors.index.json"
    if index.is_file():
        return [model_dir / s for s in sorted(set(json.loads(index.read_text())["weight_map"].values()))]
    return [model_dir / "model.safetensors"]


def _parse(path: Path):
    blob = path.read_bytes()
    (n,) = struct.unpack("<Q", blob[:8])
    header = json.loads(blob[8:8 + n].decode("utf-8"))
    return blob, header, 8 + n


def _rebuild(path: Path, header: dict, data: bytes, pad_to: int | None = None) -> None:
    """Write a header dict (order kept) followed by `data`; header padded to pad_to bytes if given."""
    head = _header_bytes(header)
    if pad_to is not None:
        if len(head) > pad_to:
            raise AssertionError("edited header no longer fits")
        head += b" " * (pad_to - len(head))
    _replace(path, struct.pack("<Q", len(head)) + head + data)


def _tensor_order(header: dict) -> list:
    """Tensor names sorted by their data offsets."""
    names = [k for k in header if k != "__metadata__"]
    return sorted(names, key=lambda k: header[k]["data_offsets"][0])


def _pick_1d(header: dict) -> str:
    for name in _tensor_order(header):
        if len(header[name]["shape"]) == 1:
            return name
    raise ValueError("no 1-D tensor in the file")


def _ensure_sharded(model_dir: Path) -> None:
    """Turn a single-file checkpoint in model_dir into two shards with an index (in place)."""
    if (model_dir / "model.safetensors.index.json").is_file():
        return
    raws = read_safetensors_raw(model_dir / "model.safetensors")
    names = list(raws)
    half = max(1, len(names) // 2)
    parts = [names[:half], names[half:]]
    weight_map = {}
    total = 0
    for k, part in enumerate(parts):
        fname = f"model-{k + 1:05d}-of-00002.safetensors"
        write_safetensors_raw(model_dir / fname, [(n, raws[n].dtype, raws[n].shape, raws[n].data) for n in part])
        for n in part:
            weight_map[n] = fname
            total += len(raws[n].data)
    (model_dir / "model.safetensors").unlink()
    index = {"metadata": {"total_size": total}, "weight_map": dict(sorted(weight_map.items()))}
    (model_dir / "model.safetensors.index.json").write_text(json.dumps(index, indent=2) + "\n")


def corrupt_variants(src_dir, out_root) -> dict:
    """Copies of the checkpoint at src_dir under out_root/<name>/, each with one defect.

    Returns {name: directory}; the names and defects are those of CORRUPT_VARIANTS. Files a
    variant does not change are hard links to the source's where the file system allows, so
    keep the source unchanged while the variants are in use. Variants about the index
    (index_missing_shard, index_outside_dir, duplicate_tensor) split a single-file source into
    two shards first. Safetensors defects are made in the first data file (sorted by name).
    """
    src = Path(src_dir)
    root = Path(out_root)
    root.mkdir(parents=True, exist_ok=True)
    made: dict = {}

    def fresh(name: str) -> Path:
        d = root / name
        _link_or_copy_tree(src, d)
        made[name] = d
        return d

    # truncated: cut the first data file in the middle of its data buffer.
    d = fresh("truncated")
    f = _data_files(d)[0]
    blob, header, base = _parse(f)
    _replace(f, blob[:base + (len(blob) - base) // 2 + 1])

    d = fresh("header_len_past_eof")
    f = _data_files(d)[0]
    blob = f.read_bytes()
    _replace(f, struct.pack("<Q", len(blob) + 1) + blob[8:])

    d = fresh("header_len_overflow")
    f = _data_files(d)[0]
    blob = f.read_bytes()
    _replace(f, struct.pack("<Q", 0xFFFFFFFFFFFFFFFF) + blob[8:])

    d = fresh("header_not_json")
    f = _data_files(d)[0]
    blob, header, base = _parse(f)
    junk = b'{"model.embed_tokens.weight": {"dtype": "BF16", "shape": [1, 2], "data_offsets": [0, 4]'
    junk = (junk * ((base - 8) // len(junk) + 1))[:base - 8]
    _replace(f, blob[:8] + junk + blob[base:])

    # overlapping: the last tensor starts `k` bytes inside the previous one; shorten the file by k.
    d = fresh("overlapping_offsets")
    f = _data_files(d)[0]
    blob, header, base = _parse(f)
    order = _tensor_order(header)
    last, prev = order[-1], order[-2]
    pb, pe = header[prev]["data_offsets"]
    k = min(8, pe - pb)
    lb, le = header[last]["data_offsets"]
    header[last]["data_offsets"] = [lb - k, le - k]
    data = blob[base:]
    data = data[:lb - k] + data[lb:]
    _rebuild(f, header, data, pad_to=base - 8)

    d = fresh("offsets_past_end")
    f = _data_files(d)[0]
    blob, header, base = _parse(f)
    last = _tensor_order(header)[-1]
    lb, le = header[last]["data_offsets"]
    size = len(blob) - base
    header[last]["data_offsets"] = [size + 4096, size + 4096 + (le - lb)]
    _rebuild(f, header, blob[base:])

    d = fresh("hole_between_tensors")
    f = _data_files(d)[0]
    blob, header, base = _parse(f)
    order = _tensor_order(header)
    cut = header[order[1]]["data_offsets"][0]
    for name in order[1:]:
        b, e = header[name]["data_offsets"]
        header[name]["data_offsets"] = [b + 8, e + 8]
    data = blob[base:]
    _rebuild(f, header, data[:cut] + b"\0" * 8 + data[cut:])

    d = fresh("unknown_dtype")
    f = _data_files(d)[0]
    blob, header, base = _parse(f)
    header[_pick_1d(header)]["dtype"] = "Q9"
    _rebuild(f, header, blob[base:])

    d = fresh("shape_mismatch")
    f = _data_files(d)[0]
    blob, header, base = _parse(f)
    name = _pick_1d(header)
    header[name]["shape"] = [header[name]["shape"][0] + 1]
    _rebuild(f, header, blob[base:])

    d = fresh("dim_overflow")
    f = _data_files(d)[0]
    blob, header, base = _parse(f)
    name = _pick_1d(header)
    n = header[name]["shape"][0]
    elem = {"F32": 4, "F16": 2, "BF16": 2}[header[name]["dtype"]]
    span = n * elem
    pow2 = span & -span  # largest power of two dividing the byte count (>= 2: elem is 2 or 4)
    # (d0 - 1) * span is a multiple of 2**64, so d0 * n * elem wraps to exactly span
    d0 = (1 << 64) // pow2 + 1
    header[name]["shape"] = [d0, n]
    _rebuild(f, header, blob[base:])

    d = fresh("index_missing_shard")
    _ensure_sharded(d)
    files = _data_files(d)
    files[-1].unlink()

    d = fresh("index_outside_dir")
    _ensure_sharded(d)
    index_path = d / "model.safetensors.index.json"
    index = json.loads(index_path.read_text())
    victim = sorted(set(index["weight_map"].values()))[-1]
    shutil.copyfile(d / victim, root / "x.safetensors")
    (d / victim).unlink()
    index["weight_map"] = {k: ("../x.safetensors" if v == victim else v) for k, v in index["weight_map"].items()}
    _replace(index_path, (json.dumps(index, indent=2) + "\n").encode())

    d = fresh("config_invalid_json")
    cfg = (d / "config.json").read_bytes()
    _replace(d / "config.json", cfg[: len(cfg) // 2])

    d = fresh("config_no_architectures")
    cfg = json.loads((d / "config.json").read_text())
    del cfg["architectures"]
    _replace(d / "config.json", (json.dumps(cfg, indent=2) + "\n").encode())

    d = fresh("config_unsupported_arch")
    cfg = json.loads((d / "config.json").read_text())
    cfg["architectures"] = ["FooForCausalLM"]
    _replace(d / "config.json", (json.dumps(cfg, indent=2) + "\n").encode())

    d = fresh("tokenizer_truncated")
    tok = (d / "tokenizer.json").read_bytes()
    _replace(d / "tokenizer.json", tok[: len(tok) // 2])

    # duplicate: copy the first shard's smallest tensor into the second shard too.
    d = fresh("duplicate_tensor")
    _ensure_sharded(d)
    files = _data_files(d)
    first = read_safetensors_raw(files[0])
    dup = min(first, key=lambda n: len(first[n].data))
    second = read_safetensors_raw(files[1])
    items = [(n, r.dtype, r.shape, r.data) for n, r in second.items()]
    items.append((dup, first[dup].dtype, first[dup].shape, first[dup].data))
    files[1].unlink()
    write_safetensors_raw(files[1], items)

    assert set(made) == set(CORRUPT_VARIANTS), set(made) ^ set(CORRUPT_VARIANTS)
    return made


# --------------------------------------------------------------------------- dense families (Gemma, Phi-3)

# Families whose checkpoints are made by make_dense_checkpoint (make_checkpoint hands them over).
# Their configs carry the keys of the published models (gemma-2b, gemma-2-2b, gemma-3-1b-it,
# Phi-3-mini-128k-instruct); sizes are the caller's.
DENSE_FAMILIES = ("gemma", "gemma2", "gemma3", "phi3")

_DENSE_ARCHITECTURES = {
    "gemma": "GemmaForCausalLM",
    "gemma2": "Gemma2ForCausalLM",
    "gemma3": "Gemma3ForCausalLM",
    "phi3": "Phi3ForCausalLM",
}

# Gemma's special tokens at the ids the published tokenizer gives them; then the 256 byte
# tokens, then the trained pieces.
_GEMMA_SPECIALS = ("<pad>", "<eos>", "<bos>", "<unk>", "<mask>", "<start_of_turn>", "<end_of_turn>")

_GEMMA_CORPUS = (
    "The quick brown fox jumps over the lazy dog.",
    "Gemma is a family of lightweight, state-of-the-art open models.",
    "Quantization stores each weight in fewer bits, trading accuracy for size.",
    "In the beginning the Universe was created. This has made a lot of people very angry.",
    "  Two spaces, a\ttab, and\nnew lines\n\n   keep their shape.",
    "Numbers like 3.14159, 2024 and 1,000,000 appear in text too.",
    "def main():\n    print('hello, world')\n    return 0",
    "Café, naïve, Straße, добрый день, 你好世界, こんにちは.",
)


@functools.lru_cache(maxsize=2)
def gemma_tokenizer_json(split_on_space: bool = False) -> str:
    """A small Gemma-style tokenizer.json, made with the `tokenizers` library: SentencePiece BPE
    as transformers converts Gemma's (byte fallback, spaces replaced by U+2581 in the normalizer,
    no pre-tokenizer, no prefix space), special tokens first, then <0x00>..<0xFF>, then the
    pieces and merges trained on a few sentences. split_on_space adds the pre-tokenizer newer
    transformers versions write for Gemma (Gemma 3's published file): Split(" ",
    merged_with_previous)."""
    from tokenizers import AddedToken, Tokenizer, decoders, models, normalizers, trainers

    trained = Tokenizer(models.BPE())
    trained.normalizer = normalizers.Replace(" ", "\u2581")
    trainer = trainers.BpeTrainer(vocab_size=700, show_progress=False, special_tokens=[])
    trained.train_from_iterator(list(_GEMMA_CORPUS) * 4, trainer)
    model = json.loads(trained.to_str())["model"]
    pieces = sorted(model["vocab"].items(), key=lambda kv: kv[1])
    vocab = {t: i for i, t in enumerate(_GEMMA_SPECIALS)}
    for b in range(256):
        vocab[f"<0x{b:02X}>"] = len(vocab)
    for piece, _ in pieces:
        if piece not in vocab:
            vocab[piece] = len(vocab)
    merges = [tuple(m.split(" ", 1)) if isinstance(m, str) else tuple(m) for m in model["merges"]]
    tok = Tokenizer(models.BPE(vocab=vocab, merges=merges, unk_token="<unk>", byte_fallback=True,
                               fuse_unk=True))
    tok.normalizer = normalizers.Replace(" ", "\u2581")
    if split_on_space:
        from tokenizers import pre_tokenizers
        tok.pre_tokenizer = pre_tokenizers.Split(" ", "merged_with_previous")
    tok.decoder = decoders.Sequence([decoders.Replace("\u2581", " "), decoders.ByteFallback(),
                                     decoders.Fuse()])
    tok.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in _GEMMA_SPECIALS])
    return tok.to_str(pretty=True)


def _gemma_tokenizer_config() -> dict:
    decoder = {str(i): {"content": t, "lstrip": False, "normalized": False, "rstrip": False,
                        "single_word": False, "special": True} for i, t in enumerate(_GEMMA_SPECIALS)}
    return {
        "add_bos_token": True,
        "add_eos_token": False,
        "added_tokens_decoder": decoder,
        "bos_token": "<bos>",
        "clean_up_tokenization_spaces": False,
        "eos_token": "<eos>",
        "model_max_length": 1000000000000000019884624838656,
        "pad_token": "<pad>",
        "sp_model_kwargs": {},
        "spaces_between_special_tokens": False,
        "tokenizer_class": "GemmaTokenizer",
        "unk_token": "<unk>",
        "use_default_system_prompt": False,
    }


def _dense_config(family, *, hidden, layers, heads, kv_heads, intermediate, head_dim, vocab_size,
                  tied, torch_dtype, rope_scaling, n_ctx) -> dict:
    c: dict = {"architectures": [_DENSE_ARCHITECTURES[family]]}
    if family in ("gemma", "gemma2", "gemma3"):
        c.update({
            "attention_bias": False,
            "attention_dropout": 0.0,
            "bos_token_id": 2,
            "eos_token_id": 1,
            "head_dim": head_dim,
            "hidden_act": "gelu_pytorch_tanh",
            "hidden_activation": "gelu_pytorch_tanh",
            "hidden_size": hidden,
            "initializer_range": 0.02,
            "intermediate_size": intermediate,
            "max_position_embeddings": n_ctx or (32768 if family == "gemma3" else 8192),
            "model_type": "gemma3_text" if family == "gemma3" else family,
            "num_attention_heads": heads,
            "num_hidden_layers": layers,
            "num_key_value_heads": kv_heads,
            "pad_token_id": 0,
            "rms_norm_eps": 1e-06,
            "rope_scaling": rope_scaling,
            "rope_theta": 1000000.0 if family == "gemma3" else 10000.0,
            "torch_dtype": torch_dtype,
            "transformers_version": _TRANSFORMERS_VERSION,
            "use_cache": True,
            "vocab_size": vocab_size,
        })
        if family == "gemma2":
            c.update({"attn_logit_softcapping": 50.0, "cache_implementation": "hybrid",
                      "final_logit_softcapping": 30.0, "query_pre_attn_scalar": head_dim,
                      "sliding_window": 4096})
        if family == "gemma3":
            c.update({"attn_logit_softcapping": None, "cache_implementation": "hybrid",
                      "final_logit_softcapping": None, "query_pre_attn_scalar": head_dim,
                      "rope_local_base_freq": 10000.0, "sliding_window": 512,
                      "sliding_window_pattern": 6})
        if family == "gemma3" or not tied:
            c["tie_word_embeddings"] = bool(tied)
        return dict(sorted(c.items()))
    # phi3: Phi-3-mini-128k-instruct's keys
    c.update({
        "attention_bias": False,
        "attention_dropout": 0.0,
        "bos_token_id": 1,
        "embd_pdrop": 0.0,
        "eos_token_id": 32000,
        "hidden_act": "silu",
        "hidden_size": hidden,
        "initializer_range": 0.02,
        "intermediate_size": intermediate,
        "max_position_embeddings": n_ctx or 131072,
        "model_type": "phi3",
        "num_attention_heads": heads,
        "num_hidden_layers": layers,
        "num_key_value_heads": kv_heads,
        "original_max_position_embeddings": 4096,
        "pad_token_id": 32000,
        "resid_pdrop": 0.0,
        "rms_norm_eps": 1e-05,
        "rope_scaling": rope_scaling,
        "rope_theta": 10000.0,
        "sliding_window": 262144,
        "tie_word_embeddings": bool(tied),
        "torch_dtype": torch_dtype,
        "transformers_version": _TRANSFORMERS_VERSION,
        "use_cache": True,
        "vocab_size": vocab_size,
    })
    return c


def phi3_longrope(head_dim: int) -> dict:
    """A Phi-3 128k style rope_scaling: longrope with head_dim / 2 long and short factors."""
    n = head_dim // 2
    return {"type": "longrope",
            "long_factor": [round(1.0 + 0.5 * i, 4) for i in range(n)],
            "short_factor": [round(1.0 + 0.01 * i, 4) for i in range(n)]}


def _dense_tensors(family, *, hidden, layers, heads, kv_heads, intermediate, head_dim, vocab_size,
                   tied, seed):
    """{name: array} of a dense family's checkpoint, with the published models' tensor names.
    Gemma's norm weights are stored as offsets from 1 (HF's GemmaRMSNorm scales by 1 + w)."""
    gemma = family != "phi3"
    t = {"model.embed_tokens.weight": _gaussian(seed, "model.embed_tokens.weight", (vocab_size, hidden))}
    q_out, kv_out = heads * head_dim, kv_heads * head_dim

    def norm(name, n):
        return _gaussian(seed, name, (n,), std=0.1) if gemma else _norm(seed, name, n)

    for i in range(layers):
        p = f"model.layers.{i}."
        mats = []
        if family == "phi3":
            mats.append(("self_attn.qkv_proj.weight", (q_out + 2 * kv_out, hidden)))
            mats.append(("mlp.gate_up_proj.weight", (2 * intermediate, hidden)))
        else:
            mats += [("self_attn.q_proj.weight", (q_out, hidden)),
                     ("self_attn.k_proj.weight", (kv_out, hidden)),
                     ("self_attn.v_proj.weight", (kv_out, hidden)),
                     ("mlp.gate_proj.weight", (intermediate, hidden)),
                     ("mlp.up_proj.weight", (intermediate, hidden))]
        mats += [("self_attn.o_proj.weight", (hidden, q_out)),
                 ("mlp.down_proj.weight", (hidden, intermediate))]
        for name, shape in mats:
            t[p + name] = _gaussian(seed, p + name, shape)
        norms = ["input_layernorm", "post_attention_layernorm"]
        if family in ("gemma2", "gemma3"):
            norms += ["pre_feedforward_layernorm", "post_feedforward_layernorm"]
        for name in norms:
            t[p + name + ".weight"] = norm(p + name + ".weight", hidden)
        if family == "gemma3":
            for name in ("self_attn.q_norm.weight", "self_attn.k_norm.weight"):
                t[p + name] = norm(p + name, head_dim)
    t["model.norm.weight"] = norm("model.norm.weight", hidden)
    if not tied:
        t["lm_head.weight"] = _gaussian(seed, "lm_head.weight", (vocab_size, hidden))
    return t


# Phi-3's added tokens (ids 32000..32010) on top of Llama-2's SentencePiece vocabulary; llama.cpp
# looks <|endoftext|> up by text for any model whose name says phi3.
_PHI3_ADDED = ("<|endoftext|>", "<|assistant|>", "<|placeholder1|>", "<|placeholder2|>",
               "<|placeholder3|>", "<|placeholder4|>", "<|system|>", "<|end|>", "<|placeholder5|>",
               "<|placeholder6|>", "<|user|>")


def _write_phi3_tokenizer(out: Path) -> None:
    tj = json.loads((TOKENIZER_DIR / "llama2" / "tokenizer.json").read_text(encoding="utf-8"))
    tc = json.loads((TOKENIZER_DIR / "llama2" / "tokenizer_config.json").read_text(encoding="utf-8"))
    for k, text in enumerate(_PHI3_ADDED):
        entry = {"content": text, "lstrip": False, "normalized": False, "rstrip": k > 0,
                 "single_word": False, "special": True}
        tj["added_tokens"].append({"id": 32000 + k, **entry})
        tc["added_tokens_decoder"][str(32000 + k)] = entry
    tc.update({"eos_token": "<|endoftext|>", "pad_token": "<|endoftext|>", "legacy": False})
    (out / "tokenizer.json").write_text(json.dumps(tj, ensure_ascii=False, indent=2) + "\n", encoding="utf-8")
    (out / "tokenizer_config.json").write_text(json.dumps(tc, indent=2) + "\n", encoding="utf-8")


def make_dense_checkpoint(out_dir, family, *, tied=None, dtype="bf16", hidden=256, layers=2,
                          heads=4, kv_heads=None, intermediate=None, head_dim=None, vocab_size=None,
                          rope_scaling=None, n_ctx=None, seed=0, config_overrides=None,
                          tokenizer=None, shards=1) -> Path:
    """A Gemma (1, 2, 3) or Phi-3 checkpoint at `out_dir`, one safetensors file.

    Gemma families get gemma_tokenizer_json() (vocab_size defaults to its size; Gemma 1/2 are tied
    and carry no lm_head); phi3 the llama2 fixture tokenizer (Phi-3's is Llama-2's SentencePiece
    vocabulary) with 32064 embedding rows, as published. head_dim defaults to hidden // heads,
    kv_heads to 1 for Gemma (multi-query) and to heads for Phi-3."""
    if family not in DENSE_FAMILIES:
        raise ValueError(f"unknown dense family {family!r}; expected one of {DENSE_FAMILIES}")
    if shards != 1:
        raise ValueError("dense family checkpoints are written as one file")
    st_dtype = _DTYPE_ALIASES.get(str(dtype).lower(), dtype)
    gemma = family != "phi3"
    if tied is None:
        tied = gemma
    if gemma and family != "gemma3" and not tied:
        raise ValueError(f"{family} checkpoints always tie lm_head to the embedding")
    if kv_heads is None:
        kv_heads = 1 if gemma else heads
    head_dim = head_dim or hidden // heads
    if intermediate is None:
        intermediate = 4 * hidden if gemma else -(-(hidden * 8 // 3) // 256) * 256
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    if gemma:
        tj = gemma_tokenizer_json(split_on_space=family == "gemma3")
        tok_size = len(json.loads(tj)["model"]["vocab"])
        (out / "tokenizer.json").write_text(tj, encoding="utf-8")
        (out / "tokenizer_config.json").write_text(json.dumps(_gemma_tokenizer_config(), indent=2) + "\n",
                                                   encoding="utf-8")
    else:
        tok_size = 32064
        _write_phi3_tokenizer(out)
    vocab_size = vocab_size or tok_size
    config = _dense_config(family, hidden=hidden, layers=layers, heads=heads, kv_heads=kv_heads,
                           intermediate=intermediate, head_dim=head_dim, vocab_size=vocab_size,
                           tied=tied, torch_dtype=_TORCH_DTYPE_NAMES[st_dtype],
                           rope_scaling=rope_scaling, n_ctx=n_ctx)
    _apply_overrides(config, config_overrides)
    (out / "config.json").write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")
    (out / "generation_config.json").write_text(json.dumps(_generation_config(config), indent=2) + "\n",
                                                encoding="utf-8")
    tensors = _dense_tensors(family, hidden=hidden, layers=layers, heads=heads, kv_heads=kv_heads,
                             intermediate=intermediate, head_dim=head_dim, vocab_size=vocab_size,
                             tied=tied, seed=seed)
    write_safetensors(out / "model.safetensors", dict(sorted(tensors.items())), st_dtype)
    return out


# --------------------------------------------------------------------------- Gemma 3 multimodal

# Tensor-name prefixes of the text model in a Gemma3ForConditionalGeneration checkpoint:
# transformers < 4.52 saved "language_model.model.*" and "language_model.lm_head", newer versions
# "model.language_model.*" and a top-level "lm_head"; the vision tower and projector move alike.
GEMMA3_MM_LAYOUTS = {
    "old": dict(text="language_model.model.", lm_head="language_model.lm_head.weight", other=""),
    "new": dict(text="model.language_model.", lm_head="lm_head.weight", other="model."),
}


def _siglip_tensors(seed, prefix, *, hidden, intermediate, layers, patch, n_patches):
    """A tiny SigLIP vision tower (the names transformers' SiglipVisionModel uses)."""
    p = prefix + "vision_model."
    shapes = {p + "embeddings.patch_embedding.weight": (hidden, 3, patch, patch),
              p + "embeddings.patch_embedding.bias": (hidden,),
              p + "embeddings.position_embedding.weight": (n_patches, hidden),
              p + "post_layernorm.weight": (hidden,), p + "post_layernorm.bias": (hidden,)}
    for i in range(layers):
        q = f"{p}encoder.layers.{i}."
        for proj in ("q_proj", "k_proj", "v_proj", "out_proj"):
            shapes[q + f"self_attn.{proj}.weight"] = (hidden, hidden)
            shapes[q + f"self_attn.{proj}.bias"] = (hidden,)
        for norm in ("layer_norm1", "layer_norm2"):
            shapes[q + norm + ".weight"] = (hidden,)
            shapes[q + norm + ".bias"] = (hidden,)
        shapes[q + "mlp.fc1.weight"] = (intermediate, hidden)
        shapes[q + "mlp.fc1.bias"] = (intermediate,)
        shapes[q + "mlp.fc2.weight"] = (hidden, intermediate)
        shapes[q + "mlp.fc2.bias"] = (hidden,)
    return {name: _gaussian(seed, name, shape) for name, shape in shapes.items()}


def make_gemma3_multimodal_checkpoint(out_dir, *, layout="old", dtype="bf16", hidden=256,
                                      layers=2, intermediate=512, extra_rows=64, tied=True,
                                      text_overrides=None, config_overrides=None,
                                      seed=0) -> Path:
    """A tiny Gemma3ForConditionalGeneration checkpoint shaped like google/gemma-3-4b-it's.

    config.json nests the text model's hyperparameters in `text_config` and, as the published
    file does, leaves most of them to Gemma3TextConfig's defaults (num_attention_heads 8,
    num_key_value_heads 4, head_dim 256, rms_norm_eps, rope_theta, rope_local_base_freq,
    max_position_embeddings, sliding_window_pattern, query_pre_attn_scalar), with linear rope
    scaling (factor 8) and a sliding window. The weights hold the text model under `layout`'s
    prefixes (GEMMA3_MM_LAYOUTS), a SigLIP vision tower and the multimodal projector. The
    tokenizer is gemma_tokenizer_json(split_on_space=True) plus "<image_soft_token>" added
    after its vocabulary (as Gemma 3's id 262144), and the embedding has `extra_rows` rows past
    the tokenizer's vocabulary (as 262208 vs 262144). text_overrides / config_overrides set keys
    of text_config / the top level (Ellipsis removes one; a non-dict text_overrides replaces
    text_config whole)."""
    names = GEMMA3_MM_LAYOUTS[layout]
    st_dtype = _DTYPE_ALIASES.get(str(dtype).lower(), dtype)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tj = json.loads(gemma_tokenizer_json(split_on_space=True))
    n_vocab = len(tj["model"]["vocab"])
    image_token = {"id": n_vocab, "content": "<image_soft_token>", "single_word": False,
                   "lstrip": False, "rstrip": False, "normalized": False, "special": True}
    tj["added_tokens"].append(image_token)
    (out / "tokenizer.json").write_text(json.dumps(tj, ensure_ascii=False, indent=2),
                                        encoding="utf-8")
    tc = _gemma_tokenizer_config()
    tc["added_tokens_decoder"][str(n_vocab)] = {k: v for k, v in image_token.items() if k != "id"}
    (out / "tokenizer_config.json").write_text(json.dumps(tc, indent=2) + "\n", encoding="utf-8")

    rows = n_vocab + extra_rows
    heads, kv_heads, head_dim = 8, 4, 256  # Gemma3TextConfig's defaults, which the config omits
    text_config = {"hidden_size": hidden, "intermediate_size": intermediate,
                   "model_type": "gemma3_text", "num_hidden_layers": layers,
                   "rope_scaling": {"factor": 8.0, "rope_type": "linear"},
                   "sliding_window": 512, "vocab_size": rows}
    if not tied:
        text_config["tie_word_embeddings"] = False
    vision = dict(hidden=32, intermediate=64, layers=1, patch=14, n_patches=4)
    config = {
        "architectures": ["Gemma3ForConditionalGeneration"],
        "boi_token_index": 5, "eoi_token_index": 6, "eos_token_id": [1, 6],
        "image_token_index": n_vocab, "initializer_range": 0.02, "mm_tokens_per_image": 4,
        "model_type": "gemma3", "text_config": text_config,
        "torch_dtype": _TORCH_DTYPE_NAMES[st_dtype], "transformers_version": "4.50.0.dev0",
        "vision_config": {"hidden_size": vision["hidden"], "image_size": 28,
                          "intermediate_size": vision["intermediate"],
                          "model_type": "siglip_vision_model", "num_attention_heads": 2,
                          "num_hidden_layers": vision["layers"], "patch_size": vision["patch"],
                          "vision_use_head": False},
    }
    if text_overrides is not None and not isinstance(text_overrides, dict):
        config["text_config"] = text_overrides
    else:
        for k, v in (text_overrides or {}).items():
            if v is Ellipsis:
                text_config.pop(k, None)
            else:
                text_config[k] = v
    _apply_overrides(config, config_overrides)
    (out / "config.json").write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")
    (out / "generation_config.json").write_text(json.dumps(
        {"bos_token_id": 2, "eos_token_id": [1, 6], "transformers_version": "4.50.0.dev0"},
        indent=2) + "\n", encoding="utf-8")

    text = _dense_tensors("gemma3", hidden=hidden, layers=layers, heads=heads,
                          kv_heads=kv_heads, intermediate=intermediate, head_dim=head_dim,
                          vocab_size=rows, tied=tied, seed=seed)
    tensors = {}
    for name, a in text.items():
        if name == "lm_head.weight":
            tensors[names["lm_head"]] = a
        else:
            tensors[names["text"] + name[len("model."):]] = a
    tensors.update(_siglip_tensors(seed, names["other"] + "vision_tower.", **vision))
    mmp = names["other"] + "multi_modal_projector."
    tensors[mmp + "mm_input_projection_weight"] = _gaussian(seed, "mmp", (vision["hidden"], hidden))
    tensors[mmp + "mm_soft_emb_norm.weight"] = _gaussian(seed, "mmn", (vision["hidden"],), std=0.1)
    write_safetensors(out / "model.safetensors", dict(sorted(tensors.items())), st_dtype)
    return out


# --------------------------------------------------------------------------- BERT encoders

BERT_SPECIALS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")


def bert_tokenizer_json() -> str:
    """A small BERT-style tokenizer.json, made with the `tokenizers` library: WordPiece trained on
    a few sentences ("##" continuations), BERT's normalizer (lowercase, accents stripped),
    pre-tokenizer and [CLS] ... [SEP] template, the five special tokens first."""
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, \
        trainers

    tok = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    trainer = trainers.WordPieceTrainer(vocab_size=600, special_tokens=list(BERT_SPECIALS),
                                        show_progress=False)
    tok.train_from_iterator(list(_GEMMA_CORPUS) * 4, trainer)
    cls, sep = tok.token_to_id("[CLS]"), tok.token_to_id("[SEP]")
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", cls), ("[SEP]", sep)])
    tok.decoder = decoders.WordPiece()
    return tok.to_str(pretty=True)


def make_bert_checkpoint(out_dir, *, hidden=64, layers=2, heads=4, intermediate=None,
                         dtype="bf16", hidden_act="gelu", max_positions=128, type_vocab=2,
                         head="", seed=0, config_overrides=None) -> Path:
    """A BERT encoder checkpoint at `out_dir` (one safetensors file) with bert_tokenizer_json().

    head "" writes a BertModel (names without prefix, a pooler); "mlm" a BertForMaskedLM: the
    encoder under "bert.", no pooler, and the masked-LM head's "cls.predictions.*" tensors.
    Weights are drawn with a larger spread than BERT's 0.02 initialisation so attention is far from
    uniform and a masking mistake shows in the outputs."""
    if head not in ("", "mlm"):
        raise ValueError(f"unknown head {head!r}; expected '' or 'mlm'")
    st_dtype = _DTYPE_ALIASES.get(str(dtype).lower(), dtype)
    intermediate = intermediate or 4 * hidden
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tj = bert_tokenizer_json()
    vocab_size = len(json.loads(tj)["model"]["vocab"])
    (out / "tokenizer.json").write_text(tj, encoding="utf-8")
    (out / "tokenizer_config.json").write_text(json.dumps({
        "cls_token": "[CLS]", "sep_token": "[SEP]", "pad_token": "[PAD]", "unk_token": "[UNK]",
        "mask_token": "[MASK]", "do_lower_case": True, "model_max_length": max_positions,
        "tokenizer_class": "BertTokenizer"}, indent=2) + "\n", encoding="utf-8")
    config = {
        "architectures": ["BertForMaskedLM" if head == "mlm" else "BertModel"],
        "attention_probs_dropout_prob": 0.1, "classifier_dropout": None,
        "hidden_act": hidden_act, "hidden_dropout_prob": 0.1, "hidden_size": hidden,
        "initializer_range": 0.02, "intermediate_size": intermediate, "layer_norm_eps": 1e-12,
        "max_position_embeddings": max_positions, "model_type": "bert",
        "num_attention_heads": heads, "num_hidden_layers": layers, "pad_token_id": 0,
        "position_embedding_type": "absolute", "torch_dtype": _TORCH_DTYPE_NAMES[st_dtype],
        "transformers_version": _TRANSFORMERS_VERSION, "type_vocab_size": type_vocab,
        "use_cache": True, "vocab_size": vocab_size,
    }
    _apply_overrides(config, config_overrides)
    (out / "config.json").write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")
    p = "bert." if head == "mlm" else ""
    t = {}

    def dense(name, rows, cols, std=0.08):
        t[f"{name}.weight"] = _gaussian(seed, f"{name}.weight", (rows, cols), std)
        t[f"{name}.bias"] = _gaussian(seed, f"{name}.bias", (rows,), 0.05)

    def layer_norm(name, n):
        t[f"{name}.weight"] = _norm(seed, f"{name}.weight", n)
        t[f"{name}.bias"] = _gaussian(seed, f"{name}.bias", (n,), 0.05)

    for name, rows in (("word", vocab_size), ("position", max_positions), ("token_type", type_vocab)):
        key = f"{p}embeddings.{name}_embeddings.weight"
        t[key] = _gaussian(seed, key, (rows, hidden), 0.5)
    layer_norm(f"{p}embeddings.LayerNorm", hidden)
    for i in range(layers):
        L = f"{p}encoder.layer.{i}"
        for part in ("query", "key", "value"):
            dense(f"{L}.attention.self.{part}", hidden, hidden, 0.25 if part != "value" else 0.08)
        dense(f"{L}.attention.output.dense", hidden, hidden)
        layer_norm(f"{L}.attention.output.LayerNorm", hidden)
        dense(f"{L}.intermediate.dense", intermediate, hidden)
        dense(f"{L}.output.dense", hidden, intermediate)
        layer_norm(f"{L}.output.LayerNorm", hidden)
    if head == "mlm":
        dense("cls.predictions.transform.dense", hidden, hidden)
        layer_norm("cls.predictions.transform.LayerNorm", hidden)
        t["cls.predictions.bias"] = _gaussian(seed, "cls.predictions.bias", (vocab_size,), 0.05)
    else:
        dense("pooler.dense", hidden, hidden)
    write_safetensors(out / "model.safetensors", dict(sorted(t.items())), st_dtype)
    return out
