"""cocotb tests of :mod:`hw.link.uart`, plus the bit-level UART model the link testbench reuses.

The device under test is :class:`UARTBench`: a transmitter, and a receiver fed either by that
transmitter (``loop = 1``) or by the ``rx`` pin that the Python model drives at any bit period.
Each test ends with :func:`drained`: every byte given to the transmitter was taken, and no byte
comes out of the receiver beyond those the test expected. ``UART_FAULT=extra_byte`` (a test of
the bench itself) makes the loopback test send one byte more than it expects: it must fail.
"""
import os
import random

import cocotb
from amaranth import *
from amaranth.lib import stream, wiring
from amaranth.lib.wiring import In, Out
from cocotb.clock import Clock
from cocotb.triggers import ClockCycles, FallingEdge, RisingEdge, Timer

from hw.link.uart import UARTRx, UARTTx
from sim.streams import StreamSink, StreamSource

CLK_PS = 10_000


class UARTBench(wiring.Component):
    """Test harness: ``i_stream -> UARTTx -> (loop ? tx : rx) -> UARTRx -> o_stream``."""
    i_stream: In(stream.Signature(8))
    o_stream: Out(stream.Signature(8))
    rx: In(1, init=1)
    tx: Out(1, init=1)
    loop: In(1)
    framing_errors: Out(8)
    overruns: Out(8)

    def __init__(self, divider):
        self.divider = divider
        super().__init__()

    def elaborate(self, platform):
        m = Module()
        m.submodules.utx = utx = UARTTx(self.divider)
        m.submodules.urx = urx = UARTRx(self.divider)
        wiring.connect(m, wiring.flipped(self.i_stream), utx.i_stream)
        wiring.connect(m, urx.o_stream, wiring.flipped(self.o_stream))
        m.d.comb += [self.tx.eq(utx.tx), urx.rx.eq(Mux(self.loop, utx.tx, self.rx))]
        with m.If(urx.framing_error):
            m.d.sync += self.framing_errors.eq(self.framing_errors + 1)
        with m.If(urx.overrun):
            m.d.sync += self.overruns.eq(self.overruns + 1)
        return m


class UartLine:
    """Host side of a UART at ``bit_ps`` picoseconds a bit: drives ``rx_pin``, decodes ``tx_pin``.

    Received bytes are appended to :attr:`received` (and handed to ``on_byte``); a low stop
    bit on ``tx_pin`` is an error of the device and fails the test.
    """

    def __init__(self, rx_pin, tx_pin, bit_ps, on_byte=None):
        self.rx_pin, self.tx_pin, self.bit_ps = rx_pin, tx_pin, bit_ps
        self.received = bytearray()
        self.on_byte = on_byte
        self.rx_pin.value = 1
        if tx_pin is not None:
            cocotb.start_soon(self._monitor())

    async def send_byte(self, byte, stop=1, bit_ps=None):
        bit = round(bit_ps or self.bit_ps)
        for level in [0, *((byte >> k) & 1 for k in range(8)), stop]:
            self.rx_pin.value = level
            await Timer(bit, unit="ps")
        self.rx_pin.value = 1
        if not stop:
            await Timer(bit, unit="ps")      # let the receiver see the line high again

    async def send(self, data, gap_ps=0, **kw):
        for byte in data:
            await self.send_byte(byte, **kw)
            if gap_ps:
                await Timer(gap_ps, unit="ps")

    async def _monitor(self):
        while True:
            await FallingEdge(self.tx_pin)
            await Timer(self.bit_ps // 2, unit="ps")
            assert int(self.tx_pin.value) == 0, "device tx: start bit not low at its middle"
            byte = 0
            for k in range(8):
                await Timer(self.bit_ps, unit="ps")
                byte |= int(self.tx_pin.value) << k
            await Timer(self.bit_ps, unit="ps")
            assert int(self.tx_pin.value) == 1, f"device tx: framing error after 0x{byte:02x}"
            self.received.append(byte)
            if self.on_byte:
                self.on_byte(byte)


async def start_bench(dut):
    cocotb.start_soon(Clock(dut.clk, CLK_PS, unit="ps").start())
    dut.rst.value = 1
    await ClockCycles(dut.clk, 3)
    dut.rst.value = 0
    await RisingEdge(dut.clk)


def divider():
    return int(os.environ["DIVIDER"])


async def drained(src, sink):
    """The drain checks: ``src`` (if any) had every byte taken, and ``sink`` stays silent for
    three byte times (a byte still in the transmitter or the receiver would show)."""
    window = 30 * divider()
    if src is not None:
        await src.assert_consumed(window)
    await sink.assert_silent(window)


@cocotb.test(timeout_time=20, timeout_unit="ms")
async def loopback_with_stalls(dut):
    """Random bytes tx -> rx with random idle on the source and back-pressure on the sink."""
    await start_bench(dut)
    dut.loop.value = 1
    rng = random.Random(3)
    data = [rng.randrange(256) for _ in range(150)] + [0x00, 0xFF, 0x55, 0xAA]
    # The receiver holds one byte: stalls must stay well below a byte time to avoid overruns.
    src = StreamSource(dut, "i_stream", dut.clk, idle_prob=0.5, seed=4)
    sink = StreamSink(dut, "o_stream", dut.clk, stall_prob=0.5, seed=5)
    extra = [0x5A] if os.environ.get("UART_FAULT") == "extra_byte" else []
    cocotb.start_soon(src.send(data + extra))
    got = await sink.receive(len(data))
    assert got == data, f"loopback mismatch at byte {next(i for i, (a, b) in enumerate(zip(got, data)) if a != b)}"
    await drained(src, sink)
    assert int(dut.framing_errors.value) == 0 and int(dut.overruns.value) == 0


@cocotb.test(timeout_time=20, timeout_unit="ms")
async def rx_baud_tolerance(dut):
    """The receiver decodes a host whose bit period is off, with bytes back to back.

    At divider 6 one cycle is 1/6 of a bit, so the sampling point cannot be centred better
    than half a cycle: measured, -3.0 % .. +1.5 % decode (negative: the host's bits are shorter);
    at the 3 Mbaud dividers of 16 or more the window is about +-4 %."""
    await start_bench(dut)
    dut.loop.value = 0
    rng = random.Random(7)
    sink = StreamSink(dut, "o_stream", dut.clk, stall_prob=0.2, seed=8)
    for err in (-0.025, -0.015, 0.0, 0.01, 0.015):
        line = UartLine(dut.rx, None, divider() * CLK_PS * (1 + err))
        data = [rng.randrange(256) for _ in range(24)]
        task = cocotb.start_soon(sink.receive(len(data)))
        await line.send(data)
        await ClockCycles(dut.clk, 20 * divider())
        assert task.done(), f"bit period error {err:+.0%}: bytes lost, sent {bytes(data).hex()}"
        got = task.result()
        assert got == data, f"bit period error {err:+.0%}: sent {bytes(data).hex()}, got {bytes(got).hex()}"
    await drained(None, sink)
    assert int(dut.framing_errors.value) == 0


@cocotb.test(timeout_time=20, timeout_unit="ms")
async def rx_glitch_framing_overrun(dut):
    """A short low glitch is no start bit; a low stop bit drops the byte and flags it; a byte
    arriving while the previous one is not taken is dropped and counted."""
    await start_bench(dut)
    dut.loop.value = 0
    bit = divider() * CLK_PS
    line = UartLine(dut.rx, None, bit)
    sink = StreamSink(dut, "o_stream", dut.clk, stall_prob=0.0)   # ready low until receive()
    # Glitch shorter than half a bit.
    dut.rx.value = 0
    await Timer(bit // 2 - 2 * CLK_PS, unit="ps")
    dut.rx.value = 1
    await Timer(3 * bit, unit="ps")
    await line.send_byte(0x3C, stop=0)          # framing error
    await line.send_byte(0xC3)
    await Timer(2 * bit, unit="ps")             # the receiver decides at the stop bit's middle
    assert int(dut.framing_errors.value) == 1, f"framing errors {int(dut.framing_errors.value)}"
    got = await sink.receive(1)
    assert got == [0xC3], f"expected only 0xC3 after the glitch and the framing error, got {got}"
    # Overrun: nobody takes 0x11, so 0x22 is dropped.
    await line.send([0x11, 0x22])
    await Timer(2 * bit, unit="ps")
    assert int(dut.overruns.value) == 1, f"overruns {int(dut.overruns.value)}"
    got = await sink.receive(1)
    assert got == [0x11], f"the held byte must survive an overrun, got {got}"
    await line.send([0x33])
    assert await sink.receive(1) == [0x33]
    await drained(None, sink)

