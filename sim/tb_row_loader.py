"""cocotb testbench of the engine's row loader (:class:`hw.engine.row_loader.RowLoader`) alone.

The loader is lock-step with the sequencer: ``words`` is always ready (one word a cycle may
arrive, no back-pressure), ``start`` and ``base`` come from the sequencer, and the gate of the
word's channel is read from the channel RAM the loader addresses (``c`` out, ``gate`` in a cycle
later). The bench varies what that contract leaves free and checks what it promises:

* the words of a row arrive with random idle cycles between them (``idle``);
* a row's ``start`` comes after random idle cycles, or (the row's ``merge``) in the very
  cycle of the previous row's last word (``start`` takes precedence over the counting: that
  word still belongs to the previous row), while the previous row's words are still in the
  pipeline;
* the channel RAM is modelled as a synchronous read (``gate`` in cycle ``t + 1`` is the entry
  at the ``c`` of cycle ``t``);
* the row buffer is modelled as a memory: every enabled lane of every write is recorded, and
  each word leaves a fixed number of cycles after it arrived (one write cycle per word);
  ``busy`` is high whenever a word is inside and low once the last one was written.

A case (JSON file, path in ``$CASE``, written by tests/test_hw_row_loader.py) is a list of
parts, one descriptor each: ``desc`` (packed descriptor), ``ce`` (entries a pixel), ``gates``
(the channel RAM) and ``rows`` (``base`` and ``words``). The bench writes
``<case>.out.json``: per part every lane write ``[addr, lane, value]``, the latencies and the
contract violations; the pytest side compares the row buffer with :mod:`quant.ops`.
"""
import random

from sim.bench import clock_and_reset, load_case, save_result


def schedule(rows, rng, idle):
    """Per cycle ``(base to start, or None; word, or None)``; a row with ``merge`` starts in
    the cycle of the previous row's last word."""
    sched = []
    for row in rows:
        if sched and row.get("merge"):
            sched[-1] = (row["base"], sched[-1][1])     # start with the previous last word
        else:
            while rng.random() < idle:
                sched.append((None, None))
            sched.append((row["base"], None))
        for word in row["words"]:
            while rng.random() < idle:
                sched.append((None, None))
            sched.append((None, word))
    return sched


async def run_part(dut, part, rng, case, lanes):
    from cocotb.triggers import ReadOnly, RisingEdge

    from sim.streams import to_signed

    gates = part["gates"]
    sched = schedule(part["rows"], rng, case.get("idle", 0.3))
    sched += [(None, None)] * case.get("drain_cycles", 24)
    writes, admitted, out_cycles, violations = [], [], [], []
    gate_next = 0
    for cycle, (base, word) in enumerate(sched):
        dut.gate.value = gate_next
        dut.start.value = int(base is not None)
        if base is not None:
            dut.base.value = base
        dut.words__valid.value = int(word is not None)
        if word is not None:
            dut.words__payload.value = word
            admitted.append(cycle)
        await ReadOnly()
        c = int(dut.c.value)
        gate_next = gates[c] if c < len(gates) else 0
        in_flight = len(admitted) - int(word is not None) - len(out_cycles)
        if in_flight > 0 and not int(dut.busy.value):
            violations.append(f"cycle {cycle}: busy low with {in_flight} words inside")
        en = int(dut.rb_w__en.value)
        if en:
            out_cycles.append(cycle)
            addr, data = int(dut.rb_w__addr.value), int(dut.rb_w__data.value)
            for lane in range(lanes):
                if en >> lane & 1:
                    writes.append([addr, lane, to_signed((data >> (16 * lane)) & 0xFFFF, 16)])
        await RisingEdge(dut.clk)
    dut.words__valid.value = 0
    dut.start.value = 0
    await ReadOnly()
    busy_end = int(dut.busy.value)
    await RisingEdge(dut.clk)
    lat = [o - a for a, o in zip(admitted, out_cycles)]
    return {"writes": writes, "words": len(admitted), "write_cycles": len(out_cycles),
            "latency": sorted(set(lat)), "violations": violations, "busy_end": busy_end}


async def run_case(dut):
    from cocotb.triggers import ClockCycles

    case = load_case()
    rng = random.Random(case.get("seed", 1))
    await clock_and_reset(dut, ("words__valid", "start", "gate"))
    results = []
    for part in case["parts"]:
        dut.desc.value = part["desc"]
        dut.ce.value = part["ce"]
        await ClockCycles(dut.clk, 2)          # the descriptor's decoded registers settle
        results.append(await run_part(dut, part, rng, case, case["lanes"]))
    save_result({"parts": results})


try:
    import cocotb

    @cocotb.test()
    async def row_loader_case(dut):
        """Drive the case in $CASE through the row loader."""
        await run_case(dut)
except ImportError:     # pragma: no cover - imported outside a simulator
    pass
