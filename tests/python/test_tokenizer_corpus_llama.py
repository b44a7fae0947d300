"""llama.cpp's tokenization of the 10,000-string corpus through qwodel's GGUF vocabularies.

For every tokenizer family qwodel supports (the llama2, llama3 and qwen3 fixtures; the Gemma,
Gemma 3 and Phi-3 tokenizers hf_fixtures generates), `vocab_gguf` writes our GGUF vocabulary,
llama.cpp (llama-cpp-python, vocab_only) tokenizes tokenizer_corpus.corpus(10000) through it, and
the ids are compared with HF `tokenizers`. Strings where they differ must each fall into a class
listed in KNOWN: a reviewed reason (a llama.cpp behaviour, not the export) with a predicate that
checks llama.cpp's ids are exactly what that behaviour predicts. The counts per family and class
are printed (pytest -s), with examples; $QWODEL_CORPUS_DIFF_DIR gets the full lists. llama.cpp's
detokenizer is checked against HF's decode on HF's ids, and the bos/eos llama.cpp adds against
transformers.

Then the same corpus goes through a GGUF written by llama.cpp's own convert_hf_to_gguf.py
(--vocab-only, one run for all families): llama.cpp must give identical ids through it and
through ours for every differing string and for the whole corpus, and the two files' tokenizer.*
KVs must be equal except the differences listed in KV_DIFFERENCES, each with its reason.

Both GGUFs carry the same general.name (the model directory's name, which is what qwodel's gguf
backend writes): llama.cpp's loader changes token attributes by model name (Phi-3).

The SentencePiece families (llama2, gemma, phi3) have no tokenizer.model in the fixtures, and the
converter reads only tokenizer.model for them. The test writes one from tokenizer.json: pieces
and types as tokenizer.json lists them and, as score, minus the rank of the first merge that
forms the piece (the inverse of how transformers turns a SentencePiece BPE model into
tokenizer.json merges). Those scores therefore follow the same rule as our export's, so they are
not independent evidence; the ids, types, special tokens and flags are.
"""
from __future__ import annotations

import collections
import ctypes
import json
import os
import re
import shutil
import struct
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import hf_fixtures
from test_tokenizer_vs_hf import _pb_len, _pb_varint, hf_ids, llama_ids, load_llama
from tokenizer_corpus import corpus

tokenizers = pytest.importorskip("tokenizers")
gguf = pytest.importorskip("gguf")
llama_cpp = pytest.importorskip("llama_cpp")

REPO = Path(__file__).resolve().parents[2]
BUILD_DIR = Path(os.environ.get("QWODEL_BUILD_DIR", REPO / "build"))
FIXTURES = Path(
    os.environ.get("QWODEL_FIXTURES_DIR", REPO.parent / "shared" / "fixtures" / "tokenizers")
)
VOCAB_GGUF = BUILD_DIR / "vocab_gguf"
CONVERTER_ENV = "QWODEL_LLAMA_CPP_CONVERTER"
N_STRINGS = 10_000

CORPUS = corpus(N_STRINGS)


# ---- the families -------------------------------------------------------------------------------


def _small_config(arch: str, model_type: str, vocab_size: int, **extra) -> dict:
    """The few hyperparameters the converter writes even with --vocab-only."""
    c = {"architectures": [arch], "model_type": model_type, "hidden_size": 64,
         "num_hidden_layers": 1, "intermediate_size": 128, "num_attention_heads": 4,
         "num_key_value_heads": 4, "max_position_embeddings": 4096, "rms_norm_eps": 1e-5,
         "rope_theta": 10000.0, "vocab_size": vocab_size}
    c.update(extra)
    return c


def _dense_config(family: str, vocab_size: int) -> dict:
    return hf_fixtures._dense_config(
        family, hidden=64, layers=1, heads=4, kv_heads=1 if family == "gemma" else 4,
        intermediate=128, head_dim=16, vocab_size=vocab_size, tied=family == "gemma",
        torch_dtype="bfloat16", rope_scaling=None, n_ctx=None)


def _copy_fixture(name: str, out: Path) -> None:
    for f in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copyfile(FIXTURES / name / f, out / f)


def _write_gemma(out: Path, split_on_space: bool = False) -> int:
    tj = hf_fixtures.gemma_tokenizer_json(split_on_space=split_on_space)
    (out / "tokenizer.json").write_text(tj, encoding="utf-8")
    (out / "tokenizer_config.json").write_text(
        json.dumps(hf_fixtures._gemma_tokenizer_config(), indent=2), encoding="utf-8")
    return len(json.loads(tj)["model"]["vocab"])


class Family:
    """How to write one family's model directory: tokenizer files and a minimal config.json.
    `spm_source`: the tokenizer.json whose model the converter's tokenizer.model is made from
    (None for byte-level BPE, which the converter reads through transformers)."""

    def __init__(self, write, config, spm_source=None):
        self.write = write
        self.config = config
        self.spm_source = spm_source


FAMILIES = {
    "llama2": Family(lambda out: _copy_fixture("llama2", out) or 32000,
                     lambda n: _small_config("LlamaForCausalLM", "llama", n),
                     spm_source="tokenizer.json"),
    "llama3": Family(lambda out: _copy_fixture("llama3", out) or 128256,
                     lambda n: _small_config("LlamaForCausalLM", "llama", n)),
    "qwen3": Family(lambda out: _copy_fixture("qwen3", out) or 151669,
                    lambda n: _small_config("Qwen3ForCausalLM", "qwen3", n, head_dim=16)),
    "gemma": Family(_write_gemma, lambda n: _dense_config("gemma", n),
                    spm_source="tokenizer.json"),
    # Gemma 3's tokenizer.json adds a Split(" ", merged_with_previous) pre-tokenizer
    "gemma3": Family(lambda out: _write_gemma(out, split_on_space=True),
                     lambda n: _dense_config("gemma3", n), spm_source="tokenizer.json"),
    # Phi-3's tokenizer.model is Llama-2's; its added tokens come from tokenizer_config.json
    "phi3": Family(lambda out: hf_fixtures._write_phi3_tokenizer(out) or 32064,
                   lambda n: _dense_config("phi3", n),
                   spm_source=str(FIXTURES / "llama2" / "tokenizer.json")),
}


# ---- a tokenizer.model from tokenizer.json (SentencePiece ModelProto, hand-encoded) -------------

SPM_NORMAL, SPM_UNKNOWN, SPM_CONTROL, SPM_BYTE = 1, 2, 3, 6


def _pb_bool(field: int, value: bool) -> bytes:
    return _pb_varint(field << 3) + _pb_varint(int(value))


def _spm_piece(text: str, score: float, kind: int) -> bytes:
    body = _pb_len(1, text.encode("utf-8")) + _pb_varint(2 << 3 | 5) + struct.pack("<f", score)
    return _pb_len(1, body + _pb_varint(3 << 3) + _pb_varint(kind))


def write_tokenizer_model(tj: dict, out: Path) -> None:
    model = tj["model"]
    rank: dict[str, int] = {}
    for r, m in enumerate(model["merges"]):
        a, b = m.split(" ", 1) if isinstance(m, str) else m
        rank.setdefault(a + b, r)
    special = {t["content"] for t in tj["added_tokens"] if t["special"]}
    floor = -float(len(model["merges"]) + 1)
    pieces = []
    for text, _ in sorted(model["vocab"].items(), key=lambda kv: kv[1]):
        if text == model.get("unk_token"):
            kind = SPM_UNKNOWN
        elif text in special:
            kind = SPM_CONTROL
        elif len(text) == 6 and text.startswith("<0x") and text.endswith(">"):
            kind = SPM_BYTE
        else:
            kind = SPM_NORMAL
        score = (-float(rank[text]) if text in rank else floor) if kind == SPM_NORMAL else 0.0
        pieces.append(_spm_piece(text, score, kind))
    # Gemma's pipeline (Replace ' ' -> U+2581 only) has no dummy prefix; Llama's prepends one
    steps = (tj.get("normalizer") or {}).get("normalizers", [])
    prefix = any(n.get("type") == "Prepend" for n in steps)
    trainer = _pb_varint(3 << 3) + _pb_varint(2) + _pb_bool(35, True)  # BPE, byte_fallback
    normalizer = _pb_len(1, b"identity") + _pb_bool(3, prefix)          # add_dummy_prefix
    (out / "tokenizer.model").write_bytes(
        b"".join(pieces) + _pb_len(2, trainer) + _pb_len(3, normalizer))


# ---- GGUF helpers -------------------------------------------------------------------------------


# gguf.GGUFReader parses every string of a 150k-token vocabulary into numpy parts (~8 s under
# this machine's load); the tests need the raw bytes of each KV and a few values, so they walk
# the KV section themselves.
_SCALAR = {0: "<B", 1: "<b", 2: "<H", 3: "<h", 4: "<I", 5: "<i", 6: "<f", 7: "<?", 10: "<Q",
           11: "<q", 12: "<d"}
_STRING, _ARRAY = 8, 9


class KV:
    """One key-value pair: its value type(s), the bytes of the whole pair, and its value."""

    def __init__(self, data: bytes, start: int, end: int, types: list[int], value_at: int):
        self.raw = data[start:end]
        self.start, self.end, self.types = start, end, types
        self._data, self._value_at = data, value_at

    def value(self):
        data, off = self._data, self._value_at
        if self.types[0] == _STRING:
            n = struct.unpack_from("<Q", data, off)[0]
            return data[off + 8: off + 8 + n].decode("utf-8")
        if self.types[0] != _ARRAY:
            return struct.unpack_from(_SCALAR[self.types[0]], data, off)[0]
        n = struct.unpack_from("<Q", data, off + 4)[0]
        off += 12
        if self.types[1] != _STRING:
            import numpy as np
            dtype = np.dtype(_SCALAR[self.types[1]])
            return np.frombuffer(data, dtype, n, off).tolist()
        out = []
        for _ in range(n):
            k = struct.unpack_from("<Q", data, off)[0]
            out.append(data[off + 8: off + 8 + k].decode("utf-8"))
            off += 8 + k
        return out


def read_kvs(path: Path) -> tuple[bytes, dict[str, KV]]:
    """The file's bytes and {key: KV} in file order."""
    data = Path(path).read_bytes()
    assert data[:4] == b"GGUF", path
    n_kv = struct.unpack_from("<Q", data, 16)[0]
    off, kvs = 24, {}

    def skip(t, off):
        if t == _STRING:
            return off + 8 + struct.unpack_from("<Q", data, off)[0]
        return off + struct.calcsize(_SCALAR[t])

    for _ in range(n_kv):
        start = off
        n = struct.unpack_from("<Q", data, off)[0]
        key = data[off + 8: off + 8 + n].decode("utf-8")
        off += 8 + n
        types = [struct.unpack_from("<I", data, off)[0]]
        off += 4
        value_at = off
        if types[0] == _ARRAY:
            sub, count = struct.unpack_from("<IQ", data, off)
            types.append(sub)
            off += 12
            if sub == _STRING:
                for _ in range(count):
                    off = skip(sub, off)
            else:
                off += count * struct.calcsize(_SCALAR[sub])
        else:
            off = skip(types[0], off)
        kvs[key] = KV(data, start, off, types, value_at)
    return data, kvs


def with_name(src: Path, dst: Path, name: str) -> Path:
    """A copy of a tensor-less GGUF whose general.name is `name`."""
    data, kvs = read_kvs(src)
    assert struct.unpack_from("<Q", data, 8)[0] == 0, f"{src} has tensors"
    old = kvs["general.name"]
    key, text = b"general.name", name.encode("utf-8")
    new = struct.pack("<Q", len(key)) + key + struct.pack("<IQ", _STRING, len(text)) + text
    end = max(kv.end for kv in kvs.values())
    out = data[: old.start] + new + data[old.end: end]
    out += bytes(-len(out) % 32)  # the data section starts aligned (general.alignment: 32)
    dst.write_bytes(out)
    return dst


def llama_text(llm, ids: list[int]) -> str:
    """llama.cpp's detokenizer (llama_detokenize: special tokens rendered, none removed, the
    leading space of add_space_prefix dropped), not llama-cpp-python's per-piece join."""
    arr = (llama_cpp.llama_token * max(len(ids), 1))(*ids)
    vocab = llm._model.vocab
    size = 64 + 64 * len(ids)
    while True:
        buf = ctypes.create_string_buffer(size)
        n = llama_cpp.llama_detokenize(vocab, arr, len(ids), buf, size, False, True)
        if n >= 0:
            return buf.raw[:n].decode("utf-8", "replace")
        size = -n  # too small: -n is the size needed


# ---- what llama.cpp does differently from HF, whatever GGUF it reads ----------------------------


class Known:
    """A reviewed llama.cpp behaviour that makes its ids differ from HF's. `llama_input(ctx, text)`
    is the text llama.cpp behaves as if it had been given (or None: the text itself);
    `expected(ctx, text)` the ids llama.cpp then gives (or None: HF's ids)."""

    def __init__(self, reason, llama_input=None, expected=None):
        self.reason = reason
        self.llama_input = llama_input
        self.expected = expected


def _hf_nfc(ctx, text):
    # HF's own NFC (its Unicode tables, not Python's: they disagree on characters newer than
    # HF's tables, which HF leaves alone)
    out = tokenizers.normalizers.NFC().normalize_str(text)
    return out if out != text else None


QWEN_EOS_TEXT = "</s>"


def _eog_parts(ctx, text):
    if QWEN_EOS_TEXT not in text:
        return None
    eos_id = ctx["hf"].token_to_id(QWEN_EOS_TEXT)
    if eos_id is None or ctx["types"][eos_id] != gguf.TokenType.NORMAL:
        return None
    out = []
    for i, part in enumerate(text.split(QWEN_EOS_TEXT)):
        if i:
            out.append(eos_id)
        if part:
            out += hf_ids(ctx["hf"], part)
    return out


# llama.cpp (llama-vocab.cpp, "set attributes by model/tokenizer/architecture name"): when
# general.name contains "phi3" or "phi-3", every special token and "</s>" gets RSTRIP, except
# <unk>, <s> and <|endoftext|>. Its RSTRIP drops the C-locale isspace() characters after the token
# (HF's rstrip would also drop Unicode spaces such as U+00A0).
PHI3_NO_RSTRIP = ("<unk>", "<s>", "<|endoftext|>")


def _phi3_rstrip(ctx, text):
    if "phi3_rstrip" not in ctx:
        specials = sorted({t["content"] for t in json.loads(ctx["hf"].to_str())["added_tokens"]},
                          key=len, reverse=True)
        ctx["phi3_rstrip"] = (
            re.compile("(" + "|".join(map(re.escape, specials)) + ")([ \t\n\v\f\r]*)"),
            {t for t in specials if t not in PHI3_NO_RSTRIP})
    pattern, rstrip = ctx["phi3_rstrip"]
    stripped = pattern.sub(lambda m: m[1] if m[1] in rstrip else m[0], text)
    return hf_ids(ctx["hf"], stripped) if stripped != text else None


NOT_NFC = Known(
    "Qwen's tokenizer.json normalizes to NFC; llama.cpp's byte-level BPE has no normalizer, so "
    "text that NFC changes (decomposed letters + combining marks, Hangul jamo, ...) is split "
    "differently: llama.cpp gives HF's ids once the text is NFC",
    llama_input=_hf_nfc,
)
EOG_RETYPED = Known(
    "'</s>' is an ordinary token of Qwen's vocabulary, exported NORMAL as the converter does; "
    "llama.cpp's loader re-types tokens whose text is a known end-of-generation marker as "
    "CONTROL, so with special=True it matches '</s>' as one token where HF splits it",
    expected=_eog_parts,
)
PHI3_RSTRIP = Known(
    "llama.cpp turns RSTRIP on for every special token and '</s>' (not <unk>, <s>, "
    "<|endoftext|>) of a model whose general.name contains 'phi3'/'phi-3', whatever "
    "tokenizer.json says: it drops the ASCII whitespace after them (llama.cpp gives HF's ids "
    "for the text without it)",
    expected=_phi3_rstrip,
)

# family -> the classes that may explain a difference there
KNOWN = {
    "llama2": {},
    "llama3": {},
    "qwen3": {"not-NFC": NOT_NFC, "</s>-retyped": EOG_RETYPED},
    "gemma": {},
    "gemma3": {},
    "phi3": {"phi3-rstrip": PHI3_RSTRIP},
}


def classify(ctx, known: dict, text: str, got: list[int]) -> str | None:
    """The name of the class (or 'a+b' pair: one input change, one expected change) that explains
    llama.cpp's ids `got` for `text`, or None."""
    names = sorted(known)
    combos = [(n,) for n in names] + [(a, b) for a in names for b in names if a < b]
    for combo in combos:
        classes = [known[n] for n in combo]
        inputs = [c.llama_input for c in classes if c.llama_input]
        expecteds = [c.expected for c in classes if c.expected]
        if len(inputs) > 1 or len(expecteds) > 1:
            continue
        want = expecteds[0](ctx, text) if expecteds else hf_ids(ctx["hf"], text)
        if want is None:
            continue
        if inputs:
            changed = inputs[0](ctx, text)
            if changed is None:
                continue
            if llama_ids(ctx["llm"], changed) == want:
                return "+".join(combo)
        elif got == want:
            return "+".join(combo)
    return None


# ---- fixtures -----------------------------------------------------------------------------------


class Run:
    """One family: its model directory, our GGUF, llama.cpp's and HF's ids for the corpus."""

    def __init__(self, name: str, root: Path):
        fam = FAMILIES[name]
        self.name = name
        self.dir = root / name
        self.dir.mkdir()
        self.rows = fam.write(self.dir)
        (self.dir / "config.json").write_text(json.dumps(fam.config(self.rows), indent=2),
                                              encoding="utf-8")
        if fam.spm_source:
            src = Path(fam.spm_source)
            src = src if src.is_absolute() else self.dir / src
            write_tokenizer_model(json.loads(src.read_text(encoding="utf-8")), self.dir)
        raw = root / f"{name}-raw.gguf"
        proc = subprocess.run([str(VOCAB_GGUF), str(self.dir), str(self.rows), str(raw)],
                              capture_output=True, text=True)
        assert proc.returncode == 0, proc.stderr
        # the name qwodel's gguf backend writes: the model directory's
        self.gguf = with_name(raw, root / f"{name}.gguf", name)
        _, self.kvs = read_kvs(self.gguf)
        self.hf = tokenizers.Tokenizer.from_file(str(self.dir / "tokenizer.json"))
        self.llm = load_llama(self.gguf)
        self.hf_ids = [e.ids for e in self.hf.encode_batch(CORPUS, add_special_tokens=False)]
        self.ids = [llama_ids(self.llm, t) for t in CORPUS]
        self.differing = [i for i, (a, b) in enumerate(zip(self.ids, self.hf_ids)) if a != b]
        self.ctx = {"llm": self.llm, "hf": self.hf,
                    "types": self.kvs["tokenizer.ggml.token_type"].value()}


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    if not VOCAB_GGUF.is_file():
        pytest.skip(f"{VOCAB_GGUF} is not built (set QWODEL_BUILD_DIR)")
    root = tmp_path_factory.mktemp("corpus_llama")
    made: dict[str, Run] = {}

    def get(name: str) -> Run:
        if name not in made:
            made[name] = Run(name, root)
        return made[name]

    return get


_CONVERTER_DRIVER = textwrap.dedent("""
    # convert_hf_to_gguf.py --vocab-only for several model directories in one interpreter
    # (torch and transformers load once).
    import runpy, sys
    src, jobs = sys.argv[1], sys.argv[2:]
    sys.path.insert(0, src)
    for model, outfile in zip(jobs[0::2], jobs[1::2]):
        sys.argv = ["convert_hf_to_gguf.py", model, "--outfile", outfile, "--vocab-only"]
        runpy.run_path(src + "/convert_hf_to_gguf.py", run_name="__main__")
""")


def _converter_source() -> Path | None:
    candidates = [os.environ.get(CONVERTER_ENV)] if os.environ.get(CONVERTER_ENV) else []
    # where scripts/ensure-deps.sh test puts it, for the llama-cpp-python installed
    cache = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"))
    candidates.append(str(cache / "qwodel-tests" / f"llama-cpp-python-{llama_cpp.__version__}"))
    for c in candidates:
        if c and (Path(c) / "convert_hf_to_gguf.py").is_file() and \
                (Path(c) / "conversion").is_dir():
            return Path(c)
    return None


@pytest.fixture(scope="module")
def converted(runs, tmp_path_factory):
    """{family: the converter's GGUF}, all written by one converter run."""
    for module, pip in (("torch", "torch"), ("transformers", "transformers"),
                        ("sentencepiece", "sentencepiece")):
        try:
            __import__(module)
        except ImportError:
            pytest.skip(f"{module} is not installed, so llama.cpp's convert_hf_to_gguf.py cannot "
                        f"write a vocabulary (pip install {pip})")
    src = _converter_source()
    if src is None:
        pytest.skip(f"no llama.cpp source tree with convert_hf_to_gguf.py (set {CONVERTER_ENV}, "
                    "e.g. to the vendor/llama.cpp of the llama-cpp-python sdist)")
    out = tmp_path_factory.mktemp("converted")
    args, paths = [], {}
    for name in FAMILIES:
        paths[name] = out / f"{name}.gguf"
        args += [str(runs(name).dir), str(paths[name])]
    proc = subprocess.run([sys.executable, "-c", _CONVERTER_DRIVER, str(src), *args],
                          capture_output=True, text=True, timeout=600,
                          env={**os.environ, "LD_PRELOAD": ""})
    assert proc.returncode == 0, proc.stderr[-4000:]
    return paths


# ---- tests --------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", list(FAMILIES))
def test_corpus_like_hf_or_known(runs, name):
    """Every string llama.cpp tokenizes differently from HF falls into a class of KNOWN[name];
    every class listed there still explains at least one string. The strings of each class are
    printed (three) and, with $QWODEL_CORPUS_DIFF_DIR set, written whole to <family>.json."""
    run = runs(name)
    by_class: dict[str | None, list[int]] = collections.defaultdict(list)
    for i in run.differing:
        by_class[classify(run.ctx, KNOWN[name], CORPUS[i], run.ids[i])].append(i)
    print(f"\n{name}: {len(CORPUS)} strings, {len(run.differing)} differ from HF: "
          + ", ".join(f"{k}={len(v)}" for k, v in sorted(by_class.items(), key=str)))
    for why, idx in sorted(by_class.items(), key=str):
        for i in idx[:3]:
            print(f"  [{why}] {CORPUS[i]!r}")
    if os.environ.get("QWODEL_CORPUS_DIFF_DIR"):
        out = Path(os.environ["QWODEL_CORPUS_DIFF_DIR"])
        out.mkdir(parents=True, exist_ok=True)
        (out / f"{name}.json").write_text(json.dumps(
            {str(why): [{"text": CORPUS[i], "llama.cpp": run.ids[i], "hf": run.hf_ids[i]}
                        for i in idx] for why, idx in by_class.items()},
            ensure_ascii=False, indent=1), encoding="utf-8")
    unexplained = by_class.get(None, [])
    assert not unexplained, f"{len(unexplained)} unexplained:\n" + "\n".join(
        f"{CORPUS[i]!r}: llama.cpp {run.ids[i]} vs HF {run.hf_ids[i]}" for i in unexplained[:30])
    used = {part for why in by_class for part in why.split("+")}
    stale = sorted(set(KNOWN[name]) - used)
    assert not stale, f"{name}: {stale} explain no string any more: remove them from KNOWN"


# ---- detokenization -----------------------------------------------------------------------------


def _transformers_clean_up(text: str) -> str:
    # transformers' clean_up_tokenization (the tokenizer_config.json flag names it)
    for a, b in ((" .", "."), (" ?", "?"), (" !", "!"), (" ,", ","), (" ' ", "'"),
                 (" n't", "n't"), (" 'm", "'m"), (" 's", "'s"), (" 've", "'ve"), (" 're", "'re")):
        text = text.replace(a, b)
    return text


# family -> (reason, predicate(hf_text, llama_text)) for decodes that may differ
DECODE_KNOWN = {
    "llama3": (
        "tokenizer_config.json sets clean_up_tokenization_spaces, which llama.cpp applies to "
        "every gpt2-type vocabulary it decodes (clean_spaces) and HF tokenizers' decoder does "
        "not: llama.cpp's text is HF's after transformers' clean_up_tokenization",
        lambda hf_text, ll_text: _transformers_clean_up(hf_text) == ll_text,
    ),
}


@pytest.mark.parametrize("name", list(FAMILIES))
def test_corpus_decodes_like_hf(runs, name):
    """llama.cpp's detokenizer on HF's ids gives HF's decode (special tokens rendered)."""
    run = runs(name)
    known = DECODE_KNOWN.get(name)
    explained, unexplained = 0, []
    for text, ids in zip(CORPUS, run.hf_ids):
        want, got = run.hf.decode(ids, skip_special_tokens=False), llama_text(run.llm, ids)
        if got == want:
            continue
        if known and known[1](want, got):
            explained += 1
        else:
            unexplained.append(f"{text!r}: llama.cpp {got!r} vs HF {want!r}")
    print(f"\n{name}: {explained} decodes differ as listed"
          + (f" ({known[0][:60]}...)" if known else ""))
    assert not unexplained, f"{len(unexplained)} unexplained:\n" + "\n".join(unexplained[:30])
    if known:
        assert explained, f"{name}: no decode differs any more; remove DECODE_KNOWN[{name!r}]"


# ---- adding special tokens ----------------------------------------------------------------------


def _added(with_specials: list[int], plain: list[int]) -> tuple[list[int], list[int]]:
    """(ids before, ids after) `plain` in `with_specials`. Only what is added is compared:
    transformers 5 rebuilds SentencePiece pipelines from the config and may split the text
    itself differently from tokenizer.json."""
    for start in range(len(with_specials) - len(plain) + 1):
        if with_specials[start:start + len(plain)] == plain:
            return with_specials[:start], with_specials[start + len(plain):]
    raise AssertionError(f"{plain} not inside {with_specials}")


# family -> (reason, what llama.cpp adds instead)
ADDED_SPECIALS_GAP = {
    "gemma": ("hf_fixtures' generated Gemma tokenizer.json has no post-processor, while its "
              "tokenizer_config.json says add_bos_token: true; transformers 5 follows "
              "tokenizer.json and adds nothing, the converter and ours write add_bos_token = "
              "true (from tokenizer_config, as for the published Gemma, whose tokenizer.json "
              "does add <bos>), so llama.cpp adds <bos>",
              lambda run: ([run.hf.token_to_id("<bos>")], [])),
}
ADDED_SPECIALS_GAP["gemma3"] = ADDED_SPECIALS_GAP["gemma"]


@pytest.mark.parametrize("name", list(FAMILIES))
def test_special_tokens_added_like_transformers(runs, name):
    """llama.cpp's add_special (bos/eos from the GGUF's flags, or its own default per
    pre-tokenizer when a flag is missing) against transformers' tokenizer(text). Regression: a
    ByteLevel-only post-processor (the llama3 fixture) adds no <|begin_of_text|>; without the
    flags llama.cpp's llama-bpe default added one."""
    transformers = pytest.importorskip("transformers")
    run = runs(name)
    tok = transformers.AutoTokenizer.from_pretrained(str(run.dir))
    for text in ("hello world", "The quick brown fox", "a\nb"):
        want = _added(tok(text)["input_ids"], tok(text, add_special_tokens=False)["input_ids"])
        got = _added(run.llm.tokenize(text.encode("utf-8"), add_bos=True, special=True),
                     llama_ids(run.llm, text))
        if name in ADDED_SPECIALS_GAP:
            want = ADDED_SPECIALS_GAP[name][1](run)
        assert got == want, (text, got, want)


# ---- the converter's GGUF -----------------------------------------------------------------------


@pytest.mark.parametrize("name", list(FAMILIES))
def test_same_ids_as_converter_vocab(runs, converted, name, tmp_path):
    """llama.cpp gives the same ids through the converter's GGUF as through ours: for every
    string that differs from HF, and for the whole corpus."""
    run = runs(name)
    ref = with_name(converted[name], tmp_path / "converter.gguf", name)
    llm = load_llama(ref)
    ref_ids = [llama_ids(llm, t) for t in CORPUS]
    on_differing = [i for i in run.differing if ref_ids[i] != run.ids[i]]
    assert not on_differing, "\n".join(
        f"{CORPUS[i]!r}: ours {run.ids[i]} vs converter {ref_ids[i]} (HF {run.hf_ids[i]})"
        for i in on_differing[:20])
    elsewhere = [i for i, (a, b) in enumerate(zip(run.ids, ref_ids)) if a != b]
    assert not elsewhere, "\n".join(
        f"{CORPUS[i]!r}: ours {run.ids[i]} vs converter {ref_ids[i]} (HF {run.hf_ids[i]})"
        for i in elsewhere[:20])
    print(f"\n{name}: {len(run.differing)} strings differing from HF, {len(CORPUS)} in all: "
          "same ids through the converter's GGUF")


T = gguf.TokenType


def _absent_in_ours(value):
    return lambda ours, ref, types: ours is None and ref is not None and ref.value() == value


def _absent_in_converter(value):
    return lambda ours, ref, types: ref is None and ours is not None and ours.value() == value


def _unk_retyped(ours, ref, types):
    a, b = ours.value(), ref.value()
    diff = [i for i in range(len(a)) if a[i] != b[i]]
    return len(a) == len(b) and len(diff) == 1 and \
        (a[diff[0]], b[diff[0]]) == (T.UNKNOWN, T.CONTROL)


def _normal_scores_equal(ours, ref, types):
    a, b = ours.value(), ref.value()
    return len(a) == len(b) and all(a[i] == b[i] for i in range(len(a)) if types[i] == T.NORMAL)


ADD_SPACE_PREFIX = (
    "ours writes add_space_prefix = true (tokenizer.json's Prepend('▁') normalizer); the "
    "converter writes none for Llama and Phi-3, and llama.cpp's default for a SentencePiece "
    "vocabulary is the same true",
    _absent_in_converter(True))
ADD_SEP = (
    "the converter writes add_sep_token = false, read from the pair template of tokenizer.json's "
    "post-processor; llama.cpp's default is the same false and ours writes no sep flag",
    _absent_in_ours(False))
UNK_TYPE = (
    "<unk>: ours UNKNOWN (as tokenizer.model types it), the converter CONTROL (its "
    "added_tokens_decoder pass re-types every special added token, <unk> included); llama.cpp "
    "matches both in text and neither is produced by merging, so ids are the same",
    _unk_retyped)
SCORES = (
    "equal for every NORMAL token; the others (bytes, control, unknown) are never merge results: "
    "the converter's come from the tokenizer.model this test writes (0) or its added-token "
    "pass (-1000), ours are the floor score below all merges",
    _normal_scores_equal)

# family -> {tokenizer.* key: (reason, check(ours KV | None, converter KV | None, our types))}
KV_DIFFERENCES = {
    "llama2": {"tokenizer.ggml.add_space_prefix": ADD_SPACE_PREFIX,
               "tokenizer.ggml.add_sep_token": ADD_SEP,
               "tokenizer.ggml.token_type": UNK_TYPE, "tokenizer.ggml.scores": SCORES},
    "llama3": {"tokenizer.ggml.pre": (
        "the converter names the pre-tokenizer by hashing the ids HF gives a check text with "
        "special tokens; this fixture's post-processor is ByteLevel only (no <|begin_of_text|>), "
        "so the hash is Smaug-Llama-3's (same vocabulary and regex, no bos) and it writes "
        "smaug-bpe. llama.cpp's llama-bpe row is that regex plus ignore_merges, which "
        "tokenizer.json sets; ours writes llama-bpe. The corpus gives the same ids either way",
        lambda ours, ref, types: (ours.value(), ref.value()) == ("llama-bpe", "smaug-bpe"))},
    "qwen3": {},
    "gemma": {"tokenizer.ggml.eot_token_id": (
        "the converter writes eot = 107 for every Gemma (CodeGemma's <end_of_turn> id in the "
        "published vocabulary); in this small generated vocabulary 107 is an ordinary piece",
        _absent_in_ours(107)),
        "tokenizer.ggml.token_type": UNK_TYPE, "tokenizer.ggml.scores": SCORES},
    "gemma3": {"tokenizer.ggml.token_type": UNK_TYPE, "tokenizer.ggml.scores": SCORES},
    "phi3": {"tokenizer.ggml.add_space_prefix": ADD_SPACE_PREFIX,
             "tokenizer.ggml.add_sep_token": ADD_SEP,
             "tokenizer.ggml.token_type": UNK_TYPE, "tokenizer.ggml.scores": SCORES},
}


@pytest.mark.parametrize("name", list(FAMILIES))
def test_tokenizer_kvs_as_converter(runs, converted, name):
    """Every tokenizer.* KV byte-identical to the converter's (same type, value and relative
    order), except the listed differences, each checked as its reason says."""
    run = runs(name)
    _, ours = read_kvs(run.gguf)
    _, ref = read_kvs(converted[name])
    ours = {k: v for k, v in ours.items() if k.startswith("tokenizer.")}
    ref = {k: v for k, v in ref.items() if k.startswith("tokenizer.")}
    listed = KV_DIFFERENCES[name]
    differing = sorted(k for k in set(ours) | set(ref)
                       if k not in ours or k not in ref or ours[k].raw != ref[k].raw)
    assert differing == sorted(listed), f"differing {differing}, listed {sorted(listed)}"
    types = run.ctx["types"]
    for key in differing:
        reason, check = listed[key]
        assert check(ours.get(key), ref.get(key), types), f"{key}: not as listed: {reason}"
    common = [k for k in ours if k in ref]
    assert common == [k for k in ref if k in ours], "the KVs both write are in another order"
    print(f"\n{name}: {len(common)} tokenizer KVs, {len(differing)} listed differences")
