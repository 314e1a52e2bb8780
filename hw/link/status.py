"""The STATUS record of the host link (:mod:`hw.link.framing`): its event counters and the
engine's state, laid out as :data:`firmware.protocol.STATUS_STRUCT`."""
from amaranth import C, Cat, Module, Signal
from amaranth.lib import data, wiring
from amaranth.lib.wiring import In, Out

from firmware import protocol as P

__all__ = ["COUNTERS", "CountEvents", "LinkStatus"]

#: The event counters of the STATUS record, in its order (16 bits each, wrapping).
COUNTERS = P.STATUS_FIELDS[2:-2]

#: One bit a counter: count one event this cycle. Each counter has one source (the receiver,
#: the command executor or the UART), so the sources' structures merge by OR.
CountEvents = data.StructLayout({name: 1 for name in COUNTERS})


class LinkStatus(wiring.Component):
    """The event counters and the STATUS record built from them.

    Parameters
    ----------
    max_payload, n_result, face_payload : int
        The link's limits, reported as constants.

    Members
    -------
    count : In(CountEvents)
        Pulses: each counter whose bit is high counts one.
    last_error : In(8)
        The code of the last NACK.
    busy, done, error : In(1)
        The engine's state.
    result_ready : In(1)
        A complete result the host has not been sent.
    held_words : In(16)
        Result words held in the result slots.
    record : Out(8 * STATUS_STRUCT.size)
        The STATUS payload, byte 0 in the low bits (combinational: the counters' values
        before this cycle's events).
    """

    def __init__(self, *, max_payload: int, n_result: int, face_payload: int):
        self.max_payload, self.n_result, self.face_payload = max_payload, n_result, face_payload
        super().__init__({
            "count": In(CountEvents),
            "last_error": In(8),
            "busy": In(1), "done": In(1), "error": In(1),
            "result_ready": In(1),
            "held_words": In(16),
            "record": Out(8 * P.STATUS_STRUCT.size),
        })

    def elaborate(self, platform):
        m = Module()
        counters = [Signal(16, name=name) for name in COUNTERS]
        for name, counter in zip(COUNTERS, counters):
            with m.If(self.count[name]):
                m.d.sync += counter.eq(counter + 1)
        flags = Cat(self.busy, self.done, self.error, self.result_ready, C(0, 4))
        m.d.comb += self.record.eq(Cat(
            C(P.VERSION, 8), flags, self.last_error, C(0, 8),
            C(self.max_payload, 16), C(self.n_result, 16), *counters,
            self.held_words, C(self.face_payload, 16)))
        return m
