"""Host driver of the accelerator: memory upload, face runs and status over the host link.

:class:`Device` speaks :mod:`firmware.protocol` over any :class:`~firmware.transport.Transport`;
the same code drives the ULX3S and the cocotb simulation.

Memory image
------------
:meth:`Device.load_image` takes the image as opaque bytes. If they start with an
:class:`ImageHeader` (magic ``SFIM``), the header says where the body goes and where the engine
expects the face; otherwise the whole blob is written at ``load_addr`` and the caller gives
``input_addr`` (the CLI's ``--load-addr`` / ``--input-addr``). Header layout, little-endian:

======  =====  ==============================================================
offset  bytes  field
======  =====  ==============================================================
0       4      magic ``b"SFIM"``
4       2      version (1)
6       2      header size in bytes (32); the body follows
8       4      load_addr: word address of the body in external memory
12      4      input_addr: word address of the face image
16      2      input height
18      2      input width
20      2      input channels
22      2      n_result: embedding length
24      4      body size in bytes
28      4      reserved (0)
======  =====  ==============================================================

The face travels as its uint8 bytes in C order (height, width, channel: RGB interleaved), by
default in FACE_DATA frames to the device's face buffer, from which the engine takes it
(``face_via="stream"``; one frame a face when the buffer holds a face, STATUS's
``face_payload``); with
``face_via="memory"`` it goes to ``input_addr`` instead and a RUN starts the engine (for designs
that read their face from memory: the shipped engine's link refuses RUN with
``Error.UNSUPPORTED``, which :meth:`Device.run` turns into a clear error). In memory,
the bytes are two pixels a little-endian 16-bit word, padded with a zero byte to an even length.
The embedding comes back as ``n_result`` signed 16-bit integers (READ_RESULT); its scale is
the engine's business, cosine similarity does not need it.

Pipelining
----------
:meth:`Device.run_faces` sends face N+1 before it reads the embedding of face N: the face
uploads into the device's face buffer while the engine computes the one before, so the link
and the engine work at the same time. It keeps at most two faces unread (one computing or
queued, one uploading), which the device's face buffer (one face) and its two result slots
always have room for.
"""
from __future__ import annotations

import struct
import time
from dataclasses import dataclass

import numpy as np

from . import protocol as P
from .transport import Transport

#: NACKs worth a resend: the frame was damaged on its way (a bad length *field* is NACKed
#: before the CRC could be checked, so it may be damage too).
RETRYABLE = {P.Error.BAD_CRC, P.Error.TIMEOUT, P.Error.BAD_LENGTH}


class LinkError(Exception):
    """No valid response: names the command, the sequence number and what was received."""


class DeviceError(Exception):
    """The device refused a command (a NACK that a resend cannot fix) or the engine failed."""

    def __init__(self, message, code=None):
        super().__init__(message)
        self.code = code


@dataclass(frozen=True)
class ImageHeader:
    load_addr: int
    input_addr: int
    input_shape: tuple[int, int, int]
    n_result: int
    body_size: int

    MAGIC = b"SFIM"
    STRUCT = struct.Struct("<4sHHIIHHHHII")
    VERSION = 1

    def pack(self) -> bytes:
        return self.STRUCT.pack(self.MAGIC, self.VERSION, self.STRUCT.size, self.load_addr,
                                self.input_addr, *self.input_shape, self.n_result,
                                self.body_size, 0)

    @classmethod
    def parse(cls, image: bytes) -> "ImageHeader | None":
        """The header at the start of ``image``, or None when there is no magic."""
        if image[:4] != cls.MAGIC:
            return None
        if len(image) < cls.STRUCT.size:
            raise ValueError(f"memory image of {len(image)} bytes is shorter than its header")
        (_, version, size, load_addr, input_addr, h, w, c, n_result, body,
         _) = cls.STRUCT.unpack_from(image)
        if version != cls.VERSION:
            raise ValueError(f"memory image header version {version}, this driver reads "
                             f"version {cls.VERSION}")
        if size < cls.STRUCT.size or len(image) != size + body:
            raise ValueError(f"memory image header says {size} + {body} bytes, the file has "
                             f"{len(image)}")
        return cls(load_addr, input_addr, (h, w, c), n_result, body)


def _pad_even(data: bytes) -> bytes:
    return data + b"\0" if len(data) % 2 else data


class Device:
    """The accelerator behind a transport.

    Parameters
    ----------
    transport : Transport
    timeout : float
        Seconds to wait for each response (the device's inter-byte timeout must be shorter),
        on the transport's clock (:meth:`Transport.clock`: the host's, or a simulation's).
    retries : int
        Resends of one frame after a timeout or a damaged-frame NACK.
    input_addr : int or None
        Word address of the face image, unless a memory image header gives it.
    face_via : "stream" or "memory"
        How :meth:`run_face` delivers the face (see the module docstring).
    """

    def __init__(self, transport: Transport, *, timeout: float = 1.0, retries: int = 3,
                 input_addr: int | None = None, face_via: str = "stream"):
        if face_via not in ("stream", "memory"):
            raise ValueError(f"face_via must be 'stream' or 'memory', not {face_via!r}")
        self.face_via = face_via
        self.transport = transport
        self.timeout, self.retries = timeout, retries
        self.input_addr = input_addr
        self.header: ImageHeader | None = None
        self.parser = P.FrameParser()
        self.seq = 0
        self._max_payload = None
        self._face_payload = None
        self.stats = {"frames": 0, "resends": 0, "payload_bytes": 0}

    # ---- frames ---------------------------------------------------------------------------

    def _next_seq(self) -> int:
        self.seq = (self.seq + 1) & 0xFF
        return self.seq

    def _await(self, cmd: P.Cmd, seq: int, seen: list[str]) -> P.Frame | None:
        deadline = self.transport.clock() + self.timeout
        while True:
            left = deadline - self.transport.clock()
            if left <= 0:
                return None
            chunk = self.transport.read(4096, min(left, 0.05))
            for event in self.parser.feed(chunk):
                if isinstance(event, P.BadFrame):
                    seen.append(f"damaged frame ({event.reason}) {event.raw[:16].hex()}")
                elif event.seq != seq:
                    seen.append(f"stale {event.describe()}")
                else:
                    return event

    def transact(self, cmd: P.Cmd, payload: bytes = b"", *, retries: int | None = None) -> bytes:
        """Send one command and return the payload of its ACK.

        Raises
        ------
        DeviceError
            On a NACK that a resend cannot fix (unknown command, bad address, busy, no result).
        LinkError
            When no valid response came after the bounded resends.
        """
        cmd = P.Cmd(cmd)
        retries = self.retries if retries is None else retries
        seq = self._next_seq()
        frame = P.encode_frame(cmd, seq, payload)
        seen: list[str] = []
        for attempt in range(retries + 1):
            if attempt:
                self.stats["resends"] += 1
            # A frame cut short by the last answer is no part of the next one: were its header
            # kept, the decoder would wait for its length in bytes and swallow the next answer.
            self.parser.buf.clear()
            self.transport.write(frame)
            self.stats["frames"] += 1
            resp = self._await(cmd, seq, seen)
            if resp is None:
                seen.append(f"no response within {self.timeout:g} s")
                continue
            if resp.is_nack:
                code = resp.nack_code
                if code in RETRYABLE:
                    seen.append(resp.describe())
                    continue
                name = code.name if isinstance(code, P.Error) else repr(code)
                raise DeviceError(f"{cmd.name} (seq {seq}) refused: NACK {name}", code)
            if resp.kind != P.ACK_FLAG | cmd:
                raise LinkError(f"{cmd.name} (seq {seq}): answered with {resp.describe()}")
            self.stats["payload_bytes"] += len(payload)
            return resp.payload
        raise LinkError(f"{cmd.name} (seq {seq}): no valid response after {retries + 1} "
                        f"attempts; received: {'; '.join(seen[-6:]) or 'nothing'}")

    # ---- commands -------------------------------------------------------------------------

    def status(self) -> P.Status:
        return P.Status.unpack(self.transact(P.Cmd.STATUS))

    @property
    def max_payload(self) -> int:
        if self._max_payload is None:
            st = self.status()
            self._max_payload, self._face_payload = st.max_payload, st.face_payload
        return self._max_payload

    @property
    def face_payload(self) -> int:
        """The longest FACE_DATA payload the device takes."""
        if self._face_payload is None:
            st = self.status()
            self._max_payload, self._face_payload = st.max_payload, st.face_payload
        return self._face_payload

    def write_mem(self, addr: int, data: bytes) -> None:
        """Write bytes (even length) as 16-bit words from word address ``addr``."""
        if len(data) % 2:
            raise ValueError(f"write_mem data must have an even length, not {len(data)}")
        chunk = self.max_payload - 4
        for off in range(0, len(data), chunk):
            self.transact(P.Cmd.WRITE_MEM, P.write_mem_payload(addr + off // 2,
                                                               data[off:off + chunk]))

    def read_mem(self, addr: int, nwords: int) -> bytes:
        chunk = (self.max_payload - 4) // 2
        out = bytearray()
        for off in range(0, nwords, chunk):
            n = min(chunk, nwords - off)
            data = self.transact(P.Cmd.READ_MEM, P.read_mem_payload(addr + off, n))
            if len(data) != 2 * n:
                raise LinkError(f"READ_MEM at {addr + off}: asked {n} words, got {len(data)} bytes")
            out += data
        return bytes(out)

    def load_image(self, image: bytes, load_addr: int = 0, verify: bool = False) -> None:
        """Upload the memory image (see the module docstring for the optional header)."""
        header = ImageHeader.parse(image)
        body = image
        if header is not None:
            self.header = header
            body = image[ImageHeader.STRUCT.size:]
            load_addr = header.load_addr
            if self.input_addr is None:
                self.input_addr = header.input_addr
        body = _pad_even(body)
        self.write_mem(load_addr, body)
        if verify:
            back = self.read_mem(load_addr, len(body) // 2)
            if back != body:
                bad = next(i for i, (a, b) in enumerate(zip(back, body)) if a != b)
                raise DeviceError(f"memory image verify failed at byte {bad} (word address "
                                  f"{load_addr + bad // 2}): wrote 0x{body[bad]:02x}, read "
                                  f"0x{back[bad]:02x}")

    def run(self) -> None:
        """Start the engine once. A RUN whose ACK was lost is not resent blindly: the ``runs``
        counter in STATUS tells whether it started."""
        before = self.status()
        if before.busy:
            raise DeviceError("RUN refused: the engine is busy", P.Error.BUSY)
        last = None
        for _ in range(self.retries + 1):
            try:
                self.transact(P.Cmd.RUN, retries=0)
                return
            except DeviceError as e:
                if e.code == P.Error.UNSUPPORTED:
                    raise DeviceError("RUN refused: this design takes the face only as a "
                                      "stream of FACE_DATA frames (use face_via='stream', the "
                                      "CLI's default --face-via stream)", e.code) from None
                raise
            except LinkError as e:
                last = e
                if (self.status().runs - before.runs) & 0xFFFF:
                    return
        raise LinkError(f"RUN never started the engine: {last}")

    def send_face(self, data: bytes) -> None:
        """Send the face to the device's face buffer in FACE_DATA frames (as few as its
        ``face_payload`` allows: one for a whole face on the boards)."""
        chunk = self.face_payload - 4
        for off in range(0, len(data), chunk):
            self.transact(P.Cmd.FACE_DATA, P.face_payload(off, data[off:off + chunk]))

    def read_result(self, timeout: float = 10.0, poll: float = 0.002) -> np.ndarray:
        """The oldest embedding not read yet; waits up to ``timeout`` seconds for the engine
        to deliver it (the device answers NO_RESULT until then)."""
        deadline = self.transport.clock() + timeout
        while True:
            try:
                data = self.transact(P.Cmd.READ_RESULT)
                return np.frombuffer(data, dtype="<i2").astype(np.int64)
            except DeviceError as e:
                if e.code != P.Error.NO_RESULT:
                    raise
            if self.transport.clock() > deadline:
                st = self.status()
                if st.error:
                    raise DeviceError(f"the engine reports an error (last link error "
                                      f"{st.last_error})")
                raise DeviceError(f"no embedding within {timeout:g} s (busy={st.busy}, "
                                  f"done={st.done}, embedding words held {st.result_words}, "
                                  f"{st.n_result} a face)")
            time.sleep(poll)

    def _face_bytes(self, face) -> bytes:
        face = np.asarray(face)
        if face.dtype != np.uint8:
            raise ValueError(f"face must be uint8, not {face.dtype}")
        if self.header is not None and face.shape != self.header.input_shape:
            raise ValueError(f"face shape {face.shape} differs from the image's input shape "
                             f"{self.header.input_shape}")
        return np.ascontiguousarray(face).tobytes()

    def _start_face(self, data: bytes) -> None:
        if self.face_via == "stream":
            self.send_face(data)
        else:
            if self.input_addr is None:
                raise ValueError("no input address: load an image with a header or give "
                                 "input_addr")
            self.write_mem(self.input_addr, _pad_even(data))
            self.run()

    def run_face(self, face, timeout: float = 10.0) -> np.ndarray:
        """Send ``face`` (uint8, H x W x C), return its embedding."""
        self._start_face(self._face_bytes(face))
        return self.read_result(timeout)

    def run_faces(self, faces, timeout: float = 10.0, on_result=None) -> list[np.ndarray]:
        """The embeddings of ``faces``, pipelined (module docstring): face N+1 is sent before
        the embedding of face N is read. ``on_result(index, embedding)`` is called as each
        arrives. The faces run one after the other with ``face_via="memory"`` (the input
        address holds one face) and when a face is longer than the device's face buffer
        (STATUS ``face_payload``: it streams through the buffer while the engine takes it)."""
        out, sent = [], 0

        def take():
            out.append(self.read_result(timeout))
            if on_result is not None:
                on_result(len(out) - 1, out[-1])

        for face in faces:
            data = self._face_bytes(face)
            serial = self.face_via == "memory" or len(data) > self.face_payload - 4
            if serial and len(out) < sent:
                take()
            self._start_face(data)
            sent += 1
            if len(out) < sent - 1:
                take()
        while len(out) < sent:
            take()
        return out


def cosine(a, b) -> float:
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    den = np.linalg.norm(a) * np.linalg.norm(b)
    return float(a @ b / den) if den else float("nan")
