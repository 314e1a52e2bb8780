"""cocotb testbench of the engine's INPUT op (:class:`hw.engine.input_unit.InputUnit`) alone.

The bench plays the sequencer and the write path (hw/engine/sequencer.py: ``DISPATCH`` pulses
``inp_start`` with ``go`` low, then ``INPUT`` holds ``go``) and the face stream: per part
(one INPUT descriptor) it sets the descriptor, waits two cycles (its decoded registers), pulses
``start`` and runs the op until the sequencer would leave ``INPUT`` (``more`` and ``o.valid``
low). ``i_stream`` carries the bytes of every part back to back and then bytes of a frame
that never comes (which no part may take): a byte is offered after random idle cycles
(``idle``) and held until taken. ``go`` drops at random (``no_go``), and ``room`` (the write
FIFO's credit, a register of the write path) takes random values around the unit's threshold
for random runs of cycles.

Each cycle the bench checks the unit's stated contract: ``i_stream.ready`` is exactly
``go`` and ``more`` and ``room > 10`` a cycle before; ``o.valid`` is exactly a byte taken;
``more`` is high exactly while a byte of the part is still owed. It records every operand
on ``o`` (packed). After a part it runs ``drain_cycles`` with ``go`` high and room, offering
the next byte: nothing may be taken.

A case (JSON file, path in ``$CASE``, written by tests/test_hw_input_unit.py): ``parts``
(``desc`` packed, ``n``), ``bytes`` (every part's bytes, then the extra ones). The bench
writes ``<case>.out.json``: per part the operands, the violations and the bytes taken, and
the bytes of the stream never taken.
"""
import random

from sim.bench import clock_and_reset, load_case, save_result

ROOMS = (0, 3, 9, 10, 11, 12, 40, 4096)


class Face:
    """The face stream: a byte offered after random idle cycles, held until taken."""

    def __init__(self, words, rng, idle):
        self.words, self.rng, self.idle = words, rng, idle
        self.pos = 0
        self.offered = False

    def drive(self, dut):
        if not self.offered and self.pos < len(self.words) and self.rng.random() >= self.idle:
            self.offered = True
        dut.i_stream__valid.value = int(self.offered)
        dut.i_stream__payload.value = self.words[self.pos] if self.offered else \
            self.rng.getrandbits(8)

    def taken(self):
        self.pos += 1
        self.offered = False


async def run_part(dut, part, face, rng, case):
    from cocotb.triggers import ClockCycles, ReadOnly, RisingEdge

    max_room = 2 * case["fifo_depth"]
    dut.desc.value = part["desc"]
    dut.go.value = 0
    await ClockCycles(dut.clk, 2)          # the descriptor's decoded registers settle
    n = part["n"]
    ops, violations = [], []
    taken = cycle = 0
    room = room_prev = 0
    run = 0
    started = False      # the cycle after start: more is defined
    drain = 0
    limit = case.get("timeout_cycles", 60 * n + 500)
    while drain < case.get("drain_cycles", 20):
        start = int(cycle == 0)
        dut.start.value = start
        if drain:                       # after the op: go and room, nothing may be taken
            go, room = 1, max_room
        else:
            go = int(not start and rng.random() >= case.get("no_go", 0.2))
            if run == 0:
                room, run = min(rng.choice(ROOMS), max_room), rng.randint(1, 6)
            run -= 1
        dut.go.value = go
        dut.room.value = room
        face.drive(dut)
        await ReadOnly()
        ready, valid = int(dut.i_stream__ready.value), int(dut.i_stream__valid.value)
        more, o_valid = int(dut.more.value), int(dut.o__valid.value)
        if started:
            owed = int(taken < n)
            if more != owed:
                violations.append(f"cycle {cycle}: more {more} with {taken} of {n} taken")
            want_ready = int(go and owed and room_prev > 10)
            if ready != want_ready:
                violations.append(f"cycle {cycle}: ready {ready}, expected {want_ready} (go "
                                  f"{go}, {taken} of {n} taken, room {room_prev} a cycle "
                                  f"before)")
        if o_valid != int(valid and ready):
            violations.append(f"cycle {cycle}: o.valid {o_valid} with i_stream valid {valid} "
                              f"ready {ready}")
        if o_valid:
            ops.append(int(dut.o__payload.value))
        if valid and ready:
            taken += 1
            face.taken()
        room_prev = room
        started = started or bool(start)
        # the sequencer leaves INPUT once no byte is owed and none is handed over
        if drain or (started and not start and not more and not o_valid and taken >= n):
            drain += 1
        await RisingEdge(dut.clk)
        cycle += 1
        if cycle > limit:
            raise AssertionError(f"INPUT unit: {taken} of {n} bytes taken after {cycle} cycles")
    dut.go.value = 0
    dut.i_stream__valid.value = 0
    return {"ops": ops, "violations": violations, "taken": taken, "cycles": cycle}


async def run_case(dut):
    case = load_case()
    rng = random.Random(case.get("seed", 1))
    await clock_and_reset(dut, ("start", "go", "room", "i_stream__valid"))
    face = Face(case["bytes"], random.Random(case.get("seed", 1) + 1), case.get("idle", 0.3))
    results = []
    for part in case["parts"]:
        results.append(await run_part(dut, part, face, rng, case))
    save_result({"parts": results, "left": len(case["bytes"]) - face.pos})


try:
    import cocotb

    @cocotb.test()
    async def input_unit_case(dut):
        """Drive the case in $CASE through the INPUT unit."""
        await run_case(dut)
except ImportError:     # pragma: no cover - imported outside a simulator
    pass
