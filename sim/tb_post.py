"""cocotb testbench of the engine's post pipeline (:class:`hw.engine.post.PostPipeline`) alone.

The pipeline is free-running and lock-step: its operand input ``i``, its element output ``o``
and its word output ``w`` are always ready (admission is by credits upstream, nothing stalls
inside). What the bench can vary, and checks, is the contract it states:

* operands arrive with random idle cycles between them (``idle``);
* the residual stream ``res`` (the residual FIFO's head, the one interface with a ``ready``)
  is filled with random gaps (``res_idle``) by a FIFO model, and an operand is admitted only
  once the residual word it needs is in the FIFO (the engine's credit: the residual row is
  read one output row ahead); a pop of the empty FIFO (``ready`` without ``valid``) is a
  contract violation the bench records;
* every element leaves a fixed number of cycles after it entered (one latency for all), and
  ``busy`` is high whenever an element is inside and low once the last one left.

A case (JSON file, path in ``$CASE``, written by tests/test_hw_post.py) is a list of parts,
one descriptor each: ``desc`` (the packed descriptor as one integer), ``table`` (activation
table words written through ``lut_w`` with random gaps before the elements, or absent),
``ops`` (packed :data:`hw.engine.post.Operands`), ``res`` (residual words). Each part starts
with an ``init`` pulse (the packing phases clear). The bench writes ``<case>.out.json``: per
part every ``o`` element (data, last), every ``w`` word, the latency of every element, the
contract violations and the words not consumed; the pytest side compares the values with
:mod:`quant.ops`, integer for integer.
"""
import random

from sim.bench import clock_and_reset, load_case, save_result


def _run_part(dut, part, rng, case):
    """The part's cycle loop (a coroutine): one pass of write phase, read-only phase, edge."""
    from cocotb.triggers import ReadOnly, RisingEdge

    from sim.streams import to_signed

    async def run():
        ops, res_words = part["ops"], part.get("res", [])
        n = len(ops)
        per_word = 2 if part.get("pack_res") else 1
        credit = part.get("credit", True)
        idle, res_idle = case.get("idle", 0.3), case.get("res_idle", 0.3)
        fifo, pushed = [], 0
        admitted, k = [], 0
        out, words, out_cycles = [], [], []
        violations = []
        drain = case.get("drain_cycles", 80)
        cycle = since_last = 0
        while k < n or pushed < len(res_words) or since_last < drain:
            # write phase: the residual FIFO model (a word may arrive) and the next operand
            if pushed < len(res_words) and rng.random() >= res_idle:
                fifo.append(res_words[pushed])
                pushed += 1
            dut.res__valid.value = int(bool(fifo))
            dut.res__payload.value = fifo[0] if fifo else 0
            go = (k < n and rng.random() >= idle
                  and (not credit or not res_words or pushed > k // per_word))
            dut.i__valid.value = int(go)
            if go:
                dut.i__payload.value = ops[k]
                admitted.append(cycle)
                k += 1
            await ReadOnly()
            in_flight = len(admitted) - int(go) - len(out)
            if in_flight > 0 and not int(dut.busy.value):
                violations.append(f"cycle {cycle}: busy low with {in_flight} elements inside")
            if int(dut.o__valid.value):
                v = int(dut.o__payload.value)
                out.append([to_signed(v & 0xFFFF, 16), v >> 16])
                out_cycles.append(cycle)
                if len(out) > len(admitted):
                    violations.append(f"cycle {cycle}: element {len(out)} out, "
                                      f"{len(admitted)} in")
            if int(dut.w__valid.value):
                words.append(int(dut.w__payload.value))
            if int(dut.res__ready.value):
                if fifo:
                    fifo.pop(0)
                else:
                    violations.append(f"cycle {cycle}: res popped while empty")
            if k == n and pushed == len(res_words):
                since_last += 1
            await RisingEdge(dut.clk)
            cycle += 1
        dut.i__valid.value = 0
        await ReadOnly()
        busy_end = int(dut.busy.value)
        await RisingEdge(dut.clk)
        lat = [o - a for a, o in zip(admitted, out_cycles)]
        return {"o": out, "w": words, "latency": sorted(set(lat)), "violations": violations,
                "busy_end": busy_end, "unsent": n - k, "res_left": len(fifo),
                "cycles": cycle}

    return run()


async def _write_table(dut, table, rng, idle):
    from cocotb.triggers import RisingEdge
    for addr, value in enumerate(table):
        while rng.random() < idle:
            dut.lut_w__en.value = 0
            await RisingEdge(dut.clk)
        dut.lut_w__en.value = 1
        dut.lut_w__addr.value = addr
        dut.lut_w__data.value = value
        await RisingEdge(dut.clk)
    dut.lut_w__en.value = 0


async def run_case(dut):
    from cocotb.triggers import ClockCycles, RisingEdge

    case = load_case()
    rng = random.Random(case.get("seed", 1))
    await clock_and_reset(dut, ("i__valid", "init", "res__valid", "lut_w__en"))
    results = []
    for part in case["parts"]:
        dut.desc.value = part["desc"]
        await ClockCycles(dut.clk, 2)          # the descriptor's decoded registers settle
        dut.init.value = 1
        await RisingEdge(dut.clk)
        dut.init.value = 0
        if part.get("table"):
            await _write_table(dut, part["table"], rng, case.get("idle", 0.3))
        results.append(await _run_part(dut, part, rng, case))
    save_result({"parts": results})


try:
    import cocotb

    @cocotb.test()
    async def post_case(dut):
        """Drive the case in $CASE through the post pipeline."""
        await run_case(dut)
except ImportError:     # pragma: no cover - imported outside a simulator
    pass
