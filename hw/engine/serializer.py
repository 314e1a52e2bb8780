"""The engine's serializer: a pixel's accumulators -> the post pipeline, one channel a cycle
(:mod:`hw.engine.layer_engine`).

The head of the MAC array's result FIFO (``results``) stays in the FIFO's output register
while its lanes leave, one a launch: a lane is picked by two 4-way multiplexer levels with a
register between them, rather than shifted out (no wide register has an enable). The lane's
parameter record (``bias``, ``M``, ``shift``: the group parameter record's lane words) is read
from the lane RAM at the launch (one record per group and lane; the loader fills it through
``lane_w``). The head is popped the cycle after its last launch, from a register. A launch
needs room in the write FIFO (``room``, ``req_ok``) and is an admitted element (``launch``).
"""
from amaranth import Cat, Const, Module, Signal, unsigned
from amaranth.lib import stream, wiring
from amaranth.lib.memory import Memory, WritePort
from amaranth.lib.wiring import In, Out

from firmware.image import EngineConfig

from hw.engine.mac_array import ACC_W, result_layout
from hw.engine.post import Operands
from hw.engine.stages import lane_select


class Serializer(wiring.Component):
    """Accumulators -> post-pipeline operands; see the module docstring.

    Members
    -------
    results : In(stream.Signature(result_layout))
        The result FIFO's head; ``ready`` pops it.
    lane_w : Out(WritePort.Signature)
        The lane record RAM's write port, as a memory's (64-bit records, 16-bit lanes).
    act : In(1)
        The descriptor's activation flag.
    room : In(range(2 fifo_depth + 1))
        Room in the write FIFO (the write path's register).
    req_ok : In(1)
        Room for another write request.
    o : Out(stream of Operands, always ready)
        The post pipeline's operands.
    launch : Out(1)
        An element is launched (admitted to the write FIFO) this cycle.
    busy : Out(1)
        A head's lanes are leaving or the last one is in the multiplexers.
    """

    def __init__(self, config: EngineConfig):
        self.cfg = config
        P = config.lanes
        super().__init__({
            "results": In(stream.Signature(result_layout(config))),
            "lane_w": Out(WritePort.Signature(
                addr_width=(config.groups * P - 1).bit_length(), shape=unsigned(64),
                granularity=16)),
            "act": In(1),
            "room": In(range(config.fifo_depth * 2 + 1)),
            "req_ok": In(1),
            "o": Out(stream.Signature(Operands, always_ready=True)),
            "launch": Out(1),
            "busy": Out(1),
        })

    def elaborate(self, platform):
        cfg = self.cfg
        P = cfg.lanes
        m = Module()
        lanep = m.submodules.lanep = Memory(shape=unsigned(64), depth=cfg.groups * P,
                                            init=[])
        lanep_w = lanep.write_port(granularity=16)
        lanep_r = lanep.read_port()
        m.d.comb += [lanep_w.addr.eq(self.lane_w.addr), lanep_w.data.eq(self.lane_w.data),
                     lanep_w.en.eq(self.lane_w.en)]

        rd = self.results.payload
        rd_g = rd.g
        ser_busy, ser_pop, ser_pend = Signal(), Signal(), Signal()
        ser_j = Signal(range(max(P, 2)))     # the lane leaving
        ser_last = Signal.like(ser_j)          # n_valid - 1
        m.d.sync += ser_pop.eq(0)
        m.d.comb += self.results.ready.eq(ser_pop)
        with m.If(~ser_busy & ~ser_pop & self.results.valid):
            m.d.sync += [ser_busy.eq(1), ser_j.eq(0), ser_pend.eq(rd.pend),
                         ser_last.eq(rd.nvalid - 1)]
        ser_launch = Signal()
        ser_room = Signal()       # room for a launch, a register (a cycle old: margin)
        m.d.sync += ser_room.eq(self.room > 10)
        with m.If(ser_busy & ser_room & self.req_ok):
            m.d.comb += ser_launch.eq(1)
            with m.If(ser_j == ser_last):
                m.d.sync += [ser_busy.eq(0), ser_pop.eq(1)]
            with m.Else():
                m.d.sync += ser_j.eq(ser_j + 1)
        lane_v, lane_flag = Signal(), Signal()
        m.d.sync += [lane_v.eq(ser_launch), lane_flag.eq(ser_pend & (ser_j == ser_last))]
        accs = rd.acc.as_value()
        lane_acc = lane_select(m, [accs[ACC_W * i:ACC_W * (i + 1)] for i in range(P)], ser_j,
                               "ser_acc").as_signed()
        m.d.comb += lanep_r.addr.eq(Cat(ser_j, rd_g) if P > 1 else rd_g)
        lane_rec = lanep_r.data
        op = self.o.payload
        m.d.comb += [self.launch.eq(ser_launch), self.busy.eq(ser_busy | lane_v),
                     self.o.valid.eq(lane_v), op.x.eq(lane_acc),
                     op.y.eq(lane_rec[0:32].as_signed()),
                     op.m.eq(Cat(lane_rec[32:49], Const(0, 1))), op.s.eq(lane_rec[56:62]),
                     op.last.eq(lane_flag), op.act.eq(self.act)]
        return m
