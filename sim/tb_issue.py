"""cocotb testbench of the engine's issue stage (:class:`hw.engine.issue.IssueUnit`) alone.

The bench plays the sequencer and the loader: it writes each CONV's group headers through
``hdr_w``, sets the descriptor and the decoded inputs (``ce``, ``nslots``, ``ow_last``,
``dense``), pulses ``conv_start``, then per output row pulses ``row_start`` and waits for
``row_end``. What the contract leaves free is random: the idle cycles between rows (none at
all: ``row_start`` in the cycle after ``row_end``, as the sequencer may) and ``can_issue``
(the MAC array's result credits), low in random cycles.

Every cycle it samples the outputs and records each issued step: its tags in the issue
cycle (``first``, ``last``, ``pend``, ``sel``, ``wslot``, ``nvalid``, ``g``) and, two cycles
later, its Q2 outputs (``valid_tap``, ``rb_addr``, ``w_addr``, which the RAMs register). It
also records ``top`` and ``oy`` at each ``row_start`` and the steps of each row, and
as violations: a step issued outside a row, a group's first step issued while
``can_issue`` was low, a row that does not end. A case (JSON, path in ``$CASE``, written by
tests/test_hw_issue.py) is a list of convs; the result (``<case>.out.json``) is per conv the
steps and the rows, which the pytest side compares with its model of the issue order.
"""
import random

from sim.bench import clock_and_reset, load_case, save_result
from sim.streams import to_signed

STEP_TAGS = ("first", "last", "pend", "sel", "wslot", "nvalid", "g")
Q2_OUTPUTS = ("valid_tap", "rb_addr", "w_addr")
ROW_TIMEOUT = 20000      # cycles a row may take before the bench gives up on its row_end


class Bench:
    def __init__(self, dut, rng, stall):
        self.dut, self.rng, self.stall = dut, rng, stall
        self.cycle = 0
        self.steps, self.pending, self.violations = [], {}, []
        self.in_row = False
        self.row_end = False

    async def tick(self, row_start=0):
        """One cycle: random ``can_issue``, ``row_start``, sample the outputs, the clock edge.
        Returns ``top`` and ``oy`` of the cycle."""
        from cocotb.triggers import ReadOnly, RisingEdge
        dut = self.dut
        can = int(self.rng.random() >= self.stall)
        dut.can_issue.value = can
        dut.row_start.value = row_start
        await ReadOnly()
        top_oy = (to_signed(int(dut.top.value), 18), int(dut.oy.value))
        if int(dut.issue.value):
            step = {t: int(getattr(dut, t).value) for t in STEP_TAGS}
            if not self.in_row:
                self.violations.append(f"cycle {self.cycle}: a step issued outside a row")
            if step["first"] and not can:
                self.violations.append(f"cycle {self.cycle}: a group's first step issued "
                                       f"while can_issue was low")
            self.pending[self.cycle + 2] = step
            self.steps.append(step)
        step = self.pending.pop(self.cycle, None)
        if step is not None:
            step.update({o: int(getattr(dut, o).value) for o in Q2_OUTPUTS})
        self.row_end = bool(int(dut.row_end.value))
        await RisingEdge(dut.clk)
        self.cycle += 1
        return top_oy

    async def run_conv(self, conv):
        dut = self.dut
        for g, (nvalid, inlo, n_cig, wbase) in enumerate(conv["headers"]):
            dut.hdr_w__addr.value = g
            dut.hdr_w__data.value = nvalid | inlo << 16 | n_cig << 32 | wbase << 48
            dut.hdr_w__en.value = 0xF
            await self.tick()
        dut.hdr_w__en.value = 0
        dut.desc.value = conv["desc"]
        for name in ("ce", "nslots", "ow_last", "dense"):
            getattr(dut, name).value = conv[name]
        dut.nslots_last.value = conv["nslots"] - 1
        for _ in range(20):                # the descriptor's registers (slot bases) settle
            await self.tick()
        dut.conv_start.value = 1
        await self.tick()
        dut.conv_start.value = 0
        for _ in range(2):
            await self.tick()
        self.steps, rows = [], []
        for _ in range(conv["rows"]):
            for _ in range(self.rng.choice((0, 0, 1, 3))):
                await self.tick()
            self.in_row = True
            first_step = len(self.steps)
            top, oy = await self.tick(row_start=1)
            rows.append({"top": top, "oy": oy, "first_step": first_step})
            for _ in range(ROW_TIMEOUT):
                await self.tick()
                if self.row_end:
                    break
            else:
                self.violations.append(f"row {len(rows) - 1}: no row_end in {ROW_TIMEOUT} "
                                       f"cycles")
                break
            self.in_row = False
            rows[-1]["end_step"] = len(self.steps)
        for _ in range(4):                 # the last steps' Q2 outputs; nothing issues
            await self.tick()
        return {"steps": self.steps, "rows": rows}


async def run_case(dut):
    case = load_case()
    rng = random.Random(case["seed"])
    await clock_and_reset(dut, ("conv_start", "row_start", "can_issue", "hdr_w__en"))
    bench = Bench(dut, rng, case["stall"])
    convs = [await bench.run_conv(conv) for conv in case["convs"]]
    save_result({"convs": convs, "violations": bench.violations})


try:
    import cocotb

    @cocotb.test()
    async def issue_case(dut):
        """Drive the case in $CASE through the issue stage."""
        await run_case(dut)
except ImportError:     # pragma: no cover - imported outside a simulator
    pass
