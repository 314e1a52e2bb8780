"""The swish/sigmoid unit in its two forms, and how a layer's formats reach it.

``lut`` (boards.yaml ``activation: lut``)
    A table of one output code per input code, loaded per layer from the memory image into the
    engine's post pipeline (:mod:`hw.engine.layer_engine`, the ``lut`` RAM): any function and
    any formats, one result per cycle, ``lut_n`` words of table traffic per layer.

``cordic`` (boards.yaml ``activation: cordic``)
    :class:`ActivationCORDIC`: the integer hyperbolic CORDIC and linear-vectoring division of
    :mod:`quant.activation`, fully pipelined, one result per cycle, with the formats set at run
    time from the layer's descriptor (:func:`activation_config`), so one unit serves every
    layer and no table crosses the memory port. No multiplier apart from the argument
    reduction's constant multiply and the final product (each with registered inputs and
    output, so each maps onto one pipelined MULT18X18D). Stages, for ``M`` hyperbolic
    micro-rotations (``N`` plus the repeats: 18 for ``N = 16``) and ``Fs = N``:

    ====================  ======  ================================================
    stage                 cycles  registers
    ====================  ======  ================================================
    input                 1       ``q``, ``|q|``, sign
    k multiply            1       ``|q| * round(2^16/ln 2)``
    k, saturation         1       ``k = prod >> (16 + f_in)``, ``sat``
    reduction             1       ``r = |q| 2^(F-f_in) - k ln2`` (W bits)
    hyperbolic rotation   M       ``x``, ``y``, ``z`` (W bits each)
    e^-|q| and operands   3       ``e = cosh - sinh``; ``E = e / 2^k`` rounded;
                                  ``num``, ``den`` (``F + 3`` bits)
    linear vectoring      Fs + 1  residual ``Y`` (``F + 4``), quotient ``Z`` (``Fs + 2``)
    quotient correction   1       ``S`` (``Fs + 1`` bits)
    output                4       ``q * S`` (swish) or ``2^L * S`` (sigmoid);
                                  ``+ 2^(s-1)``; ``>> s``; saturate to ``[lo, hi]``
    ====================  ======  ================================================

    Latency (:attr:`ActivationCORDIC.latency`) with the defaults (N = 16, W = 24) is 47 cycles.

Flow control: every register advances together when ``o_stream`` can move
(``~o_stream.valid | o_stream.ready``), and that same signal is ``i_stream.ready``. A stall
therefore freezes the whole pipeline; bubbles are not squeezed out. ``i_stream.ready`` depends
combinationally on ``o_stream.ready`` (allowed by the stream rules; ``valid`` never depends on
``ready``). In the engine's post pipeline ``o_stream.ready`` is tied high: a fixed-latency
pipeline.
"""
from amaranth.hdl import Array, Cat, Const, Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from quant.activation import INV_LN2_FRAC, ActivationSpec, cordic_constants, cordic_widths
from quant.fixedpoint import Fmt


def _add_sub(a, b, add):
    """``a + b`` when ``add`` else ``a - b``, as one adder with a carry in (a ``Mux`` of a sum
    and a difference would cost two carry chains)."""
    if not b.shape().signed:
        b = Cat(b, Const(0, 1)).as_signed()       # so that ~b is -b - 1
    return a + Mux(add, b, ~b) + ~add


def activation_config_layout(out_width: int = 17) -> data.StructLayout:
    """The run-time configuration of :class:`ActivationCORDIC`: one activation's formats.

    ``swish`` (else sigmoid), ``f_in`` (the input's fraction bits), ``out_shift`` (the final
    rounding shift ``s``: ``f_in + Fs - f_out`` for swish, ``Fs - f_out`` for sigmoid; signed:
    a sigmoid whose output has more fraction bits than the quotient's ``Fs = N`` has ``s < 0``,
    and the unit multiplies ``S`` by ``2^L``, ``L = -s``, instead of 1), ``lo`` and ``hi`` (the
    output format's range). :func:`activation_config` derives the values from an
    :class:`~quant.activation.ActivationSpec`; the firmware compiler stores them in the
    descriptor, so one unit serves every layer.
    """
    return data.StructLayout({"swish": 1, "f_in": 5, "out_shift": signed(7),
                              "lo": signed(out_width), "hi": signed(out_width)})


def activation_config(spec: ActivationSpec, *, iterations: int = 16, width: int = 24,
                      in_width: int = 16, out_width: int = 17) -> dict:
    """Field values of :func:`activation_config_layout` for ``spec`` on a CORDIC unit built
    with ``iterations``, ``width``, ``in_width`` and ``out_width``.

    Raises
    ------
    ValueError
        Naming the spec and the field, when the unit cannot compute ``spec`` exactly: another
        form, iteration count or datapath width, an input wider than the unit's, an output
        range outside ``out_width`` bits, a final right shift beyond ``in_width + iterations``
        (the product's width), or a swish whose output has more fraction bits than
        ``f_in + iterations`` (a left shift, which the unit makes for the sigmoid only).

    A sigmoid's left shift beyond ``out_width - 1`` is stored as ``-(out_width - 1)``: ``S``
    is never negative, so either shift saturates every nonzero ``S`` to ``hi``.
    """
    if spec.form != "cordic":
        raise ValueError(f"activation {spec.name}: form {spec.form!r}, but the unit is a CORDIC "
                         f"(quantize with --act cordic)")
    if (spec.cordic_iterations, spec.cordic_width) != (iterations, width):
        raise ValueError(f"activation {spec.name}: cordic_iterations/cordic_width "
                         f"{spec.cordic_iterations}/{spec.cordic_width}, but the unit is built "
                         f"with {iterations}/{width}")
    if spec.in_fmt.n_word + (0 if spec.in_fmt.signed else 1) > in_width:
        raise ValueError(f"activation {spec.name}: input {spec.in_fmt.fxp_dtype} does not fit "
                         f"the unit's {in_width}-bit signed input")
    lo, hi = -(1 << (out_width - 1)), (1 << (out_width - 1)) - 1
    if spec.out_fmt.lo < lo or spec.out_fmt.hi > hi:
        raise ValueError(f"activation {spec.name}: output {spec.out_fmt.fxp_dtype} does not "
                         f"fit the unit's {out_width}-bit signed output")
    swish = spec.function == "swish"
    shift = (spec.in_fmt.n_frac if swish else 0) + spec.quotient_frac - spec.out_fmt.n_frac
    if shift > in_width + iterations:
        raise ValueError(f"activation {spec.name}: final rounding shift {shift} (out_fmt "
                         f"n_frac {spec.out_fmt.n_frac}) beyond the unit's "
                         f"{in_width + iterations}")
    if shift < 0 and swish:
        raise ValueError(f"activation {spec.name}: out_fmt n_frac {spec.out_fmt.n_frac} "
                         f"exceeds in_fmt n_frac + cordic_iterations "
                         f"({spec.in_fmt.n_frac + iterations}); the unit shifts left for the "
                         f"sigmoid only")
    return {"swish": int(swish), "f_in": spec.in_fmt.n_frac,
            "out_shift": max(shift, 1 - out_width),
            "lo": spec.out_fmt.lo, "hi": spec.out_fmt.hi}


def cordic_latency(iterations: int = 16, width: int = 24) -> int:
    """Pipeline stages of :class:`ActivationCORDIC`: input, k multiply, k, reduction, the
    micro-rotations, three for ``E`` and the operands, ``Fs + 1`` division steps, the
    correction and two output stages."""
    core = ActivationSpec("swish", "cordic", Fmt(True, 8, 0), Fmt(True, 8, 0), iterations, width)
    return 4 + len(core.shifts) + 3 + (core.quotient_frac + 1) + 1 + 4


class ActivationCORDIC(wiring.Component):
    """Swish or sigmoid by hyperbolic CORDIC and linear-vectoring division, fully pipelined,
    with the formats set at run time.

    For every :class:`~quant.activation.ActivationSpec` of form ``"cordic"`` with this unit's
    ``iterations`` and ``width``, the output equals :func:`quant.activation.cordic_trace`
    (see there and the module docstring for every step, width and rounding) when ``config``
    holds :func:`activation_config` of that spec. The input's fraction bits move the argument
    reduction's two shifts, the function selects the final product's operand (``q`` or 1) and
    the output format sets one rounding shift and the saturation bounds: every other stage is
    the same for all specs.

    Parameters
    ----------
    iterations, width : int
        ``N`` and ``W`` of the datapath (:class:`~quant.activation.ActivationSpec`'s
        ``cordic_iterations`` and ``cordic_width``).
    in_width, out_width : int
        Signed widths of the input and output codes.

    Members
    -------
    config : ``In(activation_config_layout(out_width))``
        Held still while codes flow.
    i_stream : ``In(stream.Signature(signed(in_width)))``
        Raw input codes.
    o_stream : ``Out(stream.Signature(signed(out_width)))``
        Raw output codes, in order, one per input, :attr:`latency` cycles later when nothing
        stalls; one result per cycle.
    """

    def __init__(self, iterations: int = 16, width: int = 24, *, in_width: int = 16,
                 out_width: int = 17):
        if not 2 <= in_width <= 17:
            raise ValueError(f"ActivationCORDIC: in_width must be 2..17, not {in_width!r}")
        # the constants and register widths depend on N and W alone (not on the formats)
        self.core = ActivationSpec("swish", "cordic", Fmt(True, min(in_width, 16), 0),
                                   Fmt(True, 8, 0), iterations, width)
        self.iterations, self.width = iterations, width
        self.in_width, self.out_width = in_width, out_width
        super().__init__({
            "config": In(activation_config_layout(out_width)),
            "i_stream": In(stream.Signature(signed(in_width))),
            "o_stream": Out(stream.Signature(signed(out_width))),
        })

    def config_for(self, spec: ActivationSpec) -> dict:
        """:func:`activation_config` of ``spec`` for this unit."""
        return activation_config(spec, iterations=self.iterations, width=self.width,
                                 in_width=self.in_width, out_width=self.out_width)

    @property
    def latency(self) -> int:
        """Cycles from an accepted input to its output becoming valid, without stalls."""
        return cordic_latency(self.iterations, self.width)

    def elaborate(self, platform):
        m = Module()
        core, cfg = self.core, self.config
        c = cordic_constants(core)
        w = cordic_widths(core)
        W, F, Fs = core.cordic_width, core.frac_bits, core.quotient_frac
        n_in = self.in_width

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

        # the configuration's shifts, registered (config is static while codes flow)
        k_shift = Signal(range(INV_LN2_FRAC + 32), name="k_shift")
        r_shift = Signal(range(F + 1), name="r_shift")
        m.d.sync += [k_shift.eq(INV_LN2_FRAC + cfg.f_in), r_shift.eq(F - cfg.f_in)]

        # input register (also the multiplier's input register)
        p = self.i_stream.payload
        v = reg("valid_in", 1, self.i_stream.valid)
        q = reg("q_in", signed(n_in), p)
        a = reg("a_in", unsigned(n_in), abs(p))
        neg = reg("neg_in", 1, p < 0)

        # k = floor(|q| / ln 2) by a constant multiply, registered output
        v = reg("valid_kmul", 1, v)
        kprod = reg("kprod", unsigned(n_in + c.inv_ln2.bit_length()), a * c.inv_ln2)
        cr = carry("kmul", q=q, a=a, neg=neg)

        v = reg("valid_k", 1, v)
        k_raw = kprod >> k_shift
        sat = reg("sat_k", 1, k_raw >= core.k_sat)
        k = reg("k", range(core.k_sat), Mux(k_raw >= core.k_sat, 0, k_raw))
        cr = carry("k", **cr)

        # r = |q| - k ln2 at F fraction bits; k ln2 from a small table
        v = reg("valid_r", 1, v)
        ln2k = Array(Const(x, unsigned(max(1, c.ln2k[-1].bit_length()))) for x in c.ln2k)
        r = reg("r", signed(w["r"]), Mux(sat, 0, (cr["a"] << r_shift) - ln2k[k]))
        cr = carry("r", q=cr["q"], neg=cr["neg"], k=k, sat=sat)

        # hyperbolic rotation: x -> cosh r, y -> sinh r
        x, y, z = Const(c.x0, signed(W)), Const(0, signed(W)), r
        for i, s in enumerate(core.shifts):
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

        # swish: q * S; sigmoid: 2^L * S (L = -out_shift when out_shift < 0, else 0: the left
        # shift of a sigmoid with more output fraction bits than Fs). Both operands are
        # registers and so is the product: a pipelined MULT18X18D.
        neg_shift = cfg.out_shift < 0
        pow_l = Signal(unsigned(self.out_width), name="pow_l")     # 2^L, L <= out_width - 1
        rshift = Signal(range(64), name="rshift")
        half = Signal(signed(max(n_in, self.out_width - 1) + Fs + 2), name="half")
        l_bits = (self.out_width - 1).bit_length()
        m.d.sync += [pow_l.eq(Const(1, unsigned(self.out_width)) <<
                              Mux(neg_shift, -cfg.out_shift, 0)[:l_bits]),
                     rshift.eq(Mux(neg_shift, 0, cfg.out_shift[:6])),
                     half.eq(Mux(neg_shift, 0,          # 2^(s-1), or 0
                                 (Const(1, half.shape()) << cfg.out_shift[:6]) >> 1))]
        v = reg("valid_mul", 1, v)
        prod = reg("prod", half.shape(), Mux(cfg.swish, cq["q"], pow_l) * S)
        # round half up by out_shift, then saturate: three stages (the add, the variable shift
        # and the two compares in one stage routed at 64 MHz on the 85F)
        v = reg("valid_half", 1, v)
        biased = reg("biased", signed(len(prod) + 1), prod + half)
        v = reg("valid_shift", 1, v)
        result = reg("result", biased.shape(), biased >> rshift)
        v_out = reg("valid_out", 1, v)
        out = reg("out", signed(self.out_width),
                  Mux(result > cfg.hi, cfg.hi, Mux(result < cfg.lo, cfg.lo, result)))
        m.d.comb += [self.o_stream.valid.eq(v_out), self.o_stream.payload.eq(out)]

        with m.If(advance):
            m.d.sync += updates
        return m
