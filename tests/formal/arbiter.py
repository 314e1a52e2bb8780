"""MemoryArbiter (hw/memory/arbiter.py): two masters on one memory port, small widths."""
from amaranth import Cat, Elaboratable, Module, Mux, Signal
from amaranth.hdl import Assert, Assume, ResetSignal

from tests.formal.rules import ShadowQueue, stream_rules

N = 2
ADDR, LENGTH, DATA = 2, 2, 2        # lengths 1..3 words
N_QUEUE = 2
QUEUE = 4                           # shadow commands in flight (more is an assertion failure)
#: Cycles a master may wait with a command before it is taken (fair memory and masters).
WAIT_BOUND = 14


class ArbiterHarness(Elaboratable):
    """Free masters (stream rules assumed on their ``cmd``, lengths at least 1) and a free
    memory that returns read words only for read commands it took.

    ``rules``: ``bus.cmd`` obeys the stream rules. ``routing``: each command on the bus is one
    master's, unchanged; each write word on the bus is the next owed word of the master whose
    write command is oldest, and each read word goes to the master whose read command is
    oldest, to no other, and only while owed; at most ``QUEUE`` commands are in flight.
    ``fair``: with a memory that is always ready and masters that move their data at once, a
    master with a command waits fewer than ``WAIT_BOUND`` cycles."""

    def __init__(self, module, what):
        self.module, self.what = module, what
        self.dut = module.MemoryArbiter(N, addr_width=ADDR, length_width=LENGTH,
                                        data_width=DATA, n_queue=N_QUEUE)
        # The free inputs (top-level ports: the solver picks their values in every cycle).
        cmd_width = len(self.dut.m0.cmd.payload.as_value())
        shapes = {"bus_r": DATA, "bus_r_valid": 1, "bus_cmd_ready": 1, "bus_w_ready": 1,
                  "allow": N}
        for i in range(N):
            shapes.update({f"m{i}_cmd_valid": 1, f"m{i}_cmd": cmd_width, f"m{i}_w": DATA,
                           f"m{i}_w_valid": 1, f"m{i}_r_ready": 1})
        self.free = {name: Signal(shape, name=name) for name, shape in shapes.items()}

    def _free(self, name, shape):
        return self.free[name]

    def ports(self):
        return list(self.free.values())   # unused ones are inputs nothing reads

    def elaborate(self, platform):
        m = Module()
        m.submodules.dut = dut = self.dut
        fair = self.what == "fair"
        m.d.comb += Assume(~ResetSignal())
        bus, ms = dut.bus, dut.masters
        for i, p in enumerate(ms):
            m.d.comb += [p.cmd.valid.eq(self._free(f"m{i}_cmd_valid", 1)),
                         p.cmd.payload.eq(self._free(f"m{i}_cmd", len(p.cmd.payload.as_value()))),
                         p.w.payload.eq(self._free(f"m{i}_w", DATA)),
                         Assume(p.cmd.payload.length != 0)]
            if fair:
                m.d.comb += [p.w.valid.eq(1), p.r.ready.eq(1)]
            else:
                m.d.comb += [p.w.valid.eq(self._free(f"m{i}_w_valid", 1)),
                             p.r.ready.eq(self._free(f"m{i}_r_ready", 1))]
            stream_rules(m, p.cmd.valid, p.cmd.ready, p.cmd.payload, assume=True, name=f"m{i}_cmd")
        m.d.comb += bus.r.payload.eq(self._free("bus_r", DATA))
        if fair:
            m.d.comb += [bus.cmd.ready.eq(1), bus.w.ready.eq(1)]
        else:
            m.d.comb += [bus.cmd.ready.eq(self._free("bus_cmd_ready", 1)),
                         bus.w.ready.eq(self._free("bus_w_ready", 1)),
                         dut.allow.eq(self._free("allow", N))]

        # Shadow of the memory: the read and the write commands it took, oldest first, as
        # (master, length), and the words of the oldest already moved.
        rq = m.submodules.rq = ShadowQueue(1 + LENGTH, QUEUE)
        wq = m.submodules.wq = ShadowQueue(1 + LENGTH, QUEUE)
        r_done, w_done = Signal(LENGTH), Signal(LENGTH)
        cmd_take = bus.cmd.valid & bus.cmd.ready
        who = Signal(range(N))
        for i, p in enumerate(ms):
            with m.If(p.cmd.valid & p.cmd.ready):
                m.d.comb += who.eq(i)
        entry = Cat(who, bus.cmd.payload.length)
        r_take, w_take = bus.r.valid & bus.r.ready, bus.w.valid & bus.w.ready
        r_head_m, r_head_len = rq.head[0], rq.head[1:]
        w_head_m, w_head_len = wq.head[0], wq.head[1:]
        r_last = r_take & (r_done + 1 == r_head_len)
        w_last = w_take & (w_done + 1 == w_head_len)
        m.d.comb += [rq.push.eq(cmd_take & ~bus.cmd.payload.write), rq.value.eq(entry),
                     wq.push.eq(cmd_take & bus.cmd.payload.write), wq.value.eq(entry),
                     rq.pop.eq(r_last), wq.pop.eq(w_last)]
        with m.If(r_take):
            m.d.sync += r_done.eq(r_done + 1)
        with m.If(r_last):
            m.d.sync += r_done.eq(0)
        with m.If(w_take):
            m.d.sync += w_done.eq(w_done + 1)
        with m.If(w_last):
            m.d.sync += w_done.eq(0)
        # The memory returns read words only for the read commands it took.
        if fair:
            m.d.comb += bus.r.valid.eq(rq.count != 0)
        else:
            m.d.comb += [bus.r.valid.eq(self._free("bus_r_valid", 1)),
                         Assume(~bus.r.valid | (rq.count != 0))]
            stream_rules(m, bus.r.valid, bus.r.ready, bus.r.payload, assume=True, name="bus_r")

        if self.what == "rules":
            stream_rules(m, bus.cmd.valid, bus.cmd.ready, bus.cmd.payload, name="bus_cmd")
        elif self.what == "routing":
            takes = Cat(p.cmd.valid & p.cmd.ready for p in ms)
            m.d.comb += [
                Assert(takes == Mux_onehot(cmd_take, who), "bus.cmd take is not one master's"),
                Assert(~cmd_take | (bus.cmd.payload.as_value()
                                    == _pick(ms, who, lambda p: p.cmd.payload.as_value())),
                       "bus.cmd carries another master's command"),
                Assert((rq.count < QUEUE) & (wq.count < QUEUE), "more commands in flight "
                       "than the shadow holds"),
                Assert(~bus.w.valid | (wq.count != 0), "a write word with no write command"),
            ]
            for i, p in enumerate(ms):
                mine_r = (rq.count != 0) & (r_head_m == i)
                mine_w = (wq.count != 0) & (w_head_m == i)
                m.d.comb += [
                    Assert(~p.r.valid | (mine_r & bus.r.valid & (p.r.payload == bus.r.payload)),
                           f"m{i} is offered a read word that is not its own"),
                    Assert((p.r.valid & p.r.ready) == (r_take & mine_r),
                           f"a read word for m{i} lost or duplicated"),
                    Assert((p.w.valid & p.w.ready) == (w_take & mine_w),
                           f"a write word of m{i} lost or taken out of turn"),
                    Assert(~(w_take & mine_w) | (bus.w.payload == p.w.payload),
                           f"bus.w carries another word than m{i}'s"),
                ]
        else:
            for i, p in enumerate(ms):
                waited = Signal(range(WAIT_BOUND + 1), name=f"m{i}_waited")
                with m.If(p.cmd.valid & ~p.cmd.ready):
                    with m.If(waited < WAIT_BOUND):
                        m.d.sync += waited.eq(waited + 1)
                with m.Else():
                    m.d.sync += waited.eq(0)
                m.d.comb += Assert(waited < WAIT_BOUND, f"m{i} waits {WAIT_BOUND} cycles")
        return m


def Mux_onehot(cond, index):
    """The one-hot vector of ``index`` when ``cond``, else 0."""
    return Cat((cond & (index == i)) for i in range(N))


def _pick(ms, index, field):
    """``field`` of master ``index``."""
    out = field(ms[0])
    for i in range(1, N):
        out = Mux(index == i, field(ms[i]), out)
    return out
