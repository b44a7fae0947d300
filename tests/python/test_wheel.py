"""`pip wheel .` makes a wheel that installs into a fresh virtual environment, where the spec's
GGUF example and the `qwodel` command work with nothing else installed."""
from __future__ import annotations

import os
import pathlib
import subprocess
import sys
import textwrap
import venv

REPO = pathlib.Path(__file__).resolve().parents[2]


def clean_env():
    env = dict(os.environ)
    for key in ("LD_PRELOAD", "ASAN_OPTIONS", "PYTHONPATH", "QWODEL_LIB"):
        env.pop(key, None)
    return env


def test_wheel_installs_and_runs_the_spec_example(model_dir, tmp_path):
    wheels = tmp_path / "wheels"
    subprocess.run([sys.executable, "-m", "pip", "wheel", str(REPO), "--no-deps", "-q", "-w",
                    str(wheels)], check=True, env=clean_env(), timeout=900)
    (wheel,) = wheels.glob("qwodel-*.whl")
    assert wheel.name.endswith("-py3-none-linux_x86_64.whl")

    env_dir = tmp_path / "venv"
    venv.create(env_dir, with_pip=True)
    python = env_dir / "bin" / "python"
    subprocess.run([str(python), "-m", "pip", "install", "-q", "--no-index", str(wheel)],
                   check=True, env=clean_env(), timeout=300)
    example = textwrap.dedent(f"""
        from qwodel import Quantizer

        quantizer = Quantizer(
            backend="gguf",
            model_path={str(model_dir("llama2"))!r},
            output_dir="./output"
        )
        print(quantizer.quantize(format="Q8_0"))
    """)
    work = tmp_path / "work"
    work.mkdir()
    proc = subprocess.run([str(python), "-c", example], cwd=work, env=clean_env(),
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert (work / proc.stdout.strip()).resolve() == work / "output" / "llama2-q8_0.gguf"
    # the package imports nothing outside the standard library
    proc = subprocess.run([str(python), "-c", "import sys, qwodel; "
                           "print(sorted(m.split('.')[0] for m in sys.modules))"],
                          env=clean_env(), capture_output=True, text=True, check=True)
    assert "numpy" not in proc.stdout and "torch" not in proc.stdout
    # the command came with it
    qwodel_cmd = env_dir / "bin" / "qwodel"
    out = subprocess.run([str(qwodel_cmd), "--version"], capture_output=True, text=True,
                         check=True, env=clean_env())
    assert out.stdout.startswith("qwodel ")
