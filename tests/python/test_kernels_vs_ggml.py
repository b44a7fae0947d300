"""Our row kernels against llama.cpp's own ggml library, with exact equality.

The oracle is the libggml-base shipped in the `llama-cpp-python` wheel (a test dependency, never
a runtime one). Our kernels run through the `kernel_probe` tool (tests/tools/kernel_probe.c),
found in $QWODEL_BUILD_DIR (default /work/main/build).

- Decoding: for every type our table can decode, random blocks (random bytes, with every fp16
  or fp32 scale field replaced by a random finite value) must decode to exactly ggml's floats,
  compared bit for bit (so -0 and +0 differ too).
- Encoding: for every type our table can encode, rows of several lengths and shapes (Gaussian,
  all zero, one huge outlier, values near the fp16 subnormal range, exact rounding ties and values
  just either side ...) must give exactly ggml_quantize_chunk's bytes, with no importance and with
  three importance vectors (uniform, lognormal, tiny), i.e. llama.cpp's imatrix path, which for
  q4_0 ... q6_K is a different algorithm. An importance of all ones must give ggml's weighted
  bytes, not its unweighted ones.
- Encoders run twice: with the table the library uses by default (SIMD kernels where the CPU has
  them) and with QWODEL_KERNELS=reference (the scalar reference kernels), so a mismatch says
  which of the two is wrong.
"""

import ctypes
import os
import subprocess
from pathlib import Path

import numpy as np
import pytest

try:
    import llama_cpp
except Exception as exc:  # ImportError, or a wheel whose native part fails to load
    pytest.skip(
        f"llama_cpp (llama-cpp-python, the ggml oracle) is not importable: {exc}",
        allow_module_level=True,
    )

BUILD_DIR = Path(os.environ.get("QWODEL_BUILD_DIR", "/work/main/build"))
PROBE = BUILD_DIR / "kernel_probe"

SEED = 20250214


# ---- the oracle --------------------------------------------------------------------------------


class _TypeTraits(ctypes.Structure):
    # struct ggml_type_traits in ggml.h; the layout is checked against ggml's accessor functions
    # in load_ggml() before any field is trusted.
    _fields_ = [
        ("type_name", ctypes.c_char_p),
        ("blck_size", ctypes.c_int64),
        ("blck_size_interleave", ctypes.c_int64),
        ("type_size", ctypes.c_size_t),
        ("is_quantized", ctypes.c_bool),
        ("to_float", ctypes.c_void_p),
        ("from_float_ref", ctypes.c_void_p),
    ]


_TO_FLOAT = ctypes.CFUNCTYPE(None, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int64)


class Ggml:
    def __init__(self):
        libdir = Path(llama_cpp.__file__).parent / "lib"
        self.lib = lib = ctypes.CDLL(str(libdir / "libggml-base.so"))
        lib.ggml_get_type_traits.restype = ctypes.POINTER(_TypeTraits)
        lib.ggml_get_type_traits.argtypes = [ctypes.c_int]
        lib.ggml_type_name.restype = ctypes.c_char_p
        lib.ggml_type_name.argtypes = [ctypes.c_int]
        lib.ggml_blck_size.restype = ctypes.c_int64
        lib.ggml_blck_size.argtypes = [ctypes.c_int]
        lib.ggml_type_size.restype = ctypes.c_size_t
        lib.ggml_type_size.argtypes = [ctypes.c_int]
        lib.ggml_quantize_init.restype = None
        lib.ggml_quantize_init.argtypes = [ctypes.c_int]
        lib.ggml_quantize_chunk.restype = ctypes.c_size_t
        lib.ggml_quantize_chunk.argtypes = [
            ctypes.c_int,
            ctypes.c_void_p,
            ctypes.c_void_p,
            ctypes.c_int64,
            ctypes.c_int64,
            ctypes.c_int64,
            ctypes.c_void_p,
        ]

    def traits(self, type_id):
        t = self.lib.ggml_get_type_traits(type_id).contents
        # The struct layout is our assumption; ggml's accessors are its ABI. They must agree.
        assert t.type_name == self.lib.ggml_type_name(type_id)
        assert t.blck_size == self.lib.ggml_blck_size(type_id)
        assert t.type_size == self.lib.ggml_type_size(type_id)
        return t

    def to_float_fn(self, type_id, name):
        """ggml's decoder for a type: its to_float, else an exported dequantize_row_<name>."""
        t = self.traits(type_id)
        if t.to_float:
            return _TO_FLOAT(t.to_float)
        sym = getattr(self.lib, f"dequantize_row_{name}", None)
        if sym is not None:
            return _TO_FLOAT(ctypes.cast(sym, ctypes.c_void_p).value)
        return None

    def quantize(self, type_id, x, importance=None):
        x = np.ascontiguousarray(x, dtype=np.float32)
        nrows, n_per_row = x.shape
        row_size = self.lib.ggml_type_size(type_id) * n_per_row // self.lib.ggml_blck_size(type_id)
        dst = np.zeros(nrows * row_size, dtype=np.uint8)
        imp = None
        if importance is not None:
            importance = np.ascontiguousarray(importance, dtype=np.float32)
            imp = importance.ctypes.data
        self.lib.ggml_quantize_init(type_id)
        written = self.lib.ggml_quantize_chunk(
            type_id, x.ctypes.data, dst.ctypes.data, 0, nrows, n_per_row, imp
        )
        assert written == dst.size
        return dst.tobytes()


@pytest.fixture(scope="module")
def ggml():
    return Ggml()


# ---- our side ----------------------------------------------------------------------------------


def _probe_table():
    if not PROBE.exists():
        return None
    out = subprocess.run([str(PROBE), "list"], check=True, capture_output=True, text=True).stdout
    rows = {}
    for line in out.splitlines():
        name, gid, elems, nbytes, deq, q = line.split()
        rows[name] = dict(
            gguf_id=int(gid),
            block_elems=int(elems),
            block_bytes=int(nbytes),
            dequantize=deq == "1",
            quantize=q == "1",
        )
    return rows


TABLE = _probe_table()


def _require_probe():
    if TABLE is None:
        pytest.skip(
            f"{PROBE} not found: build it first (cmake --build <build> --target kernel_probe) "
            "or set QWODEL_BUILD_DIR"
        )


# The kernel sets an encoder is checked with: the default table (SIMD overlay) and the reference.
KERNEL_SETS = ["default", "reference"]


def probe(tmp_path, mode, name, n_per_row, data, importance=None, kernels="default"):
    src = tmp_path / "in.bin"
    dst = tmp_path / "out.bin"
    src.write_bytes(data)
    cmd = [str(PROBE), mode, name, str(n_per_row), str(src), str(dst)]
    if importance is not None:
        imp = tmp_path / "importance.bin"
        imp.write_bytes(np.ascontiguousarray(importance, dtype="<f4").tobytes())
        cmd.append(str(imp))
    env = {k: v for k, v in os.environ.items() if k != "QWODEL_KERNELS"}
    if kernels != "default":
        env["QWODEL_KERNELS"] = kernels
    res = subprocess.run(cmd, capture_output=True, text=True, env=env)
    assert res.returncode == 0, res.stderr
    return dst.read_bytes()


# Types with an oracle test module of their own, which knows their block layouts and guards the
# process against ggml's aborts on them (GGML_ASSERTs on some iq3 inputs, iq1/iq2 without an
# imatrix): the generic tests here leave them to it while that module exists.
OWN_MODULE = {
    name: "test_iq_kernels_vs_ggml.py"
    for name in ("iq1_s", "iq1_m", "iq2_xxs", "iq2_xs", "iq2_s", "iq3_xxs", "iq3_s")
}


def _skip_if_own_module(name):
    module = OWN_MODULE.get(name)
    if module and (Path(__file__).parent / module).exists():
        pytest.skip(f"{name} is tested in {module}")


def _names(kind):
    if TABLE is None:
        return ["(kernel_probe missing)"]
    return [n for n, row in TABLE.items() if row[kind]]


# ---- random blocks with valid scales -----------------------------------------------------------

# Byte offsets of each block's fp16 fields (d, dmin, m, s); the rest of a block is free-form bits.
FP16_FIELDS = {
    "q4_0": [0],
    "q4_1": [0, 2],
    "q5_0": [0],
    "q5_1": [0, 2],
    "q8_0": [0],
    "q8_1": [0, 2],
    "q2_K": [80, 82],
    "q3_K": [108],
    "q4_K": [0, 2],
    "q5_K": [0, 2],
    "q6_K": [208],
    "iq4_nl": [0],
    "iq4_xs": [0],
    "tq1_0": [52],
    "tq2_0": [64],
    "q1_0": [0],
    "q2_0": [0],
}
FP32_FIELDS = {"q8_K": [0]}
# Types whose scales are single bytes (E8M0, UE4M3): every byte pattern is a valid block.
BYTE_SCALED = {"mxfp4", "nvfp4"}


def random_fp16_bits(rng, n):
    """Finite fp16 bit patterns of all kinds: zeros, subnormals, normals up to 65504, both signs."""
    bits = rng.integers(0, 1 << 16, size=n, dtype=np.uint32)
    exp = (bits >> 10) & 0x1F
    bits = np.where(exp == 0x1F, bits & ~np.uint32(0x4000), bits)  # exponent 31 -> 15
    special = rng.integers(0, 8, size=n)
    bits = np.where(special == 0, bits & 0x8000, bits)  # some signed zeros
    bits = np.where(special == 1, bits & 0x83FF, bits)  # some subnormals
    return bits.astype(np.uint16)


def random_blocks(rng, name, n_blocks):
    """n_blocks random blocks of a type (one element each for the float types), every scale a
    random finite value, every other bit random."""
    if name == "f16":
        return random_fp16_bits(rng, n_blocks).astype("<u2").tobytes()
    if name == "bf16":
        bits = rng.integers(0, 1 << 16, size=n_blocks, dtype=np.uint32)
        exp = (bits >> 7) & 0xFF
        bits = np.where(exp == 0xFF, bits & ~np.uint32(0x4000), bits)  # no inf/NaN
        return bits.astype("<u2").tobytes()
    if name in ("f32", "f64"):
        top = 37 if name == "f32" else 300
        x = rng.standard_normal(n_blocks) * 10.0 ** rng.integers(-top - 8, top, n_blocks)
        return x.astype("<f4" if name == "f32" else "<f8").tobytes()
    if name not in FP16_FIELDS and name not in FP32_FIELDS and name not in BYTE_SCALED:
        pytest.fail(f"{name}: say where its scale fields are (FP16_FIELDS, FP32_FIELDS ...)")
    raw = rng.integers(0, 256, size=(n_blocks, TABLE[name]["block_bytes"]), dtype=np.uint8)
    for off in FP16_FIELDS.get(name, []):
        h = random_fp16_bits(rng, n_blocks).astype("<u2")
        raw[:, off : off + 2] = h.view(np.uint8).reshape(n_blocks, 2)
    for off in FP32_FIELDS.get(name, []):
        f = (rng.standard_normal(n_blocks) * 10.0 ** rng.integers(-30, 30, n_blocks)).astype("<f4")
        raw[:, off : off + 4] = f.view(np.uint8).reshape(n_blocks, 4)
    return raw.tobytes()


def ggml_dequantize(ggml, name, data, n_elems):
    row = TABLE[name]
    gid = row["gguf_id"]
    buf = (ctypes.c_uint8 * len(data)).from_buffer_copy(data)
    out = np.zeros(n_elems, dtype=np.float32)
    if name == "f32":
        return np.frombuffer(data, dtype="<f4").copy()  # ggml stores f32 as is (no to_float)
    if name == "f64":
        # ggml has no f64 decoder; C's double -> float conversion rounds to nearest, as numpy.
        with np.errstate(over="ignore"):  # out-of-range doubles become ±inf, as in C (Annex F)
            return np.frombuffer(data, dtype="<f8").astype(np.float32)
    if name == "q8_1":
        # ggml has no q8_1 decoder (it is an activation format). Its values are d * q exactly as
        # q8_0's, so drop the s field and let ggml decode the q8_0 blocks.
        blocks = np.frombuffer(data, dtype=np.uint8).reshape(-1, 36)
        q8_0 = np.concatenate([blocks[:, 0:2], blocks[:, 4:36]], axis=1).tobytes()
        return ggml_dequantize(ggml, "q8_0", q8_0, n_elems)
    fn = ggml.to_float_fn(gid, name)
    if fn is None:
        pytest.fail(f"ggml has no decoder for {name}; add an oracle for it here")
    fn(ctypes.addressof(buf), out.ctypes.data, n_elems)
    return out


# ---- tests -------------------------------------------------------------------------------------


def test_table_matches_ggml(ggml):
    """Every row's GGUF id, block size and byte size are the oracle's (names too)."""
    _require_probe()
    for name, row in TABLE.items():
        t = ggml.traits(row["gguf_id"])
        assert t.type_name.decode() == name, name
        assert t.blck_size == row["block_elems"], name
        assert t.type_size == row["block_bytes"], name


@pytest.mark.parametrize("name", _names("dequantize"))
def test_dequantize_matches_ggml(ggml, tmp_path, name):
    _require_probe()
    _skip_if_own_module(name)
    rng = np.random.default_rng([SEED, sum(map(ord, name))])
    row = TABLE[name]
    elems = row["block_elems"]
    for blocks_per_row, n_rows in [(1, 1), (3, 5), (max(1, 4096 // elems), 4)]:
        n_per_row = blocks_per_row * elems
        data = random_blocks(rng, name, blocks_per_row * n_rows)
        ours = np.frombuffer(probe(tmp_path, "dequantize", name, n_per_row, data), dtype="<f4")
        ref = ggml_dequantize(ggml, name, data, n_per_row * n_rows)
        assert ours.shape == ref.shape
        assert np.array_equal(ours, ref), f"{name}: {np.count_nonzero(ours != ref)} values differ"
        mismatch = ours.view(np.uint32) != ref.view(np.uint32)
        assert not mismatch.any(), f"{name}: {np.count_nonzero(mismatch)} bit patterns differ"


def quantize_inputs(rng, elems):
    """(label, rows) pairs: each a 2-D float32 array whose row length is a multiple of elems."""
    cases = []
    for blocks in (1, 3, max(1, 4096 // elems)):
        n = blocks * elems
        cases.append((f"gaussian n={n}", rng.standard_normal((4, n)).astype(np.float32)))
    n = max(elems, 512 // elems * elems)
    g = rng.standard_normal((3, n)).astype(np.float32)
    cases.append(("all zero", np.zeros((2, n), np.float32)))
    for big in (1e3, 1e4, 6e4, 1e6, 1e12, 1e20, 3e38):
        x = g.copy()
        x[:, n // 3] = big
        x[1, n // 2] = -big
        cases.append((f"one outlier {big:g}", x))
    for scale in (1e-4, 1e-5, 6e-8, 1e-8, 1e-12, 1e-14):
        cases.append((f"tiny x{scale:g}", (g * scale).astype(np.float32)))
    # Every block at a different magnitude, so per-block scales span a wide range.
    mags = (10.0 ** rng.uniform(-6, 4, size=(3, n // elems if elems > 1 else n))).astype(np.float32)
    cases.append(("mixed scales", g * np.repeat(mags, elems if elems > 1 else 1, axis=1)))
    # Every group of 16 at its own magnitude, down to fp32 subnormals: q6_K's sub-blocks then
    # include all-but-zero ones (below ggml's 1e-15 cutoff) next to ordinary ones.
    groups = max(1, n // 16)
    mags16 = 10.0 ** rng.uniform(-42, 4, size=(3, groups))
    mags16[:, ::5] = 1e-16
    x16 = g * np.repeat(mags16, n // groups, axis=1)[:, :n]
    cases.append(("sub-block scales", x16.astype(np.float32)))
    cases.append(("constant", np.full((2, n), 0.37, np.float32)))
    cases.append(("negative", -np.abs(g)))
    # Small integers and halves: exact ties for the rounding rules (x.5, round-half-even).
    cases.append(("ties", (rng.integers(-16, 17, size=(3, n)) / 2).astype(np.float32)))
    # Ties on a known grid, and just either side: anchors lo and hi in every 16 values fix the
    # legacy blocks' step at exactly 1 (q4_0: max = -8 -> d = 1; q4_1: (7 - -8) / 15; and the
    # 5-bit types with -16 and 15), so every other value k + 0.5 lands exactly on a truncation
    # boundary (x/d + 8.5 and (x - min)/d + 0.5 are integers). The nudge is 2^-18, not one ulp of
    # x: an ulp of x would vanish in the + 8.5, while 2^-18 survives every sum below 64.
    for lo, hi in ((-8, 7), (-16, 15)):
        base = rng.integers(lo, hi, size=(2, n)) + 0.5
        anchors = np.zeros(n, bool)
        anchors[0::16] = anchors[1::16] = True
        base[:, 0::16] = lo
        base[:, 1::16] = hi
        for nudge, tag in ((0.0, "exact"), (2.0**-18, "+2^-18"), (-(2.0**-18), "-2^-18")):
            x = base.copy()
            x[:, ~anchors] += nudge
            cases.append((f"ties on [{lo}, {hi}] {tag}", x.astype(np.float32)))
    cases.append(("heavy tails", rng.standard_t(2, size=(3, n)).astype(np.float32)))
    # fp16 edges: around 65504/65520 (overflow to inf), the smallest normal and subnormals.
    edge = np.array(
        [65504, 65519.99, 65520, 7e4, 6.1035156e-05, 6.0975552e-05, 5.96e-08, 2.98e-08, 2.99e-08],
        np.float32,
    )
    e = np.resize(np.concatenate([edge, -edge]), n).astype(np.float32)
    cases.append(("fp16 edges", e[None, :]))
    return cases


@pytest.mark.parametrize("kernels", KERNEL_SETS)
@pytest.mark.parametrize("name", _names("quantize"))
def test_quantize_matches_ggml(ggml, tmp_path, name, kernels):
    _require_probe()
    _skip_if_own_module(name)
    rng = np.random.default_rng([SEED, 7, sum(map(ord, name))])
    row = TABLE[name]
    for label, x in quantize_inputs(rng, row["block_elems"]):
        n_per_row = x.shape[1]
        ours = probe(
            tmp_path, "quantize", name, n_per_row, x.astype("<f4").tobytes(), kernels=kernels
        )
        ref = ggml.quantize(row["gguf_id"], x)
        assert len(ours) == len(ref), label
        if ours != ref:
            diff = np.flatnonzero(np.frombuffer(ours, np.uint8) != np.frombuffer(ref, np.uint8))
            pytest.fail(f"{name} / {label}: {diff.size} bytes differ, first at {diff[0]}")


# ggml's quantize_<type> takes a different, weighted path whenever it is given importance
# weights (quantize_row_*_impl) for WEIGHTED, and ignores them for UNWEIGHTED. Other types are
# judged by what the oracle does.
WEIGHTED = {"q4_0", "q4_1", "q5_0", "q5_1", "q2_K", "q3_K", "q4_K", "q5_K", "q6_K"}
UNWEIGHTED = {"f32", "f16", "bf16", "q8_0"}


def importance_vectors(rng, n_per_row):
    """(label, weights): the shapes of imatrix entries -- moderate, heavy-tailed, and so small
    that the weighted sums underflow toward zero."""
    return [
        ("uniform", rng.uniform(0.01, 10.0, n_per_row).astype(np.float32)),
        ("lognormal", rng.lognormal(0.0, 2.0, n_per_row).astype(np.float32)),
        ("tiny", rng.uniform(1e-30, 1e-20, n_per_row).astype(np.float32)),
    ]


def _first_difference(ours, ref, row_bytes, labels):
    diff = np.flatnonzero(np.frombuffer(ours, np.uint8) != np.frombuffer(ref, np.uint8))
    row = int(diff[0]) // row_bytes
    return f"{diff.size} bytes differ, first at byte {int(diff[0]) % row_bytes} of {labels[row]}"


@pytest.mark.parametrize("kernels", KERNEL_SETS)
@pytest.mark.parametrize("name", _names("quantize"))
def test_quantize_importance_matches_ggml(ggml, tmp_path, name, kernels):
    """Every encoder with an importance vector (llama.cpp's imatrix path). Cases with the same
    row length are stacked into one call each side: rows are independent in ggml and in the
    probe (one kernel call per row), and the importance applies to every row alike."""
    _require_probe()
    _skip_if_own_module(name)
    rng = np.random.default_rng([SEED, 6, sum(map(ord, name))])
    row = TABLE[name]
    by_len = {}
    for label, x in quantize_inputs(rng, row["block_elems"]):
        by_len.setdefault(x.shape[1], []).append((label, x))
    for n_per_row, cases in sorted(by_len.items()):
        x = np.concatenate([c for _, c in cases]).astype(np.float32)
        labels = [label for label, c in cases for _ in range(c.shape[0])]
        row_bytes = row["block_bytes"] * n_per_row // row["block_elems"]
        for imp_label, imp in importance_vectors(rng, n_per_row):
            ours = probe(
                tmp_path, "quantize", name, n_per_row, x.astype("<f4").tobytes(), imp, kernels
            )
            ref = ggml.quantize(row["gguf_id"], x, imp)
            assert len(ours) == len(ref)
            if ours != ref:
                pytest.fail(
                    f"{name} / importance {imp_label} / n={n_per_row}: "
                    + _first_difference(ours, ref, row_bytes, labels)
                )


@pytest.mark.parametrize("name", _names("quantize"))
def test_importance_of_ones_is_not_null(ggml, tmp_path, name):
    """An importance vector of all ones selects ggml's weighted algorithm: it must not be taken
    for 'no importance' (and no importance must not be taken for ones). Where ggml ignores the
    weights, ones and NULL must give the same bytes."""
    _require_probe()
    _skip_if_own_module(name)
    rng = np.random.default_rng([SEED, 9, sum(map(ord, name))])
    row = TABLE[name]
    n_per_row = max(row["block_elems"], 1024 // row["block_elems"] * row["block_elems"])
    x = rng.standard_normal((3, n_per_row)).astype(np.float32)
    ones = np.ones(n_per_row, np.float32)
    data = x.astype("<f4").tobytes()
    ref_null = ggml.quantize(row["gguf_id"], x)
    ref_ones = ggml.quantize(row["gguf_id"], x, ones)
    # Which types ggml weights is our assumption; the oracle must agree with it.
    if name in WEIGHTED:
        assert ref_null != ref_ones, f"{name}: ggml no longer distinguishes ones from NULL"
    if name in UNWEIGHTED:
        assert ref_null == ref_ones, f"{name}: ggml now uses importance weights"
    for kernels in KERNEL_SETS:
        assert probe(tmp_path, "quantize", name, n_per_row, data, None, kernels) == ref_null
        assert probe(tmp_path, "quantize", name, n_per_row, data, ones, kernels) == ref_ones, (
            f"{name} ({kernels}): importance of ones does not give ggml's weighted bytes"
        )


@pytest.mark.parametrize("name", ["f16", "bf16"])
def test_float_nan_and_inf_match_ggml(ggml, tmp_path, name):
    """Non-finite inputs to the float conversions: ±inf, and the NaNs C code actually produces
    (the default quiet NaN and its negative). NaN payloads are not compared: ggml's own f16
    conversion keeps or drops them depending on the CPU features it was built for."""
    _require_probe()
    x = np.array([[np.inf, -np.inf, np.nan, -np.nan, 1.0, 3e38, -3e38, 0.0]], np.float32)
    ours = probe(tmp_path, "quantize", name, x.shape[1], x.astype("<f4").tobytes())
    ref = ggml.quantize(TABLE[name]["gguf_id"], x)
    assert ours == ref
