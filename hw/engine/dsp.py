"""A signed multiplier with the ECP5 DSP's own registers: ``RegisteredMultiplier``.

    mul = RegisteredMultiplier(16, 8)
    m.d.comb += [mul.a.eq(x), mul.b.eq(w)]
    # mul.p == x * w of three cycles ago

yosys maps ``a * b`` onto a ``MULT18X18D`` but leaves the operand and product registers in
the fabric, and the routing to and from the DSP then limits the clock (a probe on the
ULX3S-85F: 81 MHz with fabric registers, 113.5 MHz with the DSP's input, pipeline and output
registers on; docs/BOARD.md). On the ECP5 this component instantiates the primitive with all
three register stages; elsewhere (the simulators) it is the same three-stage pipeline in
Amaranth, so the engine's simulations see the latency and the arithmetic the board has.
``LATENCY`` is that number of cycles. The pipeline always advances (no clock enable): the
engine's datapath is free-running.
"""
from amaranth import ClockSignal, Elaboratable, Instance, Module, Signal, signed

LATENCY = 3


def _is_ecp5(platform):
    return platform is not None and getattr(platform, "family", None) == "ecp5"


class RegisteredMultiplier(Elaboratable):
    """``p = a * b`` (signed), ``LATENCY`` cycles after ``a`` and ``b`` are presented.

    Parameters
    ----------
    a_width, b_width : int
        Signed operand widths, each 1..18 (one ``MULT18X18D``).
    """

    def __init__(self, a_width, b_width):
        for name, w in (("a_width", a_width), ("b_width", b_width)):
            if not isinstance(w, int) or not 1 <= w <= 18:
                raise ValueError(f"RegisteredMultiplier {name} must be 1..18 (one MULT18X18D), "
                                 f"not {w!r}")
        self.a = Signal(signed(a_width))
        self.b = Signal(signed(b_width))
        self.p = Signal(signed(a_width + b_width))

    def elaborate(self, platform):
        m = Module()
        if _is_ecp5(platform):
            a18, b18, p36 = Signal(signed(18)), Signal(signed(18)), Signal(36)
            m.d.comb += [a18.eq(self.a), b18.eq(self.b), self.p.eq(p36[:len(self.p)])]
            ports = {f"i_A{i}": a18[i] for i in range(18)}
            ports.update({f"i_B{i}": b18[i] for i in range(18)})
            ports.update({f"i_C{i}": 0 for i in range(18)})
            ports.update({f"o_P{i}": p36[i] for i in range(36)})
            for reg in ("INPUTA", "INPUTB", "PIPELINE", "OUTPUT"):
                ports[f"p_REG_{reg}_CLK"] = "CLK0"
                ports[f"p_REG_{reg}_CE"] = "CE0"
                ports[f"p_REG_{reg}_RST"] = "RST0"
            m.submodules.dsp = Instance(
                "MULT18X18D", p_GSR="DISABLED", p_RESETMODE="SYNC", p_MULT_BYPASS="DISABLED",
                p_SOURCEB_MODE="B_SHIFT", p_CAS_MATCH_REG="FALSE", p_HIGHSPEED_CLK="NONE",
                p_REG_INPUTC_CLK="NONE",
                i_SIGNEDA=1, i_SIGNEDB=1, i_SOURCEA=0, i_SOURCEB=0,
                i_CLK0=ClockSignal(), i_CLK1=0, i_CLK2=0, i_CLK3=0,
                i_CE0=1, i_CE1=0, i_CE2=0, i_CE3=0,
                i_RST0=0, i_RST1=0, i_RST2=0, i_RST3=0,
                **ports)
        else:
            a_r, b_r = Signal.like(self.a), Signal.like(self.b)
            pipe = Signal.like(self.p)
            m.d.sync += [a_r.eq(self.a), b_r.eq(self.b), pipe.eq(a_r * b_r),
                         self.p.eq(pipe)]
        return m
