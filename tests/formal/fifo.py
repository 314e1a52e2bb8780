"""The design's FIFOs: ``amaranth.lib.fifo.SyncFIFOBuffered`` (the SDRAM controller's read FIFO,
the layer engine's weight, residual and write-request queues)."""
from amaranth import Elaboratable, Module, Signal
from amaranth.hdl import Assert, Assume, ResetSignal

from tests.formal.rules import ShadowQueue

WIDTH = 2
DEPTH = 4          # the inner memory is 3 deep: the wrap of a non-power-of-two pointer is in


class FIFOHarness(Elaboratable):
    """Free writer and reader. ``data``: every read returns the oldest word written and not yet
    read (none lost, duplicated or reordered), the FIFO never holds more than ``depth`` words
    and ``level`` counts them. ``ready``: a word held for two cycles is offered (``r_rdy``), and
    an empty FIFO takes a word (``w_rdy``)."""

    def __init__(self, module, what):
        self.module, self.what = module, what
        self.w_en, self.w_data, self.r_en = Signal(), Signal(WIDTH), Signal()

    def ports(self):
        return [self.w_en, self.w_data, self.r_en]

    def elaborate(self, platform):
        m = Module()
        m.submodules.dut = dut = self.module.SyncFIFOBuffered(width=WIDTH, depth=DEPTH)
        m.d.comb += [Assume(~ResetSignal()), dut.w_en.eq(self.w_en),
                     dut.w_data.eq(self.w_data), dut.r_en.eq(self.r_en)]
        q = m.submodules.q = ShadowQueue(WIDTH, DEPTH + 1)
        w_take = dut.w_en & dut.w_rdy
        r_take = dut.r_en & dut.r_rdy
        m.d.comb += [q.push.eq(w_take), q.value.eq(dut.w_data), q.pop.eq(r_take)]
        if self.what == "data":
            m.d.comb += [
                Assert(~(r_take & (q.count == 0)), "a word read that was never written"),
                Assert(~r_take | (dut.r_data == q.head), "a word lost or reordered"),
                Assert(q.count <= DEPTH, "more words taken than the FIFO holds"),
                Assert(dut.level == q.count, "level is not the number of words held"),
            ]
        else:
            held = Signal()
            m.d.sync += held.eq((q.count != 0) & ~r_take)
            m.d.comb += [
                Assert(~(held & (q.count != 0)) | dut.r_rdy, "a word held but not offered"),
                Assert((q.count != 0) | dut.w_rdy, "an empty FIFO refuses a word"),
            ]
        return m
