"""Token-for-token check of qwodel's GGUF vocabulary export against HuggingFace `tokenizers`.

For each tokenizer, `vocab_gguf` (a C test tool) writes a tensor-less GGUF; llama.cpp (through
llama-cpp-python) loads it with vocab_only=True and tokenizes every string of
tokenizer_samples.SAMPLES, which must give HF's ids. Where llama.cpp itself cannot reproduce HF
(a llama.cpp limitation, not the export), the string is listed in KNOWN_DIFFERENCES with the
reason, and the test checks that it still differs, and only in that way.

The tool is found in $QWODEL_BUILD_DIR (default /work/main/build); the fixtures in
$QWODEL_FIXTURES_DIR (default: shared/fixtures/tokenizers next to the repository).
"""

import copy
import json
import os
import struct
import subprocess
import unicodedata
from pathlib import Path

import pytest

from tokenizer_samples import SAMPLES

tokenizers = pytest.importorskip("tokenizers")
gguf = pytest.importorskip("gguf")
llama_cpp = pytest.importorskip("llama_cpp")

REPO = Path(__file__).resolve().parents[2]
BUILD_DIR = Path(os.environ.get("QWODEL_BUILD_DIR", "/work/main/build"))
FIXTURES = Path(
    os.environ.get("QWODEL_FIXTURES_DIR", REPO.parent / "shared" / "fixtures" / "tokenizers")
)
VOCAB_GGUF = BUILD_DIR / "vocab_gguf"

# name -> (embedding rows = the full vocabulary, tokenizer.ggml.model, tokenizer.ggml.pre)
FIXTURE_VOCABS = {
    "llama2": (32000, "llama", "default"),
    "llama3": (128256, "gpt2", "llama-bpe"),
    "qwen3": (151669, "gpt2", "qwen2"),
}

SPACE_MARK = "\u2581"


# ---- helpers ------------------------------------------------------------------------------------


def vocab_gguf(src: Path, rows: int, out: Path) -> Path:
    assert VOCAB_GGUF.is_file(), f"{VOCAB_GGUF} is not built (set QWODEL_BUILD_DIR)"
    run = subprocess.run([str(VOCAB_GGUF), str(src), str(rows), str(out)],
                         capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    return out


def load_llama(path: Path):
    return llama_cpp.Llama(model_path=str(path), vocab_only=True, verbose=False)


def llama_ids(llm, text: str) -> list[int]:
    return llm.tokenize(text.encode("utf-8"), add_bos=False, special=True)


def hf_ids(tok, text: str) -> list[int]:
    return tok.encode(text, add_special_tokens=False).ids


def nfc(text: str) -> str:
    return unicodedata.normalize("NFC", text)


def read_kvs(path: Path) -> dict:
    """key -> (type list, python value) of every KV, in file order."""
    reader = gguf.GGUFReader(str(path))
    return {name: (field.types, field.contents()) for name, field in reader.fields.items()
            if not name.startswith("GGUF.")}


# ---- what llama.cpp cannot reproduce ------------------------------------------------------------


class Known:
    """A llama.cpp limitation: `reason`, and `explains(ctx, text, got)` that checks llama.cpp's
    ids are exactly what that limitation predicts."""

    def __init__(self, reason, explains):
        self.reason = reason
        self.explains = explains


def _explains_no_nfc(ctx, text, got):
    # HF normalizes to NFC before splitting; llama.cpp has no normalizer for byte-level BPE. Once
    # the text is already NFC the two agree, so the NFC step is the whole difference.
    return nfc(text) != text and llama_ids(ctx["llm"], nfc(text)) == hf_ids(ctx["hf"], text)


QWEN_EOS_TEXT = "</s>"
QWEN_EOS_TEXT_ID = 128247


def _explains_eog_retype(ctx, text, got):
    # Expected: HF's ids for the text between the markers, the marker as one token.
    expected = []
    for i, part in enumerate(text.split(QWEN_EOS_TEXT)):
        if i:
            expected.append(QWEN_EOS_TEXT_ID)
        if part:
            expected += hf_ids(ctx["hf"], part)
    return got == expected and ctx["types"][QWEN_EOS_TEXT_ID] == gguf.TokenType.NORMAL


NOT_NFC = Known(
    "Qwen's tokenizer.json normalizes text to NFC; llama.cpp's byte-level BPE has no normalizer, "
    "so decomposed characters (a letter followed by combining marks) are split differently",
    _explains_no_nfc,
)
EOG_RETYPED = Known(
    "'</s>' is an ordinary token (id 128247) of Qwen3's vocabulary and is exported NORMAL, as the "
    "converter does; llama.cpp's loader re-types tokens whose text is a known end-of-generation "
    "marker as CONTROL, so with special=True it matches '</s>' in the text as one token where HF "
    "splits it into '</', 's', '>'",
    _explains_eog_retype,
)

KNOWN_DIFFERENCES = {
    "llama2": {},
    "llama3": {},
    "qwen3": {
        "cafe\u0301 with combining acute": NOT_NFC,
        "n\u0303 combining tilde": NOT_NFC,
        "a\u0300\u0301\u0302\u0303\u0304 stacked marks": NOT_NFC,
        "Z\u0351\u036b\u0343a\u0361\u034al\u0337g\u0360o zalgo": NOT_NFC,
        "</s>": EOG_RETYPED,
        "<s>Hello</s>": EOG_RETYPED,
    },
}


def compare_all(llm, hf, types, known: dict) -> None:
    ctx = {"llm": llm, "hf": hf, "types": types}
    unexpected = []
    for text in SAMPLES:
        got, want = llama_ids(llm, text), hf_ids(hf, text)
        if text in known:
            why = known[text]
            assert got != want, f"{text!r} now matches HF: remove it from KNOWN_DIFFERENCES"
            assert why.explains(ctx, text, got), f"{text!r}: {got} not explained by: {why.reason}"
        elif got != want:
            unexpected.append(f"{text!r}: llama.cpp {got} vs HF {want}")
    assert not unexpected, "\n".join(unexpected)
    assert set(known) <= set(SAMPLES)


# ---- the fixtures -------------------------------------------------------------------------------


class Built:
    """GGUFs written from the fixtures, each once per test session, and their KVs."""

    def __init__(self, out: Path):
        self.out = out
        self.paths = {}
        self.kv_cache = {}

    def path(self, name, extra_rows=0) -> Path:
        key = (name, extra_rows)
        if key not in self.paths:
            rows = FIXTURE_VOCABS[name][0] + extra_rows
            self.paths[key] = vocab_gguf(FIXTURES / name, rows, self.out / f"{name}-{rows}.gguf")
        return self.paths[key]

    def kvs(self, name, extra_rows=0) -> dict:
        key = (name, extra_rows)
        if key not in self.kv_cache:
            self.kv_cache[key] = read_kvs(self.path(name, extra_rows))
        return self.kv_cache[key]


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    return Built(tmp_path_factory.mktemp("vocab"))


@pytest.mark.parametrize("name", sorted(FIXTURE_VOCABS))
def test_fixture_tokenizes_like_hf(name, built):
    hf = tokenizers.Tokenizer.from_file(str(FIXTURES / name / "tokenizer.json"))
    types = built.kvs(name)["tokenizer.ggml.token_type"][1]
    compare_all(load_llama(built.path(name)), hf, types, KNOWN_DIFFERENCES[name])


def test_padded_vocab_tokenizes_like_hf(built):
    """Embedding rows beyond the tokenizer become [PAD<id>] rows llama.cpp never produces."""
    path = built.path("llama3", extra_rows=64)
    kvs = built.kvs("llama3", extra_rows=64)
    tokens = kvs["tokenizer.ggml.tokens"][1]
    assert len(tokens) == 128256 + 64
    assert tokens[128256] == "[PAD128256]" and tokens[-1] == "[PAD128319]"
    assert kvs["tokenizer.ggml.token_type"][1][-1] == gguf.TokenType.UNUSED
    hf = tokenizers.Tokenizer.from_file(str(FIXTURES / "llama3" / "tokenizer.json"))
    compare_all(load_llama(path), hf, kvs["tokenizer.ggml.token_type"][1], {})


A = gguf.GGUFValueType


@pytest.mark.parametrize("name", sorted(FIXTURE_VOCABS))
def test_fixture_kvs(name, built):
    rows, model, pre = FIXTURE_VOCABS[name]
    kvs = built.kvs(name)
    tok_keys = [k for k in kvs if k.startswith("tokenizer.")]

    def typed(key, *types):
        assert key in kvs, key
        assert kvs[key][0] == list(types), (key, kvs[key][0])
        return kvs[key][1]

    assert typed("tokenizer.ggml.model", A.STRING) == model
    assert typed("tokenizer.ggml.pre", A.STRING) == pre
    tokens = typed("tokenizer.ggml.tokens", A.ARRAY, A.STRING)
    types = typed("tokenizer.ggml.token_type", A.ARRAY, A.INT32)
    assert len(tokens) == len(types) == rows
    hf = json.loads((FIXTURES / name / "tokenizer.json").read_text(encoding="utf-8"))
    for text, i in list(hf["model"]["vocab"].items())[:2000]:
        assert tokens[i] == text
    for added in hf["added_tokens"]:
        assert tokens[added["id"]] == added["content"]
        if added["special"]:
            assert types[added["id"]] in (gguf.TokenType.CONTROL, gguf.TokenType.UNKNOWN)
    config = json.loads((FIXTURES / name / "tokenizer_config.json").read_text(encoding="utf-8"))

    # the converter's order: model, pre, tokens, [scores], token_type, [merges], ids, flags,
    # chat template, [add_space_prefix]
    head = ["tokenizer.ggml.model", "tokenizer.ggml.pre", "tokenizer.ggml.tokens"]
    if model == "llama":
        head.append("tokenizer.ggml.scores")
    head.append("tokenizer.ggml.token_type")
    if model == "gpt2":
        head.append("tokenizer.ggml.merges")
    assert tok_keys[: len(head)] == head
    rest = tok_keys[len(head):]
    ids = [k for k in rest if k.endswith("_token_id")]
    flag_keys = ("tokenizer.ggml.add_bos_token", "tokenizer.ggml.add_eos_token")
    flags = [k for k in rest if k in flag_keys]
    assert rest[: len(ids) + len(flags)] == ids + flags
    for key in ids:
        assert kvs[key][0] == [A.UINT32], key
        assert 0 <= kvs[key][1] < rows
    for key in flags:
        assert kvs[key][0] == [A.BOOL], key

    if model == "gpt2":
        merges = typed("tokenizer.ggml.merges", A.ARRAY, A.STRING)
        src = hf["model"]["merges"]
        assert len(merges) == len(src)
        first = src[0] if isinstance(src[0], str) else " ".join(src[0])
        assert merges[0] == first
        assert "tokenizer.ggml.scores" not in kvs
    else:
        scores = typed("tokenizer.ggml.scores", A.ARRAY, A.FLOAT32)
        assert len(scores) == rows
        assert typed("tokenizer.ggml.add_space_prefix", A.BOOL) is True
        assert types[0] == gguf.TokenType.UNKNOWN
        assert types[hf["model"]["vocab"]["<0x0A>"]] == gguf.TokenType.BYTE
    if "chat_template" in config:
        assert typed("tokenizer.chat_template", A.STRING) == config["chat_template"]
    else:
        assert "tokenizer.chat_template" not in kvs
    for array_key in [k for k in kvs if kvs[k][0][:1] == [A.ARRAY]]:
        assert len(kvs[array_key][1]) > 0, f"{array_key} is an empty array"

    expected_ids = {
        "llama2": {"bos": 1, "eos": 2, "unknown": 0},
        "llama3": {"bos": 128000, "eos": 128001},
        "qwen3": {"eos": 151645, "padding": 151643},
    }[name]
    assert {k[len("tokenizer.ggml."):-len("_token_id")]: kvs[k][1] for k in ids} == expected_ids
    expected_flags = {
        "llama2": {"add_bos_token": True, "add_eos_token": False},
        "llama3": {"add_bos_token": False, "add_eos_token": False},  # ByteLevel post-processor
        "qwen3": {"add_bos_token": False, "add_eos_token": False},
    }[name]
    assert {k[len("tokenizer.ggml."):]: kvs[k][1] for k in flags} == expected_flags


# ---- every row of the pre-tokenizer table -------------------------------------------------------

LLAMA3_SPLIT = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*"
    r"|\s*[\r\n]+|\s+(?!\S)|\s+"
)


def _trained_byte_level(pre_tokenizer):
    """A small byte-level BPE trained on the samples with the given pre-tokenizer."""
    from tokenizers import decoders, models, pre_tokenizers, trainers

    tok = tokenizers.Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizer
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=3000, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                  special_tokens=["<|endoftext|>"])
    tok.train_from_iterator(SAMPLES * 3, trainer=trainer)
    return json.loads(tok.to_str())


def _byte_level_variant(kind):
    from tokenizers import Regex, pre_tokenizers as pt

    byte_level = pt.ByteLevel(add_prefix_space=False, use_regex=True)
    return {
        "gpt-2": lambda: _trained_byte_level(byte_level),
        "smollm": lambda: _trained_byte_level(
            pt.Sequence([pt.Digits(individual_digits=True), byte_level])),
        "smaug-bpe": lambda: _trained_byte_level(pt.Sequence([
            pt.Split(Regex(LLAMA3_SPLIT), behavior="isolated"),
            pt.ByteLevel(add_prefix_space=False, use_regex=False)])),
    }[kind]()


def _llama2_variant(normalizer, pre_tokenizer):
    j = json.loads((FIXTURES / "llama2" / "tokenizer.json").read_text(encoding="utf-8"))
    j = copy.deepcopy(j)
    j["normalizer"], j["pre_tokenizer"] = normalizer, pre_tokenizer
    return j


def _metaspace(scheme):
    return {"type": "Metaspace", "replacement": SPACE_MARK, "prepend_scheme": scheme,
            "split": False}


REPLACE_SPACE = {"type": "Replace", "pattern": {"String": " "}, "content": SPACE_MARK}

# HF's Metaspace does not prepend "▁" to a segment that already starts with one (a space), and
# with prepend_scheme "first" prepends only at the start of the text; llama.cpp's add_space_prefix
# prepends a space to the text and to every segment after a special token, whatever it starts
# with. llama.cpp therefore tokenizes such text as the legacy Prepend("▁") pipeline does.
METASPACE_GAP = (
    "llama.cpp's add_space_prefix always prepends a space (at the start and after every special "
    "token); HF's Metaspace skips it when the segment starts with a space (and, with 'first', "
    "after special tokens): llama.cpp gives the legacy Prepend('▁') pipeline's ids"
)
_METASPACE_BOTH = [
    " ", "  ", "   ", "    ", " leading space", "  two leading spaces",
    "   \n   indented after newline", " \n", "    def method(self):\n        pass\n",
    "text before <s> text after", " <s> spaced special", " " * 40,
]
METASPACE_DIFFERENCES = {
    "always": _METASPACE_BOTH,
    "first": _METASPACE_BOTH + ["<s>Hello</s>"],
}

# variant -> (tokenizer.json maker, expected tokenizer.ggml.pre)
VARIANTS = {
    "gpt-2": (lambda: _byte_level_variant("gpt-2"), "gpt-2"),
    "smollm": (lambda: _byte_level_variant("smollm"), "smollm"),
    "smaug-bpe": (lambda: _byte_level_variant("smaug-bpe"), "smaug-bpe"),
    "spm-replace-only": (lambda: _llama2_variant(REPLACE_SPACE, None), "default"),
    "spm-metaspace-never": (lambda: _llama2_variant(None, _metaspace("never")), "default"),
    "spm-metaspace-always": (lambda: _llama2_variant(None, _metaspace("always")), "default"),
    "spm-metaspace-first": (lambda: _llama2_variant(None, _metaspace("first")), "default"),
}


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_pre_tokenizer_rows(variant, tmp_path):
    make, pre = VARIANTS[variant]
    src = tmp_path / "model"
    src.mkdir()
    (src / "tokenizer.json").write_text(json.dumps(make()), encoding="utf-8")
    hf = tokenizers.Tokenizer.from_file(str(src / "tokenizer.json"))
    path = vocab_gguf(src, hf.get_vocab_size(with_added_tokens=True), tmp_path / "v.gguf")
    kvs = read_kvs(path)
    assert kvs["tokenizer.ggml.pre"][1] == pre
    llm = load_llama(path)
    scheme = variant.rsplit("-", 1)[-1]
    listed = METASPACE_DIFFERENCES.get(scheme, []) if "metaspace" in variant else []
    if not listed:
        compare_all(llm, hf, kvs["tokenizer.ggml.token_type"][1], {})
        return
    legacy = tokenizers.Tokenizer.from_file(str(FIXTURES / "llama2" / "tokenizer.json"))
    known = Known(METASPACE_GAP, lambda ctx, text, got: got == hf_ids(legacy, text))
    compare_all(llm, hf, kvs["tokenizer.ggml.token_type"][1], {t: known for t in listed})


# ---- tokenizer.model (SentencePiece protobuf) ---------------------------------------------------


def _pb_varint(v: int) -> bytes:
    out = bytearray()
    while v >= 0x80:
        out.append(v & 0x7F | 0x80)
        v >>= 7
    out.append(v)
    return bytes(out)


def _pb_len(field: int, data: bytes) -> bytes:
    return _pb_varint(field << 3 | 2) + _pb_varint(len(data)) + data


def _pb_piece(text: str, score: float, kind: int) -> bytes:
    body = _pb_len(1, text.encode("utf-8")) + _pb_varint(2 << 3 | 5) + struct.pack("<f", score)
    body += _pb_varint(3 << 3) + _pb_varint(kind)
    return _pb_len(1, body)


def test_sentencepiece_model_tokenizes_like_hf(tmp_path, built):
    """A tokenizer.model-only directory: the Llama-2 vocabulary re-encoded as a SentencePiece BPE
    ModelProto, with the scores and types the tokenizer.json export chose."""
    exported = built.kvs("llama2")
    tokens = exported["tokenizer.ggml.tokens"][1]
    scores = exported["tokenizer.ggml.scores"][1]
    types = exported["tokenizer.ggml.token_type"][1]
    model = b"".join(_pb_piece(t, s, k) for t, s, k in zip(tokens, scores, types))
    model += _pb_len(2, _pb_varint(3 << 3) + _pb_varint(2))  # trainer_spec.model_type = BPE
    model += _pb_len(3, _pb_len(1, b"identity") + _pb_varint(3 << 3) + _pb_varint(1))
    src = tmp_path / "spm"
    src.mkdir()
    (src / "tokenizer.model").write_bytes(model)
    (src / "tokenizer_config.json").write_bytes(
        (FIXTURES / "llama2" / "tokenizer_config.json").read_bytes())
    path = vocab_gguf(src, 32000, tmp_path / "spm.gguf")
    kvs = read_kvs(path)
    assert kvs["tokenizer.ggml.tokens"][1] == tokens
    assert kvs["tokenizer.ggml.token_type"][1] == types
    assert kvs["tokenizer.ggml.scores"][0] == [A.ARRAY, A.FLOAT32]
    assert kvs["tokenizer.ggml.add_space_prefix"][1] is True
    assert kvs["tokenizer.ggml.bos_token_id"][1] == 1
    hf = tokenizers.Tokenizer.from_file(str(FIXTURES / "llama2" / "tokenizer.json"))
    compare_all(load_llama(path), hf, types, {})


def test_converter_scores_would_not_match(tmp_path, built):
    """Why the export does not copy the converter's scores: for a tokenizer.json-only Llama
    vocabulary, convert_hf_to_gguf.py (LlamaHfVocab) writes -1000 for every token, and llama.cpp's
    score-driven merging then breaks ties leftmost-first instead of by HF's merge ranks."""
    reader = gguf.GGUFReader(str(built.path("llama2")))
    writer = gguf.GGUFWriter(str(tmp_path / "flat.gguf"), "llama")
    for name, field in reader.fields.items():
        if name.startswith("GGUF.") or name == "general.architecture":
            continue
        value = field.contents()
        if name == "tokenizer.ggml.scores":
            value = [-1000.0] * len(value)
        if field.types[0] == A.ARRAY:
            writer.add_array(name, value)
        elif field.types[0] == A.STRING:
            writer.add_string(name, value)
        elif field.types[0] == A.BOOL:
            writer.add_bool(name, value)
        elif field.types[0] == A.FLOAT32:
            writer.add_float32(name, value)
        else:
            writer.add_uint32(name, value)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.close()
    llm = load_llama(tmp_path / "flat.gguf")
    hf = tokenizers.Tokenizer.from_file(str(FIXTURES / "llama2" / "tokenizer.json"))
    differing = [t for t in SAMPLES if llama_ids(llm, t) != hf_ids(hf, t)]
    assert len(differing) > 20
