"""cocotb testbench of :class:`hw.engine.requantize.Requantizer`, and the case harness the compute-unit
testbenches share (``tb_pointwise``, ``tb_depthwise``).

A *case* is a JSON file (path in ``$CASE``) written by the pytest side::

    {"config": {"cfg__n_pixels": 4, ...},            # ports set before start
     "start": "start",                               # optional one-cycle start pulse
     "inputs": {"i_stream": [int, ...], ...},         # packed payloads per source stream
     "outputs": {"o_stream": 12},                     # beats expected per sink stream
     "idle": 0.3, "stall": 0.3, "timeout": 200000}

The testbench drives every input stream with random idle cycles, every output with random
back-pressure, and writes ``<case>.out.json``: the received payloads, the cycle count from the
start to the last output transfer, and whether any output beat was left unread; it fails when an
input word was never taken (``unconsumed``). The pytest side unpacks and compares against
:mod:`quant.ops` (bit-exact integer equality).
"""

from amaranth.lib import data
from amaranth.hdl import Shape

from sim.bench import clock_and_reset, load_case, save_result


# -- payload packing (used on the pytest side, outside the simulator) -------------------------

def pack(layout, value) -> int:
    """Python value (dict / list / int) -> the integer of an Amaranth layout's bits."""
    if isinstance(layout, data.StructLayout):
        out = 0
        for name, field in layout:
            out |= pack(field.shape, value.get(name, 0)) << field.offset
        return out
    if isinstance(layout, data.ArrayLayout):
        w = Shape.cast(layout.elem_shape).width
        out = 0
        for i, v in enumerate(value):
            out |= pack(layout.elem_shape, v) << (i * w)
        return out
    w = Shape.cast(layout).width
    v = int(value)
    if not -(1 << w) <= v < (1 << w):
        raise ValueError(f"value {v} does not fit {w} bits")
    return v & ((1 << w) - 1)


def unpack(layout, bits: int):
    """Inverse of :func:`pack`: signed fields come back negative."""
    if isinstance(layout, data.StructLayout):
        return {name: unpack(field.shape, (bits >> field.offset)
                             & ((1 << Shape.cast(field.shape).width) - 1))
                for name, field in layout}
    if isinstance(layout, data.ArrayLayout):
        w = Shape.cast(layout.elem_shape).width
        return [unpack(layout.elem_shape, (bits >> (i * w)) & ((1 << w) - 1))
                for i in range(layout.length)]
    shape = Shape.cast(layout)
    if shape.signed and bits >> (shape.width - 1):
        return bits - (1 << shape.width)
    return bits


# -- the harness (inside the simulator) ------------------------------------------------------

async def run_case(dut):
    import cocotb
    from cocotb.triggers import ReadOnly, RisingEdge, with_timeout

    from sim.streams import StreamSink, StreamSource

    case = load_case()
    seed = int(case.get("seed", 1))
    for port, value in case.get("config", {}).items():
        getattr(dut, port).value = value
    start = case.get("start")
    await clock_and_reset(dut, [start] if start else [])
    await RisingEdge(dut.clk)

    cycles = {"n": 0}

    async def count():
        while True:
            await RisingEdge(dut.clk)
            cycles["n"] += 1

    sources = [StreamSource(dut, name, dut.clk, idle_prob=case.get("idle", 0.3), seed=seed + i)
               for i, name in enumerate(case["inputs"])]
    sinks = {name: StreamSink(dut, name, dut.clk, stall_prob=case.get("stall", 0.3),
                              seed=seed + 100 + i)
             for i, name in enumerate(case["outputs"])}
    if start:
        getattr(dut, start).value = 1
    counter = cocotb.start_soon(count())
    if start:
        await RisingEdge(dut.clk)
        getattr(dut, start).value = 0
    for src, words in zip(sources, case["inputs"].values()):
        cocotb.start_soon(src.send(words))
    tasks = {name: cocotb.start_soon(sink.receive(case["outputs"][name]))
             for name, sink in sinks.items()}
    received = {}
    for name, task in tasks.items():
        received[name] = await with_timeout(task, case.get("timeout", 200000) * 10, "ns")
    total = cycles["n"]
    counter.cancel()
    # Nothing may follow: hold ready high for a while and watch for stray beats.
    extra = {}
    for name, sink in sinks.items():
        sink.ready.value = 1
    for _ in range(case.get("drain_cycles", 64)):
        await ReadOnly()
        for name, sink in sinks.items():
            if int(sink.valid.value):
                extra[name] = extra.get(name, 0) + 1
        await RisingEdge(dut.clk)
    idle_after = {}
    for port in case.get("check_idle", []):
        idle_after[port] = int(getattr(dut, port).value)
    # Every input word was taken (the drain window above gave the device its time).
    unconsumed = {src.name: src.left for src in sources if src.left}
    save_result({"outputs": received, "cycles": total, "extra": extra,
                 "unconsumed": unconsumed, "ports_after": idle_after})
    if unconsumed:
        from sim.streams import DrainError
        raise DrainError(f"input words not consumed: {unconsumed}")


try:
    import cocotb

    @cocotb.test()
    async def requantize_case(dut):
        """Drive the case in $CASE through the requantizer."""
        await run_case(dut)
except ImportError:     # pragma: no cover - imported outside a simulator only for pack/unpack
    pass
