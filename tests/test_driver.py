"""The host driver: against the simulated gateware (cocotb), and its command line."""
import subprocess
import sys

import numpy as np
import pytest

from firmware.driver import Device, DeviceError, ImageHeader, LinkError, cosine
from firmware import protocol as P
from firmware.transport import QueueTransport, SerialTransport, TransportError
from tests.test_link import run_link_tests

ROOT = __import__("pathlib").Path(__file__).resolve().parent.parent


def test_driver_against_simulated_link():
    run_link_tests("driver_over_simulated_link")


class ScriptedDevice(QueueTransport):
    """A transport whose 'device' answers from a Python function, for driver unit tests."""

    def __init__(self, answer):
        super().__init__()
        self.answer = answer
        self.parser = P.FrameParser()
        self.received = []

    def write(self, data):
        for frame in self.parser.feed(data):
            self.received.append(frame)
            out = self.answer(frame, len(self.received))
            if out:
                self.device_put(out)


def test_link_error_names_command_seq_and_what_came():
    dev = Device(ScriptedDevice(lambda f, n: b"\xA5\x5A\x99garbage"), timeout=0.05, retries=2)
    with pytest.raises(LinkError, match=r"STATUS \(seq 1\): no valid response after 3 attempts;"
                                        r" received: .*no response within"):
        dev.status()
    assert dev.transport.received and len(dev.transport.received) == 3


def test_nack_retry_then_success_and_stale_responses_skipped():
    def answer(frame, n):
        if n == 1:
            return P.encode_frame(P.NACK, frame.seq, P.nack_payload(P.Error.BAD_CRC, frame.kind))
        stale = P.encode_frame(P.ACK_FLAG | frame.kind, (frame.seq - 1) & 0xFF, b"old")
        return stale + P.encode_frame(P.ACK_FLAG | frame.kind, frame.seq, b"\x01\x02")
    dev = Device(ScriptedDevice(answer), timeout=0.5)
    assert dev.transact(P.Cmd.READ_MEM, P.read_mem_payload(0, 1)) == b"\x01\x02"
    assert dev.stats["resends"] == 1


def test_refusal_is_not_retried():
    dev = Device(ScriptedDevice(lambda f, n: P.encode_frame(
        P.NACK, f.seq, P.nack_payload(P.Error.BAD_ADDRESS, f.kind))), timeout=0.5)
    with pytest.raises(DeviceError, match=r"READ_MEM \(seq 1\) refused: NACK BAD_ADDRESS"):
        dev.transact(P.Cmd.READ_MEM, P.read_mem_payload(1 << 30, 1))
    assert len(dev.transport.received) == 1


class PipelineDevice(ScriptedDevice):
    """A device model for the driver's pipelining: STATUS gives ``face_payload``; FACE_DATA is
    ACKed; every face's embedding is ready only after ``compute`` READ_RESULTs answered
    NO_RESULT (the engine still computing); the results come oldest first."""

    def __init__(self, face_payload, compute=1):
        self.face_payload, self.compute = face_payload, compute
        self.faces, self.got, self.log = [], bytearray(), []
        self.polls = 0
        super().__init__(self.respond)

    def respond(self, f, n):
        ack = lambda payload=b"": P.encode_frame(P.ACK_FLAG | f.kind, f.seq, payload)  # noqa
        if f.kind == P.Cmd.STATUS:
            fields = dict.fromkeys(P.STATUS_FIELDS, 0)
            fields.update(max_payload=P.MAX_PAYLOAD, n_result=4, face_payload=self.face_payload)
            return ack(P.STATUS_STRUCT.pack(P.VERSION, 0, 0, 0, *fields.values()))
        if f.kind == P.Cmd.FACE_DATA:
            offset, data = int.from_bytes(f.payload[:4], "little"), f.payload[4:]
            if offset == 0:
                self.faces.append(bytearray())
            self.faces[-1] += data
            self.log.append(("FACE", len(self.faces) - 1, offset))
            return ack()
        if f.kind == P.Cmd.READ_RESULT:
            k = sum(1 for e in self.log if e[0] == "RESULT")
            if self.polls < self.compute:
                self.polls += 1
                return P.encode_frame(P.NACK, f.seq, P.nack_payload(P.Error.NO_RESULT, f.kind))
            self.polls = 0
            self.log.append(("RESULT", k))
            return ack(np.full(4, k + 1, "<i2").tobytes())


def test_run_faces_sends_the_next_face_before_reading_a_result():
    faces = [np.full((4, 4, 3), k, np.uint8) for k in range(4)]
    dev = Device(PipelineDevice(face_payload=4 + 48, compute=2), timeout=0.5)
    got = dev.run_faces(faces, timeout=5)
    assert [int(e[0]) for e in got] == [1, 2, 3, 4]
    assert dev.transport.log == [("FACE", 0, 0), ("FACE", 1, 0), ("RESULT", 0), ("FACE", 2, 0),
                                 ("RESULT", 1), ("FACE", 3, 0), ("RESULT", 2), ("RESULT", 3)]
    assert [bytes(f) for f in dev.transport.faces] == [f.tobytes() for f in faces]


def test_run_faces_one_after_the_other_when_a_face_exceeds_the_buffer():
    """A face buffer smaller than a face (the 12F's one block): the face streams through it
    in chunks while the engine takes it, so the next face waits for the embedding."""
    faces = [np.full((4, 4, 3), k, np.uint8) for k in range(3)]
    dev = Device(PipelineDevice(face_payload=4 + 20), timeout=0.5)
    got = dev.run_faces(faces, timeout=5)
    assert [int(e[0]) for e in got] == [1, 2, 3]
    assert [e for e in dev.transport.log if e[0] == "RESULT" or e[2] == 0] == [
        ("FACE", 0, 0), ("RESULT", 0), ("FACE", 1, 0), ("RESULT", 1), ("FACE", 2, 0),
        ("RESULT", 2)]
    assert [bytes(f) for f in dev.transport.faces] == [f.tobytes() for f in faces]


def test_read_result_gives_up_naming_what_the_device_holds():
    dev = Device(PipelineDevice(face_payload=100, compute=10 ** 9), timeout=0.5)
    with pytest.raises(DeviceError, match=r"no embedding within 0.05 s .*embedding words held"):
        dev.read_result(timeout=0.05)


def test_image_header_round_trip_and_errors():
    h = ImageHeader(load_addr=0x100, input_addr=0x80000, input_shape=(112, 112, 3),
                    n_result=512, body_size=4)
    image = h.pack() + b"abcd"
    assert ImageHeader.parse(image) == h
    assert ImageHeader.parse(b"raw bytes") is None
    with pytest.raises(ValueError, match="says 32 \\+ 4 bytes, the file has 35"):
        ImageHeader.parse(image[:-1])
    assert cosine([1, 0], [2, 0]) == pytest.approx(1.0)


def test_serial_transport_names_the_port():
    with pytest.raises(TransportError, match="/dev/ttyNOPE.*3000000 baud"):
        SerialTransport("/dev/ttyNOPE", 3_000_000)


def test_cli_help():
    out = subprocess.run([sys.executable, "-m", "firmware.run", "--help"], cwd=ROOT,
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    for word in ("--port", "--image", "--input-addr", "cosine", "memory image"):
        assert word in out.stdout, f"--help does not mention {word!r}"


class _Port:
    def __init__(self, device, vid, pid):
        self.device, self.vid, self.pid = device, vid, pid


def test_usb_port_found_by_vid_pid(monkeypatch):
    from serial.tools import list_ports

    from firmware.transport import USB_PID, USB_VID, find_usb_port
    ftdi = _Port("/dev/ttyUSB0", 0x0403, 0x6015)
    ours = _Port("/dev/ttyACM3", USB_VID, USB_PID)
    monkeypatch.setattr(list_ports, "comports", lambda: [ftdi, ours])
    assert find_usb_port() == "/dev/ttyACM3"
    monkeypatch.setattr(list_ports, "comports", lambda: [ftdi])
    with pytest.raises(TransportError, match="no USB serial device 1209:0001"):
        SerialTransport("usb")
    monkeypatch.setattr(list_ports, "comports",
                        lambda: [ours, _Port("/dev/ttyACM4", USB_VID, USB_PID)])
    with pytest.raises(TransportError, match="2 USB serial devices 1209:0001: /dev/ttyACM3, "
                                             "/dev/ttyACM4"):
        find_usb_port()


@pytest.mark.parametrize("port, message", [
    ("/dev/ttyNOPE", "cannot open serial port '/dev/ttyNOPE'"),
    ("usb", "no USB serial device 1209:0001"),
])
def test_cli_missing_port(tmp_path, port, message):
    face = tmp_path / "face.npy"
    np.save(face, np.zeros((112, 112, 3), np.uint8))
    out = subprocess.run([sys.executable, "-m", "firmware.run", "--port", port,
                          "--input-addr", "0", str(face)], cwd=ROOT, capture_output=True,
                         text=True, timeout=60)
    assert out.returncode == 2, (out.returncode, out.stdout, out.stderr)
    assert message in out.stderr, out.stderr
    assert "Traceback" not in out.stderr and len(out.stderr.strip().splitlines()) == 1


def test_queue_transport_times_out_on_the_simulated_clock():
    """A testbench that feeds the simulated time (QueueTransport.set_time) puts the driver's
    timeouts on it: a read returns empty once the simulated clock passes the timeout, and
    not before, however much real time passes; a clock that stands still is an error."""
    import threading
    import time

    qt = QueueTransport(stall_seconds=0.3)
    qt.set_time(1.0)

    def advance():
        for k in range(1, 40):
            time.sleep(0.01)
            qt.set_time(1.0 + 0.001 * k)
    t = threading.Thread(target=advance)
    t0 = time.monotonic()
    t.start()
    assert qt.read(8, timeout=0.02) == b""          # 20 ms simulated: 20 steps of 10 ms
    assert qt.clock() >= 1.02 and time.monotonic() - t0 >= 0.15
    t.join()
    qt.device_put(b"ACK")
    assert qt.read(8, timeout=0.02) == b"ACK"       # data there: no wait
    with pytest.raises(TransportError, match="stood at 1.039000 s for 0.3 s of real time"):
        qt.read(8, timeout=0.02)
