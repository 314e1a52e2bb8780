"""Golden swish/sigmoid: LUT and integer CORDIC against float, spec round trip, apply()."""
import json
import math
import time

import numpy as np
import pytest
import torch

from quant.activation import (ActivationSpec, apply, cordic_constants, cordic_trace,
                              default_specs, error_report, float_function, input_codes, main,
                              table)
from quant.fixedpoint import Fmt

S8_4, S8_5, S8_7 = Fmt(True, 8, 4), Fmt(True, 8, 5), Fmt(True, 8, 7)


def spec(function="sigmoid", form="cordic", in_fmt=S8_4, out_fmt=S8_7, **kw):
    return ActivationSpec(function, form, in_fmt, out_fmt, **kw)


# -- LUT -----------------------------------------------------------------------------------------
@pytest.mark.parametrize("s", [s for s in default_specs() if s.form == "lut"], ids=str)
def test_lut_is_float_rounded_half_up(s):
    codes = input_codes(s)
    ref = float_function(s.function, s.in_fmt.value(codes)) * 2.0 ** s.out_fmt.n_frac
    t = table(s)
    inside = (np.floor(ref + 0.5) >= s.out_fmt.lo) & (np.floor(ref + 0.5) <= s.out_fmt.hi)
    # round half up: t - 1/2 <= ref < t + 1/2
    assert np.all(t[inside] - 0.5 <= ref[inside]) and np.all(ref[inside] < t[inside] + 0.5)
    assert np.all(t[~inside] == np.where(ref[~inside] > 0, s.out_fmt.hi, s.out_fmt.lo))
    rep = error_report(s)
    assert rep["max_err_lsb_unsaturated"] <= 0.5
    assert rep["saturated_codes"] == int((~inside).sum())


def test_lut_known_values():
    t = table(spec("sigmoid", "lut"))
    assert t[0 - S8_4.lo] == 64                     # sigmoid(0) = 0.5 exactly
    assert t[16 - S8_4.lo] == round(128 / (1 + math.exp(-1)))
    ts = table(spec("swish", "lut", out_fmt=S8_4))
    assert ts[32 - S8_4.lo] == math.floor(16 * 2 / (1 + math.exp(-2)) + 0.5)
    assert ts[-128 - S8_4.lo] == math.floor(16 * -8 / (1 + math.exp(8)) + 0.5)


# -- CORDIC --------------------------------------------------------------------------------------
def test_cordic_shift_sequence_and_gain():
    s = spec()
    assert s.shifts == (1, 2, 3, 4, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 13, 14, 15, 16)
    assert abs(cordic_constants(s).gain_inv - 1.20750) < 5e-5
    assert cordic_constants(s).x0 == round(2 ** s.frac_bits * cordic_constants(s).gain_inv)


@pytest.mark.parametrize("s", [s for s in default_specs() if s.form == "cordic"], ids=str)
def test_cordic_default_8bit_error(s):
    """N=16, W=24: within 0.5 LSB plus a sliver, and (measured) equal to the LUT at 8 bits."""
    rep = error_report(s)
    assert rep["max_err_lsb_unsaturated"] <= 0.52
    assert rep["sigmoid_quotient_max_err"] <= 2.0 ** -15
    assert rep["codes_differing_from_lut"] <= 2


@pytest.mark.parametrize("function", ["sigmoid", "swish"])
def test_cordic_few_iterations_costs_a_couple_of_lsbs(function):
    s = spec(function, in_fmt=S8_5, out_fmt=S8_7 if function == "sigmoid" else S8_5,
             cordic_iterations=6, cordic_width=16)
    rep = error_report(s)
    assert 0.6 < rep["max_err_lsb_unsaturated"] <= 2.5
    assert rep["codes_differing_from_lut"] > 0


@pytest.mark.parametrize("n,w,in_fmt", [(16, 24, Fmt(True, 16, 10)), (20, 28, Fmt(True, 12, 6)),
                                        (16, 24, Fmt(False, 12, 8)), (12, 18, Fmt(True, 16, 0))])
def test_cordic_internals_track_the_real_functions(n, w, in_fmt):
    s = spec("sigmoid", in_fmt=in_fmt, out_fmt=Fmt(True, 16, 14), cordic_iterations=n,
             cordic_width=w)
    codes = input_codes(s)
    tr = cordic_trace(s, codes)
    F = s.frac_bits
    x = in_fmt.value(codes)
    a = np.abs(x)
    live = ~tr["sat"]
    r = tr["r"][live] / 2.0 ** F
    # argument reduction: |x| = k ln2 + r, r in [0, ln2) up to a hair either side
    assert np.allclose(tr["k"][live] * math.log(2) + r, a[live], atol=2.0 ** -F * 30)
    assert r.min() > -1e-3 and r.max() < math.log(2) + 1e-3
    assert np.all(a[tr["sat"]] >= (s.k_sat - 1) * math.log(2))
    tol = 2.0 ** -(n - 1)
    assert np.abs(tr["cosh"][live] / 2.0 ** F - np.cosh(r)).max() < tol
    assert np.abs(tr["sinh"][live] / 2.0 ** F - np.sinh(r)).max() < tol
    assert np.abs(tr["E"] / 2.0 ** F - np.exp(-a)).max() < tol
    sig = float_function("sigmoid", x)
    assert np.abs(tr["S"] / 2.0 ** n - sig).max() < tol
    # the corrected quotient never exceeds the exact one by more than rounding of E allows
    assert np.all(tr["S"] >= 0) and np.all(tr["S"] <= 1 << n)


def test_cordic_sigmoid_symmetry_and_monotonic():
    s = spec(in_fmt=S8_5)
    t = table(s)
    assert np.all(np.diff(t) >= 0)
    codes = input_codes(s)[1:]                           # -127..127
    mirrored = t[codes - S8_5.lo] + t[-codes - S8_5.lo]
    assert np.all(np.abs(mirrored - 128) <= 1)


def test_cordic_16bit_error_bound():
    s = spec("swish", in_fmt=Fmt(True, 16, 12), out_fmt=Fmt(True, 16, 12))
    rep = error_report(s)
    # quotient error ~2^-16 times |x| <= 8 at 12 output fraction bits: about 0.5 + 0.6 LSB
    assert rep["max_err_lsb_unsaturated"] <= 0.5 + 8 * 2.0 ** -15 * 2 ** 12
    assert rep["sigmoid_quotient_max_err"] <= 2.0 ** -15


# -- apply ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("form", ["lut", "cordic"])
def test_apply_gathers_the_table(form):
    s = spec("swish", form, out_fmt=S8_4)
    g = torch.Generator().manual_seed(0)
    x = torch.randint(-128, 128, (2, 3, 5, 7), generator=g).double()
    y = apply(s, x)
    assert y.dtype == torch.float64 and y.shape == x.shape
    expect = table(s)[(x.long() + 128).numpy()]
    assert np.array_equal(y.numpy(), expect)


def test_apply_rejects_bad_codes():
    s = spec()
    with pytest.raises(ValueError, match=r"input code 128 outside in_fmt fxp-s8/4"):
        apply(s, torch.tensor([0.0, 128.0]))
    with pytest.raises(ValueError, match="non-integer"):
        apply(s, torch.tensor([0.5]))


def test_apply_is_fast():
    """A seesaw_shuffle frame has a few million activations: far above 20 frames/s.

    Measured single-threaded: on this shared 2-core machine torch's two intra-op threads
    spin against the training job and run 20x slower than one."""
    s = spec("swish", "cordic", out_fmt=S8_4)
    x = torch.randint(-128, 128, (1, 128, 56, 56)).double()
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        apply(s, x)
        times = []
        for _ in range(5):
            t = time.perf_counter()
            apply(s, x)
            times.append(time.perf_counter() - t)
    finally:
        torch.set_num_threads(threads)
    assert min(times) < 0.03, f"{min(times) * 1e3:.1f} ms for 401k activations"


# -- spec dict -----------------------------------------------------------------------------------
def test_spec_round_trip():
    for s in default_specs() + [spec(in_fmt=Fmt(False, 12, 8), cordic_iterations=20,
                                     cordic_width=30)]:
        d = json.loads(json.dumps(s.to_dict()))
        assert ActivationSpec.from_dict(d) == s


@pytest.mark.parametrize("change,match", [
    ({"function": "relu"}, r"function must be one of .* not 'relu'"),
    ({"form": "rom"}, r"form must be one of .* not 'rom'"),
    ({"in_fmt": None}, r"in_fmt must be a dict"),
    ({"in_fmt": {"signed": True, "n_word": 8}}, r"in_fmt: missing field 'n_frac'"),
    ({"in_fmt": {"signed": True, "n_word": 20, "n_frac": 4}}, r"in_fmt.n_word must be 2..16"),
    ({"out_fmt": {"signed": "yes", "n_word": 8, "n_frac": 4}}, r"out_fmt.signed must be a bool"),
    ({"out_fmt": {"signed": True, "n_word": 8, "n_frac": 4, "fxp": "fxp-s8/5"}},
     r"out_fmt.fxp 'fxp-s8/5' disagrees"),
    ({"cordic_iterations": "16"}, r"cordic_iterations must be an int, not '16'"),
    ({"cordic_iterations": 30}, r"cordic_iterations must be 4..21"),
    ({"cordic_width": 8}, r"cordic_width must be 12..40, not 8"),
    ({"colour": 1}, r"unknown field\(s\) \['colour'\]"),
])
def test_spec_bad_fields_named(change, match):
    d = spec().to_dict()
    d.update(change)
    with pytest.raises(ValueError, match=match):
        ActivationSpec.from_dict(d)


def test_spec_missing_field_named():
    d = spec().to_dict()
    del d["out_fmt"]
    with pytest.raises(ValueError, match="missing field 'out_fmt'"):
        ActivationSpec.from_dict(d)


def test_cli_writes_json(tmp_path, capsys):
    out = tmp_path / "err.json"
    main(["--json", str(out)])
    reports = json.loads(out.read_text())
    assert len(reports) == 8 and {r["spec"]["form"] for r in reports} == {"lut", "cordic"}
    assert "sigmoid  cordic" in capsys.readouterr().out
