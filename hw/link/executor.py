"""The command executor of the host link (:mod:`hw.link.framing`): it checks each frame the
receiver (:mod:`hw.link.frame_rx`) reports, carries out its command and chooses its response
(:mod:`hw.link.frame_tx`).

A frame is checked in three registered steps (sums, compares, the error code) and acted on in
the fourth (``CHECK``): a bad CRC is NACKed BAD_CRC; a frame whose error code is not 0 is
rejected with a NACK of that code; otherwise its command runs:

- WRITE_MEM: the data words go from the frame buffer to the memory port, READ_MEM: ``count``
  words from the memory port into the frame buffer, both in bursts of at most ``max_burst``
  words that never cross a ``max_burst``-aligned boundary; then the ACK (with the words).
- RUN: ``start`` pulses (counted in ``runs``).
- READ_RESULT: the result slots (:class:`hw.link.result_slots.ResultSlots`) free the answered
  result if the sequence number is new, and the oldest complete result is sent.
- STATUS: the STATUS record (:class:`hw.link.status.LinkStatus`).
- FACE_DATA: the chunk's tentative bytes in the face buffer are committed, unless the chunk is
  a resend of the last one fed (same sequence number, same end: its ACK was lost); a chunk at
  offset 0 counts as a run.

The error codes: BAD_LENGTH for a length the command cannot have, BAD_ADDRESS for a memory
range beyond ``mem_words`` or a face chunk whose offset is neither 0 nor the end of the last
chunk fed, BUSY for a memory command or RUN while the engine runs or a face chunk that found the
face buffer full, UNSUPPORTED for RUN without ``run_command``, NO_RESULT for a READ_RESULT
with no complete result, UNKNOWN_CMD for any other kind. A frame the receiver cut
(TIMEOUT) or found over-long (BAD_LENGTH) is NACKed at once.
"""
from amaranth import C, Module, Mux, Signal
from amaranth.lib import wiring
from amaranth.lib.memory import ReadPort, WritePort
from amaranth.lib.wiring import In, Out
from amaranth.utils import ceil_log2

from firmware import protocol as P
from hw.link.frame_rx import FrameLayout, RxEvent
from hw.link.frame_tx import Response
from hw.link.result_slots import ResultControl
from hw.link.status import CountEvents
from hw.memory.port import MemoryPort

__all__ = ["CommandExecutor"]


class CommandExecutor(wiring.Component):
    """Checks frames, runs their commands, chooses their responses; see the module docstring.

    Parameters
    ----------
    addr_width, mem_words, max_burst, buf_words, run_command
        As :class:`hw.link.framing.HostLink`'s (``buf_words``: its frame buffer's words).

    Members
    -------
    event : In(RxEvent)
        The receiver's report.
    frame : In(FrameLayout)
        The frame's fields (held while it is acted on and answered).
    crc_ok, face_over : In(1)
        The frame's CRC checks; a byte of it found the face buffer full.
    busy : In(1)
        The engine runs.
    results : Out(ResultControl)
        The result slots.
    face_commit : Out(1)
        Commit the face buffer's tentative bytes (the chunk's).
    mem : Out(MemoryPort(addr_width))
    buf_w : In(WritePort.Signature), buf_r : In(ReadPort.Signature)
        Drive the frame buffer's ports: READ_MEM's words in, WRITE_MEM's out.
    start : Out(1)
        One cycle: run the engine once.
    respond : Out(1)
        One cycle: answer the frame with ``response``.
    response : Out(Response)
    last_error : Out(8)
        The code of the last NACK (also the code of the NACK being sent).
    count : Out(CountEvents)
        Pulses of the ``frames_ok``, ``bad_crc``, ``rejected`` and ``runs`` counters.
    """

    def __init__(self, *, addr_width: int, mem_words: int, max_burst: int, buf_words: int,
                 run_command: bool):
        self.addr_width, self.mem_words = addr_width, mem_words
        self.max_burst, self.buf_words = max_burst, buf_words
        self.run_command = run_command
        buf_addr = ceil_log2(buf_words)
        super().__init__({
            "event": In(RxEvent),
            "frame": In(FrameLayout),
            "crc_ok": In(1),
            "face_over": In(1),
            "busy": In(1),
            "results": Out(ResultControl),
            "face_commit": Out(1),
            "mem": Out(MemoryPort(addr_width)),
            "buf_w": In(WritePort.Signature(addr_width=buf_addr, shape=16)),
            "buf_r": In(ReadPort.Signature(addr_width=buf_addr, shape=16)),
            "start": Out(1),
            "respond": Out(1),
            "response": Out(Response),
            "last_error": Out(8),
            "count": Out(CountEvents),
        })

    def elaborate(self, platform):
        m = Module()
        f, mem, res = self.frame, self.mem, self.results
        kind, seq, length, addr, count = f.kind, f.seq, f.length, f.addr, f.count
        buf_w, buf_r = self.buf_w, self.buf_r

        cur_addr = Signal(self.addr_width)
        remaining = Signal(16)            # words of the command still to move
        burst = Signal(range(self.max_burst + 1))
        widx = Signal(range(self.buf_words + 1))
        face_pos = Signal(32)             # face bytes fed since offset 0
        face_seq = Signal(8)              # sequence number of the last chunk fed
        n_data = (length - 4)[1:]         # WRITE_MEM data words
        n_face = length - 4               # FACE_DATA bytes
        # Frame checks that need arithmetic are registered in PREP (sums), PREP2 (compares)
        # and VERDICT (the error code); CHECK acts.
        crc_bad, wr_out, rd_out, face_dup, face_gap, res_again = (Signal(name=n) for n in (
            "crc_bad", "wr_out", "rd_out", "face_dup", "face_gap", "res_again"))
        frame_error = Signal(8)            # the frame's verdict (VERDICT -> CHECK)
        wr_end, rd_end, face_end = Signal(34), Signal(34), Signal(33)

        # Memory bursts stop at max_burst-aligned boundaries.
        wd_take = mem.w.valid & mem.w.ready
        offset = cur_addr[:max(1, (self.max_burst - 1).bit_length())] \
            if self.max_burst > 1 else C(0, 1)
        room = self.max_burst - offset
        m.d.comb += [
            mem.cmd.payload.addr.eq(cur_addr),
            mem.cmd.payload.length.eq(Mux(remaining < room, remaining, room)),
            mem.w.payload.eq(buf_r.data),
            buf_r.addr.eq(Mux(wd_take, widx + 1, widx)),
            res.seq.eq(seq),
        ]
        m.d.sync += self.start.eq(0)

        def respond(response):
            m.d.comb += [self.respond.eq(1), self.response.eq(response)]
            m.next = "IDLE"

        def nack(code):
            m.d.sync += self.last_error.eq(code)
            respond(Response.NACK)

        def count_up(name):
            m.d.comb += self.count[name].eq(1)

        with m.FSM():
            with m.State("IDLE"):
                with m.Switch(self.event):
                    with m.Case(RxEvent.FRAME):
                        m.next = "PREP"
                    with m.Case(RxEvent.TIMEOUT):
                        nack(P.Error.TIMEOUT)
                    with m.Case(RxEvent.LONG):
                        nack(P.Error.BAD_LENGTH)

            with m.State("PREP"):
                m.d.sync += [crc_bad.eq(~self.crc_ok), wr_end.eq(addr + n_data),
                             rd_end.eq(addr + count), face_end.eq(addr + n_face),
                             face_gap.eq((addr != 0) & (addr != face_pos))]
                m.next = "PREP2"

            with m.State("PREP2"):
                m.d.sync += [wr_out.eq(wr_end > self.mem_words),
                             rd_out.eq(rd_end > self.mem_words),
                             face_dup.eq((seq == face_seq) & (face_end == face_pos)),
                             res_again.eq(res.again)]
                m.next = "VERDICT"

            with m.State("VERDICT"):
                # The error code of the frame (0: act on it), registered for CHECK.
                def verdict(*rules):
                    chain = C(0, 8)
                    for cond, code in reversed(rules):
                        chain = Mux(cond, code, chain)
                    return chain
                bad_len = P.Error.BAD_LENGTH
                with m.Switch(kind):
                    with m.Case(P.Cmd.WRITE_MEM):
                        m.d.sync += frame_error.eq(verdict(((length < 6) | length[0], bad_len),
                                                     (wr_out, P.Error.BAD_ADDRESS),
                                                     (self.busy, P.Error.BUSY)))
                    with m.Case(P.Cmd.READ_MEM):
                        m.d.sync += frame_error.eq(verdict(
                            ((length != 6) | (count == 0) | (count > self.buf_words), bad_len),
                            (rd_out, P.Error.BAD_ADDRESS), (self.busy, P.Error.BUSY)))
                    with m.Case(P.Cmd.RUN):
                        m.d.sync += frame_error.eq(verdict((length != 0, bad_len),
                                                     (not self.run_command,
                                                      P.Error.UNSUPPORTED),
                                                     (self.busy, P.Error.BUSY)))
                    with m.Case(P.Cmd.READ_RESULT):
                        # after freeing the answered result, is there a complete one?
                        m.d.sync += frame_error.eq(verdict((length != 0, bad_len),
                                                     (res_again, 0),
                                                     (~res.ready, P.Error.NO_RESULT)))
                    with m.Case(P.Cmd.STATUS):
                        m.d.sync += frame_error.eq(verdict((length != 0, bad_len)))
                    with m.Case(P.Cmd.FACE_DATA):
                        # a resent chunk whose ACK was lost (face_dup) is acknowledged again
                        m.d.sync += frame_error.eq(verdict((length < 5, bad_len), (face_dup, 0),
                                                     (self.face_over, P.Error.BUSY),
                                                     (face_gap, P.Error.BAD_ADDRESS)))
                    with m.Default():
                        m.d.sync += frame_error.eq(P.Error.UNKNOWN_CMD)
                m.next = "CHECK"

            with m.State("CHECK"):
                m.d.sync += [cur_addr.eq(addr), widx.eq(0)]
                m.d.comb += buf_r.addr.eq(0)
                # A well-formed READ_RESULT with a new sequence number frees the result the
                # host was sent last (answered or not, the host has moved on).
                m.d.comb += res.free.eq(~crc_bad & (kind == P.Cmd.READ_RESULT) & ~res_again
                                        & ((frame_error == 0)
                                           | (frame_error == P.Error.NO_RESULT)))
                with m.If(crc_bad):
                    count_up("bad_crc")
                    nack(P.Error.BAD_CRC)
                with m.Elif(frame_error != 0):
                    count_up("frames_ok")
                    count_up("rejected")
                    nack(frame_error)
                with m.Else():
                    count_up("frames_ok")
                    with m.Switch(kind):
                        with m.Case(P.Cmd.WRITE_MEM):
                            m.d.sync += remaining.eq(n_data)
                            m.next = "W_CMD"
                        with m.Case(P.Cmd.READ_MEM):
                            m.d.sync += remaining.eq(count)
                            m.next = "R_CMD"
                        with m.Case(P.Cmd.RUN):
                            m.d.sync += self.start.eq(1)
                            count_up("runs")
                            respond(Response.ACK)
                        with m.Case(P.Cmd.READ_RESULT):
                            m.d.comb += res.answer.eq(1)
                            respond(Response.RESULT)
                        with m.Case(P.Cmd.STATUS):
                            respond(Response.STATUS)
                        with m.Case(P.Cmd.FACE_DATA):
                            # A chunk resent after a lost ACK is already in the buffer: its
                            # copy is rolled back (when the receiver hunts), the others
                            # committed.
                            with m.If(~face_dup):
                                m.d.comb += self.face_commit.eq(1)
                                m.d.sync += [face_pos.eq(addr + n_face), face_seq.eq(seq)]
                                with m.If(addr == 0):
                                    count_up("runs")
                            respond(Response.ACK)

            with m.State("W_CMD"):
                m.d.comb += [mem.cmd.valid.eq(1), mem.cmd.payload.write.eq(1)]
                with m.If(mem.cmd.ready):
                    m.d.sync += burst.eq(mem.cmd.payload.length)
                    m.next = "W_DATA"

            with m.State("W_DATA"):
                m.d.comb += mem.w.valid.eq(1)
                with m.If(wd_take):
                    m.d.sync += [widx.eq(widx + 1), burst.eq(burst - 1),
                                 remaining.eq(remaining - 1), cur_addr.eq(cur_addr + 1)]
                    with m.If(burst == 1):
                        with m.If(remaining == 1):
                            respond(Response.ACK)
                        with m.Else():
                            m.next = "W_CMD"

            with m.State("R_CMD"):
                m.d.comb += [mem.cmd.valid.eq(1), mem.cmd.payload.write.eq(0)]
                with m.If(mem.cmd.ready):
                    m.d.sync += burst.eq(mem.cmd.payload.length)
                    m.next = "R_DATA"

            with m.State("R_DATA"):
                m.d.comb += [mem.r.ready.eq(1),
                             buf_w.addr.eq(widx), buf_w.data.eq(mem.r.payload),
                             buf_w.en.eq(mem.r.valid)]
                with m.If(mem.r.valid):
                    m.d.sync += [widx.eq(widx + 1), burst.eq(burst - 1),
                                 remaining.eq(remaining - 1), cur_addr.eq(cur_addr + 1)]
                    with m.If(burst == 1):
                        with m.If(remaining == 1):
                            respond(Response.DATA)
                        with m.Else():
                            m.next = "R_CMD"
        return m
