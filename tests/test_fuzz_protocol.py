"""Fuzzing the host side of the link protocol (firmware/protocol.py, firmware/driver.py over a
transport): random byte streams, random chunking, truncated and corrupted frames. The decoder
must give a clean answer (events, ``ValueError``, ``LinkError``/``DeviceError``), never
another exception, never a hang, and never accept a frame that was not sent."""
import time

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from firmware import protocol as P
from firmware.driver import RETRYABLE, Device, DeviceError, LinkError
from firmware.transport import Transport

# Deterministic (the same examples on every run: CI cannot flake) and bounded.
FUZZ = settings(max_examples=150, deadline=None, derandomize=True, database=None,
                suppress_health_check=[HealthCheck.too_slow])

frames = st.builds(lambda kind, seq, payload: (kind, seq, payload),
                   st.integers(0, 255), st.integers(0, 255), st.binary(max_size=40))
# Garbage between frames that cannot start a sync pattern (so it cannot swallow a frame).
quiet_garbage = st.binary(max_size=12).map(lambda b: bytes(x for x in b if x != 0xA5))


def _feed_in_chunks(parser, data, cuts):
    events, pos = [], 0
    for cut in sorted(set(c % (len(data) + 1) for c in cuts)) + [len(data)]:
        events += parser.feed(data[pos:cut])
        pos = cut
    return events


@FUZZ
@given(st.binary(max_size=300), st.lists(st.integers(0, 300), max_size=8),
       st.integers(0, 64))
def test_any_byte_stream_is_decoded_cleanly(data, cuts, max_payload):
    """Any bytes, cut anywhere: the same events as in one piece, every frame returned has a
    good CRC and lies in the input, and the parser holds no more than one frame's worth."""
    whole = P.FrameParser(max_payload).feed(data)
    parser = P.FrameParser(max_payload)
    events = _feed_in_chunks(parser, data, cuts)
    assert events == whole
    for e in events:
        if isinstance(e, P.Frame):
            raw = P.encode_frame(e.kind, e.seq, e.payload)
            assert raw in data and P.crc16(raw[2:]) == 0
            assert len(e.payload) <= max_payload
        else:
            assert e.reason in ("crc", "length")
    assert len(parser.buf) < P.OVERHEAD + max_payload
    assert parser.buf[:2] == P.SYNC or len(parser.buf) <= 1


@FUZZ
@given(st.lists(st.tuples(quiet_garbage, frames), max_size=6), quiet_garbage,
       st.lists(st.integers(0, 400), max_size=6))
def test_frames_in_garbage_are_all_found_in_order(items, tail, cuts):
    stream = b"".join(g + P.encode_frame(*f) for g, f in items) + tail
    events = _feed_in_chunks(P.FrameParser(), stream, cuts)
    assert [(e.kind, e.seq, e.payload) for e in events] == [f for _, f in items]


@FUZZ
@given(frames, st.data())
def test_a_damaged_frame_is_never_accepted(frame, data):
    """A burst of up to 8 bits flipped anywhere after the length field (kind, sequence, payload,
    CRC: CRC-16 detects every such burst): no frame comes out, only a CRC error."""
    raw = bytearray(P.encode_frame(*frame))
    at = data.draw(st.sampled_from([2, 3] + list(range(P.HEADER_LEN, len(raw)))), "at")
    raw[at] ^= data.draw(st.integers(1, 255), "flip")
    events = P.FrameParser().feed(bytes(raw))
    assert not any(isinstance(e, P.Frame) for e in events)
    assert [e.reason for e in events] == ["crc"]


@FUZZ
@given(frames, st.data())
def test_a_truncated_frame_gives_nothing_and_decode_says_why(frame, data):
    raw = P.encode_frame(*frame)
    cut = data.draw(st.integers(0, len(raw) - 1), "cut")
    assert P.FrameParser().feed(raw[:cut]) == []
    if cut >= 2:
        try:
            P.decode_frame(raw[:cut])
        except ValueError as e:
            assert "frame" in str(e)
        else:
            raise AssertionError("decode_frame accepted a truncated frame")


@FUZZ
@given(st.binary(max_size=80))
def test_decode_frame_and_status_unpack_answer_or_raise_value_error(data):
    try:
        f = P.decode_frame(data)
    except ValueError:
        pass
    else:
        assert P.encode_frame(f.kind, f.seq, f.payload) == data
    try:
        s = P.Status.unpack(data)
    except ValueError as e:
        assert str(P.STATUS_STRUCT.size) in str(e)
    else:
        assert len(data) == P.STATUS_STRUCT.size and s.version == data[0]


class _ScriptedDevice(Transport):
    """Answers each frame written with the bytes ``answer(frame)`` returns (all at once)."""

    def __init__(self, answer):
        self.answer, self.pending = answer, b""

    def write(self, data):
        self.pending += self.answer(P.decode_frame(data))

    def read(self, n, timeout):
        out, self.pending = self.pending[:n], self.pending[n:]
        return out


RESPONSES = st.sampled_from(["ack", "garbage", "truncated", "corrupt", "stale_seq",
                             "wrong_kind", "nack"])


@settings(max_examples=60, deadline=None, derandomize=True, database=None)
@given(RESPONSES, st.binary(max_size=24), st.binary(max_size=16), st.integers(0, 255),
       st.data())
def test_driver_accepts_only_its_own_ack(how, payload, garbage, code, data):
    """The driver's transact over a device that answers in one of several wrong ways: it
    returns the payload only for a good ACK of its own sequence number, raises LinkError or
    DeviceError otherwise, and gives up within its bounded retries."""
    def answer(cmd):
        kind = P.ACK_FLAG | cmd.kind
        good = P.encode_frame(kind, cmd.seq, payload)
        if how == "ack":
            return garbage.replace(b"\xA5", b"") + good
        if how == "garbage":
            return garbage
        if how == "truncated":
            return good[:data.draw(st.integers(0, len(good) - 1), "cut")]
        if how == "corrupt":
            raw = bytearray(good)
            at = data.draw(st.integers(P.HEADER_LEN, len(raw) - 1), "at")
            raw[at] ^= data.draw(st.integers(1, 255), "flip")
            return bytes(raw)
        if how == "stale_seq":
            return P.encode_frame(kind, (cmd.seq + 1) & 0xFF, payload)
        if how == "wrong_kind":
            return P.encode_frame(P.ACK_FLAG | P.Cmd.RUN, cmd.seq, payload)
        return P.encode_frame(P.NACK, cmd.seq, P.nack_payload(code, cmd.kind))

    dev = Device(_ScriptedDevice(answer), timeout=0.01, retries=1)
    t0 = time.monotonic()
    try:
        got = dev.transact(P.Cmd.STATUS)
    except LinkError as e:
        assert how != "ack" and "STATUS" in str(e)
        assert how != "nack" or code in RETRYABLE
    except DeviceError as e:
        assert how == "nack" and code not in RETRYABLE and "STATUS" in str(e)
    else:
        assert how == "ack" and got == payload
    assert time.monotonic() - t0 < 5.0, "the driver did not give up in time"



@settings(max_examples=40, deadline=None, derandomize=True, database=None)
@given(st.binary(max_size=24), st.data())
def test_a_response_cut_short_does_not_swallow_the_next(payload, data):
    """The first answer is cut (a lost tail: UART overrun, unplugged cable), the resend is
    answered whole: the driver returns the second answer. (The cut frame's header must not
    make the decoder wait for bytes of the next response.)"""
    answers = []

    def answer(cmd):
        good = P.encode_frame(P.ACK_FLAG | cmd.kind, cmd.seq, payload)
        if not answers:
            answers.append(good[:data.draw(st.integers(2, len(good) - 1), "cut")])
        else:
            answers.append(good)
        return answers[-1]

    dev = Device(_ScriptedDevice(answer), timeout=0.01, retries=1)
    assert dev.transact(P.Cmd.STATUS) == payload
