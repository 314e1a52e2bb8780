"""The device side of the host link: framed commands over the UART byte streams.

:class:`HostLink` parses the frames of :mod:`firmware.protocol`, checks them, and drives the
external memory, the engine's ``start`` and the embedding read-back. It answers every frame it
recognises (ACK, NACK or data) and never waits forever on the host: an inter-byte timeout ends
any partial frame. :class:`SerialHostLink` adds the UART receiver and transmitter.

Whole frames are buffered (one block RAM of ``(max_payload - 4) / 2`` words) and checked before
anything is written, so a frame with a bad CRC never touches the memory. FACE_DATA payloads go
instead straight into the face buffer (:class:`hw.link.face_buffer.FaceBuffer`, ``face_depth``
bytes), tentatively, and are committed once the frame checks; a FACE_DATA frame may therefore
be as long as the face buffer (a whole face in one frame), and faces queue there while the
engine computes. The link is stop-and-wait: while it executes a command or sends a response
it does not take bytes (the host waits for each response).

Memory port
-----------
``mem``, a :class:`hw.memory.port.MemoryPort` master:

* ``mem.cmd``: ``addr`` (16-bit word address), ``write``, ``length`` (words, 1 .. ``max_burst``).
  Bursts never cross a ``max_burst``-aligned boundary (choose ``max_burst`` to divide the SDRAM
  row).
* ``mem.w``: the ``length`` words of a write command follow its command; ``valid`` stays high
  for the whole burst (the words come from a block RAM).
* ``mem.r``: the ``length`` words of a read command; the link keeps ``ready`` high while it
  waits for them, so a controller without read back-pressure works.

Engine port
-----------
The face reaches the engine either as a stream (FACE_DATA frames, committed to the face
buffer whose bytes leave on ``o_face`` in order; a resent chunk is recognised by its sequence
number and offset and not fed twice; a chunk that finds the buffer full is NACKed BUSY and
dropped whole) or through memory (WRITE_MEM at the engine's input address, then RUN).
``start`` pulses for one cycle on an accepted RUN. ``busy``/``done``/``error`` are reported in
STATUS; while ``busy`` the link refuses RUN and the memory commands (NACK BUSY), so the engine
may own the memory port during a run; FACE_DATA and READ_RESULT are taken while it runs.

``i_result`` takes the embedding words into two result slots of ``n_result`` words (one block
RAM): the engine fills one while the host reads the other. A slot is complete after
``n_result`` words; with both slots holding results, ``i_result.ready`` is low until the host
frees one. READ_RESULT answers with the oldest complete result and keeps it: the same
READ_RESULT again (same sequence number: its ACK was lost) gets it again; a READ_RESULT with
another sequence number first frees it, then answers with the next complete result (NACK
NO_RESULT while there is none).

Components
----------
Each in its own module: the receiver (:mod:`hw.link.frame_rx`: sync, header, payload into the
frame or face buffer, length and CRC checks, inter-byte timeout), the command executor
(:mod:`hw.link.executor`: a frame's verdict, the memory bursts, RUN, READ_RESULT, FACE_DATA
commits, the choice of response), the transmitter (:mod:`hw.link.frame_tx`: ACK, NACK and
data frames with their CRC), the result slots (:mod:`hw.link.result_slots`) and the STATUS
record with its counters (:mod:`hw.link.status`). A frame goes receiver -> executor ->
transmitter, and the receiver takes bytes again once the response has been sent. This module
holds what several of them use, the frame buffer and the face buffer, and connects them.
"""
from amaranth import Module, Mux, Signal
from amaranth.lib import stream, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from firmware import protocol as P
from hw.link.crc import crc16_next
from hw.link.executor import CommandExecutor
from hw.link.face_buffer import FaceBuffer
from hw.link.frame_rx import FrameReceiver
from hw.link.frame_tx import ResponseTransmitter
from hw.link.result_slots import ResultSlots
from hw.link.status import CountEvents, LinkStatus
from hw.link.uart import UARTRx, UARTTx
from hw.memory.port import MemoryPort

__all__ = ["HostLink", "SerialHostLink", "crc16_next"]


class HostLink(wiring.Component):
    """The device side of the host link: receiver, command executor and transmitter; see the
    module docstring.

    Parameters
    ----------
    timeout_cycles : int
        Inter-byte timeout: a frame with a gap this long is abandoned. Pick some milliseconds
        (USB-UART bridges deliver in packets) but well below the host's response timeout.
    max_payload : int
        Largest payload accepted: 4 + an even number of data bytes.
    addr_width : int
        Width of the memory's 16-bit word address (24 for the ULX3S's 32 MB).
    mem_words : int or None
        Memory size in words (default ``2**addr_width``); accesses beyond it are NACKed.
    max_burst : int
        Largest ``length`` of a memory command, a power of two.
    n_result : int
        Embedding words that READ_RESULT returns.
    face_depth : int
        Bytes of the face buffer; FACE_DATA payloads may be up to ``4 + face_depth`` bytes
        (at most 65535).
    run_command : bool
        RUN starts the engine (``start``). False for an engine that takes its face only as
        a stream (FACE_DATA): RUN is then refused with ``Error.UNSUPPORTED`` instead of
        starting an engine that would wait for a face forever.

    Members
    -------
    i_stream : In(stream.Signature(8))
        Bytes from the UART receiver.
    o_stream : Out(stream.Signature(8))
        Bytes to the UART transmitter.
    rx_framing_error, rx_overrun : In(1)
        Pulses from the UART receiver, counted for STATUS.
    mem : Out(MemoryPort(addr_width))
    start : Out(1)
        One-cycle pulse: run the engine once.
    busy, done, error : In(1)
        The engine's state, reported in STATUS.
    i_result : In(stream.Signature(16))
        The embedding words, in order, after a start.
    o_face : Out(stream.Signature(8))
        The face bytes of FACE_DATA frames, in order, out of the face buffer, for an engine that
        takes its input as a stream.
    """

    def __init__(self, *, timeout_cycles: int, max_payload: int = P.MAX_PAYLOAD,
                 addr_width: int = 24, mem_words=None, max_burst: int = 256,
                 n_result: int = P.N_RESULT, face_depth: int = 2048,
                 run_command: bool = True):
        if not isinstance(timeout_cycles, int) or timeout_cycles < 2:
            raise ValueError(f"timeout_cycles must be an integer of at least 2, "
                             f"not {timeout_cycles!r}")
        if (not isinstance(max_payload, int) or max_payload < 6 or (max_payload - 4) % 2
                or max_payload > 0xFFFF):
            raise ValueError(f"max_payload must be 4 plus an even number of bytes, 6..65535, "
                             f"not {max_payload!r}")
        if not 1 <= addr_width <= 32:
            raise ValueError(f"addr_width must be 1..32, not {addr_width!r}")
        mem_words = 1 << addr_width if mem_words is None else mem_words
        if not 0 < mem_words <= 1 << addr_width:
            raise ValueError(f"mem_words must be 1..2**addr_width = {1 << addr_width}, "
                             f"not {mem_words!r}")
        port = MemoryPort(addr_width)
        if max_burst < 1 or max_burst & (max_burst - 1) or max_burst > port.max_length:
            raise ValueError(f"max_burst must be a power of two up to {port.max_length}, "
                             f"not {max_burst!r}")
        if not 1 <= n_result <= 0x7FFF:
            raise ValueError(f"n_result must be 1..32767, not {n_result!r}")
        if not isinstance(face_depth, int) or face_depth < 2:
            raise ValueError(f"face_depth must be an integer of at least 2, not {face_depth!r}")
        self.timeout_cycles = timeout_cycles
        self.max_payload = max_payload
        self.buf_words = (max_payload - 4) // 2
        self.addr_width = addr_width
        self.mem_words = mem_words
        self.max_burst = max_burst
        self.n_result = n_result
        self.face_depth = face_depth
        #: longest FACE_DATA payload: the offset and a face buffer full of bytes
        self.face_payload = min(0xFFFF, 4 + face_depth)
        self.run_command = run_command
        super().__init__({
            "i_stream": In(stream.Signature(8)),
            "o_stream": Out(stream.Signature(8)),
            "rx_framing_error": In(1),
            "rx_overrun": In(1),
            "mem": Out(port),
            "start": Out(1),
            "busy": In(1),
            "done": In(1),
            "error": In(1),
            "i_result": In(stream.Signature(16)),
            "o_face": Out(stream.Signature(8)),
        })

    def elaborate(self, platform):
        m = Module()
        m.submodules.rx = rx = FrameReceiver(
            timeout_cycles=self.timeout_cycles, max_payload=self.max_payload,
            face_payload=self.face_payload, buf_words=self.buf_words)
        m.submodules.executor = ex = CommandExecutor(
            addr_width=self.addr_width, mem_words=self.mem_words, max_burst=self.max_burst,
            buf_words=self.buf_words, run_command=self.run_command)
        m.submodules.tx = tx = ResponseTransmitter(n_result=self.n_result,
                                                   buf_words=self.buf_words)
        m.submodules.results = results = ResultSlots(self.n_result)
        m.submodules.status = status = LinkStatus(
            max_payload=self.max_payload, n_result=self.n_result,
            face_payload=self.face_payload)
        m.submodules.faces = faces = FaceBuffer(self.face_depth)
        m.submodules.buf = buf = Memory(shape=16, depth=self.buf_words, init=[])
        buf_w = buf.write_port()
        buf_r = buf.read_port()

        wiring.connect(m, wiring.flipped(self.i_stream), rx.i_stream)
        wiring.connect(m, tx.o_stream, wiring.flipped(self.o_stream))
        wiring.connect(m, ex.mem, wiring.flipped(self.mem))
        wiring.connect(m, wiring.flipped(self.i_result), results.i_result)
        wiring.connect(m, faces.o_stream, wiring.flipped(self.o_face))
        wiring.connect(m, ex.results, results.host)
        wiring.connect(m, results.read, tx.result_r)

        # A frame goes receiver -> executor -> transmitter; the receiver takes bytes again once
        # the response has been sent (stop-and-wait).
        m.d.comb += [
            ex.event.eq(rx.event), ex.frame.eq(rx.frame), ex.crc_ok.eq(rx.crc_ok),
            ex.face_over.eq(rx.face_over),
            tx.respond.eq(ex.respond), tx.response.eq(ex.response), tx.code.eq(ex.last_error),
            tx.frame.eq(rx.frame), tx.status.eq(status.record),
            rx.resume.eq(tx.sent),
        ]
        # The face buffer: the receiver writes a FACE_DATA frame's bytes (tentative) and
        # rolls back those of a frame not committed; the executor commits.
        m.d.comb += [faces.w_data.eq(rx.face_data), faces.w_en.eq(rx.face_en),
                     rx.face_full.eq(faces.w_full), faces.rollback.eq(rx.face_rollback),
                     faces.commit.eq(ex.face_commit)]
        # The frame buffer: the receiver writes a frame's data words, the executor READ_MEM's
        # words (never in the same cycle); the executor reads WRITE_MEM's words out, the
        # transmitter READ_MEM's (while it sends).
        m.d.comb += [
            buf_w.en.eq(rx.buf_w.en | ex.buf_w.en),
            buf_w.addr.eq(Mux(ex.buf_w.en, ex.buf_w.addr, rx.buf_w.addr)),
            buf_w.data.eq(Mux(ex.buf_w.en, ex.buf_w.data, rx.buf_w.data)),
            buf_r.addr.eq(Mux(tx.busy, tx.buf_r.addr, ex.buf_r.addr)),
            ex.buf_r.data.eq(buf_r.data), tx.buf_r.data.eq(buf_r.data),
        ]
        # The engine and the STATUS record. Each counter has one source: the receiver's
        # events, the executor's, or the UART's.
        uart = Signal(CountEvents)
        m.d.comb += [
            self.start.eq(ex.start), ex.busy.eq(self.busy),
            uart.framing_errors.eq(self.rx_framing_error), uart.overruns.eq(self.rx_overrun),
            status.count.eq(rx.count.as_value() | ex.count.as_value() | uart.as_value()),
            status.last_error.eq(ex.last_error), status.busy.eq(self.busy),
            status.done.eq(self.done), status.error.eq(self.error),
            status.result_ready.eq(results.host.ready), status.held_words.eq(results.held_words),
        ]
        return m


#: :class:`HostLink` members that a transport (UART, USB) drives itself: the byte streams and
#: the receiver's error flags. The others pass through the transport's wrapper unchanged.
TRANSPORT_MEMBERS = ("i_stream", "o_stream", "rx_framing_error", "rx_overrun")


def passed_members(link) -> dict:
    """The members of a transport wrapper around ``link`` that are ``link``'s own."""
    return {name: member for name, member in link.signature.members.items()
            if name not in TRANSPORT_MEMBERS}


def connect_passed_members(m, wrapper, link):
    """Join the wrapper's :func:`passed_members` to ``link``'s."""
    for name in ("mem", "i_result", "o_face"):
        wiring.connect(m, wiring.flipped(getattr(wrapper, name)), getattr(link, name))
    m.d.comb += [wrapper.start.eq(link.start), link.busy.eq(wrapper.busy),
                 link.done.eq(wrapper.done), link.error.eq(wrapper.error)]


class SerialHostLink(wiring.Component):
    """:class:`HostLink` behind an 8N1 UART: the board top's view of the host link.

    Parameters
    ----------
    divider : int
        Clock cycles a UART bit (see :func:`hw.link.uart.uart_divider`).
    **kwargs
        Passed to :class:`HostLink`.

    Members
    -------
    rx : In(1)
        From the host (the FT231X's TXD).
    tx : Out(1)
        To the host.
    The memory, engine and result members of :class:`HostLink`.
    """

    def __init__(self, divider: int, **kwargs):
        self.uart_rx = UARTRx(divider)
        self.uart_tx = UARTTx(divider)
        self.link = HostLink(**kwargs)
        super().__init__({"rx": In(1, init=1), "tx": Out(1, init=1),
                          **passed_members(self.link)})

    def elaborate(self, platform):
        m = Module()
        m.submodules.uart_rx = rx = self.uart_rx
        m.submodules.uart_tx = tx = self.uart_tx
        m.submodules.link = link = self.link
        wiring.connect(m, rx.o_stream, link.i_stream)
        wiring.connect(m, link.o_stream, tx.i_stream)
        m.d.comb += [rx.rx.eq(self.rx), self.tx.eq(tx.tx),
                     link.rx_framing_error.eq(rx.framing_error),
                     link.rx_overrun.eq(rx.overrun)]
        connect_passed_members(m, self, link)
        return m
