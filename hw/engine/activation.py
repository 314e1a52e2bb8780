"""The activation unit: swish or sigmoid on a stream of raw codes, as a table or a CORDIC.

Both forms compute exactly :func:`quant.activation.table` for their
:class:`~quant.activation.ActivationSpec` (the cocotb tests check every 8-bit code).

``ActivationLUT``
    A ROM of ``2**in_fmt.n_word`` output codes with a registered read: one result per cycle,
    latency 1. 256 x 8 bits is 2 Kbit (one DP16KD, or LUT RAM if yosys prefers); a 16-bit input
    is 64 K entries (32 to 64 DP16KD), which is why the CORDIC form exists.

``ActivationCORDIC``
    A fully pipelined datapath, one result per cycle, with no multiplier apart from the argument
    reduction's constant multiply and swish's final multiply (each with registered inputs and
    output, so each maps onto one pipelined MULT18X18D). Stages, for ``M`` hyperbolic
    micro-rotations (``N`` plus the repeats: 18 for ``N = 16``) and ``Fs = N``:

    ====================  ======  ================================================
    stage                 cycles  registers
    ====================  ======  ================================================
    input                 1       ``q``, ``|q|``, sign
    k multiply            1       ``|q| * round(2^16/ln 2)``
    k, saturation         1       ``k``, ``sat``
    reduction             1       ``r = |q| 2^(F-f_in) - k ln2`` (W bits)
    hyperbolic rotation   M       ``x``, ``y``, ``z`` (W bits each)
    e^-|q| and operands   3       ``e = cosh - sinh``; ``E = e / 2^k`` rounded;
                                  ``num``, ``den`` (``F + 3`` bits)
    linear vectoring      Fs + 1  residual ``Y`` (``F + 4``), quotient ``Z`` (``Fs + 2``)
    quotient correction   1       ``S`` (``Fs + 1`` bits)
    output                1 / 2   sigmoid: round + saturate; swish: product, round + saturate
    ====================  ======  ================================================

    Latency (:attr:`ActivationCORDIC.latency`) with the defaults (N = 16, W = 24) is 44 cycles
    for sigmoid and 45 for swish.

Measured resources (yosys 0.70 ``synth_ecp5``, then nextpnr-ecp5 out of context on the
LFE5U-85F speed 6; ``pytest -m synthesis tests/test_hw_activation.py`` checks the yosys side):

=========================  ==============  ======  ==========  =====  =======
unit                       TRELLIS_COMB    FF      MULT18X18D  EBR    Fmax
=========================  ==============  ======  ==========  =====  =======
CORDIC swish s8/4, N16W24  3677 (4.4 %)    2833    2           0      113 MHz
LUT s8 -> s8               64 LUT4 + muxes 9       0           0
LUT s12 -> s8              2 LUT4          1       0           2
=========================  ==============  ======  ==========  =====  =======

Flow control (both forms): every register advances together when ``o_stream`` can move
(``~o_stream.valid | o_stream.ready``), and that same signal is ``i_stream.ready``. A stall
therefore freezes the whole pipeline; bubbles are not squeezed out. ``i_stream.ready`` depends
combinationally on ``o_stream.ready`` (allowed by the stream rules; ``valid`` never depends on
``ready``).
"""
from amaranth.hdl import Array, Cat, Const, Module, Mux, Signal, signed, unsigned
from amaranth.lib import stream, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from quant.activation import (INV_LN2_FRAC, ActivationSpec, cordic_constants, cordic_widths,
                              table)
from quant.fixedpoint import Fmt


def fmt_shape(fmt: Fmt):
    """Amaranth shape of a raw code in ``fmt``."""
    return signed(fmt.n_word) if fmt.signed else unsigned(fmt.n_word)


def _round_shift(v, s: int):
    """Round half up by ``s`` bits (left shift when ``s <= 0``), as :func:`round_shift`."""
    if s <= 0:
        return v << -s
    return (v + (1 << (s - 1))) >> s


def _add_sub(a, b, add):
    """``a + b`` when ``add`` else ``a - b``, as one adder with a carry in (a ``Mux`` of a sum
    and a difference would cost two carry chains)."""
    if not b.shape().signed:
        b = Cat(b, Const(0, 1)).as_signed()       # so that ~b is -b - 1
    return a + Mux(add, b, ~b) + ~add


def _saturate(v, fmt: Fmt):
    return Mux(v > fmt.hi, fmt.hi, Mux(v < fmt.lo, fmt.lo, v))


class _ActivationBase(wiring.Component):
    def __init__(self, spec: ActivationSpec):
        if not isinstance(spec, ActivationSpec):
            raise TypeError(f"spec must be an ActivationSpec, not {spec!r}")
        self.spec = spec
        super().__init__({
            "i_stream": In(stream.Signature(fmt_shape(spec.in_fmt))),
            "o_stream": Out(stream.Signature(fmt_shape(spec.out_fmt))),
        })


class ActivationLUT(_ActivationBase):
    """Swish or sigmoid by table look-up.

    Parameters
    ----------
    spec : ActivationSpec
        ``spec.form`` must be ``"lut"``.

    Members
    -------
    i_stream : ``In(stream.Signature(in_fmt shape))``
        Raw input codes.
    o_stream : ``Out(stream.Signature(out_fmt shape))``
        Raw output codes, in order, one per input; latency 1.
    """
    latency = 1

    def __init__(self, spec: ActivationSpec):
        if spec.form != "lut":
            raise ValueError(f"ActivationLUT needs spec.form 'lut', not {spec.form!r}")
        super().__init__(spec)

    def elaborate(self, platform):
        m = Module()
        spec = self.spec
        n = spec.in_fmt.n_word
        m.submodules.rom = rom = Memory(shape=fmt_shape(spec.out_fmt), depth=1 << n,
                                        init=[int(v) for v in table(spec)])
        rd = rom.read_port(domain="sync")
        advance = Signal()
        m.d.comb += [
            advance.eq(~self.o_stream.valid | self.o_stream.ready),
            self.i_stream.ready.eq(advance),
            rd.en.eq(advance),
            # index = code - lo: for a signed code that is the code with its sign bit flipped
            rd.addr.eq((self.i_stream.payload - spec.in_fmt.lo)[:n]),
            self.o_stream.payload.eq(rd.data),
        ]
        with m.If(advance):
            m.d.sync += self.o_stream.valid.eq(self.i_stream.valid)
        return m


class ActivationCORDIC(_ActivationBase):
    """Swish or sigmoid by hyperbolic CORDIC and linear-vectoring division, fully pipelined.

    Computes exactly :func:`quant.activation.cordic_trace` (see there and the module docstring
    for every step, width and rounding).

    Parameters
    ----------
    spec : ActivationSpec
        ``spec.form`` must be ``"cordic"``.

    Members
    -------
    i_stream : ``In(stream.Signature(in_fmt shape))``
        Raw input codes.
    o_stream : ``Out(stream.Signature(out_fmt shape))``
        Raw output codes, in order, one per input, :attr:`latency` cycles later when nothing
        stalls; one result per cycle.
    """

    def __init__(self, spec: ActivationSpec):
        if spec.form != "cordic":
            raise ValueError(f"ActivationCORDIC needs spec.form 'cordic', not {spec.form!r}")
        super().__init__(spec)

    @property
    def latency(self) -> int:
        """Cycles from an accepted input to its output becoming valid, without stalls."""
        out_stages = 2 if self.spec.function == "swish" else 1
        return 4 + len(self.spec.shifts) + 3 + (self.spec.quotient_frac + 1) + 1 + out_stages

    def elaborate(self, platform):
        m = Module()
        spec = self.spec
        c = cordic_constants(spec)
        w = cordic_widths(spec)
        W, F, Fs = spec.cordic_width, spec.frac_bits, spec.quotient_frac
        f_in, n_in = spec.in_fmt.n_frac, spec.in_fmt.n_word

        advance = Signal()
        m.d.comb += [advance.eq(~self.o_stream.valid | self.o_stream.ready),
                     self.i_stream.ready.eq(advance)]
        updates = []

        def reg(name, shape, value):
            r = Signal(shape, name=name)
            updates.append(r.eq(value))
            return r

        def carry(stage, **signals):
            return {k: reg(f"{k}_{stage}", v.shape(), v) for k, v in signals.items()}

        # input register (also the multiplier's input register)
        p = self.i_stream.payload
        v = reg("valid_in", 1, self.i_stream.valid)
        q = reg("q_in", fmt_shape(spec.in_fmt), p)
        if spec.in_fmt.signed:
            a = reg("a_in", unsigned(n_in), abs(p))
            neg = reg("neg_in", 1, p < 0)
        else:
            a = reg("a_in", unsigned(n_in), p)
            neg = Const(0, 1)

        # k = floor(|q| / ln 2) by a constant multiply, registered output
        v = reg("valid_kmul", 1, v)
        kprod = reg("kprod", unsigned(n_in + c.inv_ln2.bit_length()), a * c.inv_ln2)
        cr = carry("kmul", q=q, a=a, neg=neg)

        v = reg("valid_k", 1, v)
        k_raw = kprod >> (INV_LN2_FRAC + f_in)
        sat = reg("sat_k", 1, k_raw >= spec.k_sat)
        k = reg("k", range(spec.k_sat), Mux(k_raw >= spec.k_sat, 0, k_raw))
        cr = carry("k", **cr)

        # r = |q| - k ln2 at F fraction bits; k ln2 from a small table
        v = reg("valid_r", 1, v)
        ln2k = Array(Const(x, unsigned(max(1, c.ln2k[-1].bit_length()))) for x in c.ln2k)
        r = reg("r", signed(w["r"]), Mux(sat, 0, (cr["a"] << (F - f_in)) - ln2k[k]))
        cr = carry("r", q=cr["q"], neg=cr["neg"], k=k, sat=sat)

        # hyperbolic rotation: x -> cosh r, y -> sinh r
        x, y, z = Const(c.x0, signed(W)), Const(0, signed(W)), r
        for i, s in enumerate(spec.shifts):
            up = z >= 0
            at = c.atanh[s]
            v = reg(f"valid_h{i}", 1, v)
            x, y, z = (reg(f"x_h{i}", signed(w["x"]), _add_sub(x, y >> s, up)),
                       reg(f"y_h{i}", signed(w["y"]), _add_sub(y, x >> s, up)),
                       reg(f"z_h{i}", signed(w["z"]), _add_sub(z, Const(at, signed(W)), ~up)))
            cr = carry(f"h{i}", **cr)

        # E = round_half_up((cosh - sinh) / 2^k); sigmoid symmetry picks the numerator. Three
        # stages: subtract, shift-and-round, operands (as one stage: 83 MHz after place-and-route)
        v = reg("valid_e", 1, v)
        e = reg("e", signed(w["e"]), x - y)
        cr = carry("e", q=cr["q"], neg=cr["neg"], k=cr["k"], sat=cr["sat"])
        v = reg("valid_E", 1, v)
        E = reg("E", unsigned(w["den"] - 1),
                Mux(cr["sat"], 0, (((e << 1) >> cr["k"]) + 1) >> 1))
        cr = carry("E", q=cr["q"], neg=cr["neg"])
        v = reg("valid_num", 1, v)
        one = 1 << F
        Y = reg("num", signed(w["Y"]), Mux(cr["neg"], E, one))
        den = reg("den", unsigned(w["den"] - 1), one + E)
        Z = Const(0, signed(w["Z"]))
        cq = carry("num", q=cr["q"])

        # linear vectoring division, residual kept scaled by 2^i so it is exact
        for i in range(Fs + 1):
            up = Y >= 0
            step = 1 << (Fs - i)
            v = reg(f"valid_d{i}", 1, v)
            Y, Z = (reg(f"Y_d{i}", signed(w["Y"]), _add_sub(Y, den, ~up) << 1),
                    reg(f"Z_d{i}", signed(w["Z"]), Mux(up, Z + step, Z - step)))
            den = reg(f"den_d{i}", den.shape(), den)
            cq = carry(f"d{i}", **cq)

        v = reg("valid_s", 1, v)
        S = reg("S", unsigned(Fs + 1), Z - (Y < 0))
        cq = carry("s", **cq)

        out_frac = spec.out_fmt.n_frac
        if spec.function == "sigmoid":
            result = _round_shift(S, Fs - out_frac)
        else:
            # q and S are registers: the product register completes a pipelined MULT18X18D
            v = reg("valid_mul", 1, v)
            prod = reg("prod", signed(n_in + Fs + 2), cq["q"] * S)
            result = _round_shift(prod, f_in + Fs - out_frac)
        v_out = reg("valid_out", 1, v)
        out = reg("out", fmt_shape(spec.out_fmt), _saturate(result, spec.out_fmt))
        m.d.comb += [self.o_stream.valid.eq(v_out), self.o_stream.payload.eq(out)]

        with m.If(advance):
            m.d.sync += updates
        return m


def make_activation_unit(spec: ActivationSpec):
    """The activation component for ``spec.form``: :class:`ActivationLUT` or
    :class:`ActivationCORDIC`."""
    if spec.form == "lut":
        return ActivationLUT(spec)
    if spec.form == "cordic":
        return ActivationCORDIC(spec)
    raise ValueError(f"unknown activation form {spec.form!r}")
