"""A USB full-speed host on the D+/D- lines, for Amaranth simulations of :mod:`hw.link.usb`.

It drives the PHY's line inputs and reads its outputs in the ``usb_io`` domain (48 MHz, four
samples a bit), with the encoding of USB 2.0 chapters 7 and 8 written out here: LSB-first bits,
bit stuffing after six ones, NRZI, SYNC, EOP (two bit times of SE0 and one of J), the tokens'
CRC5 and the data packets' CRC16. Transactions: SETUP, control IN/OUT, bulk OUT with ACK/NAK
and retry, bulk IN, bus reset. Nothing here comes from the device's implementation: a device
that gets the encoding wrong does not answer it.
"""
import struct

J, K, SE0 = (1, 0), (0, 1), (0, 0)
SAMPLES_PER_BIT = 4          # 48 MHz / 12 Mbit/s

PID_OUT, PID_IN, PID_SOF, PID_SETUP = 0x1, 0x9, 0x5, 0xD
PID_DATA0, PID_DATA1 = 0x3, 0xB
PID_ACK, PID_NAK, PID_STALL = 0x2, 0xA, 0xE


def crc5(value, nbits=11):
    """USB token CRC5 (x^5 + x^2 + 1, init all ones, LSB first, inverted)."""
    crc = 0x1F
    for i in range(nbits):
        bit = (value >> i) & 1
        crc = (crc >> 1) ^ 0x14 if (crc ^ bit) & 1 else crc >> 1
    return crc ^ 0x1F


def crc16(data):
    """USB data CRC16 (x^16 + x^15 + x^2 + 1, init all ones, LSB first, inverted)."""
    crc = 0xFFFF
    for byte in data:
        crc ^= byte
        for _ in range(8):
            crc = (crc >> 1) ^ 0xA001 if crc & 1 else crc >> 1
    return crc ^ 0xFFFF


def pid_byte(pid):
    return pid | ((pid ^ 0xF) << 4)


def token(pid, addr, endpoint):
    field = addr | (endpoint << 7)
    field |= crc5(field) << 11
    return bytes([pid_byte(pid)]) + struct.pack("<H", field)


def data_packet(pid, payload, corrupt_crc=False):
    crc = crc16(payload) ^ (0x0001 if corrupt_crc else 0)
    return bytes([pid_byte(pid)]) + bytes(payload) + struct.pack("<H", crc)


def line_levels(packet):
    """The line states of one packet, one per bit time: SYNC, NRZI of the stuffed bits, EOP."""
    bits = []
    for byte in b"\x80" + packet:
        bits += [(byte >> i) & 1 for i in range(8)]
    stuffed, ones = [], 0
    for b in bits:
        stuffed.append(b)
        ones = ones + 1 if b else 0
        if ones == 6:
            stuffed.append(0)
            ones = 0
    levels, state = [], J
    for b in stuffed:
        if b == 0:
            state = K if state == J else J
        levels.append(state)
    return levels + [SE0, SE0, J]


def decode_levels(levels):
    """Bytes of a packet from its line states (one per bit time, SYNC first, up to the SE0)."""
    bits, prev, ones = [], J, 0
    for lv in levels:
        if lv == SE0:
            break
        b = 1 if lv == prev else 0
        prev = lv
        if ones == 6:               # a stuffed zero
            assert b == 0, "bit stuffing violated"
            ones = 0
            continue
        ones = ones + 1 if b else 0
        bits.append(b)
    data = bytes(sum(bits[i + k] << k for k in range(8)) for i in range(0, len(bits) - 7, 8))
    assert data[:1] == b"\x80", f"no SYNC: {data.hex()}"
    return data[1:]


class USBHost:
    """Drives ``pins`` (:class:`hw.link.usb.USBPins`) from an async testbench ``ctx``."""

    def __init__(self, ctx, pins):
        self.ctx, self.pins = ctx, pins
        self.addr = 0
        self.bits_sent = 0

    async def _cycle(self, level):
        ctx, p = self.ctx, self.pins
        ctx.set(p.d_p.i, level[0])
        ctx.set(p.d_n.i, level[1])
        await ctx.tick("usb_io")

    async def idle(self, bits):
        # idle is J while the device's pull-up is on, SE0 (detached) otherwise
        for _ in range(bits * SAMPLES_PER_BIT):
            await self._cycle(J if self.ctx.get(self.pins.pullup.o) else SE0)

    async def send(self, packet):
        for lv in line_levels(packet):
            for _ in range(SAMPLES_PER_BIT):
                await self._cycle(lv)
        self.bits_sent += 8 * (len(packet) + 1)

    async def bus_reset(self, microseconds=40):
        # A host holds SE0 for at least 10 ms; the device acts after 5 us of it by LUNA's
        # count, which is in 60 MHz cycles and so 25 us in its 12 MHz domain: 40 us is the
        # short reset this simulation can afford.
        for _ in range(int(microseconds * 48)):
            await self._cycle(SE0)
        await self.idle(64)
        self.addr = 0

    async def receive(self, timeout_bits=40):
        """The device's next packet as bytes (PID first), or None if it does not start
        driving within ``timeout_bits``."""
        ctx, p = self.ctx, self.pins
        waited = 0
        while not ctx.get(p.d_p.oe):
            waited += 1
            if waited > timeout_bits * SAMPLES_PER_BIT:
                return None
            await self._cycle(J)
        samples = []
        while ctx.get(p.d_p.oe) and len(samples) < 20000:
            level = (ctx.get(p.d_p.o), ctx.get(p.d_n.o))
            samples.append(level)
            await self._cycle(level)      # the bus carries what the device drives
        levels = samples[SAMPLES_PER_BIT // 2::SAMPLES_PER_BIT]
        packet = decode_levels(levels)
        pid = packet[0]
        assert pid >> 4 == (pid & 0xF) ^ 0xF, f"bad PID check bits {pid:#04x}"
        if (pid & 0xF) in (PID_DATA0, PID_DATA1):
            assert crc16(packet[1:-2]) == struct.unpack("<H", packet[-2:])[0], "bad CRC16"
        await self.idle(4)
        return packet

    # -- transactions ---------------------------------------------------------------------

    async def setup(self, request):
        await self.send(token(PID_SETUP, self.addr, 0))
        await self.idle(2)
        await self.send(data_packet(PID_DATA0, request))
        reply = await self.receive()
        assert reply is not None and reply[0] & 0xF == PID_ACK, f"SETUP not ACKed: {reply!r}"

    async def in_packet(self, endpoint, tries=200):
        """One IN transaction: (pid, payload); NAKs retried up to ``tries`` times; None after
        that. An ACK is sent for data."""
        for _ in range(tries):
            await self.send(token(PID_IN, self.addr, endpoint))
            reply = await self.receive()
            assert reply is not None, "no answer to IN"
            pid = reply[0] & 0xF
            if pid == PID_NAK:
                await self.idle(8)
                continue
            assert pid in (PID_DATA0, PID_DATA1), f"IN answered with PID {pid:#x}"
            await self.idle(2)
            await self.send(bytes([pid_byte(PID_ACK)]))
            await self.idle(4)
            return pid, reply[1:-2]
        return None

    async def control_in(self, request_type, request, value, index, length):
        await self.setup(struct.pack("<BBHHH", request_type, request, value, index, length))
        data, expect = b"", PID_DATA1
        while len(data) < length:
            got = await self.in_packet(0)
            assert got is not None, "control IN data never came"
            pid, chunk = got
            assert pid == expect, f"data toggle {pid:#x}, expected {expect:#x}"
            expect ^= PID_DATA0 ^ PID_DATA1
            data += chunk
            if len(chunk) < 64:
                break
        await self.send(token(PID_OUT, self.addr, 0))     # status stage: zero-length OUT
        await self.idle(2)
        await self.send(data_packet(PID_DATA1, b""))
        reply = await self.receive()
        assert reply is not None and reply[0] & 0xF == PID_ACK, "status stage not ACKed"
        return data

    async def control_out(self, request_type, request, value, index=0):
        await self.setup(struct.pack("<BBHHH", request_type, request, value, index, 0))
        got = await self.in_packet(0)            # status stage: zero-length IN, DATA1
        assert got == (PID_DATA1, b""), f"status stage: {got!r}"

    async def enumerate(self, address=5):
        """Reset, read the device descriptor, set the address, read the configuration
        descriptor, select configuration 1. Returns (device, configuration) descriptors."""
        await self.bus_reset()
        device = await self.control_in(0x80, 6, 0x0100, 0, 18)
        await self.control_out(0x00, 5, address)
        self.addr = address
        head = await self.control_in(0x80, 6, 0x0200, 0, 9)
        config = await self.control_in(0x80, 6, 0x0200, 0, struct.unpack_from("<H", head, 2)[0])
        await self.control_out(0x00, 9, 1)
        return device, config

    async def out_packet(self, endpoint, pid, payload, corrupt_crc=False):
        """One OUT transaction: the handshake PID, or None when the device stays silent."""
        await self.send(token(PID_OUT, self.addr, endpoint))
        await self.idle(2)
        await self.send(data_packet(pid, payload, corrupt_crc))
        reply = await self.receive()
        await self.idle(4)
        return None if reply is None else reply[0] & 0xF
