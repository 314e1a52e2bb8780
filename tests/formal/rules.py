"""Building blocks of the harnesses: the stream rules as assertions or assumptions, and a
shadow queue (the reference the data a block moves is checked against)."""
from amaranth import Array, Elaboratable, Module, Mux, Signal, Value
from amaranth.hdl import Assert, Assume

__all__ = ["stream_rules", "ShadowQueue"]


def stream_rules(m, valid, ready, payload, *, assume=False, name="s"):
    """Once ``valid`` is high without ``ready``, next cycle ``valid`` is still high and
    ``payload`` unchanged. Asserted for a stream the design drives, assumed for one the
    environment drives."""
    payload = Value.cast(payload)
    stalled = Signal(name=f"{name}_stalled")
    held = Signal.like(payload, name=f"{name}_held")
    m.d.sync += [stalled.eq(valid & ~ready), held.eq(payload)]
    check = Assume if assume else Assert
    with m.If(stalled):
        m.d.comb += [check(valid, f"{name}: valid withdrawn before ready"),
                     check(payload == held, f"{name}: payload changed before ready")]


class ShadowQueue(Elaboratable):
    """An in-order reference queue of ``depth`` entries of ``width`` bits, in registers.

    Inputs ``push`` (with ``value``) and ``pop``; outputs ``head`` (the oldest entry) and
    ``count``. A push when full is dropped and a pop when empty does nothing: harnesses assert
    ``count`` below ``depth`` and no pop at 0."""

    def __init__(self, width, depth):
        self.width, self.depth = width, depth
        self.push, self.pop = Signal(), Signal()
        self.value, self.head = Signal(width), Signal(width)
        self.count = Signal(range(depth + 1))

    def elaborate(self, platform):
        m = Module()
        slots = Array(Signal(self.width, name=f"slot{k}") for k in range(self.depth))
        m.d.comb += self.head.eq(slots[0])
        # Shift out at the head on a pop; write at the tail (after the shift) on a push.
        tail = Mux(self.pop, self.count - 1, self.count)
        for k in range(self.depth):
            with m.If(self.pop):
                m.d.sync += slots[k].eq(slots[min(k + 1, self.depth - 1)])
            with m.If(self.push & (tail == k)):
                m.d.sync += slots[k].eq(self.value)
        with m.If(self.push & ~self.pop & (self.count < self.depth)):
            m.d.sync += self.count.eq(self.count + 1)
        with m.If(self.pop & ~self.push & (self.count > 0)):
            m.d.sync += self.count.eq(self.count - 1)
        return m
