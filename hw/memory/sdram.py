"""SDR SDRAM controller for the ULX3S (IS42S16160G, optionally AS4C32M16SB).

Design choices, and why:

- **Burst length 1, one column command per word.** The mode register is set to BL=1 and every
  word gets its own READ or WRITE command; SDR SDRAM accepts a new column every clock (tCCD = 1),
  so a streak of column commands moves one word per cycle, exactly as a page burst would. In
  exchange the controller never needs BURST TERMINATE, a stalled write-data stream simply
  becomes NOP cycles, read back-pressure simply withholds READ commands (credit counting against
  the read FIFO), and a refresh can be slipped in between any two words of a long transfer.
- **Open-page policy.** Each bank keeps its last row open; a row miss precharges that bank
  only. Rows never stay open longer than one refresh interval (every refresh closes all banks),
  far inside tRAS(max).
- **Address map** ``word address = {row, bank, column}``: a sequential stream that runs off the
  end of a row continues in the next bank, whose row is usually closed (ACT + tRCD, about 3
  cycles) rather than open with the wrong row (PRE + tRP + ACT + tRCD).
- **Registered pins.** Every pad output comes straight from a flip-flop (the ECP5 can pack them
  into the IO cells); ``dq_i`` is captured in ``read_pipeline`` register stages before use.
  READ data is expected at the clock edge ``CL`` cycles after the chip registers the command
  (the SDRAM clock pin must be in phase with, or slightly ahead of, the controller clock;
  the board top drives it, e.g. from an ODDRX1F or a PLL output).
- **Read-to-write turnaround**: the chip drives DQ for the cycle of each read word and holds it
  for tOH after; a WRITE is issued no earlier than CL + 2 cycles after the last READ, so the two
  drivers never overlap (no DQM masking needed).
- **Refresh**: a free-running timer requests an auto refresh every tREFI minus a margin that
  covers the worst wait for tRAS/tWR/read drain before the PRECHARGE ALL, so no refresh is ever
  postponed.

User interface (all in the controller's clock domain):

- ``port`` (``In(``:class:`hw.memory.port.MemoryPort` ``)``):
  ``port.cmd`` payload ``{addr, write, length}``: ``addr`` the first 16-bit word,
  ``write`` 1 for write, ``length`` number of words (0 is accepted and does nothing). Any length
  and start address is fine: a transfer may cross columns, rows and banks. Commands execute in
  order, one at a time.
  ``port.w`` (16 bits): exactly ``length`` words per write command, in address order.
  May stall at any time.
  ``port.r`` (16 bits): ``length`` words per read command, in address order. May be
  back-pressured at any time (a ``read_fifo_depth`` FIFO inside absorbs the in-flight words).
- ``init_done`` (Out): high once the power-up sequence is complete (commands are accepted
  before that but wait).
- ``pads``: see :class:`SDRAMPadsSignature`.

Run ``python -m hw.memory.sdram --bench`` for the measured throughput (build/sdram/throughput.json).
"""
import argparse
import json
import os

from amaranth.hdl import Array, Cat, Module, Mux, Signal
from amaranth.lib import fifo, wiring
from amaranth.lib.wiring import In, Out

from hw.memory.port import MemoryPort
from hw.memory.sdram_chips import SDRAMChip, get_chip

__all__ = ["SDRAMPadsSignature", "SDRAMController"]


class SDRAMPadsSignature(wiring.Signature):
    """The chip's pins as seen from the controller (controller drives ``Out`` members).

    Members
    -------
    clk_en : Out(1)
        CKE; held high.
    cs_n, ras_n, cas_n, we_n : Out(1)
        Command pins, active low.
    ba : Out(bank_bits)
        Bank address.
    a : Out(addr_bits)
        Row/column address; A10 selects "all banks" for PRECHARGE.
    dq_o, dq_oe, dq_i : Out(data_bits), Out(1), In(data_bits)
        Data bus split for a tristate buffer: drive ``dq_o`` when ``dq_oe``; ``dq_i`` is the pin.
    dqm : Out(data_bits // 8)
        Byte masks (high during initialisation, low afterwards).

    The SDRAM clock pin is not part of this signature; the board top drives it.
    """

    def __init__(self, chip: SDRAMChip):
        self.chip = chip
        super().__init__({
            "clk_en": Out(1, init=1),
            "cs_n": Out(1, init=0),
            "ras_n": Out(1, init=1),
            "cas_n": Out(1, init=1),
            "we_n": Out(1, init=1),
            "ba": Out(chip.bank_bits),
            "a": Out(chip.addr_bits),
            "dq_o": Out(chip.data_bits),
            "dq_oe": Out(1),
            "dq_i": In(chip.data_bits),
            "dqm": Out(chip.data_bits // 8, init=(1 << (chip.data_bits // 8)) - 1),
        })


# (ras_n, cas_n, we_n) with cs_n low.
_NOP = (1, 1, 1)
_ACT = (0, 1, 1)
_READ = (1, 0, 1)
_WRITE = (1, 0, 0)
_PRE = (0, 1, 0)
_REF = (0, 0, 1)
_MRS = (0, 0, 0)


class SDRAMController(wiring.Component):
    """Single-port SDR SDRAM controller with BL=1 column streaming and open rows.

    Parameters
    ----------
    chip : SDRAMChip or str
        The part (see :mod:`hw.memory.sdram_chips`).
    clk_freq_hz : float
        Controller (and SDRAM) clock; timings are converted to cycles for it and the CAS latency
        chosen by it.
    burst_words : int
        Largest ``length`` a command may carry (sets the width of the field).
    read_fifo_depth : int
        Words of read buffering; READs are issued only against free FIFO slots.
    init_wait_ns : float, optional
        Power-up wait; the chip's 100 us unless shortened for simulation.
    init_refreshes : int
        AUTO REFRESH commands in the init sequence (8 satisfies every part we know).
    refresh_interval_ns : float, optional
        Override of the refresh period (only for tests that must provoke a refresh violation).
    read_pipeline : int
        Register stages on ``dq_i`` (1 = capture register only).
    timing_overrides : dict, optional
        Cycle counts replacing the computed ones, e.g. ``{"tRCD": 1}``; for tests proving that
        the chip model catches violations. Never use on a board.

    Raises
    ------
    ValueError
        On a clock the chip cannot run at or a bad parameter, naming it.
    """

    def __init__(self, chip, clk_freq_hz, burst_words=4096, *, read_fifo_depth=32,
                 init_wait_ns=None, init_refreshes=8, refresh_interval_ns=None, read_pipeline=1,
                 timing_overrides=None):
        chip = get_chip(chip)
        if burst_words < 1:
            raise ValueError(f"burst_words must be at least 1, not {burst_words!r}")
        if read_fifo_depth < 4:
            raise ValueError(f"read_fifo_depth must be at least 4, not {read_fifo_depth!r}")
        if init_refreshes < 2:
            raise ValueError(f"init_refreshes must be at least 2, not {init_refreshes!r}")
        if read_pipeline < 1:
            raise ValueError(f"read_pipeline must be at least 1, not {read_pipeline!r}")
        if chip.data_bits % 8:
            raise ValueError(f"{chip.name}: data_bits must be a multiple of 8")
        self.chip = chip
        self.clk_freq_hz = clk_freq_hz
        self.burst_words = burst_words
        self.read_fifo_depth = read_fifo_depth
        self.init_refreshes = init_refreshes
        self.read_pipeline = read_pipeline
        self.timings = chip.cycles(clk_freq_hz, init_wait_ns)
        overrides = dict(timing_overrides or {})
        for key, value in overrides.items():
            if not hasattr(self.timings, key):
                raise ValueError(f"timing_overrides: unknown timing {key!r}")
        if overrides:
            from dataclasses import replace
            self.timings = replace(self.timings, **overrides)
        refi_cycles = (self.timings.tREFI if refresh_interval_ns is None
                       else refresh_interval_ns * clk_freq_hz / 1e9)
        # Worst wait between the refresh request and the REF command: tRAS of a just-opened
        # row or tWR, plus read drain, PRECHARGE ALL and tRP. A margin of 64 covers it.
        self.refresh_period = int(refi_cycles) - (64 if refresh_interval_ns is None else 0)
        if self.refresh_period < 32:
            raise ValueError(f"clock {clk_freq_hz!r} Hz is too slow for the refresh interval")
        super().__init__({
            "pads": Out(SDRAMPadsSignature(chip)),
            "port": In(MemoryPort(chip.bank_bits + chip.row_bits + chip.col_bits,
                                  burst_words.bit_length(), chip.data_bits)),
            "init_done": Out(1),
        })

    @property
    def mode_register(self) -> int:
        """BL=1, sequential, CAS latency, standard mode, programmed write burst length."""
        return self.timings.cas_latency << 4

    def elaborate(self, platform):
        m = Module()
        chip, t = self.chip, self.timings
        pads = self.pads
        cl = t.cas_latency
        nbanks = 1 << chip.bank_bits

        def command(cmd, ba=None, a=None):
            ras_n, cas_n, we_n = cmd
            stmts = [pads.ras_n.eq(ras_n), pads.cas_n.eq(cas_n), pads.we_n.eq(we_n)]
            if ba is not None:
                stmts.append(pads.ba.eq(ba))
            if a is not None:
                stmts.append(pads.a.eq(a))
            return stmts

        # Pins default to NOP with the bus released; branches below override. dq_o loads the
        # write stream's payload every cycle (it only matters when dq_oe is set), which keeps
        # the handshake logic off the enables of the 16 data flip-flops in the IO cells.
        m.d.sync += command(_NOP) + [pads.dq_oe.eq(0), pads.dq_o.eq(self.port.w.payload)]

        # Timing counters count down to 0; beside each, a register that says "it is 0" (the
        # command decision reads these flags, not a comparison on the counters).
        zero_of = {}

        def down_counter(name, limit, init=0):
            counter = Signal(range(max(limit, init, 1) + 1), name=name, init=init)
            zero = Signal(name=f"{name}_zero", init=init == 0)
            with m.If(counter != 0):
                m.d.sync += counter.eq(counter - 1)
            m.d.sync += zero.eq(counter <= 1)
            zero_of[id(counter)] = zero
            return counter

        def is_zero(counter):
            return zero_of[id(counter)]

        def set_counter(counters, zeros, index, value):
            """Load counter ``index`` of a bank Array (or a plain counter) with ``value``."""
            if index is None:
                return [counters.eq(value), is_zero(counters).eq(value == 0)]
            return [counters[index].eq(value), zeros[index].eq(value == 0)]

        def load(value):
            # A rule of N cycles between commands: the next command may be decided once the
            # counter reads 0, which is N - 1 cycles after it was loaded (see module docstring).
            return max(value - 1, 0)

        # Global: init wait, tRP after PRECHARGE ALL, tRFC after REF, tMRD after MRS.
        busy = down_counter("busy", max(t.init_wait, t.tRFC, t.tRP, t.tMRD),
                            init=load(t.init_wait))
        rrd = down_counter("rrd", t.tRRD)

        def per_bank(name, limit):
            counters = [down_counter(f"{name}{b}", limit) for b in range(nbanks)]
            return Array(counters), Array(is_zero(c) for c in counters)

        rcd, rcd_z = per_bank("rcd", t.tRCD)
        ras, ras_z = per_bank("ras", t.tRAS)
        rc, rc_z = per_bank("rc", t.tRC)
        rp, rp_z = per_bank("rp", t.tRP)
        wr, wr_z = per_bank("wr", t.tWR)
        open_ = Array(Signal(name=f"open{b}") for b in range(nbanks))
        open_row = Array(Signal(chip.row_bits, name=f"open_row{b}") for b in range(nbanks))

        # Current command.
        addr = Signal(chip.bank_bits + chip.row_bits + chip.col_bits)
        remaining = Signal(range(self.burst_words + 1))
        is_write = Signal()
        col = addr[:chip.col_bits]
        last_col = col == (1 << chip.col_bits) - 1
        bank = addr[chip.col_bits:chip.col_bits + chip.bank_bits]
        row = addr[chip.col_bits + chip.bank_bits:]

        # Read path: a bit per cycle since each READ, the data register chain and the FIFO.
        tap = cl + self.read_pipeline
        rd_pipe = Signal(max(tap, cl + 1) + 1)
        issue_read = Signal()
        m.d.sync += rd_pipe.eq(Cat(issue_read, rd_pipe[:-1]))
        dq_stages = [pads.dq_i]
        for i in range(self.read_pipeline):
            stage = Signal(chip.data_bits, name=f"dq_i_r{i}")
            m.d.sync += stage.eq(dq_stages[-1])
            dq_stages.append(stage)
        m.submodules.read_fifo = read_fifo = fifo.SyncFIFOBuffered(
            width=chip.data_bits, depth=self.read_fifo_depth)
        m.d.comb += [
            read_fifo.w_en.eq(rd_pipe[tap]),
            read_fifo.w_data.eq(dq_stages[-1]),
            self.port.r.valid.eq(read_fifo.r_rdy),
            self.port.r.payload.eq(read_fifo.r_data),
            read_fifo.r_en.eq(self.port.r.ready),
        ]
        credits = Signal(range(self.read_fifo_depth + 1), init=self.read_fifo_depth)
        credit_back = Signal()
        m.d.comb += credit_back.eq(self.port.r.valid & self.port.r.ready)
        m.d.sync += credits.eq(credits - issue_read + credit_back)
        # "a READ may go out": at least 2 credits a cycle ago (at most one READ a cycle), a
        # register; the FIFO's last place stays unused.
        credit_ok = Signal()
        m.d.sync += credit_ok.eq(credits >= 2)
        # No READ data on the bus in the cycle of a WRITE or the ones around it.
        bus_free_for_write = rd_pipe[:cl + 1] == 0

        # Refresh request timer (runs once init is done).
        ref_timer = Signal(range(self.refresh_period), init=self.refresh_period - 1)
        ref_pending = Signal()
        init_refs = Signal(range(self.init_refreshes + 1), init=self.init_refreshes)

        all_closable = Signal()
        m.d.comb += all_closable.eq(
            Cat(*[ras_z[b] & wr_z[b] for b in range(nbanks)]).all())

        with m.If(self.init_done):
            with m.If(ref_timer == 0):
                m.d.sync += [ref_timer.eq(self.refresh_period - 1), ref_pending.eq(1)]
            with m.Else():
                m.d.sync += ref_timer.eq(ref_timer - 1)

        # A column command for the current transfer goes out this cycle.
        word_issued = Signal()

        # Row hit of the current address, a register computed from the last cycle's address
        # and bank state. ACT (of the address's own row: hit) and PRECHARGE ALL (no hit) set
        # it directly, a single PRE only follows a miss; after a new command or a step into
        # the next row or bank the decision waits a cycle (addr_stale).
        hit = Signal()
        addr_stale = Signal(init=1)
        # remaining != 0 as a register, from the next value (issue decision, new command)
        has_words = Signal()
        m.d.sync += has_words.eq(Mux(word_issued, remaining != 1, remaining != 0))
        m.d.sync += [hit.eq(Array(open_[b] & (open_row[b] == row) for b in range(nbanks))[bank]),
                     addr_stale.eq(0)]

        precharge_all = [pads.a.eq(1 << 10), hit.eq(0)] + [open_[b].eq(0)
                                                           for b in range(nbanks)]

        with m.FSM(init="INIT_WAIT"):
            with m.State("INIT_WAIT"):
                with m.If(is_zero(busy)):
                    m.d.sync += command(_PRE) + precharge_all + set_counter(busy, None, None,
                                                                            load(t.tRP))
                    m.next = "INIT_REFRESH"

            with m.State("INIT_REFRESH"):
                with m.If(is_zero(busy)):
                    m.d.sync += command(_REF) + set_counter(busy, None, None, load(t.tRFC)) + [
                        init_refs.eq(init_refs - 1)]
                    with m.If(init_refs == 1):
                        m.next = "INIT_MODE"

            with m.State("INIT_MODE"):
                with m.If(is_zero(busy)):
                    m.d.sync += command(_MRS, ba=0, a=self.mode_register) + set_counter(
                        busy, None, None, load(t.tMRD)) + [pads.dqm.eq(0), self.init_done.eq(1)]
                    m.next = "READY"

            with m.State("REFRESH"):
                with m.If(is_zero(busy)):
                    m.d.sync += command(_REF) + set_counter(busy, None, None, load(t.tRFC)) + [
                        ref_pending.eq(0)]
                    m.next = "READY"

            with m.State("READY"):
                # Address pins load every cycle from a shallow function of the address (the
                # column if the bank is open: READ, WRITE, or PRE with A10 low; the row if it
                # is closed: ACT), keeping the command decision off their enables.
                m.d.sync += [pads.ba.eq(bank), pads.a.eq(Mux(open_[bank], col, row))]
                with m.If(~is_zero(busy)):
                    pass
                with m.Elif(ref_pending):
                    # Close everything once every open row may close and no read is in
                    # flight, then REF after tRP.
                    with m.If(all_closable & (rd_pipe == 0)):
                        m.d.sync += command(_PRE) + precharge_all + set_counter(
                            busy, None, None, load(t.tRP))
                        m.next = "REFRESH"
                with m.Elif(has_words & ~addr_stale):
                    with m.If(hit):
                        with m.If(rcd_z[bank]):
                            with m.If(is_write):
                                with m.If(self.port.w.valid & bus_free_for_write):
                                    m.d.comb += [self.port.w.ready.eq(1),
                                                 word_issued.eq(1)]
                                    m.d.sync += command(_WRITE) + set_counter(
                                        wr, wr_z, bank, load(t.tWR)) + [
                                        pads.dq_oe.eq(1), addr_stale.eq(last_col),
                                        addr.eq(addr + 1), remaining.eq(remaining - 1)]
                            with m.Elif(credit_ok):
                                m.d.comb += [issue_read.eq(1), word_issued.eq(1)]
                                m.d.sync += command(_READ) + [
                                    addr_stale.eq(last_col),
                                    addr.eq(addr + 1), remaining.eq(remaining - 1)]
                    with m.Elif(open_[bank]):
                        with m.If(ras_z[bank] & wr_z[bank]):
                            m.d.sync += command(_PRE) + set_counter(rp, rp_z, bank, load(t.tRP)) + [
                                open_[bank].eq(0)]
                    with m.Else():
                        with m.If(rp_z[bank] & rc_z[bank] & is_zero(rrd)):
                            m.d.sync += command(_ACT) + [
                                open_[bank].eq(1), open_row[bank].eq(row), hit.eq(1)] + \
                                set_counter(rcd, rcd_z, bank, load(t.tRCD)) + \
                                set_counter(ras, ras_z, bank, load(t.tRAS)) + \
                                set_counter(rc, rc_z, bank, load(t.tRC)) + \
                                set_counter(rrd, None, None, load(t.tRRD))

        # The next command is taken once the current one has issued its last word (a cycle
        # between commands: ``ready`` is a register compare, not the issue decision, so the
        # decision stays out of the command path of the arbiter and the masters). Commands
        # wait for init in the register.
        m.d.comb += self.port.cmd.ready.eq(remaining == 0)
        with m.If(self.port.cmd.valid & self.port.cmd.ready):
            # After the FSM so that these assignments win over the issue branch's.
            payload = self.port.cmd.payload
            m.d.sync += [addr.eq(payload.addr), is_write.eq(payload.write),
                         remaining.eq(payload.length), has_words.eq(payload.length != 0),
                         addr_stale.eq(1)]
        return m


def _bench(args):
    from sim.runner import run_cocotb
    out_dir = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(
        os.path.abspath(__file__)))), "build", "sdram")
    os.makedirs(out_dir, exist_ok=True)
    rows = []
    for mhz in args.mhz:
        dut = SDRAMController(args.chip, mhz * 1e6, burst_words=8192, init_wait_ns=2000)
        result_file = os.path.join(out_dir, f"bench_{args.chip}_{mhz:g}MHz.json")
        run_cocotb(dut, name=f"sdram_bench_{args.chip}_{mhz:g}".replace(".", "_"),
                   test_module="sim.tb_sdram", testcase="bench",
                   extra_env={"SDRAM_CASE": json.dumps({
                       "chip": args.chip, "clk_mhz": mhz, "init_wait_ns": 2000,
                       "burst_words": 8192, "bench_out": result_file})})
        with open(result_file) as f:
            rows.extend(json.load(f))
    path = os.path.join(out_dir, "throughput.json")
    with open(path, "w") as f:
        json.dump(rows, f, indent=2)
    print(f"{'chip':12} {'MHz':>6} {'CL':>3} {'pattern':28} {'words':>7} {'cycles':>7} "
          f"{'MB/s':>7} {'eff':>6}")
    for r in rows:
        print(f"{r['chip']:12} {r['clk_mhz']:6g} {r['cas_latency']:3d} {r['pattern']:28} "
              f"{r['words']:7d} {r['cycles']:7d} {r['mb_per_s']:7.1f} "
              f"{100 * r['efficiency']:5.1f}%")
    print(f"written {path}")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bench", action="store_true",
                        help="simulate sustained reads/writes and report throughput")
    parser.add_argument("--chip", default="IS42S16160G")
    parser.add_argument("--mhz", type=float, nargs="+", default=[100.0, 133.0])
    parser.add_argument("--verilog", metavar="FILE", help="write the controller as Verilog")
    args = parser.parse_args(argv)
    if args.bench:
        _bench(args)
    if args.verilog:
        from amaranth.back import verilog
        dut = SDRAMController(args.chip, args.mhz[0] * 1e6)
        with open(args.verilog, "w") as f:
            f.write(verilog.convert(dut, name="sdram_controller"))
    if not (args.bench or args.verilog):
        parser.print_help()


if __name__ == "__main__":
    main()
