"""Line buffer: K x K windows over a raster-order stream of channel vectors.

The input arrives as ``vec``-channel vectors, ``cg = C / vec`` transfers per pixel, pixels in
raster order. Rows are kept in a ring of ``n_slots`` row slots of ``row_words = W * cg`` words in
one memory (``vec * a_width`` bits wide); the writer puts input row ``iy`` in slot
``iy mod n_slots`` and may run ahead of the reader by up to ``n_slots`` rows.

The reader walks, for each output pixel ``(oy, ox)``, each channel group ``cg`` and each tap
``(ky, kx)`` in raster order, the input pixel ``(oy*stride - pad + ky, ox*stride - pad + kx)``:
one tap per cycle, zero when it falls in the padding. That covers zero padding 1 with stride 1
and 2 (3x3 depthwise) and the 7x7 valid GDConv (pad 0, one output pixel) with the same logic;
addresses come from incremental counters (no multiplier). A row may be overwritten once the
reader's current output row no longer needs it, so with ``n_slots >= K + stride`` the writer
never waits for the reader when the reader is the slower side (it reads ``K*K`` taps per output
pixel).

Output transfer (``tap_layout``): ``vec`` values plus ``win_first`` / ``win_last`` (first and
last tap of one channel group's window), ``cg`` (the group), ``frame_first`` (every tap of the
frame's first window) / ``frame_last`` (the frame's last tap).
"""
from dataclasses import dataclass

from amaranth import Module, Mux, Signal, signed
from amaranth.lib import data, stream, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from hw.engine.requantize import vector_layout


@dataclass(frozen=True)
class LineBufferParams:
    vec: int = 8                # channels per transfer (= depthwise lanes)
    a_width: int = 8
    depth: int = 4096           # ring words (vec channels each)
    max_k: int = 7
    max_size: int = 112         # largest H and W
    max_cg: int = 64            # largest C / vec

    def __post_init__(self):
        if self.depth < 2:
            raise ValueError(f"depth must be at least 2 words, not {self.depth!r}")


def lb_config_layout(p: LineBufferParams):
    S = p.max_size
    return data.StructLayout({
        "height": range(S + 1), "width": range(S + 1), "cg": range(1, p.max_cg + 1),
        "k": range(1, p.max_k + 1), "stride2": 1, "pad": 1,
        "out_h": range(S + 1), "out_w": range(S + 1),
        "row_words": range(p.depth + 1), "ring_words": range(p.depth + 1),
        "n_slots": range(p.depth + 1),
    })


def tap_layout(p: LineBufferParams):
    return data.StructLayout({
        "data": data.ArrayLayout(signed(p.a_width), p.vec),
        "win_first": 1, "win_last": 1, "cg": range(p.max_cg),
        "frame_first": 1, "frame_last": 1})


def lb_config(p: LineBufferParams, channels, height, width, k, stride, pad):
    """``cfg`` values for one layer; raises ValueError naming what does not fit."""
    if channels % p.vec:
        raise ValueError(f"channels ({channels}) must be a multiple of vec={p.vec}")
    if stride not in (1, 2):
        raise ValueError(f"stride must be 1 or 2, not {stride!r}")
    if pad not in (0, 1):
        raise ValueError(f"pad must be 0 or 1, not {pad!r}")
    if not 1 <= k <= p.max_k:
        raise ValueError(f"kernel {k} exceeds max_k={p.max_k}")
    if max(height, width) > p.max_size or channels // p.vec > p.max_cg:
        raise ValueError(f"layer {channels}x{height}x{width} exceeds the line buffer's "
                         f"max_size={p.max_size} / max_cg={p.max_cg}")
    cg = channels // p.vec
    rw = width * cg
    n_slots = min(p.depth // rw, height + 2)
    if n_slots < min(k, height):
        raise ValueError(f"line buffer depth {p.depth} holds {p.depth // rw} rows of "
                         f"{rw} words; a {k}x{k} window needs {k}")
    out_h = (height + 2 * pad - k) // stride + 1
    out_w = (width + 2 * pad - k) // stride + 1
    return {"height": height, "width": width, "cg": cg, "k": k, "stride2": int(stride == 2),
            "pad": pad, "out_h": out_h, "out_w": out_w, "row_words": rw,
            "ring_words": n_slots * rw, "n_slots": n_slots}


class LineBuffer(wiring.Component):
    """Ring-of-rows line buffer with a tap-sequential reader.

    Members
    -------
    cfg : In(lb_config_layout)
        From :func:`lb_config`, stable while ``busy``.
    start : In(1)
    busy : Out(1)
        From ``start`` until the last tap has been transferred.
    i_stream : In(stream of :func:`~hw.engine.requantize.vector_layout`)
    o_stream : Out(stream of :func:`tap_layout`)
    """

    def __init__(self, params: LineBufferParams = LineBufferParams()):
        self.p = params
        super().__init__({
            "cfg": In(lb_config_layout(params)),
            "start": In(1),
            "busy": Out(1),
            "i_stream": In(stream.Signature(vector_layout(signed(params.a_width), params.vec))),
            "o_stream": Out(stream.Signature(tap_layout(params))),
        })

    def elaborate(self, platform):
        m = Module()
        p, cfg = self.p, self.cfg
        S = p.max_size
        m.submodules.ring = ring = Memory(shape=data.ArrayLayout(signed(p.a_width), p.vec),
                                          depth=p.depth, init=[])
        wr, rd = ring.write_port(), ring.read_port()
        aw = signed(p.depth.bit_length() + 2)     # signed address arithmetic (padding < 0)
        pw = signed(S.bit_length() + 2)

        # -- reader state (declared first: the writer looks at low_row) --------------------------
        reading = Signal()
        oy = Signal(range(S + 1))
        ox = Signal(range(S + 1))
        cgi = Signal(range(p.max_cg))
        ky = Signal(range(p.max_k))
        kx = Signal(range(p.max_k))
        iy0 = Signal(pw)        # oy*stride - pad: the window's top row, also the lowest needed
        ix0 = Signal(pw)
        rb0 = Signal(aw)        # ring offset of row iy0
        cb0 = Signal(aw)        # ix0 * cg
        rb = Signal(aw)
        cb = Signal(aw)
        need = Signal(pw)       # rows that must be complete before row oy can be read

        # -- writer --------------------------------------------------------------------------
        writing = Signal()
        w_row = Signal(range(S + 1))
        w_word = Signal(range(p.depth + 1))
        wp = Signal(range(p.depth + 1))
        room = Signal()
        m.d.comb += room.eq(~reading | (w_row < iy0 + cfg.n_slots))
        m.d.comb += [self.i_stream.ready.eq(writing & (w_row < cfg.height) & room),
                     wr.addr.eq(wp), wr.data.eq(self.i_stream.payload.data),
                     wr.en.eq(self.i_stream.valid & self.i_stream.ready)]
        with m.If(wr.en):
            m.d.sync += wp.eq(Mux(wp == cfg.ring_words - 1, 0, wp + 1))
            with m.If(w_word == cfg.row_words - 1):
                m.d.sync += [w_word.eq(0), w_row.eq(w_row + 1)]
            with m.Else():
                m.d.sync += w_word.eq(w_word + 1)

        # -- reader --------------------------------------------------------------------------
        o_valid = Signal()
        adv = Signal()
        m.d.comb += [adv.eq(~self.o_stream.valid | self.o_stream.ready),
                     self.o_stream.valid.eq(o_valid)]
        stride = Signal(range(3))
        m.d.comb += stride.eq(Mux(cfg.stride2, 2, 1))

        issue = Signal()
        m.d.comb += issue.eq(reading & adv & (w_row >= need))
        iy = Signal(pw)
        ix = Signal(pw)
        inside = Signal()
        m.d.comb += [iy.eq(iy0 + ky), ix.eq(ix0 + kx),
                     inside.eq((iy >= 0) & (iy < cfg.height) & (ix >= 0) & (ix < cfg.width)),
                     rd.addr.eq(rb + cb + cgi), rd.en.eq(adv)]

        def wrap(v):
            return Mux(v >= cfg.ring_words, v - cfg.ring_words, v)

        # Padding is 0 or 1 and the stride 1 or 2, so no runtime product is needed.
        rb_start = Signal(aw)
        cb_start = Signal(aw)
        cg_step = Signal(aw)
        m.d.comb += [rb_start.eq(Mux(cfg.pad, cfg.ring_words - cfg.row_words, 0)),
                     cb_start.eq(Mux(cfg.pad, -cfg.cg, 0)),
                     cg_step.eq(Mux(cfg.stride2, cfg.cg << 1, cfg.cg))]
        last_kx = kx == cfg.k - 1
        last_ky = ky == cfg.k - 1
        last_cg = cgi == cfg.cg - 1
        last_ox = ox == cfg.out_w - 1
        last_oy = oy == cfg.out_h - 1

        with m.If(self.start):
            m.d.sync += [writing.eq(1), w_row.eq(0), w_word.eq(0), wp.eq(0),
                         reading.eq(1), oy.eq(0), ox.eq(0), cgi.eq(0), ky.eq(0), kx.eq(0),
                         iy0.eq(-cfg.pad), ix0.eq(-cfg.pad),
                         rb0.eq(rb_start), rb.eq(rb_start), cb0.eq(cb_start), cb.eq(cb_start),
                         need.eq(Mux(cfg.k - cfg.pad < cfg.height, cfg.k - cfg.pad,
                                     cfg.height))]
        with m.Elif(issue):
            m.d.sync += [kx.eq(kx + 1), cb.eq(cb + cfg.cg)]
            with m.If(last_kx):
                m.d.sync += [kx.eq(0), cb.eq(cb0), ky.eq(ky + 1), rb.eq(wrap(rb + cfg.row_words))]
                with m.If(last_ky):
                    m.d.sync += [ky.eq(0), rb.eq(rb0), cgi.eq(cgi + 1)]
                    with m.If(last_cg):
                        m.d.sync += [cgi.eq(0), ox.eq(ox + 1), ix0.eq(ix0 + stride),
                                     cb0.eq(cb0 + cg_step), cb.eq(cb0 + cg_step)]
                        with m.If(last_ox):
                            nrb = wrap(wrap(rb0 + cfg.row_words) + Mux(cfg.stride2, cfg.row_words, 0))
                            nneed = need + stride
                            m.d.sync += [ox.eq(0), ix0.eq(-cfg.pad),
                                         cb0.eq(cb_start), cb.eq(cb_start),
                                         oy.eq(oy + 1), iy0.eq(iy0 + stride),
                                         rb0.eq(nrb), rb.eq(nrb),
                                         need.eq(Mux(nneed < cfg.height, nneed, cfg.height))]
                            with m.If(last_oy):
                                m.d.sync += reading.eq(0)

        flags = Signal(data.StructLayout({"inside": 1, "win_first": 1, "win_last": 1,
                                          "cg": range(p.max_cg), "frame_first": 1,
                                          "frame_last": 1}))
        with m.If(adv):
            m.d.sync += [o_valid.eq(issue), flags.inside.eq(inside),
                         flags.win_first.eq((kx == 0) & (ky == 0)),
                         flags.win_last.eq(last_kx & last_ky), flags.cg.eq(cgi),
                         flags.frame_first.eq((oy == 0) & (ox == 0) & (cgi == 0)),
                         flags.frame_last.eq(last_kx & last_ky & last_cg & last_ox & last_oy)]
        o = self.o_stream.payload
        m.d.comb += [o.win_first.eq(flags.win_first), o.win_last.eq(flags.win_last),
                     o.cg.eq(flags.cg), o.frame_first.eq(flags.frame_first),
                     o.frame_last.eq(flags.frame_last)]
        for i in range(p.vec):
            m.d.comb += o.data[i].eq(Mux(flags.inside, rd.data[i], 0))

        m.d.comb += self.busy.eq(reading | o_valid | (writing & (w_row < cfg.height)))
        return m
