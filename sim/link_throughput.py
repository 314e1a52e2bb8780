"""Faces per second end to end over the UART: the board simulation at the real bit rate, and
the model beside it. ``python -m sim.link_throughput`` -> ``reports/link_throughput.{json,md}``.

Measured: the whole board design (:mod:`sim.board_sim`: driver -> UART pins -> link -> face
buffer -> engine -> SDRAM controller -> timing-checked SDRAM model) runs ``--faces``
evaluation faces of the shipped seesaw_shuffle through :meth:`firmware.driver.Device.run_faces`
(face N+1 sent before the embedding of face N is read) with the UART at the board's own divider
(:func:`hw.link.uart.uart_divider`: 27 clock cycles a bit at 81.25 MHz, 3.009 Mbaud), the
program preloaded into the SDRAM model. Every embedding must equal the golden model's, or
nothing is written. From the cycle stamps of every frame on the ``rx``/``tx`` pins and of the
engine's ``running`` intervals:

* ``period``: one face in the steady state of the pipeline -- from the first byte of face 2's
  FACE_DATA frame to the last byte of face 1's embedding (the host then sends face 3): the
  upload of a face, its ACK, and the read of the embedding before it;
* ``latency_alone``: one face with nothing else in flight -- the last face, from the first
  byte of its FACE_DATA frame to the last byte of its embedding;
* ``overlap``: the cycles face 2's FACE_DATA frame was on the wire while the engine computed
  face 1.

Model (:func:`model`): a face costs ``link = wire bytes x 10 / baud + turnarounds`` on the
link (stop-and-wait, so the host's turnaround counts once per transaction) and ``compute =
cycles / clock`` in the engine; overlapped, the period is ``max(link, compute)``; serial, it is
their sum. The compute cycles come from the simulation (the engine's ``running`` interval of a
face); the turnaround is a parameter, because a real host adds its USB latency there (the
simulated host answers within some hundred cycles).
"""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

from firmware import protocol as P
from quant import cli
from quant.files import write_json, write_text

ROOT = Path(__file__).resolve().parent.parent
FACE_BYTES = 112 * 112 * 3
BITS_PER_BYTE = 10                      # 8N1
#: host turnarounds the model is given (seconds): the simulated host, and USB-UART latencies
TURNAROUNDS = (0.0, 0.5e-3, 1e-3, 2e-3)


def wire_bytes(face_bytes=FACE_BYTES, n_result=P.N_RESULT, face_payload=None):
    """Bytes on the wire for one pipelined face: FACE_DATA frames and their ACKs, one
    READ_RESULT and its ACK. Returns ``(host_to_device, device_to_host, transactions)``."""
    face_payload = face_payload or face_bytes + 4
    chunks = -(-face_bytes // (face_payload - 4))
    up = face_bytes + chunks * (4 + P.OVERHEAD) + P.OVERHEAD
    down = chunks * P.OVERHEAD + 2 * n_result + P.OVERHEAD
    return up, down, chunks + 1


def model(baud, compute_s, turnaround_s=0.0, face_bytes=FACE_BYTES, face_payload=None):
    """Faces/s of the UART link and engine, overlapped (pipelined) and one after the other."""
    up, down, transactions = wire_bytes(face_bytes, face_payload=face_payload)
    link = (up + down) * BITS_PER_BYTE / baud + transactions * turnaround_s
    return {"baud": baud, "turnaround_ms": turnaround_s * 1e3, "wire_bytes": up + down,
            "transactions": transactions, "link_ms": link * 1e3, "compute_ms": compute_s * 1e3,
            "bound": "link" if link >= compute_s else "engine",
            "faces_per_s_overlapped": 1 / max(link, compute_s),
            "faces_per_s_serial": 1 / (link + compute_s)}


def analyse(res, clk_hz, divider):
    """The measured figures from a :func:`sim.board_sim.simulate` result (see the module
    docstring); cycles and milliseconds at the simulated clock."""
    faces = [f for f in res["host_frames"] if f[0] == P.Cmd.FACE_DATA]
    results = [f for f in res["device_frames"] if f[0] == P.ACK_FLAG | P.Cmd.READ_RESULT]
    runs = res["run_intervals"]
    n = len(res["embeddings"])
    if not (len(faces) == len(results) == len(runs) == n >= 2):
        raise cli.RunFailed(f"expected one FACE_DATA frame, one run and one embedding a face "
                            f"for {n} faces, got {len(faces)}, {len(runs)}, {len(results)}")
    ms = lambda c: c / clk_hz * 1e3      # noqa: E731
    period = results[0][2] - faces[1][2]
    latency = results[-1][2] - faces[-1][2]
    overlap = max(0, min(faces[1][3], runs[0][1]) - max(faces[1][2], runs[0][0]))
    # host turnaround: from the response to a frame to the host's next frame
    turn = []
    for prev, h in zip(res["host_frames"], res["host_frames"][1:]):
        answers = [d[2] for d in res["device_frames"] if prev[3] <= d[2] <= h[2]]
        if answers:
            turn.append(h[2] - max(answers))
    upload = [f[3] - f[2] for f in faces]
    compute = [b - a for a, b in runs]
    return {"faces": n, "divider": divider, "baud": clk_hz / divider,
            "upload_cycles": upload, "upload_ms": [ms(c) for c in upload],
            "compute_cycles": compute, "compute_ms": [ms(c) for c in compute],
            "period_cycles": period, "period_ms": ms(period),
            "faces_per_s": clk_hz / period,
            "latency_alone_cycles": latency, "latency_alone_ms": ms(latency),
            "overlap_cycles": overlap, "overlap_ms": ms(overlap),
            "overlap_fraction_of_compute": overlap / compute[0],
            "host_turnaround_cycles_median": int(np.median(turn)) if turn else None,
            "sdram": res["sdram"], "wall_seconds": res["wall_seconds"]}


def measure(faces=2, from_result=None, log=print):
    """The board simulation at the real bit rate (module docstring); returns the report.
    ``from_result``: the bench's result file of an earlier run of the same faces (no new
    simulation; the embeddings are checked all the same)."""
    from firmware.compiler import compile_artifact
    from firmware.image import EngineConfig
    from hw.board.boards import get_board
    from hw.link.uart import uart_divider
    from quant.artifact import load
    from quant.faces import FACE_DIR, load_images
    from sim.board_sim import simulate
    from sim.run_sim import _artifact
    from tests.test_board_sim import check, golden_stream
    board = get_board("ulx3s")
    clk = board.clock.target_hz
    divider = uart_divider(clk, board.link.baud)
    log("[1/3] quantized seesaw_shuffle (cached when built) ...", flush=True)
    folder = _artifact(board, "seesaw_shuffle", ROOT / "models" / "seesaw_shuffle.pt",
                       quick=True, log=lambda t: log(f"    {t}", flush=True))
    art = load(folder)
    comp = compile_artifact(art, EngineConfig.from_board(board))
    batch = load_images(FACE_DIR / "evaluation.npy", count=faces)[:faces]
    log(f"[2/3] {faces} faces through the {board.name} board design at {divider} cycles a "
        f"bit ({clk / divider:,.0f} baud), pipelined (about {faces * 10 + 8} M cycles: "
        f"tens of minutes) ...", flush=True)
    if from_result is not None:
        import json
        res = json.loads(Path(from_result).read_text())
    else:
        res = simulate(board.name, comp, batch, ["stream"] * faces, preload=True,
                       pipelined=True, divider=divider)
    try:
        check(res, golden_stream(art, batch))
    except AssertionError as e:
        raise cli.RunFailed(f"the board simulation is not bit-exact: {e}") from None
    log("[3/3] every embedding equals the golden model's; writing the report", flush=True)
    m = analyse(res, clk, divider)
    compute_s = float(np.mean(m["compute_cycles"])) / clk
    # the measured link time at 3.009 Mbaud, converted to the FT231X's 3.000 Mbaud
    scale = (clk / divider) / board.link.baud
    period_3m = m["period_ms"] * scale
    return {
        "source": "python -m sim.link_throughput (sim/board_sim.py, sim/tb_board.py)",
        "board": board.name, "clock_mhz": board.clock.target_mhz, "variant": "seesaw_shuffle",
        "measured": {**m, "period_ms_at_3mbaud": period_3m,
                     "faces_per_s_at_3mbaud": 1e3 / max(period_3m, compute_s * 1e3),
                     "bit_exact": True},
        "model": [model(board.link.baud, compute_s, t) for t in TURNAROUNDS],
        "model_unbuffered": model(board.link.baud, compute_s, 1e-3,
                                  face_payload=P.MAX_PAYLOAD),
    }


def model_only(log=print):
    """The model alone (no simulation): the compute from the board build's cycles per frame
    (reports/board_ulx3s.json, the cycle model with the SDRAM's latency)."""
    import json

    from hw.board.boards import get_board
    board = get_board("ulx3s")
    build = json.loads((ROOT / "reports" / "board_ulx3s.json").read_text())
    cycles = build["cycles_per_frame"]
    compute_s = cycles / board.clock.target_hz
    log(f"model only: {cycles:,} cycles a frame (reports/board_ulx3s.json)")
    return {"source": "python -m sim.link_throughput --model-only (compute: "
                      "reports/board_ulx3s.json cycles_per_frame)",
            "board": board.name, "clock_mhz": board.clock.target_mhz,
            "variant": "seesaw_shuffle", "measured": None, "compute_cycles_model": cycles,
            "model": [model(board.link.baud, compute_s, t) for t in TURNAROUNDS],
            "model_unbuffered": model(board.link.baud, compute_s, 1e-3,
                                      face_payload=P.MAX_PAYLOAD)}


def markdown(rep) -> str:
    m = rep["measured"]
    if m is None:
        return _model_markdown(rep, ["# UART link throughput: upload overlapped with compute",
                                     "", f"Board {rep['board']} at {rep['clock_mhz']:g} MHz, "
                                     f"{rep['variant']}, `{rep['source']}`. Not measured in "
                                     f"the board simulation (`python -m sim.link_throughput` "
                                     f"does).", ""])
    lines = [
        "# UART link throughput: upload overlapped with compute",
        "",
        f"Board {rep['board']} at {rep['clock_mhz']:g} MHz, {rep['variant']}, "
        f"`{rep['source']}`.",
        "",
        f"Measured in the board simulation ({m['faces']} faces pipelined, UART at "
        f"{m['divider']} cycles a bit = {m['baud']:,.0f} baud; bit-exact against the golden "
        f"model):",
        "",
        "| figure | cycles | ms | at 3.000 Mbaud |",
        "|---|---|---|---|",
        f"| upload of a face (FACE_DATA frame, {FACE_BYTES:,} bytes) | "
        f"{int(m['upload_cycles'][1]):,} | {m['upload_ms'][1]:.1f} | |",
        f"| compute of a face (engine running) | {int(m['compute_cycles'][1]):,} | "
        f"{m['compute_ms'][1]:.1f} | |",
        f"| period of the pipeline (one face, steady state) | {int(m['period_cycles']):,} | "
        f"{m['period_ms']:.1f} | {m['period_ms_at_3mbaud']:.1f} ms |",
        f"| **throughput, end to end** | | **{m['faces_per_s']:.2f} faces/s** | "
        f"**{m['faces_per_s_at_3mbaud']:.2f} faces/s** |",
        f"| latency of a face alone (upload, compute, embedding back) | "
        f"{int(m['latency_alone_cycles']):,} | {m['latency_alone_ms']:.1f} | |",
        f"| face 2 uploading while face 1 computes | {int(m['overlap_cycles']):,} | "
        f"{m['overlap_ms']:.1f} | {100 * m['overlap_fraction_of_compute']:.0f} % of the "
        f"compute |",
        f"| host turnaround in the simulation (median) | "
        f"{m['host_turnaround_cycles_median']} | | |",
        "",
    ]
    return _model_markdown(rep, lines)


def _model_markdown(rep, lines) -> str:
    lines = lines + [
        "Model (link = wire bytes x 10 / baud + transactions x turnaround; compute: the "
        "engine's cycles a face, measured above or from the source named):",
        "",
        "| baud | turnaround ms | wire bytes a face | transactions | link ms | compute ms | "
        "bound | faces/s overlapped | faces/s one after the other |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rep["model"] + [rep["model_unbuffered"]]:
        lines.append(f"| {r['baud']:,.0f} | {r['turnaround_ms']:g} | {r['wire_bytes']:,} | "
                     f"{r['transactions']} | {r['link_ms']:.1f} | {r['compute_ms']:.1f} | "
                     f"{r['bound']} | {r['faces_per_s_overlapped']:.2f} | "
                     f"{r['faces_per_s_serial']:.2f} |")
    lines += ["", "The last row: the face in frames of at most the link's frame buffer "
              f"({P.MAX_PAYLOAD - 4} bytes), as without the face buffer, with a 1 ms turnaround.",
              ""]
    return "\n".join(lines)


def main(argv=None):
    return cli.run(_main, argv, prog="python -m sim.link_throughput")


def _main(argv):
    p = cli.ArgumentParser(prog="python -m sim.link_throughput",
                           description=__doc__.split("\n")[0])
    p.add_argument("--faces", type=cli.count, default=2, help="faces to run (>= 2; default 2)")
    p.add_argument("--json", type=Path, default=ROOT / "reports" / "link_throughput.json")
    p.add_argument("--model-only", action="store_true",
                   help="the model alone, without the simulation")
    p.add_argument("--from-result", type=Path, metavar="JSON",
                   help="analyse this result of an earlier run (build/sim/board_ulx3s_d27/"
                        "result.json) instead of simulating again")
    a = p.parse_args(argv)
    if a.from_result is not None and not a.from_result.exists():
        raise cli.UserError(f"{a.from_result}: no such result file")
    if a.faces < 2:
        raise cli.UserError(f"--faces {a.faces}: the pipeline needs at least 2 faces")
    rep = model_only() if a.model_only else measure(a.faces, a.from_result)
    write_json(a.json, rep)
    write_text(a.json.with_suffix(".md"), markdown(rep))
    fps = (rep["measured"] or {}).get("faces_per_s_at_3mbaud")
    print(f"wrote {a.json} and {a.json.with_suffix('.md')}"
          + (f": {fps:.2f} faces/s at 3 Mbaud" if fps else " (model only)"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
