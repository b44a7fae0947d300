"""qwodel's C tokenizer (src/tokenizer/tok_*.c) against HuggingFace `tokenizers`, id for id.

Each tokenizer — the three fixture tokenizer.json files (Llama-2, Llama-3, Qwen3) and tokenizers
of every supported kind built here with the `tokenizers` library (trained on part of the corpus)
— encodes the whole corpus of tokenizer_corpus.py with and without special tokens, and decodes
HF's ids with and without skipping special tokens; everything must equal what `tokenizers`
returns. The corpus goes through one `tokenize` process per tokenizer and mode (the tool is slow
under ASan to start, fast per line).

SentencePiece tokenizer.model files (read when a model has no tokenizer.json) are trained here
with `sentencepiece` (identity normalization; BPE like Llama-2's, plain BPE, Unigram) and checked
against `sentencepiece` itself: transformers' slow-to-fast conversion needs packages that are not
test dependencies, and sentencepiece is what those files are defined by.

Invalid UTF-8: HF's API only takes valid strings (Rust &str; Python str). qwodel treats raw bytes
as HF treats their lossy decoding, bytes.decode("utf-8", errors="replace"); the test feeds raw
bytes to qwodel and the replaced string to HF.
"""
from __future__ import annotations

import json
import subprocess

import pytest

from conftest import tool
from tokenizer_corpus import corpus, invalid_utf8_samples

tokenizers = pytest.importorskip("tokenizers")
from tokenizers import (  # noqa: E402
    AddedToken,
    Regex,
    Tokenizer,
    decoders,
    models,
    normalizers,
    pre_tokenizers,
    processors,
    trainers,
)

FIXTURES = "/work/shared/fixtures/tokenizers"
TRAIN = None


def _train_texts() -> list[str]:
    global TRAIN
    if TRAIN is None:
        TRAIN = corpus()[:4000]
    return TRAIN


def _with_json(tok: Tokenizer, edit) -> Tokenizer:
    """A copy of tok with its tokenizer.json edited by edit(dict)."""
    d = json.loads(tok.to_str())
    edit(d)
    return Tokenizer.from_str(json.dumps(d))


def _add_byte_tokens(d: dict) -> None:
    model = d["model"]
    if model["type"] == "BPE":
        base = max(model["vocab"].values()) + 1
        for b in range(256):
            model["vocab"].setdefault(f"<0x{b:02X}>", base + b)
    else:
        for b in range(256):
            model["vocab"].append([f"<0x{b:02X}>", -30.0])
    model["byte_fallback"] = True


def bytelevel_bpe() -> Tokenizer:
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=True)
    tok.decoder = decoders.ByteLevel()
    tr = trainers.BpeTrainer(vocab_size=900, special_tokens=["<|endoftext|>"],
                             initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                             show_progress=False)
    tok.train_from_iterator(_train_texts(), tr)
    eot = tok.token_to_id("<|endoftext|>")
    tok.post_processor = processors.TemplateProcessing(
        single="<|endoftext|> $A <|endoftext|>", special_tokens=[("<|endoftext|>", eot)])
    return tok


def spm_bpe(prepend_scheme: str = "first", split: bool = False) -> Tokenizer:
    tok = Tokenizer(models.BPE(unk_token="<unk>", byte_fallback=True, fuse_unk=True))
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme=prepend_scheme,
                                                 split=split)
    tok.decoder = decoders.Sequence([decoders.Replace("▁", " "), decoders.ByteFallback(),
                                     decoders.Fuse(), decoders.Strip(" ", 1, 0)])
    tr = trainers.BpeTrainer(vocab_size=700, special_tokens=["<unk>", "<s>", "</s>"],
                             limit_alphabet=120, show_progress=False)
    tok.train_from_iterator(_train_texts(), tr)
    tok = _with_json(tok, _add_byte_tokens)
    tok.post_processor = processors.TemplateProcessing(
        single="<s> $A", special_tokens=[("<s>", tok.token_to_id("<s>"))])
    return tok


def unigram() -> Tokenizer:
    tok = Tokenizer(models.Unigram())
    tok.normalizer = normalizers.NFKC()
    tok.pre_tokenizer = pre_tokenizers.Metaspace()
    tok.decoder = decoders.Metaspace()
    tr = trainers.UnigramTrainer(vocab_size=600, special_tokens=["<unk>", "<s>", "</s>"],
                                 unk_token="<unk>", show_progress=False)
    tok.train_from_iterator(_train_texts()[:1500], tr)
    tok.post_processor = processors.TemplateProcessing(
        single="<s> $A </s>", special_tokens=[("<s>", 1), ("</s>", 2)])
    return tok


def unigram_byte_fallback() -> Tokenizer:
    tok = _with_json(_BASES["unigram"](), _add_byte_tokens)
    tok.decoder = decoders.Sequence([decoders.Metaspace(), decoders.ByteFallback()])
    return tok


def wordish_bpe(prefix: bool) -> Tokenizer:
    """Non-byte-level BPE: NFKC + Lowercase + Strip, Whitespace pre-tokenizer, unknown token,
    and a continuing-subword prefix or an end-of-word suffix."""
    kw = {"continuing_subword_prefix": "##"} if prefix else {"end_of_word_suffix": "</w>"}
    tok = Tokenizer(models.BPE(unk_token="[UNK]", **kw))
    tok.normalizer = normalizers.Sequence([normalizers.NFKC(), normalizers.Lowercase(),
                                           normalizers.Strip()])
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tr = trainers.BpeTrainer(vocab_size=800, special_tokens=["[UNK]", "[CLS]", "[SEP]"],
                             limit_alphabet=150, show_progress=False, **kw)
    tok.train_from_iterator(_train_texts(), tr)
    if not prefix:
        tok.decoder = decoders.BPEDecoder(suffix="</w>")
    tok.post_processor = processors.RobertaProcessing(("[SEP]", 2), ("[CLS]", 1))
    return tok


def digits_punct() -> Tokenizer:
    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.normalizer = normalizers.Sequence([normalizers.NFD(),
                                           normalizers.Replace(Regex(r"\s+"), " ")])
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.WhitespaceSplit(), pre_tokenizers.Digits(individual_digits=True),
        pre_tokenizers.Punctuation()])
    tr = trainers.BpeTrainer(vocab_size=600, special_tokens=["<unk>"], limit_alphabet=200,
                             show_progress=False)
    tok.train_from_iterator(_train_texts(), tr)
    return tok


def split_variant(behavior: str, invert: bool, pattern) -> Tokenizer:
    """The byte-level BPE's vocabulary behind Split(pattern, behavior, invert) + Digits
    (contiguous) + ByteLevel without regex, and an NFKC normalizer."""
    tok = _BASES["bytelevel_bpe"]()
    tok = Tokenizer.from_str(tok.to_str())
    tok.normalizer = normalizers.NFKC()
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(pattern, behavior=behavior, invert=invert),
        pre_tokenizers.Digits(individual_digits=False),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
    return tok


# Regexes of other families, to check that PCRE2 splits as HF's Oniguruma does: GPT-4o's (o200k:
# letter-case classes, marks, an optional case-insensitive contraction suffix) and tiktoken's
# cl100k with possessive quantifiers.
O200K = (r"[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+"
         r"(?i:'s|'t|'re|'ve|'m|'ll|'d)?|[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+"
         r"[\p{Ll}\p{Lm}\p{Lo}\p{M}]*(?i:'s|'t|'re|'ve|'m|'ll|'d)?|\p{N}{1,3}|"
         r" ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+")
CL100K_POSSESSIVE = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?+\p{L}+|\p{N}{1,3}|"
                     r" ?[^\s\p{L}\p{N}]++[\r\n]*|\s*[\r\n]|\s+(?!\S)|\s+")


def regex_variant(pattern: str) -> Tokenizer:
    tok = Tokenizer.from_str(_BASES["bytelevel_bpe"]().to_str())
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(pattern), behavior="isolated"),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
    return tok


def smollm_style() -> Tokenizer:
    """StarCoder / SmolLM: single digits, then ByteLevel with its built-in GPT-2 regex."""
    tok = Tokenizer.from_str(_BASES["bytelevel_bpe"]().to_str())
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Digits(individual_digits=True),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)])
    return tok


def added_tokens() -> Tokenizer:
    """Added tokens with every option, matched on raw and on normalized (lower-cased) text."""
    tok = Tokenizer.from_str(_BASES["bytelevel_bpe"]().to_str())
    tok.normalizer = normalizers.Lowercase()
    tok.add_special_tokens([AddedToken("<|im_start|>", lstrip=True, rstrip=True),
                            AddedToken("<|im_end|>", rstrip=True),
                            AddedToken("<S>", normalized=True)])
    tok.add_tokens([AddedToken("hello", single_word=True),
                    AddedToken("World", normalized=True),
                    AddedToken("the", lstrip=True, normalized=False),
                    AddedToken("ing", rstrip=True),
                    AddedToken("</s>", normalized=False, single_word=True, lstrip=True),
                    AddedToken("語", single_word=True),
                    AddedToken("  ", normalized=False),
                    AddedToken("'s", lstrip=True, rstrip=True, single_word=True)])
    return tok


def bert_like() -> Tokenizer:
    tok = Tokenizer(models.BPE(unk_token="[UNK]", continuing_subword_prefix="##"))
    tok.normalizer = normalizers.Sequence([normalizers.NFKD(), normalizers.Lowercase(),
                                           normalizers.Strip(left=True, right=False)])
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tr = trainers.BpeTrainer(vocab_size=700, special_tokens=["[UNK]", "[CLS]", "[SEP]"],
                             limit_alphabet=150, continuing_subword_prefix="##",
                             show_progress=False)
    tok.train_from_iterator(_train_texts(), tr)
    tok.post_processor = processors.BertProcessing(("[SEP]", 2), ("[CLS]", 1))
    return tok


def metaspace_never_split() -> Tokenizer:
    """SPM-style vocabulary behind Metaspace(prepend never, split), a String Replace and NFKD,
    and a Sequence post-processor (ByteLevel, then a template with BOS and EOS)."""
    tok = Tokenizer.from_str(_BASES["spm_bpe_first"]().to_str())
    tok.normalizer = normalizers.Sequence([normalizers.Replace("  ", " "), normalizers.NFKD()])
    tok.pre_tokenizer = pre_tokenizers.Metaspace(prepend_scheme="never", split=True)
    tok.decoder = decoders.Sequence([decoders.Metaspace(prepend_scheme="never"),
                                     decoders.ByteFallback(), decoders.Strip(" ", 0, 1)])
    tok.post_processor = processors.Sequence([
        processors.ByteLevel(trim_offsets=False),
        processors.TemplateProcessing(single="<s> $A </s>",
                                      special_tokens=[("<s>", 1), ("</s>", 2)])])
    return tok


def truncated_padded(left: bool) -> Tokenizer:
    """The Llama-2 fixture with tokenizer.json's "truncation" and "padding" set: HF's encode
    applies both."""
    tok = Tokenizer.from_str(_BASES["llama2"]().to_str())
    side = "left" if left else "right"
    tok.enable_truncation(24 if left else 17, stride=3, direction=side)
    if left:
        tok.enable_padding(direction="left", pad_id=3, pad_to_multiple_of=8)
    else:
        tok.enable_padding(length=20, pad_id=2)
    return tok


def _cached(fn):
    box = {}

    def get():
        if "v" not in box:
            box["v"] = fn()
        return box["v"]
    return get


_BASES = {
    "llama2": _cached(lambda: Tokenizer.from_file(f"{FIXTURES}/llama2/tokenizer.json")),
    "llama3": _cached(lambda: Tokenizer.from_file(f"{FIXTURES}/llama3/tokenizer.json")),
    "qwen3": _cached(lambda: Tokenizer.from_file(f"{FIXTURES}/qwen3/tokenizer.json")),
    "bytelevel_bpe": _cached(bytelevel_bpe),
    "spm_bpe_first": _cached(lambda: spm_bpe("first", False)),
    "spm_bpe_always_split": _cached(lambda: spm_bpe("always", True)),
    "unigram": _cached(unigram),
    "unigram_byte_fallback": _cached(unigram_byte_fallback),
    "bpe_prefix_nfkc_lower": _cached(lambda: wordish_bpe(True)),
    "bpe_suffix_whitespace": _cached(lambda: wordish_bpe(False)),
    "digits_punct": _cached(digits_punct),
    "split_removed": _cached(lambda: split_variant("removed", False, Regex(r"\s+"))),
    "split_merged_prev": _cached(lambda: split_variant("merged_with_previous", False,
                                                       Regex(r"[.,!?]"))),
    "split_merged_next": _cached(lambda: split_variant("merged_with_next", False, " ")),
    "split_contiguous_inv": _cached(lambda: split_variant("contiguous", True,
                                                          Regex(r"\p{L}+"))),
    "regex_o200k": _cached(lambda: regex_variant(O200K)),
    "regex_cl100k_possessive": _cached(lambda: regex_variant(CL100K_POSSESSIVE)),
    "smollm_style": _cached(smollm_style),
    "added_tokens": _cached(added_tokens),
    "llama2_truncate_right_pad_fixed": _cached(lambda: truncated_padded(False)),
    "llama2_truncate_left_pad_multiple": _cached(lambda: truncated_padded(True)),
    "bert_like": _cached(bert_like),
    "metaspace_never_split": _cached(metaspace_never_split),
}
NAMES = list(_BASES)


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    return tmp_path_factory.mktemp("tok")


_FILES: dict[str, str] = {}


def _json_path(name: str, workdir) -> str:
    if name not in _FILES:
        path = workdir / f"{name}.json"
        path.write_text(_BASES[name]().to_str())
        _FILES[name] = str(path)
    return _FILES[name]


def _start(path: str, lines: list[str], *flags: str):
    """Starts the tool on lines; _finish collects it (HF works meanwhile)."""
    p = subprocess.Popen([str(tool("tokenize")), path, *flags], stdin=subprocess.PIPE,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    return p, "\n".join(lines) + "\n", len(lines), flags


def _finish(started) -> list:
    p, data, n, flags = started
    out_text, err_text = p.communicate(data, timeout=600)
    assert p.returncode == 0, err_text[-3000:]
    # split on \n only: decoded text may hold U+2028 and friends, which splitlines() breaks on
    out = [json.loads(line) for line in out_text.split("\n") if line]
    per = 4 if "--roundtrip" in flags else 2 if "--both" in flags else 1
    assert len(out) == per * n, err_text[-3000:]
    return out


def _run(path: str, lines: list[str], *flags: str) -> list:
    return _finish(_start(path, lines, *flags))


def _compare(texts, want, got, what):
    bad = [(t, w, g) for t, w, g in zip(texts, want, got) if w != g]
    msg = "\n".join(f"{t!r}\n  hf:   {w}\n  ours: {g}" for t, w, g in bad[:8])
    assert not bad, f"{what}: {len(bad)} of {len(texts)} differ\n{msg}"


@pytest.mark.parametrize("name", NAMES)
def test_encode_and_decode_match_hf(name, workdir):
    """Encode with and without special tokens, then decode the ids (with special tokens) with and
    without skipping them. The ids decoded are qwodel's, which the encode checks prove equal to
    HF's, so decode(encode(x)) is compared with HF's decode(encode(x))."""
    hf = _BASES[name]()
    texts = corpus()
    started = _start(_json_path(name, workdir), [json.dumps(t) for t in texts], "--roundtrip")
    if hf.padding is None:
        with_special = [e.ids for e in hf.encode_batch(texts, add_special_tokens=True)]
        plain = [e.ids for e in hf.encode_batch(texts, add_special_tokens=False)]
    else:  # a batch pads to its longest member: qwodel's encode is HF's encode of one text
        with_special = [hf.encode(t).ids for t in texts]
        plain = [hf.encode(t, add_special_tokens=False).ids for t in texts]
    decoded = hf.decode_batch(with_special, skip_special_tokens=False)
    decoded_skip = hf.decode_batch(with_special, skip_special_tokens=True)
    got = _finish(started)
    _compare(texts, with_special, got[0::4], f"{name} encode(add_special_tokens=True)")
    _compare(texts, plain, got[1::4], f"{name} encode(add_special_tokens=False)")
    _compare(texts, decoded, got[2::4], f"{name} decode(skip_special_tokens=False)")
    _compare(texts, decoded_skip, got[3::4], f"{name} decode(skip_special_tokens=True)")


@pytest.mark.parametrize("name", ["llama2", "llama3", "qwen3", "spm_bpe_first",
                                  "unigram_byte_fallback", "added_tokens"])
def test_invalid_utf8_is_encoded_as_its_lossy_decoding(name, workdir):
    hf = _BASES[name]()
    samples = invalid_utf8_samples()
    want = [hf.encode(b.decode("utf-8", errors="replace")).ids for b in samples]
    got = _run(_json_path(name, workdir), [b.hex() for b in samples], "--hex")
    _compare(samples, want, got, f"{name} invalid UTF-8")


def test_bad_tokenizer_json_is_an_error_not_a_crash(workdir):
    bad = workdir / "bad.json"
    bad.write_text('{"model": {"type": "BPE", "vocab": {"a": "zero"}, "merges": []}}')
    r = subprocess.run([str(tool("tokenize")), str(bad)], input="", capture_output=True,
                       text=True, timeout=60)
    assert r.returncode == 1
    assert "model.vocab" in r.stderr


# ---- SentencePiece tokenizer.model (no tokenizer.json): the reference is `sentencepiece` ----

SPM_CONFIGS = {
    # Llama-2's settings: BPE, byte fallback, dummy prefix, whitespace kept as is
    "spm_bpe_llama2": dict(model_type="bpe", byte_fallback=True, remove_extra_whitespaces=False),
    "spm_bpe_plain": dict(model_type="bpe", byte_fallback=False, add_dummy_prefix=False),
    "spm_unigram": dict(model_type="unigram", byte_fallback=True),
}


@pytest.fixture(scope="module")
def spm_models(workdir):
    spm = pytest.importorskip("sentencepiece")
    texts = [t.replace("\n", " ") for t in _train_texts()[:3000] if t.strip()]
    train = workdir / "spm_train.txt"
    train.write_text("\n".join(texts) + "\n")
    out = {}
    for name, kw in SPM_CONFIGS.items():
        spm.SentencePieceTrainer.train(input=str(train), model_prefix=str(workdir / name),
                                       vocab_size=800, normalization_rule_name="identity",
                                       character_coverage=0.98, minloglevel=2, **kw)
        path = str(workdir / f"{name}.model")
        out[name] = (path, spm.SentencePieceProcessor(model_file=path))
    return out


@pytest.mark.parametrize("name", list(SPM_CONFIGS))
def test_sentencepiece_model_matches_sentencepiece(name, spm_models):
    path, sp = spm_models[name]
    texts = corpus()
    started = _start(path, [json.dumps(t) for t in texts], "--roundtrip")
    with_bos = [sp.encode(t, add_bos=True) for t in texts]
    plain = [sp.encode(t) for t in texts]
    decoded = [sp.decode(i) for i in with_bos]
    got = _finish(started)
    _compare(texts, with_bos, got[0::4], f"{name} encode(add_bos=True)")
    _compare(texts, plain, got[1::4], f"{name} encode()")
    _compare(texts, decoded, got[2::4], f"{name} decode")
