"""Grouped pointwise (1x1 convolution) PE array.

One layer at a time: the layer's weights stream into on-chip memory (``w_stream``, one row of
``lanes`` weights per transfer) and its per-channel bias/``M``/``s`` into the requantize drain
(``p_stream``); then pixels stream in as channel vectors (``i_stream``, ``vec`` channels per
transfer, raster order, ``in_c / vec`` transfers per pixel) and the requantized output pixels
stream out the same way (``o_stream``).

Schedule (output-stationary, weight rows read in order)
-------------------------------------------------------
For each pixel, for each group ``g``, for each block of up to ``lanes`` output channels, for
each of the group's input channels ``t``: every lane ``p`` does ``acc[p] += x[in_start_g + t] *
w[row][p]``, the input value being broadcast to all lanes. The weight memory is read
sequentially (``row`` counts up through the pixel and restarts at the next), so the firmware
lays the rows out in exactly this order (:func:`pack_layer`). A finished block (``lanes``
accumulators) goes to a :class:`~hw.engine.requantize.RequantizeDrain`, which adds the bias,
requantizes and emits ``vec`` channels per cycle while the array computes the next block.
Cycles per block: ``max(in_count_g, ceil(block_channels / vec))``.

Groups
------
A group descriptor ``(in_start, in_count, out_count)`` per group, output channels contiguous
in group order. Dense 1x1 (MobileFaceNet, conv_6_sep, the final linear layer, SE FCs) is one
group; Seesaw's uneven expansion is ``[(0, in/4, E/4), (in/4, 3 in/4, 3E/4)]``; the shuffle
projection ``[(0, E/4, out/4), (E/4, 3E/4, 3 out/4)]``; the share projection
``[(0, 3E/4, 3 out/4), (3E/4, E/4, out/4)]``.

Where the channel shuffle is
----------------------------
In the *consumer* pointwise, as a read-address remap of its input pixel buffer
(``cfg.shuffle_in``): input channel ``q`` is read from stored channel ``(q >> 1) + (q & 1) *
C/2``, which is :func:`quant.ops.shuffle` with 2 groups. The expansion writes its output in
natural order; the depthwise layer, SE and channel scale between expansion and projection are
per-channel, so the firmware permutes their parameters (depthwise weights, bias, M, s, SE FC1
columns and FC2 rows) by the same permutation and the whole block stays bit-exact. No extra
buffer, no bank conflicts on vector writes.

Latency: a pixel's first output leaves ``ISSUE_TO_OUT`` cycles after its last input channel of
the first block was issued, if the output is not stalled.
"""
from dataclasses import dataclass

import numpy as np
from amaranth import Module, Mux, Signal, signed
from amaranth.lib import data, stream, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from quant.fixedpoint import Fmt

from hw.engine.mac import MAC
from hw.engine.requantize import LATENCY as RQ_LATENCY
from hw.engine.requantize import RequantizeDrain, param_layout, vector_layout

# issue -> memory data (1) -> MAC (3) -> drain stage D (1) -> requantize (5)
ISSUE_TO_OUT = 1 + MAC.latency + 1 + RQ_LATENCY


@dataclass(frozen=True)
class PointwiseParams:
    """Build-time parameters of the array (from a board's engine configuration)."""
    lanes: int = 32             # output-channel MAC lanes (one MULT18X18D each)
    vec: int = 8                # channels per stream transfer (= requantizer lanes)
    a_width: int = 8            # activation width (s8; 16 for s16 tensors)
    w_width: int = 8            # weight width
    acc_width: int = 32
    bias_width: int = 32
    out_fmt: Fmt = Fmt(True, 8, 0)
    weight_depth: int = 2048    # weight rows (one DP16KD 2048x9 deep)
    max_in: int = 512           # largest in_c
    max_out: int = 512          # largest out_c
    max_groups: int = 2
    max_pixels: int = 112 * 112

    def __post_init__(self):
        if self.vec & (self.vec - 1):
            raise ValueError(f"vec must be a power of two, not {self.vec!r}")
        if self.lanes % self.vec:
            raise ValueError(f"lanes ({self.lanes}) must be a multiple of vec ({self.vec})")
        for name in ("max_in", "max_out"):
            if getattr(self, name) % self.vec:
                raise ValueError(f"{name} must be a multiple of vec ({self.vec}), "
                                 f"not {getattr(self, name)!r}")


def config_layout(p: PointwiseParams):
    G = p.max_groups
    return data.StructLayout({
        "n_pixels": range(p.max_pixels + 1),
        "in_words": range(p.max_in // p.vec + 1),
        "n_groups": range(1, G + 1),
        "in_start": data.ArrayLayout(range(p.max_in), G),
        "in_count": data.ArrayLayout(range(p.max_in + 1), G),
        "out_count": data.ArrayLayout(range(p.max_out + 1), G),
        "n_rows": range(p.weight_depth + 1),
        "n_prows": range(p.max_out // p.vec + 1),
        "shuffle_in": 1,
        "half": range(p.max_in),
    })


class PointwiseArray(wiring.Component):
    """Grouped 1x1 convolution, ``lanes`` output channels in parallel, bit-exact with
    ``quant.ops.conv`` + ``quant.ops.requantize`` (+ ``quant.ops.shuffle`` on the input).

    Members
    -------
    cfg : In(config_layout)
        Layer descriptor, held stable from ``start`` until ``busy`` falls (:func:`pack_layer`).
    start : In(1)
        Begin a layer: load ``cfg.n_rows`` weight rows and ``cfg.n_prows`` parameter rows,
        then compute ``cfg.n_pixels`` pixels.
    busy : Out(1)
        High from ``start`` until the layer's last output transfer.
    w_stream : In(stream of ``lanes`` signed weights)
    p_stream : In(stream of :func:`~hw.engine.requantize.param_layout` rows, ``vec`` channels each)
    i_stream : In(stream of :func:`~hw.engine.requantize.vector_layout`); markers are ignored
    o_stream : Out(stream of :func:`~hw.engine.requantize.vector_layout`); ``first`` on the layer's
        first transfer, ``last`` on its last.
    """

    def __init__(self, params: PointwiseParams = PointwiseParams()):
        self.p = p = params
        super().__init__({
            "cfg": In(config_layout(p)),
            "start": In(1),
            "busy": Out(1),
            "w_stream": In(stream.Signature(data.ArrayLayout(signed(p.w_width), p.lanes))),
            "p_stream": In(stream.Signature(param_layout(p.vec, p.bias_width))),
            "i_stream": In(stream.Signature(vector_layout(signed(p.a_width), p.vec))),
            "o_stream": Out(stream.Signature(vector_layout(
                signed(p.out_fmt.n_word) if p.out_fmt.signed else p.out_fmt.n_word, p.vec))),
        })

    def elaborate(self, platform):
        m = Module()
        p, cfg = self.p, self.cfg
        P, V = p.lanes, p.vec
        IW = p.max_in // V

        m.submodules.drain = drain = RequantizeDrain(P, V, p.acc_width, p.bias_width, p.out_fmt,
                                                     p.max_out // V)
        wiring.connect(m, wiring.flipped(self.o_stream), drain.o_stream)
        m.submodules.wmem = wmem = Memory(shape=data.ArrayLayout(signed(p.w_width), P),
                                          depth=p.weight_depth, init=[])
        m.submodules.xmem = xmem = Memory(shape=data.ArrayLayout(signed(p.a_width), V),
                                          depth=2 * IW, init=[])
        w_wr, w_rd = wmem.write_port(), wmem.read_port()
        x_wr, x_rd = xmem.write_port(), xmem.read_port()

        # -- layer state -------------------------------------------------------------------
        loading = Signal()
        running = Signal()      # issuing MAC rows
        busy_tail = Signal()    # from start until the layer's last output transfer
        m.d.comb += self.busy.eq(loading | running | busy_tail)
        w_count = Signal(range(p.weight_depth + 1))
        p_count = Signal(range(p.max_out // V + 1))

        with m.If(self.start):
            m.d.sync += [loading.eq(1), w_count.eq(0), p_count.eq(0)]

        # Weight and parameter loads (concurrent).
        m.d.comb += [self.w_stream.ready.eq(loading & (w_count < cfg.n_rows)),
                     w_wr.addr.eq(w_count), w_wr.data.eq(self.w_stream.payload),
                     w_wr.en.eq(self.w_stream.valid & self.w_stream.ready)]
        with m.If(w_wr.en):
            m.d.sync += w_count.eq(w_count + 1)
        m.d.comb += [self.p_stream.ready.eq(loading & (p_count < cfg.n_prows)),
                     drain.pw_addr.eq(p_count), drain.pw_data.eq(self.p_stream.payload),
                     drain.pw_en.eq(self.p_stream.valid & self.p_stream.ready)]
        with m.If(drain.pw_en):
            m.d.sync += p_count.eq(p_count + 1)

        # -- input pixel writer: two banks, filled while the other one is computed ------------
        full = Signal(2)
        wbank = Signal()
        w_word = Signal(range(IW + 1))
        pix_in = Signal(range(p.max_pixels + 1))
        writer_on = Signal()
        with m.If(self.start):
            m.d.sync += [writer_on.eq(1), pix_in.eq(0), w_word.eq(0), wbank.eq(0)]
        m.d.comb += [self.i_stream.ready.eq(writer_on & ~full.bit_select(wbank, 1)
                                            & (pix_in < cfg.n_pixels)),
                     x_wr.addr.eq(Mux(wbank, IW, 0) + w_word),
                     x_wr.data.eq(self.i_stream.payload.data),
                     x_wr.en.eq(self.i_stream.valid & self.i_stream.ready)]
        release = Signal(2)     # set by the issue stage when a bank's last row is read
        set_full = Signal(2)
        with m.If(x_wr.en):
            with m.If(w_word == cfg.in_words - 1):
                m.d.sync += [w_word.eq(0), wbank.eq(~wbank), pix_in.eq(pix_in + 1)]
                m.d.comb += set_full.eq(Mux(wbank, 0b10, 0b01))
            with m.Else():
                m.d.sync += w_word.eq(w_word + 1)
        with m.If(self.start):
            m.d.sync += full.eq(0)
        with m.Else():
            m.d.sync += full.eq((full | set_full) & ~release)

        # -- issue stage ----------------------------------------------------------------------
        fin_stall = Signal()
        adv = Signal()
        m.d.comb += adv.eq(~fin_stall)

        cbank = Signal()
        pix = Signal(range(p.max_pixels + 1))
        g = Signal(range(p.max_groups))
        t = Signal(range(p.max_in + 1))
        rem = Signal(range(p.max_out + 1))      # output channels of group g not yet blocked
        row = Signal(range(p.weight_depth))
        prow = Signal(range(p.max_out // V + 1))
        first_block = Signal()

        with m.If(loading & (w_count == cfg.n_rows) & (p_count == cfg.n_prows) & ~self.start):
            m.d.sync += [loading.eq(0), running.eq(cfg.n_pixels != 0), cbank.eq(0), pix.eq(0),
                         g.eq(0), t.eq(0), rem.eq(cfg.out_count[0]), row.eq(0), prow.eq(0),
                         first_block.eq(1)]

        issue = Signal()
        m.d.comb += issue.eq(running & adv & full.bit_select(cbank, 1))

        c = Signal(range(p.max_in))
        cs = Signal(range(p.max_in))
        m.d.comb += [c.eq(cfg.in_start[g] + t),
                     cs.eq(Mux(cfg.shuffle_in, (c >> 1) + Mux(c[0], cfg.half, 0), c)),
                     x_rd.addr.eq(Mux(cbank, IW, 0) + (cs >> (V.bit_length() - 1))),
                     x_rd.en.eq(adv), w_rd.addr.eq(row), w_rd.en.eq(adv)]

        last_t = Signal()
        last_blk = Signal()
        last_grp = Signal()
        last_pix = Signal()
        blk = Signal(range(P + 1))
        m.d.comb += [last_t.eq(t == cfg.in_count[g] - 1),
                     last_blk.eq(rem <= P),
                     last_grp.eq(g == cfg.n_groups - 1),
                     last_pix.eq(pix == cfg.n_pixels - 1),
                     blk.eq(Mux(rem < P, rem, P))]

        with m.If(issue):
            m.d.sync += [t.eq(t + 1), row.eq(row + 1)]
            with m.If(last_t):
                m.d.sync += [t.eq(0), rem.eq(rem - P), prow.eq(prow + (blk >> (V.bit_length() - 1))),
                             first_block.eq(0)]
                with m.If(last_blk):
                    m.d.sync += [g.eq(g + 1), rem.eq(cfg.out_count[g + 1])]
                    with m.If(last_grp):
                        m.d.sync += [g.eq(0), rem.eq(cfg.out_count[0]), row.eq(0), prow.eq(0),
                                     cbank.eq(~cbank), pix.eq(pix + 1)]
                        m.d.comb += release.eq(Mux(cbank, 0b10, 0b01))
                        with m.If(last_pix):
                            m.d.sync += running.eq(0)

        # Flags travel with the operands: stage 1 (memory data), then MAC.latency more.
        flags = data.StructLayout({"valid": 1, "first": 1, "last": 1, "sel": range(V),
                                   "beats": range(P // V + 1), "prow": range(p.max_out // V + 1),
                                   "frame_first": 1, "frame_last": 1})
        f0 = Signal(flags)
        m.d.comb += [f0.valid.eq(issue), f0.first.eq(t == 0), f0.last.eq(last_t),
                     f0.sel.eq(cs[:max(1, V.bit_length() - 1)] if V > 1 else 0),
                     f0.beats.eq(blk >> (V.bit_length() - 1)), f0.prow.eq(prow),
                     f0.frame_first.eq(first_block),
                     f0.frame_last.eq(last_blk & last_grp & last_pix)]
        f1 = Signal(flags)
        with m.If(adv):
            m.d.sync += f1.eq(f0)
        fin = f1
        for i in range(MAC.latency):
            nxt = Signal(flags, name=f"fin{i}")
            with m.If(adv):
                m.d.sync += nxt.eq(fin)
            fin = nxt

        x_val = Signal(signed(p.a_width))
        m.d.comb += x_val.eq(x_rd.data[f1.sel])
        accs = []
        for lane in range(P):
            mac = MAC(p.a_width, p.w_width, p.acc_width)
            m.submodules[f"mac{lane}"] = mac
            m.d.comb += [mac.en.eq(adv), mac.a.eq(x_val), mac.b.eq(w_rd.data[lane]),
                         mac.first.eq(f1.first)]
            accs.append(mac.acc)

        # Hand the finished block to the drain; the array waits while the drain is full.
        done_blk = Signal()
        m.d.comb += [done_blk.eq(fin.valid & fin.last),
                     fin_stall.eq(done_blk & ~drain.ready),
                     drain.load.eq(done_blk),
                     drain.n_beats.eq(fin.beats), drain.prow.eq(fin.prow),
                     drain.first.eq(fin.frame_first), drain.last.eq(fin.frame_last)]
        for lane in range(P):
            m.d.comb += drain.acc[lane].eq(accs[lane])

        # The layer ends with its last output transfer.
        with m.If(self.o_stream.valid & self.o_stream.ready & self.o_stream.payload.last):
            m.d.sync += busy_tail.eq(0)
        with m.If(self.start):
            m.d.sync += busy_tail.eq(1)
        return m


# -- firmware side: lay out one layer --------------------------------------------------------

def pack_layer(p: PointwiseParams, groups, bias, mult, shift, in_c, n_pixels, shuffle_in=False):
    """Weight rows, parameter rows and ``cfg`` for one layer.

    ``groups`` is a list of ``(in_start, weight)`` with ``weight`` an integer array
    ``(out_g, in_g)``; output channels are the groups' outputs concatenated. ``bias``, ``mult``,
    ``shift`` are per output channel.

    Raises
    ------
    ValueError
        naming the offending group or size when the layer does not fit these parameters.
    """
    if not 1 <= len(groups) <= p.max_groups:
        raise ValueError(f"{len(groups)} groups; this array takes 1..{p.max_groups}")
    if in_c % p.vec or in_c > p.max_in:
        raise ValueError(f"in_c must be a multiple of vec={p.vec} up to {p.max_in}, not {in_c}")
    if shuffle_in and in_c % 2:
        raise ValueError(f"the shuffle needs an even in_c, not {in_c}")
    rows, cfg_groups = [], []
    for gi, (start, w) in enumerate(groups):
        w = np.asarray(w, dtype=np.int64)
        og, ig = w.shape
        if og % p.vec:
            raise ValueError(f"group {gi}: out channels ({og}) must be a multiple of vec={p.vec}")
        if start + ig > in_c:
            raise ValueError(f"group {gi}: inputs {start}..{start + ig} exceed in_c={in_c}")
        lim = 1 << (p.w_width - 1)
        if w.size and (w.min() < -lim or w.max() >= lim):
            raise ValueError(f"group {gi}: weights exceed {p.w_width} bits")
        for b in range(0, og, p.lanes):
            blk = np.zeros((ig, p.lanes), dtype=np.int64)
            blk[:, :min(p.lanes, og - b)] = w[b:b + p.lanes].T
            rows.extend(blk.tolist())
        cfg_groups.append((start, ig, og))
    out_c = sum(g[2] for g in cfg_groups)
    if out_c > p.max_out:
        raise ValueError(f"out_c={out_c} exceeds max_out={p.max_out}")
    if len(rows) > p.weight_depth:
        raise ValueError(f"{len(rows)} weight rows exceed weight_depth={p.weight_depth}: "
                         "split the layer's output channels into passes")
    bias, mult, shift = (np.asarray(v, dtype=np.int64).reshape(-1) for v in (bias, mult, shift))
    prows = [{"bias": bias[i:i + p.vec].tolist(), "m": mult[i:i + p.vec].tolist(),
              "s": shift[i:i + p.vec].tolist()} for i in range(0, out_c, p.vec)]
    G = p.max_groups
    pad = [(0, 0, 0)] * (G - len(cfg_groups))
    cfg = {"n_pixels": n_pixels, "in_words": in_c // p.vec, "n_groups": len(groups),
           "in_start": [g[0] for g in cfg_groups + pad],
           "in_count": [g[1] for g in cfg_groups + pad],
           "out_count": [g[2] for g in cfg_groups + pad],
           "n_rows": len(rows), "n_prows": len(prows), "shuffle_in": int(shuffle_in),
           "half": in_c // 2}
    return rows, prows, cfg


def layer_cycles(p: PointwiseParams, groups, in_c, n_pixels):
    """Cycle model of one layer with full-rate streams: ``groups`` as ``(in_count, out_count)``.

    Load (weights and parameters concurrently) + first pixel's input + per pixel
    ``max(sum over blocks of max(in_count, beats), in_words)`` + pipeline latency.
    """
    rows = sum(-(-og // p.lanes) * ig for ig, og in groups)
    prows = sum(og for _, og in groups) // p.vec
    per_pixel = 0
    for ig, og in groups:
        for b in range(0, og, p.lanes):
            per_pixel += max(ig, min(p.lanes, og - b) // p.vec)
    in_words = in_c // p.vec
    per_pixel = max(per_pixel, in_words)
    load = max(rows, prows)
    return {"load": load, "per_pixel": per_pixel,
            "total": load + 1 + n_pixels * per_pixel + ISSUE_TO_OUT + 2}
