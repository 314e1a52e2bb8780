"""cocotb testbench of the engine's serializer (:class:`hw.engine.serializer.Serializer`) alone.

``results`` (the MAC array's result FIFO head) is a ready/valid stream: the bench drives it
with :class:`sim.streams.StreamSource` (random idle cycles, the payload held until taken).
The output ``o`` is always ready (the post pipeline takes one element a cycle); the
serializer's back-pressure is by credit: a launch needs ``room > 10`` one cycle earlier (the
room is a register inside) and ``req_ok`` in its own cycle. The bench drives ``room`` and
``req_ok`` at random every cycle (``no_room`` and ``no_req`` are the shares of cycles without
them) and checks the contract each cycle: no launch without the credit, an operand on ``o``
exactly one cycle after each launch and never otherwise, ``busy`` high while a lane is
leaving and low at the end; a watchdog fails a run that stops making progress. The lane
record RAM is written through ``lane_w`` first, one 16-bit quarter at a time with random
gaps, as the loader does.

A case (JSON file, path in ``$CASE``, written by tests/test_hw_serializer.py): ``records``
(``[address, 64-bit record]``), ``heads`` (packed result payloads), ``act``. The bench writes
``<case>.out.json``: every operand (packed), the violations and the heads not taken.
"""
import random

from sim.bench import clock_and_reset, load_case, save_result


async def run_case(dut):
    import cocotb
    from cocotb.triggers import ReadOnly, RisingEdge

    from sim.streams import StreamSource

    case = load_case()
    rng = random.Random(case.get("seed", 1))
    dut.act.value = case["act"]
    source = StreamSource(dut, "results", dut.clk, idle_prob=case.get("idle", 0.3),
                          seed=case.get("seed", 1) + 1)
    await clock_and_reset(dut, ("lane_w__en", "room", "req_ok"))
    for addr, record in case["records"]:
        for quarter in range(4):
            while rng.random() < case.get("idle", 0.3):
                dut.lane_w__en.value = 0
                await RisingEdge(dut.clk)
            dut.lane_w__addr.value = addr
            dut.lane_w__data.value = ((record >> (16 * quarter)) & 0xFFFF) * 0x0001000100010001
            dut.lane_w__en.value = 1 << quarter
            await RisingEdge(dut.clk)
    dut.lane_w__en.value = 0
    await RisingEdge(dut.clk)

    sender = cocotb.start_soon(source.send(case["heads"]))
    ops, violations = [], []
    room_prev = launch_prev = 0
    expected_ops = case["expected_ops"]
    quiet = cycle = 0
    limit = case.get("timeout_cycles", 100 * len(case["heads"]) + 1000)
    while quiet < case.get("drain_cycles", 40):
        if cycle > limit:       # a watchdog: a stuck head fails the run, naming how far it got
            raise AssertionError(f"serializer: {source.left} of {len(case['heads'])} heads "
                                 f"and {expected_ops - len(ops)} of {expected_ops} operands "
                                 f"still to go after {cycle} cycles")
        room = 0 if rng.random() < case.get("no_room", 0.3) else rng.randint(11, 4096)
        req_ok = int(rng.random() >= case.get("no_req", 0.2))
        if rng.random() < 0.1:
            room = rng.randint(0, 11)      # the edge of the credit
        dut.room.value = room
        dut.req_ok.value = req_ok
        await ReadOnly()
        launch, valid = int(dut.launch.value), int(dut.o__valid.value)
        if launch and not (room_prev > 10 and req_ok):
            violations.append(f"cycle {cycle}: launch with room {room_prev} a cycle before, "
                              f"req_ok {req_ok}")
        if valid != launch_prev:
            violations.append(f"cycle {cycle}: o.valid {valid} a cycle after launch "
                              f"{launch_prev}")
        if valid:
            ops.append(int(dut.o__payload.value))
        if (launch or valid) and not int(dut.busy.value):
            violations.append(f"cycle {cycle}: busy low with a lane leaving")
        room_prev, launch_prev = room, launch
        done = source.left == 0 and len(ops) >= expected_ops
        quiet = quiet + 1 if done else 0
        await RisingEdge(dut.clk)
        cycle += 1
    await sender
    dut.room.value = 0
    await ReadOnly()
    busy_end = int(dut.busy.value)
    save_result({"ops": ops, "violations": violations, "left": source.left,
                 "busy_end": busy_end, "cycles": cycle})


try:
    import cocotb

    @cocotb.test()
    async def serializer_case(dut):
        """Drive the case in $CASE through the serializer."""
        await run_case(dut)
except ImportError:     # pragma: no cover - imported outside a simulator
    pass
