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
"""
from amaranth import *
from amaranth.lib import data, stream, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from firmware import protocol as P
from hw.link.face_buffer import FaceBuffer
from hw.link.uart import UARTRx, UARTTx
from hw.memory.port import MemoryPort

__all__ = ["HostLink", "SerialHostLink", "crc16_next"]


def _crc16_matrix():
    """For each CRC output bit, the CRC input bits and data bits that it is the XOR of.

    Runs the bitwise loop on symbolic bits (sets of inputs, XOR = symmetric difference), so the
    logic is one flat XOR per bit: unrolling the loop with ``Mux`` would duplicate the expression
    tree at every step."""
    bits = [{("c", k)} for k in range(16)]
    for k in range(8):
        bits[8 + k] = bits[8 + k] ^ {("d", k)}
    for _ in range(8):
        top = bits[15]
        bits = [set()] + bits[:15]
        for k in (0, 5, 12):                   # 0x1021
            bits[k] = bits[k] ^ top
    return [sorted(b) for b in bits]


_CRC16_MATRIX = _crc16_matrix()


def crc16_next(crc, byte):
    """One byte of CRC-16/CCITT-FALSE (:func:`firmware.protocol.crc16`) as combinational logic."""
    src = {"c": crc, "d": byte}
    out = []
    for terms in _CRC16_MATRIX:
        value = C(0, 1)
        for name, k in terms:
            value = value ^ src[name][k]
        out.append(value)
    return Cat(*out)


# What the payload bytes of a response come from.
_SRC_NACK, _SRC_STATUS, _SRC_BUF, _SRC_RESULT = range(4)
_COUNTERS = ("frames_ok", "bad_crc", "bad_length", "timeouts", "rejected", "framing_errors",
             "overruns", "dropped_bytes", "runs")


class HostLink(wiring.Component):
    """Frame parser, checker and command executor of the host link.

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
        i, o = self.i_stream, self.o_stream

        m.submodules.buf = buf = Memory(shape=16, depth=self.buf_words, init=[])
        buf_w = buf.write_port()
        buf_r = buf.read_port()
        m.submodules.results = results = Memory(shape=16, depth=2 * self.n_result, init=[])
        m.submodules.faces = faces = FaceBuffer(self.face_depth)
        wiring.connect(m, faces.o_stream, wiring.flipped(self.o_face))
        res_w = results.write_port()
        res_r = results.read_port()

        # ---- frame fields and state ----
        kind = Signal(8)
        seq = Signal(8)
        length = Signal(16)
        idx = Signal(16)                  # payload byte index while receiving
        # last indices, registered when the length is known (not length - 1 at each compare)
        idx_last, tidx_last = Signal(16), Signal(16)
        crc = Signal(16, init=0xFFFF)
        addr = Signal(32)
        count = Signal(16)
        lo = Signal(8)
        idle = Signal(range(self.timeout_cycles))
        timed_out = Signal()

        cur_addr = Signal(self.addr_width)
        remaining = Signal(16)            # words of the command still to move
        burst = Signal(range(self.max_burst + 1))
        widx = Signal(range(self.buf_words + 1))

        resp_kind = Signal(8)
        resp_len = Signal(16)
        resp_src = Signal(2)
        hidx = Signal(range(6))
        tidx = Signal(16)
        cidx = Signal()
        nack_code = Signal(8)
        pay_phase = Signal(2)
        pay_word = Signal(16)
        pay_byte = Signal(8)
        last_error = Signal(8)

        counters = {name: Signal(16, name=name) for name in _COUNTERS}
        face_pos = Signal(32)             # face bytes fed since offset 0
        face_seq = Signal(8)              # sequence number of the last chunk fed
        is_face = Signal()                # this frame is FACE_DATA: its data go to the buffer
        face_over = Signal()              # a byte of this frame found the face buffer full
        status_snap = Signal(P.STATUS_STRUCT.size * 8)

        # ---- results: two slots; the engine fills wr_slot, the host reads rd_slot ----
        n_res = self.n_result
        wr_slot, rd_slot = Signal(), Signal()
        wr_cnt = Signal(range(n_res))
        filled = Signal(range(3))         # complete results held (the answered one included)
        answered = Signal()               # rd_slot was sent; kept until another READ_RESULT
        answered_seq = Signal(8)
        send_slot = Signal()
        release = Signal()                # (comb) a new READ_RESULT frees the answered slot
        held_words = Signal(range(2 * n_res + 1))
        res_take = self.i_result.valid & self.i_result.ready
        fill = res_take & (wr_cnt == n_res - 1)
        m.d.comb += [self.i_result.ready.eq(filled != 2),
                     res_w.addr.eq(Mux(wr_slot, n_res, 0) + wr_cnt),
                     res_w.data.eq(self.i_result.payload), res_w.en.eq(res_take)]
        with m.If(res_take):
            m.d.sync += wr_cnt.eq(Mux(fill, 0, wr_cnt + 1))
        with m.If(fill):
            m.d.sync += wr_slot.eq(~wr_slot)
        m.d.sync += [filled.eq(filled + fill - release),
                     held_words.eq(held_words + res_take - Mux(release, n_res, 0))]
        with m.If(release):
            m.d.sync += [rd_slot.eq(~rd_slot), answered.eq(0)]
        result_ready = filled > answered  # a complete result the host has not been sent

        with m.If(self.rx_framing_error):
            m.d.sync += counters["framing_errors"].eq(counters["framing_errors"] + 1)
        with m.If(self.rx_overrun):
            m.d.sync += counters["overruns"].eq(counters["overruns"] + 1)

        def count_up(name):
            m.d.sync += counters[name].eq(counters[name] + 1)

        # respond() registers which call site answers (resp_sel); the next cycle loads that
        # site's kind, length and source (a multiplexer on a register, not on the state), in
        # time for the header bytes that carry them (the third and later).
        resp_sites = []
        resp_go = Signal()
        resp_sel = Signal(6)
        m.d.sync += resp_go.eq(0)

        def respond(kind_value, len_value, src):
            m.d.sync += [resp_go.eq(1), resp_sel.eq(len(resp_sites)),
                         hidx.eq(0), tidx.eq(0), cidx.eq(0), crc.eq(0xFFFF), pay_phase.eq(0)]
            resp_sites.append((kind_value, len_value, src))
            m.next = "TX_HDR"

        def nack(code):
            m.d.sync += [nack_code.eq(code), last_error.eq(code)]
            respond(P.NACK, 2, _SRC_NACK)

        def reject(code):
            count_up("rejected")
            nack(code)

        # The inter-byte timer runs inside a frame and restarts on every byte.
        rx_byte = i.valid & i.ready
        m.d.comb += timed_out.eq(idle == self.timeout_cycles - 1)
        with m.If(rx_byte):
            m.d.sync += idle.eq(0)
        with m.Elif(~timed_out):
            m.d.sync += idle.eq(idle + 1)

        crc_in = crc16_next(crc, i.payload)
        # Response bytes leave through a one-byte output register (taken only when empty):
        # the FSM's byte choice (block RAM data, status, header) and the CRC update of the
        # byte sent are in different cycles. A byte marked ``tx_counted`` enters the CRC when
        # the UART takes it; TX_CRC therefore reads the CRC only once the register is empty.
        tx_valid, tx_counted = Signal(), Signal()
        tx_payload = Signal(8)
        ob, ob_valid, ob_counted = Signal(8), Signal(), Signal()
        tx_ready = ~ob_valid
        tx_take = tx_valid & tx_ready
        o_take = o.valid & o.ready
        m.d.comb += [o.valid.eq(ob_valid), o.payload.eq(ob)]
        with m.If(tx_take):
            m.d.sync += [ob.eq(tx_payload), ob_valid.eq(1), ob_counted.eq(tx_counted)]
        with m.Elif(o_take):
            m.d.sync += ob_valid.eq(0)
        with m.If(o_take & ob_counted):
            m.d.sync += crc.eq(crc16_next(crc, ob))
        wd_take = self.mem.w.valid & self.mem.w.ready

        # Memory bursts stop at max_burst-aligned boundaries.
        offset = cur_addr[:max(1, (self.max_burst - 1).bit_length())] \
            if self.max_burst > 1 else C(0, 1)
        room = self.max_burst - offset
        m.d.comb += [
            self.mem.cmd.payload.addr.eq(cur_addr),
            self.mem.cmd.payload.length.eq(Mux(remaining < room, remaining, room)),
            self.mem.w.payload.eq(buf_r.data),
            buf_r.addr.eq(Mux(wd_take, widx + 1, widx)),
        ]

        n_data = (length - 4)[1:]          # WRITE_MEM data words
        res_base = Signal(range(2 * n_res))  # the first word of the slot being sent
        m.d.sync += res_base.eq(Mux(send_slot, n_res, 0))
        # Frame checks that need arithmetic are registered in PREP (sums), PREP2 (compares)
        # and VERDICT (the error code); CHECK acts.
        crc_bad, wr_out, rd_out, face_dup, face_gap, res_again = (Signal(name=n) for n in (
            "crc_bad", "wr_out", "rd_out", "face_dup", "face_gap", "res_again"))
        frame_error = Signal(8)            # the frame's verdict (VERDICT -> CHECK)
        wr_end, rd_end, face_end = Signal(34), Signal(34), Signal(33)
        m.d.sync += self.start.eq(0)
        m.d.comb += faces.w_data.eq(i.payload)
        with m.FSM():
            with m.State("HUNT"):
                # the tentative bytes of a FACE_DATA frame that was not committed go
                m.d.comb += [i.ready.eq(1), faces.rollback.eq(1)]
                with m.If(i.valid):
                    with m.If(i.payload == P.SYNC[0]):
                        m.next = "SYNC1"
                    with m.Else():
                        count_up("dropped_bytes")

            with m.State("SYNC1"):
                m.d.comb += i.ready.eq(1)
                with m.If(i.valid):
                    m.d.sync += [crc.eq(0xFFFF), kind.eq(0), seq.eq(0)]
                    with m.If(i.payload == P.SYNC[1]):
                        m.next = "KIND"
                    with m.Else():
                        count_up("dropped_bytes")
                        with m.If(i.payload != P.SYNC[0]):   # A5 A5 5A is still a frame
                            m.next = "HUNT"
                with m.Elif(timed_out):
                    count_up("dropped_bytes")
                    m.next = "HUNT"

            def header_byte(state, field, next_state):
                with m.State(state):
                    m.d.comb += i.ready.eq(1)
                    with m.If(i.valid):
                        m.d.sync += [crc.eq(crc_in), field]
                        m.next = next_state
                    with m.Elif(timed_out):
                        count_up("timeouts")
                        nack(P.Error.TIMEOUT)

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
                        count_up("bad_length")
                        m.next = "DISCARD"
                    with m.Elif(full == 0):
                        m.next = "CRC0"
                    with m.Else():
                        m.next = "PAYLOAD"
                with m.Elif(timed_out):
                    count_up("timeouts")
                    nack(P.Error.TIMEOUT)

            with m.State("PAYLOAD"):
                data_byte = i.valid & (idx >= 4)
                m.d.comb += [i.ready.eq(1),
                             buf_w.addr.eq((idx >> 1) - 2),
                             buf_w.data.eq(Mux(idx[0], Cat(lo, i.payload), i.payload)),
                             buf_w.en.eq(data_byte & ~is_face & (idx[0] | (idx == idx_last))),
                             faces.w_en.eq(data_byte & is_face)]
                with m.If(faces.w_en & faces.w_full):
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
                    count_up("timeouts")
                    nack(P.Error.TIMEOUT)

            header_byte("CRC0", crc.eq(crc_in), "CRC1")
            header_byte("CRC1", crc.eq(crc_in), "PREP")

            with m.State("PREP"):
                n_face = length - 4
                m.d.sync += [crc_bad.eq(crc != 0), wr_end.eq(addr + n_data),
                             rd_end.eq(addr + count), face_end.eq(addr + n_face),
                             face_gap.eq((addr != 0) & (addr != face_pos))]
                m.next = "PREP2"

            with m.State("PREP2"):
                m.d.sync += [wr_out.eq(wr_end > self.mem_words),
                             rd_out.eq(rd_end > self.mem_words),
                             face_dup.eq((seq == face_seq) & (face_end == face_pos)),
                             res_again.eq(answered & (seq == answered_seq))]
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
                        # after freeing the answered slot, is there a complete result?
                        m.d.sync += frame_error.eq(verdict((length != 0, bad_len),
                                                     (res_again, 0),
                                                     (filled <= answered, P.Error.NO_RESULT)))
                    with m.Case(P.Cmd.STATUS):
                        m.d.sync += frame_error.eq(verdict((length != 0, bad_len)))
                    with m.Case(P.Cmd.FACE_DATA):
                        # a resent chunk whose ACK was lost (face_dup) is acknowledged again
                        m.d.sync += frame_error.eq(verdict((length < 5, bad_len), (face_dup, 0),
                                                     (face_over, P.Error.BUSY),
                                                     (face_gap, P.Error.BAD_ADDRESS)))
                    with m.Default():
                        m.d.sync += frame_error.eq(P.Error.UNKNOWN_CMD)
                m.next = "CHECK"

            with m.State("DISCARD"):
                # An over-long frame: drop everything until the line goes quiet, so that a sync
                # pattern inside its payload is not taken for a frame.
                m.d.comb += i.ready.eq(1)
                with m.If(~i.valid & timed_out):
                    nack(P.Error.BAD_LENGTH)

            with m.State("CHECK"):
                m.d.sync += [cur_addr.eq(addr), widx.eq(0)]
                m.d.comb += buf_r.addr.eq(0)
                # A well-formed READ_RESULT with a new sequence number frees the result the
                # host was sent last (answered or not, the host has moved on).
                m.d.comb += release.eq(~crc_bad & (kind == P.Cmd.READ_RESULT) & answered
                                       & ~res_again & ((frame_error == 0)
                                                       | (frame_error == P.Error.NO_RESULT)))
                with m.If(crc_bad):
                    count_up("bad_crc")
                    nack(P.Error.BAD_CRC)
                with m.Elif(frame_error != 0):
                    count_up("frames_ok")
                    reject(frame_error)
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
                            respond(P.ACK_FLAG | P.Cmd.RUN, 0, _SRC_NACK)
                        with m.Case(P.Cmd.READ_RESULT):
                            # the answered slot again, or the next one (after the release)
                            m.d.sync += [answered.eq(1), answered_seq.eq(seq),
                                         send_slot.eq(rd_slot ^ release)]
                            respond(P.ACK_FLAG | P.Cmd.READ_RESULT, 2 * self.n_result,
                                    _SRC_RESULT)
                        with m.Case(P.Cmd.STATUS):
                            # A snapshot: counters that move while it is sent do not tear.
                            flags = Cat(self.busy, self.done, self.error, result_ready,
                                        C(0, 4))
                            m.d.sync += status_snap.eq(Cat(
                                C(P.VERSION, 8), flags, last_error, C(0, 8),
                                C(self.max_payload, 16), C(self.n_result, 16),
                                *(counters[n] for n in P.STATUS_FIELDS[2:-2]),
                                held_words, C(0, 16 - len(held_words)),
                                C(self.face_payload, 16)))
                            respond(P.ACK_FLAG | P.Cmd.STATUS, P.STATUS_STRUCT.size,
                                    _SRC_STATUS)
                        with m.Case(P.Cmd.FACE_DATA):
                            # A chunk resent after a lost ACK is already in the buffer: its
                            # copy is rolled back (HUNT), the others committed.
                            with m.If(~face_dup):
                                n_face = length - 4
                                m.d.comb += faces.commit.eq(1)
                                m.d.sync += [face_pos.eq(addr + n_face), face_seq.eq(seq)]
                                with m.If(addr == 0):
                                    count_up("runs")
                            respond(P.ACK_FLAG | P.Cmd.FACE_DATA, 0, _SRC_NACK)

            with m.State("W_CMD"):
                m.d.comb += [self.mem.cmd.valid.eq(1), self.mem.cmd.payload.write.eq(1)]
                with m.If(self.mem.cmd.ready):
                    m.d.sync += burst.eq(self.mem.cmd.payload.length)
                    m.next = "W_DATA"

            with m.State("W_DATA"):
                m.d.comb += self.mem.w.valid.eq(1)
                with m.If(wd_take):
                    m.d.sync += [widx.eq(widx + 1), burst.eq(burst - 1),
                                 remaining.eq(remaining - 1), cur_addr.eq(cur_addr + 1)]
                    with m.If(burst == 1):
                        with m.If(remaining == 1):
                            respond(P.ACK_FLAG | P.Cmd.WRITE_MEM, 0, _SRC_NACK)
                        with m.Else():
                            m.next = "W_CMD"

            with m.State("R_CMD"):
                m.d.comb += [self.mem.cmd.valid.eq(1), self.mem.cmd.payload.write.eq(0)]
                with m.If(self.mem.cmd.ready):
                    m.d.sync += burst.eq(self.mem.cmd.payload.length)
                    m.next = "R_DATA"

            with m.State("R_DATA"):
                m.d.comb += [self.mem.r.ready.eq(1),
                             buf_w.addr.eq(widx), buf_w.data.eq(self.mem.r.payload),
                             buf_w.en.eq(self.mem.r.valid)]
                with m.If(self.mem.r.valid):
                    m.d.sync += [widx.eq(widx + 1), burst.eq(burst - 1),
                                 remaining.eq(remaining - 1), cur_addr.eq(cur_addr + 1)]
                    with m.If(burst == 1):
                        with m.If(remaining == 1):
                            respond(P.ACK_FLAG | P.Cmd.READ_MEM, count << 1, _SRC_BUF)
                        with m.Else():
                            m.next = "R_CMD"

            with m.State("TX_HDR"):
                header = Array([C(P.SYNC[0], 8), C(P.SYNC[1], 8), resp_kind, seq,
                                resp_len[:8], resp_len[8:]])
                # Both block RAM readers sit at word 0 when the payload starts.
                m.d.comb += [tx_valid.eq(1), tx_payload.eq(header[hidx]), tx_counted.eq(hidx >= 2),
                             buf_r.addr.eq(0), res_r.addr.eq(res_base)]
                with m.If(tx_ready):
                    m.d.sync += hidx.eq(hidx + 1)
                    with m.If(hidx == 5):
                        with m.If(resp_len == 0):
                            m.next = "TX_CRC"
                        with m.Else():
                            m.next = "TX_PAY"

            with m.State("TX_PAY"):
                # A byte in four cycles (the UART takes ten bit times): address the block
                # RAMs with tidx, register their word, register the byte, offer it.
                m.d.comb += [buf_r.addr.eq(tidx >> 1), res_r.addr.eq(res_base + (tidx >> 1))]
                with m.Switch(pay_phase):
                    with m.Case(0):
                        m.d.sync += pay_phase.eq(1)
                    with m.Case(1):
                        m.d.sync += [pay_word.eq(Mux(resp_src == _SRC_BUF, buf_r.data,
                                                     res_r.data)), pay_phase.eq(2)]
                    with m.Case(2):
                        with m.Switch(resp_src):
                            with m.Case(_SRC_NACK):
                                m.d.sync += pay_byte.eq(Mux(tidx[0], kind, nack_code))
                            with m.Case(_SRC_STATUS):
                                m.d.sync += pay_byte.eq(status_snap.word_select(tidx, 8))
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
                                m.next = "TX_CRC"

            with m.State("TX_CRC"):
                m.d.comb += [tx_valid.eq(1), tx_payload.eq(Mux(cidx, crc[:8], crc[8:]))]
                with m.If(tx_ready):
                    m.d.sync += cidx.eq(1)
                    with m.If(cidx):
                        m.next = "HUNT"

        assert len(resp_sites) <= 1 << len(resp_sel)
        with m.If(resp_go):
            with m.Switch(resp_sel):
                for i, (kind_value, len_value, src) in enumerate(resp_sites):
                    with m.Case(i):
                        m.d.sync += [resp_kind.eq(kind_value), resp_len.eq(len_value),
                                     resp_src.eq(src), tidx_last.eq(len_value - 1)]
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
