"""Quantizer v2 techniques: scales that are not powers of two, bias correction, the clamp of
tiny or dead tensors, and their bookkeeping in the artifact."""
import json
import warnings

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from quant import activation as act
from quant import faces as face_set
from quant.artifact import ArtifactError, load, save
from quant.fixedpoint import Fmt
from quant.golden import GoldenModel
from quant.quantize import (QuantizeError, QuantizeWarning, choose_fmt, float_input,
                            float_program, quantize_model, quantize_weights, scale_groups,
                            weight_bias_shift)
from quant.zoo import build


torch.set_num_threads(2)


@pytest.fixture(scope="module")
def free_artifact(model, cal):
    return quantize_model(model, cal[:4], adaround=0, act_bits=8, wide=("embedding",))


def test_fmt_scale_means_a_mantissa():
    f = Fmt(True, 8, 4, 1.5)
    assert f.lsb == 1.5 / 16
    assert np.array_equal(f.quantize([1.5 / 16 * 3, 100.0, -100.0]), [3, 127, -128])
    assert f.value(2) == 2 * 1.5 / 16
    assert Fmt.from_dict(f.to_dict()) == f and "scale" in f.to_dict()
    assert "scale" not in Fmt(True, 8, 4).to_dict()          # power-of-two manifests unchanged
    for bad in (0.5, 2.0, float("nan")):
        with pytest.raises(ValueError, match="scale"):
            Fmt(True, 8, 4, bad)


def test_free_scale_beats_power_of_two_on_mse():
    v = np.random.default_rng(0).normal(0, 1, 20000) * 2.9     # range just under 2**k * 1.5
    mse = lambda f: np.mean((f.value(f.quantize(v)) - v) ** 2)
    pow2 = choose_fmt(v, 8)
    best = min((choose_fmt(v, 8, scale=1 + k / 32) for k in range(32)), key=mse)
    assert best.scale != 1.0 and mse(best) < mse(pow2)


def test_scale_groups_tie_the_integer_only_ops(model):
    ops, _, _ = float_program(model)
    group_of = {t: i for i, g in enumerate(scale_groups(ops)) for t in g}
    for op in ops:
        if op["op"] == "add":
            assert group_of[op["inputs"][0]] == group_of[op["inputs"][1]] == group_of[op["output"]]
        if op["op"] == "scale_channels":
            assert group_of[op["inputs"][0]] == group_of[op["output"]]
            assert group_of[op["inputs"][1]] != group_of[op["output"]]   # the gate is u8/8
        if op["op"] == "conv":
            assert group_of[op["inputs"][0]] != group_of[op["output"]] or \
                any(o["op"] == "add" and op["output"] in o["inputs"] for o in ops)


def test_free_scales_in_the_artifact(free_artifact, tmp_path):
    art = free_artifact
    assert art.meta["scales"] == "free" and art.meta["bias_correction"] is False
    assert art.meta["calibration_method"] == "mse-act"
    scales = {t: v["fmt"].scale for t, v in art.tensors.items()}
    assert sum(s != 1.0 for s in scales.values()) > len(scales) // 2
    for op in art.program:
        if op["op"] == "add":
            assert len({scales[t] for t in op["inputs"] + [op["output"]]}) == 1, op["name"]
    # the manifest carries the mantissas; a reloaded artifact computes the same integers
    save(art, tmp_path / "a")
    again = load(tmp_path / "a")
    assert {t: v["fmt"] for t, v in again.tensors.items()} == \
        {t: v["fmt"] for t, v in art.tensors.items()}
    ev = face_set.load("evaluation")[:2]
    assert np.array_equal(GoldenModel(art).run(ev).embedding, GoldenModel(again).run(ev).embedding)
    man = json.loads((tmp_path / "a" / "manifest.json").read_text())
    assert man["quantizer"]["scales"] == "free"
    # an add whose operands disagree on the mantissa is refused, naming the layer
    add = next(op for op in man["program"] if op["op"] == "add")
    fmt = man["tensors"][add["inputs"][1]]["fmt"]
    fmt["scale"] = 1.0 if fmt.get("scale", 1.0) != 1.0 else 1.25
    (tmp_path / "a" / "manifest.json").write_text(json.dumps(man))
    with pytest.raises(ArtifactError, match=f"layer {add['name']!r}.*scale"):
        load(tmp_path / "a")


def test_lut_table_reads_codes_at_their_scale():
    spec = act.ActivationSpec("swish", "lut", Fmt(True, 8, 4, 1.25), Fmt(True, 16, 10, 1.75))
    codes = np.arange(-128, 128)
    want = np.floor(act.float_function("swish", codes * 1.25 / 16) / (1.75 / 1024) + 0.5)
    assert np.array_equal(act.table(spec), np.clip(want, -2 ** 15, 2 ** 15 - 1))
    assert act.ActivationSpec.from_dict(spec.to_dict()) == spec
    with pytest.raises(ValueError, match="CORDIC form needs power-of-two"):
        act.ActivationSpec("swish", "cordic", Fmt(True, 8, 4, 1.25), Fmt(True, 16, 10))


def test_cordic_artifact_keeps_activations_power_of_two(model, cal):
    art = quantize_model(model, cal[:2], adaround=0, act_form="cordic")
    for op in art.program:
        if op["op"] == "activation":
            assert art.fmt(op["inputs"][0]).scale == 1.0 and art.fmt(op["output"]).scale == 1.0
            assert art.fmt(op["inputs"][0]).offset == 0
    assert any(v["fmt"].scale != 1.0 for v in art.tensors.values())   # the others are free


def test_bias_shift_is_the_mean_output_change_of_weight_rounding(model, cal):
    ops, params, _ = float_program(model)
    shift = weight_bias_shift(ops, params, cal[:3], weight_bits=4)
    w = params["conv1"]["weights"][0]
    q, sc = quantize_weights(w, 4)
    dw = torch.from_numpy(q * sc[:, None, None, None] - w).float()
    want = F.conv2d(float_input(cal[:3]), dw, stride=2, padding=1).double().mean((0, 2, 3))
    assert np.allclose(shift["conv1"], want.numpy(), rtol=1e-5, atol=1e-9)
    assert np.abs(shift["conv1"]).max() > 0
    on = quantize_model(model, cal[:3], adaround=0, weight_bits=4, scales="pow2", bias_correction=True)
    off = quantize_model(model, cal[:3], adaround=0, weight_bits=4, scales="pow2", bias_correction=False)
    assert not np.array_equal(on.arrays["conv1.bias"], off.arrays["conv1.bias"])


def test_bias_correction_reduces_the_mean_error(model, cal):
    """At 4-bit weights the per-channel mean error of the stem's pre-activation (integer vs
    float, on faces not used for calibration) shrinks with bias correction."""
    ops, params, _ = float_program(model)
    ev = face_set.load("evaluation")[:4]
    from quant.quantize import run_float
    ref = run_float(ops, params, ev)["conv_23.expand.pre"].double().numpy()
    err = {}
    for bc in (False, True):
        art = quantize_model(model, cal[:8], adaround=0, weight_bits=4, scales="pow2", bias_correction=bc)
        t = GoldenModel(art).run(ev, keep=True, stop_after="conv_23.expand.pre")
        v = art.fmt("conv_23.expand.pre").value(t.tensors["conv_23.expand.pre"])
        err[bc] = np.abs((v - ref).mean((0, 2, 3))).mean()
    assert err[True] < err[False]


def test_tiny_tensor_is_clamped_with_a_warning_naming_it(cal):
    """A freshly initialised network (the report of the reliability issue): tensors with a tiny
    range need more fraction bits than the activation unit accepts; they are clamped, and the
    warning names them."""
    torch.manual_seed(7)
    model = build("seesaw_shuffle_mobi").eval()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        art = quantize_model(model, cal[:2], adaround=0)
    msgs = [str(w.message) for w in caught if issubclass(w.category, QuantizeWarning)]
    assert msgs and all(m.startswith("tensor '") and "clamped" in m for m in msgs)
    assert art.meta["format_clamps"] == msgs            # and recorded in the manifest
    for op in art.program:
        if op["op"] == "activation":
            assert 0 <= art.fmt(op["inputs"][0]).n_frac <= 24
    GoldenModel(art).run(cal[:1])


def test_bad_scales_option(model, cal):
    with pytest.raises(QuantizeError, match="scales"):
        quantize_model(model, cal[:2], adaround=0, scales="log")


def test_mse_act_judges_an_activation_input_after_the_activation():
    """A swish input's negative tail maps to ~0: clipping it costs little, so the format that
    is best after the activation resolves the bulk finer than the plain MSE choice."""
    rng = np.random.default_rng(1)
    v = np.concatenate([rng.normal(0, 1, 20000), rng.uniform(-40, -20, 200)])
    plain = choose_fmt(v, 8, method="mse")
    after = choose_fmt(v, 8, method="mse-act", function="swish")
    assert after.n_frac > plain.n_frac
    err = lambda f: np.mean((act.float_function("swish", f.value(f.quantize(v)))
                             - act.float_function("swish", v)) ** 2)
    assert err(after) < err(plain)
    assert choose_fmt(v, 8, method="mse-act") == plain      # not an activation input


def test_fmt_offset_shifts_the_range():
    f = Fmt(True, 8, 4, 1.0, 64)
    assert f.value(-128) == -64 / 16 and f.value(127) == 191 / 16
    assert np.array_equal(f.quantize([0.0, 191 / 16, 100.0, -100.0]), [-64, 127, 127, -128])
    assert Fmt.from_dict(f.to_dict()) == f and f.to_dict()["offset"] == 64
    with pytest.raises(ValueError, match="offset"):
        Fmt(True, 8, 4, 1.0, 256)
    spec = act.ActivationSpec("swish", "lut", f, Fmt(True, 16, 10))
    want = np.floor(act.float_function("swish", (np.arange(-128, 128) + 64) / 16) * 1024 + 0.5)
    assert np.array_equal(act.table(spec), want)
    with pytest.raises(ValueError, match="offset 0"):
        act.ActivationSpec("swish", "cordic", f, Fmt(True, 16, 10))


def test_offsets_only_on_table_inputs_and_the_bias_absorbs_them(free_artifact, model, tmp_path):
    art = free_artifact
    ops, params, _ = float_program(model)
    shifted = [t for t, v in art.tensors.items() if v["fmt"].offset]
    assert shifted and art.meta["offsets"] is True
    for op in art.program:
        if op["op"] != "activation":
            assert not any(art.fmt(t).offset for t in op["inputs"]), op["name"]
    # the integer pre-activation means what the float one is, offset included
    ev = face_set.load("evaluation")[:2]
    from quant.quantize import run_float
    name = next(t for t in shifted if t.startswith("conv_23"))
    ref = run_float(ops, params, ev)[name].double().numpy()
    got = art.fmt(name).value(GoldenModel(art).run(ev, keep=True, stop_after=name).tensors[name])
    c = np.sum(got * ref) / np.linalg.norm(got) / np.linalg.norm(ref)
    assert c > 0.99, (name, c)
    # a manifest whose offset tensor feeds something else than an activation is refused
    save(art, tmp_path / "a")
    man = json.loads((tmp_path / "a" / "manifest.json").read_text())
    conv = next(op for op in man["program"] if op["op"] == "conv" and op["name"] != "conv1")
    man["tensors"][conv["inputs"][0]]["fmt"]["offset"] = 3
    (tmp_path / "a" / "manifest.json").write_text(json.dumps(man))
    with pytest.raises(ArtifactError, match="offset"):
        load(tmp_path / "a")
