"""Parameters and multiply-accumulates of every zoo variant, beside the paper's figures.

MACs are counted like the paper: convolution and linear layers only (sigmoid, BatchNorm, adds
and pooling are not counted), for one 112x112 face, and only for layers that the forward pass
really runs (the DW variants carry unused ``mapping`` weights in residual blocks, as the
reference does; they count as parameters but not as MACs).

    python -m quant.counts [--json build/counts.json] [VARIANT ...]
"""
import argparse
import json
import sys
from pathlib import Path

import torch
from torch import nn

from . import cli, files
from .zoo import INPUT_SIZE, VARIANTS, build

# Measured on the public reference implementation (its published PyTorch code, counted the
# same way: conv and linear MACs of one 112 x 112 face).
REFERENCE = {
    "seesaw_shuffle": (1_370_176, 145.8e6),
    "seesaw_share": (1_370_176, 145.8e6),
    "mobilefacenet": (1_192_960, 221.2e6),
    "dw_seesaw_v1": (4_918_176, 526.5e6),
    "dw_seesaw_v2": (4_918_176, 526.5e6),
}


def count(model: nn.Module) -> dict:
    """``{"params": int, "macs": int, "macs_by_kind": {...}}`` for one forward pass."""
    by_kind = {}

    def kind(module):
        if isinstance(module, nn.Linear):
            return "linear"
        if module.groups == module.in_channels and module.in_channels > 1:
            return "depthwise"
        if module.in_channels == 3:
            return "stem"
        return "pointwise"

    def hook(module, inputs, output):
        if isinstance(module, nn.Linear):
            macs = module.in_features * module.out_features * output.shape[0]
        else:
            k = module.kernel_size[0] * module.kernel_size[1]
            macs = output.numel() * (module.in_channels // module.groups) * k
        by_kind[kind(module)] = by_kind.get(kind(module), 0) + macs

    handles = [m.register_forward_hook(hook) for m in model.modules()
               if isinstance(m, (nn.Conv2d, nn.Linear))]
    try:
        with torch.no_grad():
            model.eval()(torch.zeros(1, 3, INPUT_SIZE, INPUT_SIZE))
    finally:
        for h in handles:
            h.remove()
    return {"params": sum(p.numel() for p in model.parameters()),
            "macs": sum(by_kind.values()), "macs_by_kind": by_kind}


def report(names) -> list:
    rows = []
    for name in names:
        spec = VARIANTS[name]
        c = count(build(name))
        ref = REFERENCE.get(name)
        rows.append({
            "variant": name, **c,
            "reference_params": ref[0] if ref else None,
            "reference_macs_m": ref[1] / 1e6 if ref else None,
            "matches_reference": (ref is not None and c["params"] == ref[0]
                                  and round(c["macs"] / 1e5) == round(ref[1] / 1e5)),
            "paper_params": spec.paper_params, "paper_macs": spec.paper_macs,
            "description": spec.description,
        })
    return rows


def table(rows) -> str:
    lines = [f"{'variant':22} {'params':>11} {'MACs':>9} {'reference':>22} {'paper':>16}"]
    for r in rows:
        ref = (f"{r['reference_params']:,} {r['reference_macs_m']:.1f} M"
               if r["reference_params"] else "no reference code")
        mark = "ok" if r["matches_reference"] else ("--" if not r["reference_params"] else "DIFF")
        paper = f"{r['paper_params']}, {r['paper_macs']}" if r["paper_params"] else "-"
        lines.append(f"{r['variant']:22} {r['params']:>11,} {r['macs'] / 1e6:>7.1f} M "
                     f"{ref:>22} {paper:>16} {mark}")
    return "\n".join(lines)


def main(argv=None):
    return cli.run(_main, argv, prog="python -m quant.counts")


def _main(argv):
    ap = cli.ArgumentParser(prog="python -m quant.counts", description=__doc__,
                            formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("variants", nargs="*", metavar="VARIANT", type=cli.variant,
                    help=f"variants to count (default: all of {', '.join(VARIANTS)})")
    ap.add_argument("--json", type=Path, default=Path("build/counts.json"),
                    help="where to write the figures as JSON (default: %(default)s)")
    args = ap.parse_args(argv)
    rows = report(args.variants or list(VARIANTS))
    print(table(rows))
    files.write_text(args.json, json.dumps(rows, indent=2) + "\n")
    print(f"wrote {args.json}")
    return 0 if all(r["matches_reference"] or not r["reference_params"] for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
