"""End to end on the simulated board: host driver -> UART pins -> link -> engine -> arbiter ->
SDRAM controller -> SDRAM pins -> timing-checking chip model (sim/tb_board.py), in Verilator.

What only this test sees: the real board design (:class:`hw.board.top.EngineSystem`, not the engine
harness with its ideal memory) running a compiled program out of an SDRAM that refreshes and
enforces its timing, fed and read by the unchanged host driver. Each embedding must equal the
golden model's integers exactly.

The UART runs at 4 clock cycles a bit (25 Mbaud at 100 MHz, the link's minimum divider) and the
SDRAM power-up wait is 200 ns, for the design and the chip model alike; both only shorten the
simulation.

Default tier: a small program on the smallest engine (ulx3s-12f), uploaded through the driver,
three faces pipelined (each uploads while the one before computes: :func:`face_overlaps`);
the driver's ``face_via="memory"`` path is refused with a clear error (the engine takes its
face only as a stream). Slow tier: the whole seesaw_shuffle network on the ulx3s (85F)
configuration, two real faces pipelined. The figures at the real bit rate come from
``python -m sim.link_throughput`` (reports/link_throughput.json).
"""
import re

import numpy as np
import pytest

from firmware import protocol as P
from firmware.compiler import compile_artifact
from firmware.image import EngineConfig
from quant.golden import GoldenModel
from sim.board_sim import simulate


def golden_stream(artifact, faces):
    """The golden embedding in the order the engine streams it (HWC for a C x H x W output)."""
    emb = GoldenModel(artifact).run(faces).embedding
    c, *hw = artifact.tensors[artifact.program[-1]["output"]]["shape"]
    return emb.reshape(len(faces), c, -1).transpose(0, 2, 1).reshape(len(faces), -1)


def check(res, want):
    assert res["error"] is None, res["error"]
    assert res["drain_error"] is None, res["drain_error"]
    got = np.array(res["embeddings"], dtype=np.int64)
    assert got.shape == want.shape == (len(want), P.N_RESULT), (got.shape, want.shape)
    assert all(np.any(w != 0) for w in want), "a golden embedding is all zero: nothing compared"
    for i, (g, w) in enumerate(zip(got, want)):
        bad = np.flatnonzero(g != w)[:5]
        assert bad.size == 0, (f"face {i}: {np.count_nonzero(g != w)} of {w.size} values "
                               f"differ, first at {bad.tolist()}: {g[bad].tolist()} != "
                               f"{w[bad].tolist()}")
    sd = res["sdram"]
    assert sd["violations"] == [] and sd["refreshes"] > 0, sd


def face_overlaps(res):
    """For every face after the first: the cycles its FACE_DATA frame was on the ``rx`` pin
    while the engine computed the face before (``running`` high)."""
    frames = [f for f in res["host_frames"] if f[0] == P.Cmd.FACE_DATA]
    runs = res["run_intervals"]
    n = len(res["embeddings"])
    assert len(frames) == len(runs) == n, (f"expected a FACE_DATA frame and a run a face: "
                                           f"{len(frames)} frames, {len(runs)} runs, {n} faces")
    return [max(0, min(f[3], r[1]) - max(f[2], r[0])) for f, r in zip(frames[1:], runs)]


def _board(name):
    from hw.board.boards import get_board
    return get_board(name)


def _small_net():
    """The se_block program (stem conv, depthwise, SE, two-part projection, residual add) on
    4 x 8 faces, whose 16 x 4 x 8 output is exactly the link's 512 result words; compiled for
    the ulx3s-12f (4 x 4 lanes, the smallest engine)."""
    from tests.engine_nets import build
    net = build("se_block", H=4, W=8, batch=2, seed=3)
    art = net.artifact()
    return net.faces, art, compile_artifact(art, EngineConfig.from_board(_board("ulx3s-12f")))


def test_board_12f_small_net_uploaded_and_pipelined():
    """ulx3s-12f: the image uploaded and verified through the driver, then three faces
    pipelined (Device.run_faces): face 2's FACE_DATA frame is on the wire while the engine
    computes face 1, and every embedding is the golden model's. A driver that read an
    embedding before sending the next face, or a link that refused a face while the engine
    runs, fails here.

    Measured (2-core x86_64, load 13-18 from other jobs): each face 9.1 K simulated cycles
    running, its 108-byte FACE_DATA frame 4.3 K; the test about 4 min, Verilator build
    included (about 1 min at load 2)."""
    faces, art, comp = _small_net()
    faces = np.concatenate([faces, faces[:1, :, ::-1]])       # a third: the first mirrored
    res = simulate("ulx3s-12f", comp, faces, ["stream"] * 3, pipelined=True)
    check(res, golden_stream(art, faces))
    frames = [f for f in res["host_frames"] if f[0] == P.Cmd.FACE_DATA]
    overlaps = face_overlaps(res)
    print("run intervals", res["run_intervals"], "FACE_DATA frames", frames)
    # face 2 goes out right after face 1's ACK: its whole frame while face 1 computes. (Face
    # 3 follows the read of face 1's embedding, 1 KB at 40 cycles a byte, by which time this
    # small network's face 2 is long done: no overlap to expect there.)
    assert overlaps[0] == frames[1][3] - frames[1][2] > 0, (overlaps, frames)


def test_board_12f_face_through_memory_is_refused_clearly():
    """The driver's face_via="memory" path (WRITE_MEM at input_addr, RUN): this engine takes
    its face only from FACE_DATA frames, so the link refuses RUN (NACK UNSUPPORTED) and the
    driver says which path to use -- instead of starting an engine that would wait for a
    face forever."""
    faces, art, comp = _small_net()
    res = simulate("ulx3s-12f", comp, faces[:1], ["memory"], preload=True)
    assert res["error"] is not None and "RUN refused" in res["error"], res["error"]
    assert "face_via='stream'" in res["error"] and res["embeddings"] == []
    assert res["drain_error"] is None, res["drain_error"]


def test_board_bench_fails_on_an_unread_response():
    """The bench's drain check bites: after a face, the host sends a STATUS frame and never
    reads the answer; the bytes the design sends back must fail the run."""
    faces, art, comp = _small_net()
    res = simulate("ulx3s-12f", comp, faces[:1], ["stream"], preload=True,
                   fault="unread_status")
    assert res["error"] is None, res["error"]
    assert res["embeddings"] == golden_stream(art, faces[:1]).tolist()
    assert res["drain_error"] is not None and re.fullmatch(
        r"tx: \d+ byte\(s\) from the device the driver never read \(\d+ of them after it "
        r"finished\)", res["drain_error"]), res["drain_error"]


@pytest.mark.slow
def test_board_85f_whole_seesaw_shuffle_frames_pipelined(seesaw_shuffle_artifact):
    """The whole seesaw_shuffle network on the ulx3s (85F) configuration, two evaluation faces
    pipelined through the driver (the second uploads while the first computes), the compiled
    image preloaded into the SDRAM model (uploading its 7.2 MiB over a simulated UART would
    take hours); bit-exact against the golden model. The UART runs at 4 cycles a bit, so
    the engine (about 7.6 M cycles a face) is far slower than a face's upload (1.5 M cycles)
    here: face 2's FACE_DATA frame lies wholly inside face 1's run. The same two faces at the
    real bit rate are ``python -m sim.link_throughput`` (reports/link_throughput.json)."""
    from quant.artifact import load
    from quant.faces import FACE_DIR, load_images
    art = load(seesaw_shuffle_artifact)
    comp = compile_artifact(art, EngineConfig.from_board(_board("ulx3s")))
    faces = load_images(FACE_DIR / "evaluation.npy", count=2)[:2]
    res = simulate("ulx3s", comp, faces, ["stream"] * 2, preload=True, pipelined=True)
    print("run cycles", res["run_cycles"], "wall", res["wall_seconds"], res["sdram"])
    check(res, golden_stream(art, faces))
    face2 = [f for f in res["host_frames"] if f[0] == P.Cmd.FACE_DATA][1]
    assert face_overlaps(res) == [face2[3] - face2[2]], "face 2 did not upload during face 1"
