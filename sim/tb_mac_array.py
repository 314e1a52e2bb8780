"""cocotb testbench of the engine's multiplier array (:class:`hw.engine.mac_array.MACArray`)
alone.

The bench plays the issue stage and the two RAMs (hw/engine/issue.py, the row buffer and the
weight RAM of hw/engine/layer_engine.py): a step issued in cycle ``t`` has its tags (``issue``,
``first``, ``last``, ``pend``, ``sel``, ``wslot``, ``nvalid``, ``g``) in ``t``, its tap
validity in ``t + 2`` (Q2) and its row-buffer and weight words in ``t + 4`` (the RAMs' data
of the addresses of Q3). Between steps it idles at random (``idle``), and in every cycle that
carries no step's field it drives random values on that field (the RAM outputs and the issue
stage's tags are then whatever they are). A group's first step issues only when ``can_issue``
allows it: the bench reads ``can_issue`` in the read-only phase of the cycle before and issues
no two first steps in consecutive cycles (the issue stage waits two cycles for each new
group's header), and it records a violation if ``can_issue`` is low in a cycle in which it
issued a first step. ``dense`` and ``max`` change only between parts, with the array drained
(``busy`` low), as a descriptor's registers do.

The result stream ``o`` is the head of the array's result FIFO and ``ready`` pops it (the
serializer's contract: it raises ``ready`` for one cycle only on a head it has seen, the cycle
after): the bench raises ``ready`` in cycle ``t + 1`` only if ``valid`` was high in ``t`` and
it did not pop in ``t``, and then only at random (``stall``, with long stalls now and then),
and records a violation if ``ready`` ever meets a low ``valid``. It checks ``busy`` high
whenever a group it started has not been popped, and low at the end; after the last result
it keeps ``ready`` low for ``drain_cycles`` and no further head may appear. A watchdog fails
a part that stops making progress.

A case (JSON file, path in ``$CASE``, written by tests/test_hw_mac_array.py) is a list of
parts: ``dense``, ``max`` and ``steps`` (each ``[first, last, pend, sel, wslot, nvalid, g,
valid_tap, rb, w]``, ``rb`` and ``w`` the RAM words as integers). The bench writes
``<case>.out.json``: per part the packed results in the order they were popped, the
violations, the steps not issued, ``busy`` at the end and the cycles in which ``can_issue``
held a first step back.
"""
import random

from sim.bench import clock_and_reset, load_case, save_result

TAGS = ("first", "last", "pend", "sel", "wslot", "nvalid", "g")


def _garbage(rng, dut, name):
    return rng.getrandbits(len(getattr(dut, name)))


async def run_part(dut, part, rng, case):
    from cocotb.triggers import ClockCycles, ReadOnly, RisingEdge

    dut.dense.value = part["dense"]
    dut.max.value = part["max"]
    await ClockCycles(dut.clk, 3)          # the mode's lane copies settle
    steps = part["steps"]
    n = len(steps)
    want_results = sum(s[1] for s in steps)
    idle, stall = case.get("idle", 0.3), case.get("stall", 0.3)
    q2, r = {}, {}             # cycle -> valid_tap; cycle -> (rb, w)
    k = cycle = 0
    gap = 0
    can_prev, first_prev = 0, True
    ready_next = 0
    started = popped = 0
    results, violations = [], []
    long_stall = held = 0
    limit = case.get("timeout_cycles", 40 * n + 2000)
    quiet = 0
    while quiet < case.get("drain_cycles", 30):
        # write phase: the step of this cycle, if any, and the fields of earlier steps
        issue = 0
        if k < n and gap == 0:
            s = steps[k]
            if not s[0] or (can_prev and not first_prev):
                issue = 1
            elif not can_prev:
                held += 1
        if issue:
            dut.issue.value = 1
            for name, v in zip(TAGS, s):
                getattr(dut, name).value = v
            q2[cycle + 2] = s[7]
            r[cycle + 4] = (s[8], s[9])
            k += 1
            gap = 0
            while rng.random() < idle:
                gap += 1
        else:
            dut.issue.value = 0
            for name in TAGS:          # the issue stage's tags between steps: anything
                getattr(dut, name).value = _garbage(rng, dut, name)
            gap = max(gap - 1, 0)
        dut.valid_tap.value = q2.pop(cycle, rng.getrandbits(1))
        rb, w = r.pop(cycle, (_garbage(rng, dut, "rb_data"), _garbage(rng, dut, "w_data")))
        dut.rb_data.value, dut.w_data.value = rb, w
        ready = ready_next
        dut.o__ready.value = ready
        await ReadOnly()
        if issue and steps[k - 1][0] and not int(dut.can_issue.value):
            violations.append(f"cycle {cycle}: first step of group issued with can_issue low")
        if started - popped > 0 and not int(dut.busy.value):
            violations.append(f"cycle {cycle}: busy low with {started - popped} groups "
                              f"not popped")
        valid = int(dut.o__valid.value)
        if ready:
            if valid:
                results.append(int(dut.o__payload.value))
            else:
                violations.append(f"cycle {cycle}: the bench popped an empty result FIFO")
        elif valid and len(results) >= want_results:
            violations.append(f"cycle {cycle}: a result head beyond the {want_results} "
                              f"expected")
        can_prev = int(dut.can_issue.value)
        first_prev = bool(issue and steps[k - 1][0])
        started += int(first_prev)
        popped += int(bool(ready and valid))
        # the next cycle's pop: a head seen now and not popped now, unless the sink stalls
        if long_stall:
            long_stall -= 1
        elif rng.random() < case.get("long_stall", 0.01):
            long_stall = rng.randint(10, 40)
        ready_next = int(valid and not ready and not long_stall and rng.random() >= stall
                         and len(results) < want_results)
        done = k == n and len(results) >= want_results and not q2 and not r
        quiet = quiet + 1 if done else 0
        await RisingEdge(dut.clk)
        cycle += 1
        if cycle > limit:
            raise AssertionError(f"MAC array: {n - k} of {n} steps not issued and "
                                 f"{want_results - len(results)} of {want_results} results "
                                 f"not out after {cycle} cycles")
    dut.o__ready.value = 0
    dut.issue.value = 0
    await ReadOnly()
    busy_end = int(dut.busy.value)
    await RisingEdge(dut.clk)
    return {"results": results, "violations": violations, "unissued": n - k,
            "busy_end": busy_end, "held": held, "cycles": cycle}


async def run_case(dut):
    case = load_case()
    rng = random.Random(case.get("seed", 1))
    await clock_and_reset(dut, ("issue", "o__ready", "dense", "max"))
    results = []
    for part in case["parts"]:
        results.append(await run_part(dut, part, rng, case))
    save_result({"parts": results})


try:
    import cocotb

    @cocotb.test()
    async def mac_array_case(dut):
        """Drive the case in $CASE through the multiplier array."""
        await run_case(dut)
except ImportError:     # pragma: no cover - imported outside a simulator
    pass
