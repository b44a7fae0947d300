"""The qwodel command: usage, listings, plans, JSON, exit codes, and corrupt inputs."""
from __future__ import annotations

import json
import os
import pathlib

import pytest

import hf_fixtures
from conftest import run_qwodel


def test_version_and_help(qwodel_bin):
    proc = run_qwodel(qwodel_bin, "--version")
    assert proc.stdout.startswith("qwodel ")
    proc = run_qwodel(qwodel_bin, "--help")
    assert "list-formats" in proc.stdout and "--threads" in proc.stdout
    assert run_qwodel(qwodel_bin, check=False).returncode == 2
    assert run_qwodel(qwodel_bin, "frobnicate", check=False).returncode == 2


def test_listings(qwodel_bin):
    backends = run_qwodel(qwodel_bin, "list-backends").stdout
    assert [line.split()[0] for line in backends.splitlines()] == ["gguf", "awq", "coreml"]
    everything = run_qwodel(qwodel_bin, "list-formats").stdout
    formats = run_qwodel(qwodel_bin, "list-formats", "gguf").stdout
    for fmt in ("Q8_0", "Q4_0", "F16", "BF16", "F32"):
        assert f"  {fmt} " in formats
    assert "awq:\n  int4 " in everything and everything.startswith(formats)
    assert run_qwodel(qwodel_bin, "list-formats", "--backend", "gguf").stdout == formats
    assert run_qwodel(qwodel_bin, "list-formats", "-b", "GGUF").stdout == formats
    proc = run_qwodel(qwodel_bin, "list-formats", "nope", check=False)
    assert proc.returncode == 1 and "unknown backend" in proc.stderr


def test_check_reports_build(qwodel_bin):
    info = json.loads(run_qwodel(qwodel_bin, "check").stdout)
    assert info["backends"] == ["gguf", "awq", "coreml"]
    assert info["cpu"]["threads"] >= 1
    assert info["cuda"] is False and "version" in info


def test_usage_errors_exit_2(qwodel_bin, model_dir, tmp_path):
    src = model_dir("llama2")
    for args in (["quantize"], ["quantize", src, "-b", "nope"], ["quantize", src, "-f", "Q9_9"],
                 ["quantize", src, "--no-such-flag", "1"], ["quantize", src, "--threads"],
                 ["quantize", src, "extra-arg"], ["quantize", src, "--threads", "many"]):
        proc = run_qwodel(qwodel_bin, *args, "-o", tmp_path, check=False)
        assert proc.returncode == 2, (args, proc.stderr)
        assert proc.stderr.strip()
    assert not any(tmp_path.iterdir())


def test_model_flag_default_format_and_dry_run(qwodel_bin, model_dir, tmp_path):
    src = model_dir("qwen3")
    proc = run_qwodel(qwodel_bin, "quantize", "-m", src, "-o", tmp_path, "--dry-run")
    lines = proc.stdout.splitlines()
    assert "tensor" in lines[0] and "transform" in lines[0]
    assert any("blk.0.attn_q.weight" in line and "q4_K" in line for line in lines)
    assert lines[-1].startswith(f"output: {tmp_path}/qwen3-q4_k_m.gguf")
    assert not any(tmp_path.iterdir())  # a dry run writes nothing
    plan = json.loads(run_qwodel(qwodel_bin, "quantize", src, "-f", "q8_0", "-o", tmp_path,
                                 "--dry-run", "--json").stdout)
    assert plan["output"].endswith("qwen3-q8_0.gguf")
    names = [t["name"] for t in plan["tensors"]]
    assert names[0] == "output.weight" or names[0] == "token_embd.weight"
    by_name = {t["name"]: t for t in plan["tensors"]}
    assert by_name["blk.1.ffn_down.weight"]["type"] == "q8_0"
    assert by_name["blk.1.ffn_down.weight"]["source_type"] == "BF16"
    assert by_name["output_norm.weight"]["type"] == "f32"
    out = pathlib.Path(run_qwodel(qwodel_bin, "quantize", src, "-f", "q8_0", "-o",
                                  tmp_path).stdout.strip())
    assert out.stat().st_size == plan["output_bytes"]


def test_llama_plan_names_the_permutation(qwodel_bin, model_dir, tmp_path):
    plan = json.loads(run_qwodel(qwodel_bin, "quantize", model_dir("llama3"), "-f", "F16",
                                 "--dry-run", "--json", "-o", tmp_path).stdout)
    by_name = {t["name"]: t for t in plan["tensors"]}
    assert by_name["blk.0.attn_q.weight"]["transform"] == "permute q heads"
    assert by_name["blk.0.attn_k.weight"]["transform"] == "permute k heads"
    assert by_name["rope_freqs.weight"]["source"] == "(generated)"


def test_json_model_info(qwodel_bin, model_dir, tmp_path):
    proc = run_qwodel(qwodel_bin, "quantize", model_dir("llama2"), "-f", "Q8_0", "-o", tmp_path,
                      "--json")
    info = json.loads(proc.stdout)
    for key in ("source_model", "quantized_model", "backend", "file_size", "input_format"):
        assert key in info
    assert info["backend"] == "gguf" and info["input_format"] == "safetensors"
    assert info["file_size"] == pathlib.Path(info["quantized_model"]).stat().st_size
    assert info["tensor_types"]["q8_0"] >= 14 and info["tensor_types"]["f32"] >= 5
    assert 8.0 < info["bits_per_weight"] < 9.0
    assert info["architecture"] == "llama" and info["seconds"] >= 0


def test_verbose_logs_go_to_stderr(qwodel_bin, model_dir, tmp_path):
    proc = run_qwodel(qwodel_bin, "quantize", model_dir("llama2"), "-f", "Q8_0", "-o", tmp_path,
                      "-vv")
    assert proc.stdout.strip().endswith("llama2-q8_0.gguf")
    assert "GGUFQuantizer: info:" in proc.stderr
    assert "GGUFQuantizer: debug:" in proc.stderr


def test_missing_and_unsupported_inputs(qwodel_bin, tmp_path):
    proc = run_qwodel(qwodel_bin, "quantize", tmp_path / "absent", "-o", tmp_path / "o",
                      check=False)
    assert proc.returncode == 1 and "no such file or directory" in proc.stderr
    empty = tmp_path / "empty"
    empty.mkdir()
    proc = run_qwodel(qwodel_bin, "quantize", empty, "-o", tmp_path / "o", check=False)
    assert proc.returncode == 1 and "config.json" in proc.stderr
    (tmp_path / "x.txt").write_text("hello")
    proc = run_qwodel(qwodel_bin, "quantize", tmp_path / "x.txt", "-o", tmp_path / "o",
                      check=False)
    assert proc.returncode == 1 and "not a model" in proc.stderr
    assert not (tmp_path / "o").exists()


# What each corrupt checkpoint must say (a fragment of the message).
CORRUPT_MESSAGES = {
    "truncated": "fall outside",
    "header_len_past_eof": "runs past the end",
    "header_len_overflow": "larger than",
    "header_not_json": "",
    "overlapping_offsets": "overlap",
    "offsets_past_end": "fall outside",
    "hole_between_tensors": "holes",
    "unknown_dtype": "unknown dtype \"Q9\"",
    "shape_mismatch": "needs",
    "dim_overflow": "impossible shape",
    "index_missing_shard": "cannot open",
    "index_outside_dir": "not a plain file name",
    "config_invalid_json": "invalid JSON",
    "config_unsupported_arch": "FooForCausalLM",
    "tokenizer_truncated": "tokenizer.json",
    "duplicate_tensor": "",
}
# Without "architectures", transformers still loads a model by its "model_type"; so does qwodel.
LOADS_BY_MODEL_TYPE = {"config_no_architectures"}


@pytest.fixture(scope="module")
def corrupt(model_dir, tmp_path_factory):
    src = hf_fixtures.make_checkpoint(tmp_path_factory.mktemp("small") / "small", "llama",
                                      tokenizer="llama2", tied=False, hidden=64, heads=2,
                                      layers=1, dtype="bf16")
    return hf_fixtures.corrupt_variants(src, tmp_path_factory.mktemp("corrupt"))


def test_every_corrupt_variant_is_covered(corrupt):
    assert set(corrupt) == set(CORRUPT_MESSAGES) | LOADS_BY_MODEL_TYPE


def test_config_without_architectures_uses_model_type(qwodel_bin, corrupt, tmp_path):
    proc = run_qwodel(qwodel_bin, "quantize", corrupt["config_no_architectures"], "-f", "Q8_0",
                      "-o", tmp_path, "--json")
    assert json.loads(proc.stdout)["architecture"] == "llama"


@pytest.mark.parametrize("name", sorted(CORRUPT_MESSAGES))
def test_corrupt_checkpoint_fails_cleanly(qwodel_bin, corrupt, tmp_path, name):
    out = tmp_path / "out"
    proc = run_qwodel(qwodel_bin, "quantize", corrupt[name], "-f", "Q8_0", "-o", out,
                      check=False)
    assert proc.returncode == 1, proc.stderr
    message = proc.stderr.strip().splitlines()[-1]
    assert message.startswith("qwodel: error: ")
    assert CORRUPT_MESSAGES[name] in message
    # the message names the file (or directory) at fault
    assert str(corrupt[name]) in message or "config.json" in message or ".safetensors" in message
    assert not out.exists() or not any(out.iterdir())


def test_existing_output_replaced_only_on_success(qwodel_bin, model_dir, tmp_path):
    out = tmp_path / "llama2-q8_0.gguf"
    out.write_bytes(b"old")
    bad = tmp_path / "elsewhere" / "llama2"  # same model name, so the same output name
    bad.mkdir(parents=True)
    for f in model_dir("llama2").iterdir():
        os.symlink(f, bad / f.name)
    (bad / "config.json").unlink()
    (bad / "config.json").write_text("{broken")
    # a failing run named the same way leaves the old file alone
    proc = run_qwodel(qwodel_bin, "quantize", bad, "-f", "Q8_0", "-o", tmp_path, check=False)
    assert proc.returncode == 1
    assert out.read_bytes() == b"old"
    run_qwodel(qwodel_bin, "quantize", model_dir("llama2"), "-f", "Q8_0", "-o", tmp_path)
    assert out.read_bytes()[:4] == b"GGUF"


def test_corrupt_gguf_inputs_fail_cleanly(qwodel_bin, model_dir, tmp_path):
    """A GGUF input damaged in each part of the file: a clear error naming the file, no output."""
    good = pathlib.Path(run_qwodel(qwodel_bin, "quantize", model_dir("llama2"), "-f", "Q8_0",
                                   "-o", tmp_path / "src").stdout.strip())
    data = good.read_bytes()
    import gguf

    reader = gguf.GGUFReader(str(good))
    first = reader.tensors[0]
    cases = {
        "bad-magic": (b"GGML" + data[4:], "not a GGUF file"),
        "version-1": (data[:4] + (1).to_bytes(4, "little") + data[8:], "version 1"),
        "truncated-header": (data[:200], "truncated"),
        "truncated-data": (data[:-1000], "past the end"),
        "huge-kv-count": (data[:16] + (2**62).to_bytes(8, "little") + data[24:],
                          "metadata entries"),
        "huge-tensor-count": (data[:8] + (2**62).to_bytes(8, "little") + data[16:], "tensors"),
    }
    # an unknown ggml type id in the first tensor info
    name = first.name.encode()
    at = data.index(len(name).to_bytes(8, "little") + name) + 8 + len(name)
    n_dims = int.from_bytes(data[at:at + 4], "little")
    type_at = at + 4 + 8 * n_dims
    cases["unknown-type"] = (data[:type_at] + (77).to_bytes(4, "little") + data[type_at + 4:],
                             "ggml type 77")
    cases["bad-offset"] = (data[:type_at + 4] + (64).to_bytes(8, "little") + data[type_at + 12:],
                           "offset")
    # a first dimension of 2^62: the element count overflows 64 bits
    cases["dim-overflow"] = (data[:at + 4] + (2**62).to_bytes(8, "little") + data[at + 12:],
                             "impossible shape")
    for label, (content, needle) in cases.items():
        path = tmp_path / f"{label}.gguf"
        path.write_bytes(content)
        out = tmp_path / f"out-{label}"
        proc = run_qwodel(qwodel_bin, "quantize", path, "-f", "Q4_0", "-o", out, check=False)
        assert proc.returncode == 1, (label, proc.stderr)
        message = proc.stderr.strip().splitlines()[-1]
        assert str(path) in message and needle in message, (label, message)
        assert not out.exists() or not any(out.iterdir()), label


def test_aliases_bool_flags_and_repeated_lists(qwodel_bin, model_dir, tmp_path):
    src = model_dir("llama2")
    # llama-quantize's alias names a format; the backend is inferred from it
    plan = run_qwodel(qwodel_bin, "quantize", src, "-f", "q4_k", "--dry-run", "-o", tmp_path)
    assert plan.stdout.splitlines()[-1].startswith(f"output: {tmp_path}/llama2-q4_k_m.gguf")
    # a boolean flag does not swallow the model path that follows it
    run_qwodel(qwodel_bin, "quantize", "--pure", src, "-f", "Q4_K_M", "--dry-run", "-o", tmp_path)
    run_qwodel(qwodel_bin, "quantize", "--pure", "false", src, "--dry-run", "-o", tmp_path)
    # ... nor the short flag that follows it when the model path came first
    plan = run_qwodel(qwodel_bin, "quantize", src, "--pure", "-f", "q8_0", "--dry-run", "-o", tmp_path)
    assert plan.stdout.splitlines()[-1].startswith(f"output: {tmp_path}/llama2-q8_0.gguf")
    # a list option given twice keeps both entries
    plan = json.loads(run_qwodel(qwodel_bin, "quantize", src, "-f", "Q4_K_M", "--dry-run",
                                 "--json", "-o", tmp_path, "--tensor-type", "attn_q=q8_0",
                                 "--tensor-type", "ffn_down=q6_K").stdout)
    types = {t["name"]: t["type"] for t in plan["tensors"]}
    assert types["blk.0.attn_q.weight"] == "q8_0"
    assert types["blk.1.ffn_down.weight"] == "q6_K"
    assert types["blk.1.ffn_up.weight"] == "q4_K"
