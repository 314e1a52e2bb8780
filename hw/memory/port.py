"""The memory port: how every memory master (the engine, the host link) and every memory
(the SDRAM controller, the simulation memory, the arbiter's masters and bus) talk.

Three streams, seen from the master:

``cmd`` (out)
    ``addr`` (word address), ``write``, ``length`` (words, at least 1).
``w`` (out)
    The ``length`` words of a write command, after its command.
``r`` (in)
    The ``length`` words of a read command, in order.

A master has ``Out(MemoryPort(...))``, a memory ``In(MemoryPort(...))``, and
``wiring.connect`` joins them; it refuses ports of different widths.
"""
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

__all__ = ["ADDR_WIDTH", "LENGTH_WIDTH", "DATA_WIDTH", "MemoryPort", "command_layout"]

#: 24-bit word addresses: 16 M words, the ULX3S's 32 MB SDRAM.
ADDR_WIDTH = 24
#: 13 bits of length: the SDRAM controller's longest burst, 4096 words, fits.
LENGTH_WIDTH = 13
#: 16-bit words, the SDRAM's.
DATA_WIDTH = 16


def command_layout(addr_width: int = ADDR_WIDTH, length_width: int = LENGTH_WIDTH):
    """Payload of ``cmd``."""
    return data.StructLayout({"addr": addr_width, "write": 1, "length": length_width})


class MemoryPort(wiring.Signature):
    """A memory master's port: ``cmd`` and ``w`` out, ``r`` in (``In(...)`` on the memory).

    Parameters
    ----------
    addr_width, length_width, data_width : int
        Widths of ``cmd.addr``, ``cmd.length`` and the data words.
    """

    def __init__(self, addr_width=ADDR_WIDTH, length_width=LENGTH_WIDTH, data_width=DATA_WIDTH):
        for name, v in (("addr_width", addr_width), ("length_width", length_width),
                        ("data_width", data_width)):
            if not isinstance(v, int) or v < 1:
                raise ValueError(f"MemoryPort: {name} must be a positive integer, not {v!r}")
        self.addr_width, self.length_width, self.data_width = addr_width, length_width, \
            data_width
        super().__init__({
            "cmd": Out(stream.Signature(command_layout(addr_width, length_width))),
            "w": Out(stream.Signature(data_width)),
            "r": In(stream.Signature(data_width)),
        })

    @property
    def max_length(self) -> int:
        """The longest command, in words."""
        return (1 << self.length_width) - 1

    def __eq__(self, other):
        return isinstance(other, MemoryPort) and \
            (self.addr_width, self.length_width, self.data_width) == \
            (other.addr_width, other.length_width, other.data_width)

    def __hash__(self):
        return hash((MemoryPort, self.addr_width, self.length_width, self.data_width))

    def __repr__(self):
        return f"MemoryPort({self.addr_width}, {self.length_width}, {self.data_width})"
