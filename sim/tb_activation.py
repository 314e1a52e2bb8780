"""cocotb testbench of the CORDIC activation unit (hw.engine.activation.ActivationCORDIC).

The case arrives as JSON in the ``CASE`` environment variable (written by
tests/test_hw_activation.py): one or more parts, each a packed ``config`` word (the formats of
one spec), its input codes and the golden outputs from ``quant.activation``; the port widths,
the unit's claimed latency and the stall probabilities. The parts run one after another on the
same unit, the configuration changing between them (as it does between layers).
"""
import json
import os

import cocotb
from cocotb.clock import Clock
from cocotb.triggers import ClockCycles, ReadOnly, RisingEdge

from sim.streams import StreamSink, StreamSource, to_signed


def load_case():
    return json.loads(os.environ["CASE"])


class ActivationTB:
    """Owns clock, reset and the two stream drivers of one activation unit."""

    def __init__(self, dut, case, idle_prob, stall_prob, seed=1):
        self.dut, self.case = dut, case
        Clock(dut.clk, 10, unit="ns").start()
        self.source = StreamSource(dut, "i_stream", dut.clk, idle_prob=idle_prob, seed=seed)
        self.sink = StreamSink(dut, "o_stream", dut.clk, stall_prob=stall_prob, seed=seed + 1,
                               signed_bits=case["out_bits"] if case["out_signed"] else None)

    async def reset(self):
        self.dut.rst.value = 1
        await ClockCycles(self.dut.clk, 3)
        self.dut.rst.value = 0
        await RisingEdge(self.dut.clk)

    def words(self, codes):
        mask = (1 << self.case["in_bits"]) - 1
        return [c & mask for c in codes]

    async def configure(self, config):
        """Set the formats while the pipeline is empty (as the engine does between layers)."""
        self.dut.config.value = config
        await RisingEdge(self.dut.clk)
        await RisingEdge(self.dut.clk)

    async def run(self, codes, extra=0):
        """Send ``codes`` (and ``extra`` codes more: a test of the bench's own drain check);
        receive as many results as ``codes``."""
        send = cocotb.start_soon(self.source.send(self.words(codes + codes[:extra])))
        got = await self.sink.receive(len(codes))
        await send
        return got

    async def assert_drained(self):
        """Nothing left unread: with ready held high, no further output appears."""
        self.dut.o_stream__ready.value = 1
        for _ in range(self.case["latency"] + 8):
            await ReadOnly()
            assert int(self.dut.o_stream__valid.value) == 0, "output beyond the expected count"
            await RisingEdge(self.dut.clk)
        assert int(self.dut.i_stream__valid.value) == 0


def check(got, expected, codes):
    assert len(got) == len(expected)
    bad = [(c, g, e) for c, g, e in zip(codes, got, expected) if g != e]
    assert not bad, f"{len(bad)} mismatches (code, got, expected), first: {bad[:8]}"


@cocotb.test()
async def test_random_stalls(dut):
    """Every case code with random source idles and sink back-pressure, bit-exact."""
    case = load_case()
    tb = ActivationTB(dut, case, case["idle_prob"], case["stall_prob"], seed=case["seed"])
    await tb.reset()
    for part in case["parts"]:
        await tb.configure(part["config"])
        got = await tb.run(part["codes"], case.get("extra_codes", 0))
        check(got, part["expected"], part["codes"])
        await tb.assert_drained()


@cocotb.test()
async def test_latency_and_throughput(dut):
    """No stalls: the first result after exactly ``latency`` cycles, then one per cycle."""
    case = load_case()
    part = case["parts"][0]
    tb = ActivationTB(dut, case, 0.0, 0.0)
    await tb.reset()
    await tb.configure(part["config"])
    n = min(64, len(part["codes"]))
    codes = part["codes"][:n]
    dut.o_stream__ready.value = 1
    first_in = outs = None
    got = []
    cycle = 0
    words = tb.words(codes)
    sent = 0
    while len(got) < n:
        dut.i_stream__valid.value = int(sent < n)
        if sent < n:
            dut.i_stream__payload.value = words[sent]
        await ReadOnly()
        if sent < n and int(dut.i_stream__ready.value):
            first_in = cycle if first_in is None else first_in
            sent += 1
        if int(dut.o_stream__valid.value):
            outs = cycle if outs is None else outs
            v = int(dut.o_stream__payload.value)
            got.append(to_signed(v, case["out_bits"]) if case["out_signed"] else v)
        await RisingEdge(dut.clk)
        cycle += 1
    dut.i_stream__valid.value = 0
    check(got, part["expected"][:n], codes)
    assert outs - first_in == case["latency"], \
        f"latency {outs - first_in} cycles, unit claims {case['latency']}"
    assert cycle - 1 - outs == n - 1, f"{n} results took {cycle - outs} cycles"
    await tb.assert_drained()
