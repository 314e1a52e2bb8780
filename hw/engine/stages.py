"""Register-stage helpers shared by the engine's components (:mod:`hw.engine.layer_engine`)."""
from amaranth import Array, Signal


def log2(v):
    return v.bit_length() - 1


def delay_line(m, value, cycles, name, reset_less=False):
    """``[value after 1 register, ..., after cycles registers]``."""
    line = []
    for i in range(cycles):
        nxt = Signal(value.shape(), name=f"{name}_d{i + 1}", reset_less=reset_less)
        m.d.sync += nxt.eq(value)
        line.append(value := nxt)
    return line


def delayed(m, value, cycles, name, reset_less=False):
    """``value`` through ``cycles`` registers (``reset_less`` for data: the engine's reset
    reaches every flip-flop that has one, and a net that wide is slow)."""
    return delay_line(m, value, cycles, name, reset_less)[-1] if cycles else value


def lane_select(m, words, j, name):
    """``words[j]`` one cycle late: a registered 4-way level by ``j``'s low bits, then a 4-way
    level by its registered high bits (every register loads each cycle: no enable)."""
    quads = []
    for q in range(0, len(words), 4):
        r = Signal(len(words[q]), name=f"{name}_q{q // 4}", reset_less=True)
        m.d.sync += r.eq(Array(words[q:q + 4])[j[:2]] if len(words) > 1 else words[q])
        quads.append(r)
    if len(quads) == 1:
        return quads[0]
    hi = Signal(len(j) - 2, name=f"{name}_hi")
    m.d.sync += hi.eq(j[2:])
    return Array(quads)[hi]


def decoded(m, name, expr):
    """A one-bit decode of descriptor fields, as a register (the descriptor is written a few
    cycles before it is used, and every pipeline has drained before the next one)."""
    flag = Signal(name=name)
    m.d.sync += flag.eq(expr)
    return flag


def last_of(m, name, field):
    """``field - 1`` as a register (for the loop counters' "last" compares)."""
    last = Signal(len(field), name=name)
    m.d.sync += last.eq(field - 1)
    return last
