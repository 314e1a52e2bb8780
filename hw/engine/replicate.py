"""Register copies for wide fan-outs: ``replicated(m, platform, value, n, name)``.

A control register that drives hundreds of flip-flops or multiplexers across the chip (the
operand selects of the multiplier array, one set per lane) is a single slow net. Copies of
the register, one per group of loads, split it; but yosys merges identical flip-flops
(``opt_merge``, and a ``keep`` attribute on the wire does not stop it: measured, 4 copies
became 1). On the ECP5 the copies are therefore ``TRELLIS_FF`` primitives, which yosys leaves
alone; elsewhere (the simulators) they are ordinary registers. Either way each copy is
``value`` one cycle late, without reset.
"""
from amaranth import ClockSignal, Instance, Signal

from hw.engine.dsp import _is_ecp5


def replicated(m, platform, value, n, name):
    """``n`` registers of ``value`` (a list of Signals, each ``value`` one cycle late)."""
    copies = []
    for i in range(n):
        q = Signal(len(value), name=f"{name}_r{i}", reset_less=True)
        if _is_ecp5(platform):
            for b in range(len(value)):
                m.submodules[f"{name}_r{i}_{b}"] = Instance(
                    "TRELLIS_FF", p_GSR="DISABLED", p_CEMUX="1", p_CLKMUX="CLK",
                    p_LSRMUX="LSR", p_REGSET="RESET", p_SRMODE="LSR_OVER_CE",
                    i_CLK=ClockSignal(), i_DI=value[b], i_LSR=0, i_CE=1, o_Q=q[b])
        else:
            m.d.sync += q.eq(value)
        copies.append(q)
    return copies
