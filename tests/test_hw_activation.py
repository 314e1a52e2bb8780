"""The CORDIC activation unit in cocotb + Verilator, bit-exact vs the golden model, its formats
set at run time. (The table form is the engine's loaded table: tests/test_engine.py.)"""
import json
import re
from pathlib import Path

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
    # a sigmoid with more output fraction bits than the quotient's: a left shift (negative
    # out_shift), stored as at most out_width - 1 (any nonzero S saturates either way)
    assert unit.config_for(cordic("sigmoid", S8_4, Fmt(True, 8, 20)))["out_shift"] == 16 - 20
    assert activation_config(cordic("sigmoid", S8_4, Fmt(True, 16, 31), cordic_iterations=4,
                                    cordic_width=12), iterations=4, width=12)["out_shift"] == -16


@pytest.mark.parametrize("spec, kw, message", [
    (ActivationSpec("swish", "lut", S8_4, S8_4), {}, "form 'lut', but the unit is a CORDIC"),
    (cordic("swish", S8_4, S8_4, cordic_iterations=12), {},
     "12/24, but the unit is built with 16/24"),
    (cordic("swish", Fmt(True, 16, 4), S8_4), {"in_width": 12},
     "does not fit the unit's 12-bit signed input"),
    (cordic("swish", S8_4, Fmt(False, 17, 4)), {},
     "does not fit the unit's 17-bit signed output"),
    (cordic("swish", Fmt(True, 8, 20), Fmt(True, 8, -8)), {},
     "final rounding shift 44 (out_fmt n_frac -8) beyond the unit's 32"),
    (cordic("swish", S8_4, Fmt(True, 16, 21)), {},
     "out_fmt n_frac 21 exceeds in_fmt n_frac + cordic_iterations (20); the unit shifts left "
     "for the sigmoid only"),
])
def test_config_refuses_what_the_unit_cannot_compute(spec, kw, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        activation_config(spec, **kw)


def test_engine_formats_all_8bit_codes_reconfigured():
    """The seesaw formats (swish s8 -> s16, SE gate sigmoid s8 -> u8), every input code, one
    unit reconfigured between them, under random stalls and back-pressure; then a sample of
    two more: a right shift of 9 and a left shift of 4 (s16/20 has more fraction bits than
    the quotient's 16)."""
    swish, gate = cordic("swish", S8_4, S16_11), cordic("sigmoid", S8_9, U8_8)
    run_case("cordic_engine_formats", [(swish, shuffled_codes(swish)),
                                       (gate, shuffled_codes(gate, 1)),
                                       (cordic("swish", S8_3, Fmt(True, 16, 10)),
                                        sampled_codes(swish, 100)),
                                       (cordic("sigmoid", S8_4, Fmt(True, 16, 20)),
                                        sampled_codes(swish, 100, seed=2))], seed=3)


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
    """N = 6: the sigmoid's s8/7 output has one fraction bit more than the quotient (a left
    shift by 1), s16/24 eighteen more (a left shift beyond the output width, stored as 16);
    the swish u8/4 -> s8/4 shifts right by 6."""
    n6 = {"cordic_iterations": 6, "cordic_width": 16}
    parts = [cordic("sigmoid", Fmt(False, 8, 4), S8_7, **n6),
             cordic("swish", Fmt(False, 8, 4), S8_4, **n6),
             cordic("sigmoid", S8_4, Fmt(True, 16, 24), **n6)]
    run_case("cordic_n6w16", [(s, shuffled_codes(s, i)) for i, s in enumerate(parts)],
             seed=13, iterations=6, width=16)


@pytest.mark.synthesis
def test_cordic_synthesis_ecp5():
    """The engine's unit (N = 16, W = 24) alone: yosys ``synth_ecp5``, then nextpnr out of
    context on the 85F (speed 6) at the engine's 81.25 MHz; cells and fmax recorded in
    build/activation/synthesis.{json,md} (``make reports-pnr`` copies them to reports/). Bounds
    catch a blow-up or a lost DSP mapping, not a few percent."""
    from hw.build.toolchain import (parse_nextpnr_report, parse_yosys_stat, run_tool,
                                    tool_versions)
    from sim.runner import ROOT, to_verilog
    out = ROOT / "build" / "activation"
    out.mkdir(parents=True, exist_ok=True)
    unit = ActivationCORDIC()
    (out / "cordic.v").write_text(to_verilog(unit, "activation_cordic"))
    # YoWASP tools see only their working directory: relative names
    run_tool("yosys", ["-p", "read_verilog cordic.v; synth_ecp5 -top activation_cordic "
                       "-json cordic.json; tee -q -o stat.json stat -json"],
             cwd=out, log_path=out / "yosys.log")
    synth = parse_yosys_stat(out / "stat.json")
    run_tool("nextpnr-ecp5", ["--85k", "--package", "CABGA381", "--speed", "6",
                              "--out-of-context", "--json", "cordic.json", "--freq", "81.25",
                              "--seed", "1", "--report", "pnr.json"],
             cwd=out, log_path=out / "nextpnr.log")
    pnr = parse_nextpnr_report(out / "pnr.json", out / "nextpnr.log")
    fmax_mhz = min(v["achieved"] for v in pnr["fmax"].values())
    used = {k: v["used"] for k, v in pnr["utilization"].items()}
    rep = {"unit": "ActivationCORDIC(iterations=16, width=24)", "latency": unit.latency,
           "device": "LFE5U-85F CABGA381 speed 6, out of context", "constraint_mhz": 81.25,
           "yosys": synth, "nextpnr": used, "fmax_mhz": fmax_mhz,
           "critical_path": pnr["critical_paths"][0] if pnr["critical_paths"] else None,
           "tools": {name: {"command": Path(v["command"]).name, "version": v["version"],
                            "package": v.get("package")}    # no path of this machine
                     for name, v in tool_versions(("yosys", "nextpnr-ecp5")).items()}}
    (out / "synthesis.json").write_text(json.dumps(rep, indent=2))
    (out / "synthesis.md").write_text(
        "# The CORDIC swish/sigmoid unit alone (`pytest -m synthesis "
        "tests/test_hw_activation.py`)\n\n"
        f"{rep['unit']}, latency {unit.latency} cycles, {rep['device']}, "
        "constraint 81.25 MHz.\n\n"
        "| tool | LUT4 | TRELLIS_FF | MULT18X18D | DP16KD | fmax |\n|---|---|---|---|---|---|\n"
        f"| yosys synth_ecp5 (LUT4 + 2 x CCU2C) | {synth['LUT4']} | {synth['TRELLIS_FF']} | "
        f"{synth['MULT18X18D']} | {synth['DP16KD']} | |\n"
        f"| nextpnr-ecp5 (TRELLIS_COMB) | {used['LUT4']} | {used['TRELLIS_FF']} | "
        f"{used['MULT18X18D']} | {used['DP16KD']} | {fmax_mhz:.1f} MHz |\n")
    print(rep["yosys"], used, f"fmax {fmax_mhz:.1f} MHz")
    assert synth["MULT18X18D"] == 2 and synth["DP16KD"] == 0
    assert synth["LUT4"] < 4500 and synth["TRELLIS_FF"] < 3700
    assert fmax_mhz > 81.25
