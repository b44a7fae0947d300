"""Shared fixtures: where the build is, the qwodel command, and cached test checkpoints."""
from __future__ import annotations

import os
import pathlib
import shutil
import subprocess
import sys

import pytest

HERE = pathlib.Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import hf_fixtures  # noqa: E402

REPO = HERE.parent.parent
BUILD = pathlib.Path(os.environ.get("QWODEL_BUILD_DIR", REPO / "build"))

# The test models: each family, tied and untied, single-file and sharded, GQA and not, a hidden
# size that is not a multiple of 256 (so output.weight falls back from q6_K), and a vocabulary
# padded past the tokenizer (Qwen's 151936 rows).
MODELS = {
    "llama2": dict(family="llama", tokenizer="llama2", tied=False, shards=1, dtype="f16"),
    "llama3": dict(family="llama", tokenizer="llama3", tied=True, shards=2, dtype="bf16",
                   heads=4, kv_heads=2,
                   rope_scaling={"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
                                 "high_freq_factor": 4.0,
                                 "original_max_position_embeddings": 8192}),
    "mistral": dict(family="mistral", tokenizer="llama2", tied=False, shards=1, dtype="f32",
                    hidden=320, heads=5, kv_heads=1, intermediate=640),
    "qwen2": dict(family="qwen2", tokenizer="qwen3", tied=True, shards=1, dtype="bf16"),
    "qwen3": dict(family="qwen3", tokenizer="qwen3", tied=False, shards=3, dtype="bf16",
                  vocab_size=151936),
}


def tool(name: str) -> pathlib.Path:
    path = BUILD / name
    if not path.exists():
        pytest.skip(f"{path} is not built (set QWODEL_BUILD_DIR)")
    return path


@pytest.fixture(scope="session")
def qwodel_bin() -> pathlib.Path:
    return tool("qwodel")


# A whole run writes about 18 GB of checkpoints and outputs, and pytest keeps every temporary
# directory until the session ends: that filled a CI machine's disk part-way through the run.
# So a passing test's tmp_path goes when the test ends (tmp_path_retention_policy in
# pyproject.toml), and what a module's fixtures made goes when the module ends, except the
# directories of session fixtures, named here.
_SESSION_TEMP_DIRS: set[str] = set()


@pytest.fixture(scope="module", autouse=True)
def _module_temp_released(tmp_path_factory):
    base = tmp_path_factory.getbasetemp()
    before = {path.name for path in base.iterdir()}
    yield
    for path in base.iterdir():
        if path.name not in before and path.name not in _SESSION_TEMP_DIRS:
            shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="session")
def model_dir(tmp_path_factory):
    """model_dir(key) -> path of the cached checkpoint MODELS[key]."""
    root = tmp_path_factory.mktemp("checkpoints")
    _SESSION_TEMP_DIRS.add(root.name)
    made: dict[str, pathlib.Path] = {}

    def get(key: str) -> pathlib.Path:
        if key not in made:
            made[key] = hf_fixtures.make_checkpoint(root / key, **MODELS[key])
        return made[key]

    return get


def run_qwodel(qwodel_bin, *args, check=True, env=None):
    """Runs the command; returns the CompletedProcess (text)."""
    full_env = dict(os.environ)
    if env:
        full_env.update(env)
    proc = subprocess.run([str(qwodel_bin), *map(str, args)], capture_output=True, text=True,
                          env=full_env, timeout=600)
    if check and proc.returncode != 0:
        raise AssertionError(f"qwodel {' '.join(map(str, args))} exited {proc.returncode}:\n"
                             f"{proc.stderr}")
    return proc
