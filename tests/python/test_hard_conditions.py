"""Hard conditions, end to end through the qwodel command: a file-size limit (what a full disk
looks like to a writer), an input that shrinks while it is read, allocations that fail, SIGTERM,
and SIGKILL followed by a second run. In every case the run either fails with a clear error or
succeeds; it never crashes, leaves a temporary output behind, or touches an existing output."""
from __future__ import annotations

import os
import pathlib
import re
import resource
import shutil
import signal
import subprocess
import time

import pytest

import hf_fixtures
from conftest import run_qwodel

TEMP_NAME = re.compile(r"\.qwodel-tmp-\d+")


def temporaries(directory: pathlib.Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir() if TEMP_NAME.search(p.name))


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    """A one-layer Llama checkpoint: each backend runs on it in seconds."""
    return hf_fixtures.make_checkpoint(tmp_path_factory.mktemp("small") / "small", "llama",
                                       tokenizer="llama2", tied=False, hidden=64, heads=2,
                                       layers=1, dtype="bf16")


BACKEND_RUNS = {
    # backend: (extra arguments, the output's name in the output directory)
    "gguf": (["-f", "Q8_0"], "small-q8_0.gguf"),
    "awq": (["--calibration-dataset", "builtin", "--num-samples", "2", "--seq-length", "32",
             "--group-size", "32"], "small-awq-int4"),
    "coreml": (["-f", "float16", "--seq-length", "16"], "small_float16.mlpackage"),
}


def limit_file_size(limit_bytes: int):
    def apply():
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit_bytes, limit_bytes))
    return apply


@pytest.mark.parametrize("backend", sorted(BACKEND_RUNS))
def test_file_size_limit_fails_cleanly_and_keeps_the_old_output(qwodel_bin, small, tmp_path,
                                                                  backend):
    """Under `ulimit -f` every write past the limit fails (EFBIG) the way writes fail on a full
    disk: the run says so, removes its temporary output and leaves the earlier output alone."""
    extra, name = BACKEND_RUNS[backend]
    out = tmp_path / "out"
    run_qwodel(qwodel_bin, "quantize", small, "-b", backend, "-o", out, "-q", *extra)
    earlier = out / name
    before = {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file()}
    assert before
    proc = subprocess.run([str(qwodel_bin), "quantize", str(small), "-b", backend, "-o", str(out),
                           "-q", *extra], capture_output=True, text=True, timeout=600,
                          preexec_fn=limit_file_size(16 * 1024))
    assert proc.returncode == 1, proc.stderr
    assert "larger than allowed" in proc.stderr or "disk" in proc.stderr, proc.stderr
    assert str(out) in proc.stderr
    assert temporaries(out) == []
    after = {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file()}
    assert after == before, f"{earlier} changed"


def wait_for_temporary(proc, directory: pathlib.Path, timeout=120):
    deadline = time.time() + timeout
    while time.time() < deadline and proc.poll() is None:
        if directory.exists() and temporaries(directory):
            return True
        time.sleep(0.005)
    return False


def test_input_shrinking_while_read_is_an_error(qwodel_bin, model_dir, tmp_path):
    """Another program truncates the checkpoint while qwodel reads it (mapped): instead of dying
    of SIGBUS the run names the file, and nothing is published."""
    source = tmp_path / "qwen3"
    shutil.copytree(model_dir("qwen3"), source)
    shards = sorted(source.glob("*.safetensors"))
    out = tmp_path / "out"
    proc = subprocess.Popen([str(qwodel_bin), "quantize", str(source), "-f", "Q6_K", "-o", str(out),
                             "--threads", "1"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    started = wait_for_temporary(proc, out)
    for shard in shards:  # keep each header, drop every tensor's data
        header_bytes = 8 + int.from_bytes(shard.read_bytes()[:8], "little")
        os.truncate(shard, header_bytes)
    _, stderr = proc.communicate(timeout=600)
    if proc.returncode == 0:
        pytest.skip("the run read everything before the files were cut")
    assert proc.returncode == 1 and started, stderr
    assert "changed on disk while it was being read" in stderr, stderr
    assert any(str(shard) in stderr for shard in shards), stderr
    assert list(out.iterdir()) == []


def is_sanitizer_build(qwodel_bin) -> bool:
    return any(b"__asan_init" in path.read_bytes()
               for path in (qwodel_bin, qwodel_bin.parent / "libqwodel.so") if path.exists())


# The largest allocation allowed, and whether the run must fit: at 1 and 2 MiB reading the
# tokenizer fails, at 4 to 9 MiB the quantization buffers do, and the whole run fits in 16 MiB
# blocks (tensors are read through the mapping and quantized in slices).
ALLOCATION_LIMITS = {1: False, 4: False, 9: False, 16: True}


@pytest.mark.parametrize("largest_mib", sorted(ALLOCATION_LIMITS))
def test_failed_allocations_are_errors(qwodel_bin, model_dir, tmp_path, largest_mib):
    """AddressSanitizer's allocator refuses every allocation above `largest_mib` (it returns NULL,
    as malloc does when memory runs out): the run ends with an out-of-memory error and no output,
    or, where everything fits, succeeds."""
    if not is_sanitizer_build(qwodel_bin):
        pytest.skip("needs the AddressSanitizer build (make test)")
    out = tmp_path / "out"
    env = dict(os.environ,
               ASAN_OPTIONS=f"allocator_may_return_null=1:max_allocation_size_mb={largest_mib}")
    proc = run_qwodel(qwodel_bin, "quantize", model_dir("llama2"), "-f", "Q4_K_M", "-o", out,
                      "-q", "--threads", "2", check=False, env=env)
    assert "ERROR: AddressSanitizer" not in proc.stderr and "runtime error" not in proc.stderr
    if ALLOCATION_LIMITS[largest_mib]:
        assert proc.returncode == 0, proc.stderr
        assert (out / "llama2-q4_k_m.gguf").read_bytes()[:4] == b"GGUF"
    else:
        assert proc.returncode == 1, proc.stderr
        assert "qwodel: error:" in proc.stderr and "out of memory" in proc.stderr, proc.stderr
        assert not out.exists() or list(out.iterdir()) == []


# Runs that take long enough to be killed while they write: (model_dir key or None for the
# small checkpoint, arguments, output name).
KILLED_RUNS = {
    "gguf": ("qwen3", ["-f", "Q6_K", "--threads", "1"], "qwen3-q6_k.gguf"),
    "awq": (None, [*BACKEND_RUNS["awq"][0], "--threads", "1"], BACKEND_RUNS["awq"][1]),
    "coreml": ("llama2", ["-f", "float16", "--seq-length", "16"], "llama2_float16.mlpackage"),
}


@pytest.mark.parametrize("backend", sorted(KILLED_RUNS))
def test_killed_run_leaves_a_temporary_the_next_run_removes(qwodel_bin, small, model_dir, tmp_path,
                                                             backend):
    """SIGKILL cannot be caught: what is left is only a temporary output (never a file under the
    final name), and the next run into the same place removes it."""
    key, extra, name = KILLED_RUNS[backend]
    source = model_dir(key) if key else small
    out = tmp_path / "out"
    proc = subprocess.Popen([str(qwodel_bin), "quantize", str(source), "-b", backend, "-o",
                             str(out), "-q", *extra],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    started = wait_for_temporary(proc, out)
    proc.kill()
    _, stderr = proc.communicate(timeout=60)
    if proc.returncode == 0:
        pytest.skip("the run ended before it was killed")
    assert proc.returncode == -signal.SIGKILL and started, stderr
    left = temporaries(out)
    assert left and not (out / name).exists()
    run_qwodel(qwodel_bin, "quantize", source, "-b", backend, "-o", out, "-q", *extra)
    assert (out / name).exists()
    assert temporaries(out) == []


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
@pytest.mark.parametrize("backend", ["awq", "gguf"])
def test_interrupted_run_removes_its_temporary(qwodel_bin, small, model_dir, tmp_path, sig,
                                               backend):
    """SIGINT (Ctrl-C) and SIGTERM (kill, a service manager) cancel the run: exit 1, nothing left
    under the output directory."""
    source, extra = (model_dir("qwen3"), ["-f", "Q6_K"]) if backend == "gguf" else \
        (small, BACKEND_RUNS["awq"][0])
    out = tmp_path / "out"
    proc = subprocess.Popen([str(qwodel_bin), "quantize", str(source), "-b", backend, "-o",
                             str(out), "--threads", "1", *extra],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    started = wait_for_temporary(proc, out)
    proc.send_signal(sig)
    _, stderr = proc.communicate(timeout=120)
    if proc.returncode == 0:
        pytest.skip("the run finished before the signal arrived")
    assert proc.returncode == 1 and started, stderr
    assert "cancel" in stderr
    assert list(out.iterdir()) == []
