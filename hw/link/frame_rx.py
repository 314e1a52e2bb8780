"""The receiver of the host link (:mod:`hw.link.framing`): frames of
:mod:`firmware.protocol` out of the host's byte stream.

It hunts for the sync bytes (a byte outside a frame is dropped and counted; ``A5 A5 5A`` is
still a frame), takes the header (kind, sequence number, length) and the payload, updates the
CRC with every byte after the sync, and reports the frame on ``event``. A frame longer than
the limit (``max_payload``, or ``face_payload`` for FACE_DATA) is counted, and its bytes are
dropped until the line goes quiet (so that a sync pattern inside its payload is not taken for
a frame); a gap of ``timeout_cycles`` inside a frame cuts it.

Payload bytes land as they arrive, before the CRC is known: the first six in ``frame.addr``
and ``frame.count`` (the address, offset and count fields of the commands), the data bytes
after the first four as little-endian words in the frame buffer (word ``k`` at ``k``), or for
FACE_DATA in the face buffer as tentative bytes (:class:`hw.link.face_buffer.FaceBuffer`). A
frame that is not committed is rolled back when the receiver hunts again.

After an event other than ``NONE`` the receiver takes no byte until ``resume`` (the response
has been sent): the link is stop-and-wait.
"""
from amaranth import Cat, Module, Mux, Signal
from amaranth.lib import data, enum, stream, wiring
from amaranth.lib.memory import WritePort
from amaranth.lib.wiring import In, Out
from amaranth.utils import ceil_log2

from firmware import protocol as P
from hw.link.crc import crc16_next
from hw.link.status import CountEvents

__all__ = ["FrameLayout", "RxEvent", "FrameReceiver"]

#: The fields of a frame: its header, and the first six payload bytes read as the commands'
#: address (or face offset) and count (little-endian; zero where the payload is shorter).
FrameLayout = data.StructLayout({"kind": 8, "seq": 8, "length": 16, "addr": 32, "count": 16})


class RxEvent(enum.Enum, shape=2):
    """What the receiver reports (for one cycle)."""
    NONE = 0
    #: a whole frame has arrived: its fields in ``frame``, its CRC check in ``crc_ok``
    FRAME = 1
    #: a frame was cut: no byte for ``timeout_cycles`` inside it
    TIMEOUT = 2
    #: an over-long frame has ended: its bytes were dropped until the line went quiet
    LONG = 3


class FrameReceiver(wiring.Component):
    """Frame receiver and checker of the host link; see the module docstring.

    Parameters
    ----------
    timeout_cycles : int
        Inter-byte timeout inside a frame.
    max_payload, face_payload : int
        Longest payload of a frame, of a FACE_DATA frame.
    buf_words : int
        Words of the frame buffer.

    Members
    -------
    i_stream : In(stream.Signature(8))
        Bytes from the host.
    event : Out(RxEvent)
        One cycle: a frame arrived, was cut, or an over-long one ended.
    frame : Out(FrameLayout)
        The fields of the last frame (held until the receiver hunts again).
    crc_ok : Out(1)
        The last frame's CRC checks.
    face_over : Out(1)
        A byte of the last (FACE_DATA) frame found the face buffer full.
    resume : In(1)
        The response has been sent: hunt for the next frame.
    buf_w : In(WritePort.Signature)
        Drives the frame buffer's write port (the data words).
    face_data, face_en : Out(8), Out(1)
        A tentative byte for the face buffer.
    face_full : In(1)
        The face buffer has no room for it.
    face_rollback : Out(1)
        Drop the face buffer's tentative bytes (while hunting).
    count : Out(CountEvents)
        Pulses of the ``dropped_bytes``, ``bad_length`` and ``timeouts`` counters (the
        others are 0).
    """

    def __init__(self, *, timeout_cycles: int, max_payload: int, face_payload: int,
                 buf_words: int):
        self.timeout_cycles = timeout_cycles
        self.max_payload, self.face_payload = max_payload, face_payload
        super().__init__({
            "i_stream": In(stream.Signature(8)),
            "event": Out(RxEvent),
            "frame": Out(FrameLayout),
            "crc_ok": Out(1),
            "face_over": Out(1),
            "resume": In(1),
            "buf_w": In(WritePort.Signature(addr_width=ceil_log2(buf_words), shape=16)),
            "face_data": Out(8), "face_en": Out(1), "face_full": In(1), "face_rollback": Out(1),
            "count": Out(CountEvents),
        })

    def elaborate(self, platform):
        m = Module()
        i, f, buf_w = self.i_stream, self.frame, self.buf_w
        kind, seq, length, addr, count = f.kind, f.seq, f.length, f.addr, f.count
        idx = Signal(16)                  # payload byte index
        # the last index, registered when the length is known (not length - 1 at each compare)
        idx_last = Signal(16)
        crc = Signal(16, init=0xFFFF)
        lo = Signal(8)                    # the previous byte: the low byte of a data word
        is_face = Signal()                # this frame is FACE_DATA: its data go to the buffer
        face_over = self.face_over
        idle = Signal(range(self.timeout_cycles))
        timed_out = Signal()

        # The inter-byte timer runs inside a frame and restarts on every byte.
        m.d.comb += timed_out.eq(idle == self.timeout_cycles - 1)
        with m.If(i.valid & i.ready):
            m.d.sync += idle.eq(0)
        with m.Elif(~timed_out):
            m.d.sync += idle.eq(idle + 1)

        crc_in = crc16_next(crc, i.payload)
        m.d.comb += [self.crc_ok.eq(crc == 0), self.face_data.eq(i.payload)]

        def report(event):
            m.d.comb += self.event.eq(event)
            m.next = "HELD"

        def cut():
            m.d.comb += self.count.timeouts.eq(1)
            report(RxEvent.TIMEOUT)

        with m.FSM():
            with m.State("HUNT"):
                # the tentative bytes of a FACE_DATA frame that was not committed go
                m.d.comb += [i.ready.eq(1), self.face_rollback.eq(1)]
                with m.If(i.valid):
                    with m.If(i.payload == P.SYNC[0]):
                        m.next = "SYNC1"
                    with m.Else():
                        m.d.comb += self.count.dropped_bytes.eq(1)

            with m.State("SYNC1"):
                m.d.comb += i.ready.eq(1)
                with m.If(i.valid):
                    m.d.sync += [crc.eq(0xFFFF), kind.eq(0), seq.eq(0)]
                    with m.If(i.payload == P.SYNC[1]):
                        m.next = "KIND"
                    with m.Else():
                        m.d.comb += self.count.dropped_bytes.eq(1)
                        with m.If(i.payload != P.SYNC[0]):   # A5 A5 5A is still a frame
                            m.next = "HUNT"
                with m.Elif(timed_out):
                    m.d.comb += self.count.dropped_bytes.eq(1)
                    m.next = "HUNT"

            def header_byte(state, field, next_state):
                with m.State(state):
                    m.d.comb += i.ready.eq(1)
                    with m.If(i.valid):
                        m.d.sync += [crc.eq(crc_in), field]
                        if next_state is None:
                            report(RxEvent.FRAME)
                        else:
                            m.next = next_state
                    with m.Elif(timed_out):
                        cut()

            header_byte("KIND", kind.eq(i.payload), "SEQ")
            header_byte("SEQ", seq.eq(i.payload), "LEN0")
            header_byte("LEN0", length[:8].eq(i.payload), "LEN1")

            with m.State("LEN1"):
                m.d.comb += i.ready.eq(1)
                with m.If(i.valid):
                    full = Cat(length[:8], i.payload)
                    face = kind == P.Cmd.FACE_DATA
                    m.d.sync += [crc.eq(crc_in), length[8:].eq(i.payload), idx.eq(0),
                                 addr.eq(0), count.eq(0), idx_last.eq(full - 1),
                                 is_face.eq(face), face_over.eq(0)]
                    with m.If(full > Mux(face, self.face_payload, self.max_payload)):
                        m.d.comb += self.count.bad_length.eq(1)
                        m.next = "DISCARD"
                    with m.Elif(full == 0):
                        m.next = "CRC0"
                    with m.Else():
                        m.next = "PAYLOAD"
                with m.Elif(timed_out):
                    cut()

            with m.State("PAYLOAD"):
                data_byte = i.valid & (idx >= 4)
                m.d.comb += [i.ready.eq(1),
                             buf_w.addr.eq((idx >> 1) - 2),
                             buf_w.data.eq(Mux(idx[0], Cat(lo, i.payload), i.payload)),
                             buf_w.en.eq(data_byte & ~is_face & (idx[0] | (idx == idx_last))),
                             self.face_en.eq(data_byte & is_face)]
                with m.If(self.face_en & self.face_full):
                    m.d.sync += face_over.eq(1)
                with m.If(i.valid):
                    m.d.sync += [crc.eq(crc_in), idx.eq(idx + 1), lo.eq(i.payload)]
                    with m.Switch(idx):
                        for k in range(4):
                            with m.Case(k):
                                m.d.sync += addr[8 * k:8 * k + 8].eq(i.payload)
                        for k in range(2):
                            with m.Case(4 + k):
                                m.d.sync += count[8 * k:8 * k + 8].eq(i.payload)
                    with m.If(idx == idx_last):
                        m.next = "CRC0"
                with m.Elif(timed_out):
                    cut()

            header_byte("CRC0", crc.eq(crc_in), "CRC1")
            header_byte("CRC1", crc.eq(crc_in), None)

            with m.State("DISCARD"):
                # An over-long frame: drop everything until the line goes quiet, so that a sync
                # pattern inside its payload is not taken for a frame.
                m.d.comb += i.ready.eq(1)
                with m.If(~i.valid & timed_out):
                    report(RxEvent.LONG)

            with m.State("HELD"):
                # the frame is being acted on and answered: no byte is taken meanwhile
                with m.If(self.resume):
                    m.next = "HUNT"
        return m
