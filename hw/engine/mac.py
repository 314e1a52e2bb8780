"""Pipelined multiply-accumulate: the one arithmetic primitive of the PE arrays.

An ECP5 ``MULT18X18D`` only reaches the engine clock when its input and output registers are
used (measured: unregistered ``a*b`` in a 128-MAC array closed at 42 MHz). The MAC therefore has
three register stages, all behind one clock enable so that a whole PE array stalls as a unit::

    edge 1: a_r, b_r  <- a, b              (DSP input registers)
    edge 2: p_r       <- a_r * b_r          (DSP pipeline/output register)
    edge 3: acc       <- p_r  (first)       (fabric adder: acc_width LUT4 + carry chain)
            acc       <- acc + p_r  (else)

``first`` travels with its operands: the product that carries ``first`` starts a new sum. The sum
of the products ``k .. k+n-1`` (the first of them flagged) is on ``acc`` :attr:`MAC.latency`
enabled cycles after the last of them was presented.
"""
from amaranth import Module, Signal, signed
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out


class MAC(wiring.Component):
    """Registered-input, registered-product multiply-accumulate.

    Parameters
    ----------
    a_width, b_width : int
        Signed operand widths; at most 18 each so that the product is one ``MULT18X18D``.
    acc_width : int
        Accumulator width. The sum wraps (two's complement) if it does not fit: the caller sizes
        it (``a_width + b_width + ceil(log2(terms))``).

    Members
    -------
    en : In(1)
        Clock enable of every register (the array's pipeline advance).
    a, b : In(signed)
        Operands.
    first : In(1)
        This product starts a new sum.
    acc : Out(signed(acc_width))
        Running sum.
    """
    latency = 3

    def __init__(self, a_width=8, b_width=8, acc_width=32):
        for name, w in (("a_width", a_width), ("b_width", b_width)):
            if not 1 <= w <= 18:
                raise ValueError(f"{name} must be 1..18 to fit one MULT18X18D, not {w!r}")
        if acc_width < a_width + b_width:
            raise ValueError(f"acc_width must hold one product ({a_width + b_width} bits), "
                             f"not {acc_width!r}")
        self.a_width, self.b_width, self.acc_width = a_width, b_width, acc_width
        super().__init__({
            "en": In(1),
            "a": In(signed(a_width)),
            "b": In(signed(b_width)),
            "first": In(1),
            "acc": Out(signed(acc_width)),
        })

    def elaborate(self, platform):
        m = Module()
        a_r = Signal(signed(self.a_width))
        b_r = Signal(signed(self.b_width))
        p_r = Signal(signed(self.a_width + self.b_width))
        f1 = Signal()
        f2 = Signal()
        with m.If(self.en):
            m.d.sync += [a_r.eq(self.a), b_r.eq(self.b), f1.eq(self.first),
                         p_r.eq(a_r * b_r), f2.eq(f1)]
            with m.If(f2):
                m.d.sync += self.acc.eq(p_r)
            with m.Else():
                m.d.sync += self.acc.eq(self.acc + p_r)
        return m
