"""The quantizer's report on other weights: a reference model trained with another seed.

    python -m quant.other_weights [--variant seesaw_shuffle] [--seed 1] [--steps 600]
                                  [--weights build/seesaw_shuffle_seed1.pt] [--stopped-at N]
                                  [--json reports/quant_other_seed.json] [--threads 1]

Trains the weights with ``python -m quant.reference_model train --seed SEED --steps STEPS`` when
the ``--weights`` file does not exist (about 40 min on 2 cores; training is deterministic, so the
recorded sha256 identifies the recipe's result; ``--stopped-at N`` records that the given
weights are the snapshot ``train`` writes every 100 steps, ``OUT.partial.pt``, after N of the
STEPS steps: such weights are not retrained here), checks them (smoothness and spread, as
``reference_model check``), then quantizes them four ways with ``python -m quant --no-check``:
the default and the all-8-bit precision (``--wide embedding``), each with the default adaptive
rounding and with ``--adaround 0`` (round to nearest, everything else the same). Each run's
products go to ``build/quant/WEIGHTS_STEM/RUN/``; a run whose ``report.json`` is already there
for the same weights (sha256) and options is not repeated, so the four ``python -m quant``
commands this prints may also be run by hand, in parallel.

Writes ``JSON`` and the table beside it (``.md``): for each run embedding cosine mean / min vs
float, decision agreement, the torch.ao peer's cosine, acceptance, the mean SQNR of each
tensor role and the weakest tensors, and the integer-vs-float pair scores (their error, and how
far from the float EER threshold each differing pair lies); for both weights, how many float
pair scores lie near the threshold (the pairs any small error can flip). Beside them, the
same figures of the shipped weights from their reports (``reports/quant_seesaw_shuffle.json``,
``..._all8bit.json``; the round-to-nearest rows from ``reports/quant_techniques.json``, which
has cosines only). Exit 1 when AdaRound is below
round-to-nearest on the other weights (mean or min cosine, or more differing decisions summed
over the six draws of the perturbed copies, at either precision).
"""
import argparse
import json
import sys
from pathlib import Path

import numpy as np

from . import cli, files
from .fidelity import pair_scores
from .quantize import ADAROUND_ITERATIONS, DEFAULT_WIDE

# Distances from the float EER threshold (cosine score) at which pairs are counted as fragile.
NEAR = (0.001, 0.002, 0.005)
# Draws of the perturbed copies (quant.verification.all_pairs seeds) the decisions are counted
# on: with pairs at the threshold, which of them flip depends on the draw.
PAIR_SEEDS = tuple(range(6))
ROOT = Path(__file__).resolve().parent.parent
REPORTS = ROOT / "reports"
# {run name: (precision, wide roles, AdaRound iterations)}
RUNS = {"default": ("default", DEFAULT_WIDE, ADAROUND_ITERATIONS),
        "default_adaround0": ("default", DEFAULT_WIDE, 0),
        "all8bit": ("all-8-bit", ("embedding",), ADAROUND_ITERATIONS),
        "all8bit_adaround0": ("all-8-bit", ("embedding",), 0)}
# The shipped weights' reports of the same runs (round-to-nearest: the techniques table row).
SHIPPED = {"default": "quant_seesaw_shuffle.json", "all8bit": "quant_seesaw_shuffle_all8bit.json"}


def quant_args(variant, weights, out, name, threads=1) -> list:
    _, wide, iterations = RUNS[name]
    args = ["--variant", variant, "--weights", str(weights), "--out", str(out / name),
            "--threads", str(threads), "--no-check"]
    if tuple(wide) != tuple(DEFAULT_WIDE):
        args += ["--wide", ",".join(wide)]
    if iterations != ADAROUND_ITERATIONS:
        args += ["--adaround", str(iterations)]
    return args


def _reusable(path: Path, sha: str, name: str) -> bool:
    if not path.is_file():
        return False
    r = json.loads(path.read_text())
    q = r["quantizer"]
    _, wide, iterations = RUNS[name]
    return (q["source"]["sha256"] == sha and tuple(q["wide_roles"]) == tuple(wide)
            and q.get("adaround_iterations", 0) == iterations
            and r["peer"].get("cosine_mean") is not None and "agreement" in r["decisions"])


def role_sqnr(rep: dict) -> dict:
    """Mean SQNR (dB) of each tensor role of a ``python -m quant`` report (values capped at
    99 dB, as the per-layer plot does: a tensor quantized without error has infinite SQNR)."""
    roles = {}
    for layer in rep["layers"]:
        roles.setdefault(layer["role"], []).append(min(layer["sqnr_db"], 99.0))
    return {k: round(float(np.mean(v)), 2) for k, v in sorted(roles.items())}


def summary(rep: dict, name: str, source: str) -> dict:
    """The figures the table shows, from one ``python -m quant`` report."""
    e, d, p = rep["embedding"], rep["decisions"], rep["peer"]
    precision, _, iterations = RUNS[name]
    weakest = sorted(rep["layers"], key=lambda r: r["sqnr_db"])[:3]
    return {"run": name, "precision": precision, "adaround": iterations, "report": source,
            "cosine_mean": e["cosine_mean"], "cosine_min": e["cosine_min"],
            "faces": e["faces"], "agreement": d["agreement"],
            "disagreeing_pairs": d["disagreeing_pairs"], "pairs": d["pairs"],
            "float_eer_threshold": d["float_eer_threshold"],
            "peer_cosine_mean": p["cosine_mean"], "peer_cosine_min": p["cosine_min"],
            "accepted": rep["accepted"], "role_sqnr_db": role_sqnr(rep),
            "weakest_tensors": [{"tensor": w["tensor"], "role": w["role"],
                                 "sqnr_db": round(w["sqnr_db"], 2)} for w in weakest]}


def fragility(model, faces) -> dict:
    """How many of the float model's pairs lie within 0.001, 0.002, 0.005 of its EER threshold
    (cosine score): those are the pairs any small embedding error can flip."""
    sf, _, issame, thr = pair_scores(None, model, faces)
    return {"float_eer_threshold": float(thr),
            "float_margin": float(sf[issame].min() - sf[~issame].max()),
            "pairs_near_threshold": {str(d): int(np.count_nonzero(np.abs(sf - thr) <= d))
                                     for d in NEAR}}


def flips(artifact_dir, model, faces) -> dict:
    """Integer vs float pair scores of one artifact: the score error, and for every pair whose
    decision differs, its float and integer score minus the float EER threshold; and the number
    of differing decisions for each draw of the perturbed copies (``PAIR_SEEDS``; the report's
    decisions are draw 0)."""
    from .artifact import load
    from .golden import GoldenModel
    golden = GoldenModel(load(artifact_dir))
    counts = []
    for seed in PAIR_SEEDS:
        sf, si, issame, thr = pair_scores(golden, model, faces, seed)
        counts.append(int(np.count_nonzero((sf > thr) != (si > thr))))
    sf, si, issame, thr = pair_scores(golden, model, faces, PAIR_SEEDS[0])
    err = np.abs(si - sf)
    return {"disagreeing_pairs_by_draw": counts,
            "score_error_mean": float(err.mean()), "score_error_max": float(err.max()),
            "pairs_within_max_error": int(np.count_nonzero(np.abs(sf - thr) <= err.max())),
            "flipped": [{"same": bool(issame[i]), "float_minus_threshold": float(sf[i] - thr),
                         "integer_minus_threshold": float(si[i] - thr)}
                        for i in np.flatnonzero((sf > thr) != (si > thr))]}


def shipped_rows(reports: Path) -> list:
    """The shipped weights' figures of the same four runs, from the committed reports."""
    rows = []
    for name, (precision, wide, iterations) in RUNS.items():
        if iterations:
            rep = json.loads((reports / SHIPPED[name]).read_text())
            rows.append(dict(summary(rep, name, f"reports/{SHIPPED[name]}"),
                             sha256=rep["quantizer"]["source"]["sha256"]))
            continue
        tech = json.loads((reports / "quant_techniques.json").read_text())["rows"]
        best = [r for r in tech if r["precision"] == precision and r["scales"] == "free"
                and r["calibration"] == "mse-act" and r.get("offsets") and not
                r["bias_correction"] and not r.get("equalization") and not r.get("adaround")]
        if len(best) != 1:
            raise cli.UserError(str(reports / "quant_techniques.json"),
                                f"{len(best)} rows of the {precision} default without AdaRound, "
                                "expected 1")
        rows.append({"run": name, "precision": precision, "adaround": 0,
                     "report": "reports/quant_techniques.json",
                     "cosine_mean": best[0]["cosine_mean"], "cosine_min": best[0]["cosine_min"],
                     "faces": best[0]["evaluation_faces"]})
    return rows


def adaround_effect(rows: list) -> dict:
    """AdaRound minus round-to-nearest, per precision: mean and min cosine, differing decisions
    (draw 0, and summed over the draws when the rows have their pair scores)."""
    by = {r["run"]: r for r in rows}
    out = {}
    for with_, without in (("default", "default_adaround0"), ("all8bit", "all8bit_adaround0")):
        a, b = by[with_], by[without]
        out[a["precision"]] = {"cosine_mean": a["cosine_mean"] - b["cosine_mean"],
                               "cosine_min": a["cosine_min"] - b["cosine_min"]}
        if "agreement" in a and "agreement" in b:
            out[a["precision"]]["disagreeing_pairs"] = (a["disagreeing_pairs"]
                                                        - b["disagreeing_pairs"])
        if "pair_scores" in a and "pair_scores" in b:
            out[a["precision"]]["disagreeing_pairs_all_draws"] = (
                sum(a["pair_scores"]["disagreeing_pairs_by_draw"])
                - sum(b["pair_scores"]["disagreeing_pairs_by_draw"]))
    return out


def regressions(effect: dict) -> list:
    """AdaRound's losses against round-to-nearest: a lower mean or min cosine, or more
    differing decisions summed over the draws of the perturbed copies (``PAIR_SEEDS``). One
    draw's count moves by a pair or two with the draw alone (pairs near the threshold flip
    either way), so it is reported but not judged."""
    return [f"{p} {k} {v:+.5f}" for p, e in effect.items() for k, v in e.items()
            if k.startswith("cosine") and v < 0] + \
           [f"{p} disagreeing pairs over {len(PAIR_SEEDS)} draws "
            f"{e['disagreeing_pairs_all_draws']:+d}" for p, e in effect.items()
            if e.get("disagreeing_pairs_all_draws", 0) > 0]


def _agree(r):
    if "agreement" not in r:
        return "—"
    n = r["disagreeing_pairs"]
    return f"{100 * r['agreement']:.2f} % ({n} differ{'s' if n == 1 else ''})"


def _peer(r):
    return "—" if r.get("peer_cosine_mean") is None else \
        f"{r['peer_cosine_mean']:.5f} / {r['peer_cosine_min']:.5f}"


def _accept(r):
    if "accepted" not in r:
        return "—"
    missed = [k for k, v in r["accepted"].items() if not v and k != "golden_fps"]
    return "PASS" if not missed else "FAIL (" + ", ".join(missed) + ")"


def markdown(rep: dict) -> str:
    w, c = rep["weights"], rep["reference_check"]
    t = w["training"]
    lines = [f"# Quantizer on other weights: {rep['variant']}, training seed {t['seed']}", "",
             f"Weights `{w['path']}` (sha256 `{w['sha256'][:16]}…`), trained by "
             f"`{t['command']}` (seed {t['seed']}, " + (
                 f"{t['steps']} steps" if t["stopped_at"] == t["steps"] else
                 f"the snapshot after {t['stopped_at']} of its {t['steps']} steps, learning "
                 f"rate {t['learning_rate_at_stop']:.4f}, not annealed") + "). Float model on the "
             f"{c['faces']} evaluation faces: +-1 LSB noise cosine {c['noise_cosine_mean']:.5f} "
             f"(min {c['noise_cosine_min']:.5f}), pairwise cosine {c['pairwise_cosine_mean']:.3f} "
             f"(max {c['pairwise_cosine_max']:.3f}): "
             f"{'accepted' if c['accepted'] else 'REJECTED'} as reference weights. "
             f"Each run: `python -m quant --weights ... --no-check` plus the options shown; "
             f"cosine of the integer embedding vs float on the evaluation faces, decisions on "
             f"all pairs at the float EER threshold (`python -m quant.other_weights`).", "",
             "| weights | precision | AdaRound iterations | cosine mean / min | decisions "
             "agreeing | torch.ao peer cosine mean / min | acceptance |",
             "|---|---|---|---|---|---|---|"]
    for label, rows in (("seed " + str(t["seed"]), rep["runs"]),
                        ("shipped (seed 0)", rep["shipped"]["runs"])):
        for r in rows:
            lines.append(f"| {label} | {r['precision']} | {r['adaround']} | "
                         f"{r['cosine_mean']:.5f} / {r['cosine_min']:.5f} | {_agree(r)} | "
                         f"{_peer(r)} | {_accept(r)} |")
    lines += ["", "AdaRound minus round-to-nearest (cosine mean / min):", "",
              "| precision | seed " + str(t["seed"]) + " | shipped (seed 0) |", "|---|---|---|"]
    for p in rep["adaround_effect"]:
        a, b = rep["adaround_effect"][p], rep["shipped"]["adaround_effect"][p]
        lines.append(f"| {p} | {a['cosine_mean']:+.5f} / {a['cosine_min']:+.5f} | "
                     f"{b['cosine_mean']:+.5f} / {b['cosine_min']:+.5f} |")
    regress = rep["adaround_regressions"]
    lines += ["", "AdaRound regresses on these weights: " +
              ("; ".join(regress) if regress else "no") + ".", "",
              "Mean SQNR (dB, integer vs float, evaluation faces) of each tensor role:", "",
              "| weights | run | " + " | ".join(rep["roles"]) + " |",
              "|---|---|" + "---|" * len(rep["roles"])]
    for label, rows in (("seed " + str(t["seed"]), rep["runs"]),
                        ("shipped (seed 0)", rep["shipped"]["runs"])):
        for r in rows:
            if "role_sqnr_db" in r:
                lines.append(f"| {label} | {r['run']} | " + " | ".join(
                    f"{r['role_sqnr_db'].get(k, float('nan')):.1f}" for k in rep["roles"]) + " |")
    lines += ["", "Pairs near the float model's EER threshold (cosine score; any small embedding "
              "error can flip them):", "",
              "| weights | float EER threshold | float margin (lowest same - highest "
              "different) | " + " | ".join(f"pairs within {d}" for d in NEAR) + " |",
              "|---|---|---|" + "---|" * len(NEAR)]
    for label, f in (("seed " + str(t["seed"]), rep["fragility"]),
                     ("shipped (seed 0)", rep["shipped"]["fragility"])):
        lines.append(f"| {label} | {f['float_eer_threshold']:.4f} | {f['float_margin']:+.4f} | "
                     + " | ".join(str(f["pairs_near_threshold"][str(d)]) for d in NEAR) + " |")
    lines += ["", f"Pair scores integer vs float, seed {t['seed']} (draw 0 of the perturbed "
              "copies, the report's; the differing decisions also for draws "
              f"{', '.join(map(str, PAIR_SEEDS))}):", "",
              "| run | differing decisions by draw (total) | score error mean / max | pairs within "
              "the max error of the threshold | differing pairs: float / integer score minus "
              "threshold |", "|---|---|---|---|---|"]
    for r in rep["runs"]:
        ps = r["pair_scores"]
        by_draw = ps["disagreeing_pairs_by_draw"]
        lines.append(f"| {r['run']} | {', '.join(map(str, by_draw))} ({sum(by_draw)}) | "
                     f"{ps['score_error_mean']:.5f} / {ps['score_error_max']:.5f}"
                     f" | {ps['pairs_within_max_error']} | " + ", ".join(
                         f"{'same' if x['same'] else 'diff'} {x['float_minus_threshold']:+.5f}"
                         f" / {x['integer_minus_threshold']:+.5f}" for x in ps["flipped"]) + " |")
    lines += ["", "Weakest tensors (lowest SQNR) of each run:", ""]
    for label, rows in (("seed " + str(t["seed"]), rep["runs"]),
                        ("shipped (seed 0)", rep["shipped"]["runs"])):
        for r in rows:
            if "weakest_tensors" in r:
                lines.append(f"- {label}, {r['run']}: " + ", ".join(
                    f"`{x['tensor']}` {x['sqnr_db']:.1f} dB" for x in r["weakest_tensors"]))
    return "\n".join(lines) + "\n"


def main(argv=None):
    return cli.run(_main, argv, prog="python -m quant.other_weights")


def _main(argv):
    from . import __main__ as quant_cli
    from . import reference_model as rm
    ap = cli.ArgumentParser(prog="python -m quant.other_weights", description=__doc__,
                            formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--variant", default="seesaw_shuffle", type=cli.variant)
    ap.add_argument("--seed", type=cli.non_negative, default=1,
                    help="training seed of the weights (default %(default)s)")
    ap.add_argument("--steps", type=cli.count, default=600,
                    help="training steps of the weights (default %(default)s)")
    ap.add_argument("--weights", type=Path,
                    help="trained here when missing (default: build/VARIANT_seedSEED.pt)")
    ap.add_argument("--json", type=Path, default=REPORTS / "quant_other_seed.json",
                    help="the table goes beside it as .md (default: %(default)s)")
    ap.add_argument("--threads", type=cli.count, default=1,
                    help="torch threads of each quantization (default %(default)s: on a shared "
                         "machine one thread per run, several runs in parallel, is fastest)")
    ap.add_argument("--stopped-at", type=cli.count,
                    help="the weights are train's snapshot after this many of the --steps "
                         "steps (default: all of them)")
    args = ap.parse_args(argv)
    stopped = args.stopped_at or args.steps
    if stopped > args.steps:
        raise cli.UserError(f"--stopped-at {stopped}", f"more than --steps {args.steps}")
    weights = args.weights or Path("build") / f"{args.variant}_seed{args.seed}.pt"
    train_cmd = (f"python -m quant.reference_model train --variant {args.variant} --seed "
                 f"{args.seed} --steps {args.steps} --out {weights}")
    if weights.exists() and not weights.is_file():
        raise cli.UserError(f"--weights {weights}", "is not a file")
    if not weights.exists() and stopped < args.steps:
        raise cli.UserError(f"--weights {weights}", "no such file (a snapshot --stopped-at "
                            f"{stopped} is not retrained here: `{train_cmd}` writes it to "
                            f"{weights.with_suffix('.partial.pt')} every 100 steps)")
    if not weights.exists():
        print(f"training: {train_cmd}", flush=True)
        rm.main(["train", "--variant", args.variant, "--seed", str(args.seed),
                 "--steps", str(args.steps), "--out", str(weights)])
    sha = files.sha256(weights)
    from . import faces as face_set
    evaluation = face_set.load("evaluation")
    model = rm.load_reference(args.variant, weights)
    check = rm.check(model)
    out = Path("build/quant") / weights.stem
    rows = []
    for name in RUNS:
        qargs = quant_args(args.variant, weights, out, name, args.threads)
        report = out / name / "report.json"
        if _reusable(report, sha, name):
            print(f"{name}: reusing {report}", flush=True)
        else:
            print(f"{name}: python -m quant {' '.join(qargs)}", flush=True)
            code = quant_cli.main(qargs)
            if code:
                raise cli.RunFailed(f"python -m quant {' '.join(qargs)} exited {code}")
        rows.append(summary(json.loads(report.read_text()), name, str(report)))
        print(f"{name}: pair scores ...", flush=True)
        rows[-1]["pair_scores"] = flips(out / name, model, evaluation)
    shipped = shipped_rows(REPORTS)
    effect = adaround_effect(rows)
    roles = sorted({k for r in rows for k in r["role_sqnr_db"]})
    rep = {"variant": args.variant,
           "weights": {"path": str(weights), "sha256": sha,
                       "training": {"seed": args.seed, "steps": args.steps,
                                    "stopped_at": stopped,
                                    "learning_rate_at_stop": rm.learning_rate(stopped,
                                                                              args.steps),
                                    "command": train_cmd}},
           "reference_check": check, "runs": rows,
           "commands": {n: "python -m quant " + " ".join(quant_args(args.variant, weights, out,
                                                                     n, args.threads))
                        for n in RUNS},
           "adaround_effect": effect, "adaround_regressions": regressions(effect),
           "shipped": {"sha256": shipped[0]["sha256"], "runs": shipped,
                       "adaround_effect": adaround_effect(shipped),
                       "fragility": fragility(rm.load_reference(args.variant), evaluation)},
           "fragility": fragility(model, evaluation),
           "roles": roles}
    md = markdown(rep)
    files.write_json(args.json, rep)
    files.write_text(args.json.with_suffix(".md"), md)
    print(md)
    print(f"wrote {args.json} and {args.json.with_suffix('.md')}")
    return 1 if rep["adaround_regressions"] else 0


if __name__ == "__main__":
    sys.exit(main())
