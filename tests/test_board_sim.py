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
faces streamed; the driver's ``face_via="memory"`` path is refused with a clear error (the
engine takes its face only as a stream). Slow tier: the whole seesaw_shuffle network on the
ulx3s (85F) configuration, one real face.
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


def test_board_12f_small_net_uploaded_and_streamed():
    """ulx3s-12f: the image uploaded and verified through the driver, then two faces, one
    after the other, as FACE_DATA to the engine's input stream.

    Measured (2-core x86_64, load about 2): Verilator build about 30 s, upload + verify of the
    8.8 KB image 13 s wall, each face 9.7 K simulated cycles (about 1.2 s wall); the first three
    default-tier tests of this file about 1 min in all, Verilator build included."""
    faces, art, comp = _small_net()
    res = simulate("ulx3s-12f", comp, faces, ["stream", "stream"], run_timeout=120.0)
    check(res, golden_stream(art, faces))


def test_board_12f_face_through_memory_is_refused_clearly():
    """The driver's face_via="memory" path (WRITE_MEM at input_addr, RUN): this engine takes
    its face only from FACE_DATA frames, so the link refuses RUN (NACK UNSUPPORTED) and the
    driver says which path to use -- instead of starting an engine that would wait for a
    face forever."""
    faces, art, comp = _small_net()
    res = simulate("ulx3s-12f", comp, faces[:1], ["memory"], preload=True, run_timeout=15.0)
    assert res["error"] is not None and "RUN refused" in res["error"], res["error"]
    assert "face_via='stream'" in res["error"] and res["embeddings"] == []
    assert res["drain_error"] is None, res["drain_error"]


def test_board_bench_fails_on_an_unread_response():
    """The bench's drain check bites: after a face, the host sends a STATUS frame and never
    reads the answer; the bytes the design sends back must fail the run."""
    faces, art, comp = _small_net()
    res = simulate("ulx3s-12f", comp, faces[:1], ["stream"], preload=True, run_timeout=120.0,
                   fault="unread_status")
    assert res["error"] is None, res["error"]
    assert res["embeddings"] == golden_stream(art, faces[:1]).tolist()
    assert res["drain_error"] is not None and re.fullmatch(
        r"tx: \d+ byte\(s\) from the device the driver never read \(\d+ of them after it "
        r"finished\)", res["drain_error"]), res["drain_error"]


@pytest.mark.slow
def test_board_85f_whole_seesaw_shuffle_frame(seesaw_shuffle_artifact):
    """The whole seesaw_shuffle network on the ulx3s (85F) configuration, one evaluation face
    streamed through the driver, the compiled image preloaded into the SDRAM model (uploading
    its 8.4 MiB over a simulated UART would take hours); bit-exact against the golden model.

    Measured with the residual fusion, gathered writes and packed 8-bit tensors
    (2026-11-28, 2-core x86_64, a build running beside it; the final design: 9,016,702
    cycles, 250 s wall for the frame): 9.00 M simulated cycles with
    ``running`` high (at least 1.51 M of them the face's 37.6 KB over the UART at 40 cycles
    a byte), 238 s wall for the frame, 4 min 31 s for the test; SDRAM: 4.02 M READ, 3.03 M
    WRITE, 29.1 K ACT, 16.0 K REF (largest gap 578 cycles), no violation.
    Before them, on the design of 2026-11-28 (16 x 4 array, every timing change): 11.35 M
    simulated cycles with ``running`` high, 362 s wall for the frame, 6 min 36 s for the test;
    SDRAM: 4.80 M READ, 3.62 M WRITE, 39.0 K ACT, 16.0 K REF (largest gap 726 cycles), no
    violation. Earlier, at 01d192a (the 16 x 8 array; 2-core x86_64, load about 2): 10.79 M simulated
    cycles with ``running`` high (first face byte to END; the face's 37.6 KB over the 25 Mbaud
    UART are at least 1.5 M of them), 292 s wall for the frame, 5 min 42 s for the whole test
    (Verilator build 31 s); SDRAM: 4.75 M READ, 3.62 M WRITE, 37.8 K ACT, 15.2 K REF
    (largest gap 726 cycles), no violation."""
    from quant.artifact import load
    from quant.faces import FACE_DIR, load_images
    art = load(seesaw_shuffle_artifact)
    comp = compile_artifact(art, EngineConfig.from_board(_board("ulx3s")))
    faces = load_images(FACE_DIR / "evaluation.npy", count=1)[:1]
    res = simulate("ulx3s", comp, faces, ["stream"], preload=True, run_timeout=6 * 3600.0)
    print("run cycles", res["run_cycles"], "wall", res["wall_seconds"], res["sdram"])
    check(res, golden_stream(art, faces))
