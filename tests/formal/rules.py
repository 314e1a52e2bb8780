"""Building blocks of the harnesses: the stream rules as assertions or assumptions, and a
shadow queue (the reference the data a block moves is checked against)."""
from amaranth import Array, Mux, Signal, Value
from amaranth.hdl import Assert, Assume

__all__ = ["stream_rules", "ShadowQueue", "not_first"]


def not_first(m):
    """A signal that is 0 in the first cycle and 1 after (the harness's notion of 'past')."""
    started = Signal(name="started")
    m.d.sync += started.eq(1)
    return started


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


class ShadowQueue:
    """An in-order reference queue of ``depth`` entries built from registers: ``push(value)``
    and ``pop()`` conditions, ``head``, ``count``, ``full``. Pushing when full or popping
    when empty is flagged by ``overflow``/``underflow`` (for the harness to assert against)."""

    def __init__(self, m, width, depth, name="q"):
        self.m = m
        self.depth = depth
        self.slots = Array(Signal(width, name=f"{name}_slot{k}") for k in range(depth))
        self.count = Signal(range(depth + 1), name=f"{name}_count")
        self.head = Signal(width, name=f"{name}_head")
        self.do_push = Signal(name=f"{name}_push")
        self.do_pop = Signal(name=f"{name}_pop")
        self.push_value = Signal(width, name=f"{name}_push_value")
        self.overflow = Signal(name=f"{name}_overflow")
        self.underflow = Signal(name=f"{name}_underflow")
        m.d.comb += [self.head.eq(self.slots[0]),
                     self.overflow.eq(self.do_push & ~self.do_pop & (self.count == depth)),
                     self.underflow.eq(self.do_pop & (self.count == 0))]
        # Shift out at the head on a pop; write at the tail (after the shift) on a push.
        tail = Mux(self.do_pop, self.count - 1, self.count)
        for k in range(depth):
            src = self.slots[k + 1] if k + 1 < depth else self.slots[k]
            with m.If(self.do_pop):
                m.d.sync += self.slots[k].eq(src)
            with m.If(self.do_push & (tail == k)):
                m.d.sync += self.slots[k].eq(self.push_value)
        with m.If(self.do_push & ~self.do_pop & (self.count < depth)):
            m.d.sync += self.count.eq(self.count + 1)
        with m.If(self.do_pop & ~self.do_push & (self.count > 0)):
            m.d.sync += self.count.eq(self.count - 1)

    def push(self, cond, value):
        self.m.d.comb += [self.do_push.eq(cond), self.push_value.eq(value)]

    def pop(self, cond):
        self.m.d.comb += self.do_pop.eq(cond)
