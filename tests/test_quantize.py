"""The quantizer: BN folding, the float layer program, calibration, integer parameters, the
exact input folding, the mixed-precision policy, and the CLI."""
import json
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from quant import faces as face_set
from quant.fixedpoint import Fmt
from quant.golden import GoldenModel
from quant.quantize import (INPUT_FMT, QuantizeError, choose_fmt, float_program, fold_bn,
                            multiplier_shift, policy_bits, quantize_model, quantize_weights,
                            run_float)
from quant.zoo import VARIANTS, build, preprocess

torch.set_num_threads(2)


def calibrated_random_model(variant, faces, seed=0):
    torch.manual_seed(seed)
    model = build(variant)
    for m in model.modules():
        if isinstance(m, (torch.nn.BatchNorm1d, torch.nn.BatchNorm2d)):
            m.momentum = None
    model.train()
    with torch.no_grad():
        model(preprocess(faces))
    return model.eval()


@pytest.fixture(scope="module")
def shuffle_artifact(cal):
    model = calibrated_random_model("seesaw_shuffle", cal[:8])
    return model, quantize_model(model, cal[:4], adaround=0, wide=("residual", "embedding"))


def _random_bn(c, gen):
    bn = torch.nn.BatchNorm2d(c).double()
    with torch.no_grad():
        bn.weight.copy_(torch.randn(c, generator=gen, dtype=torch.float64))
        bn.bias.copy_(torch.randn(c, generator=gen, dtype=torch.float64))
        bn.running_mean.copy_(torch.randn(c, generator=gen, dtype=torch.float64))
        bn.running_var.copy_(torch.rand(c, generator=gen, dtype=torch.float64) + 0.1)
    return bn.eval()


def test_fold_bn_conv_exact_in_float():
    gen = torch.Generator().manual_seed(0)
    conv = torch.nn.Conv2d(8, 16, 3, padding=1, bias=False).double()
    bn = _random_bn(16, gen)
    x = torch.randn(2, 8, 9, 9, generator=gen, dtype=torch.float64)
    w, b = fold_bn(conv.weight, bn)
    with torch.no_grad():
        ref = bn(conv(x))
    got = F.conv2d(x, torch.from_numpy(w), torch.from_numpy(b), padding=1)
    assert torch.allclose(got, ref, rtol=0, atol=1e-12)


def test_fold_bn1d_into_linear_exact_in_float():
    gen = torch.Generator().manual_seed(1)
    lin = torch.nn.Linear(32, 16, bias=False).double()
    bn = torch.nn.BatchNorm1d(16).double()
    with torch.no_grad():
        bn.weight.copy_(torch.randn(16, generator=gen, dtype=torch.float64))
        bn.bias.copy_(torch.randn(16, generator=gen, dtype=torch.float64))
        bn.running_mean.copy_(torch.randn(16, generator=gen, dtype=torch.float64))
        bn.running_var.copy_(torch.rand(16, generator=gen, dtype=torch.float64) + 0.1)
    bn.eval()
    x = torch.randn(5, 32, generator=gen, dtype=torch.float64)
    w, b = fold_bn(lin.weight, bn)
    with torch.no_grad():
        ref = bn(lin(x))
    assert torch.allclose(x @ torch.from_numpy(w).t() + torch.from_numpy(b), ref, rtol=0,
                          atol=1e-12)


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_float_program_equals_zoo_model(variant, cal):
    model = calibrated_random_model(variant, cal[:8])
    ops, params, roles = float_program(model)
    env = run_float(ops, params, cal[8:9], dtype=torch.float64)
    with torch.no_grad():
        ref = model.double()(preprocess(cal[8:9]).double(), normalize=False)
    assert torch.allclose(env["embedding"], ref, rtol=1e-9, atol=1e-9)
    assert set(roles) == {op["output"] for op in ops}
    assert ops[0]["op"] == "input" and ops[-1]["output"] == "embedding"


def test_input_folding_is_exact():
    """raw = 2p - 255 in s9 with 8 fraction bits is exactly (p - 127.5) / 128, and a zero pad
    is exactly the float model's zero pad."""
    p = np.arange(256)
    raw = 2 * p - 255
    assert INPUT_FMT.holds(raw)
    assert np.array_equal(INPUT_FMT.value(raw), (p - 127.5) / 128)


def test_stem_accumulator_equals_float_conv_of_normalised_input(shuffle_artifact, cal):
    """Border pixels included: the integer stem sees exactly what the float stem sees."""
    model, art = shuffle_artifact
    w = art.arrays["conv1.weight.0"].astype(np.float64)
    x = preprocess(cal[:2]).double()
    float_acc = F.conv2d(x, torch.from_numpy(w), None, 2, 1)
    raw = torch.from_numpy(cal[:2]).permute(0, 3, 1, 2).double() * 2 - 255
    int_acc = F.conv2d(raw, torch.from_numpy(w), None, 2, 1)
    assert torch.equal(int_acc * 2.0 ** -INPUT_FMT.n_frac, float_acc)


def test_choose_fmt_mse_beats_max():
    rng = np.random.default_rng(0)
    v = np.concatenate([rng.normal(0, 1, 20000), [40.0]])     # one outlier
    fmax = choose_fmt(v, 8, method="max")
    fmse = choose_fmt(v, 8, method="mse")
    assert fmax.holds(fmax.quantize(v)) and fmax.quantize([40.0])[0] <= fmax.hi
    assert 40 * 2 ** fmax.n_frac <= fmax.hi < 40 * 2 ** (fmax.n_frac + 1)
    mse = lambda f: np.mean((f.value(f.quantize(v)) - v) ** 2)
    assert fmse.n_frac > fmax.n_frac and mse(fmse) < mse(fmax)
    with pytest.raises(QuantizeError, match="method"):
        choose_fmt(v, 8, method="percentile99")


def test_multiplier_shift():
    for r in (1e-6, 3.7e-3, 0.5, 0.999999, 1.0, 123.456, 2 ** 15 + 0.3):
        m, s = multiplier_shift(r)
        assert 0 < m < 2 ** 17 and s >= 0
        assert abs(m * 2.0 ** -s - r) <= 2.0 ** -(s + 1) * 1.000001
        assert m >= 2 ** 16 or s == 0
    for bad in (0.0, -1.0, float("inf")):
        with pytest.raises(QuantizeError, match="rescale"):
            multiplier_shift(bad, "layer 'x'")
    with pytest.raises(QuantizeError, match="layer 'big'"):
        multiplier_shift(2.0 ** 20, "layer 'big'")


@pytest.mark.parametrize("bits", [4, 8, 12])
def test_quantize_weights_per_channel(bits):
    rng = np.random.default_rng(bits)
    w = rng.normal(0, 1, (6, 5, 3, 3)) * np.array([1e-3, 1, 10, 0.1, 1, 5])[:, None, None, None]
    w[4] = 0
    q, scale = quantize_weights(w, bits)
    qmax = 2 ** (bits - 1) - 1
    assert np.abs(q).max() == qmax
    assert np.all(np.abs(q).reshape(6, -1).max(1)[[0, 1, 2, 3, 5]] == qmax)
    assert np.all(q[4] == 0)
    err = np.abs(q * scale[:, None, None, None] - w)
    assert np.all(err <= scale[:, None, None, None] / 2 + 1e-12)


def test_policy_widens_roles(shuffle_artifact):
    _, art = shuffle_artifact
    for name, t in art.tensors.items():
        fmt = t["fmt"]
        if t["role"] in ("residual", "embedding"):
            assert fmt.n_word == 16, name
        elif t["role"] == "input":
            assert fmt == INPUT_FMT
        elif t["role"] == "gate":
            assert fmt == Fmt(False, 8, 8)
        else:
            assert fmt.n_word == 8, (name, fmt)
    with pytest.raises(QuantizeError, match="role"):
        policy_bits("residule", 8, ())


def test_integer_parameters_in_range(shuffle_artifact):
    _, art = shuffle_artifact
    for op in art.program:
        if op["op"] in ("conv", "linear"):
            m = art.arrays[op["multiplier"]]
            assert m.min() >= 2 ** 16 - 1 and m.max() < 2 ** 17, op["name"]
            keys = [p["weight"] for p in op["parts"]] if op["op"] == "conv" else [op["weight"]]
            for k in keys:
                assert art.arrays[k].dtype == np.int8 and np.abs(art.arrays[k]).max() <= 127
            assert op["acc_bits"] <= 40
        if op["op"] == "activation":
            assert op["spec"]["in_fmt"] == art.fmt(op["inputs"][0]).to_dict()
    # shuffle routing appears for shuffle blocks only
    assert any(o["op"] == "shuffle" for o in art.program)


def test_quantize_refuses_bad_settings(cal):
    model = calibrated_random_model("seesaw_shuffle", cal[:4])
    with pytest.raises(QuantizeError, match="weight bits"):
        quantize_model(model, cal[:2], adaround=0, weight_bits=1)
    with pytest.raises(QuantizeError, match="wide role 'bogus'"):
        quantize_model(model, cal[:2], adaround=0, wide=("bogus",))
    with pytest.raises(QuantizeError, match="activation form"):
        quantize_model(model, cal[:2], adaround=0, act_form="table")


def test_cordic_form_close_to_lut(shuffle_artifact, cal):
    """Same formats, only the activation unit differs: the first swish output differs by at
    most one LSB, and a block later the tensors still agree closely. (The embedding of a random
    network is chaotic, so it is not compared.)"""
    model, _ = shuffle_artifact
    lut = quantize_model(model, cal[:4], adaround=0, wide=("residual", "embedding"), scales="pow2",
                         offsets=False)
    cordic = quantize_model(model, cal[:4], adaround=0, act_form="cordic", wide=("residual", "embedding"),
                            scales="pow2")
    assert all(o["spec"]["form"] == "cordic" for o in cordic.program if o["op"] == "activation")
    ev = face_set.load("evaluation")[:2]
    a = GoldenModel(lut).run(ev, keep=True, stop_after="conv_23").tensors
    b = GoldenModel(cordic).run(ev, keep=True, stop_after="conv_23").tensors
    assert np.abs(a["conv1"] - b["conv1"]).max() <= 1
    fa = a["conv_23"].reshape(2, -1).astype(np.float64)
    fb = b["conv_23"].reshape(2, -1).astype(np.float64)
    c = np.sum(fa * fb, 1) / np.linalg.norm(fa, axis=1) / np.linalg.norm(fb, axis=1)
    assert c.min() > 0.99


def test_cli_small_run(tmp_path, cal):
    from quant.__main__ import main
    model = calibrated_random_model("seesaw_shuffle", cal[:8])
    weights = tmp_path / "w.pt"
    torch.save(model.state_dict(), weights)
    out = tmp_path / "q"
    rc = main(["--variant", "seesaw_shuffle", "--weights", str(weights), "--out", str(out),
               "--calibration-faces", "3", "--eval-faces", "3", "--no-peer", "--no-check",
               "--adaround", "5", "--equalization", "on"])
    assert rc == 0
    for f in ("manifest.json", "model.npz", "report.json", "report.md", "per_layer.png"):
        assert (out / f).exists(), f
    rep = json.loads((out / "report.json").read_text())
    assert rep["peer"]["cosine_mean"] is None
    assert 0.5 < rep["embedding"]["cosine_mean"] <= 1
    assert rep["quantizer"]["adaround_iterations"] == 5 and rep["quantizer"]["equalization"]
    assert rep["decisions"]["pairs"] == 9 and rep["decisions"]["same_pairs"] == 3   # all 3x3 pairs
    assert len(rep["layers"]) == len(rep["formats"]) - 1
    assert all(math.isfinite(r["sqnr_db"]) for r in rep["layers"] if r["role"] != "gate")
    man = json.loads((out / "manifest.json").read_text())
    assert man["source"]["sha256"] and man["quantizer"]["activation_form"] == "lut"
    assert "| embedding cosine" in (out / "report.md").read_text()


def test_cli_exit_status_judges_fidelity_only(tmp_path, cal):
    """A random network calibrated on 2 faces misses the cosine bars: exit 1 (FAIL) unless
    --no-check. Speed is reported but never one of the judged items."""
    from quant.__main__ import main
    model = calibrated_random_model("seesaw_shuffle", cal[:8])
    weights = tmp_path / "w.pt"
    torch.save(model.state_dict(), weights)
    common = ["--variant", "seesaw_shuffle", "--weights", str(weights), "--calibration-faces",
              "2", "--eval-faces", "2", "--no-peer", "--no-pairs", "--bits", "4", "--adaround", "0"]
    assert main(common + ["--out", str(tmp_path / "a")]) == 1
    rep = json.loads((tmp_path / "a" / "report.json").read_text())
    assert set(rep["accepted"]) == {"cosine_mean", "cosine_min"}
    assert not all(rep["accepted"].values()) and rep["golden_fps"] > 0
    assert main(common + ["--out", str(tmp_path / "b"), "--no-check"]) == 0


def test_thresholds_follow_the_precision():
    from quant.fidelity import ACCEPT, ACCEPT_8BIT, thresholds
    assert thresholds({"wide_roles": ["embedding", "act"], "act_bits": 8}) == ACCEPT
    assert thresholds({"wide_roles": ["embedding"], "act_bits": 8}) == ACCEPT_8BIT
    assert thresholds({"wide_roles": [], "act_bits": 16}) == ACCEPT
    assert ACCEPT["cosine_mean"] == 0.999 and ACCEPT_8BIT["cosine_mean"] == 0.998
    assert "golden_fps" not in ACCEPT and "golden_fps" not in ACCEPT_8BIT
