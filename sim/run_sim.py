"""``make sim``: the whole engine on whole frames in Verilator, bit-exact against the golden model.

    python -m sim.run_sim [--variant seesaw_shuffle] [--weights models/seesaw_shuffle.pt]
                          [--images DIR|FILE.npy] [--faces 2] [--board ulx3s] [--waves]
                          [--idle P] [--stall P] [--mem-jitter N] [--mem-gaps P] [--seed S]

Steps: quantize (``python -m quant``) if ``build/quant/<variant>`` is missing; compile the
firmware image for the board's engine configuration; preload the memory model with it; run
the faces through the engine; compare the streamed embedding with
:class:`quant.golden.GoldenModel` (integer equality) and with the float model (cosine); dump
every stored tensor from the memory model and report the first one that differs, in program
order. Writes ``build/sim/report.json``; exits 1 if any frame is not bit-exact.

Stress (all off by default: the cycle figures are for an ideal memory and streams): random
idle cycles before face bytes (``--idle``), result back-pressure (``--stall``), a random extra
memory latency of up to N cycles per command (``--mem-jitter``) and memory ready gaps
(``--mem-gaps``); the frames must stay bit-exact. A stressed memory is its own Verilator build
(``build/sim/engine_<board>_stress``).
"""
import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent


def random_weights(variant, seed=0, out=None) -> Path:
    """A checkpoint of ``variant`` with **random** weights (PyTorch's default init, seeded) and
    BatchNorm statistics calibrated on the shipped calibration faces (a cumulative average
    over them in training mode), so every activation has a realistic spread. For exercising
    the hardware on variants that have no trained weights: the embedding means nothing."""
    import torch
    from quant import faces as facelib
    from quant.zoo import build, preprocess
    out = Path(out) if out else ROOT / "build" / "random_weights" / f"{variant}_seed{seed}.pt"
    if out.exists():
        return out
    torch.manual_seed(seed)
    model = build(variant)
    for mod in model.modules():
        if isinstance(mod, torch.nn.modules.batchnorm._BatchNorm):
            mod.reset_running_stats()
            mod.momentum = None          # cumulative average over the calibration batches
    cal = facelib.load("calibration")
    model.train()
    with torch.no_grad():
        for i in range(0, len(cal), 16):
            model(preprocess(cal[i:i + 16]))
    model.eval()
    out.parent.mkdir(parents=True, exist_ok=True)
    torch.save(model.state_dict(), out)
    return out


def _artifact(variant, weights, artifact_dir, random_seed=None, quick=False, act="lut"):
    """The artifact folder, quantized if missing; ``act``: the board's activation form (the
    CORDIC engine computes the quantizer's CORDIC, so it needs an artifact of its own)."""
    name = variant + (f"_random{random_seed}" if random_seed is not None else "") + \
        ("_cordic" if act == "cordic" else "")
    if random_seed is not None:
        weights = random_weights(variant, random_seed)
    folder = Path(artifact_dir) if artifact_dir else ROOT / "build" / "quant" / name
    if not (folder / "manifest.json").exists():
        cmd = [sys.executable, "-m", "quant", "--variant", variant, "--out", str(folder),
               "--act", act]
        if weights:
            cmd += ["--weights", str(weights)]
        if random_seed is not None or quick:   # the artifact is the same; skip most of the
            cmd += ["--no-peer", "--no-pairs", "--eval-faces", "4"]   # fidelity report
        print("quantizing:", " ".join(cmd), flush=True)
        subprocess.run(cmd, check=True, cwd=ROOT)
    return folder


def first_mismatch(compiled, artifact, dump, golden_tensors, frame):
    """First stored tensor (program order) whose dump differs from the golden one."""
    for op in artifact.program:
        t = op["output"]
        if not compiled.tensors[t]["stored"]:
            continue
        got = compiled.tensor(dump, t)
        want = golden_tensors[t][frame]
        if not np.array_equal(got, want):
            idx = tuple(int(i) for i in np.argwhere(got != want)[0])
            return {"layer": op["name"], "tensor": t, "index": list(idx),
                    "got": int(got[idx]), "expected": int(want[idx]),
                    "differing": int((got != want).sum())}
    return None


def main(argv=None):
    p = argparse.ArgumentParser(prog="python -m sim.run_sim", description=__doc__.split("\n")[0])
    p.add_argument("--variant", default="seesaw_shuffle")
    p.add_argument("--weights", default=None, help="float checkpoint (default: shipped "
                   "models/<variant>.pt)")
    p.add_argument("--artifact", default=None, help="use this quantized artifact folder")
    p.add_argument("--quick-quantize", action="store_true", help="if quantizing, skip the "
                   "peer, the pair decisions and most evaluation faces (same artifact, shorter "
                   "fidelity report; for tests)")
    p.add_argument("--random-weights", type=int, default=None, metavar="SEED",
                   help="no trained weights: random weights (seeded) with BatchNorm statistics "
                   "calibrated on the calibration faces (build/random_weights/); exercises the "
                   "hardware only, the embedding means nothing")
    p.add_argument("--images", default=None, help="folder of images or .npy (default: the "
                   "shipped evaluation faces)")
    p.add_argument("--faces", type=int, default=2, help="frames to simulate")
    p.add_argument("--board", default="ulx3s")
    p.add_argument("--waves", action="store_true", help="dump an FST trace (slow)")
    p.add_argument("--report", default=str(ROOT / "build" / "sim" / "report.json"))
    p.add_argument("--idle", type=float, default=0.0, metavar="P",
                   help="probability of an idle cycle before each face byte (default 0)")
    p.add_argument("--stall", type=float, default=0.0, metavar="P",
                   help="probability of a cycle with the result stream not ready (default 0)")
    p.add_argument("--mem-jitter", type=int, default=0, metavar="N",
                   help="random extra memory latency, 0..N cycles per command (default 0)")
    p.add_argument("--mem-gaps", type=float, default=0.0, metavar="P",
                   help="probability of a memory data cycle without ready/valid (default 0)")
    p.add_argument("--seed", type=int, default=1, help="seed of the memory model's "
                   "randomness (default 1)")
    a = p.parse_args(argv)
    import os
    if a.waves:
        os.environ["WAVES"] = "1"
    from firmware.compiler import compile_artifact
    from firmware.image import EngineConfig
    from hw.board.boards import get_board
    from hw.engine.cycles import estimate_cycles
    from quant import faces as facelib
    from quant.artifact import load
    from quant.golden import GoldenModel
    from sim.tb_engine import simulate

    board = get_board(a.board)
    folder = _artifact(a.variant, a.weights, a.artifact, a.random_weights, a.quick_quantize,
                       board.engine.activation)
    if a.random_weights is not None:
        a.weights = random_weights(a.variant, a.random_weights)
    art = load(folder)
    faces = facelib.load_images(a.images, a.faces) if a.images else \
        facelib.load("evaluation")[:a.faces]
    cfg = EngineConfig.from_board(board)
    comp = compile_artifact(art, cfg)
    est = estimate_cycles(comp)["total"]
    print(f"{a.variant} on {a.board}: {len(comp.descriptors)} descriptors, image "
          f"{comp.words.size} words; estimate {est} cycles/frame", flush=True)
    gold = GoldenModel(art).run(faces, keep=True)
    cos = [None] * len(faces)
    try:
        import torch
        from quant.zoo import build
        model = build(a.variant).eval()
        w = a.weights or ROOT / "models" / f"{a.variant}.pt"
        if Path(w).exists():
            from quant.checkpoint import load_checkpoint
            load_checkpoint(model, w)
            from quant.zoo import preprocess
            with torch.no_grad():
                ref = model(preprocess(faces)).double().numpy()
        else:
            ref = None
    except Exception as e:      # the float model is a report item, not a failure
        print(f"float model unavailable: {e}")
        ref = None
    t0 = time.perf_counter()
    stressed_memory = a.mem_jitter or a.mem_gaps
    name = f"engine_{a.board}".replace("-", "_") + ("_stress" if stressed_memory else "")
    res = simulate(comp, faces, name=name, depth=None, idle_prob=a.idle, stall_prob=a.stall,
                   mem_jitter=a.mem_jitter, mem_gap_prob=a.mem_gaps, seed=a.seed)
    outs = res["outputs"]
    exact = [bool(np.array_equal(outs[i], gold.embedding[i])) for i in range(len(faces))]
    if ref is not None:
        e = outs.astype(np.float64)
        cos = [float(e[i] @ ref[i] / (np.linalg.norm(e[i]) * np.linalg.norm(ref[i]) + 1e-30))
               for i in range(len(faces))]
    mismatch = None
    if res["dump"] is not None:
        mismatch = first_mismatch(comp, art, res["dump"], gold.tensors, len(faces) - 1)
    report = {"variant": a.variant, "board": a.board, "frames": len(faces),
              "weights": str(a.weights or ROOT / "models" / f"{a.variant}.pt"),
              "random_weights": a.random_weights is not None,
              "bit_exact": exact, "cosine_vs_float": cos, "cycles_per_frame": res["cycles"],
              "estimated_cycles_per_frame": est,
              "frames_per_second_at_clock": [cfg.clock_mhz * 1e6 / c for c in res["cycles"]],
              "stress": {"idle": a.idle, "stall": a.stall, "mem_jitter": a.mem_jitter,
                         "mem_gaps": a.mem_gaps, "seed": a.seed},
              "first_mismatch": mismatch, "sim_seconds_per_frame": res["seconds"],
              "sim_cpu_seconds_per_frame": res.get("cpu_seconds"),
              "build_seconds": res.get("build_seconds"),
              "load_average": list(os.getloadavg()),
              "total_seconds": time.perf_counter() - t0, "config": cfg.to_dict()}
    out = Path(a.report)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=1) + "\n")
    print(f"{'frame':>5} {'bit-exact':>9} {'cos vs float':>12} {'cycles':>10} {'estimate':>10} "
          f"{'fps@clk':>8} {'sim s':>7}")
    for i in range(len(faces)):
        c = cos[i]
        print(f"{i:5d} {str(exact[i]):>9} {('%.5f' % c) if c is not None else '-':>12} "
              f"{res['cycles'][i]:10d} {est:10d} {cfg.clock_mhz * 1e6 / res['cycles'][i]:8.2f} "
              f"{res['seconds'][i]:7.1f}")
    print(f"first mismatch: {mismatch}")
    print(f"wrote {out}")
    return 0 if all(exact) else 1


if __name__ == "__main__":
    sys.exit(main())
