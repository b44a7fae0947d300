#!/usr/bin/env python3
"""Writes the fuzzers' seed corpora into OUT/<harness>/ (one folder per fuzz/fuzz_<harness>.c).

Seeds are generated, not committed: small GGUF, imatrix and safetensors files written with the
reference `gguf` package and by hand, HF configs from tests/python/hf_fixtures.py, the real
tokenizer.json fixtures cut down to a few hundred tokens (their whole pipelines kept),
SentencePiece models trained on a few lines with the `sentencepiece` package, and calibration
files. The tiny hand-made seeds committed under fuzz/seeds/<harness>/ are copied in as well.
Each generator is independent: a missing package skips its seeds with a note.

Usage: make_seeds.py OUT
"""
import json
import shutil
import struct
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
FIXTURES = REPO.parent / "shared" / "fixtures"
sys.path.insert(0, str(REPO / "tests" / "python"))


def put(out: Path, harness: str, name: str, data) -> None:
    d = out / harness
    d.mkdir(parents=True, exist_ok=True)
    (d / name).write_bytes(data.encode() if isinstance(data, str) else data)


# ---- GGUF and imatrix ------------------------------------------------------------------------

def gguf_bytes(build) -> bytes:
    import gguf
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "seed.gguf"
        w = gguf.GGUFWriter(str(path), arch=build.get("arch", "llama"))
        build["fill"](w)
        w.write_header_to_file()
        w.write_kv_data_to_file()
        w.write_tensors_to_file()
        w.close()
        return path.read_bytes()


def gguf_seeds(out: Path) -> None:
    import numpy as np
    import gguf

    def llama(w):
        w.add_name("seed")
        w.add_context_length(64)
        w.add_embedding_length(8)
        w.add_block_count(1)
        w.add_feed_forward_length(16)
        w.add_head_count(2)
        w.add_head_count_kv(1)
        w.add_rope_freq_base(10000.0)
        w.add_layer_norm_rms_eps(1e-5)
        w.add_file_type(1)
        w.add_tokenizer_model("gpt2")
        w.add_token_list(["a", "b", "ab", "<s>"])
        w.add_token_types([1, 1, 1, 3])
        w.add_token_merges(["a b"])
        w.add_bos_token_id(3)
        w.add_tensor("token_embd.weight", np.ones((4, 8), dtype=np.float16))
        w.add_tensor("output_norm.weight", np.ones(8, dtype=np.float32))
        w.add_tensor("blk.0.attn_q.weight", np.zeros((8, 34), dtype=np.uint8),
                     raw_dtype=gguf.GGMLQuantizationType.Q8_0)

    def llama_spm(w):  # a SentencePiece vocabulary: merges rebuilt from the scores
        w.add_context_length(64)
        w.add_embedding_length(8)
        w.add_block_count(1)
        w.add_feed_forward_length(16)
        w.add_head_count(2)
        w.add_head_count_kv(2)
        w.add_rope_dimension_count(4)
        w.add_layer_norm_rms_eps(1e-5)
        w.add_tokenizer_model("llama")
        w.add_token_list(["<unk>", "<s>", "</s>", "<0x41>", "\u2581a", "b", "\u2581ab"])
        w.add_token_scores([0.0, 0.0, 0.0, 0.0, -1.0, -2.0, -0.5])
        w.add_token_types([2, 3, 3, 6, 1, 1, 1])
        w.add_bos_token_id(1)
        w.add_eos_token_id(2)
        w.add_add_bos_token(True)
        w.add_chat_template("{{ messages }}")
        for name, shape in (("token_embd.weight", (7, 8)), ("output_norm.weight", (8,)),
                            ("blk.0.attn_norm.weight", (8,)), ("blk.0.attn_q.weight", (8, 8)),
                            ("blk.0.attn_k.weight", (8, 8)), ("blk.0.attn_v.weight", (8, 8)),
                            ("blk.0.attn_output.weight", (8, 8)), ("blk.0.ffn_norm.weight", (8,)),
                            ("blk.0.ffn_gate.weight", (16, 8)), ("blk.0.ffn_up.weight", (16, 8)),
                            ("blk.0.ffn_down.weight", (8, 16))):
            w.add_tensor(name, np.full(shape, 0.5, dtype=np.float32))

    def kinds(w):  # one key of every value type
        w.add_uint8("t.u8", 200)
        w.add_int8("t.i8", -3)
        w.add_uint16("t.u16", 60000)
        w.add_int16("t.i16", -300)
        w.add_uint32("t.u32", 7)
        w.add_int32("t.i32", -7)
        w.add_float32("t.f32", 0.5)
        w.add_bool("t.bool", True)
        w.add_string("t.str", "hello")
        w.add_uint64("t.u64", 1 << 40)
        w.add_int64("t.i64", -(1 << 40))
        w.add_float64("t.f64", 2.5)
        w.add_array("t.arr_i32", [1, 2, 3])
        w.add_array("t.arr_str", ["x", "yz"])
        w.add_tensor("bf16", np.zeros((2, 2), dtype=np.uint16), raw_shape=(2, 2),
                     raw_dtype=gguf.GGMLQuantizationType.BF16)

    def imatrix(w):
        w.add_type("imatrix")
        w.add_array("imatrix.datasets", ["calib.txt"])
        w.add_uint32("imatrix.chunk_count", 4)
        w.add_uint32("imatrix.chunk_size", 512)
        w.add_tensor("blk.0.attn_q.weight.in_sum2", np.arange(16, dtype=np.float32).reshape(2, 8))
        w.add_tensor("blk.0.attn_q.weight.counts", np.array([[4.0], [0.0]], dtype=np.float32))

    put(out, "gguf", "llama.gguf", gguf_bytes({"fill": llama}))
    put(out, "gguf", "kinds.gguf", gguf_bytes({"fill": kinds}))
    im = gguf_bytes({"fill": imatrix})
    put(out, "imatrix", "imatrix.gguf", im)
    put(out, "gguf", "imatrix.gguf", im)
    for f in sorted((out / "gguf").iterdir()):  # the same files as model sources
        if f.name != "imatrix.gguf":
            put(out, "gguf_model", f.name, f.read_bytes())
    put(out, "gguf_model", "llama_spm.gguf", gguf_bytes({"fill": llama_spm}))


def imatrix_dat_seeds(out: Path) -> None:
    def entry(name: bytes, ncall: int, values):
        return (struct.pack("<i", len(name)) + name + struct.pack("<ii", ncall, len(values)) +
                struct.pack(f"<{len(values)}f", *values))
    body = entry(b"blk.0.attn_q.weight", 2, [1.0, 2.0, 0.5, 4.0])
    body += entry(b"blk.0.ffn_up.weight", 0, [3.0, 1.0])
    put(out, "imatrix", "legacy.dat", struct.pack("<i", 2) + body)
    put(out, "imatrix", "legacy_trailer.dat",
        struct.pack("<i", 2) + body + struct.pack("<ii", 10, 9) + b"calib.txt")


# ---- safetensors and its index -----------------------------------------------------------------

def safetensors_bytes(tensors, metadata=None) -> bytes:
    header, data = {}, b""
    for name, dtype, shape, raw in tensors:
        header[name] = {"dtype": dtype, "shape": shape,
                        "data_offsets": [len(data), len(data) + len(raw)]}
        data += raw
    if metadata is not None:
        header["__metadata__"] = metadata
    h = json.dumps(header, separators=(",", ":")).encode()
    h += b" " * (-len(h) % 8)
    return struct.pack("<Q", len(h)) + h + data


def safetensors_seeds(out: Path) -> None:
    put(out, "safetensors", "f32.safetensors",
        safetensors_bytes([("w", "F32", [2, 2], bytes(16))], {"format": "pt"}))
    put(out, "safetensors", "mixed.safetensors", safetensors_bytes([
        ("model.embed_tokens.weight", "BF16", [4, 2], bytes(16)),
        ("model.norm.weight", "F16", [2], bytes(4)),
        ("scalar", "F64", [], bytes(8)),
        ("empty", "I32", [0, 3], b""),
        ("ids", "I64", [1], bytes(8)),
        ("q", "U8", [3], bytes(3)),
        ("b", "BOOL", [1], bytes(1)),
    ]))
    index = {"metadata": {"total_size": 108},
             "weight_map": {"model.embed_tokens.weight": "model-00001-of-00002.safetensors",
                            "model.norm.weight": "model-00001-of-00002.safetensors",
                            "model.layers.0.input_layernorm.weight":
                                "model-00002-of-00002.safetensors",
                            "model.layers.0.self_attn.q_proj.weight":
                                "model-00002-of-00002.safetensors"}}
    put(out, "st_index", "index.json", json.dumps(index, indent=2))
    one = dict(index, weight_map={k: v for k, v in index["weight_map"].items() if "0001" in v})
    put(out, "st_index", "one_shard.json", json.dumps(one))
    bad = dict(index, weight_map={"model.norm.weight": "../model-00001-of-00002.safetensors"})
    put(out, "st_index", "traversal.json", json.dumps(bad))


# ---- config.json ------------------------------------------------------------------------------

def config_seeds(out: Path) -> None:
    import hf_fixtures as hf
    small = dict(hidden=16, layers=2, heads=4, kv_heads=2, intermediate=32, head_dim=4,
                 head_dim_given=False, vocab_size=64, tied=False, dtype="BF16")
    for fam in hf.FAMILIES + hf.MOE_FAMILIES:
        tok = "llama3" if fam == "llama" else ("llama2" if fam in ("mistral", "mixtral")
                                               else "qwen3")
        try:
            moe = {"experts": 4, "experts_used": 2, "moe_intermediate": 8, "intermediate": 8,
                   "shared_intermediate": 16} if fam in hf.MOE_FAMILIES else None
            c = hf._config(fam, tok, rope_scaling=None, moe=moe, **small)
            put(out, "config", f"{fam}.json", json.dumps(c, indent=2))
            if fam == "llama":
                c["rope_scaling"] = {"rope_type": "llama3", "factor": 8.0,
                                     "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                                     "original_max_position_embeddings": 8192}
                put(out, "config", "llama3_rope.json", json.dumps(c, indent=2))
        except Exception as e:  # a fixture helper changed shape: that family's seed is skipped
            print(f"make_seeds: config {fam}: {e}", file=sys.stderr)
    for fam in getattr(hf, "DENSE_FAMILIES", ()):
        try:
            c = hf._dense_config(fam, hidden=16, layers=2, heads=4, kv_heads=2, intermediate=32,
                                 head_dim=4, vocab_size=64, tied=True, torch_dtype="bfloat16",
                                 rope_scaling=None, n_ctx=128)
            put(out, "config", f"{fam}.json", json.dumps(c, indent=2))
        except Exception as e:
            print(f"make_seeds: config {fam}: {e}", file=sys.stderr)
    put(out, "config", "gemma3_nested.json", json.dumps({
        "architectures": ["Gemma3ForConditionalGeneration"], "model_type": "gemma3",
        "text_config": {"hidden_size": 16, "intermediate_size": 32, "num_hidden_layers": 2,
                        "num_attention_heads": 4, "num_key_value_heads": 1, "head_dim": 4,
                        "sliding_window": 8, "rope_scaling": {"rope_type": "linear",
                                                               "factor": 8.0}},
        "vision_config": {"hidden_size": 8}}))
    put(out, "config", "rope_parameters.json", json.dumps({
        "architectures": ["Qwen3ForCausalLM"], "model_type": "qwen3", "hidden_size": 16,
        "intermediate_size": 32, "num_hidden_layers": 1, "num_attention_heads": 4,
        "num_key_value_heads": 2, "head_dim": 4, "vocab_size": 64, "rms_norm_eps": 1e-6,
        "rope_parameters": {"rope_type": "yarn", "rope_theta": 1e6, "factor": 4.0,
                            "original_max_position_embeddings": 32768}}))


# ---- tokenizer.json ----------------------------------------------------------------------------

def shrink_tokenizer(tok: dict, keep: int) -> dict:
    """The same pipeline over the first `keep` ids of the vocabulary and the merges they allow."""
    model = tok["model"]
    if isinstance(model.get("vocab"), dict):
        vocab = {t: i for t, i in model["vocab"].items() if i < keep}
        model["vocab"] = vocab
        merges = []
        for m in model.get("merges", []):
            a, b = m.split(" ", 1) if isinstance(m, str) else m
            if a in vocab and b in vocab and a + b in vocab:
                merges.append(m)
        model["merges"] = merges
    elif isinstance(model.get("vocab"), list):  # Unigram
        model["vocab"] = model["vocab"][:keep]
    tok["added_tokens"] = [dict(t, id=keep + i) for i, t in enumerate(tok.get("added_tokens",
                                                                              [])[:8])]
    pp = tok.get("post_processor")
    if pp:  # the special token ids the template names follow the renumbered added tokens
        by_content = {t["content"]: t["id"] for t in tok["added_tokens"]}
        stack = [pp]
        while stack:
            node = stack.pop()
            if isinstance(node, dict):
                if "ids" in node and "tokens" in node:
                    node["ids"] = [by_content.get(c, 0) for c in node["tokens"]]
                stack.extend(node.values())
            elif isinstance(node, list):
                stack.extend(node)
    return tok


def tokenizer_seeds(out: Path) -> None:
    for name in ("llama2", "llama3", "qwen3"):
        path = FIXTURES / "tokenizers" / name / "tokenizer.json"
        if not path.is_file():
            print(f"make_seeds: no {path}", file=sys.stderr)
            continue
        tok = shrink_tokenizer(json.loads(path.read_text(encoding="utf-8")), 300)
        put(out, "tokenizer_json", f"{name}.json", json.dumps(tok, ensure_ascii=False))
    try:
        from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, decoders, trainers
        lines = ["the quick brown fox jumps over the lazy dog", "Hello, World! 123 ÄÖÜ é"] * 4
        t = Tokenizer(models.Unigram())
        t.normalizer = normalizers.Sequence([normalizers.NFKC(), normalizers.Lowercase()])
        t.pre_tokenizer = pre_tokenizers.Metaspace()
        t.decoder = decoders.Metaspace()
        t.train_from_iterator(lines, trainers.UnigramTrainer(vocab_size=60,
                                                             special_tokens=["<unk>"],
                                                             unk_token="<unk>"))
        put(out, "tokenizer_json", "unigram.json", t.to_str())
        t = Tokenizer(models.BPE(byte_fallback=True, unk_token="<unk>"))
        t.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.Digits(individual_digits=True),
                                                   pre_tokenizers.ByteLevel()])
        t.decoder = decoders.ByteLevel()
        t.train_from_iterator(lines, trainers.BpeTrainer(vocab_size=300,
                                                         special_tokens=["<unk>", "<s>"]))
        put(out, "tokenizer_json", "bpe_digits.json", t.to_str())
        t = Tokenizer(models.WordPiece(unk_token="[UNK]"))
        t.normalizer = normalizers.BertNormalizer(lowercase=True)
        t.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
        t.decoder = decoders.WordPiece()
        t.train_from_iterator(lines, trainers.WordPieceTrainer(
            vocab_size=120, special_tokens=["[PAD]", "[UNK]", "[CLS]", "[SEP]"]))
        put(out, "tokenizer_json", "wordpiece.json", t.to_str())
    except Exception as e:
        print(f"make_seeds: tokenizers: {e}", file=sys.stderr)


def spm_seeds(out: Path) -> None:
    try:
        import io
        import sentencepiece as spm
    except ImportError as e:
        print(f"make_seeds: sentencepiece: {e}", file=sys.stderr)
        return
    lines = ["the quick brown fox jumps over the lazy dog", "Hello, World! 123 ÄÖÜ é",
             "sentence piece models are protobufs", "  spaces   and\ttabs  "] * 8
    # identity normalization: a precompiled charsmap (the default nmt_nfkc, 240 KB) is refused
    for kind, extra in (("bpe", {"byte_fallback": True, "vocab_size": 300}),
                        ("unigram", {"add_dummy_prefix": False}), ("char", {"vocab_size": 40}),
                        ("bpe_suffix", {"treat_whitespace_as_suffix": True,
                                        "remove_extra_whitespaces": False})):
        model = io.BytesIO()
        args = dict(sentence_iterator=iter(lines), model_writer=model, vocab_size=60,
                    model_type=kind.split("_")[0], minloglevel=2, hard_vocab_limit=False,
                    user_defined_symbols=["<tool>"], normalization_rule_name="identity")
        args.update(extra)
        try:
            spm.SentencePieceTrainer.train(**args)
            put(out, "spm", f"{kind}.model", model.getvalue())
        except Exception as e:
            print(f"make_seeds: sentencepiece {kind}: {e}", file=sys.stderr)


# ---- a model directory's tokenizer files, for fuzz_vocab: { u8 which | u16 length | bytes }... ----

VOCAB_FILES = ("tokenizer.json", "tokenizer.model", "tokenizer_config.json", "added_tokens.json",
               "chat_template.json")


def vocab_record(name: str, data: bytes) -> bytes:
    data = data[:0xFFFF]
    return struct.pack("<BH", VOCAB_FILES.index(name), len(data)) + data


def vocab_seeds(out: Path) -> None:
    for name in ("llama2", "llama3", "qwen3"):
        tj = out / "tokenizer_json" / f"{name}.json"
        tc = FIXTURES / "tokenizers" / name / "tokenizer_config.json"
        if not tj.is_file() or not tc.is_file():
            continue
        config = json.loads(tc.read_text(encoding="utf-8"))
        config.pop("added_tokens_decoder", None)  # ids of the full vocabulary, not the cut one
        put(out, "vocab", f"{name}_json_config",
            vocab_record("tokenizer.json", tj.read_bytes()) +
            vocab_record("tokenizer_config.json", json.dumps(config).encode()))
        put(out, "vocab", f"{name}_json", vocab_record("tokenizer.json", tj.read_bytes()))
    for model in sorted((out / "spm").glob("*.model")):
        put(out, "vocab", f"spm_{model.stem}", vocab_record("tokenizer.model", model.read_bytes()))
    bpe = out / "spm" / "bpe.model"
    if bpe.is_file():
        put(out, "vocab", "spm_added_template",
            vocab_record("tokenizer.model", bpe.read_bytes()) +
            vocab_record("added_tokens.json", b'{"<extra>": 300, "<tool>": 3}') +
            vocab_record("tokenizer_config.json",
                         b'{"add_bos_token": true, "add_eos_token": false, "bos_token": "<s>",'
                         b' "eos_token": {"content": "</s>"}, "chat_template": "{{ x }}"}') +
            vocab_record("chat_template.json", b'{"chat_template": "{% for m in messages %}'
                                                b'{{ m.content }}{% endfor %}"}'))


# ---- calibration files: the first byte picks .txt / .json / .jsonl / a cached /rows page ----

def calib_seeds(out: Path) -> None:
    put(out, "calib", "txt", b"\x00first line\r\nsecond line\n\n  \nthird")
    put(out, "calib", "json_array", b"\x01" + json.dumps(["a b", {"text": "c"}, {"x": 1,
                                                                             "y": "d"}]).encode())
    put(out, "calib", "json_split", b"\x01" + json.dumps({"train": [{"text": "t"}],
                                                          "data": ["d"]}).encode())
    put(out, "calib", "jsonl", b"\x02" + b'{"text": "one"}\n\n{"content": "two"}\n"three"\n')
    rows = {"rows": [{"row_idx": i, "row": {"text": f"row {i}"}, "truncated_cells": []}
                     for i in range(3)], "num_rows_total": 3}
    put(out, "calib", "rows_page", b"\x03" + json.dumps(rows).encode())


# ---- writer round trips: the input is the harness's own encoding of what to write ----------

def blob_roundtrip_seeds(out: Path) -> None:
    """fuzz_blob_roundtrip: mode, count, stop, then per blob: dtype pick (>= 0xf0: a raw number
    follows), padding bits, size, two cut points, misuse bits, the data."""
    def blob(dtype, padding, size, cuts=(0, 0), misuse=0, raw_dtype=None):
        b = bytes([dtype]) + (bytes([raw_dtype]) if raw_dtype is not None else b"")
        b += bytes([padding, size]) + (bytes(cuts) if size else b"") + bytes([misuse])
        return b + bytes((i * 7 + size) & 0xff for i in range(size))

    blobs = (blob(0, 0, 0) + blob(4, 4, 65, (10, 40), 1) + blob(5, 9, 64, (64, 0), 2 | 3 << 2) +
             blob(1, 0, 129, (1, 128), 3) + blob(2, 0, 1, (0, 1)) +
             blob(0xf5, 0, 63, (5, 6), 0, raw_dtype=0x77))
    put(out, "blob_roundtrip", "six_blobs", bytes([0, 6, 0]) + blobs)
    put(out, "blob_roundtrip", "abort_mid_blob", bytes([5, 6, 1]) + blobs)
    put(out, "blob_roundtrip", "finish_short", bytes([6, 6, 3]) + blobs)
    put(out, "blob_roundtrip", "abort_after_open", bytes([4, 0]))
    put(out, "blob_roundtrip", "open_missing_folder", bytes([7, 0]))


def json_roundtrip_seeds(out: Path) -> None:
    """fuzz_json_roundtrip: flag choice, option bits, then the tree (see enc)."""
    ints = [0, 1, -1, 2**63 - 1, -2**63]

    def text(s: str) -> bytes:  # code points as the harness reads them (no surrogates)
        b = b""
        for ch in s[:24]:
            cp = ord(ch)
            b += bytes([cp]) if cp < 0x80 else bytes([0xc0 | cp >> 16, cp & 0xff, cp >> 8 & 0xff])
        return bytes([2 * len(s[:24])]) + b

    def enc(v) -> bytes:
        if isinstance(v, dict):
            return bytes([0, len(v)]) + b"".join(text(k) + enc(x) for k, x in v.items())
        if isinstance(v, list):
            return bytes([1, len(v)]) + b"".join(enc(x) for x in v)
        if isinstance(v, str):
            return bytes([2]) + text(v)
        if isinstance(v, bytes):  # raw string bytes, often not UTF-8
            return bytes([2, 2 * len(v) + 1]) + v
        if v is True or v is False:
            return bytes([5 if v else 6])
        if v is None:
            return bytes([7])
        if isinstance(v, int):
            return bytes([3, ints.index(v)]) if v in ints else bytes([3, 0x80]) + struct.pack("<q", v)
        return bytes([4, 0x80]) + struct.pack("<d", v)

    def flags(indent=0, compact=False, ascii_=False, sort=False, order=False, slash=False,
              any_=False) -> bytes:
        how = next(h for h in range(256) if h % 3 == 2 and h >> 3 == indent)
        return bytes([how, compact | ascii_ << 1 | sort << 2 | order << 3 | slash << 4 | any_ << 5])

    tok = {"version": "1.0", "added_tokens": [{"id": 0, "content": "<s>", "special": True}],
           "model": {"type": "BPE", "vocab": {"a": 0, "\u00e9": 1, "\U0001f600": 2, "a b": 3},
                     "merges": ["a b"], "dropout": None}}
    put(out, "json_roundtrip", "tokenizer", bytes([0, 0]) + enc(tok))
    manifest = {"fileFormatVersion": "1.0.0", "itemInfoEntries": {"id": {
        "author": "com.apple.CoreML", "path": "com.apple.CoreML/weights"}}}
    put(out, "json_roundtrip", "manifest", bytes([1, 0]) + enc(manifest))
    # (at most 6 children a container)
    numbers = [[0, -1, 2**63 - 1, -2**63, 2**53 + 1], [1e308, -0.0, 5e-324, 0.1, 1e16, -2.5e-300]]
    put(out, "json_roundtrip", "numbers", flags(compact=True) + enc(numbers))
    strings = ["/", "\"\\", "\u2028\u2029", "\x00nul\x1f\x7f", "\U0010ffff", ""]
    put(out, "json_roundtrip", "strings_ascii", flags(3, ascii_=True, slash=True) + enc(strings))
    put(out, "json_roundtrip", "sorted", flags(1, sort=True) + enc({"b": [], "a": {}, "c": 1}))
    put(out, "json_roundtrip", "scalar_root", flags(any_=True) + enc(-2**63))
    put(out, "json_roundtrip", "not_utf8", bytes([0, 0]) + enc({"k": [b"\xc3(", b"\xff"]}))


def committed_seeds(out: Path) -> None:
    seeds = HERE / "seeds"
    for d in sorted(seeds.iterdir()) if seeds.is_dir() else []:
        for f in sorted(d.iterdir()):
            put(out, d.name, f"committed_{f.name}", f.read_bytes())


def main() -> None:
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    out = Path(sys.argv[1])
    if out.exists():
        shutil.rmtree(out)
    for gen in (gguf_seeds, imatrix_dat_seeds, safetensors_seeds, config_seeds, tokenizer_seeds,
                spm_seeds, vocab_seeds, calib_seeds, blob_roundtrip_seeds, json_roundtrip_seeds,
                committed_seeds):
        try:
            gen(out)
        except Exception as e:  # one format's seeds failing must not stop the others
            print(f"make_seeds: {gen.__name__}: {type(e).__name__}: {e}", file=sys.stderr)
    for d in sorted(out.iterdir()):
        files = list(d.iterdir())
        print(f"make_seeds: {d.name}: {len(files)} seeds, "
              f"{sum(f.stat().st_size for f in files)} bytes")


if __name__ == "__main__":
    main()
