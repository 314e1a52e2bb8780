import random

import pytest

from firmware import protocol as P


@pytest.mark.parametrize("data, crc", [
    (b"123456789", 0x29B1),          # the catalogue check value of CRC-16/CCITT-FALSE
    (b"", 0xFFFF),
    (b"\x00", 0xE1F0),
    (b"A", 0xB915),
])
def test_crc_known_vectors(data, crc):
    assert P.crc16(data) == crc
    assert P.crc16_bitwise(data) == crc


def test_crc_table_equals_bitwise_and_residue_is_zero():
    rng = random.Random(1)
    for _ in range(200):
        data = bytes(rng.randrange(256) for _ in range(rng.randrange(40)))
        assert P.crc16(data) == P.crc16_bitwise(data)
        assert P.crc16(data + P.crc16(data).to_bytes(2, "big")) == 0


def test_frame_layout_bytes():
    frame = P.encode_frame(P.Cmd.READ_MEM, 7, P.read_mem_payload(0x123456, 3))
    assert frame[:10].hex() == "a55a" "02" "07" "0600" "56341200"
    assert frame[10:12] == b"\x03\x00"
    assert frame[12:] == P.crc16(frame[2:12]).to_bytes(2, "big")
    assert len(frame) == 6 + P.OVERHEAD
    assert P.decode_frame(frame) == P.Frame(P.Cmd.READ_MEM, 7, b"\x56\x34\x12\x00\x03\x00")


def test_parser_resyncs_over_garbage_bad_crc_and_long_length():
    good1 = P.encode_frame(0x81, 1, b"hello")
    good2 = P.encode_frame(P.NACK, 2, P.nack_payload(P.Error.BUSY, P.Cmd.RUN))
    bad = bytearray(P.encode_frame(0x85, 3, b"x" * 10))
    bad[8] ^= 4
    long_len = b"\xA5\x5A\x01\x04\xFF\xFF"
    parser = P.FrameParser(max_payload=100)
    stream = b"\x00\xA5\x13" + good1 + bytes(bad) + long_len + good2 + b"\xA5"
    events = []
    for k in range(0, len(stream), 3):           # fed in pieces: frames straddle the calls
        events += parser.feed(stream[k:k + 3])
    kinds = [(type(e).__name__, getattr(e, "seq", getattr(e, "reason", None))) for e in events]
    assert kinds == [("Frame", 1), ("BadFrame", "crc"), ("BadFrame", "length"), ("Frame", 2)]
    assert events[0].payload == b"hello"
    assert events[3].nack_code == P.Error.BUSY
    assert parser.buf == bytearray(b"\xA5")      # a trailing sync byte is kept


def test_decode_errors_say_what_is_wrong():
    frame = bytearray(P.encode_frame(P.Cmd.STATUS, 1))
    with pytest.raises(ValueError, match="does not start with the sync pattern"):
        P.decode_frame(b"\x00" + frame)
    frame[-1] ^= 1
    with pytest.raises(ValueError, match="bad frame \\(crc\\)"):
        P.decode_frame(bytes(frame))
    with pytest.raises(ValueError, match="sequence number must fit a byte, not 256"):
        P.encode_frame(1, 256)
    with pytest.raises(ValueError, match="even number of bytes, not 3"):
        P.write_mem_payload(0, b"abc")


def test_status_unpack():
    fields = dict(zip(P.STATUS_FIELDS, range(100, 113)))
    payload = P.STATUS_STRUCT.pack(P.VERSION, P.FLAG_BUSY | P.FLAG_RESULT, P.Error.BUSY, 0,
                                   *fields.values())
    st = P.Status.unpack(payload)
    assert st.busy and st.result_ready and not st.done and not st.error
    assert st.last_error == P.Error.BUSY and st.frames_ok == 102 and st.result_words == 111
    assert st.bad_frames == 103 + 104 + 105 and st.face_payload == 112
    with pytest.raises(ValueError, match="STATUS payload must be 30 bytes, not 3"):
        P.Status.unpack(b"abc")


def test_throughput_at_3_mbaud():
    # 2048 data bytes per frame: 2060 bytes out, 8 bytes back, 10 bits a byte.
    tp = P.payload_throughput(3_000_000)
    assert tp == pytest.approx(2048 / (2068 * 10 / 3e6))
    assert 290_000 < tp < 300_000
