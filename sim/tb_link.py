"""cocotb tests of :class:`hw.link.framing.SerialHostLink` through its UART pins.

The testbench owns: the host's UART line (:class:`sim.tb_uart.UartLine`), a word memory model
behind the three memory streams (random back-pressure and idle cycles; it fails on a burst that
is too long, crosses a ``max_burst`` boundary or leaves the memory, and on a read of a word
never written), and an engine model that
takes its face either from memory on ``start`` or from the ``o_face`` stream (busy from the
first byte, random back-pressure; ``hold_faces`` stops it taking faces), then streams an
embedding computed from that face (:func:`engine_embedding`; the link's ``i_result.ready``
may hold it), then drops ``busy`` and raises ``done``.

Every test ends with :meth:`LinkBench.finish`, the drain checks: the link took every read word
the memory model offered and every result word, and after the last response nothing more comes
out (no memory command or write word, no face byte, no byte on ``tx``, no response the test did
not read). ``LINK_FAULT`` (tests of the bench itself, with :func:`drain_checks_bite`) breaks the
models so that each check must fail: ``extra_read_word`` (the memory answers a read with a word
too many), ``short_face`` (the engine model's face is one byte shorter than the link's) and
``unread_response`` (the host sends a frame without reading its answer); ``unwritten_read``
(a read of a word never written) shows the memory model failing.

The last test runs the host driver (:class:`firmware.driver.Device`, unchanged) in a thread
over a :class:`firmware.transport.QueueTransport` whose bytes this testbench moves to and from
the UART pins.
"""
import json
import os
import random
import threading

import cocotb
import numpy as np
from cocotb.triggers import ClockCycles, RisingEdge

from firmware import protocol as P
from firmware.transport import FaultyTransport, QueueTransport
from sim.streams import DrainError, StreamSink, StreamSource, to_signed
from sim.host_clock import start_host_clock
from sim.tb_uart import CLK_PS, UartLine, start_bench

CFG = json.loads(os.environ.get("LINK_CFG", "{}"))
FAULT = os.environ.get("LINK_FAULT", "")
# Simulated seconds the driver test waits for an embedding: 125 runs of its stand-in engine
# (40,000 cycles at 100 MHz).
RUN_TIMEOUT = 0.05


def engine_embedding(mem: dict, input_addr: int, input_words: int, n_result: int) -> list[int]:
    """What the engine model returns: a fixed function of the face words in memory."""
    words = [mem.get(input_addr + k, 0) for k in range(input_words)]
    out = []
    for i in range(n_result):
        acc = sum(w * (1 + ((i + k) % 7)) for k, w in enumerate(words[i % 5::5]))
        out.append(to_signed((acc * 2654435761 >> 7) & 0xFFFF, 16))
    return out


class LinkBench:
    def __init__(self, dut, seed=1):
        self.dut = dut
        self.cfg = CFG
        self.aw, self.max_burst = CFG["addr_width"], CFG["max_burst"]
        self.mem_words, self.n_result = CFG["mem_words"], CFG["n_result"]
        self.rng = random.Random(seed)
        self.mem: dict[int, int] = {}
        self.commands: list[tuple[int, int, int]] = []
        self.runs = 0
        self.starts_while_busy = 0
        self.engine_cycles = 300
        self.input_addr, self.input_words = CFG["input_addr"], CFG["input_words"]
        self.parser = P.FrameParser()
        self.frames: list = []
        self.on_byte = None           # set: the device's bytes go there instead of ``frames``
        self.hold_faces = False       # set: the engine model takes no face
        self.mem_pending = None       # the memory command being served
        self.face_open = False        # the engine model has taken part of a face

    async def start(self):
        dut = self.dut
        for name in ("busy", "done", "error"):
            getattr(dut, name).value = 0
        dut.mem__r__valid.value = 0
        dut.i_result__valid.value = 0
        await start_bench(dut)
        self.line = UartLine(dut.rx, dut.tx, CFG["divider"] * CLK_PS, on_byte=self._byte)
        self.cmd_sink = StreamSink(dut, "mem__cmd", dut.clk, stall_prob=0.5, seed=11)
        self.wdata_sink = StreamSink(dut, "mem__w", dut.clk, stall_prob=0.3, seed=12)
        self.rdata_src = StreamSource(dut, "mem__r", dut.clk, idle_prob=0.3, seed=13)
        self.result_src = StreamSource(dut, "i_result", dut.clk, idle_prob=0.3, seed=14)
        self.face_sink = StreamSink(dut, "o_face", dut.clk, stall_prob=0.4, seed=15)
        self.faces_streamed: list[bytes] = []
        cocotb.start_soon(self._memory())
        cocotb.start_soon(self._engine())
        cocotb.start_soon(self._engine_stream())

    def _byte(self, byte):
        if self.on_byte:          # a host driver reads the responses itself
            self.on_byte(byte)
        else:
            self.frames += self.parser.feed(bytes([byte]))

    async def _memory(self):
        while True:
            (word,) = await self.cmd_sink.receive(1)
            addr = word & ((1 << self.aw) - 1)
            write = (word >> self.aw) & 1
            length = word >> (self.aw + 1)
            self.commands.append((addr, write, length))
            self.mem_pending = (addr, write, length)
            assert 1 <= length <= self.max_burst, f"burst length {length} at {addr}"
            assert addr // self.max_burst == (addr + length - 1) // self.max_burst, \
                f"burst {addr}+{length} crosses a {self.max_burst}-word boundary"
            assert addr + length <= self.mem_words, f"burst {addr}+{length} leaves the memory"
            if write:
                for k, w in enumerate(await self.wdata_sink.receive(length)):
                    self.mem[addr + k] = w
            else:
                unset = [a for a in range(addr, addr + length) if a not in self.mem]
                assert not unset, f"memory model: read of word {unset[0]} never written"
                extra = [0xBAD] if FAULT == "extra_read_word" else []
                await self.rdata_src.send([self.mem[addr + k] for k in range(length)] + extra)
            self.mem_pending = None

    async def _engine(self):
        dut = self.dut
        while True:
            await RisingEdge(dut.start)
            self.runs += 1
            dut.busy.value, dut.done.value = 1, 0
            await ClockCycles(dut.clk, self.engine_cycles)
            emb = engine_embedding(self.mem, self.input_addr, self.input_words, self.n_result)
            await self.result_src.send([v & 0xFFFF for v in emb])
            await ClockCycles(dut.clk, 5)
            dut.busy.value, dut.done.value = 0, 1

    async def _engine_stream(self):
        dut = self.dut
        n = int(np.prod(CFG["face_shape"])) - (FAULT == "short_face")
        while True:
            while self.hold_faces:
                await ClockCycles(dut.clk, 16)
            face = bytes(await self.face_sink.receive(1))
            self.face_open = True
            dut.busy.value, dut.done.value = 1, 0
            face += bytes(await self.face_sink.receive(n - 1))
            self.face_open = False
            self.faces_streamed.append(face)
            words = np.frombuffer(face + b"\0" * (n % 2), "<u2")
            mem = {self.input_addr + k: int(v) for k, v in enumerate(words)}
            await ClockCycles(dut.clk, 50)
            emb = engine_embedding(mem, self.input_addr, self.input_words, self.n_result)
            await self.result_src.send([v & 0xFFFF for v in emb])
            await ClockCycles(dut.clk, 5)
            dut.busy.value, dut.done.value = 0, 1

    async def finish(self):
        """The drain checks, at the end of a test (after its last response): every word the
        models offered the link was taken, and for twenty byte times nothing more comes out."""
        window = 200 * CFG["divider"]
        await self.rdata_src.assert_consumed(window, "mem__r (read words the link did not take)")
        await self.result_src.assert_consumed(window, "i_result")
        n_cmd, n_tx = len(self.commands), len(self.line.received)
        await ClockCycles(self.dut.clk, window)
        if len(self.commands) > n_cmd:
            raise DrainError(f"mem__cmd: {len(self.commands) - n_cmd} memory command(s) after "
                             f"the last response: {self.commands[n_cmd:]}")
        if self.mem_pending:
            raise DrainError(f"mem__w: the write burst {self.mem_pending} is missing words")
        await self.wdata_sink.assert_silent(16, "mem__w")
        if self.face_open:
            raise DrainError(f"o_face: a face byte beyond the last face ({len(self.faces_streamed)}"
                             f" whole face(s)): the engine model holds an unfinished face")
        if len(self.line.received) > n_tx or self.frames:
            raise DrainError(f"tx: {len(self.line.received) - n_tx} byte(s) after the last "
                             f"response, {len(self.frames)} response frame(s) the test did not "
                             f"read: {[str(f) for f in self.frames]}")

    # ---- host side ----
    async def response(self, cycles=None):
        """The next frame (or BadFrame) from the device; fails after ``cycles``."""
        cycles = cycles or 40 * CFG["divider"] * (CFG["max_payload"] + 16)
        for _ in range(cycles // 16):
            if self.frames:
                return self.frames.pop(0)
            await ClockCycles(self.dut.clk, 16)
        raise AssertionError(f"no response within {cycles} cycles")

    async def command(self, cmd, seq, payload=b""):
        await self.line.send(P.encode_frame(cmd, seq, payload))
        frame = await self.response()
        assert isinstance(frame, P.Frame), f"{P.Cmd(cmd).name} seq {seq}: got {frame}"
        assert frame.seq == seq, f"{P.Cmd(cmd).name}: seq {frame.seq}, expected {seq}"
        return frame

    async def ack(self, cmd, seq, payload=b""):
        frame = await self.command(cmd, seq, payload)
        assert frame.kind == P.ACK_FLAG | cmd, f"{P.Cmd(cmd).name}: {frame.describe()}"
        return frame.payload

    async def nack(self, cmd, seq, payload, code):
        frame = await self.command(cmd, seq, payload)
        assert frame.is_nack and frame.nack_code == code, \
            f"{P.Cmd(cmd).name}: expected NACK {code.name}, got {frame.describe()}"

    async def status(self, seq):
        return P.Status.unpack(await self.ack(P.Cmd.STATUS, seq))

    async def quiet(self):
        """Wait longer than the device's inter-byte timeout."""
        await ClockCycles(self.dut.clk, CFG["timeout_cycles"] + 50)


@cocotb.test()
async def write_read_round_trip(dut):
    tb = LinkBench(dut)
    await tb.start()
    maxw = (CFG["max_payload"] - 4) // 2
    rng = random.Random(21)
    ref = {}
    seq = 0
    # Lengths 1 .. max, starting addresses inside bursts so that commands get split.
    for addr, n in [(0, 1), (5, maxw), (tb.max_burst - 3, 7), (1000, maxw - 1),
                    (tb.mem_words - 4, 4)]:
        words = [rng.randrange(1 << 16) for _ in range(n)]
        seq += 1
        data = b"".join(w.to_bytes(2, "little") for w in words)
        assert await tb.ack(P.Cmd.WRITE_MEM, seq, P.write_mem_payload(addr, data)) == b""
        ref.update({addr + k: w for k, w in enumerate(words)})
    assert tb.mem == ref, "memory model differs from the words written"
    for addr, n in [(0, 1), (5, maxw), (tb.max_burst - 4, 9), (1000, 20), (tb.mem_words - 4, 4)]:
        seq += 1
        data = await tb.ack(P.Cmd.READ_MEM, seq, P.read_mem_payload(addr, n))
        want = b"".join(ref[addr + k].to_bytes(2, "little") for k in range(n))
        assert data == want, f"READ_MEM {addr}+{n}: {data.hex()} != {want.hex()}"
    assert any(length < tb.max_burst and (addr + length) % tb.max_burst == 0
               for addr, _, length in tb.commands), "no command was split at a burst boundary"
    st = await tb.status(seq + 1)
    assert (st.frames_ok, st.bad_crc, st.bad_length, st.timeouts, st.rejected) == (10, 0, 0, 0, 0), st
    assert st.max_payload == CFG["max_payload"] and st.n_result == CFG["n_result"], st
    assert st.version == P.VERSION and st.dropped_bytes == 0, st
    await tb.finish()


@cocotb.test()
async def recovery_from_bad_input(dut):
    """Garbage, a bad CRC, a cut frame, an over-long length with a fake frame inside, wrong
    lengths, unknown commands, bad addresses and a UART framing error: every one is answered
    or dropped as documented, counted in STATUS, and the link keeps working."""
    tb = LinkBench(dut)
    await tb.start()
    rng = random.Random(5)
    good = P.write_mem_payload(10, bytes(range(8)))

    # Garbage without the sync pattern, then a good frame.
    garbage = bytes(rng.choice([b for b in range(256) if b != 0xA5]) for _ in range(40))
    await tb.line.send(garbage + b"\xA5\xA5")   # A5 A5 5A ... still finds the frame
    await tb.ack(P.Cmd.WRITE_MEM, 1, good)
    dropped = len(garbage) + 1

    # Bad CRC: NACKed, memory untouched.
    frame = bytearray(P.encode_frame(P.Cmd.WRITE_MEM, 2, P.write_mem_payload(10, b"\xEE" * 8)))
    frame[-1] ^= 0x01
    await tb.line.send(frame)
    resp = await tb.response()
    assert resp.is_nack and resp.nack_code == P.Error.BAD_CRC and resp.seq == 2, resp
    assert [tb.mem[10 + k] for k in range(4)] == [0x0100, 0x0302, 0x0504, 0x0706], \
        "a frame with a bad CRC reached the memory"

    # A cut frame: NACK TIMEOUT after the inter-byte timeout, then a good frame works.
    await tb.line.send(P.encode_frame(P.Cmd.WRITE_MEM, 3, good)[:9])
    resp = await tb.response()
    assert resp.is_nack and resp.nack_code == P.Error.TIMEOUT and resp.seq == 3, resp
    await tb.ack(P.Cmd.STATUS, 4)

    # A length field beyond max_payload, whose bytes hold a complete valid frame: the device
    # must not execute the inner frame; it NACKs BAD_LENGTH once the line is quiet.
    inner = P.encode_frame(P.Cmd.WRITE_MEM, 99, P.write_mem_payload(20, b"\x11\x22"))
    await tb.line.send(b"\xA5\x5A" + bytes([P.Cmd.WRITE_MEM, 5]) + b"\xFF\xFF" + inner * 2)
    resp = await tb.response()
    assert resp.is_nack and resp.nack_code == P.Error.BAD_LENGTH and resp.seq == 5, resp
    assert 20 not in tb.mem, "a frame inside an over-long payload was executed"
    await tb.quiet()
    assert not tb.frames, f"extra responses: {tb.frames}"

    # Good CRC, but wrong for the command / unknown / out of range.
    await tb.nack(0x42, 6, b"", P.Error.UNKNOWN_CMD)
    await tb.nack(P.Cmd.STATUS, 7, b"\x00", P.Error.BAD_LENGTH)
    await tb.nack(P.Cmd.WRITE_MEM, 8, good[:-1], P.Error.BAD_LENGTH)   # odd data length
    await tb.nack(P.Cmd.WRITE_MEM, 9, struct_addr(tb.mem_words - 1) + b"\0" * 4,
                  P.Error.BAD_ADDRESS)
    await tb.nack(P.Cmd.WRITE_MEM, 10, struct_addr(0xFFFFFFFF) + b"\0" * 2, P.Error.BAD_ADDRESS)
    await tb.nack(P.Cmd.READ_MEM, 11, P.read_mem_payload(0, (CFG["max_payload"] - 4) // 2 + 1),
                  P.Error.BAD_LENGTH)
    await tb.nack(P.Cmd.READ_MEM, 12, P.read_mem_payload(tb.mem_words, 1), P.Error.BAD_ADDRESS)
    await tb.nack(P.Cmd.READ_RESULT, 13, b"", P.Error.NO_RESULT)

    # A UART framing error inside a frame, then the frame times out.
    await tb.line.send(b"\xA5\x5A")
    await tb.line.send_byte(0x05, stop=0)
    resp = await tb.response()
    assert resp.is_nack and resp.nack_code == P.Error.TIMEOUT and resp.seq == 0, resp

    # Random garbage containing sync bytes (may start false frames): the device must come
    # back and answer the next STATUS once the line has been quiet.
    noise = bytes(rng.randrange(256) for _ in range(200)) + b"\xA5\x5A\x05"
    await tb.line.send(noise)
    await tb.quiet()
    await tb.quiet()
    tb.frames.clear()
    st = await tb.status(14)
    assert st.framing_errors == 1 and st.bad_crc >= 1 and st.bad_length >= 1, st
    assert st.timeouts >= 3 and st.last_error in (P.Error.TIMEOUT, P.Error.BAD_CRC,
                                                   P.Error.BAD_LENGTH, P.Error.UNKNOWN_CMD,
                                                   P.Error.BAD_ADDRESS), st
    assert st.rejected >= 8 and st.dropped_bytes >= dropped, st
    await tb.ack(P.Cmd.WRITE_MEM, 15, good)
    await tb.finish()


@cocotb.test()
async def exact_counters(dut):
    """STATUS counters count exactly one event each."""
    tb = LinkBench(dut)
    await tb.start()
    await tb.line.send(b"\x00\x13\x37")                                         # 3 dropped
    frame = bytearray(P.encode_frame(P.Cmd.STATUS, 1))
    frame[3] ^= 0x80                                                            # bad CRC
    await tb.line.send(frame)
    await tb.response()
    await tb.line.send(P.encode_frame(P.Cmd.STATUS, 2)[:5])                     # timeout
    await tb.response()
    await tb.line.send(b"\xA5\x5A\x01\x03\x00\xF0")                             # bad length
    await tb.response()
    await tb.nack(P.Cmd.RUN, 4, b"\x01", P.Error.BAD_LENGTH)                    # rejected
    await tb.line.send_byte(0x77, stop=0)                                       # framing
    st = await tb.status(5)
    got = {k: getattr(st, k) for k in ("frames_ok", "bad_crc", "bad_length", "timeouts",
                                       "rejected", "framing_errors", "dropped_bytes", "runs",
                                       "last_error")}
    # frames_ok: the RUN; the STATUS being answered is not counted in its own snapshot.
    assert got == {"frames_ok": 1, "bad_crc": 1, "bad_length": 1, "timeouts": 1, "rejected": 1,
                   "framing_errors": 1, "dropped_bytes": 3, "runs": 0,
                   "last_error": P.Error.BAD_LENGTH}, got
    await tb.finish()


def struct_addr(addr):
    return int(addr).to_bytes(4, "little")


@cocotb.test()
async def run_and_result(dut):
    tb = LinkBench(dut)
    await tb.start()
    tb.engine_cycles = 40_000
    face = bytes(random.Random(9).randrange(256) for _ in range(2 * tb.input_words))
    await tb.ack(P.Cmd.WRITE_MEM, 1, P.write_mem_payload(tb.input_addr, face))
    await tb.ack(P.Cmd.RUN, 2)
    assert tb.runs == 1, "RUN did not pulse start"
    st = await tb.status(3)
    assert st.busy and not st.done and st.runs == 1, st
    await tb.nack(P.Cmd.RUN, 4, b"", P.Error.BUSY)
    await tb.nack(P.Cmd.WRITE_MEM, 5, P.write_mem_payload(0, b"\0\0"), P.Error.BUSY)
    await tb.nack(P.Cmd.READ_MEM, 6, P.read_mem_payload(0, 1), P.Error.BUSY)
    await tb.nack(P.Cmd.READ_RESULT, 7, b"", P.Error.NO_RESULT)
    assert tb.runs == 1, "a refused RUN pulsed start"
    while (await tb.status(8)).busy:
        await ClockCycles(dut.clk, 500)
    st = await tb.status(9)
    assert st.done and st.result_ready and st.result_words == tb.n_result, st
    assert st.face_payload == 4 + CFG["face_depth"], st
    data = await tb.ack(P.Cmd.READ_RESULT, 10)
    got = np.frombuffer(data, "<i2").tolist()
    assert got == engine_embedding(tb.mem, tb.input_addr, tb.input_words, tb.n_result)
    await tb.finish()


@cocotb.test()
async def face_stream(dut):
    """FACE_DATA chunks reach o_face in order, odd lengths included; a resent chunk is not fed
    twice; a gap and an empty chunk are refused."""
    tb = LinkBench(dut)
    await tb.start()
    n = int(np.prod(CFG["face_shape"]))
    face = bytes(random.Random(4).randrange(256) for _ in range(n))
    cuts = [0, 7, 40, 41, n]
    await tb.nack(P.Cmd.FACE_DATA, 1, P.face_payload(5, face[5:9]), P.Error.BAD_ADDRESS)
    await tb.nack(P.Cmd.FACE_DATA, 2, b"\0\0\0\0", P.Error.BAD_LENGTH)
    seq = 10
    for k, (a, b) in enumerate(zip(cuts, cuts[1:])):
        await tb.ack(P.Cmd.FACE_DATA, seq, P.face_payload(a, face[a:b]))
        if k == 1:                                 # the ACK was "lost": the same frame again
            await tb.ack(P.Cmd.FACE_DATA, seq, P.face_payload(a, face[a:b]))
            await tb.nack(P.Cmd.FACE_DATA, seq + 1, P.face_payload(b + 1, face[b + 1:b + 3]),
                          P.Error.BAD_ADDRESS)
        seq += 3
    while (await tb.status(seq)).busy:
        await ClockCycles(dut.clk, 300)
    assert tb.faces_streamed == [face], "the engine did not get the face exactly once"
    st = await tb.status(seq + 1)
    assert st.runs == 1 and st.result_ready, st
    got = np.frombuffer(await tb.ack(P.Cmd.READ_RESULT, seq + 2), "<i2").tolist()
    words = np.frombuffer(face + b"\0" * (n % 2), "<u2")
    mem = {tb.input_addr + k: int(v) for k, v in enumerate(words)}
    assert got == engine_embedding(mem, tb.input_addr, tb.input_words, tb.n_result)
    await tb.finish()


def _embedding_of(tb, face: bytes):
    words = np.frombuffer(face + b"\0" * (len(face) % 2), "<u2")
    mem = {tb.input_addr + k: int(v) for k, v in enumerate(words)}
    return engine_embedding(mem, tb.input_addr, tb.input_words, tb.n_result)


@cocotb.test(timeout_time=100, timeout_unit="ms")
async def face_buffer_full_and_long_frames(dut):
    """Faces queue in the face buffer while the engine does not take them; a face that finds
    it full is NACKed BUSY and none of its bytes reach the engine (the resent face arrives
    once, whole); a FACE_DATA frame longer than max_payload (up to the face buffer) is taken,
    one longer than the face buffer is refused (BAD_LENGTH)."""
    tb = LinkBench(dut)
    await tb.start()
    n, depth = int(np.prod(CFG["face_shape"])), CFG["face_depth"]
    rng = random.Random(7)
    faces = [bytes(rng.randrange(256) for _ in range(n)) for _ in range(4)]
    tb.hold_faces = True
    await tb.ack(P.Cmd.FACE_DATA, 1, P.face_payload(0, faces[0]))
    await tb.ack(P.Cmd.FACE_DATA, 2, P.face_payload(0, faces[1]))
    assert 3 * n > depth >= 2 * n
    await tb.nack(P.Cmd.FACE_DATA, 3, P.face_payload(0, faces[2]), P.Error.BUSY)
    await ClockCycles(dut.clk, 200)
    assert tb.faces_streamed == [] and int(dut.o_face__valid.value) == 1
    tb.hold_faces = False
    while len(tb.faces_streamed) < 2:
        await ClockCycles(dut.clk, 100)
    # faces 2 and the first 60 bytes of 3 in one frame longer than max_payload
    long = faces[2] + faces[3][:60]
    assert CFG["max_payload"] - 4 < len(long) <= depth
    await tb.ack(P.Cmd.FACE_DATA, 4, P.face_payload(0, long))
    await tb.ack(P.Cmd.FACE_DATA, 5, P.face_payload(len(long), faces[3][60:]))
    # one byte beyond the face buffer: dropped until the line is quiet, then BAD_LENGTH
    await tb.line.send(P.encode_frame(P.Cmd.FACE_DATA, 6, P.face_payload(0, bytes(depth + 1))))
    resp = await tb.response(cycles=20 * CFG["timeout_cycles"])
    assert resp.is_nack and resp.nack_code == P.Error.BAD_LENGTH and resp.seq == 6, resp
    # the results, oldest first (the engine holds the third until a slot is free)
    for k in range(4):
        while not (await tb.status(30 + k)).result_ready:
            await ClockCycles(dut.clk, 100)
        got = np.frombuffer(await tb.ack(P.Cmd.READ_RESULT, 10 + k), "<i2").tolist()
        assert got == _embedding_of(tb, faces[k]), f"result of face {k}"
    assert tb.faces_streamed == faces, "the engine did not get each face exactly once, whole"
    st = await tb.status(20)
    # runs counts FACE_DATA frames at offset 0: faces 0 and 1 and the long frame
    assert st.runs == 3 and st.rejected == 1 and st.bad_length == 1, st
    assert st.face_payload == 4 + CFG["face_depth"] and st.max_payload == CFG["max_payload"], st
    await tb.finish()


@cocotb.test(timeout_time=100, timeout_unit="ms")
async def results_queue_and_resend(dut):
    """Three faces sent without reading: two results wait in the link's slots, the third
    waits in the engine (i_result.ready low) until READ_RESULT frees a slot; READ_RESULT
    answers oldest first, the same sequence number gets the same result again, and NO_RESULT
    comes only when every result has been sent."""
    tb = LinkBench(dut)
    await tb.start()
    n = int(np.prod(CFG["face_shape"]))
    rng = random.Random(8)
    faces = [bytes(rng.randrange(256) for _ in range(n)) for _ in range(3)]
    for k, face in enumerate(faces):
        await tb.ack(P.Cmd.FACE_DATA, 1 + k, P.face_payload(0, face))
    while len(tb.faces_streamed) < 3:
        await ClockCycles(dut.clk, 100)
    await ClockCycles(dut.clk, 2000)
    st = await tb.status(5)
    assert st.busy and st.result_ready and st.result_words == 2 * tb.n_result, st
    assert int(dut.i_result__ready.value) == 0 and tb.result_src.left > 0, \
        "the third result was not held back"
    want = [_embedding_of(tb, f) for f in faces]
    result = lambda data: np.frombuffer(data, "<i2").tolist()   # noqa: E731
    assert result(await tb.ack(P.Cmd.READ_RESULT, 10)) == want[0]
    assert result(await tb.ack(P.Cmd.READ_RESULT, 10)) == want[0], "a resend got another"
    assert result(await tb.ack(P.Cmd.READ_RESULT, 11)) == want[1]
    while (await tb.status(12)).busy:
        await ClockCycles(dut.clk, 200)
    assert result(await tb.ack(P.Cmd.READ_RESULT, 13)) == want[2]
    st = await tb.status(14)
    assert not st.result_ready and st.result_words == tb.n_result, st
    await tb.nack(P.Cmd.READ_RESULT, 15, b"", P.Error.NO_RESULT)
    st = await tb.status(16)
    assert not st.result_ready and st.result_words == 0, st
    await tb.finish()


@cocotb.test()
async def driver_over_simulated_link(dut):
    """The host driver, unchanged, against the simulated gateware; with a damaged frame, a cut
    frame and a lost response on the way, which it must recover from by itself."""
    from firmware.driver import Device, ImageHeader

    tb = LinkBench(dut)
    await tb.start()
    qt = QueueTransport()
    start_host_clock(qt, dut.clk)       # the driver's timeouts count simulated time
    tb.on_byte = lambda b: qt.device_put(bytes([b]))
    faulty = FaultyTransport(qt, corrupt_writes={2}, drop_writes={4, 13}, mute_reads=0)
    h, w, c = CFG["face_shape"]
    header = ImageHeader(load_addr=CFG["load_addr"], input_addr=tb.input_addr,
                         input_shape=(h, w, c), n_result=tb.n_result, body_size=0)
    rng = np.random.default_rng(3)
    body = rng.integers(0, 256, CFG["image_bytes"], dtype=np.uint8).tobytes()
    image = ImageHeader(**{**header.__dict__, "body_size": len(body)}).pack() + body
    faces = [rng.integers(0, 256, (h, w, c), dtype=np.uint8) for _ in range(5)]
    box = {}

    def host():
        try:
            dev = Device(faulty, timeout=CFG["host_timeout"], retries=3)
            dev.load_image(image, verify=True)
            box["embeddings"] = [dev.run_face(faces[0], timeout=RUN_TIMEOUT)]
            dev.face_via = "memory"
            box["embeddings"].append(dev.run_face(faces[1], timeout=RUN_TIMEOUT))
            # pipelined: face N+1 goes out before the embedding of face N is read
            dev.face_via = "stream"
            box["embeddings"] += dev.run_faces(faces[2:], timeout=RUN_TIMEOUT)
            # A lost response: the driver times out and resends the same sequence number.
            faulty.mute_reads = 1
            box["status"] = dev.status()
            box["stats"] = dict(dev.stats)
        except Exception as e:       # reported by the test below
            box["error"] = e

    thread = threading.Thread(target=host, daemon=True)
    thread.start()
    while thread.is_alive():
        data = qt.device_take()
        if data is None:
            await ClockCycles(dut.clk, 10 * CFG["divider"])
        else:
            await tb.line.send(data)
    if "error" in box:
        raise box["error"]
    # The image body is in memory.
    words = np.frombuffer(body + b"\0" * (len(body) % 2), "<u2")
    assert [tb.mem.get(CFG["load_addr"] + k) for k in range(len(words))] == words.tolist()
    # Each face gave the embedding the engine computed from it.
    for face, emb in zip(faces, box["embeddings"]):
        mem = dict(tb.mem)
        fw = np.frombuffer(face.tobytes() + b"\0" * (face.size % 2), "<u2")
        mem.update({tb.input_addr + k: int(v) for k, v in enumerate(fw)})
        want = engine_embedding(mem, tb.input_addr, tb.input_words, tb.n_result)
        assert emb.tolist() == want, "embedding differs from the engine's"
    st = box["status"]
    assert tb.faces_streamed == [f.tobytes() for k, f in enumerate(faces) if k != 1], \
        "the streamed faces differ"
    assert st.runs == 5 and st.bad_crc == 1 and st.timeouts == 2, (st, box["stats"])
    assert box["stats"]["resends"] >= 3, box["stats"]
    dut._log.info("driver stats %s, device status %s", box["stats"], st)
    await tb.finish()


@cocotb.test()
async def drain_checks_bite(dut):
    """A short session touching every stream (a write, a read, a streamed face, its result),
    then the drain checks: passes as it is; with ``LINK_FAULT`` set it must fail."""
    tb = LinkBench(dut)
    await tb.start()
    await tb.ack(P.Cmd.WRITE_MEM, 1, P.write_mem_payload(8, bytes(range(6))))
    n_read = 4 if FAULT == "unwritten_read" else 3
    assert await tb.ack(P.Cmd.READ_MEM, 2, P.read_mem_payload(8, n_read)) == bytes(range(6))
    n = int(np.prod(CFG["face_shape"]))
    face = bytes(random.Random(8).randrange(256) for _ in range(n))
    await tb.ack(P.Cmd.FACE_DATA, 3, P.face_payload(0, face[:40]))
    await tb.ack(P.Cmd.FACE_DATA, 4, P.face_payload(40, face[40:]))
    for _ in range(20):
        st = await tb.status(5)
        if not st.busy:
            break
        await ClockCycles(dut.clk, 300)
    # (short_face: the byte the engine model did not count as the face's starts a next face,
    # which keeps the model busy)
    assert not st.busy or FAULT == "short_face", st
    if not st.busy:
        assert len(await tb.ack(P.Cmd.READ_RESULT, 6)) == 2 * tb.n_result
    if FAULT == "unread_response":
        await tb.line.send(P.encode_frame(P.Cmd.STATUS, 7))
    await tb.finish()
