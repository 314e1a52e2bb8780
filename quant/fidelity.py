"""Fidelity report of a quantized artifact against its float model.

Measured on the shipped evaluation faces (never used for calibration):

* per named tensor: SQNR (dB) and mean per-face cosine of the integer tensor (``raw * 2**-f``)
  against the same tensor of the float layer program (:func:`quant.quantize.run_float`, which
  computes what the zoo model computes with BatchNorm folded);
* final embedding: cosine of integer vs float (mean, min over faces);
* decisions: same/different on every pair of :func:`quant.verification.shipped_pairs`, at the
  float model's equal-error threshold, float vs integer, and their agreement;
* the torch.ao int8 peer's embedding cosine vs float on the same faces (:mod:`quant.peer`);
* golden-model throughput (frames/s, batched), reported and never judged (a loaded machine
  must not fail a correct artifact), and every tensor's format.

Acceptance judges fidelity only (:func:`thresholds`): the embedding cosine bars of the
artifact's precision, decision agreement, and being at least as close as the torch.ao peer.

Writes ``report.json``, ``report.md`` and ``per_layer.png`` into the artifact folder.
"""
import json
import math
import platform
import time
from pathlib import Path

import numpy as np
import torch

from . import files
from .golden import GoldenModel
from .quantize import run_float
from .zoo import preprocess

# Acceptance thresholds of the quantizer issue, by precision: the default (16-bit swish outputs)
# and every narrower one (all activations at 8 bits, embedding at 16).
ACCEPT = {"cosine_mean": 0.999, "cosine_min": 0.995, "decision_agreement": 0.999}
ACCEPT_8BIT = {"cosine_mean": 0.998, "cosine_min": 0.99, "decision_agreement": 0.999}


def thresholds(meta: dict) -> dict:
    """The bars for an artifact's precision: :data:`ACCEPT` when the swish outputs (role
    ``act``) are 16-bit, :data:`ACCEPT_8BIT` otherwise."""
    wide = "act" in meta.get("wide_roles", ()) or meta.get("act_bits", 8) >= 16
    return dict(ACCEPT if wide else ACCEPT_8BIT)


def fmt_label(fmt) -> str:
    """The fxpmath dtype, with the scale mantissa and offset when not 1 and 0
    (``fxp-s8/5*1.40625+32``: value ``(q + 32) * 1.40625 * 2**-5``)."""
    s = fmt.fxp_dtype if fmt.scale == 1.0 else f"{fmt.fxp_dtype}*{fmt.scale:g}"
    return s if not fmt.offset else f"{s}{fmt.offset:+d}"


def _cos_rows(a, b):
    a = a.reshape(len(a), -1)
    b = b.reshape(len(b), -1)
    na, nb = np.linalg.norm(a, axis=1), np.linalg.norm(b, axis=1)
    return np.sum(a * b, axis=1) / np.maximum(na * nb, 1e-300)


def layer_errors(golden: GoldenModel, ops, params, faces, batch=8) -> list:
    """Per-tensor SQNR and cosine, integer vs float, in program order."""
    art = golden.artifact
    names = [op["output"] for op in golden.program if op["op"] != "input"]
    sig = dict.fromkeys(names, 0.0)
    noise = dict.fromkeys(names, 0.0)
    cos_sum = dict.fromkeys(names, 0.0)
    cos_min = dict.fromkeys(names, 1.0)
    sat = dict.fromkeys(names, 0)
    count = dict.fromkeys(names, 0)
    for i in range(0, len(faces), batch):
        chunk = faces[i:i + batch]
        fl = run_float(ops, params, chunk, keep=True)
        gi = golden.run(chunk, keep=True).tensors
        for n in names:
            fmt = art.fmt(n)
            q = gi[n]
            f = fl[n].numpy()
            v = fmt.value(q)
            sig[n] += float(np.sum(f * f))
            noise[n] += float(np.sum((v - f) ** 2))
            c = _cos_rows(v, f)
            cos_sum[n] += float(c.sum())
            cos_min[n] = min(cos_min[n], float(c.min()))
            sat[n] += int(np.count_nonzero((q == fmt.lo) | (q == fmt.hi)))
            count[n] += q.size
    rows = []
    for n in names:
        t = art.tensors[n]
        rows.append({
            "tensor": n, "role": t["role"], "shape": t["shape"], "fxp": fmt_label(t["fmt"]),
            "sqnr_db": 10 * math.log10(sig[n] / noise[n]) if noise[n] > 0 else float("inf"),
            "cosine_mean": cos_sum[n] / len(faces), "cosine_min": cos_min[n],
            "saturated_fraction": sat[n] / max(count[n], 1)})
    return rows


def _float_embeddings(model, faces, batch=32):
    with torch.no_grad():
        return np.concatenate([model(preprocess(faces[i:i + batch]), normalize=False).numpy()
                               for i in range(0, len(faces), batch)]).astype(np.float64)


def _normalize(e):
    return e / np.maximum(np.linalg.norm(e, axis=1, keepdims=True), 1e-300)


def pair_scores(golden, model, faces, seed=0):
    """``(float scores, integer scores, issame, float EER threshold)`` of all evaluation pairs
    (:func:`quant.verification.all_pairs`: every face against a perturbed copy of every face);
    ``golden=None`` leaves the integer scores out (``None``)."""
    from . import verification
    copies, issame = verification.all_pairs(faces, seed=seed)
    sf = (_normalize(_float_embeddings(model, faces))
          @ _normalize(_float_embeddings(model, copies)).T).ravel()
    si = None if golden is None else (golden.embed(faces) @ golden.embed(copies).T).ravel()
    issame = issame.ravel()
    return sf, si, issame, verification.eer_threshold(sf, issame)


def decisions(golden, model, faces, seed=0) -> dict:
    """Same/different decisions on all evaluation pairs (:func:`pair_scores`), float vs
    integer, at the float model's equal-error threshold. ``margin`` is the float model's own
    gap between its lowest "same" and highest "different" score: pairs inside it flip under
    any perturbation."""
    from . import verification
    sf, si, issame, thr = pair_scores(golden, model, faces, seed)
    df, di = sf > thr, si > thr
    return {"pairs": int(len(issame)), "same_pairs": int(issame.sum()),
            "float_eer_threshold": float(thr),
            "float_margin": float(sf[issame].min() - sf[~issame].max()),
            "float_accuracy": float(np.mean(df == issame)),
            "integer_accuracy": float(np.mean(di == issame)),
            "agreement": float(np.mean(df == di)),
            "disagreeing_pairs": int(np.count_nonzero(df != di)),
            "float_eer": verification.equal_error(sf, issame)["eer"],
            "integer_eer": verification.equal_error(si, issame)["eer"]}


def peer_cosine(model, calibration_faces, faces, float_emb) -> dict:
    try:
        from . import peer
    except ImportError as e:
        return {"cosine_mean": None, "cosine_min": None,
                "note": f"quant.peer not available ({e})"}
    q = peer.torch_ao_embeddings(model, calibration_faces, faces)
    c = _cos_rows(q, _normalize(float_emb))
    return {"cosine_mean": float(c.mean()), "cosine_min": float(c.min()),
            "method": "torch.ao FX static int8, fbgemm (quant.peer)"}


def evaluate(artifact, model, ops, params, calibration_faces, faces, peer=True, pairs=True,
             fps_faces=None, log=print) -> dict:
    """The whole report as a dict (see module docstring)."""
    golden = GoldenModel(artifact)
    t0 = time.perf_counter()
    log("  per-layer errors ...")
    layers = layer_errors(golden, ops, params, faces)
    log("  embeddings ...")
    fe = _float_embeddings(model, faces)
    ie = golden.run(faces).embedding_value()
    cos = _cos_rows(ie, fe)
    emb = {"faces": int(len(faces)), "cosine_mean": float(cos.mean()),
           "cosine_min": float(cos.min()), "per_face": cos.tolist()}
    dec = None
    if pairs:
        log("  pair decisions ...")
        dec = decisions(golden, model, faces)
    pr = {"cosine_mean": None, "cosine_min": None, "note": "not run (--no-peer)"}
    if peer:
        log("  torch.ao peer ...")
        pr = peer_cosine(model, calibration_faces, faces, fe)
    log("  golden-model throughput ...")
    fps_faces = faces if fps_faces is None else fps_faces
    golden.run(fps_faces[:2])                       # warm-up (tables, allocator)
    fps = golden.frames_per_second(fps_faces, batch=32, repeats=2)
    bars = thresholds(artifact.meta)
    accept = {
        "cosine_mean": emb["cosine_mean"] >= bars["cosine_mean"],
        "cosine_min": emb["cosine_min"] >= bars["cosine_min"],
    }
    if dec is not None:
        accept["decision_agreement"] = dec["agreement"] >= bars["decision_agreement"]
    if pr["cosine_mean"] is not None:
        accept["at_least_peer"] = emb["cosine_mean"] >= pr["cosine_mean"] - 1e-12
    return {
        "variant": artifact.variant, "quantizer": {k: v for k, v in artifact.meta.items()},
        "embedding": emb, "decisions": dec, "peer": pr,
        "golden_fps": fps, "fps_frames": int(len(fps_faces)), "fps_batch": 32,
        "torch_threads": torch.get_num_threads(), "machine": platform.machine(),
        "acceptance_thresholds": bars, "accepted": accept,
        "layers": layers,
        "formats": {k: fmt_label(v["fmt"]) for k, v in artifact.tensors.items()},
        "seconds": time.perf_counter() - t0,
    }


def _num(x, spec):
    return "n/a" if x is None else format(x, spec)


def markdown(rep: dict) -> str:
    e, d, p = rep["embedding"], rep["decisions"], rep["peer"]
    q = rep["quantizer"]
    bars = rep["acceptance_thresholds"]
    src = q.get("source") or {}
    lines = [
        f"# Quantization fidelity: {rep['variant']}", "",
        f"Weights `{src.get('weights')}` (sha256 `{str(src.get('sha256'))[:16]}...`), "
        f"{q.get('weight_bits')}-bit weights, {q.get('act_bits')}-bit activations, "
        f"16-bit roles: {', '.join(q.get('wide_roles', [])) or 'none'}, activation form "
        f"`{q.get('activation_form')}`, calibration `{q.get('calibration_method')}` on "
        f"{q.get('calibration_faces')} faces, scales `{q.get('scales', 'pow2')}`, offsets "
        f"{'on' if q.get('offsets') else 'off'}, bias correction "
        f"{'on' if q.get('bias_correction') else 'off'}, cross-layer equalisation "
        f"{'on' if q.get('equalization') else 'off'}, AdaRound "
        f"{q.get('adaround_iterations', 0)} iterations.", "",
        "| measure | value | accept |", "|---|---|---|",
        f"| embedding cosine int vs float, mean ({e['faces']} faces) | {e['cosine_mean']:.5f} | "
        f">= {bars['cosine_mean']} |",
        f"| embedding cosine int vs float, min | {e['cosine_min']:.5f} | "
        f">= {bars['cosine_min']} |",
        f"| torch.ao peer cosine, mean / min | {_num(p['cosine_mean'], '.5f')} / "
        f"{_num(p['cosine_min'], '.5f')} | ours >= peer |",
    ]
    if d:
        lines += [
            f"| decision agreement float vs int ({d['pairs']} pairs, threshold "
            f"{d['float_eer_threshold']:.4f}, float margin {d['float_margin']:+.4f}) | {100 * d['agreement']:.2f} % "
            f"({d['disagreeing_pairs']} differ) | >= {100 * bars['decision_agreement']:.1f} % |",
            f"| pair accuracy float / int at that threshold | {100 * d['float_accuracy']:.2f} % /"
            f" {100 * d['integer_accuracy']:.2f} % | |",
        ]
    lines += [f"| golden model, frames/s (batch {rep['fps_batch']}, {rep['torch_threads']} "
              f"threads) | {rep['golden_fps']:.1f} | reported, not judged |", ""]
    if p.get("note"):
        lines += [f"Peer: {p['note']}", ""]
    lines += ["## Per tensor (evaluation faces, integer vs float program)", "",
              "| tensor | role | shape | format | SQNR dB | cosine mean | cosine min | saturated |",
              "|---|---|---|---|---|---|---|---|"]
    for r in rep["layers"]:
        lines.append(f"| {r['tensor']} | {r['role']} | {'x'.join(map(str, r['shape']))} | "
                     f"`{r['fxp']}` | {r['sqnr_db']:.1f} | {r['cosine_mean']:.5f} | "
                     f"{r['cosine_min']:.5f} | {100 * r['saturated_fraction']:.3f} % |")
    return "\n".join(lines) + "\n"


def plot(rep: dict, path: Path):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    rows = rep["layers"]
    x = np.arange(len(rows))
    colors = {"preact": "tab:orange", "act": "tab:blue", "linear": "tab:green",
              "residual": "tab:red", "se": "tab:purple", "gate": "tab:brown",
              "embedding": "black"}
    fig, (a1, a2) = plt.subplots(2, 1, figsize=(max(12, len(rows) * 0.09), 8), sharex=True)
    for role, col in colors.items():
        idx = [i for i, r in enumerate(rows) if r["role"] == role]
        if idx:
            a1.scatter(idx, [min(rows[i]["sqnr_db"], 99) for i in idx], s=10, c=col, label=role)
            a2.scatter(idx, [1 - rows[i]["cosine_mean"] for i in idx], s=10, c=col)
    a1.plot(x, [min(r["sqnr_db"], 99) for r in rows], c="grey", lw=0.5)
    a2.plot(x, [1 - r["cosine_mean"] for r in rows], c="grey", lw=0.5)
    a1.set_ylabel("SQNR int vs float (dB)")
    a2.set_ylabel("1 - cosine (mean over faces)")
    a2.set_yscale("log")
    a1.legend(ncol=7, fontsize=8)
    ticks = [i for i, r in enumerate(rows) if r["role"] in ("residual", "embedding")]
    a2.set_xticks(ticks)
    a2.set_xticklabels([rows[i]["tensor"] for i in ticks], rotation=90, fontsize=7)
    e = rep["embedding"]
    a1.set_title(f"{rep['variant']}: per-tensor error; embedding cosine mean "
                 f"{e['cosine_mean']:.5f}, min {e['cosine_min']:.5f}")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write(rep: dict, out) -> dict:
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    files.write_text(out / "report.json", json.dumps(rep, indent=1, default=float) + "\n")
    files.write_text(out / "report.md", markdown(rep))
    with files.atomic(out / "per_layer.png") as tmp:
        plot(rep, tmp)
    return {"json": out / "report.json", "md": out / "report.md", "png": out / "per_layer.png"}
