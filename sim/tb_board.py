"""cocotb testbench of the whole board design (:class:`hw.board.top.EngineSystem`) driven by the host
driver over its UART pins, with the timing-checking SDRAM chip model on its SDRAM pins.

Nothing between the host and the memory is modelled: the unchanged :class:`firmware.driver.Device`
runs in a Python thread over a :class:`firmware.transport.QueueTransport`; this bench moves its
bytes to and from the ``rx``/``tx`` pins (:class:`sim.tb_uart.UartLine`), and the design's link,
arbiter, engine and SDRAM controller do the rest against :class:`sim.sdram_model.SDRAMModel`
(which fails the test at the first timing violation). The simulated clock advances only while
the host waits for the device (``QueueTransport.host_waiting``): the host's own turnaround costs
no simulated cycles (a real host's is a parameter of the model in :mod:`sim.link_throughput`).

Configured by ``BOARD_CFG`` (JSON; written by ``tests/test_board_sim.py``)::

    clk_hz, divider          engine clock, UART clock cycles per bit
    chip, init_wait_ns       SDRAM chip, the short power-up wait the design was built with
    image                    file of the memory image's little-endian 16-bit words
    load_addr, input_addr    word addresses of the image and of the face input
    input_shape, n_result    face (H, W, C), embedding length (the ImageHeader's fields)
    preload                  true: the words go straight into the SDRAM model (SDRAMModel.load)
                             and the driver is only told the header; false: the driver uploads
                             the image with load_image(verify=True)
    faces, face_via          .npy of uint8 faces (N, H, W, C); "stream"/"memory" per face
    pipelined                true: Device.run_faces (face N+1 sent before the embedding of
                             face N is read; every face "stream"); false: run_face per face
    host_timeout             seconds the driver waits for one response
    run_timeout              seconds the driver waits for one face
                             (both on the simulated clock: sim/host_clock.py)
    result                   JSON file written at the end (also when the driver fails)
    fault                    (optional; a test of the bench) "unread_status": after the last
                             face the host sends a STATUS frame and does not read the answer

Result: ``embeddings`` (per face), ``run_cycles`` (simulated clock cycles with ``running``
high: from the first face byte or RUN to END) and ``run_intervals`` (their first and last
cycles), ``host_frames`` (``[kind, seq, first cycle, last cycle]`` of every frame the host
sent, on the ``rx`` pin), ``device_frames`` (``[kind, seq, cycle of the last byte]`` of every
frame the device sent), ``face_seconds`` (wall time per face), ``upload_seconds``, ``sdram``
(command counts, refreshes, largest gap between refreshes, violations), ``error`` (the
driver's exception, or null), ``drain_error`` (the drain checks of :func:`_drained`, once the
driver is done: every byte the driver wrote reached the pins, the design sends nothing more,
every byte it sent was read, the engine is not running; or null).
"""
import json
import os
import threading
import time
from pathlib import Path

import cocotb
import numpy as np
from cocotb.clock import Clock
from cocotb.triggers import ClockCycles, FallingEdge, RisingEdge
from cocotb.utils import get_sim_time

from firmware import protocol as P
from firmware.driver import Device, ImageHeader
from firmware.transport import QueueTransport
from sim.host_clock import start_host_clock
from sim.sdram_model import SDRAMModel
from sim.tb_uart import UartLine

CFG = json.loads(os.environ.get("BOARD_CFG", "{}"))


async def _count_runs(dut, clk_ps, intervals):
    """Append ``[first, last]`` cycle of every interval with ``running`` high."""
    now = lambda: get_sim_time(unit="ps") // clk_ps      # noqa: E731
    while True:
        await RisingEdge(dut.running)
        start = now()
        await FallingEdge(dut.running)
        intervals.append([start, now()])


def _host(cfg, transport, header, body, faces, box, log):
    """The driver, as a user would call it (runs in its own thread)."""
    try:
        dev = Device(transport, timeout=cfg["host_timeout"], retries=2)
        t = time.monotonic()
        if cfg["preload"]:
            dev.header, dev.input_addr = header, header.input_addr
        else:
            dev.load_image(header.pack() + body, verify=True)
        box["upload_seconds"] = time.monotonic() - t
        log.info("image of %d bytes %s", len(body), "preloaded" if cfg["preload"] else "uploaded")
        t = time.monotonic()

        def done(k, emb):
            nonlocal t
            box["embeddings"].append(emb.tolist())
            box["face_seconds"].append(time.monotonic() - t)
            t = time.monotonic()
            log.info("face %d: %.1f s", k, box["face_seconds"][-1])

        if cfg.get("pipelined"):
            assert set(cfg["face_via"]) == {"stream"}, "pipelined runs stream every face"
            dev.run_faces(faces, timeout=cfg["run_timeout"], on_result=done)
        else:
            for k, (face, via) in enumerate(zip(faces, cfg["face_via"])):
                dev.face_via = via
                done(k, dev.run_face(face, timeout=cfg["run_timeout"]))
        box["status"] = repr(dev.status())
        if cfg.get("fault") == "unread_status":
            transport.write(P.encode_frame(P.Cmd.STATUS, 0))
            while not transport.to_device.empty():      # the bench takes it to the pins
                time.sleep(0.01)
    except Exception as e:          # reported by the test
        box["error"] = f"{type(e).__name__}: {e}"


async def _drained(dut, transport, line, divider):
    """The drain checks, once the driver is done: its message, or None."""
    left = 0
    while (data := transport.device_take()) is not None:
        left += len(data)
    if left:
        return f"rx: {left} byte(s) the driver wrote never reached the device"
    n_tx = len(line.received)
    await ClockCycles(dut.clk, 1000 * divider)             # a hundred byte times
    unread = transport.read(1 << 20, timeout=0)       # what is queued, without waiting
    if unread:
        return (f"tx: {len(unread)} byte(s) from the device the driver never read "
                f"({len(line.received) - n_tx} of them after it finished)")
    if int(dut.running.value):
        return "the engine is still running after the driver finished"
    return None


@cocotb.test()
async def faces_through_the_board(dut):
    cfg = CFG
    clk_ps = round(1e12 / cfg["clk_hz"])
    cocotb.start_soon(Clock(dut.clk, clk_ps, unit="ps").start())
    dut.rst.value = 1
    dut.rx.value = 1
    # The controller never drives CKE and CS# (constant 1 and 0, the pad signature's init
    # values), so the converted design has them as inputs: tie them as the board does.
    dut.pads__clk_en.value = 1
    dut.pads__cs_n.value = 0
    sdram = SDRAMModel(dut, cfg["chip"], cfg["clk_hz"], init_wait_ns=cfg["init_wait_ns"],
                       raise_on_violation=True).start()
    words = np.fromfile(cfg["image"], dtype="<u2")
    body = words.tobytes()
    header = ImageHeader(load_addr=cfg["load_addr"], input_addr=cfg["input_addr"],
                         input_shape=tuple(cfg["input_shape"]), n_result=cfg["n_result"],
                         body_size=len(body))
    if cfg["preload"]:
        sdram.load(cfg["load_addr"], words.tolist())
    faces = np.load(cfg["faces"])
    await ClockCycles(dut.clk, 3)
    dut.rst.value = 0
    runs = []
    cocotb.start_soon(_count_runs(dut, clk_ps, runs))
    await RisingEdge(dut.init_done)
    now = lambda: get_sim_time(unit="ps") // clk_ps      # noqa: E731

    transport = QueueTransport()
    start_host_clock(transport, dut.clk)
    parser = P.FrameParser()
    host_frames, device_frames = [], []

    def on_byte(b):
        transport.device_put(bytes([b]))
        for f in parser.feed(bytes([b])):
            if isinstance(f, P.Frame):
                device_frames.append([f.kind, f.seq, now()])

    line = UartLine(dut.rx, dut.tx, cfg["divider"] * clk_ps, on_byte=on_byte)
    box = {"embeddings": [], "face_seconds": [], "error": None}
    thread = threading.Thread(target=_host, daemon=True,
                              args=(cfg, transport, header, body, faces, box, dut._log))
    t0 = time.monotonic()
    thread.start()
    while thread.is_alive():
        data = transport.device_take()
        if data is None:
            if transport.host_waiting:
                await ClockCycles(dut.clk, 10 * cfg["divider"])
            else:
                # The host is working (or between two polls): the simulated clock waits for
                # it, so its turnaround costs no cycles, whatever the machine's load.
                time.sleep(0.0002)
        else:
            first = now()
            await line.send(data)
            host_frames.append([data[2], data[3], first, now()])
    box["drain_error"] = await _drained(dut, transport, line, cfg["divider"])
    box.update(run_cycles=[b - a for a, b in runs], run_intervals=runs,
               host_frames=host_frames, device_frames=device_frames,
               wall_seconds=time.monotonic() - t0,
               sdram={"commands": sdram.command_counts, "refreshes": len(sdram.ref_cycles),
                      "max_refresh_gap": sdram.max_ref_gap,
                      "violations": [str(v) for v in sdram.violations]})
    Path(cfg["result"]).write_text(json.dumps(box, indent=1))
    assert box["error"] is None, f"the host driver failed: {box['error']}"
    assert box["drain_error"] is None, box["drain_error"]
