"""cocotb testbench: hw.memory.sdram.SDRAMController against the timing-checking chip model.

Configured by the ``SDRAM_CASE`` environment variable (JSON): ``chip``, ``clk_mhz``,
``init_wait_ns``, ``burst_words``, and per test ``seed``, ``ops``, ``expect`` (a rule the model
must report, for deliberately mis-timed controllers), ``chip_ns`` (datasheet fields changed
for controller and model alike: a hypothetical part whose rule the controller's structure
cannot meet by accident), ``early`` (queue the commands during the init sequence, so the
first ACT follows the MRS as closely as the controller allows), ``bench_out`` (throughput
results file).
"""
import json
import os
import random

import cocotb
from cocotb.clock import Clock
from cocotb.triggers import ReadOnly, RisingEdge, with_timeout

from hw.memory.sdram_chips import get_chip
from sim.sdram_model import SDRAMModel
from sim.streams import StreamSink, StreamSource

CASE = json.loads(os.environ.get("SDRAM_CASE", "{}"))


def case_chip(case):
    """The case's part: its ``chip``, with the datasheet fields of ``chip_ns`` changed."""
    chip = get_chip(case["chip"])
    return chip.with_timings(**case["chip_ns"]) if case.get("chip_ns") else chip


class SDRAMBench:
    """Owns clock, reset, chip model and the three stream drivers of one controller."""

    def __init__(self, dut, idle_prob=0.3, stall_prob=0.3, seed=1):
        self.dut = dut
        self.chip = case_chip(CASE)
        self.clk_hz = CASE["clk_mhz"] * 1e6
        self.addr_bits = self.chip.bank_bits + self.chip.row_bits + self.chip.col_bits
        self.len_bits = CASE["burst_words"].bit_length()
        expect = CASE.get("expect")
        self.model = SDRAMModel(dut, self.chip, self.clk_hz, init_wait_ns=CASE["init_wait_ns"],
                                raise_on_violation=expect is None, seed=seed)
        self.cmd = StreamSource(dut, "port__cmd", dut.clk, idle_prob=idle_prob, seed=seed + 10)
        self.wr = StreamSource(dut, "port__w", dut.clk, idle_prob=idle_prob, seed=seed + 20)
        self.rd = StreamSink(dut, "port__r", dut.clk, stall_prob=stall_prob, seed=seed + 30)

    async def start(self):
        period_ps = 2 * round(0.5e12 / self.clk_hz)  # cocotb wants an even period
        Clock(self.dut.clk, period_ps, unit="ps").start()
        self.dut.rst.value = 1
        self.dut.pads__dq_i.value = 0
        self.model.start()
        for _ in range(4):
            await RisingEdge(self.dut.clk)
        self.dut.rst.value = 0
        if CASE.get("early"):      # the commands go in while the controller initialises
            return
        while not int(self.dut.init_done.value):
            await RisingEdge(self.dut.clk)

    def pack(self, addr, write, length):
        if length >= 1 << self.len_bits:
            raise ValueError(f"length {length} does not fit the command's length field")
        return addr | write << self.addr_bits | length << (self.addr_bits + 1)

    async def run(self, ops, timeout_us=20000):
        """Execute ``ops`` = [(write, addr, words_or_length)] in order; return read words."""
        cmds, wdata, nread = [], [], 0
        for write, addr, payload in ops:
            if write:
                cmds.append(self.pack(addr, 1, len(payload)))
                wdata.extend(payload)
            else:
                cmds.append(self.pack(addr, 0, payload))
                nread += payload
        tasks = [cocotb.start_soon(self.cmd.send(cmds)), cocotb.start_soon(self.wr.send(wdata))]
        reader = cocotb.start_soon(self.rd.receive(nread))
        for task in tasks:
            await with_timeout(task, timeout_us, "us")
        got = await with_timeout(reader, timeout_us, "us")
        return got

    async def drain(self, cycles=50):
        """Let the controller finish; then nothing may be left to read."""
        for _ in range(cycles):
            await RisingEdge(self.dut.clk)
        await self.cmd.assert_consumed(0, "command stream")
        await self.wr.assert_consumed(0, "write data stream")
        await ReadOnly()
        assert int(self.dut.port__r__valid.value) == 0, "read data left over after the test"
        assert int(self.dut.port__cmd__ready.value) == 1, "controller still busy"


def boundary_address(rng, chip, length):
    """An address near a row/bank boundary (half the time) or anywhere."""
    words = chip.words
    if rng.random() < 0.5:
        page = rng.randrange(words >> chip.col_bits)
        addr = (page << chip.col_bits) - rng.randrange(1, 64)
    else:
        addr = rng.randrange(words)
    return max(0, min(addr, words - length))


def random_ops(rng, chip, count, max_len, thrash=False):
    """Writes and read-backs at random boundary-crossing addresses; the reference memory.

    ``thrash``: short transfers to random rows of bank 0 instead, so rows open and close
    within a few cycles (provokes tRAS/tRC/tRP rules)."""
    ref = {}
    ops, expected = [], []
    regions = []
    for _ in range(count):
        if regions and rng.random() < 0.5:
            base, length = rng.choice(regions)
            start = base + rng.randrange(length)
            n = rng.randrange(1, base + length - start + 1)
            ops.append((0, start, n))
            expected.extend(ref[start + i] for i in range(n))
        else:
            if thrash:
                length = rng.randrange(1, 3)
                base = rng.randrange(1 << chip.row_bits) << (chip.col_bits + chip.bank_bits)
            else:
                length = rng.randrange(1, max_len + 1)
                base = boundary_address(rng, chip, length)
            words = [rng.getrandbits(chip.data_bits) for _ in range(length)]
            for i, w in enumerate(words):
                ref[base + i] = w
            regions.append((base, length))
            ops.append((1, base, words))
    return ops, expected, ref


def check_words(got, expected, what):
    assert len(got) == len(expected), f"{what}: {len(got)} words, expected {len(expected)}"
    bad = [i for i, (g, e) in enumerate(zip(got, expected)) if g != e]
    assert not bad, (f"{what}: {len(bad)} words differ, first at {bad[0]}: "
                     f"got {got[bad[0]]:#06x}, expected {expected[bad[0]]:#06x}")


@cocotb.test()
async def random_traffic(dut):
    """Random writes and read-backs across rows and banks, stalls and back-pressure."""
    seed = CASE.get("seed", 1)
    rng = random.Random(seed)
    tb = SDRAMBench(dut, seed=seed)
    await tb.start()
    ops, expected, ref = random_ops(rng, tb.chip, CASE.get("ops", 40), CASE.get("max_len", 600),
                                     CASE.get("thrash", False))
    if CASE.get("read_unwritten"):      # then a word never written: the model must catch it
        ops.append((0, next(a for a in range(tb.chip.words) if a not in ref), 1))
    got = await tb.run(ops)
    await tb.drain()
    expect = CASE.get("expect")
    if expect:
        assert expect in tb.model.rules_seen(), (
            f"expected the model to report {expect}, it reported {tb.model.rules_seen()}")
        dut._log.info(f"model reported {tb.model.rules_seen()} as expected")
        return
    check_words(got, expected, "read-back")
    # The chip's own contents agree too (catches writes to the wrong place that reads mirror).
    wrong = [a for a, w in ref.items() if tb.model.peek(a) != w]
    assert not wrong, f"{len(wrong)} words stored at wrong places, first address {wrong[0]:#x}"
    assert not tb.model.violations
    dut._log.info(f"{len(ops)} ops, {len(got)} words read back, commands "
                  f"{tb.model.command_counts}, REFs {len(tb.model.ref_cycles)}")


@cocotb.test()
async def refresh_during_long_transfer(dut):
    """A long write and a long read each get auto refreshes slipped into them."""
    rng = random.Random(7)
    tb = SDRAMBench(dut, seed=7)
    await tb.start()
    n = CASE.get("long_words", 6000)
    base = (3 << tb.chip.col_bits) - 100   # start near a row end, run through several rows
    words = [rng.getrandbits(16) for _ in range(n)]
    for op, check in (((1, base, words), None), ((0, base, n), words)):
        before = len(tb.model.ref_cycles)
        start = tb.model.cycle
        got = await tb.run([op])
        refs = [c for c in tb.model.ref_cycles[before:] if c > start]
        assert len(refs) >= 3, f"only {len(refs)} refreshes during a {n}-word transfer"
        if check is not None:
            check_words(got, check, "long read")
    await tb.drain()
    assert not tb.model.violations
    gap = tb.model.max_ref_gap
    assert gap <= tb.model.t.tREFI, f"longest REF gap {gap} cycles > tREFI {tb.model.t.tREFI}"
    dut._log.info(f"REFs {len(tb.model.ref_cycles)}, longest gap {gap} cycles")


@cocotb.test()
async def bench(dut):
    """Sustained throughput: source always valid, sink always ready."""
    tb = SDRAMBench(dut, idle_prob=0.0, stall_prob=0.0, seed=3)
    await tb.start()
    rng = random.Random(3)
    chip = tb.chip
    n = 8192
    base = 5 << chip.col_bits
    words = [rng.getrandbits(16) for _ in range(n)]
    rows = []

    async def measure(pattern, ops, count, check=None):
        start = tb.model.cycle
        got = await tb.run(ops)
        cycles = tb.model.cycle - start
        if check is not None:
            check_words(got, check, pattern)
        mbs = count * 2 / (cycles / tb.clk_hz) / 1e6
        rows.append({"chip": chip.name, "clk_mhz": CASE["clk_mhz"],
                     "cas_latency": tb.model.t.cas_latency, "pattern": pattern, "words": count,
                     "cycles": cycles, "mb_per_s": round(mbs, 1),
                     "efficiency": round(count / cycles, 4),
                     "refreshes": len(tb.model.ref_cycles)})
        dut._log.info(str(rows[-1]))

    await measure("write 1 x 8192 words", [(1, base, words)], n)
    await measure("read 1 x 8192 words", [(0, base, n)], n, words)
    await measure("write 32 x 256 words", [(1, base + i * 256, words[i * 256:(i + 1) * 256])
                                          for i in range(32)], n)
    await measure("read 32 x 256 words", [(0, base + i * 256, 256) for i in range(32)], n,
                  words)
    await measure("read 256 x 32 words", [(0, base + i * 32, 32) for i in range(256)], n,
                  words)
    await tb.drain()
    assert not tb.model.violations
    with open(CASE["bench_out"], "w") as f:
        json.dump(rows, f, indent=2)
