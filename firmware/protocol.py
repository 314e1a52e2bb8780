"""The host link protocol: framed commands with a CRC-16, shared by the host driver and the tests.

Pure Python; the gateware in :mod:`hw.link.framing` implements the device side of the same layout.

Frame layout (both directions)
------------------------------
All multi-byte integers are little-endian except the CRC, which is sent most significant byte
first so that running the CRC over the whole frame after the sync bytes leaves a zero remainder.

======  ======  ==========================================================================
offset  bytes   field
======  ======  ==========================================================================
0       2       sync: ``A5 5A``
2       1       kind: the command (host -> device); ``0x80 | command`` for an ACK, or
                ``0x15`` (NACK) (device -> host)
3       1       sequence number, chosen by the host, echoed in the response
4       2       payload length ``n`` in bytes (u16)
6       n       payload
6+n     2       CRC-16/CCITT-FALSE (poly 0x1021, init 0xFFFF, no reflection, no final XOR)
                over bytes ``2 .. 6+n-1`` (kind, sequence, length, payload), MSB first
======  ======  ==========================================================================

Overhead: 8 bytes a frame. Addresses are *16-bit word* addresses into the external memory;
memory data travels as little-endian 16-bit words (byte ``2k`` is bits 0-7 of word ``addr+k``).

Commands
--------
``WRITE_MEM`` (0x01)
    payload ``addr:u32, data`` (an even number of bytes, 2 .. ``max_payload - 4``); ACK has an
    empty payload. The device checks the CRC of the whole frame *before* it writes anything.
``READ_MEM`` (0x02)
    payload ``addr:u32, count:u16`` (words, 1 .. ``(max_payload - 4) / 2``); ACK payload is the
    ``2 * count`` data bytes.
``RUN`` (0x03)
    empty payload; pulses the engine's ``start``. The face image is written beforehand with
    ``WRITE_MEM`` at the engine's input address (see :mod:`firmware.driver`). NACK ``BUSY`` while
    the engine runs.
``READ_RESULT`` (0x04)
    empty payload; ACK payload is the oldest complete embedding the device holds, ``n_result``
    signed 16-bit words. The device holds two (the engine computes the next face while the
    host reads one): the embedding sent stays until a READ_RESULT with another sequence
    number frees it, so a READ_RESULT resent after a lost ACK (same sequence number) gets the
    same embedding again. NACK ``NO_RESULT`` while no complete embedding is left to send.
``STATUS`` (0x05)
    empty payload; ACK payload is :data:`STATUS_STRUCT` (see :class:`Status`). Always answered.
``FACE_DATA`` (0x06)
    payload ``offset:u32, bytes`` (1 .. ``face_payload - 4`` bytes, any length; STATUS gives
    ``face_payload``, a whole face on the boards): a chunk of the face, into the device's face
    buffer, from which the engine takes its input stream, once the frame checks. The buffer
    takes faces while the engine computes: a chunk that finds it full is dropped whole and
    NACKed ``BUSY``. Offset 0 starts a new face; any other offset must continue where the last
    chunk ended (else NACK ``BAD_ADDRESS``). A chunk resent with the same sequence number and
    offset after a lost ACK is ACKed and not fed again.

The face reaches the engine either by ``FACE_DATA`` (the engine takes its input as a stream)
or by ``WRITE_MEM`` to an input address followed by ``RUN``; :mod:`firmware.driver` does both.
``WRITE_MEM``, ``READ_MEM`` and ``RUN`` are refused with ``BUSY`` while the engine runs, so the
engine owns the memory during a run; ``FACE_DATA`` and ``READ_RESULT`` are taken meanwhile, so
that the host uploads face N+1 while the engine computes face N (:meth:`firmware.driver.Device.run_faces`).

NACK payload: ``code:u8, kind:u8`` (the kind byte the device received, 0 if none). Error codes
are :class:`Error`.

Resynchronisation
-----------------
The device hunts for ``A5 5A`` and counts the bytes it skips. A length field above
``max_payload`` makes it drop every byte until the line has been quiet for the inter-byte
timeout, then NACK ``BAD_LENGTH`` (so that sync patterns inside a rejected payload are never
mistaken for frames). A frame cut short is abandoned after the same timeout (NACK ``TIMEOUT``).
A bad CRC is NACKed with ``BAD_CRC``. The host discards responses whose sequence number or CRC
does not match and retries after its own timeout.
"""
from __future__ import annotations

import struct
from dataclasses import dataclass
from enum import IntEnum

SYNC = b"\xA5\x5A"
HEADER_LEN = 6          # sync, kind, seq, length
CRC_LEN = 2
OVERHEAD = HEADER_LEN + CRC_LEN
ACK_FLAG = 0x80
NACK = 0x15
VERSION = 2
#: Default device payload limit: a 4-byte address and 1024 data words (one 18 Kbit block RAM).
MAX_PAYLOAD = 4 + 2 * 1024
N_RESULT = 512


class Cmd(IntEnum):
    WRITE_MEM = 0x01
    READ_MEM = 0x02
    RUN = 0x03
    READ_RESULT = 0x04
    STATUS = 0x05
    FACE_DATA = 0x06


class Error(IntEnum):
    NONE = 0
    BAD_CRC = 1         # the frame's CRC did not match
    BAD_LENGTH = 2      # length field above max_payload, or wrong for the command
    UNKNOWN_CMD = 3
    BAD_ADDRESS = 4     # addr + count beyond the memory
    BUSY = 5            # the engine is running
    TIMEOUT = 6         # the frame was cut: inter-byte timeout
    NO_RESULT = 7       # READ_RESULT before the engine delivered its embedding
    UNSUPPORTED = 8     # the design has no such path (RUN on an engine fed by FACE_DATA only)


def _crc_table() -> list[int]:
    table = []
    for byte in range(256):
        crc = byte << 8
        for _ in range(8):
            crc = ((crc << 1) ^ 0x1021) if crc & 0x8000 else crc << 1
        table.append(crc & 0xFFFF)
    return table


_CRC_TABLE = _crc_table()


def crc16(data: bytes, crc: int = 0xFFFF) -> int:
    """CRC-16/CCITT-FALSE (``crc16(b"123456789") == 0x29B1``), table driven."""
    for byte in data:
        crc = ((crc << 8) & 0xFFFF) ^ _CRC_TABLE[(crc >> 8) ^ byte]
    return crc


def crc16_bitwise(data: bytes, crc: int = 0xFFFF) -> int:
    """The same CRC, one bit at a time: the form the gateware unrolls."""
    for byte in data:
        crc ^= byte << 8
        for _ in range(8):
            crc = ((crc << 1) ^ 0x1021) if crc & 0x8000 else crc << 1
            crc &= 0xFFFF
    return crc


def encode_frame(kind: int, seq: int, payload: bytes = b"") -> bytes:
    if not 0 <= kind <= 0xFF:
        raise ValueError(f"frame kind must fit a byte, not {kind!r}")
    if not 0 <= seq <= 0xFF:
        raise ValueError(f"sequence number must fit a byte, not {seq!r}")
    if len(payload) > 0xFFFF:
        raise ValueError(f"payload must be at most 65535 bytes, not {len(payload)}")
    body = struct.pack("<BBH", kind, seq, len(payload)) + bytes(payload)
    return SYNC + body + struct.pack(">H", crc16(body))


@dataclass(frozen=True)
class Frame:
    kind: int
    seq: int
    payload: bytes

    @property
    def is_nack(self) -> bool:
        return self.kind == NACK

    @property
    def nack_code(self) -> Error | int | None:
        if not self.is_nack or not self.payload:
            return None
        code = self.payload[0]
        return Error(code) if code in Error._value2member_map_ else code

    def describe(self) -> str:
        if self.is_nack:
            code = self.nack_code
            name = code.name if isinstance(code, Error) else repr(code)
            return f"NACK {name} (seq {self.seq}, payload {self.payload.hex()})"
        if self.kind & ACK_FLAG and (self.kind & 0x7F) in Cmd._value2member_map_:
            return f"ACK {Cmd(self.kind & 0x7F).name} (seq {self.seq}, {len(self.payload)} bytes)"
        if self.kind in Cmd._value2member_map_:
            return f"{Cmd(self.kind).name} (seq {self.seq}, {len(self.payload)} bytes)"
        return f"kind 0x{self.kind:02x} (seq {self.seq}, {len(self.payload)} bytes)"


@dataclass(frozen=True)
class BadFrame:
    """A frame the parser threw away: ``reason`` is ``"crc"`` or ``"length"``."""
    reason: str
    raw: bytes


class FrameParser:
    """Incremental frame decoder: :meth:`feed` bytes, get back :class:`Frame` and
    :class:`BadFrame` events. Skipped garbage is counted in :attr:`dropped`."""

    def __init__(self, max_payload: int = 0xFFFF):
        self.max_payload = max_payload
        self.buf = bytearray()
        self.dropped = 0

    def feed(self, data: bytes) -> list[Frame | BadFrame]:
        self.buf += data
        events = []
        while True:
            start = self.buf.find(SYNC)
            if start < 0:
                # Keep a trailing first sync byte: the second may be on its way.
                keep = 1 if self.buf[-1:] == SYNC[:1] else 0
                self.dropped += len(self.buf) - keep
                del self.buf[:len(self.buf) - keep]
                return events
            self.dropped += start
            del self.buf[:start]
            if len(self.buf) < HEADER_LEN:
                return events
            kind, seq, length = struct.unpack_from("<BBH", self.buf, 2)
            if length > self.max_payload:
                events.append(BadFrame("length", bytes(self.buf[:HEADER_LEN])))
                del self.buf[:2]   # hunt again right after this sync
                continue
            total = HEADER_LEN + length + CRC_LEN
            if len(self.buf) < total:
                return events
            raw = bytes(self.buf[:total])
            if crc16(raw[2:]) != 0:
                events.append(BadFrame("crc", raw))
                del self.buf[:2]
                continue
            del self.buf[:total]
            events.append(Frame(kind, seq, raw[HEADER_LEN:HEADER_LEN + length]))


def decode_frame(raw: bytes) -> Frame:
    """Decode exactly one frame; raises ``ValueError`` saying what is wrong with it."""
    if raw[:2] != SYNC:
        raise ValueError(f"frame does not start with the sync pattern: {raw.hex()}")
    parser = FrameParser()
    events = parser.feed(raw)
    if events and isinstance(events[0], BadFrame):
        raise ValueError(f"bad frame ({events[0].reason}): {raw.hex()}")
    if len(events) != 1 or parser.buf:
        raise ValueError(f"not exactly one frame: {events!r}, {len(parser.buf)} bytes left over")
    return events[0]


# ---- payloads ---------------------------------------------------------------------------------

def write_mem_payload(addr: int, data: bytes) -> bytes:
    if len(data) == 0 or len(data) % 2:
        raise ValueError(f"WRITE_MEM data must be a non-zero even number of bytes, not {len(data)}")
    if not 0 <= addr < 1 << 32:
        raise ValueError(f"word address must fit 32 bits, not {addr!r}")
    return struct.pack("<I", addr) + bytes(data)


def read_mem_payload(addr: int, count: int) -> bytes:
    if not 0 < count <= 0xFFFF:
        raise ValueError(f"READ_MEM count must be 1..65535 words, not {count!r}")
    if not 0 <= addr < 1 << 32:
        raise ValueError(f"word address must fit 32 bits, not {addr!r}")
    return struct.pack("<IH", addr, count)


def face_payload(offset: int, data: bytes) -> bytes:
    if not data:
        raise ValueError("FACE_DATA needs at least one byte")
    if not 0 <= offset < 1 << 32:
        raise ValueError(f"face offset must fit 32 bits, not {offset!r}")
    return struct.pack("<I", offset) + bytes(data)


def nack_payload(code: int, kind: int = 0) -> bytes:
    return bytes([code, kind])


#: STATUS payload: version, flags, last_error, reserved, then 13 u16 fields (see Status).
STATUS_STRUCT = struct.Struct("<BBBB" + "H" * 13)
STATUS_FIELDS = ("max_payload", "n_result", "frames_ok", "bad_crc", "bad_length", "timeouts",
                 "rejected", "framing_errors", "overruns", "dropped_bytes", "runs", "result_words",
                 "face_payload")
FLAG_BUSY, FLAG_DONE, FLAG_ERROR, FLAG_RESULT = 1, 2, 4, 8


@dataclass(frozen=True)
class Status:
    """The STATUS payload. Counters are 16 bits and wrap.

    ``result_ready``: a complete embedding not sent yet; ``result_words``: embedding words the
    device holds (complete ones, the one sent last included, and those of the one arriving);
    ``runs``: faces started (FACE_DATA at offset 0) and RUNs; ``face_payload``: the longest
    FACE_DATA payload. ``frames_ok`` counts frames with a good CRC (answered ACK or a rejecting NACK); ``rejected``
    those of them that were NACKed (unknown command, wrong length for the command, bad address,
    busy, no result); ``bad_length`` length fields above ``max_payload``; ``timeouts`` frames cut
    short; ``dropped_bytes`` bytes skipped while hunting for the sync pattern; ``framing_errors``
    and ``overruns`` come from the UART receiver.
    """
    version: int
    busy: bool
    done: bool
    error: bool
    result_ready: bool
    last_error: int
    max_payload: int
    n_result: int
    frames_ok: int
    bad_crc: int
    bad_length: int
    timeouts: int
    rejected: int
    framing_errors: int
    overruns: int
    dropped_bytes: int
    runs: int
    result_words: int
    face_payload: int

    @classmethod
    def unpack(cls, payload: bytes) -> "Status":
        if len(payload) != STATUS_STRUCT.size:
            raise ValueError(f"STATUS payload must be {STATUS_STRUCT.size} bytes, "
                             f"not {len(payload)}: {payload.hex()}")
        version, flags, last_error, _, *fields = STATUS_STRUCT.unpack(payload)
        return cls(version, bool(flags & FLAG_BUSY), bool(flags & FLAG_DONE),
                   bool(flags & FLAG_ERROR), bool(flags & FLAG_RESULT), last_error,
                   **dict(zip(STATUS_FIELDS, fields)))

    @property
    def bad_frames(self) -> int:
        return self.bad_crc + self.bad_length + self.timeouts


def payload_throughput(baud: float, max_payload: int = MAX_PAYLOAD, turnaround_s: float = 0.0,
                       bits_per_byte: int = 10) -> float:
    """Payload bytes/s of back-to-back WRITE_MEM frames, each waiting for its 8-byte ACK."""
    data = max_payload - 4
    wire = (max_payload + OVERHEAD + OVERHEAD) * bits_per_byte / baud
    return data / (wire + turnaround_s)
