"""Measure each quantizer technique alone and in combination.

    python -m quant.techniques [--variant seesaw_shuffle] [--weights PATH] [--out reports]

For both precisions of the quantizer issue (the default: 16-bit swish outputs and embedding;
all activations at 8 bits with a 16-bit embedding) it quantizes the model with every
combination of

* ``scales``: ``pow2`` (power-of-two formats) or ``free`` (a scale mantissa per tensor group,
  absorbed by the requantization multipliers and the activation tables);
* ``calibration``: ``max`` or ``mse`` (format search per tensor);
* ``bias correction``: off or on;

and measures the embedding cosine against the float model on the evaluation faces (mean, min).
The calibration statistics and the bias shifts are collected once and shared by every
combination, exactly as :func:`quant.quantize.quantize_model` computes them. It writes
``quant_techniques.json``, ``quant_techniques.md`` and ``quant_techniques_per_layer.png`` (the
per-tensor SQNR of the baseline and of the default at the default precision).
"""
import argparse
import itertools
import json
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import torch

from . import faces as face_set
from .fidelity import _cos_rows, _float_embeddings, layer_errors
from .golden import GoldenModel
from .quantize import (CALIBRATIONS, DEFAULT_WIDE, SCALES, choose_formats, collect_statistics,
                       float_program, quantize_program, tensor_shapes, weight_bias_shift)
from .reference_model import load_reference, weights_path
from .zoo import VARIANTS

# The two precisions of the quantizer issue: {name: (act_bits, wide roles)}.
PRECISIONS = {"default": (8, DEFAULT_WIDE), "all-8-bit": (8, ("embedding",))}
# The baseline every technique is measured against (the quantizer before these techniques).
BASELINE = {"scales": "pow2", "calibration": "mse", "bias_correction": False}


def combinations():
    for scales, cal, bc in itertools.product(SCALES, CALIBRATIONS, (False, True)):
        yield {"scales": scales, "calibration": cal, "bias_correction": bc}


def label(c: dict) -> str:
    return f"scales {c['scales']}, calibration {c['calibration']}, " \
           f"bias correction {'on' if c['bias_correction'] else 'off'}"


class Bench:
    """Shared float program, statistics and bias shifts of one model."""

    def __init__(self, model, calibration_faces, evaluation_faces, weight_bits=8, log=print):
        self.model = model.eval()
        self.ops, self.params, self.roles = float_program(self.model)
        self.shapes = tensor_shapes(self.ops, self.params)
        self.cal, self.ev, self.weight_bits = calibration_faces, evaluation_faces, weight_bits
        log("  calibration statistics ...")
        self.stats = collect_statistics(self.ops, self.params, calibration_faces)
        log("  bias shifts ...")
        shift = weight_bias_shift(self.ops, self.params, calibration_faces, weight_bits)
        self.corrected = {k: dict(v, bias=v["bias"] - shift[k]) if k in shift else v
                          for k, v in self.params.items()}
        self.float_emb = _float_embeddings(self.model, evaluation_faces)

    def artifact(self, c: dict, act_bits, wide, act_form="lut"):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            fmts = choose_formats(self.ops, self.roles, self.stats, act_bits, wide,
                                  c["calibration"], c["scales"], act_form)
        params = self.corrected if c["bias_correction"] else self.params
        meta = {"variant": self.model.spec.name, "act_bits": act_bits, "wide_roles": list(wide),
                **c}
        art = quantize_program(self.ops, params, self.roles, fmts, self.shapes,
                               self.weight_bits, act_form, meta=meta)
        return art, [str(w.message) for w in caught]

    def measure(self, c: dict, act_bits, wide) -> dict:
        art, warned = self.artifact(c, act_bits, wide)
        cos = _cos_rows(GoldenModel(art).embed(self.ev, normalize=False), self.float_emb)
        return {"cosine_mean": float(cos.mean()), "cosine_min": float(cos.min()),
                "warnings": warned}


def run(bench: Bench, log=print) -> dict:
    rows = []
    for pname, (act_bits, wide) in PRECISIONS.items():
        for c in combinations():
            t0 = time.perf_counter()
            r = bench.measure(c, act_bits, wide)
            rows.append({"precision": pname, "act_bits": act_bits, "wide_roles": list(wide),
                         **c, **r})
            log(f"  {pname:9} {label(c):60} {r['cosine_mean']:.5f} / {r['cosine_min']:.5f} "
                f"({time.perf_counter() - t0:.0f} s)")
    return {"variant": bench.model.spec.name, "evaluation_faces": int(len(bench.ev)),
            "calibration_faces": int(len(bench.cal)), "weight_bits": bench.weight_bits,
            "baseline": BASELINE, "rows": rows}


def markdown(rep: dict, weights: str) -> str:
    lines = [f"# Quantizer techniques: {rep['variant']}", "",
             f"Weights `{weights}`, {rep['weight_bits']}-bit weights, calibration on "
             f"{rep['calibration_faces']} faces, embedding cosine integer vs float on "
             f"{rep['evaluation_faces']} evaluation faces (`python -m quant.techniques`). "
             "Baseline: " + label(rep["baseline"]) + " (the quantizer before these techniques).",
             ""]
    for pname in PRECISIONS:
        rows = [r for r in rep["rows"] if r["precision"] == pname]
        base = next(r for r in rows if all(r[k] == v for k, v in rep["baseline"].items()))
        lines += [f"## {pname} precision (16-bit roles: {', '.join(rows[0]['wide_roles'])})", "",
                  "| scales | calibration | bias correction | cosine mean | cosine min | "
                  "mean vs baseline |", "|---|---|---|---|---|---|"]
        for r in sorted(rows, key=lambda r: r["cosine_mean"]):
            lines.append(f"| {r['scales']} | {r['calibration']} | "
                         f"{'on' if r['bias_correction'] else 'off'} | {r['cosine_mean']:.5f} | "
                         f"{r['cosine_min']:.5f} | {r['cosine_mean'] - base['cosine_mean']:+.5f} |")
        lines.append("")
    return "\n".join(lines)


def plot(bench: Bench, default: dict, path: Path):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    act_bits, wide = PRECISIONS["default"]
    curves = {}
    for name, c in (("baseline: " + label(BASELINE), BASELINE), ("default: " + label(default),
                                                                   default)):
        art, _ = bench.artifact(c, act_bits, wide)
        curves[name] = layer_errors(GoldenModel(art), bench.ops, bench.params, bench.ev)
    fig, ax = plt.subplots(figsize=(14, 5))
    for name, rows in curves.items():
        ax.plot([min(r["sqnr_db"], 99) for r in rows], lw=0.8, label=name)
    rows = next(iter(curves.values()))
    ticks = [i for i, r in enumerate(rows) if r["role"] in ("residual", "embedding")]
    ax.set_xticks(ticks)
    ax.set_xticklabels([rows[i]["tensor"] for i in ticks], rotation=90, fontsize=7)
    ax.set_ylabel("SQNR int vs float (dB)")
    ax.set_title(f"{bench.model.spec.name}, default precision: per-tensor SQNR before and after")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv=None):
    ap = argparse.ArgumentParser(prog="python -m quant.techniques", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--variant", default="seesaw_shuffle", choices=list(VARIANTS))
    ap.add_argument("--weights", type=Path, help="float checkpoint (default: models/VARIANT.pt)")
    ap.add_argument("--out", type=Path, default=Path("reports"))
    ap.add_argument("--name", default=None,
                    help="file stem (default: quant_techniques, or quant_techniques_VARIANT)")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    wpath = args.weights or weights_path(args.variant)
    model = load_reference(args.variant, wpath)
    bench = Bench(model, face_set.load("calibration"), face_set.load("evaluation"))
    rep = run(bench)
    rep["weights"] = str(wpath)
    from .quantize import quantize_model
    import inspect
    sig = inspect.signature(quantize_model).parameters
    default = {"scales": sig["scales"].default, "calibration": sig["method"].default,
               "bias_correction": sig["bias_correction"].default}
    rep["default"] = default
    stem = args.name or "quant_techniques"
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / f"{stem}.json").write_text(json.dumps(rep, indent=1) + "\n")
    (args.out / f"{stem}.md").write_text(markdown(rep, str(wpath)))
    plot(bench, default, args.out / f"{stem}_per_layer.png")
    print(markdown(rep, str(wpath)))
    print(f"wrote {args.out / stem}.json, .md, _per_layer.png")
    return 0


if __name__ == "__main__":
    sys.exit(main())
