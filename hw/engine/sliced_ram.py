"""A wide on-chip RAM cut into slices, each read at its own copy of the address: ``SlicedRAM``.

    ram = SlicedRAM(width=512, depth=512, granularity=16, slice_bits=128)
    m.d.comb += ram.r_addr.eq(next_addr)      # the address, one cycle before it is used
    # ram.r_data: the word at next_addr of two cycles ago

The engine's weight RAM is 512 bits wide and its row buffer 256: 16 and 32 DP16KD across
the device. Read through one address register, that register's net reaches every block RAM,
and its routing (12.6 of 14.1 ns, measured on the ULX3S-85F with the USB link) limited the
engine clock. Here the address register is the RAM's own, one per slice of ``slice_bits``
(:func:`hw.engine.replicate.replicated`: copies that synthesis keeps apart), so each copy
feeds only its slice's block RAMs and nextpnr places it beside them.

Timing is that of a register followed by a synchronous read port: ``r_data`` is the word at
``r_addr`` two cycles earlier. Writes (``w``, a memory write port's signature) go to every
slice at once, each slice taking its part of ``data`` and ``en``.
"""
from amaranth import Cat, Module, unsigned
from amaranth.lib import wiring
from amaranth.lib.memory import Memory, WritePort
from amaranth.lib.wiring import In, Out
from amaranth.utils import ceil_log2

from hw.engine.replicate import replicated

__all__ = ["SlicedRAM", "slice_widths"]


def slice_widths(width, granularity, slice_bits):
    """The slices' widths: ``slice_bits`` each (a multiple of ``granularity``), the last the rest."""
    if width % granularity or slice_bits % granularity or slice_bits <= 0:
        raise ValueError(f"SlicedRAM: width {width} and slice_bits {slice_bits} must be positive "
                         f"multiples of the write granularity {granularity}")
    return [min(slice_bits, width - lo) for lo in range(0, width, slice_bits)]


class SlicedRAM(wiring.Component):
    """``width`` x ``depth`` RAM in slices of ``slice_bits``, each with its own address register.

    Members
    -------
    w : Out(WritePort.Signature)
        The write port (``addr``, ``data``, ``en`` per ``granularity`` bits), driven from outside.
    r_addr : In(addr_width)
        The read address; registered here, once per slice.
    r_data : Out(width)
        The word at ``r_addr`` two cycles ago.
    """

    def __init__(self, *, width, depth, granularity, slice_bits):
        self.width, self.depth, self.granularity = width, depth, granularity
        self.slices = slice_widths(width, granularity, slice_bits)
        addr_width = ceil_log2(depth)
        super().__init__({
            "w": Out(WritePort.Signature(addr_width=addr_width, shape=unsigned(width),
                                         granularity=granularity)),
            "r_addr": In(addr_width),
            "r_data": Out(width),
        })

    def elaborate(self, platform):
        m = Module()
        addrs = replicated(m, platform, self.r_addr, len(self.slices), "r_addr")
        data, lo = [], 0
        for i, (bits, addr) in enumerate(zip(self.slices, addrs)):
            mem = m.submodules[f"slice{i}"] = Memory(shape=unsigned(bits), depth=self.depth,
                                                     init=[])
            wp = mem.write_port(granularity=self.granularity)
            rp = mem.read_port()
            g0, ng = lo // self.granularity, bits // self.granularity
            m.d.comb += [wp.addr.eq(self.w.addr), wp.data.eq(self.w.data[lo:lo + bits]),
                         wp.en.eq(self.w.en[g0:g0 + ng]), rp.addr.eq(addr)]
            data.append(rp.data)
            lo += bits
        m.d.comb += self.r_data.eq(Cat(*data))
        return m
