"""The awq backend end to end, judged by transformers and compressed-tensors.

The built `qwodel` quantizes a tiny Llama-3-shaped checkpoint (GQA, tied head, bf16) with a
local calibration file. Then:

* the checkpoint's layout and config.json's quantization_config are what compressed-tensors'
  pack-quantized format and llm-compressor's W4A16 / W4A16_ASYM presets say;
* compressed-tensors' own decompressor turns every quantized layer back into weights, and a
  transformers model built from them (with the scaled norms from the output) computes logits
  close to the original model's: AWQ changed the weights, not the function;
* symmetric output loads directly with AutoModelForCausalLM (compressed-tensors integration) and
  generates. (Asymmetric pack-quantized checkpoints do not load through transformers 5.x with
  compressed-tensors 0.19/0.20 — their skeleton expects unpacked zero points, llm-compressor
  issue #1618 — so that route is checked through the decompressor above);
* `ignore` leaves layers dense and lists them; bad group sizes, an unsupported model (the
  multimodal Gemma 3) and an existing foreign directory are clear errors that leave nothing
  behind.
"""
from __future__ import annotations

import json

import numpy as np
import pytest

import hf_fixtures
import tokenizer_corpus
from conftest import run_qwodel

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
ct = pytest.importorskip("compressed_tensors")
from compressed_tensors.compressors.pack_quantized.base import (  # noqa: E402
    PackedQuantizationCompressor)
from compressed_tensors.quantization import QuantizationArgs, QuantizationScheme  # noqa: E402
import safetensors.torch  # noqa: E402

LINEARS = ["self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj",
           "mlp.gate_proj", "mlp.up_proj", "mlp.down_proj"]


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    root = tmp_path_factory.mktemp("awq_src")
    ck = hf_fixtures.make_checkpoint(root / "tiny", family="llama", tokenizer="llama3", tied=True,
                                     dtype="bf16", layers=2, heads=4, kv_heads=2)
    calib = root / "calib.txt"
    calib.write_text("\n".join(s.replace("\n", " ") for s in tokenizer_corpus.corpus(3000)
                               if s.strip()))
    return ck, calib


def quantize(qwodel_bin, source, out, *extra, check=True):
    ck, calib = source
    return run_qwodel(qwodel_bin, "quantize", ck, "-b", "awq", "-o", out,
                      "--calibration-dataset", calib, "--num-samples", "8", "--seq-length", "64",
                      "-q", *extra, check=check)


@pytest.fixture(scope="module")
def outputs(qwodel_bin, source, tmp_path_factory):
    made = {}

    def get(kind):
        if kind not in made:
            out = tmp_path_factory.mktemp(f"awq_{kind}")
            extra = {"asym": [], "sym": ["--symmetric"],
                     "ignore": ["--symmetric", "--ignore", "lm_head,re:.*down_proj$"],
                     "clip": ["--clip"]}[kind]
            quantize(qwodel_bin, source, out, *extra)
            made[kind] = out / "tiny-awq-int4"
        return made[kind]

    return get


def _tensors(d):
    """{name: torch tensor}, read by the safetensors package (the reference reader)."""
    return safetensors.torch.load_file(str(d / "model.safetensors"))


@pytest.mark.parametrize("kind", ["asym", "sym"])
def test_layout_and_config(outputs, source, kind):
    out = outputs(kind)
    sym = kind == "sym"
    src_cfg = json.loads((source[0] / "config.json").read_text())
    cfg = json.loads((out / "config.json").read_text())
    qc = cfg.pop("quantization_config")
    assert cfg == src_cfg  # the model's own config is kept as it was
    assert qc["quant_method"] == "compressed-tensors" and qc["format"] == "pack-quantized"
    assert qc["quantization_status"] == "compressed" and qc["ignore"] == ["lm_head"]
    w = qc["config_groups"]["group_0"]["weights"]
    assert qc["config_groups"]["group_0"]["targets"] == ["Linear"]
    assert (w["num_bits"], w["type"], w["strategy"], w["group_size"], w["symmetric"]) == \
        (4, "int", "group", 128, sym)
    # the scheme round-trips through compressed-tensors' own config model
    args = QuantizationArgs(**w)
    assert args.symmetric == sym and args.group_size == 128
    t = _tensors(out)
    hidden, inter = src_cfg["hidden_size"], src_cfg["intermediate_size"]
    for layer in range(src_cfg["num_hidden_layers"]):
        for lin in LINEARS:
            m = f"model.layers.{layer}.{lin}"
            n_in = inter if lin.endswith("down_proj") else hidden
            assert f"{m}.weight" not in t
            assert t[f"{m}.weight_packed"].dtype == torch.int32
            assert t[f"{m}.weight_packed"].shape[1] == n_in // 8
            assert t[f"{m}.weight_scale"].dtype == torch.bfloat16
            assert t[f"{m}.weight_shape"].dtype == torch.int64
            assert t[f"{m}.weight_shape"].tolist() == [t[f"{m}.weight_packed"].shape[0], n_in]
            assert (f"{m}.weight_zero_point" in t) == (not sym)
    assert "model.embed_tokens.weight" in t and "lm_head.weight" not in t  # tied, ignored
    assert (out / "tokenizer.json").read_bytes() == (source[0] / "tokenizer.json").read_bytes()


def _decompressed_model(out, sym):
    """A transformers model of the source config holding compressed-tensors' decompression of
    every quantized layer and the output's other tensors."""
    cfg = transformers.AutoConfig.from_pretrained(str(out))
    del cfg.quantization_config
    model = transformers.AutoModelForCausalLM.from_config(cfg, dtype=torch.float32)
    qc = json.loads((out / "config.json").read_text())["quantization_config"]
    scheme = QuantizationScheme(targets=["Linear"],
                                weights=QuantizationArgs(**qc["config_groups"]["group_0"]["weights"]))
    t = _tensors(out)
    state = {}
    for name, value in t.items():
        if ".weight_" in name:
            continue
        state[name] = value.float()
    modules = {n.rsplit(".weight_", 1)[0] for n in t if ".weight_" in n}
    for m in modules:
        local = {k.rsplit(".", 1)[1]: t[k] for k in t if k.startswith(m + ".weight_")}
        dec = PackedQuantizationCompressor.decompress(local, scheme)
        state[m + ".weight"] = dec["weight"].float()
    missing, unexpected = model.load_state_dict(state, strict=False)
    assert not unexpected and set(missing) <= {"lm_head.weight"}
    model.tie_weights()
    return model.eval()


def _logits(model, ids):
    with torch.no_grad():
        return model(torch.tensor(ids)).logits.float().numpy()


@pytest.mark.parametrize("kind", ["asym", "sym"])
def test_decompressed_model_computes_like_the_source(outputs, source, kind):
    out = outputs(kind)
    ref = transformers.AutoModelForCausalLM.from_pretrained(str(source[0]), dtype=torch.float32)
    ids = [[128000, 791, 4062, 14198, 39935, 35308, 927, 279, 16053, 5679]]
    got, want = _logits(_decompressed_model(out, kind == "sym"), ids), _logits(ref, ids)
    rel = np.sqrt(np.mean((got - want) ** 2) / np.mean(want ** 2))
    assert rel < 0.5, rel  # int4 noise on random weights, not a different function
    # and the quantization did something: exact equality would mean nothing was quantized
    assert not np.array_equal(got, want)


def test_symmetric_loads_in_transformers_and_generates(outputs):
    out = outputs("sym")
    model = transformers.AutoModelForCausalLM.from_pretrained(str(out), dtype=torch.bfloat16)
    gen = model.generate(torch.tensor([[128000, 791, 4062]]), max_new_tokens=4, do_sample=False)
    assert gen.shape == (1, 7)
    # the loaded weights are compressed-tensors' decompression of ours
    dec = _decompressed_model(out, True)
    w_loaded = model.model.layers[1].mlp.down_proj.weight.float()
    w_dec = dec.model.layers[1].mlp.down_proj.weight
    assert torch.allclose(w_loaded, w_dec, atol=0, rtol=1e-2)


def test_ignore_leaves_layers_dense(outputs):
    out = outputs("ignore")
    qc = json.loads((out / "config.json").read_text())["quantization_config"]
    assert qc["ignore"] == ["model.layers.0.mlp.down_proj", "model.layers.1.mlp.down_proj",
                            "lm_head"]
    t = _tensors(out)
    assert t["model.layers.0.mlp.down_proj.weight"].dtype == torch.bfloat16
    assert "model.layers.0.mlp.down_proj.weight_packed" not in t
    assert "model.layers.0.mlp.up_proj.weight_packed" in t
    model = transformers.AutoModelForCausalLM.from_pretrained(str(out), dtype=torch.bfloat16)
    assert model.generate(torch.tensor([[128000, 791]]), max_new_tokens=2).shape == (1, 4)


def test_errors_leave_nothing(qwodel_bin, source, tmp_path):
    proc = quantize(qwodel_bin, source, tmp_path, "--group-size", "96", check=False)
    assert proc.returncode != 0 and "not a multiple of the group size 96" in proc.stderr
    assert not list(tmp_path.iterdir())
    foreign = tmp_path / "tiny-awq-int4"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine")
    proc = quantize(qwodel_bin, source, tmp_path, check=False)
    assert proc.returncode != 0 and "not a quantized checkpoint" in proc.stderr
    assert [p.name for p in tmp_path.iterdir()] == ["tiny-awq-int4"]
    assert (foreign / "notes.txt").read_text() == "mine"
    # a model the forward pass does not run: the multimodal Gemma 3, whose text model sits
    # under other tensor names (every architecture qwodel opens is otherwise supported)
    mm = hf_fixtures.make_gemma3_multimodal_checkpoint(tmp_path / "m", layers=1)
    proc = run_qwodel(qwodel_bin, "quantize", mm, "-b", "awq", "-o", tmp_path / "o",
                      check=False)
    assert proc.returncode == 1 and "does not run the multimodal \"gemma3\"" in proc.stderr
    assert not (tmp_path / "o").exists()


def test_model_info_and_gguf_source(qwodel_bin, source, tmp_path):
    """A GGUF works as the source as a directory does (through the HF view), and the model
    info names what was left out and what a quantized weight costs."""
    ck, calib = source
    run_qwodel(qwodel_bin, "quantize", ck, "-f", "BF16", "-o", tmp_path, "-q")
    gguf_path = tmp_path / "tiny-bf16.gguf"
    proc = run_qwodel(qwodel_bin, "quantize", gguf_path, "-b", "awq", "-o", tmp_path / "out",
                      "--calibration-dataset", calib, "--num-samples", "4", "--seq-length",
                      "64", "--json", "-q")
    info = json.loads(proc.stdout)
    assert info["backend"] == "awq" and info["format"] == "int4"
    assert info["ignore"] == ["lm_head"] and info["group_size"] == 128
    assert info["quantized_bits_per_weight"] == pytest.approx(4 + 20 / 128)
    assert info["calibration"]["samples"] >= 1 and info["calibration"]["seq_len"] == 64
    out = tmp_path / "out" / "tiny-bf16-awq-int4"
    assert info["quantized_model"] == str(out)
    model = _decompressed_model(out, False)
    ref = transformers.AutoModelForCausalLM.from_pretrained(str(ck), dtype=torch.float32)
    ids = [[128000, 791, 4062, 14198, 39935]]
    got, want = _logits(model, ids), _logits(ref, ids)
    assert np.sqrt(np.mean((got - want) ** 2) / np.mean(want ** 2)) < 0.5


def test_untied_head_quantized_unless_ignored(qwodel_bin, source, tmp_path):
    """An untied lm_head that `ignore` does not name is quantized (round to nearest: no
    mapping balances it); splitting q/k/v is allowed but warned about, since vLLM fuses them."""
    ck = hf_fixtures.make_checkpoint(tmp_path / "untied", family="llama", tokenizer="llama3",
                                     tied=False, dtype="bf16", layers=1, heads=4, kv_heads=2)
    proc = run_qwodel(qwodel_bin, "quantize", ck, "-b", "awq", "-o", tmp_path / "out",
                      "--calibration-dataset", source[1], "--num-samples", "4",
                      "--seq-length", "64", "--ignore", "re:.*q_proj", "--json")
    assert "vLLM fuses those layers" in proc.stderr
    info = json.loads(proc.stdout)
    assert info["ignore"] == ["model.layers.0.self_attn.q_proj"]
    out = tmp_path / "out" / "untied-awq-int4"
    t = _tensors(out)
    assert "lm_head.weight_packed" in t and "lm_head.weight" not in t
    assert t["model.layers.0.self_attn.q_proj.weight"].dtype == torch.bfloat16
    model = _decompressed_model(out, False)
    ref = transformers.AutoModelForCausalLM.from_pretrained(str(ck), dtype=torch.float32)
    ids = [[128000, 791, 4062, 14198]]
    got, want = _logits(model, ids), _logits(ref, ids)
    assert np.sqrt(np.mean((got - want) ** 2) / np.mean(want ** 2)) < 0.5


def _heldout_ids(source, n_seq=4, length=48):
    """Token ids of corpus text the calibration did not use (the tail of the corpus)."""
    tok = transformers.PreTrainedTokenizerFast(tokenizer_file=str(source[0] / "tokenizer.json"))
    text = " ".join(s.replace("\n", " ") for s in tokenizer_corpus.corpus(6000)[3000:])
    ids = tok(text)["input_ids"]
    return [ids[i * length:(i + 1) * length] for i in range(n_seq)]


def test_clip_search_lowers_the_error(outputs, source):
    """--clip (AutoAWQ's auto_clip) runs after the same scale search: q_proj and k_proj come
    out identical to the run without it, the other layers get narrower ranges in some groups,
    and the decompressed model is closer to the source on held-out text."""
    plain, clipped = outputs("asym"), outputs("clip")
    tp, tc = _tensors(plain), _tensors(clipped)
    assert tp.keys() == tc.keys()
    for layer in range(2):
        for lin in LINEARS:
            name = f"model.layers.{layer}.{lin}.weight_packed"
            same = torch.equal(tp[name], tc[name])
            assert same == lin.endswith(("q_proj", "k_proj")), name
    ref = transformers.AutoModelForCausalLM.from_pretrained(str(source[0]), dtype=torch.float32)
    ids = _heldout_ids(source)
    want = _logits(ref, ids)

    def error(out):
        got = _logits(_decompressed_model(out, False), ids)
        return float(np.sqrt(np.mean((got - want) ** 2) / np.mean(want ** 2)))

    e_clip, e_plain = error(clipped), error(plain)
    print(f"held-out logits error: clip {e_clip:.4f}, without {e_plain:.4f}")
    assert e_clip < e_plain


def _autoawq_packing():
    """AutoAWQ's own GEMM unpacking (awq/utils/packing_utils.py of the autoawq package, installed
    without its dependencies), loaded by file path: importing the package itself would pull in
    its model zoo and the kernels it needs for inference."""
    import importlib.util
    spec = importlib.util.find_spec("awq")
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("autoawq is not installed")
    path = f"{list(spec.submodule_search_locations)[0]}/utils/packing_utils.py"
    mod_spec = importlib.util.spec_from_file_location("autoawq_packing_utils", path)
    module = importlib.util.module_from_spec(mod_spec)
    mod_spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("sym", [False, True])
def test_gemm_layout_decodes_to_the_pack_quantized_weights(qwodel_bin, source, tmp_path, sym):
    """layout=gemm writes AutoAWQ's GEMM checkpoint: AutoAWQ's dequantize_gemm gives, for every
    layer, exactly the weights compressed-tensors decompresses from the pack-quantized run of the
    same float16 model (the search is the same; only the storage differs)."""
    packing = _autoawq_packing()
    ck = hf_fixtures.make_checkpoint(tmp_path / "tiny16", family="llama", tokenizer="llama3",
                                     tied=True, dtype="f16", layers=2, heads=4, kv_heads=2)
    extra = ["--symmetric"] if sym else []
    outs = {}
    for layout in ("pack-quantized", "gemm"):
        run_qwodel(qwodel_bin, "quantize", ck, "-b", "awq", "-o", tmp_path / layout,
                   "--calibration-dataset", source[1], "--num-samples", "4", "--seq-length",
                   "64", "--layout", layout, "-q", *extra)
        outs[layout] = tmp_path / layout / "tiny16-awq-int4"
    cfg = json.loads((outs["gemm"] / "config.json").read_text())
    assert cfg["quantization_config"] == {"quant_method": "awq", "bits": 4, "group_size": 128,
                                          "zero_point": True, "version": "gemm",
                                          "modules_to_not_convert": ["lm_head"]}
    assert cfg.get("torch_dtype", cfg.get("dtype")) == "float16"
    tg, tp = _tensors(outs["gemm"]), _tensors(outs["pack-quantized"])
    dense = {k for k in tp if ".weight_" not in k}
    assert dense == {k for k in tg if not k.endswith((".qweight", ".qzeros", ".scales"))}
    for k in dense:
        assert torch.equal(tg[k], tp[k]), k
    qc = json.loads((outs["pack-quantized"] / "config.json").read_text())["quantization_config"]
    scheme = QuantizationScheme(
        targets=["Linear"], weights=QuantizationArgs(**qc["config_groups"]["group_0"]["weights"]))
    for layer in range(2):
        for lin in LINEARS:
            m = f"model.layers.{layer}.{lin}"
            qweight, qzeros, scales = tg[f"{m}.qweight"], tg[f"{m}.qzeros"], tg[f"{m}.scales"]
            n_in = qweight.shape[0]
            assert qweight.dtype == torch.int32 and scales.dtype == torch.float16
            assert qzeros.shape == (n_in // 128, qweight.shape[1])
            assert scales.shape == (n_in // 128, qweight.shape[1] * 8)
            if sym:  # symmetric codes are stored around a zero point of 8
                iw, iz = packing.unpack_awq(qweight, qzeros, 4)
                assert torch.all(torch.bitwise_and(iz, 15) == 8)
            w_gemm = packing.dequantize_gemm(qweight, qzeros, scales, 4, 128)
            local = {k.rsplit(".", 1)[1]: tp[k] for k in tp if k.startswith(m + ".weight_")}
            w_ct = PackedQuantizationCompressor.decompress(local, scheme)["weight"]
            assert torch.equal(w_gemm.T.contiguous(), w_ct.to(torch.float16)), m


def test_gemm_layout_refusals(qwodel_bin, source, tmp_path):
    """An unknown layout, and a quantized lm_head (AutoAWQ's layout has none), are refused
    before anything is written."""
    proc = quantize(qwodel_bin, source, tmp_path, "--layout", "marlin", check=False)
    assert proc.returncode != 0 and "layout must be pack-quantized or gemm" in proc.stderr
    ck = hf_fixtures.make_checkpoint(tmp_path / "untied", family="llama", tokenizer="llama3",
                                     tied=False, dtype="bf16", layers=1, heads=4, kv_heads=2)
    proc = run_qwodel(qwodel_bin, "quantize", ck, "-b", "awq", "-o", tmp_path / "out",
                      "--calibration-dataset", source[1], "--layout", "gemm", "--ignore",
                      "re:^nothing$", check=False)
    assert proc.returncode != 0 and "keep lm_head in ignore" in proc.stderr
    assert not (tmp_path / "out").exists()


def test_output_independent_of_thread_count(qwodel_bin, source, tmp_path, outputs):
    """Matrix products, attention heads and the search are split over threads; every split
    computes each value the same way, so the checkpoint is the same bytes with 1, 3 or the
    default number of threads (with --clip too)."""
    for extra, ref in (([], outputs("asym")), (["--clip"], outputs("clip"))):
        for threads in ("1", "3"):
            out = tmp_path / f"t{threads}{''.join(extra)}"
            quantize(qwodel_bin, source, out, "--threads", threads, *extra)
            got = out / "tiny-awq-int4" / "model.safetensors"
            assert got.read_bytes() == (ref / "model.safetensors").read_bytes(), (threads, extra)
