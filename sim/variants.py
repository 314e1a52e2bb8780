"""Whole-frame simulations of the variants without shipped weights, and their table.

    python -m sim.variants [VARIANT ...] [--seed 0] [--table-only]

For each variant (default: every one but seesaw_shuffle, whose shipped weights ``make sim``
runs): ``python -m sim.run_sim --variant V --random-weights SEED --faces 1 --report
reports/sim_<V>_random<SEED>.json``, one after the other, each simulator's output in
``build/sim/variants/<V>.log``. Then the table of every variant: ``reports/sim_variants.json``
and ``.md`` (bit-exact, simulated cycles a frame, the cycle model's estimate, frames per second
at the board's clock). A variant that fails to quantize or compile gets a row with the
command's error; one that is not bit-exact, its first mismatching tensor. Random weights
exercise the hardware on the variant's real shapes and formats; the embedding means nothing.
``--table-only``: the table from the reports already in ``reports/`` (no simulation).
Exit 1 when a variant failed or was not bit-exact (after writing the table).
"""
import json
import subprocess
import sys
from pathlib import Path

from quant import cli, files
from quant.zoo import VARIANTS

ROOT = Path(__file__).resolve().parent.parent
REPORTS = ROOT / "reports"
LOGS = ROOT / "build" / "sim" / "variants"
DEFAULT = [v for v in VARIANTS if v != "seesaw_shuffle"]


def report_path(variant, seed) -> Path:
    return REPORTS / f"sim_{variant}_random{seed}.json"


def simulate(variant, seed) -> str | None:
    """Run one variant through ``sim.run_sim``; its error line, or None when it passed."""
    report = report_path(variant, seed)
    report.unlink(missing_ok=True)          # a failed run must not leave an old report behind
    LOGS.mkdir(parents=True, exist_ok=True)
    log = LOGS / f"{variant}.log"
    cmd = [sys.executable, "-m", "sim.run_sim", "--variant", variant, "--random-weights",
           str(seed), "--faces", "1", "--report", str(report)]
    print(f"[{variant}] {' '.join(cmd[1:])} (log {log})", flush=True)
    with open(log, "w") as f:
        done = subprocess.run(cmd, cwd=ROOT, stdout=f, stderr=subprocess.STDOUT)
    if done.returncode == 0:
        return None
    lines = [ln for ln in log.read_text(errors="replace").splitlines() if ln.strip()]
    return lines[-1] if lines else f"exit code {done.returncode}"


def row(variant, seed, error=None) -> dict:
    """One table row from the variant's report (or its error when there is no report)."""
    path = report_path(variant, seed)
    if not path.exists():
        return {"variant": variant, "report": None, "bit_exact": False,
                "error": error or f"{path.relative_to(ROOT)}: no report"}
    r = json.loads(path.read_text())
    return {"variant": variant, "report": str(path.relative_to(ROOT)),
            "random_weights": r["random_weights"], "board": r["board"],
            "clock_mhz": r["config"]["clock_mhz"], "bit_exact": all(r["bit_exact"]),
            "cycles_per_frame": r["cycles_per_frame"][0],
            "estimated_cycles_per_frame": r["estimated_cycles_per_frame"],
            "frames_per_second_at_clock": r["frames_per_second_at_clock"][0],
            "sdram_words_per_frame": r["sdram_words_per_frame"][0],
            "first_mismatch": r["first_mismatch"], "error": error}


def markdown(rows) -> str:
    out = ["# Variants on the engine, random weights (`python -m sim.variants`)", "",
           "One frame each, seeded random weights (BatchNorm calibrated on the calibration "
           "faces): a bit-exactness check on the variant's real shapes, not a fidelity figure.",
           "", "| variant | bit-exact | cycles/frame | estimate | estimate error | frames/s at "
           "clock | SDRAM words/frame | report |", "|---|---|---:|---:|---:|---:|---:|---|"]
    for r in rows:
        if r["report"] is None:
            out.append(f"| {r['variant']} | failed: {r['error']} | | | | | | |")
            continue
        exact = "yes" if r["bit_exact"] else f"**no** (first mismatch: {r['first_mismatch']})"
        err = r["estimated_cycles_per_frame"] / r["cycles_per_frame"] - 1
        out.append(f"| {r['variant']} | {exact} | {r['cycles_per_frame']:,} | "
                   f"{r['estimated_cycles_per_frame']:,} | {err:+.2%} | "
                   f"{r['frames_per_second_at_clock']:.2f} at {r['clock_mhz']:g} MHz "
                   f"({r['board']}) | {r['sdram_words_per_frame']:,} | `{r['report']}` |")
    return "\n".join(out) + "\n"


def main(argv=None):
    return cli.run(_main, argv, prog="python -m sim.variants")


def _main(argv):
    p = cli.ArgumentParser(prog="python -m sim.variants", description=__doc__.split("\n")[0])
    p.add_argument("variants", nargs="*", type=cli.variant, metavar="VARIANT",
                   help=f"default: {' '.join(DEFAULT)}")
    p.add_argument("--seed", type=cli.non_negative, default=0,
                   help="seed of the random weights (default 0)")
    p.add_argument("--table-only", action="store_true",
                   help="only tabulate the reports already in reports/")
    a = p.parse_args(argv)
    variants = a.variants or DEFAULT
    rows = []
    for v in variants:
        error = None if a.table_only else simulate(v, a.seed)
        rows.append(row(v, a.seed, error))
        r = rows[-1]
        print(f"[{v}] " + (f"failed: {r['error']}" if r["report"] is None else
                           f"bit-exact {r['bit_exact']}, {r['cycles_per_frame']:,} cycles"),
              flush=True)
    files.write_json(REPORTS / "sim_variants.json", {"seed": a.seed, "variants": rows})
    files.write_text(REPORTS / "sim_variants.md", markdown(rows))
    print(f"wrote {REPORTS / 'sim_variants.json'} and .md")
    bad = [r["variant"] for r in rows if not r["bit_exact"]]
    if bad:
        raise cli.RunFailed(f"not bit-exact or failed: {', '.join(bad)} (reports/sim_variants.md)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
