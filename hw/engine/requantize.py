"""Requantization: accumulator (+ bias) -> ``saturate(floor(acc * M / 2**s + 1/2))``.

This is :func:`quant.ops.requantize` bit for bit (round half up, saturate to an
:class:`~quant.fixedpoint.Fmt`), with ``M`` unsigned below ``2**17`` and ``s`` in ``0..63``.

Exactness of the wide product
-----------------------------
``acc * M`` has ``acc_width + 17`` bits (49 for a 32-bit accumulator), more than one 18x18
multiplier gives. The (biased) accumulator ``t`` is split into 17-bit unsigned chunks and a signed
top chunk of at most 18 bits, ``t = sum(c_i * 2**(17 i))``; every ``c_i * M`` is one
``MULT18X18D`` (both operands fit 18-bit signed), and the partial products are added back with
their shifts in the fabric. A 33-bit ``t`` (32-bit accumulator plus bias) takes two DSPs.

Rounding without a wide constant
--------------------------------
``floor((p + 2**(s-1)) / 2**s) == (floor(p / 2**(s-1)) + 1) >> 1`` for ``s >= 1`` (the
dropped low bits are below half an output step either way), so the rounding is an arithmetic
shift by ``s - 1``, an increment and a shift by one; ``s == 0`` passes ``p`` through.

Pipeline (:data:`LATENCY` = 5 enabled cycles, all registers behind one enable)::

    E0  t = acc + bias                  (DSP input registers)
    E1  c_i * M                         (DSP output registers)
    E2  p = sum(c_i * M << 17 i)
    E3  q = p >> (s - 1)                (barrel shifter)
    E4  y = saturate((q + 1) >> 1)
"""
from amaranth import Cat, Const, Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from quant.fixedpoint import Fmt

M_WIDTH = 17        # multiplier: unsigned, < 2**17, one operand of an 18x18 DSP
S_WIDTH = 6         # shift: 0..63
CHUNK = 17          # low chunks of the accumulator are 17-bit unsigned (18-bit signed operands)
LATENCY = 5


def chunk_widths(t_width: int) -> list:
    """Widths of the multiplier chunks of a ``t_width``-bit signed value (last one signed)."""
    widths = []
    while t_width > 18:
        widths.append(CHUNK)
        t_width -= CHUNK
    return widths + [t_width]


def dsp_count(acc_width: int, bias: bool = True) -> int:
    """``MULT18X18D`` blocks of one requantizer lane."""
    return len(chunk_widths(acc_width + 1 if bias else acc_width))


def fmt_shape(fmt: Fmt):
    return signed(fmt.n_word) if fmt.signed else unsigned(fmt.n_word)


def delay(m, en, value, cycles, name="d"):
    """``value`` delayed by ``cycles`` enabled clock edges (a shift register under ``en``)."""
    for i in range(cycles):
        r = Signal.like(value, name=f"{name}_{i}")
        with m.If(en):
            m.d.sync += r.eq(value)
        value = r
    return value


def requantize_datapath(m, en, acc, mult, shift, fmt: Fmt, bias=None, name="rq"):
    """Build the five requantize stages in ``m`` (all under ``en``); return the output signal.

    ``acc`` and ``bias`` are signed values, ``mult`` ``unsigned(17)``, ``shift`` ``unsigned(6)``.
    The result appears :data:`LATENCY` enabled cycles after the inputs were presented.
    """
    t_width = max(len(acc), len(bias)) + 1 if bias is not None else len(acc)
    t = Signal(signed(t_width), name=f"{name}_t")
    m_r = Signal(M_WIDTH, name=f"{name}_m")
    s0 = Signal(S_WIDTH, name=f"{name}_s0")
    with m.If(en):
        m.d.sync += [t.eq(acc + bias if bias is not None else acc),
                     m_r.eq(mult), s0.eq(shift)]

    # E1: one DSP per chunk.
    widths = chunk_widths(t_width)
    parts, lo = [], 0
    for i, w in enumerate(widths):
        top = i == len(widths) - 1
        c = t[lo:lo + w].as_signed() if top else t[lo:lo + w]
        p = Signal(signed(w + M_WIDTH) if top else unsigned(w + M_WIDTH), name=f"{name}_p{i}")
        with m.If(en):
            m.d.sync += p.eq(c * m_r)
        parts.append((p, lo))
        lo += w
    s1 = delay(m, en, s0, 1, f"{name}_s1")

    # E2: add the partial products back with their weights.
    p_width = t_width + M_WIDTH
    prod = Signal(signed(p_width), name=f"{name}_prod")
    total = 0
    for p, sh in parts:
        total = total + (p << sh if sh else p)
    with m.If(en):
        m.d.sync += prod.eq(total)
    s2 = delay(m, en, s1, 1, f"{name}_s2")

    # E3: shift by s-1 (arithmetic), remember s == 0.
    q = Signal(signed(p_width), name=f"{name}_q")
    z3 = Signal(name=f"{name}_z3")
    with m.If(en):
        m.d.sync += [q.eq(Mux(s2 == 0, prod, prod >> (s2 - 1)[:S_WIDTH])), z3.eq(s2 == 0)]

    # E4: round (increment, halve) and saturate.
    r = Signal(signed(p_width), name=f"{name}_r")
    m.d.comb += r.eq(Mux(z3, q, (q + 1) >> 1))
    y = Signal(fmt_shape(fmt), name=f"{name}_y")
    with m.If(en):
        with m.If(r > fmt.hi):
            m.d.sync += y.eq(fmt.hi)
        with m.Elif(r < fmt.lo):
            m.d.sync += y.eq(fmt.lo)
        with m.Else():
            m.d.sync += y.eq(r)
    return y


def vector_layout(width_shape, lanes):
    """Channel-vector stream payload: ``lanes`` values plus frame markers."""
    return data.StructLayout({"data": data.ArrayLayout(width_shape, lanes),
                              "first": 1, "last": 1})


class Requantizer(wiring.Component):
    """Streaming requantizer, ``lanes`` channels per transfer, each with its own ``M`` and ``s``.

    Parameters
    ----------
    acc_width : int
        Signed accumulator width.
    fmt : Fmt
        Output format (saturation bounds; ``n_frac`` only documents the scale).
    lanes : int
        Values per transfer.

    Members
    -------
    i_stream : In(stream.Signature(...))
        ``acc`` (array of signed), ``m`` (array of unsigned(17)), ``s`` (array of unsigned(6)),
        ``first``/``last`` markers passed through.
    o_stream : Out(stream.Signature(...))
        ``data`` (array of the output format), ``first``, ``last``.
    """
    latency = LATENCY

    def __init__(self, acc_width=32, fmt=Fmt(True, 8, 0), lanes=1):
        if fmt.n_word > 32:
            raise ValueError(f"output format wider than 32 bits is not supported: {fmt!r}")
        self.acc_width, self.fmt, self.lanes = acc_width, fmt, lanes
        in_layout = data.StructLayout({
            "acc": data.ArrayLayout(signed(acc_width), lanes),
            "m": data.ArrayLayout(unsigned(M_WIDTH), lanes),
            "s": data.ArrayLayout(unsigned(S_WIDTH), lanes),
            "first": 1, "last": 1})
        super().__init__({
            "i_stream": In(stream.Signature(in_layout)),
            "o_stream": Out(stream.Signature(vector_layout(fmt_shape(fmt), lanes))),
        })

    def elaborate(self, platform):
        m = Module()
        # One enable for the whole pipeline: it moves whenever the output register is free or
        # being emptied, so valid never waits for ready and a held payload never changes.
        adv = Signal()
        m.d.comb += adv.eq(~self.o_stream.valid | self.o_stream.ready)
        m.d.comb += self.i_stream.ready.eq(adv)
        p = self.i_stream.payload
        for i in range(self.lanes):
            y = requantize_datapath(m, adv, p.acc[i], p.m[i], p.s[i], self.fmt, name=f"rq{i}")
            m.d.comb += self.o_stream.payload.data[i].eq(y)
        tag = Signal(3)
        m.d.comb += tag.eq(Cat(self.i_stream.valid, p.first, p.last))
        tag_out = delay(m, adv, tag, LATENCY, "tag")
        m.d.comb += [self.o_stream.valid.eq(tag_out[0]),
                     self.o_stream.payload.first.eq(tag_out[1]),
                     self.o_stream.payload.last.eq(tag_out[2])]
        return m


def param_layout(lanes, bias_width):
    """One row of per-channel requantize parameters (``lanes`` consecutive channels)."""
    return data.StructLayout({
        "bias": data.ArrayLayout(signed(bias_width), lanes),
        "m": data.ArrayLayout(unsigned(M_WIDTH), lanes),
        "s": data.ArrayLayout(unsigned(S_WIDTH), lanes)})


class RequantizeDrain(wiring.Component):
    """Holds one bank of finished accumulators and streams them out requantized.

    The PE arrays hand over ``n_acc`` accumulators at once (``load`` while ``ready``); the drain
    emits them ``lanes`` at a time (``n_beats`` transfers), adding each channel's bias and
    requantizing with its ``M``/``s`` read from a parameter memory of rows of ``lanes``
    channels (row ``prow + k`` for beat ``k``). The bank frees as soon as its last beat enters
    the requantizer pipeline, so the array can finish the next block meanwhile.

    Members
    -------
    ready : Out(1)
        The bank is free: ``load`` is accepted this cycle.
    load : In(1)
        Take ``acc``, ``n_beats``, ``prow``, ``first`` (the first beat opens a frame) and
        ``last`` (the last beat closes it).
    pw_en, pw_addr, pw_data : In
        Parameter memory write port (rows of :func:`param_layout`).
    o_stream : Out(stream.Signature(vector_layout(...)))
        Requantized channel vectors.
    """

    def __init__(self, n_acc, lanes, acc_width, bias_width, fmt: Fmt, param_depth):
        if n_acc % lanes:
            raise ValueError(f"n_acc ({n_acc}) must be a multiple of lanes ({lanes})")
        self.n_acc, self.lanes, self.acc_width = n_acc, lanes, acc_width
        self.bias_width, self.fmt, self.param_depth = bias_width, fmt, param_depth
        self.p_layout = param_layout(lanes, bias_width)
        super().__init__({
            "ready": Out(1),
            "load": In(1),
            "acc": In(data.ArrayLayout(signed(acc_width), n_acc)),
            "n_beats": In(range(n_acc // lanes + 1)),
            "prow": In(range(param_depth)),
            "first": In(1),
            "last": In(1),
            "pw_en": In(1),
            "pw_addr": In(range(param_depth)),
            "pw_data": In(self.p_layout),
            "o_stream": Out(stream.Signature(vector_layout(fmt_shape(fmt), lanes))),
        })

    def elaborate(self, platform):
        m = Module()
        L, N = self.lanes, self.n_acc
        m.submodules.params = mem = Memory(shape=self.p_layout, depth=self.param_depth, init=[])
        wp = mem.write_port()
        m.d.comb += [wp.en.eq(self.pw_en), wp.addr.eq(self.pw_addr), wp.data.eq(self.pw_data)]
        rp = mem.read_port()

        adv = Signal()
        m.d.comb += adv.eq(~self.o_stream.valid | self.o_stream.ready)

        bank = Signal(data.ArrayLayout(signed(self.acc_width), N))
        left = Signal(range(N // L + 1))        # beats still to emit from the bank
        row = Signal(range(self.param_depth))
        is_first = Signal()
        is_last = Signal()
        m.d.comb += self.ready.eq(left == 0)

        # Stage D: the bank's head beat goes into the parameter read (and its accumulators into
        # a register that lines up with the read data).
        issue = Signal()
        m.d.comb += [issue.eq(adv & (left != 0)), rp.en.eq(adv), rp.addr.eq(row)]
        d_valid = Signal()
        d_acc = Signal(data.ArrayLayout(signed(self.acc_width), L))
        d_first = Signal()
        d_last = Signal()
        with m.If(adv):
            m.d.sync += [d_valid.eq(issue), d_acc.eq(bank.as_value()[:L * self.acc_width]),
                         d_first.eq(is_first), d_last.eq(is_last & (left == 1))]
        with m.If(self.load & self.ready):
            m.d.sync += [bank.eq(self.acc), left.eq(self.n_beats), row.eq(self.prow),
                         is_first.eq(self.first), is_last.eq(self.last)]
        with m.Elif(issue):
            m.d.sync += [bank.as_value().eq(bank.as_value() >> (L * self.acc_width)),
                         left.eq(left - 1), row.eq(row + 1), is_first.eq(0)]

        for i in range(L):
            y = requantize_datapath(m, adv, d_acc[i], rp.data.m[i], rp.data.s[i], self.fmt,
                                    bias=rp.data.bias[i], name=f"rq{i}")
            m.d.comb += self.o_stream.payload.data[i].eq(y)
        tag = Signal(3)
        m.d.comb += tag.eq(Cat(d_valid, d_first, d_last))
        tag_out = delay(m, adv, tag, LATENCY, "tag")
        m.d.comb += [self.o_stream.valid.eq(tag_out[0]),
                     self.o_stream.payload.first.eq(tag_out[1]),
                     self.o_stream.payload.last.eq(tag_out[2])]
        return m
