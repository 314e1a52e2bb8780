"""The engine's read-data demultiplexer: the memory port's read words into the descriptor
registers and the on-chip RAMs (:mod:`hw.engine.layer_engine`).

The sequencer (:mod:`hw.engine.sequencer`) starts each read with ``clear`` and says where its
words go (``kind``, a :class:`LoadKind`, and for records of several words ``wrap``, the last
word index of a record). The words are seen one register later (``rx``, ``rxd``: the port's
data cross the chip once more before any logic); the counters (``count``: words of this read;
slot and entry: a record's word and the record) clear the cycle after ``clear``, which no word
of the new read can arrive before. Per kind, the registered word is written:

- ``DESC``: descriptor word ``count`` (the ``desc`` registers);
- ``WEIGHTS``: weight RAM entry ``entry``, 16-bit lane ``slot``;
- ``PARAMS``: a group record: its 4 header words to the issue stage's group header RAM, its
  lane words (lane, quarter) to the serializer's lane RAM;
- ``LUT``: the activation table, word ``count``; ``CHAN``: the channel RAM (gates, PReLU
  slopes), word ``count``; ``VEC_B``: the VEC unit's operand buffer, word ``count``;
- ``ROW``: the ``rows`` stream (to the row loader); ``RESIDUAL``: the ``res`` stream (to the
  residual FIFO, which the sequencer has checked has room).

The ``data`` stream carries every registered word (the VEC unit's operands). While ``to_out``
(the OUTPUT op), the read data go to ``o_stream`` instead, with its back-pressure.

Lock-step: nothing here stalls; every word is written the cycle after it arrives.
"""
from amaranth import Cat, Module, Mux, Signal, signed, unsigned
from amaranth.lib import enum, stream, wiring
from amaranth.lib.memory import WritePort
from amaranth.lib.wiring import In, Out
from amaranth.utils import ceil_log2

from firmware import image as im
from firmware.image import EngineConfig


class LoadKind(enum.Enum, shape=4):
    """Where the words of a read go."""
    NONE = 0
    DESC = 1
    WEIGHTS = 2
    PARAMS = 3
    LUT = 4
    CHAN = 5
    ROW = 6
    VEC_B = 7
    RESIDUAL = 8


def record_slots(config: EngineConfig):
    """The shape of a record's word index (weight entries, group records)."""
    return range(max(config.entry_words, config.group_words, 2))


class Loader(wiring.Component):
    """Read words -> descriptor registers, RAM writes and streams; see the module docstring.

    Members
    -------
    r : In(stream.Signature(16))
        The memory port's read data.
    o_stream : Out(stream.Signature(signed(16)))
        The engine's output (the OUTPUT op).
    to_out : In(1)
        The read data go to ``o_stream`` (``r.ready`` follows ``o_stream.ready``).
    clear : In(1)
        A read starts: the counters clear a cycle later.
    kind : In(LoadKind)
        Where the words go (held by the sequencer for the read's length).
    wrap : In(record_slots)
        The last word index of a record (``WEIGHTS``: ``entry_words - 1``, ``PARAMS``:
        ``group_words - 1``).
    count : Out(24)
        Words received since ``clear`` (registered).
    desc : Out(Descriptor)
        The descriptor registers.
    data : Out(stream.Signature(16), always ready)
        Every word, a register after the port.
    rows, res : Out(stream.Signature(16), always ready)
        The words of a ``ROW`` or ``RESIDUAL`` read.
    wram_w, chan_w : In(WritePort.Signature)
        Drive the weight RAM's and the channel RAM's write ports.
    hdr_w, lane_w, buf_w, lut_w : In(WritePort.Signature)
        Drive the group header RAM (:class:`hw.engine.issue.IssueUnit`), the lane RAM
        (:class:`hw.engine.serializer.Serializer`), the VEC operand buffer
        (:class:`hw.engine.vec_unit.VecUnit`) and, with ``activation == "lut"``, the
        activation table (:class:`hw.engine.post.PostPipeline`).
    """

    def __init__(self, config: EngineConfig):
        self.cfg = config
        P, L = config.lanes, config.in_lanes
        wbits = 8 * P * L
        members = {
            "r": In(stream.Signature(16)),
            "o_stream": Out(stream.Signature(signed(16))),
            "to_out": In(1),
            "clear": In(1),
            "kind": In(LoadKind),
            "wrap": In(record_slots(config)),
            "count": Out(24),
            "desc": Out(im.Descriptor),
            "data": Out(stream.Signature(16, always_ready=True)),
            "rows": Out(stream.Signature(16, always_ready=True)),
            "res": Out(stream.Signature(16, always_ready=True)),
            "wram_w": In(WritePort.Signature(addr_width=ceil_log2(config.w_depth),
                                             shape=unsigned(wbits),
                                             granularity=16 if wbits >= 16 else wbits)),
            "chan_w": In(WritePort.Signature(addr_width=ceil_log2(config.chan_depth),
                                             shape=unsigned(16))),
            "hdr_w": In(WritePort.Signature(addr_width=(config.groups - 1).bit_length(),
                                            shape=unsigned(64), granularity=16)),
            "lane_w": In(WritePort.Signature(addr_width=(config.groups * P - 1).bit_length(),
                                             shape=unsigned(64), granularity=16)),
            "buf_w": In(WritePort.Signature(addr_width=(config.chunk - 1).bit_length(),
                                            shape=unsigned(16))),
        }
        if config.activation == "lut":
            members["lut_w"] = In(WritePort.Signature(
                addr_width=(config.lut_depth - 1).bit_length(), shape=unsigned(16)))
        super().__init__(members)

    def elaborate(self, platform):
        cfg = self.cfg
        P = cfg.lanes
        m = Module()
        r, kind = self.r, self.kind

        m.d.comb += [
            r.ready.eq(Mux(self.to_out, self.o_stream.ready, 1)),
            self.o_stream.valid.eq(self.to_out & r.valid),
            self.o_stream.payload.eq(r.payload),
        ]
        rx = Signal()            # a word arrived (registered)
        rxd = Signal(16, reset_less=True)
        rx_cnt = self.count
        clear_q = Signal()
        m.d.sync += [rx.eq(r.valid & r.ready), rxd.eq(r.payload), clear_q.eq(self.clear)]
        with m.If(clear_q):
            m.d.sync += rx_cnt.eq(0)
        with m.Elif(rx):
            m.d.sync += rx_cnt.eq(rx_cnt + 1)

        slot = Signal(record_slots(cfg))
        entry = Signal(16)
        with m.If(clear_q):
            m.d.sync += [slot.eq(0), entry.eq(0)]
        with m.Elif(rx):
            with m.If(slot == self.wrap):
                m.d.sync += [slot.eq(0), entry.eq(entry + 1)]
            with m.Else():
                m.d.sync += slot.eq(slot + 1)
        lp_slot = Signal(range(4 * P))    # a group record's lane words: (lane, quarter)
        m.d.comb += lp_slot.eq(slot - 4)

        desc = [Signal(16, name=f"desc{i}") for i in range(im.DESC_WORDS)]
        m.d.comb += self.desc.eq(Cat(*desc))
        with m.If(rx & (kind == LoadKind.DESC)):
            for i in range(im.DESC_WORDS):
                with m.If(rx_cnt[:(im.DESC_WORDS - 1).bit_length()] == i):
                    m.d.sync += desc[i].eq(rxd)

        ew = cfg.entry_words
        m.d.comb += [self.wram_w.addr.eq(entry), self.wram_w.data.eq(Cat(*([rxd] * max(1, ew)))),
                     self.hdr_w.addr.eq(entry), self.hdr_w.data.eq(Cat(*([rxd] * 4))),
                     self.lane_w.addr.eq(Cat(lp_slot[2:], entry) if P > 1 else entry),
                     self.lane_w.data.eq(Cat(*([rxd] * 4))),
                     self.chan_w.addr.eq(rx_cnt), self.chan_w.data.eq(rxd),
                     self.buf_w.addr.eq(rx_cnt), self.buf_w.data.eq(rxd),
                     self.data.valid.eq(rx), self.data.payload.eq(rxd),
                     self.rows.valid.eq(rx & (kind == LoadKind.ROW)), self.rows.payload.eq(rxd),
                     self.res.payload.eq(rxd)]
        with m.If(rx):
            with m.Switch(kind):
                with m.Case(LoadKind.WEIGHTS):
                    for i in range(len(self.wram_w.en)):
                        m.d.comb += self.wram_w.en[i].eq(slot == i)
                with m.Case(LoadKind.PARAMS):
                    for i in range(4):
                        m.d.comb += self.hdr_w.en[i].eq(slot == i)
                    for i in range(4):
                        m.d.comb += self.lane_w.en[i].eq((slot >= 4) & (lp_slot[:2] == i))
                with m.Case(LoadKind.LUT):
                    if cfg.activation == "lut":
                        m.d.comb += self.lut_w.en.eq(1)
                with m.Case(LoadKind.CHAN):
                    m.d.comb += self.chan_w.en.eq(1)
                with m.Case(LoadKind.VEC_B):
                    m.d.comb += self.buf_w.en.eq(1)
                with m.Case(LoadKind.RESIDUAL):
                    m.d.comb += self.res.valid.eq(1)
        if cfg.activation == "lut":
            m.d.comb += [self.lut_w.addr.eq(rx_cnt), self.lut_w.data.eq(rxd)]
        return m
