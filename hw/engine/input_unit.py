"""The engine's INPUT op: face bytes -> the post pipeline (:mod:`hw.engine.layer_engine`).

An INPUT descriptor takes ``n_elems`` bytes (uint8 RGB, NHWC) from ``i_stream`` and hands each
to the post pipeline as ``(pixel << sa) + (offset << sb)`` (``m`` = 1, no shift: the reference
normalisation, exact), in chunks of ``config.chunk`` elements (the write requests' ends).
``i_stream.ready`` comes from registers: "a byte is still owed" (kept exact from the next
count) and "the write FIFO has room" (a cycle old: margin).
"""
from amaranth import Module, Mux, Signal
from amaranth.lib import stream, wiring
from amaranth.lib.wiring import In, Out

from firmware import image as im
from firmware.image import EngineConfig

from hw.engine.post import Operands
from hw.engine.stages import last_of


class InputUnit(wiring.Component):
    """Face bytes -> post-pipeline operands; see the module docstring.

    Members
    -------
    desc : In(Descriptor)
    start : In(1)
        A descriptor starts (the counters load ``n_elems``).
    go : In(1)
        The INPUT op runs (``i_stream`` may be taken).
    room : In(range(2 fifo_depth + 1))
        Room in the write FIFO (the write path's register).
    i_stream : In(stream.Signature(8))
        The face bytes.
    o : Out(stream of Operands, always ready)
        The post pipeline's operands (``valid``: a byte is taken, an admitted element).
    more : Out(1)
        A byte is still owed (a register).
    """

    def __init__(self, config: EngineConfig):
        self.cfg = config
        super().__init__({
            "desc": In(im.Descriptor),
            "start": In(1), "go": In(1),
            "room": In(range(config.fifo_depth * 2 + 1)),
            "i_stream": In(stream.Signature(8)),
            "o": Out(stream.Signature(Operands, always_ready=True)),
            "more": Out(1),
        })

    def elaborate(self, platform):
        cfg = self.cfg
        m = Module()
        dsc = self.desc
        n_elems = dsc.n_elems
        ne_last = last_of(m, "elems_last", n_elems)
        in_take = Signal()
        in_cnt = Signal(24)
        in_ci = Signal(16)
        in_left = Signal(24)
        in_more, in_room = Signal(), Signal()
        m.d.sync += [in_more.eq(Mux(in_take, in_left != 1, in_left != 0)),
                     in_room.eq(self.room > 10)]
        with m.If(in_take):
            m.d.sync += in_left.eq(in_left - 1)
        op = self.o.payload
        m.d.comb += [self.i_stream.ready.eq(self.go & in_more & in_room),
                     in_take.eq(self.i_stream.valid & self.i_stream.ready),
                     self.o.valid.eq(in_take), op.x.eq(self.i_stream.payload),
                     op.y.eq(dsc.offset), op.sa.eq(dsc.sa[:4]), op.sb.eq(dsc.sb[:4]),
                     op.m.eq(1), op.s.eq(0),
                     op.last.eq((in_ci == cfg.chunk - 1) | (in_cnt == ne_last)),
                     self.more.eq(in_more)]
        with m.If(in_take):
            m.d.sync += [in_cnt.eq(in_cnt + 1),
                         in_ci.eq(Mux(in_ci == cfg.chunk - 1, 0, in_ci + 1))]
        with m.If(self.start):      # (after the counting: it takes precedence)
            m.d.sync += [in_cnt.eq(0), in_left.eq(n_elems), in_more.eq(n_elems != 0),
                         in_ci.eq(0)]
        return m
