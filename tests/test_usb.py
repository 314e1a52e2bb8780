"""The USB link (hw/link/usb.py) simulated at the packet level: a USB host model
(tests/usb_host.py) on the D+/D- lines of LUNA's gateware PHY, the CDC-ACM device, the clock
domain crossings and the frame parser of hw/link/framing.py, in Amaranth's simulator.

Checked: enumeration (device and configuration descriptors read, address and configuration
set), a face sent in bulk OUT packets as FACE_DATA frames and an embedding read back over bulk
IN with READ_RESULT, a data packet with a bad CRC16 not acknowledged and not delivered, a bus
reset in the middle of a frame (the device answers at address 0 again, is enumerated again,
and the next frame goes through).
"""
import random
import struct

import pytest
from amaranth import Elaboratable, Module
from amaranth.sim import Simulator

from firmware import protocol as P
from hw.link.usb import DATA_ENDPOINT, MAX_PACKET, USB_PID, USB_VID, USBHostLink
from tests.usb_host import PID_ACK, PID_DATA0, PID_DATA1, PID_NAK, USBHost

N_RESULT = 8
SYNC_PERIOD = 1 / 50e6          # the link's own clock in these runs (the board: 81.25 MHz)
TIMEOUT_CYCLES = 10_000


class _Bench(Elaboratable):
    def __init__(self):
        # inter-byte timeout 200 us at 50 MHz: well above the host model's gaps between the
        # packets of a frame (under 20 us)
        self.dut = USBHostLink(timeout_cycles=TIMEOUT_CYCLES, addr_width=12, max_burst=16,
                               n_result=N_RESULT, run_command=False)

    def elaborate(self, platform):
        m = Module()
        m.submodules.dut = self.dut
        return m


def _run(testbench, extras=()):
    """Run ``testbench(host, dut)`` to its end (with ``extras(ctx, dut)`` beside it, in the
    background) and return what it returns. Every loop of the host model is bounded, so a
    device that stops answering fails an assertion instead of hanging."""
    bench = _Bench()
    sim = Simulator(bench)
    sim.add_clock(1 / 48e6, domain="usb_io")
    sim.add_clock(1 / 12e6, domain="usb")          # both start at 0: in phase, as the PLL makes
    sim.add_clock(SYNC_PERIOD, domain="sync")
    result = {}

    async def host(ctx):
        result["value"] = await testbench(USBHost(ctx, bench.dut.pins), bench.dut)

    sim.add_testbench(host)
    for extra in extras:
        async def run_extra(ctx, extra=extra):
            await extra(ctx, bench.dut)
        sim.add_testbench(run_extra, background=True)
    sim.run()
    assert "value" in result, "the host model did not finish"
    return result["value"]


async def _bulk_out(host, data, toggle):
    """All of ``data`` in bulk OUT packets, retrying NAKed ones; returns the next toggle and
    the number of NAKs."""
    naks = 0
    for i in range(0, len(data), MAX_PACKET):
        while True:
            pid = PID_DATA1 if toggle else PID_DATA0
            hs = await host.out_packet(DATA_ENDPOINT, pid, data[i:i + MAX_PACKET])
            if hs == PID_ACK:
                toggle ^= 1
                break
            assert hs == PID_NAK, f"bulk OUT answered with {hs!r}"
            naks += 1
            await host.idle(16)
    return toggle, naks


async def _read_frames(host, toggle, count, max_polls=400):
    """Bulk IN until ``count`` whole frames of the protocol have come; (frames, toggle)."""
    parser, frames = P.FrameParser(), []
    for _ in range(max_polls):
        got = await host.in_packet(DATA_ENDPOINT, tries=1)
        if got is None:
            await host.idle(16)
            continue
        pid, chunk = got
        assert pid == (PID_DATA1 if toggle else PID_DATA0), "bulk IN data toggle"
        toggle ^= 1
        for event in parser.feed(chunk):
            assert isinstance(event, P.Frame), event
            frames.append(event)
        if len(frames) >= count:
            assert len(frames) == count and not parser.buf, (frames, parser.buf)
            return frames, toggle
    raise AssertionError(f"{len(frames)} of {count} response frames over bulk IN")


async def _read_frame(host, toggle):
    (frame,), toggle = await _read_frames(host, toggle, 1)
    return frame, toggle


async def _face_sink(ctx, dut, store, every=1):
    """Takes the face bytes off ``o_face``, ready one cycle in ``every``."""
    cycle = 0
    while True:
        ready = cycle % every == 0
        ctx.set(dut.o_face.ready, ready)
        _, _, valid, payload = await ctx.tick("sync").sample(dut.o_face.valid,
                                                             dut.o_face.payload)
        if valid and ready:
            store.append(payload)
        cycle += 1


def test_enumeration_descriptors():
    async def bench(host, dut):
        device, config = await host.enumerate(address=7)
        # a second read at the new address, after SET_ADDRESS
        again = await host.control_in(0x80, 6, 0x0100, 0, 18)
        return device, config, again

    device, config, again = _run(bench)
    assert len(device) == 18 and device == again
    b_length, b_type, bcd_usb, cls, sub, proto, mps0, vid, pid = struct.unpack_from(
        "<BBHBBBBHH", device)
    assert (b_length, b_type, mps0, vid, pid) == (18, 1, 64, USB_VID, USB_PID)
    # configuration: the CDC data interface (class 0x0A) with bulk IN 0x81 and OUT 0x01
    assert config[1] == 2 and struct.unpack_from("<H", config, 2)[0] == len(config)
    endpoints, interfaces, i = [], [], 0
    while i < len(config):
        length, kind = config[i], config[i + 1]
        if kind == 4:
            interfaces.append(config[i + 5])
        if kind == 5:
            endpoints.append((config[i + 2], config[i + 3], struct.unpack_from("<H", config,
                                                                               i + 4)[0]))
        i += length
    assert interfaces == [0x02, 0x0A]
    assert (0x80 | DATA_ENDPOINT, 2, MAX_PACKET) in endpoints
    assert (DATA_ENDPOINT, 2, MAX_PACKET) in endpoints


def _face_round_trip(face, chunk, sink_every=1):
    """Enumerate, send ``face`` as FACE_DATA frames of ``chunk`` bytes, each waiting for its
    response and resent after a NACK BUSY (the face buffer had no room for it), as the driver
    does; have a stand-in engine take the bytes (one cycle in ``sink_every``) and answer
    N_RESULT words once every face byte reached ``o_face``, read them back. Returns the BUSY
    NACKs counted."""
    received = []
    words = [random.Random(1).randrange(-32768, 32768) for _ in range(N_RESULT)]

    async def result_source(ctx, dut):
        while len(received) < len(face):
            await ctx.tick("sync")
        for w in words:
            ctx.set(dut.i_result.valid, 1)
            ctx.set(dut.i_result.payload, w)
            await ctx.tick("sync").until(dut.i_result.ready)
        ctx.set(dut.i_result.valid, 0)

    async def bench(host, dut):
        await host.enumerate()
        toggle_out = toggle_in = 0
        busy = 0
        for seq, off in enumerate(range(0, len(face), chunk)):
            frame = P.encode_frame(P.Cmd.FACE_DATA, seq & 0xFF,
                                   P.face_payload(off, face[off:off + chunk]))
            for _ in range(200):
                toggle_out, _ = await _bulk_out(host, frame, toggle_out)
                resp, toggle_in = await _read_frame(host, toggle_in)
                if not (resp.is_nack and resp.nack_code == P.Error.BUSY):
                    break
                busy += 1
                await host.idle(500)
            assert resp.kind == P.ACK_FLAG | P.Cmd.FACE_DATA and resp.seq == seq & 0xFF, \
                resp.describe()
        # the face buffer ACKs a frame once it holds it, before the engine has taken it:
        # poll as the driver does until the embedding is there
        for _ in range(200):
            toggle_out, _ = await _bulk_out(host, P.encode_frame(P.Cmd.READ_RESULT, 0x42),
                                            toggle_out)
            resp, toggle_in = await _read_frame(host, toggle_in)
            if not (resp.is_nack and resp.nack_code == P.Error.NO_RESULT):
                break
            await host.idle(500)
        return resp, busy

    resp, busy = _run(bench, extras=[lambda ctx, dut: _face_sink(ctx, dut, received,
                                                             sink_every),
                                     result_source])
    assert bytes(received) == face
    assert resp.kind == P.ACK_FLAG | P.Cmd.READ_RESULT and resp.seq == 0x42, resp.describe()
    assert list(struct.unpack(f"<{N_RESULT}h", resp.payload)) == words
    return busy


def test_face_bulk_out_embedding_bulk_in():
    face = bytes(random.Random(0).randrange(256) for _ in range(300))
    _face_round_trip(face, chunk=200)


@pytest.mark.slow
def test_face_larger_than_the_face_buffer_flow_control():
    # a 4 KiB face in frames of 2 KiB to an engine that takes a byte every 64th cycle: a frame
    # that finds the face buffer full is NACKed BUSY and dropped whole, and the host resends
    # it; no byte is lost or doubled
    face = bytes(random.Random(2).randrange(256) for _ in range(4096))
    assert _face_round_trip(face, chunk=2044, sink_every=64) > 0


def test_bad_crc_not_acknowledged_and_not_delivered():
    async def bench(host, dut):
        await host.enumerate()
        frame = P.encode_frame(P.Cmd.STATUS, 9)
        silent = await host.out_packet(DATA_ENDPOINT, PID_DATA0, frame, corrupt_crc=True)
        await host.idle(100)
        # nothing reached the frame parser: no response waits on bulk IN
        nothing = await host.in_packet(DATA_ENDPOINT, tries=3)
        # the host resends the packet intact (same toggle): ACKed, answered
        hs = await host.out_packet(DATA_ENDPOINT, PID_DATA0, frame)
        resp, _ = await _read_frame(host, 0)
        return silent, nothing, hs, resp

    silent, nothing, hs, resp = _run(bench)
    assert silent is None            # a corrupted data packet gets no handshake
    assert nothing is None
    assert hs == PID_ACK
    assert resp.kind == P.ACK_FLAG | P.Cmd.STATUS and resp.seq == 9
    # the frame parser saw one frame, intact: the corrupted packet never reached it
    status = P.Status.unpack(resp.payload)
    assert status.bad_crc == 0 and status.dropped_bytes == 0 and status.timeouts == 0


@pytest.mark.slow
def test_bus_reset_mid_frame_recovers():
    async def bench(host, dut):
        await host.enumerate(address=3)
        frame = P.encode_frame(P.Cmd.STATUS, 1)
        # half a frame, then a bus reset
        assert await host.out_packet(DATA_ENDPOINT, PID_DATA0, frame[:5]) == PID_ACK
        await host.bus_reset()
        # the device left address 3: a token to it gets no answer
        host.addr = 3
        stale = await host.out_packet(DATA_ENDPOINT, PID_DATA0, frame)
        # enumerate again; the cut frame ends at the parser's inter-byte timeout
        await host.enumerate(address=4)
        await host.idle(3600)            # 300 us: past the 200 us inter-byte timeout
        timeout_resp, toggle_in = await _read_frame(host, 0)
        await _bulk_out(host, P.encode_frame(P.Cmd.STATUS, 2), 0)
        resp, _ = await _read_frame(host, toggle_in)
        return stale, timeout_resp, resp

    stale, timeout_resp, resp = _run(bench)
    assert stale is None
    assert timeout_resp.is_nack and timeout_resp.nack_code == P.Error.TIMEOUT
    assert resp.kind == P.ACK_FLAG | P.Cmd.STATUS and resp.seq == 2


# -- the host driver, unchanged, over the simulated USB link ---------------------------------

async def _memory(ctx, dut, mem):
    """A memory behind the link's port: commands one at a time, one word a cycle."""
    cmd, w, r = dut.mem.cmd, dut.mem.w, dut.mem.r
    while True:
        ctx.set(cmd.ready, 1)
        _, _, valid, payload = await ctx.tick("sync").sample(cmd.valid, cmd.payload)
        if not valid:
            continue
        ctx.set(cmd.ready, 0)
        addr, length = payload.addr, payload.length
        if payload.write:
            ctx.set(w.ready, 1)
            got = 0
            while got < length:
                _, _, wv, wd = await ctx.tick("sync").sample(w.valid, w.payload)
                if wv:
                    mem[addr + got] = wd
                    got += 1
            ctx.set(w.ready, 0)
        else:
            for k in range(length):
                ctx.set(r.valid, 1)
                ctx.set(r.payload, mem.get(addr + k, 0))
                await ctx.tick("sync").until(r.ready)
            ctx.set(r.valid, 0)


def _stand_in_embedding(face):
    return [(sum(face[k::N_RESULT]) * (k + 1)) % 65536 - 32768 for k in range(N_RESULT)]


async def _stand_in_engine(ctx, dut, face_bytes):
    """Takes a face of ``face_bytes`` from ``o_face`` (busy meanwhile), answers
    :func:`_stand_in_embedding` of it on ``i_result``; again for every face."""
    while True:
        face = []
        ctx.set(dut.o_face.ready, 1)
        while len(face) < face_bytes:
            _, _, valid, payload = await ctx.tick("sync").sample(dut.o_face.valid,
                                                                dut.o_face.payload)
            if valid:
                face.append(payload)
                ctx.set(dut.busy, 1)
                ctx.set(dut.done, 0)
        ctx.set(dut.o_face.ready, 0)
        for word in _stand_in_embedding(face):
            ctx.set(dut.i_result.valid, 1)
            ctx.set(dut.i_result.payload, word)
            await ctx.tick("sync").until(dut.i_result.ready)
        ctx.set(dut.i_result.valid, 0)
        ctx.set(dut.busy, 0)
        ctx.set(dut.done, 1)


@pytest.mark.slow
def test_driver_over_usb():
    """firmware.driver.Device over a QueueTransport whose bytes this host model carries in
    bulk OUT / IN packets (what the OS's CDC-ACM driver does for pyserial): status, an image
    written and verified (WRITE_MEM, READ_MEM), a face streamed and its embedding read."""
    import threading

    import numpy as np

    from firmware.driver import Device, ImageHeader
    from firmware.transport import QueueTransport

    shape = (6, 5, 3)
    rng = np.random.default_rng(5)
    body = rng.integers(0, 256, 300, dtype=np.uint8).tobytes()
    header = ImageHeader(load_addr=64, input_addr=1024, input_shape=shape, n_result=N_RESULT,
                         body_size=len(body))
    face = rng.integers(0, 256, shape, dtype=np.uint8)
    mem, box = {}, {}
    qt = QueueTransport()

    def driver():
        try:
            dev = Device(qt, timeout=120.0, retries=1)
            box["status"] = dev.status()
            dev.load_image(header.pack() + body, verify=True)
            box["embedding"] = dev.run_face(face, timeout=600).tolist()
        except Exception as e:          # reported below
            box["error"] = e

    async def bench(host, dut):
        await host.enumerate()
        thread = threading.Thread(target=driver, daemon=True)
        thread.start()
        toggle_out = toggle_in = 0
        while thread.is_alive():
            data = qt.device_take()
            if data is not None:
                toggle_out, _ = await _bulk_out(host, data, toggle_out)
                continue
            got = await host.in_packet(DATA_ENDPOINT, tries=1)
            if got is None:
                await host.idle(16)
                continue
            pid, chunk = got
            assert pid == (PID_DATA1 if toggle_in else PID_DATA0)
            toggle_in ^= 1
            qt.device_put(chunk)
        return True

    _run(bench, extras=[lambda ctx, dut: _memory(ctx, dut, mem),
                        lambda ctx, dut: _stand_in_engine(ctx, dut, face.size)])
    if "error" in box:
        raise box["error"]
    assert box["status"].max_payload == P.MAX_PAYLOAD and box["status"].n_result == N_RESULT
    words = np.frombuffer(body, "<u2").tolist()
    assert [mem.get(64 + k) for k in range(len(words))] == words
    assert box["embedding"] == _stand_in_embedding(list(face.tobytes()))


def test_board_top_requests_us2_and_makes_the_usb_clocks():
    """BoardTop for ulx3s-usb: the US2 pins of the ULX3S constraint file with no internal pull,
    the second PLL's exact 48/12 MHz dividers, no UART pins."""
    import re

    from hw.board.boards import get_board
    from hw.board.top import BoardTop
    from hw.build.flow import _prepare
    board = get_board("ulx3s-usb")
    plan = _prepare(board.platform_instance(), BoardTop(board))
    lpf = plan.files["top.lpf"]
    for pin, site, drive in (("d_p", "D15", 4), ("d_n", "E15", 4), ("pullup", "B12", 16)):
        assert f'LOCATE COMP "us2_0__{pin}__io" SITE "{site}";' in lpf
        assert f'IOBUF PORT "us2_0__{pin}__io" IO_TYPE=LVCMOS33 PULLMODE=NONE DRIVE={drive};' \
            in lpf
    assert "uart" not in lpf
    il = plan.files["top.il"]
    plls = re.findall(r"cell \\EHXPLLL .*?\n  end", il, re.S)
    assert len(plls) == 2
    usb = next(p for p in plls if "CLKOS2_DIV" in p and "40" in p)
    for name, value in (("CLKI_DIV", 5), ("CLKFB_DIV", 48), ("CLKOP_DIV", 2), ("CLKOS_DIV", 10),
                        ("CLKOS2_DIV", 40)):
        assert re.search(rf"parameter \\{name} {value}\n", usb), name
