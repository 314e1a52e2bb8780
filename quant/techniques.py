"""Measure each quantizer technique alone and in combination.

    python -m quant.techniques [--variant seesaw_shuffle] [--weights PATH] [--out reports]
                               [--precision default|all-8-bit|all] [--name STEM]
    python -m quant.techniques --table                      # rewrite STEM.md from STEM.json
    python -m quant.techniques --compare BEFORE.json AFTER.json   # per-tensor plot

For each precision of the quantizer issue (``default``: 16-bit swish outputs and embedding;
``all-8-bit``: all activations at 8 bits, embedding at 16) it quantizes the model with the
baseline (power-of-two scales, MSE calibration, no bias correction), each technique alone and
both combined:

* ``scales``: ``pow2`` (power-of-two formats) or ``free`` (a scale mantissa per tensor group,
  absorbed by the requantization multipliers and the activation tables);
* ``bias correction``: off or on;
* ``offsets``: off or on (activation inputs of the LUT form get an offset, needs ``mse-act``);
* ``calibration``: ``mse``, ``mse-act`` (activation inputs judged after the activation) or
  ``max`` (measured once, against the baseline);
* ``equalization``: off or on (cross-layer equalisation of the exact pairs, before
  calibration);
* ``adaround``: iterations of adaptive weight rounding per layer (0: round to nearest);

and measures the embedding cosine against the float model on the evaluation faces (mean, min).
The calibration statistics and the bias shifts are collected once and shared by every
combination, exactly as :func:`quant.quantize.quantize_model` computes them. Each row is merged
into ``OUT/STEM.json`` as soon as it is measured, and rows already there (same weights) are not
measured again (delete the file to start afresh); ``STEM.md`` is the table. ``--compare``
plots the per-tensor SQNR of two
``python -m quant`` reports into ``STEM_per_layer.png``.
"""
import argparse
import json
import sys
import time
import warnings
from pathlib import Path

import torch

from . import faces as face_set
from .fidelity import _cos_rows, _float_embeddings
from .golden import GoldenModel
from .adaround import adaround as fit_rounding
from .equalize import equalize
from .quantize import (ADAROUND_ITERATIONS, DEFAULT_WIDE, choose_formats, collect_statistics,
                       float_program, quantize_program, tensor_shapes, weight_bias_shift)
from .reference_model import load_reference, weights_path
from .zoo import VARIANTS

# The two precisions of the quantizer issue: {name: (act_bits, wide roles)}.
PRECISIONS = {"default": (8, DEFAULT_WIDE), "all-8-bit": (8, ("embedding",))}
# The baseline every technique is measured against (the quantizer before these techniques).
BASELINE = {"scales": "pow2", "calibration": "mse", "bias_correction": False, "offsets": False,
            "equalization": False, "adaround": 0}
_KEY = ("precision", "scales", "calibration", "bias_correction", "offsets", "equalization",
        "adaround")


def combinations():
    """Baseline, each technique alone, the combinations, and max calibration."""
    yield dict(BASELINE)
    yield dict(BASELINE, scales="free")
    yield dict(BASELINE, bias_correction=True)
    yield dict(BASELINE, calibration="mse-act")
    yield dict(BASELINE, scales="free", bias_correction=True)
    yield dict(BASELINE, scales="free", calibration="mse-act")
    yield dict(BASELINE, scales="free", calibration="mse-act", bias_correction=True)
    yield dict(BASELINE, calibration="max")
    yield dict(BASELINE, calibration="mse-act", offsets=True)
    yield dict(BASELINE, scales="free", calibration="mse-act", offsets=True)
    best = dict(BASELINE, scales="free", calibration="mse-act", offsets=True)
    yield dict(BASELINE, equalization=True)
    yield dict(best, equalization=True)
    yield dict(best, adaround=ADAROUND_ITERATIONS)
    yield dict(best, equalization=True, adaround=ADAROUND_ITERATIONS)
    yield dict(BASELINE, adaround=ADAROUND_ITERATIONS)


def label(c: dict) -> str:
    return f"scales {c['scales']}, calibration {c['calibration']}, " \
           f"bias correction {'on' if c['bias_correction'] else 'off'}, " \
           f"offsets {'on' if c.get('offsets') else 'off'}, " \
           f"CLE {'on' if c.get('equalization') else 'off'}, AdaRound {c.get('adaround', 0)}"


class Bench:
    """Shared float program, statistics and bias shifts of one model."""

    def __init__(self, model, calibration_faces, evaluation_faces, weight_bits=8, log=print):
        self.model = model.eval()
        self.ops, self.params, self.roles = float_program(self.model)
        self.shapes = tensor_shapes(self.ops, self.params)
        self.cal, self.ev, self.weight_bits = calibration_faces, evaluation_faces, weight_bits
        self.log = log
        self._stats = {}
        self.float_emb = _float_embeddings(self.model, evaluation_faces)

    def stats(self, equalization: bool):
        """``(params, statistics)`` without or with cross-layer equalisation (computed once)."""
        if equalization not in self._stats:
            params = self.params
            if equalization:
                self.log("  cross-layer equalisation ...")
                params, _ = equalize(self.ops, self.params, self.shapes, self.cal)
            self.log("  calibration statistics ...")
            self._stats[equalization] = (params, collect_statistics(self.ops, params, self.cal))
        return self._stats[equalization]

    def artifact(self, c: dict, act_bits, wide, act_form="lut"):
        params, stats = self.stats(bool(c.get("equalization")))
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            fmts = choose_formats(self.ops, self.roles, stats, act_bits, wide,
                                  c["calibration"], c["scales"], act_form,
                                  offsets=c["offsets"])
        seconds = None
        if c.get("adaround"):
            t0 = time.perf_counter()
            params, _ = fit_rounding(self.ops, params, fmts, self.cal, self.weight_bits,
                                     iterations=c["adaround"])
            seconds = time.perf_counter() - t0
        if c["bias_correction"]:
            shift = weight_bias_shift(self.ops, params, self.cal, self.weight_bits)
            params = {k: dict(v, bias=v["bias"] - shift[k]) if k in shift else v
                      for k, v in params.items()}
        meta = {"variant": self.model.spec.name, "act_bits": act_bits, "wide_roles": list(wide),
                **c}
        art = quantize_program(self.ops, params, self.roles, fmts, self.shapes,
                               self.weight_bits, act_form, meta=meta)
        return art, [str(w.message) for w in caught], seconds

    def measure(self, c: dict, act_bits, wide) -> dict:
        art, warned, seconds = self.artifact(c, act_bits, wide)
        cos = _cos_rows(GoldenModel(art).embed(self.ev, normalize=False), self.float_emb)
        return {"cosine_mean": float(cos.mean()), "cosine_min": float(cos.min()),
                "warnings": warned, "adaround_seconds": seconds}


def run(bench: Bench, precision: str, path: Path, weights: str, log=print) -> list:
    """Measure every combination at ``precision`` not yet in ``path`` (JSON, the same weights);
    merge each row into it as soon as it is measured."""
    act_bits, wide = PRECISIONS[precision]
    old = json.loads(path.read_text())["rows"] if path.exists() else []
    rows = []
    for c in combinations():
        if any(r["weights"] == weights and all(r.get(k, False) == v for k, v in
                                               dict(c, precision=precision).items())
               for r in old):
            continue
        t0 = time.perf_counter()
        r = bench.measure(c, act_bits, wide)
        row = {"variant": bench.model.spec.name, "weights": weights, "precision": precision,
               "act_bits": act_bits, "wide_roles": list(wide), **c, **r,
               "evaluation_faces": int(len(bench.ev)), "calibration_faces": int(len(bench.cal)),
               "weight_bits": bench.weight_bits}
        rows.append(row)
        merge(path, row)
        log(f"  {precision:9} {label(c):60} {r['cosine_mean']:.5f} / {r['cosine_min']:.5f} "
            f"({time.perf_counter() - t0:.0f} s)")
    return rows


def merge(path: Path, row: dict):
    """Replace the row of the same precision and combination, keep the others; the file is
    replaced whole (written to a temporary name, then renamed)."""
    rep = json.loads(path.read_text()) if path.exists() else {"baseline": BASELINE, "rows": []}
    rep["rows"] = [r for r in rep["rows"] if any(r.get(k, False) != row[k] for k in _KEY)] + [row]
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(rep, indent=1) + "\n")
    tmp.replace(path)


def markdown(rep: dict) -> str:
    rows = rep["rows"]
    r0 = rows[0]
    lines = [f"# Quantizer techniques: {r0['variant']}", "",
             f"Weights `{r0['weights']}`, {r0['weight_bits']}-bit weights, calibration on "
             f"{r0['calibration_faces']} faces, embedding cosine integer vs float on "
             f"{r0['evaluation_faces']} evaluation faces (`python -m quant.techniques`). "
             "Baseline: " + label(BASELINE) + " (the quantizer before these techniques).", ""]
    for pname in PRECISIONS:
        prows = [r for r in rows if r["precision"] == pname]
        if not prows:
            continue
        base = next((r for r in prows if all(r.get(k, False) == v for k, v in BASELINE.items())),
                    None)
        lines += [f"## {pname} precision (16-bit roles: {', '.join(prows[0]['wide_roles'])})",
                  "", "| scales | calibration | bias correction | offsets | CLE | AdaRound "
                  "iterations | cosine mean | cosine min | mean vs baseline |",
                  "|---|---|---|---|---|---|---|---|---|"]
        for r in sorted(prows, key=lambda r: r["cosine_mean"]):
            delta = "" if base is None else f"{r['cosine_mean'] - base['cosine_mean']:+.5f}"
            lines.append(f"| {r['scales']} | {r['calibration']} | "
                         f"{'on' if r['bias_correction'] else 'off'} | "
                         f"{'on' if r.get('offsets') else 'off'} | "
                         f"{'on' if r.get('equalization') else 'off'} | {r.get('adaround', 0)} | "
                         f"{r['cosine_mean']:.5f} | "
                         f"{r['cosine_min']:.5f} | {delta} |")
        lines.append("")
    return "\n".join(lines)


def plot_compare(before: dict, after: dict, path: Path):
    """Per-tensor SQNR of two ``python -m quant`` reports of the same variant."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(14, 5))
    for name, rep in (("before", before), ("after", after)):
        q, e = rep["quantizer"], rep["embedding"]
        ax.plot([min(r["sqnr_db"], 99) for r in rep["layers"]], lw=0.8,
                label=f"{name}: scales {q.get('scales', 'pow2')}, calibration "
                      f"{q.get('calibration_method', 'mse')}, offsets "
                      f"{'on' if q.get('offsets') else 'off'}, CLE "
                      f"{'on' if q.get('equalization') else 'off'}, AdaRound "
                      f"{q.get('adaround_iterations', 0)}; embedding cosine "
                      f"{e['cosine_mean']:.5f} / {e['cosine_min']:.5f}")
    rows = after["layers"]
    ticks = [i for i, r in enumerate(rows) if r["role"] in ("residual", "embedding")]
    ax.set_xticks(ticks)
    ax.set_xticklabels([rows[i]["tensor"] for i in ticks], rotation=90, fontsize=7)
    ax.set_ylabel("SQNR int vs float (dB)")
    ax.set_title(f"{after['variant']}: per-tensor SQNR before and after (evaluation faces)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv=None):
    ap = argparse.ArgumentParser(prog="python -m quant.techniques", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--variant", default="seesaw_shuffle", choices=list(VARIANTS))
    ap.add_argument("--weights", type=Path, help="float checkpoint (default: models/VARIANT.pt)")
    ap.add_argument("--precision", choices=[*PRECISIONS, "all"], default="all")
    ap.add_argument("--out", type=Path, default=Path("reports"))
    ap.add_argument("--name", default="quant_techniques", help="file stem (default: %(default)s)")
    ap.add_argument("--table", action="store_true", help="only rewrite STEM.md from STEM.json")
    ap.add_argument("--compare", nargs=2, type=Path, metavar=("BEFORE", "AFTER"),
                    help="only plot the per-tensor SQNR of two python -m quant report.json")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / f"{args.name}.json"
    if args.compare:
        before, after = (json.loads(p.read_text()) for p in args.compare)
        plot_compare(before, after, args.out / f"{args.name}_per_layer.png")
        print(f"wrote {args.out / args.name}_per_layer.png")
        return 0
    if not args.table:
        torch.set_num_threads(args.threads)
        wpath = Path(args.weights or weights_path(args.variant)).resolve()
        wpath = wpath.relative_to(Path.cwd()) if wpath.is_relative_to(Path.cwd()) else wpath
        bench = Bench(load_reference(args.variant, wpath), face_set.load("calibration"),
                      face_set.load("evaluation"))
        for p in (PRECISIONS if args.precision == "all" else [args.precision]):
            run(bench, p, path, str(wpath))
    rep = json.loads(path.read_text())
    (args.out / f"{args.name}.md").write_text(markdown(rep))
    print(markdown(rep))
    print(f"wrote {path} and {args.out / args.name}.md")
    return 0


if __name__ == "__main__":
    sys.exit(main())
