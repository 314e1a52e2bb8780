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
import sys
import types
import time
from pathlib import Path

import numpy as np

from quant import cli, files

ROOT = Path(__file__).resolve().parent.parent


def random_weights(variant, seed=0, out=None) -> Path:
    """A checkpoint of ``variant`` with **random** weights (PyTorch's default init, seeded) and
    BatchNorm statistics calibrated on the shipped calibration faces (a cumulative average
    over them in training mode), so every activation has a realistic spread. For exercising
    the hardware on variants that have no trained weights: the embedding means nothing.
    Cached while the zoo's source, the calibration faces and torch are unchanged."""
    from hw.build.flow import Step, StepRunner, _dist_version, _file_hash, _source_hash
    out = Path(out) if out else ROOT / "build" / "random_weights" / f"{variant}_seed{seed}.pt"

    def make(ctx):
        import torch
        from quant import faces as facelib
        from quant.zoo import build, preprocess
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
        with files.atomic(out) as tmp:
            torch.save(model.state_dict(), tmp)
        return {"weights": str(out)}

    key = {"variant": variant, "seed": seed, "zoo": _source_hash("quant/zoo"),
           "faces": _file_hash(ROOT / "data" / "faces" / "calibration.npy"),
           "torch": _dist_version("torch")}
    step = Step(out.stem, make, key=lambda ctx: key, outputs=lambda ctx: [out],
                description="random weights, BatchNorm calibrated")
    ctx = types.SimpleNamespace(results={}, status={}, seconds={}, built_seconds={})
    StepRunner([step], out.parent / ".cache", log=lambda t: print(f"    {t}", flush=True)).run(ctx)
    return out


def _artifact(board, variant, weights, random_seed=None, quick=False, log=print):
    """The artifact folder, quantized when missing or stale: the quantize step of
    ``hw.build`` (same cache record, keyed by the hashes of the weights, the quantizer's source,
    the calibration faces and the options; a corrupt product is rebuilt). ``board``: its
    activation form chooses the artifact (a CORDIC engine computes the quantizer's CORDIC)."""
    from hw.build.flow import STEPS, BuildContext, StepRunner
    name = variant + (f"_random{random_seed}" if random_seed is not None else "") + \
        ("_cordic" if board.engine.activation == "cordic" else "")
    quick_args = ("--no-peer", "--no-pairs", "--eval-faces", "4") \
        if random_seed is not None or quick else ()   # the same artifact, a shorter report
    ctx = BuildContext(board=board, variant=variant, weights=weights,
                       out=ROOT / "build", quant_name=name, quant_args=quick_args)
    quantize = [s for s in STEPS if s.name == "quantize"]
    StepRunner(quantize, ctx.board_dir / ".cache", log=log).run(ctx)
    return ctx.quant_dir


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
    return cli.run(_main, argv, prog="python -m sim.run_sim")


def _main(argv):
    p = cli.ArgumentParser(prog="python -m sim.run_sim", description=__doc__.split("\n")[0])
    p.add_argument("--variant", default="seesaw_shuffle", type=cli.variant)
    p.add_argument("--weights", default=None, type=Path, help="float checkpoint (default: "
                   "shipped models/<variant>.pt)")
    p.add_argument("--artifact", default=None, type=Path,
                   help="use this quantized artifact folder")
    p.add_argument("--quick-quantize", action="store_true", help="if quantizing, skip the "
                   "peer, the pair decisions and most evaluation faces (same artifact, shorter "
                   "fidelity report; for tests)")
    p.add_argument("--random-weights", type=cli.non_negative, default=None, metavar="SEED",
                   help="no trained weights: random weights (seeded) with BatchNorm statistics "
                   "calibrated on the calibration faces (build/random_weights/); exercises the "
                   "hardware only, the embedding means nothing")
    p.add_argument("--images", default=None, type=Path, help="folder of photos (the largest "
                   "face of each detected and aligned; 112x112 crops pass unchanged) or .npy "
                   "of aligned faces (default: the shipped evaluation faces)")
    p.add_argument("--faces", type=cli.count, default=2, help="frames to simulate (>= 1)")
    p.add_argument("--board", default="ulx3s")
    p.add_argument("--boards-file", default=None, type=Path,
                   help="another boards.yaml (default: the repository's)")
    p.add_argument("--waves", action="store_true", help="dump an FST trace (slow)")
    p.add_argument("--report", default=ROOT / "build" / "sim" / "report.json", type=Path)
    p.add_argument("--idle", type=cli.probability, default=0.0, metavar="P",
                   help="probability of an idle cycle before each face byte (default 0)")
    p.add_argument("--stall", type=cli.probability, default=0.0, metavar="P",
                   help="probability of a cycle with the result stream not ready (default 0)")
    p.add_argument("--mem-jitter", type=cli.non_negative, default=0, metavar="N",
                   help="random extra memory latency, 0..N cycles per command (default 0)")
    p.add_argument("--mem-gaps", type=cli.probability, default=0.0, metavar="P",
                   help="probability of a memory data cycle without ready/valid (default 0)")
    p.add_argument("--seed", type=int, default=1, help="seed of the memory model's "
                   "randomness (default 1)")
    a = p.parse_args(argv)
    import os
    if a.waves:
        os.environ["WAVES"] = "1"
    from hw.board.boards import get_board
    from quant import faces as facelib
    t_start = time.perf_counter()

    def step(i, text):
        print(f"[{i}/6] {text} ({time.perf_counter() - t_start:.0f} s)", flush=True)

    # 1: every input is checked before anything is quantized, compiled or built.
    step(1, "check the inputs")
    board = get_board(a.board, a.boards_file)     # BoardError names the file, board, field
    if a.weights is not None and not a.weights.is_file():
        raise cli.UserError(f"--weights {a.weights}", "no such file")
    if a.weights is not None and a.random_weights is not None:
        raise cli.UserError("--weights", "cannot be combined with --random-weights")
    if a.report.is_dir():
        raise cli.UserError(f"--report {a.report}", "is a folder, not a file")
    if a.images is not None:
        if not a.images.exists():
            raise cli.UserError(f"--images {a.images}", "no such file or folder")
        try:
            faces = facelib.load_images(a.images, a.faces)
        except (ValueError, OSError) as e:      # the message names the file
            raise cli.UserError(cli.one_line(e)) from e
        source = str(a.images)
    else:
        faces = facelib.load("evaluation")[:a.faces]
        source = "the shipped evaluation faces"
    if len(faces) < a.faces:
        raise cli.UserError(f"--faces {a.faces}", f"{source} hold only {len(faces)} faces")
    if a.artifact is not None:
        from quant.artifact import load as load_artifact
        load_artifact(a.artifact)            # ArtifactError names the file and the key

    from firmware.image import EngineConfig
    from firmware.compiler import compile_artifact
    from hw.engine.cycles import cycles_by_kind, estimate_cycles, traffic_words
    from quant.artifact import load
    from quant.golden import GoldenModel
    from sim.tb_engine import simulate

    if a.random_weights is not None:
        a.weights = random_weights(a.variant, a.random_weights)
    if a.artifact is not None:
        step(2, f"quantize: using {a.artifact}")
        folder = a.artifact
    else:
        step(2, "quantize (cached while the weights, the quantizer and its options are unchanged)")
        folder = _artifact(board, a.variant, a.weights, a.random_weights, a.quick_quantize,
                           log=lambda t: print(f"    {t}", flush=True))
    art = load(folder)
    if art.variant != a.variant:
        raise cli.UserError(f"--artifact {folder}", f"is a {art.variant} artifact, not "
                            f"{a.variant} (pass --variant {art.variant})")
    step(3, f"compile the firmware for {board.name}")
    cfg = EngineConfig.from_board(board)
    comp = compile_artifact(art, cfg)
    est = estimate_cycles(comp)["total"]
    print(f"    {a.variant} on {board.name}: {len(comp.descriptors)} descriptors, image "
          f"{comp.words.size} words; estimate {est} cycles/frame", flush=True)
    step(4, f"golden model on {len(faces)} faces")
    gold = GoldenModel(art).run(faces, keep=True)
    cos = [None] * len(faces)
    ref = None
    w = a.weights or ROOT / "models" / f"{a.variant}.pt"
    if Path(w).exists():
        import torch
        from quant.checkpoint import load_checkpoint
        from quant.zoo import build, preprocess
        model = load_checkpoint(build(a.variant).eval(), w)
        with torch.no_grad():
            ref = model(preprocess(faces)).double().numpy()
    else:
        print(f"    no float weights ({w}): no cosine vs float", flush=True)
    step(5, f"Verilator: build and run {len(faces)} frames (tool output in "
            f"build/sim/engine_{board.name.replace('-', '_')}/)")
    t0 = time.perf_counter()

    def frame_done(i, cycles, seconds):
        print(f"    frame {i + 1}/{len(faces)}: {cycles} cycles, {seconds:.1f} s", flush=True)

    stressed_memory = a.mem_jitter or a.mem_gaps
    name = f"engine_{board.name}".replace("-", "_") + ("_stress" if stressed_memory else "")
    res = simulate(comp, faces, name=name, depth=None, idle_prob=a.idle, stall_prob=a.stall,
                   mem_jitter=a.mem_jitter, mem_gap_prob=a.mem_gaps, seed=a.seed,
                   progress=frame_done)
    outs = res["outputs"]
    exact = [bool(np.array_equal(outs[i], gold.embedding[i])) for i in range(len(faces))]
    if ref is not None:
        e = outs.astype(np.float64)
        cos = [float(e[i] @ ref[i] / (np.linalg.norm(e[i]) * np.linalg.norm(ref[i]) + 1e-30))
               for i in range(len(faces))]
    mismatch = None
    if res["dump"] is not None:
        mismatch = first_mismatch(comp, art, res["dump"], gold.tensors, len(faces) - 1)
    step(6, "report")
    from hw.engine.plan import frame_macs
    macs = frame_macs(art)
    port = res.get("port_words") or []
    report = {"variant": a.variant, "board": board.name, "frames": len(faces),
              "weights": files.project_relative(w),
              "artifact": files.project_relative(folder), "images": source,
              "random_weights": a.random_weights is not None,
              "bit_exact": exact, "cosine_vs_float": cos, "cycles_per_frame": res["cycles"],
              "estimated_cycles_per_frame": est,
              # the cycle model by descriptor kind and its memory-port words by kind
              "estimated_cycles_by_kind": cycles_by_kind(comp),
              "estimated_port_words": traffic_words(comp),
              "frames_per_second_at_clock": [cfg.clock_mhz * 1e6 / c for c in res["cycles"]],
              # every word across the memory port (the board's SDRAM), read and written
              "sdram_words_per_frame": [r + w for r, w in port],
              "sdram_words_read_written_per_frame": port,
              # useful multiply-accumulates per multiplier-cycle of the P x L array
              "macs_per_frame": macs,
              "pe_utilisation": [macs / (cfg.lanes * cfg.in_lanes * c) for c in res["cycles"]],
              "stress": {"idle": a.idle, "stall": a.stall, "mem_jitter": a.mem_jitter,
                         "mem_gaps": a.mem_gaps, "seed": a.seed},
              "first_mismatch": mismatch, "sim_seconds_per_frame": res["seconds"],
              "sim_cpu_seconds_per_frame": res.get("cpu_seconds"),
              "build_seconds": res.get("build_seconds"), "logs": res.get("logs"),
              "load_average": list(os.getloadavg()),
              "total_seconds": time.perf_counter() - t0, "config": cfg.to_dict()}
    files.write_json(a.report, report)
    print(f"{'frame':>5} {'bit-exact':>9} {'cos vs float':>12} {'cycles':>10} {'estimate':>10} "
          f"{'fps@clk':>8} {'sim s':>7}")
    for i in range(len(faces)):
        c = cos[i]
        print(f"{i:5d} {str(exact[i]):>9} {('%.5f' % c) if c is not None else '-':>12} "
              f"{res['cycles'][i]:10d} {est:10d} {cfg.clock_mhz * 1e6 / res['cycles'][i]:8.2f} "
              f"{res['seconds'][i]:7.1f}")
    for i, (r, w_) in enumerate(port):
        print(f"frame {i}: {r + w_:,} memory words ({r:,} read, {w_:,} written), multiplier "
              f"array busy {report['pe_utilisation'][i]:.1%}")
    print(f"first mismatch: {mismatch}")
    for what, path in (res.get("logs") or {}).items():
        print(f"{what} log: {path}")
    print(f"wrote {a.report}")
    if not all(exact):
        raise cli.RunFailed(f"{exact.count(False)} of {len(exact)} frames not bit-exact "
                            f"(first mismatch: {mismatch}); report {a.report}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
