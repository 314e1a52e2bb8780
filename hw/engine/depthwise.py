"""Depthwise PE array: per-channel K x K convolution (3x3 stride 1/2 pad 1; 7x7 valid GDConv).

``vec`` channel lanes, one MAC each, walk the taps that :class:`~hw.engine.line_buffer.LineBuffer`
delivers (one tap of ``vec`` channels per cycle): a window of one channel group takes ``K*K``
cycles, then its ``vec`` accumulators go to a :class:`~hw.engine.requantize.RequantizeDrain` (bias,
requantize, one output transfer). Bit-exact with ``quant.ops.conv(groups=C)`` +
``quant.ops.requantize``.

Weights stream in before the layer (``w_stream``: one row of ``vec`` weights per transfer, rows
ordered ``cg, ky, kx`` -- the order in which the line buffer delivers taps, so the weight memory
is read sequentially, restarting at each output pixel); parameters as in the pointwise array.
Input pixels may stream into the line buffer while the weights load.

Cycles (full-rate streams): about ``max(load, (K - pad) * W * C/vec) + out_h * out_w * C/vec *
K*K`` (:func:`layer_cycles`).
"""
from dataclasses import dataclass

import numpy as np
from amaranth import Module, Signal, signed
from amaranth.lib import data, stream, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from quant.fixedpoint import Fmt

from hw.engine.line_buffer import LineBuffer, LineBufferParams, lb_config, lb_config_layout
from hw.engine.mac import MAC
from hw.engine.requantize import LATENCY as RQ_LATENCY
from hw.engine.requantize import RequantizeDrain, param_layout, vector_layout

# line-buffer read (1) + output register... tap accepted -> weight read (1) -> MAC (3) ->
# drain stage D (1) -> requantize (5)
TAP_TO_OUT = 1 + MAC.latency + 1 + RQ_LATENCY


@dataclass(frozen=True)
class DepthwiseParams:
    vec: int = 8
    a_width: int = 8
    w_width: int = 8
    acc_width: int = 24         # 49 taps of s8 x s8 need 21 bits
    bias_width: int = 32
    out_fmt: Fmt = Fmt(True, 8, 0)
    lb_depth: int = 4096        # line-buffer ring words of vec channels
    max_k: int = 7
    max_size: int = 112
    max_cg: int = 64            # largest C / vec

    @property
    def line_buffer(self):
        return LineBufferParams(vec=self.vec, a_width=self.a_width, depth=self.lb_depth,
                                max_k=self.max_k, max_size=self.max_size, max_cg=self.max_cg)

    @property
    def weight_depth(self):
        return self.max_cg * self.max_k ** 2


def config_layout(p: DepthwiseParams):
    return data.StructLayout({"lb": lb_config_layout(p.line_buffer),
                              "n_wrows": range(p.weight_depth + 1),
                              "n_prows": range(p.max_cg + 1)})


class DepthwiseArray(wiring.Component):
    """Line buffer + ``vec`` depthwise MAC lanes + requantize drain.

    Members
    -------
    cfg : In(config_layout), start : In(1), busy : Out(1)
        As for :class:`~hw.engine.pointwise.PointwiseArray`; ``cfg`` from :func:`pack_layer`.
    w_stream : In(stream of ``vec`` signed weights)
    p_stream : In(stream of :func:`~hw.engine.requantize.param_layout` rows)
    i_stream : In(stream of :func:`~hw.engine.requantize.vector_layout`)
    o_stream : Out(stream of :func:`~hw.engine.requantize.vector_layout`)
    """

    def __init__(self, params: DepthwiseParams = DepthwiseParams()):
        self.p = p = params
        super().__init__({
            "cfg": In(config_layout(p)),
            "start": In(1),
            "busy": Out(1),
            "w_stream": In(stream.Signature(data.ArrayLayout(signed(p.w_width), p.vec))),
            "p_stream": In(stream.Signature(param_layout(p.vec, p.bias_width))),
            "i_stream": In(stream.Signature(vector_layout(signed(p.a_width), p.vec))),
            "o_stream": Out(stream.Signature(vector_layout(
                signed(p.out_fmt.n_word) if p.out_fmt.signed else p.out_fmt.n_word, p.vec))),
        })

    def elaborate(self, platform):
        m = Module()
        p, cfg, V = self.p, self.cfg, self.p.vec
        m.submodules.lb = lb = LineBuffer(p.line_buffer)
        m.submodules.drain = drain = RequantizeDrain(V, V, p.acc_width, p.bias_width, p.out_fmt,
                                                     p.max_cg)
        wiring.connect(m, wiring.flipped(self.i_stream), lb.i_stream)
        wiring.connect(m, wiring.flipped(self.o_stream), drain.o_stream)
        m.d.comb += [lb.cfg.eq(cfg.lb), lb.start.eq(self.start)]

        m.submodules.wmem = wmem = Memory(shape=data.ArrayLayout(signed(p.w_width), V),
                                          depth=p.weight_depth, init=[])
        w_wr, w_rd = wmem.write_port(), wmem.read_port()

        loading = Signal()
        tail = Signal()
        w_count = Signal(range(p.weight_depth + 1))
        p_count = Signal(range(p.max_cg + 1))
        with m.If(self.start):
            m.d.sync += [loading.eq(1), tail.eq(1), w_count.eq(0), p_count.eq(0)]
        with m.Elif(loading & (w_count == cfg.n_wrows) & (p_count == cfg.n_prows)):
            m.d.sync += loading.eq(0)
        m.d.comb += [self.w_stream.ready.eq(loading & (w_count < cfg.n_wrows)),
                     w_wr.addr.eq(w_count), w_wr.data.eq(self.w_stream.payload),
                     w_wr.en.eq(self.w_stream.valid & self.w_stream.ready)]
        with m.If(w_wr.en):
            m.d.sync += w_count.eq(w_count + 1)
        m.d.comb += [self.p_stream.ready.eq(loading & (p_count < cfg.n_prows)),
                     drain.pw_addr.eq(p_count), drain.pw_data.eq(self.p_stream.payload),
                     drain.pw_en.eq(self.p_stream.valid & self.p_stream.ready)]
        with m.If(drain.pw_en):
            m.d.sync += p_count.eq(p_count + 1)
        with m.If(self.o_stream.valid & self.o_stream.ready & self.o_stream.payload.last):
            m.d.sync += tail.eq(0)
        m.d.comb += self.busy.eq(loading | lb.busy | tail)

        # Taps are taken once the weights are in; the weight row counts taps of one pixel.
        fin_stall = Signal()
        adv = Signal()
        m.d.comb += adv.eq(~fin_stall)
        take = Signal()
        tap = lb.o_stream.payload
        m.d.comb += [lb.o_stream.ready.eq(adv & ~loading & ~self.start),
                     take.eq(lb.o_stream.valid & lb.o_stream.ready)]
        widx = Signal(range(p.weight_depth))
        with m.If(self.start):
            m.d.sync += widx.eq(0)
        with m.Elif(take):
            m.d.sync += widx.eq(widx + 1)
            with m.If(tap.win_last & (tap.cg == cfg.lb.cg - 1)):
                m.d.sync += widx.eq(0)
        m.d.comb += [w_rd.addr.eq(widx), w_rd.en.eq(adv)]

        flags = data.StructLayout({"valid": 1, "first": 1, "last": 1, "cg": range(p.max_cg),
                                   "frame_first": 1, "frame_last": 1})
        f1 = Signal(flags)
        x1 = Signal(data.ArrayLayout(signed(p.a_width), V))
        with m.If(adv):
            m.d.sync += [f1.valid.eq(take), f1.first.eq(tap.win_first), f1.last.eq(tap.win_last),
                         f1.cg.eq(tap.cg), f1.frame_first.eq(tap.frame_first),
                         f1.frame_last.eq(tap.frame_last), x1.eq(tap.data)]
        fin = f1
        for i in range(MAC.latency):
            nxt = Signal(flags, name=f"fin{i}")
            with m.If(adv):
                m.d.sync += nxt.eq(fin)
            fin = nxt

        for lane in range(V):
            mac = MAC(p.a_width, p.w_width, p.acc_width)
            m.submodules[f"mac{lane}"] = mac
            m.d.comb += [mac.en.eq(adv), mac.a.eq(x1[lane]), mac.b.eq(w_rd.data[lane]),
                         mac.first.eq(f1.first), drain.acc[lane].eq(mac.acc)]

        done_win = Signal()
        m.d.comb += [done_win.eq(fin.valid & fin.last),
                     fin_stall.eq(done_win & ~drain.ready),
                     drain.load.eq(done_win), drain.n_beats.eq(1), drain.prow.eq(fin.cg),
                     drain.first.eq(fin.frame_first), drain.last.eq(fin.frame_last)]
        return m


# -- firmware side -------------------------------------------------------------------------

def pack_layer(p: DepthwiseParams, weight, bias, mult, shift, height, width, stride, pad):
    """Weight rows, parameter rows and ``cfg`` for a depthwise layer with ``weight`` of shape
    ``(C, 1, K, K)`` (or ``(C, K, K)``)."""
    w = np.asarray(weight, dtype=np.int64)
    w = w.reshape(w.shape[0], w.shape[-2], w.shape[-1])
    c, k, k2 = w.shape
    if k != k2:
        raise ValueError(f"square kernels only, not {k}x{k2}")
    lim = 1 << (p.w_width - 1)
    if w.min() < -lim or w.max() >= lim:
        raise ValueError(f"weights exceed {p.w_width} bits")
    lb = lb_config(p.line_buffer, c, height, width, k, stride, pad)
    V = p.vec
    rows = [w[g * V:(g + 1) * V, ky, kx].tolist()
            for g in range(c // V) for ky in range(k) for kx in range(k)]
    bias, mult, shift = (np.asarray(v, dtype=np.int64).reshape(-1) for v in (bias, mult, shift))
    prows = [{"bias": bias[i:i + V].tolist(), "m": mult[i:i + V].tolist(),
              "s": shift[i:i + V].tolist()} for i in range(0, c, V)]
    return rows, prows, {"lb": lb, "n_wrows": len(rows), "n_prows": len(prows)}


def layer_cycles(p: DepthwiseParams, channels, height, width, k, stride, pad):
    """Cycle model with full-rate streams (see the module docstring)."""
    cg = channels // p.vec
    out_h = (height + 2 * pad - k) // stride + 1
    out_w = (width + 2 * pad - k) // stride + 1
    load = max(cg * k * k, cg)
    first_rows = min(k - pad, height) * width * cg
    taps = out_h * out_w * cg * k * k
    return {"load": load, "taps": taps,
            "total": max(load, first_rows) + taps + TAP_TO_OUT + 3}
