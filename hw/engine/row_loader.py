"""The engine's row loader: a CONV's input-row words into the row buffer
(:mod:`hw.engine.layer_engine`).

Word ``(x, c)`` of a row goes to row-buffer entry ``pix_base + c' // P``, lane ``c' % P``,
where ``c'`` is ``c`` after the 2-group channel shuffle (``Flag.SHUFFLE``) and ``pix_base``
moves by ``CE`` (entries a pixel) per pixel from the row slot's base (``base`` at ``start``).
The words pass a pipeline before the row buffer: stage 1 waits for the gate of the word's
channel (the channel RAM, addressed by ``c``: ``c`` out, ``gate`` in a cycle later), a
registered DSP product follows, then the SE scale's rounding and its saturation, each a
register stage (``ops.scale_channels``) when the scale flag is set; else the word passes. A
packed word (``Flag.PACK_IN``) holds two channels: its low byte goes to the even lane, its high
byte to the odd one.

Lock-step: one word a cycle may arrive (``words``, no back-pressure), each leaves a fixed
number of cycles later.
"""
from amaranth import Cat, Const, Module, Mux, Signal, signed, unsigned
from amaranth.lib import stream, wiring
from amaranth.lib.memory import WritePort
from amaranth.lib.wiring import In, Out

from firmware import image as im
from firmware.image import EngineConfig

from hw.engine.dsp import LATENCY as DSP_LATENCY
from hw.engine.dsp import RegisteredMultiplier
from hw.engine.stages import decoded, delay_line, delayed, last_of, log2


class RowLoader(wiring.Component):
    """Input rows -> row buffer, with the shuffle and the fused SE scale; see the module
    docstring.

    Members
    -------
    desc : In(Descriptor)
    ce : In(12)
        Row-buffer entries of one pixel.
    start : In(1)
        A row starts loading at entry ``base``.
    base : In(16)
    words : In(stream.Signature(16), always ready)
        The row's words, in memory order.
    c : Out(16)
        The channel (in memory order) of the word arriving: the channel RAM's address.
    gate : In(16)
        The channel RAM's data, a cycle after ``c``.
    rb_w : In(WritePort.Signature)
        Drives the row buffer's write port (one enable a lane).
    busy : Out(1)
        A word is in the pipeline.
    """

    def __init__(self, config: EngineConfig):
        self.cfg = config
        P = config.lanes
        super().__init__({
            "desc": In(im.Descriptor),
            "ce": In(12),
            "start": In(1), "base": In(16),
            "words": In(stream.Signature(16, always_ready=True)),
            "c": Out(16),
            "gate": In(16),
            "rb_w": In(WritePort.Signature(addr_width=(config.rb_depth - 1).bit_length(),
                                           shape=unsigned(16 * P), granularity=16)),
            "busy": Out(1),
        })

    def elaborate(self, platform):
        cfg = self.cfg
        P = cfg.lanes
        lP = log2(P)
        m = Module()
        dsc = self.desc
        C = dsc.C
        shuffle_en, scale_en = dsc.flags.shuffle, dsc.flags.scale
        pack_in = dsc.flags.pack_in if P > 1 else Const(0, 1)
        rb_w = self.rb_w

        lc = Signal(16)
        pix_base = Signal(16)
        half = C >> 1
        cs = Signal(16)
        m.d.comb += [cs.eq(Mux(shuffle_en, Mux(lc < half, lc << 1, ((lc - half) << 1) | 1),
                               lc)),
                     self.c.eq(lc)]
        l1_v = Signal()
        l1_x = Signal(signed(16))
        l1_addr = Signal(16)
        l1_lane = Signal(max(1, lP))
        ls_shift, ls_lo, ls_hi = dsc.ls_shift, dsc.ls_lo, dsc.ls_hi
        ld_row = self.words.valid
        m.d.sync += [l1_v.eq(ld_row), l1_x.eq(self.words.payload.as_signed()),
                     l1_addr.eq(pix_base + (cs >> lP)), l1_lane.eq(cs[:lP] if P > 1 else 0)]
        gate_mul = m.submodules.gate_mul = RegisteredMultiplier(16, 16)
        m.d.comb += [gate_mul.a.eq(l1_x), gate_mul.b.eq(self.gate.as_signed())]
        l_lat = DSP_LATENCY + 4          # product, shift, round, compare, saturate
        l_vline = delay_line(m, l1_v, l_lat, "ld_v")
        l_addr = delayed(m, l1_addr, l_lat, "ld_addr")
        l_lane = delayed(m, l1_lane, l_lat, "ld_lane")
        lP_x = delayed(m, l1_x, DSP_LATENCY, "ld_x")
        lsh = Signal(signed(32))
        l_round = Signal()
        ls_shift1 = last_of(m, "ls_shift1", ls_shift)       # the shift before the rounding bit
        ls_zero = decoded(m, "ls_zero", ls_shift == 0)
        m.d.sync += [lsh.eq(Mux(scale_en, Mux(ls_zero, gate_mul.p,
                                              gate_mul.p >> ls_shift1[:5]), lP_x)),
                     l_round.eq(scale_en & ~ls_zero)]
        lq = Signal(signed(32))
        m.d.sync += lq.eq(Mux(l_round, (lsh + 1) >> 1, lsh))
        # saturation: the compares, then the selection (a register between them)
        lq2 = Signal(signed(16))
        l_hi, l_lo = Signal(), Signal()
        m.d.sync += [lq2.eq(lq), l_hi.eq(scale_en & (lq > ls_hi)),
                     l_lo.eq(scale_en & (lq < ls_lo))]
        ly_even, ly_odd = Signal(signed(16)), Signal(signed(16))
        m.d.sync += [ly_even.eq(Mux(l_hi, ls_hi, Mux(l_lo, ls_lo,
                                                     Mux(pack_in, lq2[:8].as_signed(), lq2)))),
                     ly_odd.eq(Mux(l_hi, ls_hi, Mux(l_lo, ls_lo,
                                                    Mux(pack_in, lq2[8:].as_signed(), lq2))))]
        m.d.comb += [rb_w.addr.eq(l_addr),
                     rb_w.data.eq(Cat(*(ly_odd if i % 2 else ly_even for i in range(P)))),
                     self.busy.eq(Cat(l1_v, *l_vline).any())]
        with m.If(l_vline[-1]):
            for i in range(P):
                m.d.comb += rb_w.en[i].eq(
                    Mux(pack_in, l_lane[1:] == i >> 1, l_lane == i) if P > 1 else 1)
        # the last channel of a pixel's words: C - 1, or C - 2 when packed (registers)
        lc_last = Signal(16)
        m.d.sync += lc_last.eq(C - 1 - pack_in)
        with m.If(ld_row):
            with m.If(lc == lc_last):
                m.d.sync += [lc.eq(0), pix_base.eq(pix_base + self.ce)]
            with m.Else():
                m.d.sync += lc.eq(lc + 1 + pack_in)
        with m.If(self.start):      # (after the counting: it takes precedence)
            m.d.sync += [lc.eq(0), pix_base.eq(self.base)]
        return m
