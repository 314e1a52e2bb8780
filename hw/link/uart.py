"""8N1 UART receiver and transmitter as stream components.

The bit period is an integer number of clock cycles (``divider``), computed by
:func:`uart_divider` from the clock frequency and the baud rate; it refuses dividers too small to
validate a start bit at its middle and baud errors above 2 %.

The receiver oversamples: it watches the synchronised line every cycle, takes the falling edge of
the start bit as time zero, and decides each bit by a majority of three consecutive samples at the
middle of the bit. A start bit that is no longer low at its middle is a glitch and is ignored. A
low stop bit is a framing error: the byte is dropped, ``framing_error`` pulses and the receiver
waits for the line to go high again (a break does not turn into a string of zero bytes).
"""
from amaranth import *
from amaranth.lib import stream, wiring
from amaranth.lib.wiring import In, Out

__all__ = ["uart_divider", "UARTRx", "UARTTx", "MIN_DIVIDER"]

#: Below 4 cycles a bit, the three samples of the majority vote do not fit inside one bit.
MIN_DIVIDER = 4


def uart_divider(clk_freq: float, baud: float, max_error: float = 0.02) -> int:
    """Clock cycles per bit for ``baud`` at ``clk_freq`` Hz.

    Raises
    ------
    ValueError
        If the divider is below :data:`MIN_DIVIDER` or the resulting baud rate is off by more
        than ``max_error``; the message names both the clock and the baud rate.
    """
    if clk_freq <= 0 or baud <= 0:
        raise ValueError(f"clock frequency and baud rate must be positive, not "
                         f"clk_freq={clk_freq!r}, baud={baud!r}")
    divider = round(clk_freq / baud)
    if divider < MIN_DIVIDER:
        raise ValueError(f"UART divider {clk_freq / baud:.2f} (clk_freq={clk_freq:g} Hz, "
                         f"baud={baud:g}) is below the minimum of {MIN_DIVIDER} cycles a bit; "
                         f"raise the clock or lower the baud rate")
    actual = clk_freq / divider
    error = abs(actual - baud) / baud
    if error > max_error:
        raise ValueError(f"UART baud error {error:.2%} above {max_error:.0%}: clk_freq="
                         f"{clk_freq:g} Hz / divider {divider} gives {actual:.0f} baud, not "
                         f"baud={baud:g}")
    return divider


def _check_divider(divider):
    if not isinstance(divider, int) or divider < MIN_DIVIDER:
        raise ValueError(f"UART divider must be an integer of at least {MIN_DIVIDER}, "
                         f"not {divider!r}")


class UARTTx(wiring.Component):
    """8N1 transmitter.

    Parameters
    ----------
    divider : int
        Clock cycles a bit.

    Members
    -------
    i_stream : In(stream.Signature(8))
        Bytes to send; one is taken whenever the transmitter is idle.
    tx : Out(1)
        The serial line, high when idle.
    """
    i_stream: In(stream.Signature(8))
    tx: Out(1, init=1)

    def __init__(self, divider: int):
        _check_divider(divider)
        self.divider = divider
        super().__init__()

    def elaborate(self, platform):
        m = Module()
        shift = Signal(10, init=0x3FF)     # stop, data[7:0], start; LSB leaves first
        bits = Signal(range(11))           # bits still to send
        count = Signal(range(self.divider))

        m.d.comb += [self.tx.eq(shift[0]), self.i_stream.ready.eq(bits == 0)]
        with m.If(bits == 0):
            with m.If(self.i_stream.valid):
                m.d.sync += [shift.eq(Cat(C(0, 1), self.i_stream.payload, C(1, 1))),
                             bits.eq(10), count.eq(self.divider - 1)]
        with m.Elif(count == 0):
            m.d.sync += [shift.eq(Cat(shift[1:], C(1, 1))), bits.eq(bits - 1),
                         count.eq(self.divider - 1)]
        with m.Else():
            m.d.sync += count.eq(count - 1)
        return m


class UARTRx(wiring.Component):
    """8N1 receiver with start-bit validation and a framing-error flag.

    Parameters
    ----------
    divider : int
        Clock cycles a bit.

    Members
    -------
    rx : In(1)
        The serial line (asynchronous: synchronised here).
    o_stream : Out(stream.Signature(8))
        Received bytes. A byte is held until taken; a byte completing while the previous one
        is still held is dropped and ``overrun`` pulses.
    framing_error : Out(1)
        One-cycle pulse: a byte's stop bit was low; the byte was dropped.
    overrun : Out(1)
        One-cycle pulse: a byte was dropped because ``o_stream`` was not ready.
    """
    rx: In(1, init=1)
    o_stream: Out(stream.Signature(8))
    framing_error: Out(1)
    overrun: Out(1)

    def __init__(self, divider: int):
        _check_divider(divider)
        self.divider = divider
        super().__init__()

    def elaborate(self, platform):
        m = Module()
        div = self.divider
        sync1 = Signal(init=1)
        line = Signal(init=1)
        hist = Signal(3, init=0b111)       # line in this cycle and the two before
        m.d.sync += [sync1.eq(self.rx), line.eq(sync1), hist.eq(Cat(line, hist[:2]))]
        # Majority of the three samples centred on the previous cycle.
        vote = (hist[0] & hist[1]) | (hist[1] & hist[2]) | (hist[0] & hist[2])

        count = Signal(range(div))
        nbit = Signal(range(9))
        data = Signal(8)

        with m.If(self.o_stream.ready):
            m.d.sync += self.o_stream.valid.eq(0)
        m.d.sync += [self.framing_error.eq(0), self.overrun.eq(0)]

        with m.FSM():
            with m.State("IDLE"):
                with m.If(~line):
                    m.d.sync += count.eq(0)
                    m.next = "START"
            with m.State("START"):
                m.d.sync += count.eq(count + 1)
                # Vote so that the three samples straddle the middle of the bit (measured:
                # at divider 6 a host 2.5 % fast or slow is still decoded back to back).
                with m.If(count == (div + 1) // 2 - 1):
                    with m.If(vote):
                        m.next = "IDLE"            # glitch, not a start bit
                    with m.Else():
                        m.d.sync += [count.eq(0), nbit.eq(0)]
                        m.next = "DATA"
            with m.State("DATA"):
                m.d.sync += count.eq(count + 1)
                with m.If(count == div - 1):
                    m.d.sync += [count.eq(0), data.eq(Cat(data[1:], vote)), nbit.eq(nbit + 1)]
                    with m.If(nbit == 7):
                        m.next = "STOP"
            with m.State("STOP"):
                m.d.sync += count.eq(count + 1)
                with m.If(count == div - 1):
                    with m.If(vote):
                        with m.If(self.o_stream.valid & ~self.o_stream.ready):
                            m.d.sync += self.overrun.eq(1)
                        with m.Else():
                            m.d.sync += [self.o_stream.valid.eq(1),
                                         self.o_stream.payload.eq(data)]
                        m.next = "IDLE"
                    with m.Else():
                        m.d.sync += self.framing_error.eq(1)
                        m.next = "BREAK"
            with m.State("BREAK"):
                with m.If(line):
                    m.next = "IDLE"
        return m
