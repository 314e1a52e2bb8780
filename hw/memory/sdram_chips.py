"""SDR SDRAM chips as data: geometry and timing rules, one dataclass instance per part.

The controller (:mod:`hw.memory.sdram`) and the simulation model (:mod:`sim.sdram_model`) both take
their numbers from here, so a chip is described once. Timings are minimum times in ns from the
datasheet's -7 speed grade; :meth:`SDRAMChip.cycles` turns them into whole clock cycles for a
given clock (rounding up, never below the datasheet's minimum clock count).

Sources (datasheet tables, read by hand):

- IS42S16160G-7 (ULX3S v3.0.x, 32 MB): ISSI "256Mb synchronous DRAM" key timing parameters and
  AC characteristics. -7 grade: CL=3 down to tCK 7 ns (143 MHz), CL=2 down to tCK 10 ns
  (100 MHz). tRC 60, tRAS 37 (max 100 us), tRCD 15, tRP 15, tRRD 14, tDPL (= tWR) 14 ns and at
  least 2 clocks, tMRD 2 clocks, auto-refresh cycle time = tRC. 8192 refreshes per 64 ms.
- AS4C32M16SB-7 (newer ULX3S, 64 MB): Alliance Memory table 16, -7 column. tRC 63, tRFC 63,
  tRCD 21, tRP 21, tRRD 14, tMRD 14, tRAS 42 (max 120 us), tWR 14; CL=2 at tCK >= 10 ns, CL=3 at
  tCK >= 7 ns. 8192 refreshes per 64 ms.
"""
import math
from dataclasses import dataclass, replace, fields

__all__ = ["SDRAMChip", "SDRAMTimings", "IS42S16160G", "AS4C32M16SB", "CHIPS", "get_chip"]


@dataclass(frozen=True)
class SDRAMTimings:
    """Clock-cycle form of a chip's rules at one clock frequency (all minimums, in cycles,
    counted between the clock edges at which the chip registers the two commands)."""
    clk_freq_hz: float
    cas_latency: int
    tRCD: int   # ACT -> READ/WRITE, same bank
    tRP: int    # PRE -> ACT/REF, same bank
    tRAS: int   # ACT -> PRE, same bank
    tRAS_max: int  # ACT -> PRE, same bank, upper bound
    tRC: int    # ACT -> ACT, same bank
    tRRD: int   # ACT -> ACT, different banks
    tWR: int    # last write data -> PRE, same bank
    tRFC: int   # REF -> any command
    tMRD: int   # MRS -> any command
    tREFI: float  # average REF interval (cycles, not rounded: 64 ms / 8192 rows)
    init_wait: int  # power-up NOP time before the first command


@dataclass(frozen=True)
class SDRAMChip:
    """Geometry and timing of one SDR SDRAM part.

    Parameters
    ----------
    name : str
        Part number, the key of :data:`CHIPS`.
    data_bits, bank_bits, row_bits, col_bits : int
        Geometry: data width, log2 of banks, rows per bank and columns per row.
    tRCD_ns, tRP_ns, tRAS_ns, tRAS_max_ns, tRC_ns, tRRD_ns, tWR_ns, tRFC_ns, tMRD_ns : float
        Minimum times in ns (``tRAS_max_ns`` is a maximum).
    tWR_ck, tMRD_ck : int
        Minimum clock counts that apply on top of the ns values.
    refresh_rows, refresh_period_ns : int, float
        ``refresh_rows`` REF commands are needed per ``refresh_period_ns``.
    init_wait_ns : float
        Power-up wait with NOPs before the first command.
    cl2_tck_min_ns, cl3_tck_min_ns : float
        Shortest clock period allowed at CAS latency 2 and 3.
    """
    name: str
    data_bits: int
    bank_bits: int
    row_bits: int
    col_bits: int
    tRCD_ns: float
    tRP_ns: float
    tRAS_ns: float
    tRAS_max_ns: float
    tRC_ns: float
    tRRD_ns: float
    tWR_ns: float
    tRFC_ns: float
    tMRD_ns: float
    tWR_ck: int = 2
    tMRD_ck: int = 2
    refresh_rows: int = 8192
    refresh_period_ns: float = 64e6
    init_wait_ns: float = 100e3
    cl2_tck_min_ns: float = 10.0
    cl3_tck_min_ns: float = 7.0

    @property
    def addr_bits(self) -> int:
        """Width of the A pins (rows and columns share them; A10 is the precharge-all flag)."""
        return max(self.row_bits, self.col_bits, 11)

    @property
    def words(self) -> int:
        return 1 << (self.bank_bits + self.row_bits + self.col_bits)

    @property
    def size_bytes(self) -> int:
        return self.words * self.data_bits // 8

    @property
    def tREFI_ns(self) -> float:
        return self.refresh_period_ns / self.refresh_rows

    def cas_latency(self, clk_freq_hz: float) -> int:
        """CAS latency 2 where the clock is slow enough for it, else 3.

        Raises
        ------
        ValueError
            If the clock is faster than the chip allows at CAS latency 3.
        """
        tck_ns = 1e9 / clk_freq_hz
        if tck_ns >= self.cl2_tck_min_ns:
            return 2
        if tck_ns >= self.cl3_tck_min_ns:
            return 3
        raise ValueError(f"{self.name}: clock {clk_freq_hz / 1e6:.1f} MHz is faster than the "
                         f"{1e3 / self.cl3_tck_min_ns:.1f} MHz the chip allows at CAS latency 3")

    def cycles(self, clk_freq_hz: float, init_wait_ns: float | None = None) -> SDRAMTimings:
        """Timings in clock cycles at ``clk_freq_hz`` (ceil of ns / tCK, at least 1).

        ``init_wait_ns`` overrides the power-up wait (simulations shorten it; the board must not).
        """
        if not clk_freq_hz > 0:
            raise ValueError(f"clk_freq_hz must be positive, not {clk_freq_hz!r}")
        tck = 1e9 / clk_freq_hz

        def ck(ns, minimum=1):
            # A tiny tolerance so that 15 ns at exactly 10 ns/cycle is 2 cycles, not 2.0000001.
            return max(minimum, math.ceil(ns / tck - 1e-9))

        wait = self.init_wait_ns if init_wait_ns is None else init_wait_ns
        return SDRAMTimings(
            clk_freq_hz=clk_freq_hz, cas_latency=self.cas_latency(clk_freq_hz),
            tRCD=ck(self.tRCD_ns), tRP=ck(self.tRP_ns), tRAS=ck(self.tRAS_ns),
            tRAS_max=int(self.tRAS_max_ns / tck), tRC=ck(self.tRC_ns), tRRD=ck(self.tRRD_ns),
            tWR=ck(self.tWR_ns, self.tWR_ck), tRFC=ck(self.tRFC_ns), tMRD=ck(self.tMRD_ns,
                                                                         self.tMRD_ck),
            tREFI=self.tREFI_ns / tck, init_wait=ck(wait))

    def with_timings(self, **changes) -> "SDRAMChip":
        """A copy with some fields changed (for deliberately wrong configurations in tests).

        Raises
        ------
        TypeError
            Naming an unknown field.
        """
        known = {f.name for f in fields(self)}
        for key in changes:
            if key not in known:
                raise TypeError(f"SDRAMChip has no field {key!r}; known: {sorted(known)}")
        return replace(self, **changes)


IS42S16160G = SDRAMChip(
    name="IS42S16160G", data_bits=16, bank_bits=2, row_bits=13, col_bits=9,
    tRCD_ns=15, tRP_ns=15, tRAS_ns=37, tRAS_max_ns=100e3, tRC_ns=60, tRRD_ns=14, tWR_ns=14,
    tRFC_ns=60, tMRD_ns=14)

AS4C32M16SB = SDRAMChip(
    name="AS4C32M16SB", data_bits=16, bank_bits=2, row_bits=13, col_bits=10,
    tRCD_ns=21, tRP_ns=21, tRAS_ns=42, tRAS_max_ns=120e3, tRC_ns=63, tRRD_ns=14, tWR_ns=14,
    tRFC_ns=63, tMRD_ns=14)

CHIPS = {chip.name: chip for chip in (IS42S16160G, AS4C32M16SB)}


def get_chip(name) -> SDRAMChip:
    """Look a chip up by part number (case-insensitive); an :class:`SDRAMChip` passes through.

    Raises
    ------
    KeyError
        Naming the unknown part and listing the known ones.
    """
    if isinstance(name, SDRAMChip):
        return name
    for key, chip in CHIPS.items():
        if isinstance(name, str) and key.lower() == name.strip().lower():
            return chip
    raise KeyError(f"unknown SDRAM chip {name!r}; known chips: {', '.join(sorted(CHIPS))}")
