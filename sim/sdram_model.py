"""Behavioural cocotb model of an SDR SDRAM chip that stores data and enforces its timing rules.

The model watches the controller's pad signals (``<prefix>__cs_n`` ... ``__dq_oe``, see
:class:`hw.memory.sdram.SDRAMPadsSignature`) at every falling clock edge: what it sees there is what the
chip registers at the next rising edge. Cycle ``n`` below is the index of that falling edge, so
two commands seen at cycles ``n1`` and ``n2`` are ``n2 - n1`` chip clocks apart.

Read data of a READ seen at cycle ``n`` is put on ``dq_i`` at falling edge ``n + CL`` and held
for one cycle, so the controller captures it at the rising edge ``CL`` clocks after the chip
registered the READ, as on the real part. While the chip does not drive the bus, ``dq_i`` carries
random bits, so a controller that samples at the wrong cycle reads garbage.

Rules enforced (each violation names the rule, the cycle and the bank):

=====================  ======================================================================
``power-up wait``      no command before ``init_wait`` cycles of NOPs
``init``               ACT/READ/WRITE before PRECHARGE ALL, ``init_refreshes`` REFs and MRS
``tRCD``               ACT -> READ/WRITE, same bank
``tRP``                PRE -> ACT/REF/MRS, same bank
``tRAS`` / ``tRAS_max``  ACT -> PRE, same bank, minimum / maximum
``tRC``                ACT -> ACT, same bank
``tRRD``               ACT -> ACT, any two banks
``tWR``                last write data -> PRE, same bank
``tRFC``               REF -> any command
``tMRD``               MRS -> any command
``tREF``               refresh debt: REFs owed (elapsed time / tREFI since init) minus REFs
                       done may not exceed ``max_postponed_refreshes`` (JEDEC allows 8; every
                       row then still sees a REF within 64 ms). The rule runs in simulated
                       time at the true tREFI; nothing is scaled.
``bank not active``    READ/WRITE to a bank with no open row
``bank active``        ACT to a bank that already has an open row
``banks open``         REF or MRS while a bank may be open
``bus contention``     controller drives DQ in or next to a cycle in which the chip drives it
``write data``         WRITE beat without ``dq_oe``
``undefined read``     read data driven for a word never written nor loaded (the chip's
                       content is then random bits, which the data also are)
=====================  ======================================================================

Bursts: BL 1, 2, 4, 8 with sequential order (READ/WRITE/PRE interrupt a burst as in the
datasheet); full-page bursts and interleaved order are not modelled and raise at MRS.
DQM masks write bytes; read masking is not modelled (the controller keeps DQM low).
"""
import random
from dataclasses import dataclass

import cocotb
from cocotb.triggers import FallingEdge

from hw.memory.sdram_chips import get_chip

__all__ = ["SDRAMViolation", "SDRAMModel"]


@dataclass
class SDRAMViolation(Exception):
    rule: str
    cycle: int
    bank: object
    message: str

    def __str__(self):
        return (f"SDRAM rule {self.rule} violated at cycle {self.cycle}, bank {self.bank}: "
                f"{self.message}")


_NOP, _BST, _READ, _WRITE, _ACT, _PRE, _REF, _MRS = (
    (1, 1, 1), (1, 1, 0), (1, 0, 1), (1, 0, 0), (0, 1, 1), (0, 1, 0), (0, 0, 1), (0, 0, 0))
_NAMES = {_NOP: "NOP", _BST: "BST", _READ: "READ", _WRITE: "WRITE", _ACT: "ACT", _PRE: "PRE",
          _REF: "REF", _MRS: "MRS"}


class _Bank:
    def __init__(self):
        self.active = None     # None: unknown (power-up), else bool
        self.row = None
        self.t_act = None
        self.t_pre = None
        self.t_wdata = None    # cycle of the last write beat


class SDRAMModel:
    """Timing-checking SDRAM chip model.

    Parameters
    ----------
    dut : cocotb handle
        Top level with ``clk`` and the pad ports.
    chip : SDRAMChip or str
    clk_freq_hz : float
        Must match the clock the testbench runs; timings are converted with the same rounding
        the controller uses (the chip's real minimums, not the controller's choices).
    prefix : str
        Port-name prefix of the pad signature.
    init_wait_ns : float, optional
        Power-up wait to demand (the datasheet's 100 us unless a test shortens it for both the
        controller and the model).
    init_refreshes : int
        REFs demanded before the chip counts as initialised (datasheet: 2).
    max_postponed_refreshes : int
        Refresh debt allowed before ``tREF`` fails (JEDEC: 8).
    raise_on_violation : bool
        Raise :class:`SDRAMViolation` at the first violation (fails the cocotb test), or only
        record it in :attr:`violations` (for tests that expect one).
    """

    def __init__(self, dut, chip, clk_freq_hz, *, prefix="pads", init_wait_ns=None,
                 init_refreshes=2, max_postponed_refreshes=8, raise_on_violation=True, seed=0):
        self.chip = get_chip(chip)
        self.t = self.chip.cycles(clk_freq_hz, init_wait_ns)
        self.dut = dut
        self.clk = dut.clk
        pin = lambda name: getattr(dut, f"{prefix}__{name}")
        self.cs_n, self.ras_n, self.cas_n, self.we_n = (pin(n) for n in
                                                         ("cs_n", "ras_n", "cas_n", "we_n"))
        self.ba, self.a, self.dqm = pin("ba"), pin("a"), pin("dqm")
        self.dq_o, self.dq_oe, self.dq_i = pin("dq_o"), pin("dq_oe"), pin("dq_i")
        self.cke = pin("clk_en")
        self.init_refreshes = init_refreshes
        self.max_postponed = max_postponed_refreshes
        self.raise_on_violation = raise_on_violation
        self.rng = random.Random(seed)
        self.mem = {}
        self.violations = []
        self.cycle = 0
        self.banks = [_Bank() for _ in range(1 << self.chip.bank_bits)]
        self.cas_latency = None
        self.burst_length = None
        self.initialised = False
        self.precharged_all = False
        self.refs_during_init = 0
        self.t_first_command = None
        self.t_ref = None
        self.t_mrs = None
        self.t_act_any = None
        self.t_init_done = None
        self.refs_after_init = 0
        self.ref_cycles = []
        self.max_ref_gap = 0
        self.command_counts = {name: 0 for name in _NAMES.values()}
        self.read_beats = {}     # cycle -> (bank, word, (row, col) if never written) driven
                                 # at that falling edge
        self.write_burst = None  # (bank, row, col0, beat, length)
        self._last_beat = None
        self._task = None

    # -- public --------------------------------------------------------------------------
    def start(self):
        self._task = cocotb.start_soon(self._run())
        return self

    def peek(self, word_addr):
        """Stored word at a controller word address ({row, bank, column}), or None."""
        c = self.chip
        col = word_addr & ((1 << c.col_bits) - 1)
        bank = (word_addr >> c.col_bits) & ((1 << c.bank_bits) - 1)
        row = word_addr >> (c.col_bits + c.bank_bits)
        return self.mem.get((bank, row, col))

    def load(self, word_addr, words):
        """Store 16-bit ``words`` from controller word address ``word_addr`` (the mapping of
        :meth:`peek`): a back door for tests that preload the memory instead of uploading."""
        c = self.chip
        for k, word in enumerate(words):
            a = word_addr + k
            col = a & ((1 << c.col_bits) - 1)
            bank = (a >> c.col_bits) & ((1 << c.bank_bits) - 1)
            self.mem[(bank, a >> (c.col_bits + c.bank_bits), col)] = int(word)

    def rules_seen(self):
        return sorted({v.rule for v in self.violations})

    # -- checking ------------------------------------------------------------------------
    def _violate(self, rule, bank, message):
        v = SDRAMViolation(rule, self.cycle, bank, message)
        self.violations.append(v)
        self.dut._log.error(str(v))
        if self.raise_on_violation:
            raise v

    def _since(self, rule, t_then, minimum, bank, what):
        if t_then is not None and self.cycle - t_then < minimum:
            self._violate(rule, bank, f"{what} {self.cycle - t_then} cycles after, "
                                      f"needs {minimum}")

    def _check_common(self, name):
        self._since("tRFC", self.t_ref, self.t.tRFC, "all", f"{name} after REF")
        self._since("tMRD", self.t_mrs, self.t.tMRD, "all", f"{name} after MRS")

    def _check_refresh_debt(self):
        if self.t_init_done is None:
            return
        owed = int((self.cycle - self.t_init_done) / self.t.tREFI)
        if owed - self.refs_after_init > self.max_postponed:
            self._violate("tREF", "all",
                          f"{owed} refreshes owed since init, {self.refs_after_init} done "
                          f"(at most {self.max_postponed} may be postponed)")
            self.refs_after_init = owed  # report once per missed refresh, not every cycle

    # -- main loop -----------------------------------------------------------------------
    async def _run(self):
        t = self.t
        while True:
            await FallingEdge(self.clk)
            n = self.cycle
            beat = self.read_beats.pop(n, None)
            self.dq_i.value = beat[1] if beat is not None else self.rng.getrandbits(
                self.chip.data_bits)
            if beat is not None and beat[2] is not None:
                self._violate("undefined read", beat[0], f"READ of (row {beat[2][0]}, column "
                                                         f"{beat[2][1]}), never written nor loaded")
            # The chip holds read data from the edge it launches it until tOH after the next
            # one, so the controller may not drive DQ in the beat's cycle or either neighbour.
            if int(self.dq_oe.value) and (beat is not None or self._last_beat == n - 1
                                          or (n + 1) in self.read_beats):
                self._violate("bus contention", beat[0] if beat else "-",
                              "controller drives DQ within a cycle of chip read data")
            if beat is not None:
                self._last_beat = n
            cmd = (int(self.ras_n.value), int(self.cas_n.value), int(self.we_n.value))
            if int(self.cs_n.value) or not int(self.cke.value):
                cmd = _NOP
            self._write_beat(cmd)
            if cmd != _NOP:
                self._command(cmd)
            if (n & 63) == 0:
                self._check_refresh_debt()
                for b, bank in enumerate(self.banks):
                    if bank.active and n - bank.t_act > t.tRAS_max:
                        self._violate("tRAS_max", b, f"row open for {n - bank.t_act} cycles")
                        bank.t_act = n
            self.cycle += 1

    def _write_beat(self, cmd):
        """Store the data of a running write burst (a new column command ends it)."""
        wb = self.write_burst
        if wb is None:
            return
        if cmd in (_READ, _WRITE, _BST, _PRE) and wb[3] > 0:
            self.write_burst = None
            return
        bank, row, col0, i, length = wb
        if not int(self.dq_oe.value):
            self._violate("write data", bank, "write beat without dq_oe")
        else:
            bl = length
            col = (col0 & ~(bl - 1)) | ((col0 + i) & (bl - 1))
            word = int(self.dq_o.value)
            mask = int(self.dqm.value)
            old = self.mem.get((bank, row, col), 0)
            for byte in range(self.chip.data_bits // 8):
                if mask >> byte & 1:
                    word = (word & ~(0xFF << 8 * byte)) | (old & (0xFF << 8 * byte))
            self.mem[(bank, row, col)] = word
            self.banks[bank].t_wdata = self.cycle
        self.write_burst = None if i + 1 >= length else (bank, row, col0, i + 1, length)

    def _command(self, cmd):
        name = _NAMES[cmd]
        self.command_counts[name] += 1
        n, t = self.cycle, self.t
        if self.t_first_command is None:
            self.t_first_command = n
            if n < t.init_wait:
                self._violate("power-up wait", "all",
                              f"first command ({name}) after {n} cycles, needs {t.init_wait}")
        self._check_common(name)
        ba = int(self.ba.value)
        a = int(self.a.value)
        if cmd in (_ACT, _READ, _WRITE) and not self.initialised:
            self._violate("init", ba, f"{name} before the init sequence completed")
        if cmd == _ACT:
            bank = self.banks[ba]
            if bank.active:
                self._violate("bank active", ba, f"ACT while row {bank.row} is open")
            self._since("tRP", bank.t_pre, t.tRP, ba, "ACT after PRE")
            self._since("tRC", bank.t_act, t.tRC, ba, "ACT after ACT")
            self._since("tRRD", self.t_act_any, t.tRRD, ba, "ACT after ACT (other bank)")
            row = a & ((1 << self.chip.row_bits) - 1)
            bank.active, bank.row, bank.t_act = True, row, n
            self.t_act_any = n
        elif cmd in (_READ, _WRITE):
            bank = self.banks[ba]
            if not bank.active:
                self._violate("bank not active", ba, f"{name} to a bank with no open row")
                return
            self._since("tRCD", bank.t_act, t.tRCD, ba, f"{name} after ACT")
            col = a & ((1 << self.chip.col_bits) - 1)
            if a >> 10 & 1:
                self._violate("auto precharge", ba, "auto precharge is not modelled")
            bl, cl = self.burst_length, self.cas_latency
            # A new column command cuts short the beats of an earlier READ that fall from
            # its own first data slot on.
            cut = n + cl if cmd == _READ else n
            for k in [k for k in self.read_beats if k >= cut]:
                del self.read_beats[k]
            if cmd == _READ:
                for i in range(bl):
                    c = (col & ~(bl - 1)) | ((col + i) & (bl - 1))
                    word = self.mem.get((ba, bank.row, c))
                    undefined = None
                    if word is None:
                        word = self.rng.getrandbits(self.chip.data_bits)
                        undefined = (bank.row, c)
                    self.read_beats[n + cl + i] = (ba, word, undefined)
                self.write_burst = None
            else:
                self.write_burst = (ba, bank.row, col, 0, bl)
                self._write_beat(_NOP)
        elif cmd == _PRE:
            targets = range(len(self.banks)) if a >> 10 & 1 else [ba]
            for b in targets:
                bank = self.banks[b]
                if bank.active:
                    self._since("tRAS", bank.t_act, t.tRAS, b, "PRE after ACT")
                    self._since("tWR", bank.t_wdata, t.tWR, b, "PRE after write data")
                    if n - bank.t_act > t.tRAS_max:
                        self._violate("tRAS_max", b, f"row open for {n - bank.t_act} cycles")
                if bank.active is not False:
                    bank.t_pre = n
                bank.active = False
                # Read beats of this bank later than CL - 1 cycles after the PRE are lost.
                for k in [k for k, (bb, *_) in self.read_beats.items()
                          if bb == b and k >= n + (self.cas_latency or 0)]:
                    del self.read_beats[k]
            if a >> 10 & 1:
                self.precharged_all = True
        elif cmd in (_REF, _MRS):
            for b, bank in enumerate(self.banks):
                if bank.active is not False:
                    self._violate("banks open", b, f"{name} while the bank may be open")
                self._since("tRP", bank.t_pre, t.tRP, b, f"{name} after PRE")
            if cmd == _REF:
                if self.t_ref is not None and self.initialised:
                    self.max_ref_gap = max(self.max_ref_gap, n - self.t_ref)
                self.t_ref = n
                self.ref_cycles.append(n)
                if self.initialised:
                    self.refs_after_init += 1
                else:
                    self.refs_during_init += 1
            else:
                self._mode_register(ba, a)
        elif cmd == _BST:
            self.read_beats = {k: v for k, v in self.read_beats.items()
                               if k < n + (self.cas_latency or 0) - 1}

    def _mode_register(self, ba, a):
        if ba != 0:
            self._violate("mode", ba, "extended mode registers are not modelled")
            return
        bl_code, interleaved, cl = a & 7, a >> 3 & 1, a >> 4 & 7
        if bl_code not in (0, 1, 2, 3) or interleaved:
            raise NotImplementedError(f"mode register {a:#x}: only sequential BL 1/2/4/8 are "
                                      "modelled")
        if cl not in (2, 3):
            self._violate("mode", "all", f"CAS latency {cl} is not 2 or 3")
        if cl < self.t.cas_latency:
            self._violate("mode", "all", f"CAS latency {cl} is too short for this clock "
                                         f"(needs {self.t.cas_latency})")
        self.cas_latency, self.burst_length = cl, 1 << bl_code
        if a >> 9 & 1:
            raise NotImplementedError("single-location write bursts are not modelled")
        self.t_mrs = self.cycle
        if not self.initialised:
            if self.refs_during_init < self.init_refreshes:
                self._violate("init", "all", f"MRS after {self.refs_during_init} REFs, needs "
                                             f"{self.init_refreshes}")
            self.initialised = True
            self.t_init_done = self.cycle
