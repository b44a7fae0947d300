"""The Python API of the spec (shared/spec/qwodel-api.md), over the real C library.

Run with QWODEL_LIB pointing at the library under test (make test uses the ASan build and
preloads the sanitizer runtime). No mocks: every test quantizes real test checkpoints.
"""
from __future__ import annotations

import json
import logging
import os
import pathlib
import signal
import subprocess
import sys
import textwrap
import time

import pytest

REPO = pathlib.Path(__file__).resolve().parents[3]
sys.path.insert(0, str(REPO / "python"))

import qwodel  # noqa: E402
from qwodel import (  # noqa: E402
    DependencyError,
    FormatNotSupportedError,
    QuantizationError,
    Quantizer,
    QwodelError,
    ValidationError,
)


def test_import_is_fast():
    code = "import time; t = time.perf_counter(); import qwodel; print(time.perf_counter() - t)"
    env = dict(os.environ, PYTHONPATH=str(REPO / "python"))
    env.pop("LD_PRELOAD", None)
    seconds = min(float(subprocess.run([sys.executable, "-c", code], env=env, check=True,
                                       capture_output=True, text=True).stdout)
                  for _ in range(3))
    assert seconds < 0.1


def test_exceptions_share_one_base():
    for cls in (QuantizationError, ValidationError, DependencyError, FormatNotSupportedError):
        assert issubclass(cls, QwodelError) and issubclass(cls, Exception)
    assert qwodel.__version__ == "0.1.0"


def test_list_backends_and_formats():
    assert Quantizer.list_backends() == qwodel.list_backends() == ["gguf", "awq", "coreml"]
    formats = Quantizer.list_formats()
    assert set(formats) == {"gguf", "awq", "coreml"}
    assert "Q8_0" in formats["gguf"] and formats["gguf"]["Q8_0"]
    assert list(formats["awq"]) == ["int4"] and formats["awq"]["int4"]
    assert Quantizer.list_formats("gguf") == {"gguf": formats["gguf"]}
    assert qwodel.list_formats(backend="GGUF") == {"gguf": formats["gguf"]}
    assert list(formats["coreml"]) == ["float16", "int8_linear", "int8_symmetric", "int4", "int6"]
    with pytest.raises(ValidationError, match="unknown backend 'tflite'"):
        Quantizer.list_formats("tflite")  # a backend this build lacks is absent from the list


def test_constructor_validates(model_dir, tmp_path):
    src = model_dir("llama2")
    with pytest.raises(ValidationError, match="unknown backend"):
        Quantizer("nope", src)
    with pytest.raises(ValidationError, match="no such file"):
        Quantizer("gguf", tmp_path / "missing")
    with pytest.raises(ValidationError, match="accepted: threads"):
        Quantizer("gguf", src, calibration_dataset="wikitext")
    with pytest.raises(ValidationError, match="integer"):
        Quantizer("gguf", src, threads="many")
    with pytest.raises(ValidationError, match="integer"):
        Quantizer("gguf", src, threads=True)  # a bool is not an int here
    with pytest.raises(ValidationError):
        Quantizer("gguf", src, progress_callback=42)
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "config.json").write_text(json.dumps({"architectures": ["FooForCausalLM"]}))
    with pytest.raises(ValidationError, match="FooForCausalLM") as info:
        Quantizer("gguf", bad)
    assert info.value.status == "QW_ERR_UNSUPPORTED_ARCH"


def test_quantize_returns_path_and_info(model_dir, tmp_path):
    events = []
    q = Quantizer(backend="gguf", model_path=str(model_dir("qwen2")), output_dir=str(tmp_path),
                  progress_callback=lambda p, s, m: events.append((p, s, m)), threads=2)
    info = q.get_model_info()
    assert info["quantized_model"] is None and info["input_format"] == "safetensors"
    out = q.quantize(format="q8_0")
    assert isinstance(out, pathlib.Path) and out == tmp_path / "qwen2-q8_0.gguf"
    assert out.read_bytes()[:4] == b"GGUF"
    info = q.get_model_info()
    assert info["source_model"] == str(model_dir("qwen2"))
    assert info["quantized_model"] == str(out)
    assert info["backend"] == "gguf"
    assert info["file_size"] == out.stat().st_size
    assert info["input_format"] == "safetensors"
    assert info["architecture"] == "qwen2" and info["format"] == "Q8_0"
    assert info["tensor_types"]["q8_0"] > 0 and 8 < info["bits_per_weight"] < 9
    percents = [p for p, _, _ in events]
    assert percents == sorted(percents) and percents[-1] == 100
    stages = [s for _, s, _ in events]
    assert {"planning", "quantizing", "writing", "done"} <= set(stages)
    # per-call override, then the default format
    assert q.quantize("F16", threads=1).name == "qwen2-f16.gguf"
    q.close()
    with pytest.raises(ValidationError, match="closed"):
        q.quantize("Q8_0")


def test_unknown_format_and_bad_override(model_dir, tmp_path):
    with Quantizer("gguf", model_dir("llama2"), tmp_path) as q:
        with pytest.raises(FormatNotSupportedError, match="Q8_0"):
            q.quantize("int4")
        with pytest.raises(ValidationError, match="threads"):
            q.quantize("Q8_0", threads=-1)
        with pytest.raises(ValidationError, match="unknown option"):
            q.quantize("Q8_0", seq_len=128)
        with pytest.raises(ValidationError):
            q.quantize(123)
    assert list(tmp_path.iterdir()) == []


def test_convenience_function(model_dir, tmp_path):
    calls = []
    out = qwodel.quantize(model_path=model_dir("llama2"), output_dir=tmp_path, backend="gguf",
                          format="Q4_0", progress_callback=lambda *a: calls.append(a), threads=1)
    assert out == tmp_path / "llama2-q4_0.gguf" and out.is_file()
    assert calls and calls[-1][0] == 100


def test_plan_writes_nothing(model_dir, tmp_path):
    with Quantizer("gguf", model_dir("llama3"), tmp_path) as q:
        plan = q.plan("Q8_0")
    assert plan["output"] == tmp_path / "llama3-q8_0.gguf"
    names = {t["name"]: t for t in plan["tensors"]}
    assert names["blk.0.attn_q.weight"]["transform"] == "permute q heads"
    assert names["blk.0.attn_q.weight"]["type"] == "q8_0"
    assert list(tmp_path.iterdir()) == []


def test_logging_under_spec_logger_names(model_dir, tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="GGUFQuantizer")
    with Quantizer("gguf", model_dir("llama2"), tmp_path) as q:
        q.quantize("Q8_0")
    records = [r for r in caplog.records if r.name == "GGUFQuantizer"]
    assert any("wrote" in r.getMessage() for r in records)
    assert all(r.levelno in (logging.DEBUG, logging.INFO, logging.WARNING) for r in records)


def test_nothing_printed_without_logging_config(model_dir, tmp_path):
    code = textwrap.dedent(f"""
        import qwodel
        q = qwodel.Quantizer("gguf", {str(model_dir("llama2"))!r}, {str(tmp_path)!r})
        q.quantize("Q8_0")
        q.quantize("Q4_0")  # logs a warning-level fallback note at most
    """)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env=dict(os.environ, PYTHONPATH=str(REPO / "python")))
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == "" and proc.stderr == ""


def test_exception_in_progress_callback_cancels(model_dir, tmp_path):
    class Stop(RuntimeError):
        pass

    def callback(percent, stage, message):
        if stage == "quantizing":
            raise Stop("enough")

    with Quantizer("gguf", model_dir("qwen3"), tmp_path, progress_callback=callback) as q:
        with pytest.raises(Stop, match="enough"):
            q.quantize("F16")
        assert q.get_model_info()["quantized_model"] is None
    assert list(tmp_path.iterdir()) == []


def test_errors_carry_status_and_file(model_dir, tmp_path):
    broken = tmp_path / "broken"
    broken.mkdir()
    for f in model_dir("llama2").iterdir():
        (broken / f.name).symlink_to(f)
    (broken / "config.json").unlink()
    (broken / "config.json").write_text("{not json")
    with pytest.raises(ValidationError) as info:
        Quantizer("gguf", broken)
    assert info.value.status == "QW_ERR_CORRUPT"
    assert str(broken / "config.json") in str(info.value)


def test_ctrl_c_cancels_promptly(model_dir, tmp_path):
    out = tmp_path / "out"
    code = textwrap.dedent(f"""
        import qwodel, sys
        def progress(percent, stage, message):
            if stage == "quantizing":
                print("started", flush=True)
        q = qwodel.Quantizer("gguf", {str(model_dir("qwen3"))!r}, {str(out)!r},
                             progress_callback=progress, threads=1)
        q.quantize("F32")
        print("finished", flush=True)
    """)
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True,
                            env=dict(os.environ, PYTHONPATH=str(REPO / "python")))
    assert proc.stdout.readline().strip() == "started"
    proc.send_signal(signal.SIGINT)
    sent = time.monotonic()
    stdout, stderr = proc.communicate(timeout=60)
    elapsed = time.monotonic() - sent
    if "finished" in stdout:
        pytest.skip("the run ended before the signal was handled")
    assert "KeyboardInterrupt" in stderr
    assert proc.returncode != 0
    assert elapsed < 5, f"took {elapsed:.1f} s to stop"
    assert not out.exists() or list(out.iterdir()) == []


def test_type_hints_ship():
    assert (REPO / "python" / "qwodel" / "py.typed").exists()
    assert "progress_callback" in Quantizer.__doc__ and "backend_kwargs" in Quantizer.__doc__
    assert Quantizer.quantize.__annotations__["return"] in ("Path", pathlib.Path)
