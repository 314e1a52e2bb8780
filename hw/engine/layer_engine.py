"""The engine: a sequencer and one datapath over one external-memory port.

    from firmware.image import EngineConfig
    engine = Engine(EngineConfig(lanes=16, in_lanes=8))

The firmware image (:mod:`firmware.compiler`, layout in :mod:`firmware.image` and
docs/ENGINE.md) holds a descriptor table at word 0. The sequencer fetches one descriptor at a
time and runs it:

``INPUT``
    Takes ``n_elems`` bytes (uint8 RGB, NHWC) from ``i_stream`` and writes
    ``pixel << sa + offset`` (saturated) to the input tensor.
``CONV``
    Dense (stem, pointwise with seesaw parts, linear), depthwise, or 2x2 max pool. Loads the
    descriptor's weight entries, group parameters and activation table into on-chip RAMs, then
    per output row loads the input rows it needs into a ``k``-row circular row buffer (applying
    the 2-group channel shuffle while loading when the flag says so) and runs a ``P x L``
    multiplier array: each cycle one kernel tap and ``L`` input channels for ``P`` output
    channels (dense), or one tap of ``P`` channels (depthwise). Finished accumulators go through
    the post pipeline: bias, requantize (``M``, ``s``, round half up, saturate), activation
    table; out to the write FIFO, one burst per output pixel. Fused SE (flags): the scale flag
    multiplies every input-row word by its channel's gate (loaded from ``b_addr``) on the way
    into the row buffer (``ops.scale_channels``); the pool flag adds every written value to
    its channel's sum in the sum RAM, which the following VEC avgpool then requantizes; the
    residual flag adds the other operand of a residual add to every result (``ops.add``),
    read one output row ahead into the residual FIFO. Tensors of at most 8 bits may be
    packed two elements a word (input rows, output, residual: one flag each).
``VEC``
    Element-wise passes in chunks: residual add, SE channel scale, PReLU, stand-alone
    activation, average pool (channel sums, then requantize).
``OUTPUT``
    Streams the embedding tensor from memory to ``o_stream``.
``END``
    Pulses ``frame_done`` and starts over at descriptor 0 (the next frame).

The memory port ``mem`` is a :class:`hw.memory.port.MemoryPort` master (word address, write,
length; 16-bit write and read words). Writes have priority; a write command is issued only
once all its data is in the write FIFO.

The sequencer (this module) drives components of one job each, every one in its own module:
the issue stage (:mod:`hw.engine.issue`), the multiplier array (:mod:`hw.engine.mac_array`),
the serializer (:mod:`hw.engine.serializer`), the post pipeline (:mod:`hw.engine.post`), the
element-wise unit (:mod:`hw.engine.vec_unit`), the INPUT op (:mod:`hw.engine.input_unit`),
the row loader (:mod:`hw.engine.row_loader`) and the write path with the memory commands
(:mod:`hw.engine.write_path`).

Every pipeline is free-running; admission is by credits (room in the write FIFO and in the
accumulator FIFO) so nothing inside ever stalls. ``o_stream`` back-pressure holds the memory
read data; ``i_stream`` is taken whenever there is room.
"""
from amaranth import Cat, Const, Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, fifo, stream, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from firmware import image as im
from firmware.image import EngineConfig

from hw.engine.input_unit import InputUnit
from hw.engine.issue import IssueUnit
from hw.engine.mac_array import MACArray
from hw.engine.post import PostPipeline
from hw.engine.row_loader import RowLoader
from hw.engine.serializer import Serializer
from hw.engine.stages import decoded, last_of, log2
from hw.engine.vec_unit import VecUnit
from hw.engine.write_path import WritePath
from hw.memory.port import MemoryPort



class Engine(wiring.Component):
    """Sequencer + datapath; see the module docstring.

    Parameters
    ----------
    config : EngineConfig

    Members
    -------
    i_stream : In(stream.Signature(8))
        Input face bytes, RGB NHWC.
    o_stream : Out(stream.Signature(signed(16)))
        Raw embedding codes.
    mem : Out(MemoryPort)
        External memory (the SDRAM controller through the arbiter, or the simulation memory).
    frame_done : Out(1)
        One-cycle pulse when the END descriptor is reached.
    busy : Out(1)
        A frame is in progress (first input byte taken .. END).
    pc : Out(16)
        Index of the current descriptor.
    """

    def __init__(self, config: EngineConfig = EngineConfig()):
        self.cfg = config
        port = MemoryPort(im.ADDR_BITS)
        if config.max_burst > port.max_length:
            raise ValueError(f"EngineConfig.max_burst {config.max_burst} exceeds the memory "
                             f"port's longest command ({port.max_length} words)")
        super().__init__({
            "i_stream": In(stream.Signature(8)),
            "o_stream": Out(stream.Signature(signed(16))),
            "mem": Out(port),
            "frame_done": Out(1),
            "busy": Out(1),
            "pc": Out(16),
        })

    def elaborate(self, platform):
        cfg = self.cfg
        P, L = cfg.lanes, cfg.in_lanes
        lP = log2(P)
        m = Module()

        # ---------------- descriptor registers --------------------------------------------
        desc = [Signal(16, name=f"desc{i}") for i in range(im.DESC_WORDS)]
        dsc = data.View(im.Descriptor, Cat(*desc))      # the fields, by name (firmware.image)

        opcode, mode, flags = dsc.opcode, dsc.mode, dsc.flags
        H, C, OH, k = dsc.H, dsc.C, dsc.OH, dsc.k
        n_elems = dsc.n_elems
        act_en = flags.act
        scale_en = flags.scale        # CONV: SE channel scale applied while loading input rows
        pool_en = flags.pool          # CONV: per-channel sums of the output (fused avgpool)
        prefetch_en = flags.prefetch  # CONV: k + 1 row slots, the next row loads during a row
        resid_en = flags.resid if cfg.res_depth else Const(0, 1)  # CONV: fused residual add
        OW_last = last_of(m, "OW_last", dsc.OW)

        # row slots: k, or k + 1 with the prefetch (registers)
        nslots, nslots_last = Signal(5), Signal(5)
        m.d.sync += [nslots.eq(k + prefetch_en), nslots_last.eq(k + prefetch_en - 1)]
        is_conv = decoded(m, "is_conv", opcode == im.Opcode.CONV)
        is_input = decoded(m, "is_input", opcode == im.Opcode.INPUT)
        is_dense = decoded(m, "is_dense", mode.conv == im.ConvMode.DENSE)
        is_max = decoded(m, "is_max", mode.conv == im.ConvMode.MAX)

        # ---------------- on-chip memories ------------------------------------------------
        rb = Memory(shape=unsigned(16 * P), depth=cfg.rb_depth, init=[])
        wram = Memory(shape=unsigned(8 * P * L), depth=cfg.w_depth, init=[])
        chan = Memory(shape=unsigned(16), depth=cfg.chan_depth, init=[])
        for name, mem in (("rb", rb), ("wram", wram), ("chan", chan)):
            m.submodules[name] = mem
        rb_w = rb.write_port(granularity=16)
        rb_r = rb.read_port()
        ew = cfg.entry_words
        wram_w = wram.write_port(granularity=16 if 8 * P * L >= 16 else 8 * P * L)
        wram_r = wram.read_port()
        chan_w = chan.write_port()
        chan_r = chan.read_port()

        # the residual of a fused add: one output row ahead, in the order the results leave
        if cfg.res_depth:
            resq = m.submodules.resq = fifo.SyncFIFOBuffered(width=16, depth=cfg.res_depth)

        # ---------------- write path and read commands (hw/engine/write_path.py) -------------
        wp = m.submodules.write_path = WritePath(cfg)
        wiring.connect(m, wp.cmd, wiring.flipped(self.mem.cmd))
        wiring.connect(m, wp.w, wiring.flipped(self.mem.w))
        room, req_ok = wp.room, wp.req_ok
        reserve, launch_conv = wp.reserve, wp.launch
        rd_start = Signal()       # a read starts (see the sequencer)
        rd_go = Signal()          # start_read asked last cycle
        rd_start_addr = Signal(im.ADDR_BITS)
        rd_start_n = Signal(24)
        m.d.comb += [wp.desc.eq(dsc), wp.is_conv.eq(is_conv), wp.ow_last.eq(OW_last),
                     wp.read.valid.eq(rd_start), wp.read.payload.addr.eq(rd_start_addr),
                     wp.read.payload.n.eq(rd_start_n)]

        # ---------------- read data ---------------------------------------------------------
        r = self.mem.r
        # The loaders see the read data one register later (rx, rxd): the port's data cross
        # the chip once more before any logic. The receive counters clear the cycle after
        # the FSM asks (rx_clear_q): no word of a new read arrives that early.
        rx = Signal()            # a word arrived (registered)
        rxd = Signal(16, reset_less=True)
        rx_cnt = Signal(24)      # words received in this phase
        rx_clear, rx_clear_q = Signal(), Signal()
        rx_to_out = Signal()     # OUTPUT op: data goes to o_stream
        m.d.comb += [
            r.ready.eq(Mux(rx_to_out, self.o_stream.ready, 1)),
            self.o_stream.valid.eq(rx_to_out & r.valid),
            self.o_stream.payload.eq(r.payload),
        ]
        m.d.sync += [rx.eq(r.valid & r.ready), rxd.eq(r.payload), rx_clear_q.eq(rx_clear)]
        with m.If(rx_clear_q):
            m.d.sync += rx_cnt.eq(0)
        with m.Elif(rx):
            m.d.sync += rx_cnt.eq(rx_cnt + 1)

        # ---------------- post pipeline (hw/engine/post.py) ----------------------------------
        post = m.submodules.post = PostPipeline(cfg)
        m.d.comb += post.desc.eq(dsc)
        if cfg.res_depth:
            m.d.comb += [post.res.payload.eq(resq.r_data), post.res.valid.eq(resq.r_rdy),
                         resq.r_en.eq(post.res.ready)]
        post_busy = post.busy

        m.d.comb += [wp.words.valid.eq(post.w.valid), wp.words.payload.eq(post.w.payload),
                     wp.elems.valid.eq(post.o.valid), wp.elems.payload.eq(post.o.payload)]
        req_init = Signal()       # the descriptor starts (the sequencer's DISPATCH)
        m.d.comb += [post.init.eq(req_init), wp.init.eq(req_init)]
        req_cnt, pool_first = wp.pool_c, wp.pool_first

        vec = m.submodules.vec = VecUnit(cfg)
        iu = m.submodules.issue = IssueUnit(cfg)
        ser = m.submodules.serializer = Serializer(cfg)

        # ---------------- loaders -----------------------------------------------------------
        ld_kind = Signal(4)     # 0 none 1 desc 2 weights 3 params 4 lut 5 chan 6 row 7 bbuf
        #                         8 residual
        ld_slot = Signal(range(max(ew, cfg.group_words, 2)))
        ld_entry = Signal(16)
        ld_wrap = Signal.like(ld_slot)    # the last slot of an entry
        with m.If(rx_clear_q):
            m.d.sync += [ld_slot.eq(0), ld_entry.eq(0)]
        with m.Elif(rx):
            with m.If(ld_slot == ld_wrap):
                m.d.sync += [ld_slot.eq(0), ld_entry.eq(ld_entry + 1)]
            with m.Else():
                m.d.sync += ld_slot.eq(ld_slot + 1)
        lp_slot = Signal(range(4 * P))    # a group record's lane words: (lane, quarter)
        m.d.comb += lp_slot.eq(ld_slot - 4)
        with m.If(rx & (ld_kind == 1)):
            for i in range(im.DESC_WORDS):
                with m.If(rx_cnt[:(im.DESC_WORDS - 1).bit_length()] == i):
                    m.d.sync += desc[i].eq(rxd)
        m.d.comb += [wram_w.addr.eq(ld_entry), wram_w.data.eq(Cat(*([rxd] * max(1, ew)))),
                     iu.hdr_w.addr.eq(ld_entry), iu.hdr_w.data.eq(Cat(*([rxd] * 4))),
                     ser.lane_w.addr.eq(Cat(lp_slot[2:], ld_entry) if P > 1 else ld_entry),
                     ser.lane_w.data.eq(Cat(*([rxd] * 4))),
                     chan_w.addr.eq(rx_cnt), chan_w.data.eq(rxd),
                     vec.buf_w.addr.eq(rx_cnt), vec.buf_w.data.eq(rxd)]
        with m.If(rx):
            with m.Switch(ld_kind):
                with m.Case(2):
                    for i in range(len(wram_w.en)):
                        m.d.comb += wram_w.en[i].eq(ld_slot == i)
                with m.Case(3):
                    for i in range(4):
                        m.d.comb += iu.hdr_w.en[i].eq(ld_slot == i)
                    for i in range(4):
                        m.d.comb += ser.lane_w.en[i].eq((ld_slot >= 4) & (lp_slot[:2] == i))
                with m.Case(4):
                    if cfg.activation == "lut":     # (the table is the post pipeline's)
                        m.d.comb += post.lut_w.en.eq(1)
                with m.Case(5):
                    m.d.comb += chan_w.en.eq(1)
                with m.Case(7):
                    m.d.comb += vec.buf_w.en.eq(1)
                with m.Case(8):
                    if cfg.res_depth:
                        m.d.comb += resq.w_en.eq(1)
        if cfg.res_depth:
            m.d.comb += resq.w_data.eq(rxd)
        if cfg.activation == "lut":
            m.d.comb += [post.lut_w.addr.eq(rx_cnt), post.lut_w.data.eq(rxd)]

        # ---------------- row loader (hw/engine/row_loader.py) -------------------------------
        CE = Signal(12)          # row-buffer entries of one pixel
        m.d.sync += CE.eq((C + P - 1) >> lP)
        rowE, row_words = dsc.row_entries, dsc.row_words
        load_base = Signal(16)   # the base entry of the slot the next row loads into
        rl = m.submodules.row_loader = RowLoader(cfg)
        m.d.comb += [rl.desc.eq(dsc), rl.ce.eq(CE), rl.base.eq(load_base),
                     rl.words.valid.eq(rx & (ld_kind == 6)), rl.words.payload.eq(rxd),
                     rl.gate.eq(chan_r.data),
                     rb_w.addr.eq(rl.rb_w.addr), rb_w.data.eq(rl.rb_w.data),
                     rb_w.en.eq(rl.rb_w.en)]
        load_busy = rl.busy

        # ---------------- issue stage (hw/engine/issue.py) and MAC array (mac_array.py) -------
        m.d.comb += [iu.desc.eq(dsc), iu.ce.eq(CE), iu.nslots.eq(nslots),
                     iu.nslots_last.eq(nslots_last), iu.ow_last.eq(OW_last),
                     iu.dense.eq(is_dense), rb_r.addr.eq(iu.rb_addr), wram_r.addr.eq(iu.w_addr)]
        mac = m.submodules.mac = MACArray(cfg)
        m.d.comb += [mac.issue.eq(iu.issue), mac.first.eq(iu.first), mac.last.eq(iu.last),
                     mac.pend.eq(iu.pend), mac.sel.eq(iu.sel), mac.wslot.eq(iu.wslot),
                     mac.nvalid.eq(iu.nvalid), mac.g.eq(iu.g), mac.valid_tap.eq(iu.valid_tap),
                     mac.dense.eq(is_dense), mac.max.eq(is_max),
                     mac.rb_data.eq(rb_r.data), mac.w_data.eq(wram_r.data),
                     iu.can_issue.eq(mac.can_issue)]

        # ---------------- serializer (hw/engine/serializer.py) -------------------------------
        wiring.connect(m, mac.o, ser.results)
        m.d.comb += [ser.act.eq(act_en), ser.room.eq(room), ser.req_ok.eq(req_ok),
                     launch_conv.eq(ser.launch)]

        # ---------------- VEC unit (hw/engine/vec_unit.py) -----------------------------------
        m.d.comb += [vec.desc.eq(dsc), vec.rdata.valid.eq(rx), vec.rdata.payload.eq(rxd),
                     vec.room.eq(room), vec.chan_data.eq(chan_r.data), vec.is_conv.eq(is_conv),
                     vec.pool_en.eq(pool_en), vec.post.valid.eq(post.o.valid),
                     vec.post.payload.eq(post.o.payload), vec.pool_c.eq(req_cnt),
                     vec.pool_first.eq(pool_first)]
        # CONV reads the gate of the arriving row word's channel; VEC the element's channel
        m.d.comb += chan_r.addr.eq(Mux(is_conv, rl.c, vec.c))

        # ---------------- INPUT op (hw/engine/input_unit.py) --------------------------------
        inp = m.submodules.input = InputUnit(cfg)
        wiring.connect(m, wiring.flipped(self.i_stream), inp.i_stream)
        m.d.comb += [inp.desc.eq(dsc), inp.room.eq(room)]
        with m.If(inp.o.valid):
            m.d.comb += launch_conv.eq(1)

        # ---------------- post pipeline input: per op ----------------------------------------
        with m.If(is_conv):
            m.d.comb += [post.i.valid.eq(ser.o.valid), post.i.payload.eq(ser.o.payload)]
        with m.Elif(is_input):
            m.d.comb += [post.i.valid.eq(inp.o.valid), post.i.payload.eq(inp.o.payload)]
        with m.Else():
            m.d.comb += [post.i.valid.eq(vec.o.valid), post.i.payload.eq(vec.o.payload)]

        # ---------------- sequencer --------------------------------------------------------
        pc = Signal(16)
        pc_addr = Signal(im.ADDR_BITS)     # pc * DESC_WORDS
        m.d.comb += self.pc.eq(pc)
        drained, drained_q, next_seen = Signal(), Signal(), Signal()
        m.d.sync += drained_q.eq(drained)
        m.d.comb += drained.eq(~mac.busy & ~mac.o.valid & ~ser.busy
                               & wp.idle & ~post_busy
                               & ~vec.busy & ~load_busy
                               & ~rd_start & ~rd_go)
        # ROW decides from registers: whether another input row is needed (and exists) and
        # whether the output rows are done; it waits two cycles after top / next_row / oy
        # change (row_settle).
        row_more, rows_done = Signal(), Signal()
        row_settle = Signal(2)
        next_row = Signal(16)
        need = Signal(signed(18))      # the last input row the output row oy needs
        m.d.sync += [need.eq(iu.top + k - 1), rows_done.eq(iu.oy == OH),
                     row_more.eq((next_row < H) & (next_row.as_signed() <= need))]
        # The prefetch: while the array works on output row oy, the next input row loads into
        # the (k + 1)-th slot if it is free (next_row <= top + k) and exists; one a row.
        # pf_more is a register: top and next_row have settled when ISSUE starts, and after
        # the one prefetch of a row pf_used holds it off.
        pf_more, pf_busy, pf_used = Signal(), Signal(), Signal()
        m.d.sync += pf_more.eq(prefetch_en & (next_row < H)
                               & (next_row.as_signed() <= iu.top + k))
        row_ptr = Signal(im.ADDR_BITS)
        load_slot = Signal(4)
        # The fused residual add: before an output row issues, its residual row (r_words
        # words) is read into the residual FIFO, once the FIFO has room for it (res_room, a
        # register: only the post pipeline's pops change the level meanwhile).
        res_ptr = Signal(im.ADDR_BITS)
        res_loaded, res_room = Signal(), Signal()
        res_limit = Signal(range(cfg.res_depth + 1))
        m.d.sync += res_limit.eq(Mux(dsc.r_words > cfg.res_depth, 0,
                                     cfg.res_depth - dsc.r_words))
        if cfg.res_depth:
            m.d.sync += res_room.eq((resq.level <= res_limit) & (dsc.r_words <= cfg.res_depth))

        # start_read registers which of its call sites asked (rd_sel, rd_go); the next cycle
        # takes that site's address and count (a multiplexer on a register, not on the FSM's
        # state), and the read starts the cycle after (rd_start). The receive counters clear
        # the cycle after start_read (no word of the new read can arrive before).
        # rd_done: every word of the last read has arrived (a register: the wait states see
        # it one cycle after the last word).
        rd_expect = Signal(24)
        rd_done = Signal()
        rd_sites = []                      # (address, count) of each start_read call
        rd_sel = Signal(5)
        m.d.sync += [rd_start.eq(0), rd_go.eq(0),
                     rd_done.eq((rx_cnt == rd_expect) & ~wp.reading & ~rd_start & ~rd_go)]

        def start_read(addr, n, kind, wrap=1):
            m.d.comb += rx_clear.eq(1)
            m.d.sync += [rd_go.eq(1), rd_sel.eq(len(rd_sites)), rd_done.eq(0),
                         ld_kind.eq(kind), ld_wrap.eq(wrap - 1)]
            rd_sites.append((addr, n))

        def row_loaded():
            last_slot = load_slot == nslots_last
            m.d.sync += [next_row.eq(next_row + 1), row_ptr.eq(row_ptr + row_words),
                         load_slot.eq(Mux(last_slot, 0, load_slot + 1)),
                         load_base.eq(Mux(last_slot, 0, load_base + rowE)),
                         ld_kind.eq(0), row_settle.eq(2)]

        with m.FSM():
            with m.State("FETCH"):
                start_read(pc_addr, im.DESC_WORDS, 1)
                m.next = "FETCH_WAIT"
            with m.State("FETCH_WAIT"):
                with m.If(rd_done):
                    m.d.sync += ld_kind.eq(0)
                    m.next = "DISPATCH"
            with m.State("DISPATCH"):
                m.d.comb += req_init.eq(1)
                m.d.comb += inp.start.eq(1)
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
                m.d.comb += inp.go.eq(1)
                with m.If(inp.o.valid):
                    m.d.sync += self.busy.eq(1)
                with m.If(~inp.more & ~inp.o.valid):
                    m.next = "NEXT"
            # ---- OUTPUT
            with m.State("OUTPUT"):
                start_read(dsc.a_addr, n_elems, 0)
                m.next = "OUTPUT_WAIT"
            with m.State("OUTPUT_WAIT"):
                m.d.comb += rx_to_out.eq(1)
                with m.If(rd_done):
                    m.next = "NEXT"
            # ---- CONV
            with m.State("CONV_W"):
                start_read(dsc.w_addr, dsc.w_words, 2, ew)
                m.next = "CONV_W_WAIT"
            with m.State("CONV_W_WAIT"):
                with m.If(rd_done):
                    m.next = "CONV_P"
            with m.State("CONV_P"):
                start_read(dsc.p_addr, dsc.p_words, 3, cfg.group_words)
                m.next = "CONV_P_WAIT"
            with m.State("CONV_P_WAIT"):
                with m.If(rd_done):
                    m.next = "CONV_LUT"
            with m.State("CONV_LUT"):
                with m.If(act_en & (cfg.activation == "lut")):
                    start_read(dsc.lut_addr, dsc.lut_n, 4)
                m.next = "CONV_LUT_WAIT"
            with m.State("CONV_LUT_WAIT"):
                with m.If(rd_done):
                    m.d.sync += ld_kind.eq(0)
                    m.next = "CONV_G"
            with m.State("CONV_G"):
                with m.If(scale_en):
                    start_read(dsc.b_addr, C, 5)
                m.next = "CONV_G_WAIT"
            with m.State("CONV_G_WAIT"):
                with m.If(rd_done):
                    m.d.comb += iu.conv_start.eq(1)
                    m.d.sync += [next_row.eq(0), row_ptr.eq(dsc.a_addr), load_slot.eq(0),
                                 load_base.eq(0), ld_kind.eq(0), pf_used.eq(0),
                                 res_ptr.eq(dsc.r_addr), res_loaded.eq(0)]
                    m.d.sync += row_settle.eq(2)
                    m.next = "ROW"
            with m.State("ROW"):
                with m.If(pf_busy):
                    pass              # the prefetch finishes (below), then ROW settles again
                with m.Elif(row_settle != 0):
                    m.d.sync += row_settle.eq(row_settle - 1)
                with m.Elif(rows_done):
                    m.next = "NEXT"
                with m.Elif(row_more):
                    start_read(row_ptr, row_words, 6)
                    m.d.comb += rl.start.eq(1)
                    m.next = "ROW_LOAD"
                with m.Elif(resid_en & ~res_loaded):
                    with m.If(res_room):
                        start_read(res_ptr, dsc.r_words, 8)
                        m.next = "ROW_RES"
                with m.Else():
                    m.d.comb += iu.row_start.eq(1)
                    m.next = "ISSUE"
            with m.State("ROW_LOAD"):
                with m.If(rd_done & ~load_busy):
                    row_loaded()
                    m.next = "ROW"
            with m.State("ROW_RES"):
                with m.If(rd_done):
                    m.d.sync += [res_loaded.eq(1), res_ptr.eq(res_ptr + dsc.r_words),
                                 ld_kind.eq(0)]
                    m.next = "ROW"
            with m.State("ISSUE"):
                # the issue stage runs the row (hw/engine/issue.py)
                with m.If(pf_more & ~pf_used):
                    start_read(row_ptr, row_words, 6)
                    m.d.comb += rl.start.eq(1)
                    m.d.sync += [pf_busy.eq(1), pf_used.eq(1)]
                with m.If(iu.row_end):
                    m.next = "ROW"
            # ---- VEC
            with m.State("VEC_PRE"):
                m.d.comb += vec.start.eq(1)
                with m.Switch(mode.vec):
                    with m.Case(im.VecOp.SCALE):
                        start_read(dsc.b_addr, C, 5)
                    with m.Case(im.VecOp.PRELU):
                        start_read(dsc.w_addr, C, 5)
                    with m.Case(im.VecOp.ACT):
                        if cfg.activation == "lut":
                            start_read(dsc.lut_addr, dsc.lut_n, 4)
                m.next = "VEC_PRE_WAIT"
            with m.State("VEC_PRE_WAIT"):
                with m.If(rd_done):     # add and pool read nothing here
                    m.d.sync += ld_kind.eq(0)
                    m.next = "VEC_CHUNK"
            with m.State("VEC_CHUNK"):
                n = vec.next_n
                with m.If(~vec.settled):
                    m.d.comb += vec.settle.eq(1)
                with m.Elif(vec.all_done):
                    with m.If(vec.is_pool):
                        m.next = "VEC_POOL"
                    with m.Else():
                        m.next = "NEXT"
                with m.Elif(vec.is_pool | (vec.fits & req_ok)):
                    m.d.comb += vec.chunk.eq(1)
                    with m.If(~vec.is_pool):
                        m.d.comb += reserve.eq(n)
                    with m.If(vec.is_add):
                        start_read(vec.b_addr, n, 7)
                        m.next = "VEC_B"
                    with m.Else():
                        start_read(vec.a_addr, n, 0)
                        m.next = "VEC_A"
            with m.State("VEC_B"):
                with m.If(rd_done):
                    start_read(vec.a_addr, vec.chunk_n, 0)
                    m.next = "VEC_A"
            with m.State("VEC_A"):
                m.d.comb += vec.active.eq(1)
                with m.If(rd_done):
                    m.d.comb += vec.chunk_done.eq(1)
                    m.next = "VEC_CHUNK"
            with m.State("VEC_POOL"):
                with m.If(~vec.a_busy & (room >= C + 9) & req_ok):
                    m.d.comb += [reserve.eq(C), vec.pool_start.eq(1)]
                    m.next = "VEC_POOL_OUT"
            with m.State("VEC_POOL_OUT"):
                m.d.comb += vec.pool_out.eq(1)
                with m.If(vec.c_last):
                    m.next = "NEXT"
        with m.If(iu.row_end):     # (after the state machine: it takes precedence)
            m.d.sync += [pf_used.eq(0), row_settle.eq(2), res_loaded.eq(0)]
        with m.If(pf_busy & rd_done & ~load_busy & ~rd_go & ~rd_start):
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
