"""The engine's sequencer: the descriptor state machine and the reads it starts
(:mod:`hw.engine.layer_engine`).

From descriptor 0 on, it reads a descriptor (``pc``; the loader fills the descriptor
registers) and runs it, then the next, until ``END`` (``frame_done``, back to 0):

- ``INPUT``: the INPUT unit takes the face (``inp_start`` with every descriptor's ``init``,
  ``inp_go`` while it runs); ``busy`` rises with the first element.
- ``CONV``: reads the weights, the group records, the activation table (``Flag.ACT``, a table
  engine) and the gates (``Flag.SCALE``), then per output row: reads the input rows it needs
  (``load_start``: the row loader writes the row at ``load_base``, the next of ``nslots``
  slots), the residual row into the residual FIFO (``Flag.RESID``, once the FIFO has room for
  it), and starts the issue stage's row (``row_start``). With ``Flag.PREFETCH`` the next input
  row loads into the ``(k + 1)``-th slot while the row issues, one a row.
- ``VEC``: reads the parameters (gates, slopes or table), then per chunk reads operand ``b``
  (residual add) into the VEC unit's buffer and streams operand ``a`` through it; the average
  pool ends with the sums' epilogue. Each chunk reserves its elements in the write FIFO.
- ``OUTPUT``: streams the tensor's words to ``o_stream`` (``to_out``).

A descriptor ends (``NEXT``) once the datapath has drained (``idle``, and no read starting).

Timing contract. The decisions read registers: ``ROW`` waits two cycles (``row_settle``)
after the row pointers or the issue stage's ``top``/``oy`` change, then decides from
registers (``row_more``, ``rows_done``, ``pf_more``, ``res_room``); ``NEXT`` reads the drained
condition as a register from its second cycle on. A read: ``start_read`` registers which of
its call sites asked (``rd_sel``, ``rd_go``) and pulses ``clear`` (the loader's counters clear
a cycle later) and sets ``kind``/``wrap``; the next cycle takes that site's address and count
(a multiplexer on a register, not on the state), and the read goes to the write path
(``read``) the cycle after. ``rd_done`` (all words of the last read have arrived, ``count``)
is a register: the wait states see it one cycle after the last word. The pulses out
(``init``, ``conv_start``, ``row_start``, ``load_start``, ``vec_*``, ``reserve``,
``frame_done``) are combinational from the state and these registers.
"""
from amaranth import Const, Module, Mux, Signal, signed
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from firmware import image as im
from firmware.image import EngineConfig

from hw.engine.loader import LoadKind, record_slots


class Sequencer(wiring.Component):
    """The descriptor state machine, row bookkeeping and reads; see the module docstring.

    Members
    -------
    desc : In(Descriptor)
    count : In(24)
        Words of the current read received (the loader's register).
    reading : In(1)
        Words of the last read are still to be asked for (the write path).
    idle : In(1)
        The datapath has drained (MAC array, serializer, post pipeline, write path, VEC unit,
        row loader).
    load_busy : In(1)
        The row loader has words in its pipeline.
    top, oy, row_end : In
        The issue stage's output row's first input row, its output row, its row's end.
    res_level : In(range(res_depth + 1))
        The residual FIFO's level (only with ``config.res_depth``).
    room, req_ok : In
        The write path's credits.
    inp_valid, inp_more : In(1)
        The INPUT unit hands an element over; more are to come.
    next_n, chunk_n, a_addr, b_addr, fits, all_done, settled, c_last, is_add, is_pool,
    a_busy : In
        The VEC unit's chunk registers (:class:`hw.engine.vec_unit.VecUnit`).
    pc : Out(16)
        The current descriptor.
    frame_done, busy : Out(1)
        ``END`` reached (a pulse); a frame is in progress (first input element .. ``END``).
    init, inp_start, inp_go, conv_start, row_start, load_start : Out(1)
        Pulses: a descriptor starts (post pipeline, write path); the INPUT unit starts and
        runs; a CONV's first row; a row issues; an input row loads.
    load_base : Out(16)
        The base entry of the slot the next input row loads into.
    nslots, nslots_last : Out(5)
        Row slots (``k``, or ``k + 1`` with the prefetch) and that less one (registers).
    vec_start, vec_settle, vec_chunk, vec_chunk_done, vec_pool_start, vec_active,
    vec_pool_out : Out(1)
        The VEC unit's pulses and levels.
    reserve : Out(range(fifo_depth + 1))
        Elements of a chunk admitted.
    to_out : Out(1)
        The read data go to ``o_stream`` (OUTPUT).
    read : Out(stream of {addr, n}, always ready)
        A read starts.
    clear, kind, wrap : Out
        The loader's: a read is asked for, where its words go, a record's last word index.
    """

    def __init__(self, config: EngineConfig):
        self.cfg = config
        members = {
            "desc": In(im.Descriptor),
            "count": In(24),
            "reading": In(1),
            "idle": In(1), "load_busy": In(1),
            "top": In(signed(18)), "oy": In(16), "row_end": In(1),
            "room": In(range(config.fifo_depth * 2 + 1)), "req_ok": In(1),
            "inp_valid": In(1), "inp_more": In(1),
            "next_n": In(16), "chunk_n": In(16),
            "a_addr": In(im.ADDR_BITS), "b_addr": In(im.ADDR_BITS),
            "fits": In(1), "all_done": In(1), "settled": In(1), "c_last": In(1),
            "is_add": In(1), "is_pool": In(1), "a_busy": In(1),
            "pc": Out(16),
            "frame_done": Out(1), "busy": Out(1),
            "init": Out(1), "inp_start": Out(1), "inp_go": Out(1),
            "conv_start": Out(1), "row_start": Out(1), "load_start": Out(1),
            "load_base": Out(16),
            "nslots": Out(5), "nslots_last": Out(5),
            "vec_start": Out(1), "vec_settle": Out(1), "vec_chunk": Out(1),
            "vec_chunk_done": Out(1), "vec_pool_start": Out(1), "vec_active": Out(1),
            "vec_pool_out": Out(1),
            "reserve": Out(range(config.fifo_depth + 1)),
            "to_out": Out(1),
            "read": Out(stream.Signature(data.StructLayout({"addr": im.ADDR_BITS, "n": 24}),
                                         always_ready=True)),
            "clear": Out(1),
            "kind": Out(LoadKind),
            "wrap": Out(record_slots(config)),
        }
        if config.res_depth:
            members["res_level"] = In(range(config.res_depth + 1))
        super().__init__(members)

    def elaborate(self, platform):
        cfg = self.cfg
        m = Module()
        dsc = self.desc
        opcode, mode, flags = dsc.opcode, dsc.mode, dsc.flags
        H, C, OH, k = dsc.H, dsc.C, dsc.OH, dsc.k
        rowE, row_words = dsc.row_entries, dsc.row_words
        act_en, scale_en, prefetch_en = flags.act, flags.scale, flags.prefetch
        resid_en = flags.resid if cfg.res_depth else Const(0, 1)
        ew = cfg.entry_words
        ld_kind, ld_wrap, top, reserve = self.kind, self.wrap, self.top, self.reserve
        nslots_last, load_base = self.nslots_last, self.load_base

        # row slots: k, or k + 1 with the prefetch (registers)
        m.d.sync += [self.nslots.eq(k + prefetch_en), nslots_last.eq(k + prefetch_en - 1)]

        pc = Signal(16)
        pc_addr = Signal(im.ADDR_BITS)     # pc * DESC_WORDS
        m.d.comb += self.pc.eq(pc)
        rd_start = Signal()       # a read starts
        rd_go = Signal()          # start_read asked last cycle
        drained, drained_q, next_seen = Signal(), Signal(), Signal()
        m.d.sync += drained_q.eq(drained)
        m.d.comb += drained.eq(self.idle & ~rd_start & ~rd_go)
        # ROW decides from registers: another input row is needed and exists (row_more), the
        # output rows are done (rows_done); two cycles after top / next_row / oy change.
        row_more, rows_done, row_settle, next_row = Signal(), Signal(), Signal(2), Signal(16)
        need = Signal(signed(18))      # the last input row the output row oy needs
        m.d.sync += [need.eq(top + k - 1), rows_done.eq(self.oy == OH),
                     row_more.eq((next_row < H) & (next_row.as_signed() <= need))]
        # The prefetch: the next input row loads into the (k + 1)-th slot while a row issues
        # if it is free (next_row <= top + k) and exists; one a row (pf_used).
        pf_more, pf_busy, pf_used = Signal(), Signal(), Signal()
        m.d.sync += pf_more.eq(prefetch_en & (next_row < H)
                               & (next_row.as_signed() <= top + k))
        row_ptr, load_slot = Signal(im.ADDR_BITS), Signal(4)
        # The fused residual add: the row's residual (r_words) is read into the residual FIFO
        # once it has room (res_room: meanwhile only the post pipeline's pops change its level)
        res_ptr = Signal(im.ADDR_BITS)
        res_loaded, res_room = Signal(), Signal()
        res_limit = Signal(range(cfg.res_depth + 1))
        m.d.sync += res_limit.eq(Mux(dsc.r_words > cfg.res_depth, 0,
                                     cfg.res_depth - dsc.r_words))
        if cfg.res_depth:
            m.d.sync += res_room.eq((self.res_level <= res_limit)
                                    & (dsc.r_words <= cfg.res_depth))

        # the reads: see the module docstring
        rd_start_addr, rd_start_n = Signal(im.ADDR_BITS), Signal(24)
        m.d.comb += [self.read.valid.eq(rd_start), self.read.payload.addr.eq(rd_start_addr),
                     self.read.payload.n.eq(rd_start_n)]
        rd_expect, rd_done, rd_sel = Signal(24), Signal(), Signal(5)
        rd_sites = []                      # (address, count) of each start_read call
        m.d.sync += [rd_start.eq(0), rd_go.eq(0),
                     rd_done.eq((self.count == rd_expect) & ~self.reading & ~rd_start & ~rd_go)]

        def start_read(addr, n, kind, wrap=1):
            m.d.comb += self.clear.eq(1)
            m.d.sync += [rd_go.eq(1), rd_sel.eq(len(rd_sites)), rd_done.eq(0),
                         ld_kind.eq(kind), ld_wrap.eq(wrap - 1)]
            rd_sites.append((addr, n))

        def row_loaded():
            last_slot = load_slot == nslots_last
            m.d.sync += [next_row.eq(next_row + 1), row_ptr.eq(row_ptr + row_words),
                         load_slot.eq(Mux(last_slot, 0, load_slot + 1)),
                         load_base.eq(Mux(last_slot, 0, load_base + rowE)),
                         ld_kind.eq(LoadKind.NONE), row_settle.eq(2)]

        with m.FSM():
            with m.State("FETCH"):
                start_read(pc_addr, im.DESC_WORDS, LoadKind.DESC)
                m.next = "FETCH_WAIT"
            with m.State("FETCH_WAIT"):
                with m.If(rd_done):
                    m.d.sync += ld_kind.eq(LoadKind.NONE)
                    m.next = "DISPATCH"
            with m.State("DISPATCH"):
                m.d.comb += [self.init.eq(1), self.inp_start.eq(1)]
                with m.Switch(opcode):
                    with m.Case(im.Opcode.END):
                        m.d.comb += self.frame_done.eq(1)
                        m.d.sync += [pc.eq(0), pc_addr.eq(0), self.busy.eq(0)]
                        m.next = "FETCH"
                    with m.Case(im.Opcode.INPUT):
                        m.next = "INPUT"
                    with m.Case(im.Opcode.CONV):
                        m.next = "CONV_W"
                    with m.Case(im.Opcode.VEC):
                        m.next = "VEC_PRE"
                    with m.Case(im.Opcode.OUTPUT):
                        m.next = "OUTPUT"
                    with m.Default():
                        m.next = "NEXT"
            with m.State("NEXT"):
                # drained as a register (drained_q), read from NEXT's second cycle on
                m.d.sync += next_seen.eq(1)
                with m.If(drained_q & next_seen):
                    m.d.sync += [pc.eq(pc + 1), pc_addr.eq(pc_addr + im.DESC_WORDS),
                                 next_seen.eq(0)]
                    m.next = "FETCH"
            # ---- INPUT
            with m.State("INPUT"):
                m.d.comb += self.inp_go.eq(1)
                with m.If(self.inp_valid):
                    m.d.sync += self.busy.eq(1)
                with m.If(~self.inp_more & ~self.inp_valid):
                    m.next = "NEXT"
            # ---- OUTPUT
            with m.State("OUTPUT"):
                start_read(dsc.a_addr, dsc.n_elems, LoadKind.NONE)
                m.next = "OUTPUT_WAIT"
            with m.State("OUTPUT_WAIT"):
                m.d.comb += self.to_out.eq(1)
                with m.If(rd_done):
                    m.next = "NEXT"
            # ---- CONV
            with m.State("CONV_W"):
                start_read(dsc.w_addr, dsc.w_words, LoadKind.WEIGHTS, ew)
                m.next = "CONV_W_WAIT"
            with m.State("CONV_W_WAIT"):
                with m.If(rd_done):
                    m.next = "CONV_P"
            with m.State("CONV_P"):
                start_read(dsc.p_addr, dsc.p_words, LoadKind.PARAMS, cfg.group_words)
                m.next = "CONV_P_WAIT"
            with m.State("CONV_P_WAIT"):
                with m.If(rd_done):
                    m.next = "CONV_LUT"
            with m.State("CONV_LUT"):
                with m.If(act_en & (cfg.activation == "lut")):
                    start_read(dsc.lut_addr, dsc.lut_n, LoadKind.LUT)
                m.next = "CONV_LUT_WAIT"
            with m.State("CONV_LUT_WAIT"):
                with m.If(rd_done):
                    m.d.sync += ld_kind.eq(LoadKind.NONE)
                    m.next = "CONV_G"
            with m.State("CONV_G"):
                with m.If(scale_en):
                    start_read(dsc.b_addr, C, LoadKind.CHAN)
                m.next = "CONV_G_WAIT"
            with m.State("CONV_G_WAIT"):
                with m.If(rd_done):
                    m.d.comb += self.conv_start.eq(1)
                    m.d.sync += [next_row.eq(0), row_ptr.eq(dsc.a_addr), load_slot.eq(0),
                                 load_base.eq(0), ld_kind.eq(LoadKind.NONE), pf_used.eq(0),
                                 res_ptr.eq(dsc.r_addr), res_loaded.eq(0), row_settle.eq(2)]
                    m.next = "ROW"
            with m.State("ROW"):
                with m.If(pf_busy):
                    pass              # the prefetch finishes (below), then ROW settles again
                with m.Elif(row_settle != 0):
                    m.d.sync += row_settle.eq(row_settle - 1)
                with m.Elif(rows_done):
                    m.next = "NEXT"
                with m.Elif(row_more):
                    start_read(row_ptr, row_words, LoadKind.ROW)
                    m.d.comb += self.load_start.eq(1)
                    m.next = "ROW_LOAD"
                with m.Elif(resid_en & ~res_loaded):
                    with m.If(res_room):
                        start_read(res_ptr, dsc.r_words, LoadKind.RESIDUAL)
                        m.next = "ROW_RES"
                with m.Else():
                    m.d.comb += self.row_start.eq(1)
                    m.next = "ISSUE"
            with m.State("ROW_LOAD"):
                with m.If(rd_done & ~self.load_busy):
                    row_loaded()
                    m.next = "ROW"
            with m.State("ROW_RES"):
                with m.If(rd_done):
                    m.d.sync += [res_loaded.eq(1), res_ptr.eq(res_ptr + dsc.r_words),
                                 ld_kind.eq(LoadKind.NONE)]
                    m.next = "ROW"
            with m.State("ISSUE"):
                # the issue stage runs the row (hw/engine/issue.py)
                with m.If(pf_more & ~pf_used):
                    start_read(row_ptr, row_words, LoadKind.ROW)
                    m.d.comb += self.load_start.eq(1)
                    m.d.sync += [pf_busy.eq(1), pf_used.eq(1)]
                with m.If(self.row_end):
                    m.next = "ROW"
            # ---- VEC
            with m.State("VEC_PRE"):
                m.d.comb += self.vec_start.eq(1)
                with m.Switch(mode.vec):
                    with m.Case(im.VecOp.SCALE):
                        start_read(dsc.b_addr, C, LoadKind.CHAN)
                    with m.Case(im.VecOp.PRELU):
                        start_read(dsc.w_addr, C, LoadKind.CHAN)
                    with m.Case(im.VecOp.ACT):
                        if cfg.activation == "lut":
                            start_read(dsc.lut_addr, dsc.lut_n, LoadKind.LUT)
                m.next = "VEC_PRE_WAIT"
            with m.State("VEC_PRE_WAIT"):
                with m.If(rd_done):     # add and pool read nothing here
                    m.d.sync += ld_kind.eq(LoadKind.NONE)
                    m.next = "VEC_CHUNK"
            with m.State("VEC_CHUNK"):
                n = self.next_n
                with m.If(~self.settled):
                    m.d.comb += self.vec_settle.eq(1)
                with m.Elif(self.all_done):
                    with m.If(self.is_pool):
                        m.next = "VEC_POOL"
                    with m.Else():
                        m.next = "NEXT"
                with m.Elif(self.is_pool | (self.fits & self.req_ok)):
                    m.d.comb += self.vec_chunk.eq(1)
                    with m.If(~self.is_pool):
                        m.d.comb += reserve.eq(n)
                    with m.If(self.is_add):
                        start_read(self.b_addr, n, LoadKind.VEC_B)
                        m.next = "VEC_B"
                    with m.Else():
                        start_read(self.a_addr, n, LoadKind.NONE)
                        m.next = "VEC_A"
            with m.State("VEC_B"):
                with m.If(rd_done):
                    start_read(self.a_addr, self.chunk_n, LoadKind.NONE)
                    m.next = "VEC_A"
            with m.State("VEC_A"):
                m.d.comb += self.vec_active.eq(1)
                with m.If(rd_done):
                    m.d.comb += self.vec_chunk_done.eq(1)
                    m.next = "VEC_CHUNK"
            with m.State("VEC_POOL"):
                with m.If(~self.a_busy & (self.room >= C + 9) & self.req_ok):
                    m.d.comb += [reserve.eq(C), self.vec_pool_start.eq(1)]
                    m.next = "VEC_POOL_OUT"
            with m.State("VEC_POOL_OUT"):
                m.d.comb += self.vec_pool_out.eq(1)
                with m.If(self.c_last):
                    m.next = "NEXT"
        with m.If(self.row_end):     # (after the state machine: it takes precedence)
            m.d.sync += [pf_used.eq(0), row_settle.eq(2), res_loaded.eq(0)]
        with m.If(pf_busy & rd_done & ~self.load_busy & ~rd_go & ~rd_start):
            row_loaded()
            m.d.sync += pf_busy.eq(0)
        assert len(rd_sites) <= 1 << len(rd_sel)
        with m.If(rd_go):
            m.d.sync += rd_start.eq(1)
            with m.Switch(rd_sel):
                for i, (addr, n) in enumerate(rd_sites):
                    with m.Case(i):
                        m.d.sync += [rd_start_addr.eq(addr), rd_start_n.eq(n), rd_expect.eq(n)]
        return m
