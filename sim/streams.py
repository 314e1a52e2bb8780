"""cocotb drivers for ``amaranth.lib.stream`` interfaces, with random stalls and back-pressure.

Port names follow Amaranth's Verilog flattening: ``<stream>__valid``, ``<stream>__ready``,
``<stream>__payload``. Both drivers write their signals just after a rising edge and sample the
handshake in the read-only phase of the same cycle, so a transfer is counted exactly when
``valid and ready`` hold at the clock edge that follows.

Every bench ends with the drain checks: :meth:`StreamSource.assert_consumed` (the device took
every word it was given, within a few cycles) and :meth:`StreamSink.assert_silent` (with
``ready`` held high, nothing more comes out). :class:`DrainError` names the stream and the
count.
"""
import random

from cocotb.triggers import ReadOnly, RisingEdge


class DrainError(AssertionError):
    """A stream did not end where it should: input left unconsumed or output beyond the end."""


def to_signed(value: int, bits: int) -> int:
    return value - (1 << bits) if value >= 1 << (bits - 1) else value


class StreamSource:
    """Drives an input stream; before each word it idles (``valid`` low) with ``idle_prob``."""

    def __init__(self, dut, prefix, clk, idle_prob=0.3, seed=1):
        self.valid = getattr(dut, f"{prefix}__valid")
        self.ready = getattr(dut, f"{prefix}__ready")
        self.payload = getattr(dut, f"{prefix}__payload")
        self.clk, self.idle_prob = clk, idle_prob
        self.rng = random.Random(seed)
        self.valid.value = 0
        self.name = prefix
        self.given = 0       # words handed to send()
        self.sent = 0        # words the device took

    @property
    def left(self) -> int:
        """Words given to :meth:`send` that the device has not taken yet."""
        return self.given - self.sent

    async def send(self, words):
        words = list(words)
        self.given += len(words)
        await RisingEdge(self.clk)
        for word in words:
            while self.rng.random() < self.idle_prob:
                self.valid.value = 0
                await RisingEdge(self.clk)
            self.valid.value = 1
            self.payload.value = word
            while True:
                await ReadOnly()
                taken = int(self.ready.value)
                await RisingEdge(self.clk)
                if taken:
                    self.sent += 1
                    break
        self.valid.value = 0

    async def assert_consumed(self, cycles=64, what=""):
        """Within ``cycles`` clock cycles every word given to :meth:`send` must be taken."""
        for _ in range(cycles):
            if self.left == 0:
                return
            await RisingEdge(self.clk)
        if self.left:
            raise DrainError(f"{what or self.name}: {self.left} of {self.given} input words "
                             f"not consumed")


class StreamSink:
    """Collects payloads from an output stream; each cycle ``ready`` drops with ``stall_prob``."""

    def __init__(self, dut, prefix, clk, stall_prob=0.3, seed=2, signed_bits=None):
        self.valid = getattr(dut, f"{prefix}__valid")
        self.ready = getattr(dut, f"{prefix}__ready")
        self.payload = getattr(dut, f"{prefix}__payload")
        self.clk, self.stall_prob = clk, stall_prob
        self.rng = random.Random(seed)
        self.signed_bits = signed_bits
        self.ready.value = 0
        self.name = prefix

    async def receive(self, count):
        out = []
        await RisingEdge(self.clk)
        while len(out) < count:
            self.ready.value = int(self.rng.random() >= self.stall_prob)
            await ReadOnly()
            if int(self.valid.value) and int(self.ready.value):
                v = int(self.payload.value)
                out.append(to_signed(v, self.signed_bits) if self.signed_bits else v)
            await RisingEdge(self.clk)
        self.ready.value = 0
        return out

    async def assert_silent(self, cycles=64, what=""):
        """Hold ``ready`` high for ``cycles`` cycles: no word may come out (the expected count
        has been received). Leaves ``ready`` low."""
        self.ready.value = 1
        for _ in range(cycles):
            await ReadOnly()
            if int(self.valid.value):
                raise DrainError(f"{what or self.name}: an extra output word "
                                 f"{int(self.payload.value):#x} after the expected count")
            await RisingEdge(self.clk)
        self.ready.value = 0
