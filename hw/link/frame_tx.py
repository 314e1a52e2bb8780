"""The transmitter of the host link (:mod:`hw.link.framing`): the response frames of
:mod:`firmware.protocol` onto the host's byte stream.

A response starts with ``respond`` (the transmitter is idle then) and is one of
:class:`Response`; its header carries the sequence number of the frame answered, and an ACK's
kind is that frame's kind with ``ACK_FLAG``. The payload comes from the NACK code and the
frame's kind (NACK), the STATUS record latched at ``respond`` (counters that move while it is
sent do not tear), the result slot being sent (READ_RESULT) or the frame buffer (READ_MEM:
``frame.count`` words). ``sent`` pulses when the last CRC byte has been handed on.

Bytes leave through a one-byte output register (taken only when empty): the byte choice
(block RAM data, status, header) and the CRC update of the byte sent are in different cycles.
A payload byte takes four cycles (address the block RAMs, register their word, register the
byte, offer it; the UART takes ten bit times).
"""
from amaranth import Array, C, Module, Mux, Signal
from amaranth.lib import enum, stream, wiring
from amaranth.lib.memory import ReadPort
from amaranth.lib.wiring import In, Out
from amaranth.utils import ceil_log2

from firmware import protocol as P
from hw.link.crc import crc16_next
from hw.link.frame_rx import FrameLayout

__all__ = ["Response", "ResponseTransmitter"]


class Response(enum.Enum, shape=3):
    """The response to a frame."""
    #: NACK: the error code and the frame's kind
    NACK = 0
    #: ACK without payload (WRITE_MEM, RUN, FACE_DATA)
    ACK = 1
    #: ACK of STATUS: the STATUS record
    STATUS = 2
    #: ACK of READ_RESULT: the ``n_result`` words of the result being sent
    RESULT = 3
    #: ACK of READ_MEM: ``frame.count`` words of the frame buffer
    DATA = 4


class ResponseTransmitter(wiring.Component):
    """Response frames with CRC; see the module docstring.

    Parameters
    ----------
    n_result, buf_words : int
        Words of a result, of the frame buffer.

    Members
    -------
    o_stream : Out(stream.Signature(8))
        Bytes to the host.
    respond : In(1)
        Start a response (only while not ``busy``).
    response : In(Response)
        Which, with ``respond``.
    code : In(8)
        A NACK's error code (held until ``sent``).
    frame : In(FrameLayout)
        The frame answered (``kind``, ``seq``, ``count``; held until ``sent``).
    status : In(8 * STATUS_STRUCT.size)
        The STATUS record (:class:`hw.link.status.LinkStatus`), latched at ``respond``.
    buf_r : In(ReadPort.Signature)
        Reads the frame buffer while ``busy``.
    result_r : In(ReadPort.Signature)
        Reads the result being sent (:class:`hw.link.result_slots.ResultSlots`).
    busy : Out(1)
        A response is being sent.
    sent : Out(1)
        One cycle: the response has been handed on.
    """

    def __init__(self, *, n_result: int, buf_words: int):
        self.n_result = n_result
        super().__init__({
            "o_stream": Out(stream.Signature(8)),
            "respond": In(1),
            "response": In(Response),
            "code": In(8),
            "frame": In(FrameLayout),
            "status": In(8 * P.STATUS_STRUCT.size),
            "buf_r": In(ReadPort.Signature(addr_width=ceil_log2(buf_words), shape=16)),
            "result_r": In(ReadPort.Signature(addr_width=ceil_log2(n_result), shape=16)),
            "busy": Out(1),
            "sent": Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        o, f = self.o_stream, self.frame
        resp = Signal(Response)
        # respond registers which response; the next cycle (resp_go) loads its length (a
        # multiplexer on a register, not on the executor's state), in time for the header
        # bytes that carry it (the fifth and sixth).
        resp_go = Signal()
        resp_len = Signal(16)
        tidx_last = Signal(16)            # resp_len - 1, registered with it
        hidx = Signal(range(6))
        tidx = Signal(16)
        cidx = Signal()
        crc = Signal(16, init=0xFFFF)
        pay_phase = Signal(2)
        pay_word = Signal(16)
        pay_byte = Signal(8)
        snap = Signal.like(self.status)

        # The output register. A byte marked ``tx_counted`` enters the CRC when it is taken;
        # CRC therefore reads the CRC only once the register is empty.
        tx_valid, tx_counted = Signal(), Signal()
        tx_payload = Signal(8)
        ob, ob_valid, ob_counted = Signal(8), Signal(), Signal()
        tx_ready = ~ob_valid
        o_take = o.valid & o.ready
        m.d.comb += [o.valid.eq(ob_valid), o.payload.eq(ob)]
        with m.If(tx_valid & tx_ready):
            m.d.sync += [ob.eq(tx_payload), ob_valid.eq(1), ob_counted.eq(tx_counted)]
        with m.Elif(o_take):
            m.d.sync += ob_valid.eq(0)
        with m.If(o_take & ob_counted):
            m.d.sync += crc.eq(crc16_next(crc, ob))

        m.d.sync += resp_go.eq(0)
        with m.If(resp_go):
            with m.Switch(resp):
                for which, length in ((Response.NACK, 2), (Response.ACK, 0),
                                      (Response.STATUS, P.STATUS_STRUCT.size),
                                      (Response.RESULT, 2 * self.n_result),
                                      (Response.DATA, f.count << 1)):
                    with m.Case(which):
                        m.d.sync += [resp_len.eq(length), tidx_last.eq(length - 1)]

        with m.FSM():
            with m.State("IDLE"):
                with m.If(self.respond):
                    m.d.sync += [resp.eq(self.response), resp_go.eq(1), snap.eq(self.status),
                                 hidx.eq(0), tidx.eq(0), cidx.eq(0), crc.eq(0xFFFF),
                                 pay_phase.eq(0)]
                    m.next = "HEADER"

            with m.State("HEADER"):
                kind = Mux(resp == Response.NACK, P.NACK, P.ACK_FLAG | f.kind)
                header = Array([C(P.SYNC[0], 8), C(P.SYNC[1], 8), kind, f.seq,
                                resp_len[:8], resp_len[8:]])
                # Both block RAM readers sit at word 0 when the payload starts.
                m.d.comb += [self.busy.eq(1), tx_valid.eq(1), tx_payload.eq(header[hidx]),
                             tx_counted.eq(hidx >= 2),
                             self.buf_r.addr.eq(0), self.result_r.addr.eq(0)]
                with m.If(tx_ready):
                    m.d.sync += hidx.eq(hidx + 1)
                    with m.If(hidx == 5):
                        with m.If(resp_len == 0):
                            m.next = "CRC"
                        with m.Else():
                            m.next = "PAYLOAD"

            with m.State("PAYLOAD"):
                # A byte in four cycles: address the block RAMs with tidx, register their
                # word, register the byte, offer it.
                m.d.comb += [self.busy.eq(1), self.buf_r.addr.eq(tidx >> 1),
                             self.result_r.addr.eq(tidx >> 1)]
                with m.Switch(pay_phase):
                    with m.Case(0):
                        m.d.sync += pay_phase.eq(1)
                    with m.Case(1):
                        m.d.sync += [pay_word.eq(Mux(resp == Response.DATA, self.buf_r.data,
                                                     self.result_r.data)), pay_phase.eq(2)]
                    with m.Case(2):
                        with m.Switch(resp):
                            with m.Case(Response.NACK):
                                m.d.sync += pay_byte.eq(Mux(tidx[0], f.kind, self.code))
                            with m.Case(Response.STATUS):
                                m.d.sync += pay_byte.eq(snap.word_select(tidx, 8))
                            with m.Default():
                                m.d.sync += pay_byte.eq(Mux(tidx[0], pay_word[8:],
                                                            pay_word[:8]))
                        m.d.sync += pay_phase.eq(3)
                    with m.Case(3):
                        m.d.comb += [tx_valid.eq(1), tx_payload.eq(pay_byte),
                                     tx_counted.eq(1)]
                        with m.If(tx_ready):
                            m.d.sync += [tidx.eq(tidx + 1), pay_phase.eq(0)]
                            with m.If(tidx == tidx_last):
                                m.next = "CRC"

            with m.State("CRC"):
                m.d.comb += [self.busy.eq(1), tx_valid.eq(1),
                             tx_payload.eq(Mux(cidx, crc[:8], crc[8:]))]
                with m.If(tx_ready):
                    m.d.sync += cidx.eq(1)
                    with m.If(cidx):
                        m.d.comb += self.sent.eq(1)
                        m.next = "IDLE"
        return m
