# amaranth: UnusedElaboratable=no
"""The build flow: the step runner's ordering, caching and --stop-step (with cheap fake steps:
unit tests of the runner, not of the product), the fit check, the report parsers, the board top
and the command line. The synthesis tier elaborates and synthesises a small board with yosys."""
import json
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from hw.build import flow as hwbuild
from hw.board.boards import get_board
from hw.build.flow import FitError, Step, StepError, StepRunner, fit_check
from hw.build.toolchain import (ToolError, amaranth_build_env, find_tool, parse_nextpnr_log_fmax,
                          parse_nextpnr_report, parse_yosys_stat)
from hw.board.top import BoardTop

ROOT = Path(__file__).resolve().parent.parent


# -- the step runner, with fake steps ---------------------------------------------------------

@dataclass
class FakeCtx:
    tmp: Path
    inputs: dict = field(default_factory=dict)
    calls: list = field(default_factory=list)
    results: dict = field(default_factory=dict)
    status: dict = field(default_factory=dict)
    seconds: dict = field(default_factory=dict)
    built_seconds: dict = field(default_factory=dict)


def fake_step(name, *, cached=True, check=None):
    def run(ctx):
        ctx.calls.append(name)
        (ctx.tmp / f"{name}.out").write_text(str(ctx.inputs.get(name)))
        return {"made": name, "input": ctx.inputs.get(name)}
    return Step(name, run,
                key=(lambda ctx: {"input": ctx.inputs.get(name)}) if cached else None,
                outputs=lambda ctx: [ctx.tmp / f"{name}.out"], check=check)


def make_runner(tmp_path, log, **kw):
    steps = [fake_step("a"), fake_step("b", **kw.get("b", {})), fake_step("c"),
             fake_step("d", cached=False)]
    return StepRunner(steps, tmp_path / "cache", log=log.append)


def test_runner_runs_in_order_with_progress_lines(tmp_path):
    log, ctx = [], FakeCtx(tmp_path)
    make_runner(tmp_path, log).run(ctx)
    assert ctx.calls == ["a", "b", "c", "d"]
    assert [l for l in log if l.startswith("[")] == ["[1/4] a", "[2/4] b", "[3/4] c", "[4/4] d"]
    assert ctx.status == {"a": "ran", "b": "ran", "c": "ran", "d": "ran"}
    assert set(ctx.seconds) == {"a", "b", "c", "d"}
    assert ctx.results["c"] == {"made": "c", "input": None}


def test_runner_caches_unchanged_steps_and_reruns_changed_ones(tmp_path):
    log = []
    runner = make_runner(tmp_path, log)
    runner.run(FakeCtx(tmp_path))
    ctx = FakeCtx(tmp_path)
    log.clear()
    runner.run(ctx)
    assert ctx.calls == ["d"]                       # d has no key: never cached
    assert ctx.status["a"] == "cached" and ctx.results["b"] == {"made": "b", "input": None}
    assert sum("unchanged, skipped" in l for l in log) == 3

    ctx = FakeCtx(tmp_path, inputs={"b": 2})        # b's inputs change: b reruns, a and c not
    runner.run(ctx)
    assert ctx.calls == ["b", "d"]

    (tmp_path / "c.out").unlink()                   # a product disappeared: c reruns
    ctx = FakeCtx(tmp_path, inputs={"b": 2})
    runner.run(ctx)
    assert ctx.calls == ["c", "d"]

    ctx = FakeCtx(tmp_path, inputs={"b": 2})        # --force reruns everything
    runner.run(ctx, force=True)
    assert ctx.calls == ["a", "b", "c", "d"]


def test_stop_step_stops_after_the_named_step(tmp_path):
    log, ctx = [], FakeCtx(tmp_path)
    make_runner(tmp_path, log).run(ctx, stop_step="b")
    assert ctx.calls == ["a", "b"]
    assert "c" not in ctx.status
    assert log[-1] == "stopped after 'b' (--stop-step)"


def test_unknown_stop_step_lists_the_steps(tmp_path):
    with pytest.raises(StepError, match="'synthesis' is not a step; steps: a, b, c, d"):
        make_runner(tmp_path, []).run(FakeCtx(tmp_path), stop_step="synthesis")


def test_check_runs_on_cached_results_too(tmp_path):
    seen = []
    runner = make_runner(tmp_path, [], b={"check": lambda ctx, rec: seen.append(rec["made"])})
    runner.run(FakeCtx(tmp_path))
    runner.run(FakeCtx(tmp_path))
    assert seen == ["b", "b"]


def test_failing_step_stops_the_run(tmp_path):
    def boom(ctx):
        raise StepError("boom")
    runner = StepRunner([fake_step("a"), Step("b", boom), fake_step("c")], tmp_path / "cache",
                        log=lambda s: None)
    ctx = FakeCtx(tmp_path)
    with pytest.raises(StepError, match="boom"):
        runner.run(ctx)
    assert ctx.calls == ["a"]


def test_a_step_with_its_own_cache_dir_is_shared_between_runners(tmp_path):
    step = fake_step("a")
    step.cache_dir = lambda ctx: ctx.tmp / "shared"
    StepRunner([step], tmp_path / "board1", log=lambda m: None).run(FakeCtx(tmp_path))
    ctx = FakeCtx(tmp_path)
    StepRunner([step], tmp_path / "board2", log=lambda m: None).run(ctx)
    assert ctx.status == {"a": "cached"} and (tmp_path / "shared" / "a.json").exists()
    assert [s.name for s in hwbuild.STEPS if s.cache_dir is not None] == ["quantize"]


def test_the_build_has_the_named_steps_in_order():
    assert hwbuild.STEP_NAMES == ["quantize", "firmware", "estimate", "elaborate", "synth",
                                  "pnr", "pack", "report"]


# -- fit check ---------------------------------------------------------------------------------

def test_fit_check_passes_and_reports_percentages():
    b = get_board("ulx3s")
    rows = fit_check(b, {"LUT4": 41820, "TRELLIS_FF": 10, "MULT18X18D": 156, "DP16KD": 0})
    assert rows[0] == {"resource": "LUT4", "estimate": 41820, "available": 83640,
                       "percent": 50.0}


def test_fit_check_names_the_resource_and_the_overshoot():
    b = get_board("ulx3s-12f")
    with pytest.raises(FitError) as info:
        fit_check(b, {"LUT4": 15000, "TRELLIS_FF": 100, "MULT18X18D": 22, "DP16KD": 40})
    msg = str(info.value)
    assert "'ulx3s-12f'" in msg and "LFE5U-12F" in msg
    assert "LUT4: estimate 15000 > available 12000 (over by 3000" in msg
    assert "DP16KD: estimate 40 > available 32 (over by 8" in msg
    assert "TRELLIS_FF" not in msg


# -- report parsers ------------------------------------------------------------------------------

NEXTPNR_LOG = """
Info: Max frequency for clock '$glbnet$engine_clk': 88.10 MHz (FAIL at 100.00 MHz)
Info: Routing..
Info: Max frequency for clock '$glbnet$engine_clk': 104.32 MHz (PASS at 100.00 MHz)
Info: Max frequency for clock 'clk25_0__io$TRELLIS_IO_IN': 250.00 MHz (PASS at 25.00 MHz)
"""


def test_parse_nextpnr_report_and_log(tmp_path):
    report = {"fmax": {"$glbnet$engine_clk": {"achieved": 104.32, "constraint": 100.0}},
              "utilization": {"TRELLIS_COMB": {"used": 5000, "available": 83640},
                              "TRELLIS_FF": {"used": 9000, "available": 83640},
                              "MULT18X18D": {"used": 148, "available": 156},
                              "DP16KD": {"used": 0, "available": 208},
                              "EHXPLLL": {"used": 1, "available": 4}}}
    report["critical_paths"] = [{"from": "posedge $glbnet$engine_clk",
                                 "to": "posedge $glbnet$engine_clk", "path": [
        {"type": "clk-to-q", "delay": 0.5, "from": {"cell": "a_r"}, "to": {"cell": "a_r"}},
        {"type": "routing", "delay": 2.0, "net": "a", "from": {"cell": "a_r"},
         "to": {"cell": "dsp", "port": "A0"}},
        {"type": "logic", "delay": 6.0, "from": {"cell": "dsp"}, "to": {"cell": "dsp",
                                                                        "port": "P5"}},
        {"type": "setup", "delay": 0.1, "from": {"cell": "p_r"}, "to": {"cell": "p_r"}}]}]
    (tmp_path / "r.json").write_text(json.dumps(report))
    (tmp_path / "n.log").write_text(NEXTPNR_LOG)
    out = parse_nextpnr_report(tmp_path / "r.json", tmp_path / "n.log")
    cp = out["critical_paths"][0]
    assert (cp["start"], cp["end"], cp["delay_ns"], cp["segments"]) == ("a_r", "p_r", 8.6, 4)
    assert cp["ns_by_type"] == {"clk-to-q": 0.5, "routing": 2.0, "logic": 6.0, "setup": 0.1}
    assert cp["slowest"][0] == {"type": "logic", "delay_ns": 6.0, "net": None, "cell": "dsp",
                                "port": "P5"}
    assert out["utilization"]["LUT4"] == {"used": 5000, "available": 83640}
    assert out["utilization"]["MULT18X18D"] == {"used": 148, "available": 156}
    assert out["fmax"]["$glbnet$engine_clk"]["achieved"] == 104.32
    # The log's last summary (after routing) wins.
    assert out["fmax_log"]["$glbnet$engine_clk"] == {"achieved": 104.32, "constraint": 100.0,
                                                     "pass": True}
    assert out["cells"]["EHXPLLL"]["used"] == 1


def test_engine_clock_is_the_one_at_the_target():
    fmax = {"$glbnet$clk": {"achieved": 104.3, "constraint": 100.0},
            "clk25_0__io$TRELLIS_IO_IN": {"achieved": 400.0, "constraint": 25.0}}
    assert hwbuild._engine_clock(fmax, 100.0) == ("$glbnet$clk", fmax["$glbnet$clk"])
    assert hwbuild._engine_clock(fmax, 75.0) == (None, None)


def test_parse_nextpnr_report_refuses_a_report_without_utilisation(tmp_path):
    (tmp_path / "r.json").write_text(json.dumps({"fmax": {}, "utilization": {}}))
    with pytest.raises(ToolError, match="lacks utilization"):
        parse_nextpnr_report(tmp_path / "r.json")


def test_parse_nextpnr_log_fail_verdict(tmp_path):
    (tmp_path / "n.log").write_text(NEXTPNR_LOG.replace("104.32 MHz (PASS", "95.00 MHz (FAIL"))
    assert parse_nextpnr_log_fmax(tmp_path / "n.log")["$glbnet$engine_clk"]["pass"] is False


def test_parse_yosys_stat(tmp_path):
    (tmp_path / "s.json").write_text(json.dumps({"design": {"num_cells_by_type": {
        "LUT4": 100, "CCU2C": 16, "TRELLIS_FF": 300, "MULT18X18D": 22, "EHXPLLL": 1}}}))
    out = parse_yosys_stat(tmp_path / "s.json")
    assert (out["LUT4"], out["TRELLIS_FF"], out["MULT18X18D"], out["DP16KD"]) == (132, 300, 22, 0)


# -- toolchain lookup --------------------------------------------------------------------------

def test_tool_override_that_does_not_exist_names_the_variable(monkeypatch):
    monkeypatch.setenv("NEXTPNR_ECP5", "no-such-nextpnr --threads 2")
    with pytest.raises(ToolError, match="NEXTPNR_ECP5='no-such-nextpnr --threads 2'"):
        find_tool("nextpnr-ecp5")


def test_tool_override_keeps_its_arguments(monkeypatch):
    monkeypatch.setenv("YOSYS", f"{sys.executable} -X dev")
    tool = find_tool("yosys")
    assert tool.argv[1:] == ("-X", "dev") and "YOSYS" in tool.origin


def test_amaranth_env_stubs_openfpgaloader(tmp_path, monkeypatch):
    monkeypatch.delenv("OPENFPGALOADER", raising=False)
    monkeypatch.setenv("PATH", str(Path(sys.executable).parent))  # no openFPGALoader there
    env = amaranth_build_env(tmp_path)
    assert set(env) >= {"YOSYS", "NEXTPNR_ECP5", "ECPPACK", "OPENFPGALOADER"}
    stub = Path(env["OPENFPGALOADER"])
    proc = subprocess.run([str(stub)], capture_output=True, text=True)
    assert proc.returncode == 1 and "not installed" in proc.stderr


# -- the board top -----------------------------------------------------------------------------

def test_engine_top_wires_sdram_uart_and_leds():
    b = get_board("ulx3s-12f")
    top = BoardTop(b)
    plan = hwbuild._prepare(b.platform_instance(), top)
    il, lpf = plan.files["top.il"], plan.files["top.lpf"]
    for pin, site in (("sdram_0__clk__io", "F19"), ("sdram_0__dq__io[15]", "J17"),
                      ("sdram_0__a__io[12]", "G19"), ("sdram_0__cs__io", "P20"),
                      ("uart_0__rx__io", "M1"), ("uart_0__tx__io", "L4")):
        assert f'LOCATE COMP "{pin}" SITE "{site}";' in lpf, pin
    assert "ODDRX1F" in il                      # the SDRAM clock pin
    assert "EHXPLLL" in il
    for module in ("system.engine", "system.sdram", "system.link", "system.arbiter"):
        assert f"module \\top.{module}" in il, module


def test_board_top_elaborates_pll_and_clock_constraint():
    b = get_board("ulx3s-12f")
    top = BoardTop(b)
    plan = hwbuild._prepare(b.platform_instance(), top)
    il, lpf = plan.files["top.il"], plan.files["top.lpf"]
    assert "EHXPLLL" in il
    for param, value in (("CLKI_DIV", 1), ("CLKFB_DIV", 4), ("CLKOP_DIV", 6),
                         ("CLKOP_CPHASE", 2)):
        assert f"parameter \\{param} {value}" in il, param
    assert 'FREQUENCY PORT "clk25_0__io" 25000000.0 HZ;' in lpf   # nextpnr derives the rest
    assert "FREQUENCY NET" not in lpf
    assert 'LOCATE COMP "clk25_0__io" SITE "G2";' in lpf
    assert "stat -json" in plan.files["top.ys"]


# -- command line ------------------------------------------------------------------------------

def test_help_lists_the_options_and_steps():
    proc = subprocess.run([sys.executable, "-m", "hw.build", "--help"], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    for word in ("--board", "--variant", "--weights", "--stop-step", "--force", "--out",
                 "quantize", "pnr", "report"):
        assert word in proc.stdout


def test_unknown_board_on_the_command_line(capsys):
    assert hwbuild.main(["--board", "ulx3s-99f"]) == 2
    err = capsys.readouterr().err
    assert "unknown board 'ulx3s-99f'" in err and "ulx3s-12f" in err


def test_list_boards(capsys):
    assert hwbuild.main(["--list-boards"]) == 0
    out = capsys.readouterr().out
    assert "ulx3s-45f" in out and "LFE5U-45F" in out


# -- synthesis tier ------------------------------------------------------------------------------

def test_elaborate_and_synth_engine_small_board(tmp_path):
    """elaborate -> synth of the engine design (engine + SDRAM controller + UART link +
    arbiter) for the 12F: the multipliers and block RAMs are the ones the estimate counts, and
    the LUT and FF figures are of the estimate's order. In the default tier, so CI runs the
    elaboration and synthesis of a board: about 35 s of CPU (yosys), 65 s wall on the 2-core
    machine under load. Place and route stays out of CI (the 85F engine: see docs/BOARD.md)."""
    from hw.board.top import LUTRAM_LUTS, engine_resources
    b = get_board("ulx3s-12f")
    ctx = hwbuild.BuildContext(board=b, out=tmp_path)
    steps = [s for s in hwbuild.STEPS if s.name in ("elaborate", "synth")]
    StepRunner(steps, ctx.board_dir / ".cache").run(ctx)
    cells = ctx.results["synth"]["cells"]
    assert cells["cells"].get("EHXPLLL") == 1 and cells["cells"].get("ODDRX1F") == 1
    est = engine_resources(b)["resources"]
    assert abs(cells["MULT18X18D"] - est["MULT18X18D"]) <= 2
    assert abs(cells["DP16KD"] - est["DP16KD"]) <= 0.15 * est["DP16KD"]
    dpr = cells["cells"].get("TRELLIS_DPR16X4", 0)
    lut = cells["LUT4"] + LUTRAM_LUTS * dpr     # the estimate counts LUT RAM on LUT sites
    assert 0.8 < lut / est["LUT4"] < 1.2, (lut, est["LUT4"])
    assert 0.8 < cells["TRELLIS_FF"] / est["TRELLIS_FF"] < 1.2


# -- adapters to the other modules: what happens when a piece is missing ------------------------

def test_quantize_without_weights(tmp_path):
    b = get_board("ulx3s")
    missing = hwbuild.BuildContext(board=b, out=tmp_path, variant="no_such_variant")
    with pytest.raises(StepError, match="models/no_such_variant.pt do not exist"):
        hwbuild.step_quantize(missing)
    given = hwbuild.BuildContext(board=b, out=tmp_path, weights=tmp_path / "missing.pt")
    with pytest.raises(StepError, match="--weights .*missing.pt: no such file"):
        hwbuild.step_quantize(given)


def test_firmware_without_a_quantized_model(tmp_path):
    ctx = hwbuild.BuildContext(board=get_board("ulx3s"), out=tmp_path)
    with pytest.raises(StepError, match="no quantized model"):
        hwbuild.step_firmware(ctx)


def test_firmware_adapter_calls_compile_files(tmp_path, monkeypatch):
    import types
    calls = []

    def compile_files(artifact_dir, board, out):
        calls.append((Path(artifact_dir), board, Path(out)))
        Path(out).write_bytes(b"\0\1" * 8)
        Path(out).with_suffix(".json").write_text("{}")
        return types.SimpleNamespace(descriptors=[{}, {}, {}])

    fake = types.ModuleType("firmware.compiler")
    fake.compile_files = compile_files
    monkeypatch.setitem(sys.modules, "firmware.compiler", fake)
    ctx = hwbuild.BuildContext(board=get_board("ulx3s-25f"), out=tmp_path)
    ctx.results["quantize"] = {"manifest": str(tmp_path / "q" / "manifest.json")}
    rec = hwbuild.step_firmware(ctx)
    assert calls == [(tmp_path / "q", "ulx3s-25f", tmp_path / "ulx3s-25f" / "memory.bin")]
    assert rec["bytes"] == 16 and rec["descriptors"] == 3
    assert [p.name for p in hwbuild._firmware_outputs(ctx)] == ["memory.bin", "memory.json"]


def test_firmware_failure_on_a_small_board_also_says_what_does_not_fit(tmp_path, monkeypatch):
    import types

    def compile_files(artifact_dir, board, out):
        raise ValueError("layer 'conv2_dw': 3 rows need 2688 row-buffer entries")

    fake = types.ModuleType("firmware.compiler")
    fake.compile_files = compile_files
    monkeypatch.setitem(sys.modules, "firmware.compiler", fake)
    import dataclasses
    b = get_board("ulx3s-12f")
    ctx = hwbuild.BuildContext(board=b, out=tmp_path)
    ctx.results["quantize"] = {"manifest": str(tmp_path / "q" / "manifest.json")}
    with pytest.raises(StepError, match=r"conv2_dw") as info:
        hwbuild.step_firmware(ctx)
    assert "LUT4" not in str(info.value)          # the 12F's logic fits
    # a board whose logic would not fit either: the message says so too
    small = dataclasses.replace(b, resources=dataclasses.replace(b.resources, LUT4=8000))
    ctx = hwbuild.BuildContext(board=small, out=tmp_path / "small")
    ctx.results["quantize"] = {"manifest": str(tmp_path / "q" / "manifest.json")}
    with pytest.raises(StepError, match=r"(?s)conv2_dw.*LUT4: estimate \d+ > available 8000"):
        hwbuild.step_firmware(ctx)


def test_engine_estimate_needs_the_compiled_program(tmp_path):
    ctx = hwbuild.BuildContext(board=get_board("ulx3s"), out=tmp_path)
    ctx.results["firmware"] = {"map": str(tmp_path / "memory.json")}
    with pytest.raises(StepError, match="ulx3s.*memory.json"):
        hwbuild.step_estimate(ctx)


# -- report ------------------------------------------------------------------------------------

def _fake_ctx(tmp_path, cycles, achieved):
    b = get_board("ulx3s")
    ctx = hwbuild.BuildContext(board=b, out=tmp_path)
    ctx._versions = {"yosys": {"version": "Yosys 0.70"}}
    res = {"LUT4": 100, "TRELLIS_FF": 200, "MULT18X18D": 148, "DP16KD": 0}
    ctx.results = {
        "estimate": {"resources": res, "cycles_per_frame": cycles, "source": "test"},
        "elaborate": {"files": ["top.il"]},
        "synth": {"cells": dict(res)},
        "pnr": {"fmax": {"$glbnet$clk": {"achieved": achieved,
                                         "constraint": b.clock.target_mhz}},
                "utilization": {k: {"used": v, "available": 1000} for k, v in res.items()}},
    }
    ctx.status = {"estimate": "cached", "synth": "ran"}
    ctx.seconds = {"estimate": 0.0, "synth": 12.5}
    ctx.built_seconds = {"estimate": 3.0, "synth": 12.5}
    return ctx


def test_report_has_the_required_fields(tmp_path):
    ctx = _fake_ctx(tmp_path, cycles=1_000_000, achieved=120.0)
    ctx.source = hwbuild.source_revision()
    assert ctx.source and ctx.source.split("+")[0].isalnum()   # this checkout's commit
    r = hwbuild.build_report(ctx)
    for key in ("board", "device", "fmax_mhz", "target_mhz", "timing_met", "utilization",
                "estimate", "cycles_per_frame", "fps", "toolchain", "seconds_per_step"):
        assert key in r, key
    target = get_board("ulx3s").clock.target_mhz
    assert r["timing_met"] is True and r["achieved_clock_mhz"] == target
    assert r["fps"] == pytest.approx(target)
    assert r["utilization"]["MULT18X18D"] == {"used": 148, "available": 1000}
    assert r["steps"]["estimate"] == {"status": "cached", "seconds": 0.0,
                                      "seconds_when_built": 3.0}
    md = hwbuild.report_markdown(r)
    assert "| MULT18X18D | 148 | 148 | 148 | 1000 | 14.8 |" in md
    assert "timing met" in md and f"Source: commit {ctx.source}" in md


def test_report_when_timing_fails(tmp_path):
    ctx = _fake_ctx(tmp_path, cycles=1_000_000, achieved=80.0)
    ctx.results["pnr"].update(seed=1, sweep=[{"seed": 2, "met": False, "fmax": {"clk": 79.5}},
                                             {"seed": 1, "met": False, "fmax": {"clk": 80.0}}])
    r = hwbuild.build_report(ctx)
    assert r["pnr_seed"] == 1 and len(r["seed_sweep"]) == 2
    assert ("- placer seed 1 (tried in order: seed 2: 79.50 MHz (not met); seed 1: 80.00 MHz "
            "(not met))") in hwbuild.report_markdown(r)
    assert r["timing_met"] is False and r["fmax_mhz"] == 80.0
    assert r["fps"] == pytest.approx(80.0) and "below target" in r["fps_note"]
    assert "timing NOT met" in hwbuild.report_markdown(r)


@pytest.mark.synthesis
def test_place_and_route_sweeps_seeds_until_timing_is_met(tmp_path):
    """A multiply-accumulate through yosys and nextpnr (25F): at 20 MHz the first seed meets
    timing and no other runs; at 900 MHz none can, so every seed runs and the best one's
    products become top.config / pnr_report.json / logs/pnr.log. About 25 s of CPU."""
    (tmp_path / "top.v").write_text(
        "module top(input clk, input [15:0] a, input [15:0] b, output reg [31:0] acc);\n"
        "  always @(posedge clk) acc <= acc + a * b;\nendmodule\n")
    subprocess.run([*find_tool("yosys").argv, "-q", "-p",
                    "read_verilog top.v; synth_ecp5 -top top -json top.json"],
                   cwd=tmp_path, check=True)
    base = ["--25k", "--package", "CABGA381", "--speed", "6", "--json", "top.json",
            "--timing-allow-fail"]
    met = hwbuild.place_and_route([*base, "--freq", "20"], (5, 6), cwd=tmp_path,
                                  logs=tmp_path / "logs")
    assert met["seed"] == 5 and [x["seed"] for x in met["sweep"]] == [5]
    assert met["sweep"][0]["met"] and hwbuild.timing_met_all_clocks(met)
    failed = hwbuild.place_and_route([*base, "--freq", "900"], (5, 6, 7), cwd=tmp_path,
                                     logs=tmp_path / "logs")
    assert [x["seed"] for x in failed["sweep"]] == [5, 6, 7]
    assert not any(x["met"] for x in failed["sweep"])
    best = max(failed["sweep"], key=lambda x: min(x["fmax"].values()))
    assert failed["seed"] == best["seed"]
    assert (tmp_path / "pnr_report.json").read_bytes() == \
        (tmp_path / f"pnr_report_seed{best['seed']}.json").read_bytes()
    assert (tmp_path / "logs" / "pnr.log").read_text() == \
        (tmp_path / "logs" / f"pnr_seed{best['seed']}.log").read_text()
    assert (tmp_path / "top.config").read_bytes() == \
        (tmp_path / f"top_seed{best['seed']}.config").read_bytes()


def test_seeds_option_refuses_bad_lists(capsys):
    for bad in ("1,x", "2,2", "-1", ""):
        assert hwbuild.main(["--board", "ulx3s", "--seeds", bad, "--stop-step", "quantize"]) == 2
        assert "--seeds" in capsys.readouterr().err


def test_nextpnr_seed_in_the_environment_is_refused(monkeypatch, capsys):
    monkeypatch.setenv("NEXTPNR_ARGS", "--seed 3")
    assert hwbuild.main(["--board", "ulx3s", "--stop-step", "quantize"]) == 2
    assert "NEXTPNR_ARGS: has --seed" in capsys.readouterr().err
