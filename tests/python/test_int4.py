"""W4A16 group quantization (src/quant/int4.c) against compressed-tensors, the library vLLM and
transformers load AWQ checkpoints with.

`int4_probe` quantizes a matrix; compressed-tensors computes the same from the same weights:
per-group min/max (what llm-compressor's memoryless min-max observer takes), its
calculate_qparams, quantize and dequantize, and its pack_to_int32 for the codes (along rows)
and zero points (down columns). Codes, scales, zero points, packed words and dequantized
weights must be identical, in bf16, f16 and f32, symmetric and asymmetric, including groups
that are all zero, constant, or one-signed.
"""
from __future__ import annotations

import subprocess

import numpy as np
import pytest

from conftest import tool

torch = pytest.importorskip("torch")
ct_quant = pytest.importorskip("compressed_tensors.quantization")
from compressed_tensors.compressors.pack_quantized.helpers import pack_to_int32  # noqa: E402
from compressed_tensors.quantization.lifecycle.forward import dequantize, quantize  # noqa: E402
from compressed_tensors.quantization.utils import calculate_qparams  # noqa: E402

TORCH_DTYPES = {"bf16": torch.bfloat16, "f16": torch.float16, "f32": torch.float32}


def _weights(rows, cols, group, dtype, seed):
    rng = np.random.default_rng(seed)
    w = rng.standard_normal((rows, cols)).astype(np.float32) * 0.05
    w[:, :8] *= 40  # outlier columns, as real weights have
    w[0, :group] = 0.0  # an all-zero group
    w[1, :group] = 0.125  # a constant group
    w[2, :group] = np.abs(w[2, :group])  # one-signed groups
    w[3, group: 2 * group] = -np.abs(w[3, group: 2 * group])
    return torch.from_numpy(w).to(TORCH_DTYPES[dtype])


def _reference(w, group, symmetric):
    args = ct_quant.QuantizationArgs(num_bits=4, type="int", symmetric=symmetric,
                                     strategy="group", group_size=group)
    grouped = w.unflatten(-1, (w.shape[-1] // group, group))
    scale, zp = calculate_qparams(grouped.amin(-1), grouped.amax(-1), args)
    codes = quantize(w, scale, zp, args, dtype=torch.int8)
    deq = dequantize(codes, scale, zp, args, dtype=w.dtype)
    return args, scale, zp, codes, deq


def _probe(w, group, symmetric, dtype, tmp_path):
    rows, cols = w.shape
    w.float().numpy().tofile(tmp_path / "w.f32")
    proc = subprocess.run([str(tool("int4_probe")), str(tmp_path / "w.f32"), str(rows), str(cols),
                           str(group), str(int(symmetric)), dtype, str(tmp_path)],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    groups = cols // group

    def read(name, dt, shape):
        return np.fromfile(tmp_path / name, dtype=dt).reshape(shape)

    return dict(codes=read("codes.i8", np.int8, (rows, cols)),
                scales=read("scales.f32", np.float32, (rows, groups)),
                zp=read("zp.i8", np.int8, (rows, groups)),
                packed=read("packed.i32", np.int32, (rows, (cols + 7) // 8)),
                zp_packed=read("zp_packed.i32", np.int32, ((rows + 7) // 8, groups)),
                fake=read("fake.f32", np.float32, (rows, cols)),
                dequant=read("dequant.f32", np.float32, (rows, cols)))


@pytest.mark.parametrize("dtype", ["bf16", "f16", "f32"])
@pytest.mark.parametrize("symmetric", [False, True])
@pytest.mark.parametrize("rows, cols, group", [(24, 256, 128), (13, 96, 32)])
def test_equals_compressed_tensors(tmp_path, dtype, symmetric, rows, cols, group):
    w = _weights(rows, cols, group, dtype, seed=rows + cols)
    ours = _probe(w, group, symmetric, dtype, tmp_path)
    args, scale, zp, codes, deq = _reference(w, group, symmetric)
    np.testing.assert_array_equal(ours["scales"], scale.float().numpy())
    if not symmetric:
        np.testing.assert_array_equal(ours["zp"], zp.to(torch.int8).numpy())
        np.testing.assert_array_equal(ours["zp_packed"],
                                      pack_to_int32(zp.to(torch.int8), 4, packed_dim=0).numpy())
    else:
        assert not ours["zp"].any()
    np.testing.assert_array_equal(ours["codes"], codes.numpy())
    np.testing.assert_array_equal(ours["packed"], pack_to_int32(codes, 4).numpy())
    np.testing.assert_array_equal(ours["dequant"], deq.float().numpy())
    np.testing.assert_array_equal(ours["fake"], ours["dequant"])
    # the codes use the whole range, so a test with a wrong formula has something to disagree on
    assert ours["codes"].min() == -8 and ours["codes"].max() == 7


def test_group_size_must_divide_the_row(tmp_path):
    np.zeros((2, 100), dtype=np.float32).tofile(tmp_path / "w.f32")
    proc = subprocess.run([str(tool("int4_probe")), str(tmp_path / "w.f32"), "2", "100", "128",
                           "0", "bf16", str(tmp_path)], capture_output=True, text=True)
    assert proc.returncode == 1 and "not a multiple of the group size 128" in proc.stderr
