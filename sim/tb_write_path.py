"""cocotb testbench of the engine's write path (:class:`hw.engine.write_path.WritePath`) alone.

The bench plays the engine around it (hw/engine/layer_engine.py, sequencer.py): per part (one
descriptor) it sets the descriptor, ``is_conv`` and ``ow_last``, waits two cycles (the decoded
registers) and pulses ``init``; the elements are admitted by credit as the engine's users
admit them, then leave the post pipeline ``latency`` cycles later on ``elems`` and ``words``
(a word per element, or per odd element when the output is packed: two 8-bit elements, the
even one in the low byte), both always ready:

* ``launch`` (the serializer, a CONV): one element in a cycle after ``room > 10`` and with
  ``req_ok``, at random (``idle``);
* ``input`` (the INPUT unit): the same without ``req_ok``;
* ``reserve`` (the VEC unit): a chunk's elements at once when ``room >= n + 9`` and ``req_ok``
  (the sequencer's ``fits``), then the chunk's elements enter the pipeline with random gaps;
  the next chunk once they all have.

``room`` is read a cycle old (it is a register of the write path and the users compare a
register of it); ``req_ok`` is read a cycle old too (the users read it in their own cycle: the
request FIFO's margin of 13 requests covers the cycle). Reads (``read``: address and words)
start at random while none is being asked for, as the sequencer starts the next read once the
last one's commands are out. A part ends as the sequencer's ``NEXT`` ends a descriptor: once
``idle`` was high in the cycle before.

The memory: ``cmd.ready`` and ``w.ready`` drop at random (``cmd_stall``, ``w_stall``) and now
and then for a long run (``long_stall``). Each cycle the bench records every command and every
write word the memory takes and checks: a write word only for an accepted write command's
words; a write command only once all its words have reached the write path; a command of 1 to
``max_burst`` words; ``pool_c`` (the element's index in its pixel or chunk) and ``pool_first``
(no pixel or chunk of the descriptor has ended before it) with every element; ``reading``
exactly while words of the last read are still to be asked for; ``idle`` low while an
element is admitted and not yet written, a word is not yet written or a read is not yet
asked for. (A word counts from ``idle_word_lag`` cycles after it arrived: 1 is the stated
contract; the write FIFO's output register shows a word two cycles after it arrived, and
``idle``, which reads that register, is then high for one cycle with the word inside:
tests/test_hw_write_path.py has the case.) At the end ``cmd`` and ``w`` must stay silent
with ``ready`` high and ``idle`` high.

A case (JSON file, path in ``$CASE``, written by tests/test_hw_write_path.py): ``max_burst``,
``fifo_depth``, ``parts``: ``desc`` (packed), ``is_conv``, ``ow_last``, ``style``,
``latency``, ``chunk``, ``elems`` (``[data, last]``), ``words`` (per element: the word it
completes, or -1), ``reads`` (``[addr, n]``), ``hold_cmd``, ``hold_w`` (cycles of a memory stall
from the part's start, to fill the request FIFO or the write FIFO). The bench writes ``<case>.out.json``: per part
the write commands with their words, the read commands, the violations and how often the
credits held an admission back.
"""
import random

from sim.bench import clock_and_reset, load_case, save_result


class Memory:
    """The memory side: random ``ready`` on ``cmd`` and ``w``, long stalls now and then."""

    def __init__(self, dut, rng, case):
        self.dut, self.rng, self.case = dut, rng, case
        self.stall = {"cmd": 0, "w": 0}

    def drive(self, drain=False):
        for name, prob in (("cmd", self.case.get("cmd_stall", 0.3)),
                           ("w", self.case.get("w_stall", 0.3))):
            if drain:
                ready = 1
            elif self.stall[name]:
                self.stall[name] -= 1
                ready = 0
            elif self.rng.random() < self.case.get("long_stall", 0.005):
                self.stall[name] = self.rng.randint(20, 200)
                ready = 0
            else:
                ready = int(self.rng.random() >= prob)
            getattr(self.dut, f"{name}__ready").value = ready


async def run_part(dut, part, mem, rng, case, log):
    from cocotb.triggers import ClockCycles, ReadOnly, RisingEdge

    dut.desc.value = part["desc"]
    dut.is_conv.value = part["is_conv"]
    dut.ow_last.value = part["ow_last"]
    await ClockCycles(dut.clk, 2)            # the descriptor's decoded registers settle
    dut.init.value = 1
    await RisingEdge(dut.clk)
    dut.init.value = 0
    for name in ("cmd", "w"):          # a stall of the memory from the part's start
        mem.stall[name] = max(mem.stall[name], part.get(f"hold_{name}", 0))
    elems, words, reads = part["elems"], part["words"], part["reads"]
    n, style, latency, chunk = len(elems), part["style"], part["latency"], part["chunk"]
    max_burst, idle_p = case["max_burst"], case.get("idle", 0.3)
    arrive = {}                 # cycle -> element index
    entered = 0                 # elements into the pipeline
    reserved = 0                # elements reserved (reserve style)
    reserve_at = []             # cycles of the reserves, with their counts
    launches = []               # cycles of the launches
    arrived = pushed = written = 0
    read_asked = read_cmd_words = 0
    next_read, read_wait = 0, rng.randint(0, 20)
    w_cmds, r_cmds, w_words = [], [], []
    w_cmd_words = 0             # words of the write commands accepted
    violations = []
    room_prev, req_prev = 0, 0
    held_room = held_req = 0
    pool_c, pool_first = 0, 1
    cycle = 0
    idle_seen = next_seen = False
    limit = case.get("timeout_cycles", 200 * n + 3000)
    pushed_by = []              # words pushed up to and including each cycle
    word_lag = case.get("idle_word_lag", 1)
    while True:
        # write phase: admissions, arrivals, reads, the memory's ready
        launch = reserve = 0
        can_admit = rng.random() >= idle_p
        if style in ("launch", "input") and entered < n and can_admit:
            if room_prev <= 10:
                held_room += 1
            elif style == "launch" and not req_prev:
                held_req += 1
            else:
                launch = 1
        if style == "reserve" and can_admit and entered == reserved < n \
                and (not reserve_at or cycle - reserve_at[-1][0] > 1):
            want = min(chunk, n - reserved)
            if room_prev < want + 9:
                held_room += 1
            elif not req_prev:
                held_req += 1
            else:
                reserve = want
                reserved += want
                reserve_at.append((cycle, want))
        if launch or (style == "reserve" and entered < reserved and not reserve
                      and rng.random() >= idle_p):
            arrive[cycle + latency] = entered
            entered += 1
            if launch:
                launches.append(cycle)
        dut.launch.value = launch
        dut.reserve.value = reserve
        i = arrive.pop(cycle, None)
        dut.elems__valid.value = int(i is not None)
        dut.words__valid.value = int(i is not None and words[i] >= 0)
        if i is not None:
            dut.elems__payload.value = (elems[i][0] & 0xFFFF) | (elems[i][1] << 16)
            dut.words__payload.value = max(words[i], 0)
        else:
            dut.elems__payload.value = rng.getrandbits(17)
            dut.words__payload.value = rng.getrandbits(16)
        read = 0
        if next_read < len(reads) and read_asked == read_cmd_words:
            if read_wait:
                read_wait -= 1
            else:
                read = 1
                dut.read__payload.value = reads[next_read][0] | (reads[next_read][1] << 24)
                read_asked += reads[next_read][1]
                next_read += 1
                read_wait = rng.randint(2, 30)
        dut.read__valid.value = read
        mem.drive()
        read_n = reads[next_read - 1][1] if read else 0     # (counts from the next cycle)
        w_cmd_words_before = w_cmd_words
        await ReadOnly()
        # read-only phase: what the memory takes, and the contract checks
        r_cmd_now = 0
        if int(dut.cmd__valid.value) and int(dut.cmd__ready.value):
            p = int(dut.cmd__payload.value)
            addr, write, length = p & 0xFFFFFF, (p >> 24) & 1, p >> 25
            if not 1 <= length <= max_burst:
                violations.append(f"cycle {cycle}: a command of {length} words")
            if write:
                w_cmds.append([addr, length])
                w_cmd_words += length
                if w_cmd_words > pushed:
                    violations.append(f"cycle {cycle}: a write command of {length} words "
                                      f"with {pushed} of the {w_cmd_words} words of the "
                                      f"commands so far in the write path")
            else:
                r_cmds.append([addr, length])
                r_cmd_now = length
        if int(dut.w__valid.value) and int(dut.w__ready.value):
            if written >= w_cmd_words_before:
                violations.append(f"cycle {cycle}: write word {written} with only "
                                  f"{w_cmd_words_before} words of write commands accepted")
            w_words.append(int(dut.w__payload.value))
            written += 1
        if i is not None:
            got_c, got_f = int(dut.pool_c.value), int(dut.pool_first.value)
            if (got_c, got_f) != (pool_c, pool_first):
                violations.append(f"cycle {cycle}: element {i}: pool_c {got_c} pool_first "
                                  f"{got_f}, expected {pool_c} {pool_first}")
            pool_c, pool_first = (0, 0) if elems[i][1] else (pool_c + 1, pool_first)
        to_ask = read_asked - read_n - read_cmd_words
        reading = int(dut.reading.value)
        if reading != int(to_ask > 0):
            violations.append(f"cycle {cycle}: reading {reading} with {to_ask} read words "
                              f"to ask for")
        admitted = len([c for c in launches if c < cycle]) + \
            sum(k for c, k in reserve_at if c < cycle - 1)
        idle = int(dut.idle.value)
        queued = pushed_by[cycle - word_lag] if cycle >= word_lag else 0
        if idle and (admitted > arrived or queued > written or to_ask > 0):
            violations.append(f"cycle {cycle}: idle with {admitted - arrived} elements "
                              f"admitted, {queued - written} words not written, {to_ask} "
                              f"read words to ask for")
        room_prev, req_prev = int(dut.room.value), int(dut.req_ok.value)
        if i is not None:
            arrived += 1
            pushed += int(words[i] >= 0)
        pushed_by.append(pushed)
        read_cmd_words += r_cmd_now
        # the sequencer's NEXT: the drained condition as a register, from its second cycle
        done = arrived == n and next_read == len(reads) and not arrive
        if done and next_seen and idle_seen:
            break
        next_seen = done
        idle_seen = bool(idle) and not read       # (the sequencer's drained: no read starts)
        await RisingEdge(dut.clk)
        cycle += 1
        if cycle > limit:
            raise AssertionError(f"write path: {arrived} of {n} elements in, {written} of "
                                 f"{pushed} words written, {next_read} of {len(reads)} reads "
                                 f"({read_asked - read_cmd_words} words to ask for) after "
                                 f"{cycle} cycles")
    await RisingEdge(dut.clk)
    dut.read__valid.value = 0
    dut.elems__valid.value = dut.words__valid.value = 0
    log.append({"w_cmds": w_cmds, "w_words": w_words, "r_cmds": r_cmds,
                "violations": violations, "held_room": held_room, "held_req": held_req,
                "cycles": cycle})


async def run_case(dut):
    from cocotb.triggers import ReadOnly, RisingEdge

    case = load_case()
    rng = random.Random(case.get("seed", 1))
    await clock_and_reset(dut, ("init", "elems__valid", "words__valid", "launch", "reserve",
                                "read__valid", "cmd__ready", "w__ready"))
    mem = Memory(dut, random.Random(case.get("seed", 1) + 1), case)
    log = []
    for part in case["parts"]:
        await run_part(dut, part, mem, rng, case, log)
    # the drain: with the memory always ready nothing more may come out, and idle stays high
    extra = []
    for _ in range(case.get("drain_cycles", 40)):
        mem.drive(drain=True)
        await ReadOnly()
        for name in ("cmd", "w"):
            if int(getattr(dut, f"{name}__valid").value):
                extra.append(f"{name} {int(getattr(dut, f'{name}__payload').value):#x}")
        if not int(dut.idle.value):
            extra.append("idle low")
        await RisingEdge(dut.clk)
    save_result({"parts": log, "extra": extra[:8]})


try:
    import cocotb

    @cocotb.test()
    async def write_path_case(dut):
        """Drive the case in $CASE through the write path."""
        await run_case(dut)
except ImportError:     # pragma: no cover - imported outside a simulator
    pass
