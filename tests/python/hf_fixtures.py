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
            head_dim_given, vocab_size, tied, dtype, rope_scaling) -> dict:
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
    else:
        raise ValueError(f"unknown family {family!r}; expected one of {FAMILIES}")
    return c


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


def _model_tensors(family, *, hidden, layers, heads, kv_heads, intermediate, head_dim, vocab_size,
                   tied, seed):
    """[(group, name, array)] in module order; group is 'embed', a layer index, or 'final'."""
    out = [("embed", "model.embed_tokens.weight", _gaussian(seed, "model.embed_tokens.weight", (vocab_size, hidden)))]
    q_out, kv_out = heads * head_dim, kv_heads * head_dim
    for i in range(layers):
        p = f"model.layers.{i}."
        t = []
        t.append((p + "self_attn.q_proj.weight", (q_out, hidden), "w"))
        if family == "qwen2":
            t.append((p + "self_attn.q_proj.bias", (q_out,), "w"))
        t.append((p + "self_attn.k_proj.weight", (kv_out, hidden), "w"))
        if family == "qwen2":
            t.append((p + "self_attn.k_proj.bias", (kv_out,), "w"))
        t.append((p + "self_attn.v_proj.weight", (kv_out, hidden), "w"))
        if family == "qwen2":
            t.append((p + "self_attn.v_proj.bias", (kv_out,), "w"))
        t.append((p + "self_attn.o_proj.weight", (hidden, q_out), "w"))
        if family == "qwen3":
            t.append((p + "self_attn.q_norm.weight", (head_dim,), "n"))
            t.append((p + "self_attn.k_norm.weight", (head_dim,), "n"))
        t.append((p + "mlp.gate_proj.weight", (intermediate, hidden), "w"))
        t.append((p + "mlp.up_proj.weight", (intermediate, hidden), "w"))
        t.append((p + "mlp.down_proj.weight", (hidden, intermediate), "w"))
        t.append((p + "input_layernorm.weight", (hidden,), "n"))
        t.append((p + "post_attention_layernorm.weight", (hidden,), "n"))
        for name, shape, kind in t:
            arr = _norm(seed, name, shape[0]) if kind == "n" else _gaussian(seed, name, shape)
            out.append((i, name, arr))
    out.append(("final", "model.norm.weight", _norm(seed, "model.norm.weight", hidden)))
    if not tied:
        out.append(("final", "lm_head.weight", _gaussian(seed, "lm_head.weight", (vocab_size, hidden))))
    return out


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
                    rope_scaling=None, seed=0, config_overrides=None) -> Path:
    """Write a HuggingFace checkpoint directory at `out_dir` and return its path.

    family: "llama" | "mistral" | "qwen2" | "qwen3"; tokenizer: "llama2" | "llama3" | "qwen3".
    dtype: "bf16" | "f16" | "f32" (also "BF16", "float16", ...).
    kv_heads defaults to `heads` for llama with the llama2 tokenizer (Llama-2 is MHA) and to
    heads // 2 otherwise; head_dim to hidden // heads; intermediate to 8/3 * hidden rounded up to
    a multiple of 256; vocab_size to the tokenizer's full size (it may be larger, never smaller).
    rope_scaling is written as given (e.g. Llama-3 {"rope_type": "llama3", ...}).
    config_overrides: keys to set (or, with value ..., i.e. Ellipsis, to delete) in config.json after
    it is built, for tests that need one unusual key.
    Within each file tensors are sorted by name, as the reference safetensors writer orders them;
    shards hold contiguous runs of the model's modules (embedding, layers, final norm + head) and the
    index's weight_map is sorted by tensor name, as transformers writes it.
    """
    if family not in FAMILIES:
        raise ValueError(f"unknown family {family!r}; expected one of {FAMILIES}")
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
                     vocab_size=vocab_size, tied=bool(tied), dtype=st_dtype, rope_scaling=rope_scaling)
    for k, v in (config_overrides or {}).items():
        if v is Ellipsis:
            config.pop(k, None)
        else:
            config[k] = v
    (out / "config.json").write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")
    (out / "generation_config.json").write_text(json.dumps(_generation_config(config), indent=2) + "\n",
                                                encoding="utf-8")
    for f in sorted((TOKENIZER_DIR / tokenizer).iterdir()):
        if f.is_file():
            shutil.copyfile(f, out / f.name)
            os.chmod(out / f.name, 0o644)

    entries = _model_tensors(family, hidden=hidden, layers=layers, heads=heads, kv_heads=kv_heads,
                             intermediate=intermediate, head_dim=head_dim, vocab_size=vocab_size,
                             tied=bool(tied), seed=seed)
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
