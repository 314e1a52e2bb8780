"""Cross-layer equalisation and adaptive rounding (quant.equalize, quant.adaround): CLE keeps
the float function, AdaRound moves no weight more than one step and lowers a layer's output
error, both are recorded in the manifest, and the golden model equals quant.ops on an artifact
made with them."""
import numpy as np
import pytest
import torch

from quant import ops
from quant.adaround import fake_quant, fit
from quant.artifact import load, save
from quant.equalize import equalize, pairs
from quant.golden import GoldenModel
from quant.quantize import (choose_fmt, float_program, quantize_model, quantize_weights,
                            run_float, tensor_shapes)


torch.set_num_threads(2)


def test_cle_pairs_are_the_exact_ones(model):
    ops_, _, _ = float_program(model)
    found = pairs(ops_)
    names = {(a["name"], b["name"]) for a, _, b in found}
    se = {(o["name"], o["name"][:-1] + "2") for o in ops_ if o["name"].endswith(".se.fc1")}
    assert names == se | {("conv_6_dw", "linear")}
    for a, chain, b in found:
        assert all(c["op"] == "prelu" for c in chain)


def test_cle_keeps_the_float_function(model, cal):
    ops_, params, _ = float_program(model)
    new, report = equalize(ops_, params, tensor_shapes(ops_, params), cal[:4])
    assert len(report) == len(pairs(ops_))
    # the equalisation did something: the tensors between the pairs are rescaled per channel
    assert max(r["activation_range_ratio"][0] / r["activation_range_ratio"][1]
               for r in report) > 1.5
    a = run_float(ops_, params, cal[4:7], dtype=torch.float64)
    b = run_float(ops_, new, cal[4:7], dtype=torch.float64)
    between = {t for p, chain, _ in pairs(ops_) for t in [p["output"]] +
               [c["output"] for c in chain]}
    for t in a:
        if t in between:
            continue
        assert torch.allclose(a[t], b[t], rtol=1e-9, atol=1e-9 * float(a[t].abs().max())), t
    assert any(not torch.allclose(a[t], b[t]) for t in between)


def _layer_data(model, cal, layer="conv_23.expand"):
    ops_, params, _ = float_program(model)
    op = next(o for o in ops_ if o["name"] == layer)
    x = run_float(ops_, params, cal[:4])[op["inputs"][0]]
    fmt = choose_fmt(x.numpy(), 8)
    lo, hi = op["parts"][1]["in"]
    pf = x[:, lo:hi].permute(0, 2, 3, 1).reshape(-1, hi - lo)[::7]
    pq = fake_quant(x, fmt)[:, lo:hi].permute(0, 2, 3, 1).reshape(-1, hi - lo)[::7]
    return params[layer]["weights"][1].reshape(-1, hi - lo), pf, pq


def test_adaround_moves_weights_one_step_at_most_and_lowers_the_error(model, cal):
    w, pf, pq = _layer_data(model, cal)
    up, e_near, e_ada = fit(pf, pq, w, 8, False, iterations=200)
    assert set(np.unique(up)) <= {0.0, 1.0}
    q_near, scale = quantize_weights(w, 8)
    q_ada, scale2 = quantize_weights(w, 8, up)
    assert np.array_equal(scale, scale2)
    assert np.abs(q_ada - q_near).max() == 1 and np.abs(q_ada).max() <= 127
    assert e_ada < 0.99 * e_near
    # the returned error is the error of the returned rounding, measured independently
    wq = torch.from_numpy(q_ada * scale[:, None]).float()
    err = float(((pq @ wq.t() - pf @ torch.from_numpy(w).float().t()) ** 2).mean() /
                (pf @ torch.from_numpy(w).float().t()).pow(2).mean())
    assert err == pytest.approx(e_ada, rel=1e-3)


def test_adaround_without_iterations_is_round_to_nearest(model, cal):
    w, pf, pq = _layer_data(model, cal)
    up, e_near, e_ada = fit(pf, pq, w, 8, False, iterations=0)
    assert np.array_equal(quantize_weights(w, 8, up)[0], quantize_weights(w, 8)[0])
    assert e_near == e_ada


@pytest.fixture(scope="module")
def rounded_artifact(model, cal):
    return quantize_model(model, cal[:3], wide=("embedding",), equalization=True, adaround=10)


def test_options_in_the_manifest(rounded_artifact, model, cal, tmp_path):
    save(rounded_artifact, tmp_path / "a")
    meta = load(tmp_path / "a").meta
    assert meta["equalization"] is True and meta["adaround_iterations"] == 10
    assert meta["equalized_pairs"] == len(pairs(float_program(model)[0]))
    assert 0 < meta["adaround_layers"] <= 80
    plain = quantize_model(model, cal[:3], wide=("embedding",), equalization=False, adaround=0)
    assert plain.meta["equalization"] is False and plain.meta["adaround_iterations"] == 0
    assert plain.meta["adaround_layers"] == 0
    # adaptive rounding changed integer weights, by one step at most
    diff = [np.abs(rounded_artifact.arrays[k].astype(int) - plain.arrays[k].astype(int)).max()
            for k in plain.arrays if k.endswith(".weight.0") and k.startswith("conv_3.")]
    assert max(diff) >= 1


def test_golden_equals_ops_on_the_rounded_artifact(rounded_artifact, cal):
    """Every conv and linear layer of the golden model, recomputed with quant.ops alone."""
    art = rounded_artifact
    r = GoldenModel(art).run(cal[10:12], keep=True)
    checked = 0
    for op in art.program:
        if op["op"] not in ("conv", "linear"):
            continue
        x = torch.from_numpy(np.asarray(r.tensors[op["inputs"][0]], dtype=np.float64))
        bias = art.arrays[op["bias"]]
        if op["op"] == "linear":
            acc = ops.linear(x.flatten(1), art.arrays[op["weight"]], bias)
        else:
            accs = []
            for part in op["parts"]:
                xi = x[:, part["in"][0]:part["in"][1]]
                accs.append(ops.conv(xi, art.arrays[part["weight"]], None, op["stride"],
                                     op["padding"], xi.shape[1] if op["depthwise"] else 1))
            acc = torch.cat(accs, 1) + torch.as_tensor(bias, dtype=torch.float64).view(1, -1, 1, 1)
        y = ops.requantize(acc, art.arrays[op["multiplier"]].astype(np.int64),
                           art.arrays[op["shift"]].astype(np.int64), art.fmt(op["output"]))
        assert np.array_equal(y.numpy(), np.asarray(r.tensors[op["output"]])), op["name"]
        checked += 1
    assert checked == 80
