"""The i-quant kernels (src/quant/kernels_iq.c) against llama.cpp's own ggml, with exact equality.

- Encoders (iq4_nl, iq4_xs, iq3_xxs, iq3_s) must give ggml_quantize_chunk's bytes: many random
  rows of several lengths and shapes, zero rows and all-zero sub-blocks, outliers, tiny values,
  each without importance and with uniform, lognormal, tiny, sparse and all-zero importance
  vectors (llama.cpp's imatrix rows).
- Decoders (iq1_s, iq1_m, iq2_xxs, iq2_xs, iq2_s, iq3_xxs, iq3_s) must give ggml's floats bit for
  bit on random valid blocks, and on blocks built so that every entry of every grid and every
  sign pattern is decoded: a mistyped table value in src/quant/iq_grids.c cannot pass.

The harness (the oracle wrapper, the kernel_probe runner, the shared input shapes) is imported
from test_kernels_vs_ggml.py. ggml aborts the process (GGML_ASSERT) on some iq3 inputs whose
squares or weighted sums overflow fp32, so any input with huge values is first given to ggml in
a forked child; where the child dies, our kernel is only required to run and be deterministic.
"""

import faulthandler
import os
import signal

import numpy as np
import pytest

from test_kernels_vs_ggml import (  # noqa: F401  (ggml is a fixture)
    TABLE,
    _require_probe,
    ggml,
    ggml_dequantize,
    probe,
    quantize_inputs,
    random_fp16_bits,
)

SEED = 20250301

ENCODERS = ["iq4_nl", "iq4_xs", "iq3_xxs", "iq3_s"]
DECODERS = ["iq2_xxs", "iq2_xs", "iq2_s", "iq3_xxs", "iq3_s", "iq1_s", "iq1_m"]

# Grid sizes; and how many groups (grid indices) a 256-element block holds.
GRID_SIZE = {"iq2_xxs": 256, "iq2_xs": 512, "iq2_s": 1024, "iq3_xxs": 256, "iq3_s": 512,
             "iq1_s": 2048, "iq1_m": 2048}
GROUPS = {"iq2_xxs": 32, "iq2_xs": 32, "iq2_s": 32, "iq3_xxs": 64, "iq3_s": 64, "iq1_s": 32,
          "iq1_m": 32}
# Types whose groups of 8 carry a 7-bit index into the sign table.
SIGN_INDEXED = {"iq2_xxs", "iq2_xs", "iq3_xxs"}


def _row(name):
    _require_probe()
    row = TABLE.get(name)
    if row is None:
        pytest.fail(f"{name} is not in the type table")
    return row


# ---- the oracle, guarded against ggml's aborts ----------------------------------------------


def _oracle_in_child(g, gid, x, imp):
    """ggml_quantize_chunk in a forked child: its bytes, or None if ggml killed the child."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # child: never returns into pytest
        status = 0
        try:
            os.close(r)
            # On abort ggml prints its assertion and runs gdb for a backtrace, and pytest's
            # faulthandler (on its own copy of stderr) prints Python's: silence all three.
            faulthandler.disable()
            os.environ["GGML_NO_BACKTRACE"] = "1"
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, 1)
            os.dup2(devnull, 2)
            data = g.quantize(gid, x, imp)
            view = memoryview(data)
            while view:
                view = view[os.write(w, view):]
        except BaseException:
            status = 3
        finally:
            os._exit(status)
    os.close(w)
    chunks = []
    while True:
        chunk = os.read(r, 1 << 20)
        if not chunk:
            break
        chunks.append(chunk)
    os.close(r)
    _, status = os.waitpid(pid, 0)
    if os.WIFSIGNALED(status):
        assert os.WTERMSIG(status) in (signal.SIGABRT, signal.SIGSEGV, signal.SIGILL), status
        return None
    assert os.WEXITSTATUS(status) == 0, f"oracle child failed with status {status}"
    return b"".join(chunks)


def oracle(g, gid, x, imp=None):
    """ggml's bytes for rows x (and importance imp), or None where ggml aborts. Inputs with
    nothing near the overflow range run in-process; the rest in a child."""
    big = float(np.max(np.abs(x))) if x.size else 0.0
    if imp is not None:
        big = max(big, float(np.max(np.abs(imp))))
    if big <= 1e9:
        return g.quantize(gid, x, imp)
    return _oracle_in_child(g, gid, x, imp)


# ---- inputs ------------------------------------------------------------------------------------


def lengths(elems):
    """Row lengths: one block, a few, and a realistic row (iq4_nl also an odd count of blocks)."""
    if elems == 32:
        return [32, 96, 256, 4096]
    return [256, 768, 4096]


def extra_inputs(rng, elems):
    """(label, rows) cases beyond test_kernels_vs_ggml's shared ones."""
    cases = []
    for n in lengths(elems):
        cases.append((f"many gaussian rows n={n}", rng.standard_normal((32, n)).astype(np.float32)))
    n = 1024
    g = rng.standard_normal((4, n)).astype(np.float32)
    # Exact-zero stretches: whole 32-element sub-blocks, half sub-blocks, single groups of 4.
    z = g.copy()
    z[0, 64:96] = 0.0          # one zero sub-block in the middle of a super-block
    z[1, 0:32] = 0.0           # the first sub-block
    z[1, 256 + 224:512] = 0.0  # the last one of the second super-block
    z[2, 32:128] = 0.0         # three in a row
    z[3, ::4] = 0.0            # a zero in every group
    cases.append(("zero sub-blocks", z))
    s = g.copy()
    s[rng.random(s.shape) < 0.9] = 0.0
    cases.append(("90% sparse", s))
    cases.append(("one nonzero per row", np.eye(4, n, k=77, dtype=np.float32) * 3.5))
    cases.append(("signed zeros", np.where(rng.random((2, n)) < 0.5, -0.0, 0.0).astype(np.float32)))
    for big in (1e8, 3e9, 1e12, 1e15, 1e19):
        x = g.copy()
        x[:, 100] = big
        x[2, 900] = -big
        cases.append((f"outlier {big:g}", x))
    for scale in (1e-3, 1e-7, 1e-9, 1e-15, 1e-20, 1e-25, 1e-30, 1e-38, 1e-44):
        cases.append((f"tiny x{scale:g}", (g * scale).astype(np.float32)))
    cases.append(("uniform [0, 1)", rng.random((3, n)).astype(np.float32)))
    cases.append(("all negative", -rng.random((3, n)).astype(np.float32)))
    cases.append(("lognormal magnitudes", (rng.lognormal(0, 3, (3, n)) *
                                           rng.choice([-1, 1], (3, n))).astype(np.float32)))
    cases.append(("integers", rng.integers(-8, 9, (3, n)).astype(np.float32)))
    # Each block at its own magnitude (per-sub-block scales spread over 12 decades).
    mags = 10.0 ** rng.uniform(-8, 4, size=(3, n // 32))
    mixed = g[:3] * np.repeat(mags, 32, axis=1)
    cases.append(("mixed sub-block scales", mixed.astype(np.float32)))
    return cases


def importances(rng, n):
    """Importance vectors of n columns: (label, vector or None)."""
    sparse = rng.uniform(0.1, 5.0, n)
    sparse[rng.random(n) < 0.5] = 0.0
    return [
        ("none", None),
        ("uniform", rng.uniform(0.01, 10.0, n)),
        ("lognormal", rng.lognormal(0.0, 2.0, n)),
        ("tiny", rng.uniform(1e-30, 1e-20, n)),
        ("half zero", sparse),
        ("all zero", np.zeros(n)),
    ]


# ---- encoders ----------------------------------------------------------------------------------


def check_encoder(g, tmp_path, name, label, x, imp, aborted):
    row = _row(name)
    n_per_row = x.shape[1]
    data = x.astype("<f4").tobytes()
    imp32 = None if imp is None else np.ascontiguousarray(imp, dtype=np.float32)
    ours = probe(tmp_path, "quantize", name, n_per_row, data, imp32)
    ref = oracle(g, row["gguf_id"], x, imp32)
    if ref is None:
        # ggml aborts on this input; ours must still run and be deterministic.
        aborted.append(label)
        again = probe(tmp_path, "quantize", name, n_per_row, data, imp32)
        assert ours == again, f"{name} / {label}: not deterministic"
        assert len(ours) == n_per_row // row["block_elems"] * row["block_bytes"] * x.shape[0]
        return
    assert len(ours) == len(ref), label
    if ours != ref:
        a = np.frombuffer(ours, np.uint8)
        b = np.frombuffer(ref, np.uint8)
        diff = np.flatnonzero(a != b)
        bb = row["block_bytes"]
        blk = diff[0] // bb
        pytest.fail(
            f"{name} / {label}: {diff.size} bytes differ, first at {diff[0]} (block {blk}, "
            f"byte {diff[0] % bb}): ours {a[blk * bb:(blk + 1) * bb].tobytes().hex()} "
            f"ggml {b[blk * bb:(blk + 1) * bb].tobytes().hex()}"
        )


@pytest.mark.parametrize("name", ENCODERS)
def test_encoder_matches_ggml(ggml, tmp_path, name):
    row = _row(name)
    if not row["quantize"]:
        pytest.fail(f"this build cannot quantize {name}")
    rng = np.random.default_rng([SEED, sum(map(ord, name))])
    cases = quantize_inputs(rng, row["block_elems"]) + extra_inputs(rng, row["block_elems"])
    aborted = []
    n_checked = 0
    for label, x in cases:
        for imp_label, imp in importances(rng, x.shape[1]):
            check_encoder(ggml, tmp_path, name, f"{label} / importance {imp_label}", x, imp,
                          aborted)
            n_checked += 1
    # ggml aborts only where fp32 overflows in the iq3 searches (|x| beyond about 3e12, where
    # w x q = x^3 q overflows), never for iq4.
    if name.startswith("iq4"):
        assert not aborted, aborted
    for label in aborted:
        assert "outlier" in label, label
    where = sorted({label.split(" / ")[0] for label in aborted})
    print(f"{name}: {n_checked} cases, {len(aborted)} where ggml aborts: {where}")


@pytest.mark.parametrize("name", ENCODERS)
def test_encoder_matches_ggml_per_row_importance(ggml, tmp_path, name):
    """Rows of typical weights at several magnitudes, each row quantized with its own random
    importance vector (a fresh imatrix per tensor), so the importance path is covered broadly."""
    row = _row(name)
    rng = np.random.default_rng([SEED, 3, sum(map(ord, name))])
    for trial in range(24):
        n = int(rng.choice([256, 512, 2048]))
        scale = 10.0 ** rng.uniform(-4, 2)
        x = (rng.standard_t(4, size=(2, n)) * scale).astype(np.float32)
        imp = rng.lognormal(0.0, rng.uniform(0.1, 3.0), n).astype(np.float32)
        check_encoder(ggml, tmp_path, name, f"trial {trial}", x, imp, [])


# ---- decoders ----------------------------------------------------------------------------------


def set_group(block, name, gi, index, sign=None):
    """Points group gi of one block (a writable uint8 array) at grid entry `index`; for the
    sign-indexed types also sets its 7-bit sign index. Layouts: src/quant/blocks.h."""
    if name == "iq2_xxs":  # 8 bytes per sub-block: 4 index bytes, a u32 of signs and scale
        ib, l = divmod(gi, 4)
        block[2 + 8 * ib + l] = index
        if sign is not None:
            off = 2 + 8 * ib + 4
            aux = int.from_bytes(block[off:off + 4].tobytes(), "little")
            aux = (aux & ~(127 << (7 * l))) | (sign << (7 * l))
            block[off:off + 4] = np.frombuffer(aux.to_bytes(4, "little"), np.uint8)
    elif name == "iq2_xs":  # u16 per group: 9-bit index, 7-bit sign index
        q = index | ((sign if sign is not None else int(block[3 + 2 * gi]) >> 1) << 9)
        block[2 + 2 * gi] = q & 0xFF
        block[3 + 2 * gi] = q >> 8
    elif name == "iq2_s":  # low 8 bits in qs[gi], 2 high bits in qh[gi // 4]
        block[2 + gi] = index & 0xFF
        ib, l = divmod(gi, 4)
        qh = 2 + 64 + ib
        block[qh] = (int(block[qh]) & ~(3 << (2 * l)) & 0xFF) | ((index >> 8) << (2 * l))
    elif name == "iq3_xxs":  # one byte per group of 4; signs in the u32 of its sub-block
        block[2 + gi] = index
        if sign is not None and gi % 2 == 0:
            ib, k = divmod(gi, 8)
            off = 2 + 64 + 4 * ib
            aux = int.from_bytes(block[off:off + 4].tobytes(), "little")
            l = k // 2
            aux = (aux & ~(127 << (7 * l))) | (sign << (7 * l))
            block[off:off + 4] = np.frombuffer(aux.to_bytes(4, "little"), np.uint8)
    elif name == "iq3_s":  # low 8 bits in qs[gi], bit 8 in qh[gi // 8] bit gi % 8
        block[2 + gi] = index & 0xFF
        ib, k = divmod(gi, 8)
        block[2 + 64 + ib] = (int(block[2 + 64 + ib]) & ~(1 << k) & 0xFF) | ((index >> 8) << k)
    elif name == "iq1_s":  # low 8 bits in qs[gi], 3 high bits in the u16 qh[gi // 4]
        block[2 + gi] = index & 0xFF
        ib, l = divmod(gi, 4)
        off = 2 + 32 + 2 * ib
        qh = int(block[off]) | int(block[off + 1]) << 8
        qh = (qh & ~(7 << (3 * l))) | ((index >> 8) << (3 * l))
        block[off] = qh & 0xFF
        block[off + 1] = qh >> 8
    elif name == "iq1_m":  # low 8 bits in qs[gi], 3 high bits in a nibble of qh[gi // 2]
        block[gi] = index & 0xFF
        off = 32 + gi // 2
        shift = 4 * (gi % 2)
        block[off] = (int(block[off]) & ~(7 << shift) & 0xFF) | ((index >> 8) << shift)
    else:
        raise AssertionError(name)


def random_iq_blocks(rng, name, n_blocks):
    """Random blocks with a random finite fp16 super-block scale (every other bit random)."""
    nbytes = TABLE[name]["block_bytes"]
    raw = rng.integers(0, 256, size=(n_blocks, nbytes), dtype=np.uint8)
    h = random_fp16_bits(rng, n_blocks)
    if name == "iq1_m":
        # The scale is the top nibbles of the four little-endian u16 of scales (bytes 48..55).
        for k in range(4):
            raw[:, 49 + 2 * k] = (raw[:, 49 + 2 * k] & 0x0F) | (((h >> (4 * k)) & 0xF) << 4)
    else:
        raw[:, 0:2] = h.astype("<u2").view(np.uint8).reshape(n_blocks, 2)
    return raw


def coverage_blocks(rng, name):
    """Blocks whose groups visit every grid entry in turn (and, for the sign-indexed types,
    every sign index)."""
    size, groups = GRID_SIZE[name], GROUPS[name]
    n_blocks = -(-size // groups)
    raw = random_iq_blocks(rng, name, n_blocks)
    for b in range(n_blocks):
        for gi in range(groups):
            k = b * groups + gi
            sign = k % 128 if name in SIGN_INDEXED else None
            set_group(raw[b], name, gi, k % size, sign)
    return raw


def compare_decoded(g, tmp_path, name, raw, label):
    n_blocks = raw.shape[0]
    data = raw.tobytes()
    n = 256 * n_blocks
    ours = np.frombuffer(probe(tmp_path, "dequantize", name, n, data), dtype="<f4")
    ref = ggml_dequantize(g, name, data, n)
    assert ours.shape == ref.shape
    bad = ours.view(np.uint32) != ref.view(np.uint32)
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        pytest.fail(f"{name} / {label}: {bad.sum()} values differ; first at {i}: ours {ours[i]!r} "
                    f"ggml {ref[i]!r}")


@pytest.mark.parametrize("name", DECODERS)
def test_decoder_matches_ggml(ggml, tmp_path, name):
    row = _row(name)
    if not row["dequantize"]:
        pytest.fail(f"this build cannot decode {name}")
    rng = np.random.default_rng([SEED, 11, sum(map(ord, name))])
    for n_blocks in (1, 7, 64, 512):
        compare_decoded(ggml, tmp_path, name, random_iq_blocks(rng, name, n_blocks),
                        f"{n_blocks} random blocks")
    compare_decoded(ggml, tmp_path, name, coverage_blocks(rng, name), "every grid entry")
    # Blocks with d = 1: every value is an exact small multiple of the grid value, so a wrong
    # grid byte shows up as a wrong number rather than a rounding difference.
    raw = coverage_blocks(rng, name)
    if name == "iq1_m":
        for k in range(4):
            raw[:, 49 + 2 * k] = (raw[:, 49 + 2 * k] & 0x0F) | (((0x3C00 >> (4 * k)) & 0xF) << 4)
    else:
        raw[:, 0] = 0x00
        raw[:, 1] = 0x3C
    compare_decoded(ggml, tmp_path, name, raw, "every grid entry, d = 1")


@pytest.mark.parametrize("name", ENCODERS)
def test_encoded_rows_decode_like_ggml(ggml, tmp_path, name):
    """What our encoders write decodes the same with ggml's decoder and ours (the encoded
    blocks are valid blocks, not just equal bytes)."""
    row = _row(name)
    rng = np.random.default_rng([SEED, 5, sum(map(ord, name))])
    x = rng.standard_normal((8, 1024)).astype(np.float32)
    q = probe(tmp_path, "quantize", name, 1024, x.astype("<f4").tobytes())
    ours = np.frombuffer(probe(tmp_path, "dequantize", name, 1024, q), dtype="<f4")
    ref = ggml_dequantize(ggml, name, q, x.size)
    assert np.array_equal(ours.view(np.uint32), ref.view(np.uint32))
    # Sanity only (the bounds with their derivation are in tests/unit/test_iq_quant.c): on
    # N(0, 1) data the RMSE is about 0.076 for iq4_nl/iq4_xs, 0.215 for iq3_xxs, 0.166 for
    # iq3_s; 10% more fails.
    rmse = float(np.sqrt(np.mean((ours.astype(np.float64) - x.reshape(-1)) ** 2)))
    limit = {"iq4_nl": 0.084, "iq4_xs": 0.085, "iq3_xxs": 0.237, "iq3_s": 0.183}[name]
    assert rmse < limit, rmse
