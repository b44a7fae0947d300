"""qwodel's built-in calibration text: chosen by name, and the offline fallback of the default.

* `calib_dump builtin` gives the samples; HF `tokenizers` (the reference) with the real Llama-2
  tokenizer counts enough tokens in them for the CPU default of 16 sequences of 256 tokens, and
  qwodel's own tokenizer gives the same ids, so the AWQ run below really gets that many tokens.
* `qwodel quantize -b awq --calibration-dataset builtin` runs end to end and calibrates on 16
  full sequences.
* With HF_HUB_OFFLINE=1, an empty HF_HOME and no --calibration-dataset, the same quantization
  succeeds on the built-in text with a warning that says so and how to choose a dataset, and
  gives the same weights as the run that asked for "builtin"; naming the default dataset
  explicitly in the same setting is still an error.
"""
from __future__ import annotations

import json
import os
import subprocess

import pytest

import hf_fixtures
from conftest import run_qwodel, tool

FIXTURES = hf_fixtures.TOKENIZER_DIR
SEQS, SEQ_LEN = 16, 256  # awq's CPU default (AUTO_CONFIG's first row)


def clean_env(home, **extra) -> dict:
    """The environment without any Hub setting of the caller's, with HF_HOME at `home`."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("HF_", "HUGGING", "TRANSFORMERS_"))}
    env.update(HF_HOME=str(home), **{k: str(v) for k, v in extra.items()})
    return env


@pytest.fixture(scope="module")
def samples():
    proc = subprocess.run([str(tool("calib_dump")), "builtin", "train", "100000"],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def test_builtin_gives_enough_llama2_tokens(samples):
    tokenizers = pytest.importorskip("tokenizers")
    path = FIXTURES / "llama2" / "tokenizer.json"
    ref = tokenizers.Tokenizer.from_file(str(path))
    want = [ref.encode(s, add_special_tokens=False).ids for s in samples]
    # each sequence starts with BOS, so SEQ_LEN - 1 text tokens fill one
    assert sum(map(len, want)) >= SEQS * (SEQ_LEN - 1)
    proc = subprocess.run([str(tool("tokenize")), str(path), "--no-special"],
                          input="".join(json.dumps(s) + "\n" for s in samples),
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    got = [json.loads(line) for line in proc.stdout.splitlines()]
    assert got == want


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    return hf_fixtures.make_checkpoint(tmp_path_factory.mktemp("calib_src") / "tiny",
                                       family="llama", tokenizer="llama2", tied=True,
                                       dtype="bf16", layers=2, heads=4)


def awq(qwodel_bin, checkpoint, out, env, *extra, check=True):
    return run_qwodel(qwodel_bin, "quantize", checkpoint, "-b", "awq", "-o", out, "-q", "-v",
                      "--num-samples", SEQS, "--seq-length", SEQ_LEN, *extra, check=check,
                      env=env)


@pytest.fixture(scope="module")
def builtin_run(qwodel_bin, checkpoint, tmp_path_factory):
    root = tmp_path_factory.mktemp("calib_builtin")
    out = root / "out"
    proc = awq(qwodel_bin, checkpoint, out, clean_env(root / "hf", HF_HUB_OFFLINE=1),
               "--calibration-dataset", "builtin")
    return proc, out / "tiny-awq-int4"


def test_awq_on_builtin_text(builtin_run):
    proc, out = builtin_run
    assert f"{SEQS} sequences of {SEQ_LEN} tokens" in proc.stderr, proc.stderr
    assert "instead of" not in proc.stderr  # no shortfall warning: the text was enough
    assert "built-in text" in proc.stderr
    config = json.loads((out / "config.json").read_text())
    assert config["quantization_config"]["quant_method"] == "compressed-tensors"


def test_offline_default_falls_back_to_builtin(qwodel_bin, checkpoint, builtin_run, tmp_path):
    home = tmp_path / "empty-hf"
    home.mkdir()
    proc = awq(qwodel_bin, checkpoint, tmp_path / "out", clean_env(home, HF_HUB_OFFLINE=1))
    warning = [line for line in proc.stderr.splitlines() if "built-in calibration text" in line]
    assert len(warning) == 1, proc.stderr
    for words in ("warning", "wikitext", "HF_HUB_OFFLINE", "--calibration-dataset"):
        assert words in warning[0]
    assert f"{SEQS} sequences of {SEQ_LEN} tokens from builtin" in proc.stderr, proc.stderr
    # the same text as asked for by name: the same weights
    _, ref = builtin_run
    got = tmp_path / "out" / "tiny-awq-int4"
    assert (got / "model.safetensors").read_bytes() == (ref / "model.safetensors").read_bytes()
    # nothing was written into the empty cache for the dataset that was never read
    assert not list(home.rglob("*.json"))


def test_named_default_dataset_offline_is_an_error(qwodel_bin, checkpoint, tmp_path):
    home = tmp_path / "empty-hf"
    proc = awq(qwodel_bin, checkpoint, tmp_path / "out", clean_env(home, HF_HUB_OFFLINE=1),
               "--calibration-dataset", "wikitext:wikitext-2-raw-v1", check=False)
    assert proc.returncode != 0
    assert "wikitext" in proc.stderr and "HF_HUB_OFFLINE" in proc.stderr
    assert "built-in" not in proc.stderr
    assert not (tmp_path / "out" / "tiny-awq-int4").exists()
