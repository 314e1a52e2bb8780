# amaranth: UnusedElaboratable=no
"""The board design: the memory-port arbiter (Amaranth simulator, random stalls on every
stream), the engine top's wiring and its pre-synthesis estimate."""
import random

import pytest
from amaranth.sim import Simulator

from hw.memory.arbiter import MemoryArbiter

MEM_LATENCY = 3
MAX_CYCLES = 20000


def _memory_model(arb, mem, rng, log, cycles_busy):
    """The controller side: in-order commands (at most 2 queued), random ready on cmd and w,
    read data after a latency with random gaps, records (cycle, kind, addr) of every word."""
    bus = arb.bus

    async def tb(ctx):
        queue = []          # [write, addr, remaining, start_cycle]
        r_word = None       # (addr, value) presented on r
        cycle = 0
        while True:
            head = queue[0] if queue else None
            cmd_ready = len(queue) < 2 and rng.random() < 0.7
            ctx.set(bus.cmd.ready, cmd_ready)
            w_ready = bool(head and head[0] and head[2] and rng.random() < 0.7)
            ctx.set(bus.w.ready, w_ready)
            if r_word is None and head and not head[0] and head[2] and \
                    cycle - head[3] >= MEM_LATENCY and rng.random() < 0.7:
                r_word = (head[1], mem.get(head[1], (head[1] * 7) & 0xFFFF))
                head[1] += 1
                head[2] -= 1
            ctx.set(bus.r.valid, r_word is not None)
            if r_word is not None:
                ctx.set(bus.r.payload, r_word[1])
            (_, _, c_valid, c_addr, c_write, c_len, w_valid, w_data,
             r_ready) = await ctx.tick().sample(
                bus.cmd.valid, bus.cmd.payload.addr, bus.cmd.payload.write,
                bus.cmd.payload.length, bus.w.valid, bus.w.payload, bus.r.ready)
            cycle += 1
            if w_ready and w_valid:
                mem[head[1]] = w_data
                log.append((cycle, "w", head[1]))
                head[1] += 1
                head[2] -= 1
            if r_word is not None and r_ready:
                log.append((cycle, "r", r_word[0]))
                r_word = None
            if head is not None and head[2] == 0 and r_word is None:
                queue.pop(0)
                if queue:
                    queue[0][3] = cycle
            if c_valid and cmd_ready:
                queue.append([c_write, c_addr, c_len, cycle])
            cycles_busy[0] = cycle
    return tb


def _master(port, ops, rng, got, stall=0.3):
    """Three testbenches: commands in order, write words in order, read words in order."""
    async def cmds(ctx):
        for write, addr, length, _ in ops:
            while rng.random() < stall:
                await ctx.tick()
            ctx.set(port.cmd.payload.addr, addr)
            ctx.set(port.cmd.payload.write, write)
            ctx.set(port.cmd.payload.length, length)
            ctx.set(port.cmd.valid, 1)
            await ctx.tick().until(port.cmd.ready)
            ctx.set(port.cmd.valid, 0)

    async def wdata(ctx):
        for write, _, _, words in ops:
            if not write:
                continue
            for w in words:
                while rng.random() < stall:
                    await ctx.tick()
                ctx.set(port.w.payload, w)
                ctx.set(port.w.valid, 1)
                await ctx.tick().until(port.w.ready)
                ctx.set(port.w.valid, 0)

    async def rdata(ctx):
        n = sum(length for write, _, length, _ in ops if not write)
        while len(got) < n:
            ready = rng.random() >= stall
            ctx.set(port.r.ready, ready)
            _, _, valid, payload = await ctx.tick().sample(port.r.valid, port.r.payload)
            if valid and ready:
                got.append(payload)
        ctx.set(port.r.ready, 0)
    return cmds, wdata, rdata


def _program(rng, base, n_ops, max_len):
    """Random writes and reads in [base, base + 256); the expected read data, in order."""
    shadow, ops, expect = {}, [], []
    for _ in range(n_ops):
        length = rng.choice([0, 1, 2, rng.randint(1, max_len)])
        addr = base + rng.randrange(0, 256 - length + 1)
        if rng.random() < 0.5:
            words = [rng.randrange(1 << 16) for _ in range(length)]
            for i, w in enumerate(words):
                shadow[addr + i] = w
            ops.append((1, addr, length, words))
        else:
            ops.append((0, addr, length, None))
            expect += [shadow.get(a, (a * 7) & 0xFFFF) for a in range(addr, addr + length)]
    return ops, expect


def _run(seed, n_ops=40, max_len=12, allow_phases=None, stall=0.3, n_queue=4,
         register_bus=False):
    rng = random.Random(seed)
    arb = MemoryArbiter(2, addr_width=24, length_width=13, n_queue=n_queue,
                        register_bus=register_bus)
    progs = [_program(rng, base, n_ops, max_len) for base in (0x1000, 0x2000)]
    mem, log, busy = {}, [], [0]
    got = [[], []]
    sim = Simulator(arb)
    sim.add_clock(1e-8)
    sim.add_testbench(_memory_model(arb, mem, random.Random(seed + 1), log, busy),
                      background=True)
    for i, (ops, _) in enumerate(progs):
        for tb in _master(arb.masters[i], ops, random.Random(seed * 10 + i), got[i], stall):
            sim.add_testbench(tb)
    trace = []

    async def monitor(ctx):
        phase = 0
        while True:
            if allow_phases and phase < len(allow_phases) and \
                    busy[0] >= allow_phases[phase][0]:
                ctx.set(arb.allow, allow_phases[phase][1])
                phase += 1
            _, _, allow, r0, r1, grant = await ctx.tick().sample(
                arb.allow, arb.m0.cmd.ready, arb.m1.cmd.ready, arb.grant)
            trace.append((allow, r0, r1, grant))
            if len(trace) > MAX_CYCLES:
                raise AssertionError(f"no progress after {MAX_CYCLES} cycles (deadlock?)")
    sim.add_testbench(monitor, background=True)
    sim.run()
    return progs, got, log, trace


@pytest.mark.parametrize("seed,register_bus", [(1, False), (2, False), (3, False), (1, True),
                                               (2, True)])
def test_arbiter_moves_every_masters_data_intact(seed, register_bus):
    progs, got, log, _ = _run(seed, register_bus=register_bus)
    for i, (_, expect) in enumerate(progs):
        assert got[i] == expect, f"master {i}: read data differs"


@pytest.mark.parametrize("register_bus", [False, True])
def test_arbiter_without_stalls_and_single_queue(register_bus):
    progs, got, log, _ = _run(7, stall=0.0, n_queue=1, register_bus=register_bus)
    assert [g for g in got] == [e for _, e in progs]


def test_arbiter_allow_keeps_a_master_off_the_port():
    # Master 1 is kept off until cycle 300, then master 0 is kept off.
    progs, got, log, trace = _run(4, allow_phases=[(0, 0b01), (300, 0b10), (900, 0b11)])
    for i, (_, expect) in enumerate(progs):
        assert got[i] == expect
    assert not any(r1 for allow, r0, r1, _ in trace if not allow & 0b10)
    assert not any(r0 for allow, r0, r1, _ in trace if not allow & 0b01)


@pytest.mark.parametrize("register_bus", [False, True])
def test_arbiter_grant_is_command_granular(register_bus):
    """Between two words of one master on the bus, no word of the other master moves unless
    the first master's commands had all completed (its data of a command is contiguous)."""
    progs, got, log, _ = _run(5, max_len=30, register_bus=register_bus)
    owner = {}
    for i, (ops, _) in enumerate(progs):
        for write, addr, length, _ in ops:
            for a in range(addr, addr + length):
                owner[a] = i
    # Every command's words are contiguous on the bus: group the log into runs per owner and
    # check that each command's span lies inside one run.
    runs = []
    for cyc, kind, addr in log:
        o = owner[addr]
        if not runs or runs[-1][0] != o:
            runs.append([o, []])
        runs[-1][1].append((kind, addr))
    for i, (ops, _) in enumerate(progs):
        pos = {}
        for n, (o, words) in enumerate(runs):
            if o == i:
                for k, (kind, addr) in enumerate(words):
                    pos.setdefault(n, []).append((kind, addr))
        flat = [(n, kind, addr) for n, words in pos.items() for kind, addr in words]
        idx = 0
        for write, addr, length, _ in ops:
            if length == 0:
                continue
            span = flat[idx:idx + length]
            idx += length
            assert [a for _, _, a in span] == list(range(addr, addr + length))
            assert len({n for n, _, _ in span}) == 1, "a command's words were split"
    assert len(runs) > 4   # the port really changed hands


def test_arbiter_rejects_bad_parameters():
    with pytest.raises(ValueError, match="n must be"):
        MemoryArbiter(0)
    with pytest.raises(ValueError, match="n_queue"):
        MemoryArbiter(2, n_queue=0)


# -- the estimate: RTLIL census -----------------------------------------------------------------

def _known_design():
    from amaranth import Elaboratable, Module, Signal, signed
    from amaranth.lib.memory import Memory

    class Known(Elaboratable):
        def __init__(self):
            self.a = Signal(signed(8))
            self.b = Signal(signed(8))
            self.p = Signal(signed(16))
            self.count = Signal(32)
            self.q = Signal(16)

        def elaborate(self, platform):
            m = Module()
            a_r, b_r = Signal(signed(8)), Signal(signed(8))
            m.d.sync += [a_r.eq(self.a), b_r.eq(self.b), self.p.eq(a_r * b_r),
                         self.count.eq(self.count + 1)]
            m.submodules.big = big = Memory(shape=16, depth=1024, init=[])
            m.submodules.small = small = Memory(shape=8, depth=16, init=[])
            wb, rb = big.write_port(), big.read_port()
            ws, rs = small.write_port(), small.read_port()
            m.d.comb += [wb.addr.eq(self.count), wb.data.eq(self.p), wb.en.eq(1),
                         rb.addr.eq(self.count + 3), ws.addr.eq(self.count), ws.data.eq(a_r),
                         ws.en.eq(1), rs.addr.eq(self.count + 1),
                         self.q.eq(rb.data ^ rs.data)]
            return m
    d = Known()
    return d, [d.a, d.b, d.p, d.count, d.q]


def test_census_counts_a_known_design():
    from amaranth.back import rtlil
    from hw.board.top import rtlil_census
    d, ports = _known_design()
    c = rtlil_census(rtlil.convert(d, ports=ports))
    assert c["MULT18X18D"] == 1
    assert c["DP16KD"] == 1                           # 1024 x 16: one block at 18 x 1024
    assert c["memories"] == [[16, 1024, 1], [8, 16, 1]]   # width, depth, write lanes
    assert c["TRELLIS_DPR16X4"] == 2                      # 16 x 8: LUT RAM
    # 8 + 8 operand, 16 product, 32 counter registers, and the read ports' registers.
    assert 64 <= c["TRELLIS_FF"] <= 64 + 16 + 8 + 2
    assert c["LUT4"] >= 32                                # the counter's adder


def test_ebr_lanes_follow_the_write_granularity():
    from hw.board.top import ebr_lanes
    assert ebr_lanes(64, 16, 512) == 32     # two 16-bit lanes per 36-bit PDPW16KD
    assert ebr_lanes(16, 16, 2048) == 32    # 9 x 2048 DP16KD, two per lane
    assert ebr_lanes(1, 32, 1024) == 2


def test_sdram_read_latency_is_the_chips():
    from hw.board.boards import get_board
    from hw.board.top import sdram_read_latency
    b = get_board("ulx3s")
    assert 6 <= sdram_read_latency(b) <= 12


def test_engine_estimate_counts_what_is_built_and_the_fit_check_names_the_overrun():
    import dataclasses

    from hw.board.boards import get_board
    from hw.build.flow import FitError, fit_check
    from hw.board.top import engine_config, engine_resources
    b = get_board("ulx3s-12f")
    est = engine_resources(b)
    res = est["resources"]
    cfg = engine_config(b)
    # The P x L multiplier array, plus the post pipeline's (t * m) and the SE scale product.
    assert cfg.lanes * cfg.in_lanes < res["MULT18X18D"] <= cfg.lanes * cfg.in_lanes + 12
    assert res["DP16KD"] > 0 and res["LUT4"] > res["TRELLIS_FF"]
    fit_check(b, res)          # the 12F's logic fits (its program does not: row buffer)
    small = dataclasses.replace(b, resources=dataclasses.replace(b.resources, LUT4=8000))
    with pytest.raises(FitError, match=r"ulx3s-12f.*LUT4: estimate \d+ > available 8000 "
                                       r"\(over by \d+"):
        fit_check(small, res)


# -- the engine design as a whole (Amaranth simulator) --------------------------------------------

def test_engine_system_holds_the_engine_and_refuses_run():
    """EngineSystem for the 12F with a fast UART and a short SDRAM power-up: the engine is held
    (no memory command) while no face arrives, and a RUN frame over the UART does not start
    it -- this engine takes its face only from FACE_DATA frames, so the link refuses RUN
    (UNSUPPORTED) instead of starting a program that would wait for a face forever. The run
    through FACE_DATA, the arbiter and the SDRAM is tests/test_board_sim.py's."""
    import dataclasses

    from firmware import protocol as P
    from hw.board.boards import Link, get_board
    from hw.board.top import EngineSystem
    b = get_board("ulx3s-12f")
    b = dataclasses.replace(b, link=Link(baud=12_500_000))      # 8 cycles a bit at 100 MHz
    s = EngineSystem(b, sdram_init_wait_ns=200)
    divider = 8
    frame = P.encode_frame(P.Cmd.RUN, 7, b"")
    sim = Simulator(s)
    sim.add_clock(1e-8)
    seen = {"cmds": [], "running": [], "done": [], "engine_cmd_before_run": 0, "reads": 0}

    async def uart(ctx):
        ctx.set(s.rx, 1)
        await ctx.tick().repeat(20)
        while not ctx.get(s.init_done):
            await ctx.tick()
        for byte in frame:
            for bit in [0] + [(byte >> i) & 1 for i in range(8)] + [1]:
                ctx.set(s.rx, bit)
                await ctx.tick().repeat(divider)

    async def watch(ctx):
        async for _, _, cmd_v, cmd_r, addr, length, write, running, done, eng_v, ras, cas, \
                we in ctx.tick().sample(
                    s.sdram.port.cmd.valid, s.sdram.port.cmd.ready,
                    s.sdram.port.cmd.payload.addr, s.sdram.port.cmd.payload.length,
                    s.sdram.port.cmd.payload.write, s.running, s.done,
                    s.engine.mem.cmd.valid, s.pads.ras_n, s.pads.cas_n, s.pads.we_n):
            if cmd_v and cmd_r:
                seen["cmds"].append((addr, length, write))
            if eng_v and not running:
                seen["engine_cmd_before_run"] += 1
            if (ras, cas, we) == (1, 0, 1):
                seen["reads"] += 1
            seen["running"].append(running)
            seen["done"].append(done)

    async def main(ctx):
        await ctx.tick().repeat(20 + len(frame) * 10 * divider + 400)
    sim.add_testbench(uart)
    sim.add_testbench(watch, background=True)
    sim.add_testbench(main)
    sim.run()
    assert seen["engine_cmd_before_run"] == 0
    assert seen["cmds"] == [] and seen["reads"] == 0     # nothing touched the memory
    assert 1 not in seen["running"] and 1 not in seen["done"]


def test_face_buffer_per_board():
    """A whole face where the device has the block RAM for it; the 12F keeps one block (the
    driver then runs its faces one after the other) and still fits."""
    from hw.board.boards import get_board
    from hw.board.top import FACE_BUFFER_BYTES, face_buffer_bytes
    assert FACE_BUFFER_BYTES >= 112 * 112 * 3
    for name in ("ulx3s", "ulx3s-45f", "ulx3s-25f"):
        assert face_buffer_bytes(get_board(name)) == FACE_BUFFER_BYTES, name
    assert face_buffer_bytes(get_board("ulx3s-12f")) == 2048
