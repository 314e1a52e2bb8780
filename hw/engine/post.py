"""The engine's post pipeline, shared by every op (:mod:`hw.engine.layer_engine`).

``((x << sa) + (y << sb)) * m >> s``, round half up, saturate to the descriptor's format
(``sat_lo``, ``sat_hi``), then the activation (the loaded table, or the CORDIC), then the fused
residual add (``Flag.RESID``: ``(y << sa) + (r << sb)`` rounded half up by ``shift`` and
saturated to ``r_lo``, ``r_hi``: ``ops.add``), then the output packing (``Flag.PACK_OUT``: an
even channel waits for the odd one, both are one word).

Free-running and lock-step: one element a cycle enters (``i``, no back-pressure: admission
is by credits upstream), each leaves a fixed number of cycles later (``o``, and ``w`` with the
words for the write FIFO). Stage 0 registers the operands; every later stage is one register
deep. The 34 x 18 product is two registered DSP products (low 17 bits of ``t`` unsigned, high
17 bits signed) added in the fabric.
"""
from amaranth import Cat, Const, Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.memory import Memory, WritePort
from amaranth.lib.wiring import In, Out

from firmware import image as im
from firmware.image import EngineConfig

from hw.engine.activation import ActivationCORDIC
from hw.engine.dsp import LATENCY as DSP_LATENCY
from hw.engine.dsp import RegisteredMultiplier
from hw.engine.stages import decoded, delay_line, delayed, last_of

#: one element's operands: ``((x << sa) + (y << sb)) * m >> s``; ``last`` ends a pixel or a
#: chunk (the write path's request boundary), ``act`` applies the activation
Operands = data.StructLayout({
    "x": signed(33), "y": signed(33), "sa": 4, "sb": 4, "m": signed(18), "s": 6,
    "last": 1, "act": 1,
})

#: one element leaving the pipeline (before packing)
Element = data.StructLayout({"data": signed(16), "last": 1})


class PostPipeline(wiring.Component):
    """Requantize, activation, fused residual add, output packing; see the module docstring.

    Members
    -------
    desc : In(Descriptor)
        The current descriptor (formats, shifts, flags).
    init : In(1)
        Descriptor start: clears the packing phases.
    i : In(stream of Operands, always ready)
        One element's operands a cycle.
    res : In(stream.Signature(16))
        The residual FIFO's head (``Flag.RESID``); ``ready`` pops it. Only with
        ``config.res_depth``.
    lut_w : Out(WritePort.Signature)
        The activation table's write port, as a memory's (``config.activation == "lut"``).
    o : Out(stream of Element, always ready)
        Every element as it leaves (the write requests and the fused pool sums read it).
    w : Out(stream.Signature(16), always ready)
        Words for the write FIFO (two elements a word when packed).
    busy : Out(1)
        An element is in the pipeline.
    """

    def __init__(self, config: EngineConfig):
        self.cfg = config
        members = {
            "desc": In(im.Descriptor),
            "init": In(1),
            "i": In(stream.Signature(Operands, always_ready=True)),
            "o": Out(stream.Signature(Element, always_ready=True)),
            "w": Out(stream.Signature(16, always_ready=True)),
            "busy": Out(1),
        }
        if config.res_depth:
            members["res"] = In(stream.Signature(16))
        if config.activation == "lut":
            members["lut_w"] = Out(WritePort.Signature(
                addr_width=(config.lut_depth - 1).bit_length(), shape=unsigned(16)))
        super().__init__(members)

    def elaborate(self, platform):
        cfg = self.cfg
        m = Module()
        dsc = self.desc
        op = self.i.payload
        resid_en = dsc.flags.resid if cfg.res_depth else Const(0, 1)
        pack_res, pack_out = ((getattr(dsc.flags, f) if cfg.lanes > 1 else Const(0, 1))
                              for f in ("pack_res", "pack_out"))

        x0, y0 = Signal(signed(33), reset_less=True), Signal(signed(33), reset_less=True)
        sa0, sb0, m0, s0 = Signal(4), Signal(4), Signal(signed(18)), Signal(6)
        v0, f0, u0 = Signal(), Signal(), Signal()
        m.d.sync += [x0.eq(op.x), y0.eq(op.y), sa0.eq(op.sa), sb0.eq(op.sb), m0.eq(op.m),
                     s0.eq(op.s), v0.eq(self.i.valid), f0.eq(op.last), u0.eq(op.act)]
        t1 = Signal(signed(34), reset_less=True)
        m1, s1, v1, f1, u1 = Signal(signed(18)), Signal(6), Signal(), Signal(), Signal()
        m.d.sync += [t1.eq((x0 << sa0) + (y0 << sb0)), m1.eq(m0), s1.eq(s0), v1.eq(v0),
                     f1.eq(f0), u1.eq(u0)]
        mul_lo = m.submodules.mul_lo = RegisteredMultiplier(18, 18)
        mul_hi = m.submodules.mul_hi = RegisteredMultiplier(17, 18)
        m.d.comb += [mul_lo.a.eq(Cat(t1[:17], Const(0, 1))), mul_lo.b.eq(m1),
                     mul_hi.a.eq(t1[17:34]), mul_hi.b.eq(m1)]
        vline = delay_line(m, v1, DSP_LATENCY, "post_v")
        vP = vline[-1]
        sP, fP, uP = (delayed(m, sig, DSP_LATENCY, nm) for sig, nm in
                      ((s1, "post_s"), (f1, "post_f"), (u1, "post_u")))
        p2, s2, v2, f2, u2 = (Signal(signed(53), reset_less=True), Signal(6), Signal(),
                              Signal(), Signal())
        m.d.sync += [p2.eq((mul_hi.p << 17) + mul_lo.p), s2.eq(sP), v2.eq(vP), f2.eq(fP),
                     u2.eq(uP)]
        q3, z3, v3, f3, u3 = (Signal(signed(53), reset_less=True), Signal(), Signal(),
                              Signal(), Signal())
        m.d.sync += [q3.eq(Mux(s2 == 0, p2, p2 >> (s2 - 1)[:6])), z3.eq(s2 == 0), v3.eq(v2),
                     f3.eq(f2), u3.eq(u2)]
        r4, v4, f4, u4 = Signal(signed(53), reset_less=True), Signal(), Signal(), Signal()
        m.d.sync += [r4.eq(Mux(z3, q3, (q3 + 1) >> 1)), v4.eq(v3), f4.eq(f3), u4.eq(u3)]
        sat_lo, sat_hi = dsc.sat_lo, dsc.sat_hi
        y5, v5, f5, u5 = Signal(signed(16)), Signal(), Signal(), Signal()
        m.d.sync += [y5.eq(Mux(r4 > sat_hi, sat_hi, Mux(r4 < sat_lo, sat_lo, r4))), v5.eq(v4),
                     f5.eq(f4), u5.eq(u4)]
        # the activation: the loaded table (address register, RAM: 2 stages) or the CORDIC
        # (its latency, formats from the descriptor); y7..u7 are stage 5 as many cycles late
        if cfg.activation == "cordic":
            unit = m.submodules.activation = ActivationCORDIC(cfg.cordic_iterations,
                                                              cfg.cordic_width)
            cfg_bits = len(unit.config.as_value())
            m.d.comb += [unit.config.eq(dsc.act_cfg[:cfg_bits]), unit.o_stream.ready.eq(1),
                         unit.i_stream.valid.eq(v5), unit.i_stream.payload.eq(y5)]
            act_data = unit.o_stream.payload[:16]
            act_delay = unit.latency
        else:
            lut = m.submodules.lut = Memory(shape=unsigned(16), depth=cfg.lut_depth, init=[])
            lut_w = lut.write_port()
            lut_r = lut.read_port()
            m.d.comb += [lut_w.addr.eq(self.lut_w.addr), lut_w.data.eq(self.lut_w.data),
                         lut_w.en.eq(self.lut_w.en)]
            la6 = Signal(len(lut_r.addr))
            m.d.sync += la6.eq((y5 - dsc.lut_off)[:len(lut_r.addr)])
            m.d.comb += lut_r.addr.eq(la6)
            act_data = lut_r.data
            act_delay = 2
        act_vline = delay_line(m, v5, act_delay, "act_v")
        v7 = act_vline[-1]
        y7, f7, u7 = (delayed(m, sig, act_delay, nm) for sig, nm in
                      ((y5, "act_y"), (f5, "act_f"), (u5, "act_u")))
        # the fused residual add (CONV with the residual flag; every other value passes):
        # z = (y << sa) + (residual << sb), round half up by shift, saturate (ops.add)
        y8, rr8 = Signal(signed(16)), Signal(signed(16))
        v8, f8 = Signal(), Signal()
        # (a packed residual word holds two elements: low byte first, popped after the high)
        r_phase = Signal()
        if cfg.res_depth:
            rword = self.res.payload
            m.d.sync += rr8.eq(Mux(pack_res, Mux(r_phase, rword[8:].as_signed(),
                                                 rword[:8].as_signed()), rword))
            m.d.comb += self.res.ready.eq(v7 & resid_en & (~pack_res | r_phase))
            with m.If(v7 & resid_en & pack_res):
                m.d.sync += r_phase.eq(~r_phase)
        m.d.sync += [y8.eq(Mux(u7, act_data, y7)), v8.eq(v7), f8.eq(f7)]
        r_sa, r_sb = dsc.sa[:4], dsc.sb[:4]
        r_shift1 = last_of(m, "r_shift1", dsc.shift[:6])
        r_zero = decoded(m, "r_zero", dsc.shift == 0)
        z9, y9 = Signal(signed(33), reset_less=True), Signal(signed(16))
        v9, f9 = Signal(), Signal()
        m.d.sync += [z9.eq((y8 << r_sa) + (rr8 << r_sb)), y9.eq(y8), v9.eq(v8), f9.eq(f8)]
        q10, y10 = Signal(signed(33), reset_less=True), Signal(signed(16))
        v10, f10 = Signal(), Signal()
        m.d.sync += [q10.eq(Mux(r_zero, z9, z9 >> r_shift1[:4])), y10.eq(y9), v10.eq(v9),
                     f10.eq(f9)]
        q11, y11 = Signal(signed(33), reset_less=True), Signal(signed(16))
        v11, f11 = Signal(), Signal()
        m.d.sync += [q11.eq(Mux(r_zero, q10, (q10 + 1) >> 1)), y11.eq(y10), v11.eq(v10),
                     f11.eq(f10)]
        r_lo, r_hi = dsc.r_lo, dsc.r_hi
        out_word = Signal(signed(16))
        out_v, out_f = Signal(), Signal()
        m.d.sync += [out_word.eq(Mux(resid_en, Mux(q11 > r_hi, r_hi,
                                                   Mux(q11 < r_lo, r_lo, q11)), y11)),
                     out_v.eq(v11), out_f.eq(f11)]
        # packed output: an even channel waits in pk_lo for the odd one, then both are a word
        pk_lo, pk_phase = Signal(8), Signal()
        with m.If(out_v & pack_out):
            m.d.sync += [pk_lo.eq(out_word[:8]), pk_phase.eq(~pk_phase)]
        with m.If(self.init):
            m.d.sync += [pk_phase.eq(0), r_phase.eq(0)]
        m.d.comb += [self.o.valid.eq(out_v), self.o.payload.data.eq(out_word),
                     self.o.payload.last.eq(out_f),
                     self.w.payload.eq(Mux(pack_out, Cat(pk_lo, out_word[:8]), out_word)),
                     self.w.valid.eq(out_v & (~pack_out | pk_phase)),
                     self.busy.eq(Cat(v0, v1, *vline, v2, v3, v4, v5, *act_vline, v8, v9,
                                      v10, v11, out_v).any())]
        return m
