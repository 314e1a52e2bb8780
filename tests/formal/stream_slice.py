"""StreamSlice (hw/memory/arbiter.py), the register slice / skid buffer on every stream of the
arbiter's registered bus."""
from amaranth import Elaboratable, Module, Signal
from amaranth.hdl import Assert, Assume, ResetSignal

from tests.formal.rules import ShadowQueue, stream_rules

WIDTH = 4


class SliceHarness(Elaboratable):
    """Free upstream (``i``) and downstream ready; ``rules`` asserts the stream rules on ``o``,
    ``data`` asserts that ``o`` carries exactly the words ``i`` took, in order, and that a word
    taken is on ``o`` the next cycle (none stuck)."""

    def __init__(self, module, what):
        self.module, self.what = module, what
        self.i_valid, self.i_payload = Signal(), Signal(WIDTH)
        self.o_ready = Signal()

    def ports(self):
        return [self.i_valid, self.i_payload, self.o_ready]

    def elaborate(self, platform):
        m = Module()
        m.submodules.dut = dut = self.module.StreamSlice(WIDTH)
        m.d.comb += [Assume(~ResetSignal()), dut.i.valid.eq(self.i_valid),
                     dut.i.payload.eq(self.i_payload), dut.o.ready.eq(self.o_ready)]
        # The upstream obeys the stream rules.
        stream_rules(m, dut.i.valid, dut.i.ready, dut.i.payload, assume=True, name="i")
        if self.what == "rules":
            stream_rules(m, dut.o.valid, dut.o.ready, dut.o.payload, name="o")
        else:
            q = m.submodules.q = ShadowQueue(WIDTH, 3)
            i_take = dut.i.valid & dut.i.ready
            o_take = dut.o.valid & dut.o.ready
            m.d.comb += [q.push.eq(i_take), q.value.eq(dut.i.payload), q.pop.eq(o_take)]
            m.d.comb += [
                Assert(~(o_take & (q.count == 0)), "o: a word nobody sent (duplicated)"),
                Assert(~o_take | (dut.o.payload == q.head), "o: a word lost or reordered"),
                Assert(q.count <= 2, "more than two words held: i.ready ignored"),
                Assert((q.count == 0) | dut.o.valid, "a word held but not offered"),
            ]
        return m

