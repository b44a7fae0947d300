"""What llama.cpp's convert_hf_to_gguf.py would write for a HF checkpoint, computed in numpy.

An oracle independent of qwodel's C code and of llama.cpp's Python (neither torch nor
transformers is needed). It covers the dense families qwodel converts first:

  architectures[0]             converter class   Q/K permutation   rope_freqs
  LlamaForCausalLM             LlamaModel        yes               if rope type llama3
  MistralForCausalLM           LlamaModel        yes               if rope type llama3
  Qwen2ForCausalLM             Qwen2Model        no                no
  Qwen3ForCausalLM             Qwen3Model        no                no

Facts taken from llama.cpp's converter (conversion/base.py, llama.py, qwen.py; the same
rules as the older single-file convert_hf_to_gguf.py), checked by reading it:

* names: model.embed_tokens -> token_embd, model.norm -> output_norm, lm_head -> output,
  model.layers.N.{input_layernorm -> attn_norm, post_attention_layernorm -> ffn_norm,
  self_attn.{q,k,v,o}_proj -> attn_q/attn_k/attn_v/attn_output,
  self_attn.{q,k}_norm -> attn_q_norm/attn_k_norm, mlp.{gate,up,down}_proj ->
  ffn_gate/ffn_up/ffn_down}, .weight/.bias kept; rotary_emb.inv_freq is dropped.
* LlamaModel permutes q_proj and k_proj, weights and biases alike, with n_head for Q and
  n_head_kv for K: rows viewed as (H, 2, hd/2, ...) have axes 1 and 2 swapped, i.e. output
  row h*hd + 2*j + k is input row h*hd + k*hd/2 + j (HF's rotate-half order -> interleaved).
* rope_freqs.weight (F32, hd/2 values) comes first, before the checkpoint's tensors, when the
  rope scaling's rope_type (or legacy "type") is "llama3": for each rope frequency
  f_i = 1 / theta**(2i/hd) with wavelength w = 2*pi/f_i it is 1 if w < orig/high, `factor` if
  w > orig/low, else 1/((1-s)/factor + s) with s = (orig/w - low)/(high - low). factor, low and
  high come from the rope scaling dict (defaults 8, 1, 4) but `orig` is read from the
  TOP-LEVEL config key original_max_position_embeddings (default 8192), not from inside
  rope_scaling -- a quirk of the converter that is invisible for the real Llama-3.x configs
  (theirs is 8192 either way). The converter computes these in float32 torch arithmetic;
  this module does the same steps in float32, so expect agreement to ~1 ulp, not bit-exactly.
* types: a tensor is F32 if it is 1-D, or its GGUF name ends in "_norm.weight", or its GGUF
  name does not end in ".weight" (biases); every other tensor, token_embd and output included,
  gets the output type.
* lm_head: the converter writes `output.weight` whenever the checkpoint has lm_head.weight and
  never otherwise; it does not look at tie_word_embeddings. Tied checkpoints as transformers
  saves them (and as hf_fixtures makes them) have no lm_head, so they get no output tensor.

Values are the source values as float32 (bf16 and f16 upcast exactly), already permuted; use
`stored_values` to round them the way the chosen output type stores them. Shapes are the numpy
shapes gguf's GGUFReader gives (the GGUF ne reversed): [out, in] for 2-D weights as in HF.
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import numpy as np

try:  # run as a module of the tests package or as a plain file next to hf_fixtures.py
    from . import hf_fixtures as _hf
except ImportError:  # pragma: no cover
    import hf_fixtures as _hf  # type: ignore[no-redef]

__all__ = [
    "GGML_TYPE_IDS",
    "PERMUTED_ARCHITECTURES",
    "SUPPORTED_ARCHITECTURES",
    "gguf_name",
    "permute_rows",
    "llama3_rope_freqs",
    "expected_tensors",
    "stored_values",
]

# ggml type ids of the output types this oracle can be asked for (ggml.h).
GGML_TYPE_IDS = {"F32": 0, "F16": 1, "Q8_0": 8, "BF16": 30}

PERMUTED_ARCHITECTURES = ("LlamaForCausalLM", "MistralForCausalLM")
SUPPORTED_ARCHITECTURES = PERMUTED_ARCHITECTURES + ("Qwen2ForCausalLM", "Qwen3ForCausalLM")

_LAYER_MAP = {
    "input_layernorm": "attn_norm",
    "post_attention_layernorm": "ffn_norm",
    "self_attn.q_proj": "attn_q",
    "self_attn.k_proj": "attn_k",
    "self_attn.v_proj": "attn_v",
    "self_attn.o_proj": "attn_output",
    "self_attn.q_norm": "attn_q_norm",
    "self_attn.k_norm": "attn_k_norm",
    "mlp.gate_proj": "ffn_gate",
    "mlp.up_proj": "ffn_up",
    "mlp.down_proj": "ffn_down",
}
_TOP_MAP = {"model.embed_tokens": "token_embd", "model.norm": "output_norm", "lm_head": "output"}
_LAYER_RE = re.compile(r"^model\.layers\.(\d+)\.(.+)\.(weight|bias)$")
_TOP_RE = re.compile(r"^(.+)\.(weight|bias)$")


def gguf_name(hf_name: str) -> str | None:
    """GGUF name of a HF tensor name; None for a tensor the converter drops."""
    if hf_name.endswith("rotary_emb.inv_freq"):
        return None
    m = _LAYER_RE.match(hf_name)
    if m:
        bid, mod, suffix = m.groups()
        if mod not in _LAYER_MAP:
            raise ValueError(f"cannot map tensor {hf_name!r}")
        return f"blk.{int(bid)}.{_LAYER_MAP[mod]}.{suffix}"
    m = _TOP_RE.match(hf_name)
    if m and m.group(1) in _TOP_MAP:
        return f"{_TOP_MAP[m.group(1)]}.{m.group(2)}"
    raise ValueError(f"cannot map tensor {hf_name!r}")


def permute_rows(w: np.ndarray, n_head: int) -> np.ndarray:
    """The Llama Q/K row permutation, built as an explicit index (not a reshape).

    Within each head of hd = rows/n_head rows, output row 2*j + k takes input row k*hd/2 + j
    (j < hd/2, k in {0, 1}). Works for 2-D weights and 1-D biases.
    """
    rows = w.shape[0]
    if rows % n_head:
        raise ValueError(f"{rows} rows are not a multiple of {n_head} heads")
    hd = rows // n_head
    if hd % 2:
        raise ValueError(f"head size {hd} is odd")
    half = hd // 2
    src = np.empty(rows, dtype=np.int64)
    for h in range(n_head):
        for j in range(half):
            for k in range(2):
                src[h * hd + 2 * j + k] = h * hd + k * half + j
    return w[src]


def llama3_rope_freqs(config: dict) -> np.ndarray | None:
    """rope_freqs.weight for a config, or None when the converter writes none."""
    rope = config.get("rope_parameters") or config.get("rope_scaling") or {}
    rope = rope.get("full_attention", rope)
    rope_type = rope.get("rope_type", rope.get("type"))
    if not isinstance(rope_type, str) or rope_type.lower() != "llama3":
        return None
    base = float(rope.get("rope_theta", config.get("rope_theta", 10000.0)))
    dim = config.get("head_dim") or config["hidden_size"] // config["num_attention_heads"]
    factor = float(rope.get("factor", 8.0))
    low = float(rope.get("low_freq_factor", 1.0))
    high = float(rope.get("high_freq_factor", 4.0))
    orig = float(config.get("original_max_position_embeddings", 8192))  # top level, see module doc
    low_wavelen = orig / low
    high_wavelen = orig / high

    f32 = np.float32
    exps = np.arange(0, dim, 2, dtype=np.float32) / f32(dim)
    freqs = f32(1.0) / np.power(f32(base), exps, dtype=np.float32)
    out = np.empty(len(freqs), dtype=np.float32)
    for i, freq in enumerate(freqs):
        wavelen = f32(2 * math.pi) / freq
        if wavelen < high_wavelen:
            out[i] = 1.0
        elif wavelen > low_wavelen:
            out[i] = factor
        else:
            smooth = (f32(orig) / wavelen - f32(low)) / f32(high - low)
            out[i] = f32(1.0) / ((f32(1.0) - smooth) / f32(factor) + smooth)
    return out


def _read_config(hf_dir: Path) -> dict:
    config = json.loads((hf_dir / "config.json").read_text(encoding="utf-8"))
    if "text_config" in config:
        config = {**config, **config["text_config"]}
    return config


def _checkpoint_in_converter_order(hf_dir: Path):
    """(name, float32 array) in the order the converter reads them: part files sorted by name
    (from the index's weight_map when there is one), and within each file the tensors sorted
    by name, whatever the header's order (gguf.utility.SafetensorsLocal sorts them)."""
    index = hf_dir / "model.safetensors.index.json"
    if index.is_file():
        parts = sorted(set(json.loads(index.read_text(encoding="utf-8"))["weight_map"].values()))
    else:
        parts = sorted(p.name for p in hf_dir.iterdir()
                       if p.name.startswith("model") and p.name.endswith(".safetensors"))
    for part in parts:
        tensors = _hf.read_safetensors(hf_dir / part)
        for name in sorted(tensors):
            yield name, tensors[name]


def expected_tensors(hf_dir, outtype: str = "F16") -> dict:
    """{gguf_name: (float32 ndarray, ggml type name)} in the order the converter writes them.

    outtype is the converter's --outtype as a ggml type name: "F16" (default), "F32", "BF16"
    or "Q8_0"; it is the type of every tensor not forced to F32. (For Q8_0 the converter falls
    back to F16 for rows not a multiple of 32; that is applied here too.)
    """
    outtype = outtype.upper()
    if outtype not in GGML_TYPE_IDS:
        raise ValueError(f"unknown outtype {outtype!r}")
    hf_dir = Path(hf_dir)
    config = _read_config(hf_dir)
    archs = config.get("architectures") or []
    arch = archs[0] if archs else None
    if arch not in SUPPORTED_ARCHITECTURES:
        raise ValueError(f"architecture {arch!r} is not one this oracle models")
    permute = arch in PERMUTED_ARCHITECTURES
    n_head = config["num_attention_heads"]
    n_head_kv = config.get("num_key_value_heads") or n_head

    out: dict = {}
    if permute:
        freqs = llama3_rope_freqs(config)
        if freqs is not None:
            out["rope_freqs.weight"] = (freqs, "F32")

    for name, arr in _checkpoint_in_converter_order(hf_dir):
        new = gguf_name(name)
        if new is None:
            continue
        if permute and name.endswith(("self_attn.q_proj.weight", "self_attn.q_proj.bias")):
            arr = permute_rows(arr, n_head)
        elif permute and name.endswith(("self_attn.k_proj.weight", "self_attn.k_proj.bias")):
            arr = permute_rows(arr, n_head_kv)
        if arr.ndim <= 1 or new.endswith("_norm.weight") or not new.endswith(".weight"):
            qtype = "F32"
        else:
            qtype = outtype
            if qtype == "Q8_0" and arr.shape[-1] % 32:
                qtype = "F16"
        if new in out:
            raise ValueError(f"two tensors map to {new!r}")
        out[new] = (np.ascontiguousarray(arr, dtype=np.float32), qtype)
    return out


def stored_values(values: np.ndarray, qtype: str) -> np.ndarray:
    """float32 values as a GGUF tensor of type qtype holds them (F32, F16, BF16)."""
    v = np.asarray(values, dtype=np.float32)
    if qtype == "F32":
        return v
    if qtype == "F16":
        with np.errstate(over="ignore"):  # out-of-range values become inf, as in the file
            return v.astype(np.float16).astype(np.float32)
    if qtype == "BF16":
        return _hf.bf16_bits_to_float32(_hf.float32_to_bf16_bits(v)).reshape(v.shape)
    raise ValueError(f"stored_values does not model {qtype!r}")
