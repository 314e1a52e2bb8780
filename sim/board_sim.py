"""The whole board design in Verilator, fed by the host driver: :func:`simulate` builds
:class:`hw.board.top.EngineSystem` for a board, runs the bench :mod:`sim.tb_board` (driver ->
UART pins -> link -> engine -> arbiter -> SDRAM controller -> timing-checked SDRAM model) on
a compiled program and a batch of faces, and returns the bench's result (embeddings, cycles,
SDRAM counts, the driver's error). Used by ``tests/test_board_sim.py`` and by
``python -m firmware.run ... --sim``.

The UART runs at :data:`DIVIDER` clock cycles a bit (25 Mbaud at 100 MHz, the link's minimum
divider) and the SDRAM power-up wait is :data:`INIT_WAIT_NS`, for the design and the chip
model alike; both only shorten the simulation.
"""
import dataclasses
import json
import os

import numpy as np

from firmware import protocol as P

DIVIDER = 4
INIT_WAIT_NS = 200


def simulate(board_name, compiled, faces, face_via, *, preload=False, run_timeout=1.0,
             pipelined=False, divider=DIVIDER, host_timeout=1.0, fault=None):
    """Run ``faces`` (uint8 N x H x W x C) through the board design; the bench's result dict.

    ``pipelined``: the driver's :meth:`~firmware.driver.Device.run_faces` (face N+1 uploads
    while face N computes). ``divider``: UART clock cycles a bit, :data:`DIVIDER` by default;
    the board's own (:func:`hw.link.uart.uart_divider` of its clock and baud rate) simulates
    the real bit rate. ``host_timeout``, ``run_timeout``: seconds the driver waits for a
    response and for a face's embedding, on the simulated clock (the bench feeds it to the
    driver's transport): the defaults are the driver's response timeout and ten frames of
    the 85F engine (93 ms each), however long the simulation takes. ``fault``: a fault of
    the bench's host (``BOARD_CFG`` in :mod:`sim.tb_board`)."""
    from hw.board.boards import get_board
    from hw.board.top import EngineSystem, system_ports
    from sim.runner import SIM_BUILD, run_cocotb
    board = get_board(board_name)
    board = dataclasses.replace(board, link=dataclasses.replace(
        board.link, baud=round(board.clock.target_hz / divider)))
    system = EngineSystem(board, sdram_init_wait_ns=INIT_WAIT_NS)
    name = "board_" + board_name.replace("-", "_") + ("" if divider == DIVIDER else f"_d{divider}")
    folder = SIM_BUILD / name
    folder.mkdir(parents=True, exist_ok=True)
    compiled.words.astype("<u2").tofile(folder / "image.bin")
    np.save(folder / "faces.npy", np.ascontiguousarray(faces, dtype=np.uint8))
    result = folder / "result.json"
    result.unlink(missing_ok=True)
    cfg = {"clk_hz": board.clock.target_hz, "divider": divider, "chip": board.sdram.chip,
           "init_wait_ns": INIT_WAIT_NS, "image": str(folder / "image.bin"), "load_addr": 0,
           "input_addr": int(compiled.input["addr"]), "input_shape": list(faces.shape[1:]),
           "n_result": P.N_RESULT, "preload": preload, "faces": str(folder / "faces.npy"),
           "face_via": list(face_via), "pipelined": pipelined, "host_timeout": host_timeout,
           "run_timeout": run_timeout, "result": str(result), "fault": fault}
    # Only the top ports are visible to cocotb, so Verilator optimises the rest (as in
    # sim/tb_engine.py: several times faster to build and run).
    vlt = folder / "public_ports.vlt"
    text = f'`verilator_config\npublic_flat_rw -module "{name}" -var "*"\n'
    if not vlt.exists() or vlt.read_text() != text:
        vlt.write_text(text)
    last = folder / "empty.v"        # cocotb's runner takes the language from the last source
    if not last.exists():
        last.write_text("// nothing: the design is the first source\n")
    flags = os.environ.get("MAKEFLAGS", "")
    if "CFG_CXXFLAGS_PCH_I" not in flags:
        os.environ["MAKEFLAGS"] = (flags + " CFG_CXXFLAGS_PCH_I=-include").strip()
    try:
        run_cocotb(system, name=name, test_module="sim.tb_board", ports=system_ports(system),
                   sources=[vlt, last], extra_env={"BOARD_CFG": json.dumps(cfg)},
                   build_args=["--no-public-flat-rw", "--output-split", "20000",
                               "--output-split-cfuncs", "20000"])
    except (AssertionError, SystemExit):    # the cocotb runner exits on a failed test
        if not result.exists():      # the bench died first (an SDRAM violation): its log says
            raise
        # else the driver failed: check() reports its error from the result
    return json.loads(result.read_text())
