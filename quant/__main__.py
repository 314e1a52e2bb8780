"""Quantize a zoo model into an integer artifact and measure its fidelity.

    python -m quant --variant seesaw_shuffle [--weights PATH] [--act lut|cordic] [--bits 8]
                    [--scales free|pow2] [--calibration mse-act|mse|max] [--offsets on|off]
                    [--equalization off|on] [--adaround ITERATIONS]
                    [--bias-correction off|on] [--no-check] [--out build/quant/seesaw_shuffle]

Steps: [1/5] load the float model (shipped weights models/VARIANT.pt by default), [2/5]
calibrate on the shipped calibration faces, [3/5] quantize and write the artifact
(manifest.json + model.npz), [4/5] measure fidelity on the evaluation faces, [5/5] write
report.json, report.md and per_layer.png, and print the table.

Exit status: 0 when every acceptance bar is met (fidelity only: embedding cosine for the
artifact's precision, decision agreement, at least the torch.ao peer; the golden model's speed is
reported, never judged), 1 on FAIL unless ``--no-check`` is given.
"""
import argparse
import sys
import time
import warnings
from pathlib import Path

import torch

from . import cli, files
from . import faces as face_set
from .artifact import save
from .fidelity import evaluate, markdown, write
from .quantize import (ADAROUND_ITERATIONS, CALIBRATIONS, DEFAULT_WIDE, EQUALIZATION, ROLES,
                       SCALES, QuantizeWarning, float_program, quantize_model)
from .reference_model import load_reference, weights_path


def _wide_roles(text):
    """--wide: comma-separated roles, 'none' or '' for none; unknown roles are refused."""
    if text in ("", "none"):
        return ()
    roles = tuple(w.strip() for w in text.split(","))
    unknown = [r for r in roles if r not in ROLES]
    if unknown:
        raise argparse.ArgumentTypeError(f"unknown role(s) {', '.join(map(repr, unknown))}; "
                                         f"known: {', '.join(ROLES)}")
    return roles


def main(argv=None):
    return cli.run(_main, argv, prog="python -m quant")


def _main(argv):
    ap = cli.ArgumentParser(prog="python -m quant", description=__doc__,
                            formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--variant", default="seesaw_shuffle", type=cli.variant)
    ap.add_argument("--weights", type=Path, help="float checkpoint (default: models/VARIANT.pt)")
    ap.add_argument("--act", choices=("lut", "cordic"), default="lut",
                    help="swish/sigmoid implementation (default: %(default)s)")
    ap.add_argument("--bits", type=cli.int_range(2, 16, "weight bits"), default=8,
                    help="weight bits, 2..16 (default: %(default)s)")
    ap.add_argument("--act-bits", type=cli.int_range(2, 16, "activation bits"), default=8,
                    help="activation bits of tensors not widened, 2..16 (default: %(default)s)")
    ap.add_argument("--wide", type=_wide_roles, default=",".join(DEFAULT_WIDE),
                    help=f"comma-separated tensor roles held at 16 bits (default: %(default)s; "
                         f"roles: {', '.join(ROLES)}; 'none' for none)")
    ap.add_argument("--calibration", choices=CALIBRATIONS, default="mse-act",
                    help="activation format search; mse-act judges an activation's input after "
                         "the activation (default: %(default)s)")
    ap.add_argument("--scales", choices=SCALES, default="free",
                    help="tensor scales: powers of two, or free mantissas absorbed by the "
                         "requantization multipliers and activation tables (default: "
                         "%(default)s; the CORDIC form keeps its activations power-of-two)")
    ap.add_argument("--bias-correction", choices=("on", "off"), default="off",
                    help="compensate the mean output shift of weight rounding (default: "
                         "%(default)s)")
    ap.add_argument("--cordic-iterations", type=cli.int_range(4, 37, "CORDIC iterations"),
                    default=16, help="4..cordic-width - 3 (default: %(default)s)")
    ap.add_argument("--cordic-width", type=cli.int_range(12, 40, "CORDIC width"), default=24,
                    help="12..40 (default: %(default)s)")
    ap.add_argument("--calibration-faces", type=cli.count, default=None,
                    help="use only the first N calibration faces (quick runs)")
    ap.add_argument("--eval-faces", type=cli.count, default=None,
                    help="use only the first N evaluation faces (quick runs)")
    ap.add_argument("--no-peer", action="store_true", help="skip the torch.ao peer")
    ap.add_argument("--no-pairs", action="store_true", help="skip the pair decisions")
    ap.add_argument("--offsets", choices=("on", "off"), default="on",
                    help="activation inputs (LUT form) get an offset chosen after the "
                         "activation (default: %(default)s)")
    ap.add_argument("--equalization", choices=("on", "off"),
                    default="on" if EQUALIZATION else "off",
                    help="cross-layer equalisation of the pairs where it is exact (SE fc1/fc2, "
                         "GDConv/linear) (default: %(default)s)")
    ap.add_argument("--adaround", type=cli.int_range(0, 100000, "AdaRound iterations"),
                    default=ADAROUND_ITERATIONS, metavar="ITERATIONS",
                    help="adaptive rounding of the weights, Adam iterations per layer on the "
                         "calibration faces; 0 rounds to nearest (default: %(default)s)")
    ap.add_argument("--no-check", action="store_true",
                    help="exit 0 even when an acceptance bar is missed (the report says FAIL)")
    ap.add_argument("--threads", type=cli.count, default=2)
    ap.add_argument("--out", type=Path, help="default: build/quant/VARIANT")
    args = ap.parse_args(argv)
    if args.cordic_iterations > args.cordic_width - 3:
        ap.error(f"argument --cordic-iterations: must be 4..{args.cordic_width - 3} "
                 f"(--cordic-width - 3), not {args.cordic_iterations}")
    wide = args.wide
    out = args.out or Path("build/quant") / args.variant
    if out.exists() and not out.is_dir():
        raise cli.UserError(f"--out {out}", "exists and is not a folder")
    wpath = args.weights or weights_path(args.variant)
    if not Path(wpath).is_file():
        raise cli.UserError(f"--weights {wpath}" if args.weights else str(wpath),
                            "no such file" + ("" if args.weights else
                            f" (train it with `python -m quant.reference_model train "
                            f"--variant {args.variant}` or pass --weights)"))
    torch.set_num_threads(args.threads)
    t0 = time.perf_counter()

    def step(i, text):
        print(f"[{i}/5] {text} ({time.perf_counter() - t0:.0f} s)", flush=True)

    step(1, f"load {args.variant} from {wpath}")
    model = load_reference(args.variant, wpath)
    cal = face_set.load("calibration")[:args.calibration_faces]
    ev = face_set.load("evaluation")[:args.eval_faces]

    step(2, f"calibrate on {len(cal)} faces ({args.calibration})")
    meta = {"source": {"weights": str(wpath), "sha256": files.sha256(wpath)},
            "variant": args.variant}
    with warnings.catch_warnings():     # printed below, one line each
        warnings.simplefilter("ignore", QuantizeWarning)
        art = quantize_model(model, cal, weight_bits=args.bits, act_bits=args.act_bits,
                             act_form=args.act, wide=wide, method=args.calibration,
                             cordic_iterations=args.cordic_iterations,
                             cordic_width=args.cordic_width, meta=meta, scales=args.scales,
                             bias_correction=args.bias_correction == "on",
                             offsets=args.offsets == "on",
                             equalization=args.equalization == "on", adaround=args.adaround,
                             log=lambda s: print(f"  {s}", flush=True),
                             progress=lambda d, n: print(f"      {d}/{n} faces", flush=True))
    for note in art.meta.get("format_clamps", []):
        print(f"      warning: {note}", flush=True)
    # Every product is written into a staging folder beside `out` and moved in when all of
    # them are complete: a failed run leaves the previous good artifact and report, or none.
    with files.staged_dir(out) as stage:
        step(3, f"write artifact to {out}")
        save(art, stage)

        step(4, f"fidelity on {len(ev)} evaluation faces")
        ops, params, _ = float_program(model)
        rep = evaluate(art, model, ops, params, cal, ev, peer=not args.no_peer,
                       pairs=not args.no_pairs,
                       log=lambda s: print(f"    {s.strip()}", flush=True))
        step(5, "write report")
        written = write(rep, stage)
    print(markdown(rep))
    for f in written.values():
        print(f"wrote {out / Path(f).name}")
    print(f"wrote {out / 'manifest.json'} and {out / 'model.npz'}")
    ok = all(rep["accepted"].values())
    print(f"acceptance: {'PASS' if ok else 'FAIL'} "
          f"({', '.join(k for k, v in rep['accepted'].items() if not v) or 'all met'}; "
          f"fidelity only, speed is reported)")
    return 0 if ok or args.no_check else 1


if __name__ == "__main__":
    sys.exit(main())
