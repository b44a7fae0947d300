"""SIMD kernels end to end: every format this build supports gives the same file whether the
SIMD overlay runs or QWODEL_KERNELS=reference forces the scalar reference kernels.

tests/unit/test_simd.c compares each SIMD kernel with its reference row by row; this checks the
whole path a user runs (source decoding: bf16 / f16 / f32 checkpoints and a quantized GGUF
input; every target encoder; the thread pool) on the test checkpoints: every format from one,
a few from the others. The `quant_bench` tool
reports which kernel set is active; on a CPU without SIMD kernels both runs are the reference and
the test passes trivially (it says so).
"""
from __future__ import annotations

import os
import pathlib
import subprocess

import pytest

from conftest import MODELS, tool

# Every format from the f16 checkpoint (the smallest: Llama-2's 32k vocabulary); a few from the
# bf16 sharded, tied one (Llama-3's 128k vocabulary) and from the f32 one whose hidden size is not
# a multiple of 256 (their decoders and fallback types), and from a Q8_0 GGUF (the q8_0
# decoder). The reference kernels under AddressSanitizer set the pace, hence the split.
ALL_FORMATS_MODEL = "llama2"
OTHER_MODELS = ["llama3", "mistral"]
SOME_FORMATS = ["Q4_K_M", "Q8_0", "IQ4_NL"]
assert ALL_FORMATS_MODEL in MODELS and all(m in MODELS for m in OTHER_MODELS)


def _formats() -> list[str]:
    """The gguf formats of this build, from `qwodel list-formats gguf`."""
    try:
        qwodel = tool("qwodel")
    except pytest.skip.Exception:
        return []
    out = subprocess.run([str(qwodel), "list-formats", "gguf"], check=True, capture_output=True,
                         text=True).stdout
    return [line.split()[0] for line in out.splitlines()[1:] if line.strip()]


FORMATS = _formats() or ["(qwodel not built)"]
SOME = [f for f in SOME_FORMATS if f in FORMATS] or FORMATS[:1]


def _env(kernels: str | None) -> dict:
    env = dict(os.environ)
    env.pop("QWODEL_KERNELS", None)
    if kernels is not None:
        env["QWODEL_KERNELS"] = kernels
    return env


def _run(qwodel_bin, src, fmt, out_dir, kernels):
    return subprocess.run(
        [str(qwodel_bin), "quantize", str(src), "-f", fmt, "-o", str(out_dir), "-q",
         "--threads", "2"],
        capture_output=True, text=True, env=_env(kernels), timeout=600)


def _quantize(qwodel_bin, src, fmt, out_dir, kernels):
    proc = _run(qwodel_bin, src, fmt, out_dir, kernels)
    assert proc.returncode == 0, f"qwodel quantize {src} -f {fmt} ({kernels}):\n{proc.stderr}"
    path = pathlib.Path(proc.stdout.strip())
    assert path.is_file(), proc.stdout
    return path


def _both(qwodel_bin, src, fmt, tmp_path):
    """The outputs of the reference and the active kernels. A format the reference run refuses
    (one that needs an importance matrix, on these checkpoints) must be refused alike."""
    ref = _run(qwodel_bin, src, fmt, tmp_path / "reference", "reference")
    if ref.returncode != 0:
        simd = _run(qwodel_bin, src, fmt, tmp_path / "active", None)
        same_msg = simd.stderr.replace(str(tmp_path / "active"), str(tmp_path / "reference"))
        assert (simd.returncode, same_msg) == (ref.returncode, ref.stderr)
        if "importance matrix" in ref.stderr:
            pytest.skip(f"{fmt} needs an importance matrix for this model")
        pytest.fail(f"qwodel quantize {src} -f {fmt} (reference):\n{ref.stderr}")
    ref_path = pathlib.Path(ref.stdout.strip())
    assert ref_path.is_file(), ref.stdout
    return ref_path, _quantize(qwodel_bin, src, fmt, tmp_path / "active", None)


def _same_file(a: pathlib.Path, b: pathlib.Path, label: str):
    da, db = a.read_bytes(), b.read_bytes()
    assert len(da) == len(db), f"{label}: sizes differ ({len(da)} vs {len(db)})"
    if da != db:
        first = next(i for i in range(len(da)) if da[i] != db[i])
        diff = sum(x != y for x, y in zip(da, db))
        pytest.fail(f"{label}: {diff} bytes differ, the first at offset {first}")


@pytest.fixture(scope="module")
def active_kernels():
    bench = tool("quant_bench")
    which = subprocess.run([str(bench), "--which"], check=True, capture_output=True, text=True,
                           env=_env(None)).stdout.strip()
    forced = subprocess.run([str(bench), "--which"], check=True, capture_output=True, text=True,
                            env=_env("reference")).stdout.strip()
    assert forced == "reference", "QWODEL_KERNELS=reference did not select the reference kernels"
    return which


CASES = [(ALL_FORMATS_MODEL, f) for f in FORMATS] + [(m, f) for m in OTHER_MODELS for f in SOME]


@pytest.mark.parametrize("key,fmt", CASES)
def test_hf_output_independent_of_kernels(qwodel_bin, model_dir, tmp_path, active_kernels, key,
                                          fmt):
    ref, simd = _both(qwodel_bin, model_dir(key), fmt, tmp_path)
    _same_file(ref, simd, f"{key} -> {fmt} ({active_kernels} vs reference)")


@pytest.mark.parametrize("fmt", SOME)
def test_gguf_requantize_independent_of_kernels(qwodel_bin, model_dir, tmp_path, active_kernels,
                                                fmt):
    """A quantized GGUF input: its tensors are decoded by the source type's kernel (q8_0's here,
    a SIMD decoder too), then encoded again."""
    src = _quantize(qwodel_bin, model_dir(ALL_FORMATS_MODEL), "Q8_0", tmp_path / "source",
                    "reference")
    ref, simd = _both(qwodel_bin, src, fmt, tmp_path)
    _same_file(ref, simd, f"{ALL_FORMATS_MODEL} Q8_0 GGUF -> {fmt} ({active_kernels} vs reference)")
