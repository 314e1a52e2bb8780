"""cocotb testbench of the engine's element-wise unit (:class:`hw.engine.vec_unit.VecUnit`)
alone, on VEC descriptors.

The unit is lock-step with the sequencer: seven of its inputs are the sequencer's pulses and
levels (``start``, ``settle``, ``chunk``, ``chunk_done``, ``pool_start``, ``active``,
``pool_out``), and the sequencer reads the unit's chunk registers (``settled``, ``all_done``,
``fits``, ``next_n``, ``chunk_n``, ``a_addr``, ``b_addr``, ``c_last``, ``a_busy``) to decide
the next one. So the bench plays the sequencer's VEC states (hw/engine/layer_engine.py:
``VEC_PRE`` .. ``VEC_POOL_OUT``), one decision per cycle in which those registers are stable
(after each pulse it idles a cycle and reads them in that cycle's read-only phase): settle
until ``settled``, then a chunk once ``fits`` (the write FIFO's ``room``, held for the
decision) and ``req_ok``; for an add the chunk's other operand is written into the operand
buffer through ``buf_w`` with random gaps, then operand ``a`` arrives on ``rdata`` (``active``)
with random gaps, then ``chunk_done``; an average pool ends with ``pool_start`` once
``a_busy`` is low and ``C`` cycles of ``pool_out``. ``room`` is random in every other cycle
(so ``fits`` holds a chunk back). The channel RAM is a synchronous read (``chan_data`` in
cycle ``t + 1`` is the entry at the ``c`` of cycle ``t``). Every cycle the bench records each
operand on ``o``; it checks the chunk registers it reads (``next_n``, ``a_addr``,
``b_addr``), that ``c_last`` rises in the last ``pool_out`` cycle and not before, and
``busy`` low at the end. A watchdog fails a descriptor that stops making progress.

A case (JSON file, path in ``$CASE``, written by tests/test_hw_vec_unit.py) is a list of
parts: ``desc`` (packed), ``n``, ``C``, ``a`` and ``b`` (operand words), ``chan`` (the channel
RAM), ``a_addr``, ``b_addr``, ``pool``, ``add``. The bench writes ``<case>.out.json``.
"""
import random

from sim.bench import clock_and_reset, load_case, save_result


class Sequencer:
    """The bench's side of every cycle: inputs in the write phase, outputs in the read-only
    phase, then the edge."""

    PULSES = ("start", "settle", "chunk", "chunk_done", "pool_start", "active", "pool_out")

    def __init__(self, dut, part, rng, case):
        self.dut, self.part, self.rng, self.case = dut, part, rng, case
        self.chan = part["chan"]
        self.gate_next = 0
        self.room = 4096
        self.ops, self.violations = [], []
        self.cycle = 0
        self.limit = case.get("timeout_cycles", 40 * part["n"] + 1000)

    async def step(self, rdata=None, buf=None, hold_room=False, **pulses):
        from cocotb.triggers import ReadOnly, RisingEdge
        dut = self.dut
        for name in self.PULSES:
            getattr(dut, name).value = int(pulses.get(name, 0))
        dut.rdata__valid.value = int(rdata is not None)
        if rdata is not None:
            dut.rdata__payload.value = rdata
        dut.buf_w__en.value = int(buf is not None)
        if buf is not None:
            dut.buf_w__addr.value, dut.buf_w__data.value = buf
        dut.chan_data.value = self.gate_next
        if not hold_room:
            self.room = self.rng.choice([0, 8, 20, 40, 4096])
        dut.room.value = self.room
        await ReadOnly()
        c = int(dut.c.value)
        self.gate_next = self.chan[c] if c < len(self.chan) else 0
        if int(dut.o__valid.value):
            self.ops.append(int(dut.o__payload.value))
        seen = {name: int(getattr(dut, name).value) for name in
                ("settled", "all_done", "fits", "next_n", "chunk_n", "a_addr", "b_addr",
                 "c_last", "a_busy", "busy")}
        await RisingEdge(dut.clk)
        self.cycle += 1
        if self.cycle > self.limit:     # a watchdog: a unit that never settles, fits or
            raise AssertionError(           # drains fails the run instead of hanging it
                f"VEC unit: descriptor of {self.part['n']} elements not done after "
                f"{self.cycle} cycles ({len(self.ops)} operands out)")
        return seen

    async def idle(self, **kw):
        return await self.step(**kw)


async def run_part(dut, part, rng, case):
    seq = Sequencer(dut, part, rng, case)
    n, C, chunk = part["n"], part["C"], case["chunk"]
    idle, stall = case.get("idle", 0.3), case.get("no_req", 0.2)
    await seq.step(start=1)
    done = 0
    while True:
        # VEC_CHUNK: settle until settled (a pulse, then a cycle to read the registers)
        while True:
            seen = await seq.idle()
            if seen["settled"]:
                break
            await seq.step(settle=1)
        if seen["all_done"]:
            if done != n:
                seq.violations.append(f"all_done after {done} of {n} elements")
            break
        want_n = min(chunk, n - done)
        if seen["next_n"] != want_n or seen["a_addr"] != part["a_addr"] + done \
                or seen["b_addr"] != part["b_addr"] + done:
            seq.violations.append(
                f"after {done} elements: next_n {seen['next_n']} a_addr {seen['a_addr']} "
                f"b_addr {seen['b_addr']}, expected {want_n} {part['a_addr'] + done} "
                f"{part['b_addr'] + done}")
        # a chunk once the write FIFO has room (held two cycles: fits is a register of it)
        # and req_ok (a pool's elements write nothing)
        while True:
            await seq.step()
            await seq.step(hold_room=True)
            seen = await seq.step(hold_room=True)
            req_ok = rng.random() >= stall
            fits = seq.room >= want_n + 9
            if seen["fits"] != fits:
                seq.violations.append(f"fits {seen['fits']} with room {seq.room} for "
                                      f"{want_n} elements")
            if part["pool"] or (seen["fits"] and req_ok):
                break
        await seq.step(chunk=1, hold_room=True)
        if part["add"]:         # VEC_B: the other operand into the operand buffer
            for i in range(want_n):
                while rng.random() < idle:
                    await seq.idle()
                await seq.step(buf=(i, part["b"][done + i]))
        for i in range(want_n):  # VEC_A: operand a, then chunk_done
            while rng.random() < idle:
                await seq.step(active=1)
            await seq.step(active=1, rdata=part["a"][done + i])
        await seq.step(active=1, chunk_done=1)
        done += want_n
    if part["pool"]:
        while True:             # VEC_POOL: the elements have left, then C sums
            seen = await seq.idle()
            if not seen["a_busy"]:
                break
        await seq.step(pool_start=1)
        for c in range(C):
            seen = await seq.step(pool_out=1)
            if seen["c_last"] != (c == C - 1):
                seq.violations.append(f"pool channel {c}: c_last {seen['c_last']}")
    for _ in range(case.get("drain_cycles", 12)):
        seen = await seq.idle()
    return {"ops": seq.ops, "violations": seq.violations, "busy_end": seen["busy"],
            "cycles": seq.cycle}


async def run_case(dut):
    from cocotb.triggers import ClockCycles

    case = load_case()
    rng = random.Random(case.get("seed", 1))
    await clock_and_reset(dut, Sequencer.PULSES + ("rdata__valid", "buf_w__en", "is_conv",
                                                   "pool_en", "post__valid"))
    results = []
    for part in case["parts"]:
        dut.desc.value = part["desc"]
        await ClockCycles(dut.clk, 2)          # the descriptor's decoded registers settle
        results.append(await run_part(dut, part, rng, case))
    save_result({"parts": results})


try:
    import cocotb

    @cocotb.test()
    async def vec_unit_case(dut):
        """Drive the case in $CASE through the element-wise unit."""
        await run_case(dut)
except ImportError:     # pragma: no cover - imported outside a simulator
    pass
