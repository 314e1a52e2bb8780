"""The engine: a sequencer and one datapath over one external-memory port, composed of
components of one job each.

    from firmware.image import EngineConfig
    engine = Engine(EngineConfig(lanes=16, in_lanes=8))

The firmware image (:mod:`firmware.compiler`, layout in :mod:`firmware.image` and
docs/ENGINE.md) holds a descriptor table at word 0. The sequencer (:mod:`hw.engine.sequencer`)
fetches one descriptor at a time and runs it:

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

The components, every one in its own module: the sequencer (:mod:`hw.engine.sequencer`), the
read-data demultiplexer with the descriptor registers (:mod:`hw.engine.loader`), the issue
stage (:mod:`hw.engine.issue`), the multiplier array (:mod:`hw.engine.mac_array`), the
serializer (:mod:`hw.engine.serializer`), the post pipeline (:mod:`hw.engine.post`), the
element-wise unit (:mod:`hw.engine.vec_unit`), the INPUT op (:mod:`hw.engine.input_unit`),
the row loader (:mod:`hw.engine.row_loader`) and the write path with the memory commands
(:mod:`hw.engine.write_path`). This module holds what several of them share: the row buffer,
the weight RAM, the channel RAM (gates, slopes), the residual FIFO and the descriptor decodes;
and connects them.

Every pipeline is free-running; admission is by credits (room in the write FIFO and in the
accumulator FIFO) so nothing inside ever stalls. ``o_stream`` back-pressure holds the memory
read data; ``i_stream`` is taken whenever there is room.
"""
from amaranth import Module, Mux, Signal, signed, unsigned
from amaranth.lib import fifo, stream, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from firmware import image as im
from firmware.image import EngineConfig

from hw.engine.input_unit import InputUnit
from hw.engine.issue import IssueUnit
from hw.engine.loader import Loader
from hw.engine.mac_array import MACArray
from hw.engine.post import PostPipeline
from hw.engine.row_loader import RowLoader
from hw.engine.sequencer import Sequencer
from hw.engine.serializer import Serializer
from hw.engine.sliced_ram import SlicedRAM
from hw.engine.stages import decoded, last_of, log2
from hw.engine.vec_unit import VecUnit
from hw.engine.write_path import WritePath
from hw.memory.port import MemoryPort

# Widest slice of the row buffer and of the weight RAM, each slice with its own read-address
# register (hw/engine/sliced_ram.py): 64 bits of the row buffer (2048 deep) are 8 DP16KD, 128
# of the weight RAM (512 deep) 4
RB_SLICE_BITS = 64
W_SLICE_BITS = 128

class Engine(wiring.Component):
    """Sequencer + datapath, composed of components; see the module docstring.

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

        # ---------------- sequencer (hw/engine/sequencer.py) and loader (loader.py) ----------
        seq = m.submodules.sequencer = Sequencer(cfg)
        ld = m.submodules.loader = Loader(cfg)
        wiring.connect(m, wiring.flipped(self.mem.r), ld.r)
        wiring.connect(m, ld.o_stream, wiring.flipped(self.o_stream))
        dsc = ld.desc                  # the descriptor registers, by field (firmware.image)
        m.d.comb += [seq.desc.eq(dsc), seq.count.eq(ld.count), ld.to_out.eq(seq.to_out),
                     ld.clear.eq(seq.clear), ld.kind.eq(seq.kind), ld.wrap.eq(seq.wrap),
                     self.pc.eq(seq.pc), self.frame_done.eq(seq.frame_done),
                     self.busy.eq(seq.busy)]
        opcode, mode, flags = dsc.opcode, dsc.mode, dsc.flags
        OW_last = last_of(m, "OW_last", dsc.OW)
        is_conv = decoded(m, "is_conv", opcode == im.Opcode.CONV)
        is_input = decoded(m, "is_input", opcode == im.Opcode.INPUT)
        is_dense = decoded(m, "is_dense", mode.conv == im.ConvMode.DENSE)
        is_max = decoded(m, "is_max", mode.conv == im.ConvMode.MAX)

        # ---------------- on-chip memories ------------------------------------------------
        # the row buffer and the weight RAM, read by the issue stage's addresses, in slices
        rb = m.submodules.rb = SlicedRAM(width=16 * P, depth=cfg.rb_depth, granularity=16,
                                         slice_bits=RB_SLICE_BITS)
        w_bits = 8 * P * L
        wram = m.submodules.wram = SlicedRAM(width=w_bits, depth=cfg.w_depth,
                                             granularity=min(16, w_bits),
                                             slice_bits=W_SLICE_BITS)
        wiring.connect(m, ld.wram_w, wram.w)
        chan = m.submodules.chan = Memory(shape=unsigned(16), depth=cfg.chan_depth, init=[])
        chan_w = chan.write_port()
        chan_r = chan.read_port()
        m.d.comb += [chan_w.addr.eq(ld.chan_w.addr), chan_w.data.eq(ld.chan_w.data),
                     chan_w.en.eq(ld.chan_w.en)]

        # the residual of a fused add: one output row ahead, in the order the results leave
        if cfg.res_depth:
            resq = m.submodules.resq = fifo.SyncFIFOBuffered(width=16, depth=cfg.res_depth)
            m.d.comb += [resq.w_data.eq(ld.res.payload), resq.w_en.eq(ld.res.valid),
                         seq.res_level.eq(resq.level)]

        # ---------------- write path and read commands (hw/engine/write_path.py) -------------
        wp = m.submodules.write_path = WritePath(cfg)
        wiring.connect(m, wp.cmd, wiring.flipped(self.mem.cmd))
        wiring.connect(m, wp.w, wiring.flipped(self.mem.w))
        wiring.connect(m, seq.read, wp.read)
        room, req_ok = wp.room, wp.req_ok
        launch_conv = wp.launch
        m.d.comb += [wp.desc.eq(dsc), wp.is_conv.eq(is_conv), wp.ow_last.eq(OW_last),
                     wp.reserve.eq(seq.reserve), seq.reading.eq(wp.reading),
                     seq.room.eq(room), seq.req_ok.eq(req_ok)]

        # ---------------- post pipeline (hw/engine/post.py) ----------------------------------
        post = m.submodules.post = PostPipeline(cfg)
        m.d.comb += post.desc.eq(dsc)
        if cfg.res_depth:
            m.d.comb += [post.res.payload.eq(resq.r_data), post.res.valid.eq(resq.r_rdy),
                         resq.r_en.eq(post.res.ready)]
        if cfg.activation == "lut":
            wiring.connect(m, ld.lut_w, post.lut_w)
        m.d.comb += [wp.words.valid.eq(post.w.valid), wp.words.payload.eq(post.w.payload),
                     wp.elems.valid.eq(post.o.valid), wp.elems.payload.eq(post.o.payload),
                     post.init.eq(seq.init), wp.init.eq(seq.init)]

        vec = m.submodules.vec = VecUnit(cfg)
        iu = m.submodules.issue = IssueUnit(cfg)
        ser = m.submodules.serializer = Serializer(cfg)
        wiring.connect(m, ld.hdr_w, iu.hdr_w)
        wiring.connect(m, ld.lane_w, ser.lane_w)
        wiring.connect(m, ld.buf_w, vec.buf_w)

        # ---------------- row loader (hw/engine/row_loader.py) -------------------------------
        CE = Signal(12)          # row-buffer entries of one pixel
        m.d.sync += CE.eq((dsc.C + P - 1) >> lP)
        rl = m.submodules.row_loader = RowLoader(cfg)
        wiring.connect(m, ld.rows, rl.words)
        m.d.comb += [rl.desc.eq(dsc), rl.ce.eq(CE), rl.base.eq(seq.load_base),
                     rl.start.eq(seq.load_start), rl.gate.eq(chan_r.data),
                     seq.load_busy.eq(rl.busy)]
        wiring.connect(m, rl.rb_w, rb.w)

        # ---------------- issue stage (hw/engine/issue.py) and MAC array (mac_array.py) -------
        m.d.comb += [iu.desc.eq(dsc), iu.ce.eq(CE), iu.nslots.eq(seq.nslots),
                     iu.nslots_last.eq(seq.nslots_last), iu.ow_last.eq(OW_last),
                     iu.dense.eq(is_dense), rb.r_addr.eq(iu.rb_addr), wram.r_addr.eq(iu.w_addr),
                     iu.conv_start.eq(seq.conv_start), iu.row_start.eq(seq.row_start),
                     seq.top.eq(iu.top), seq.oy.eq(iu.oy), seq.row_end.eq(iu.row_end)]
        mac = m.submodules.mac = MACArray(cfg)
        m.d.comb += [mac.issue.eq(iu.issue), mac.first.eq(iu.first), mac.last.eq(iu.last),
                     mac.pend.eq(iu.pend), mac.sel.eq(iu.sel), mac.wslot.eq(iu.wslot),
                     mac.nvalid.eq(iu.nvalid), mac.g.eq(iu.g), mac.valid_tap.eq(iu.valid_tap),
                     mac.dense.eq(is_dense), mac.max.eq(is_max),
                     mac.rb_data.eq(rb.r_data), mac.w_data.eq(wram.r_data),
                     iu.can_issue.eq(mac.can_issue)]

        # ---------------- serializer (hw/engine/serializer.py) -------------------------------
        wiring.connect(m, mac.o, ser.results)
        m.d.comb += [ser.act.eq(flags.act), ser.room.eq(room), ser.req_ok.eq(req_ok),
                     launch_conv.eq(ser.launch)]

        # ---------------- VEC unit (hw/engine/vec_unit.py) -----------------------------------
        wiring.connect(m, ld.data, vec.rdata)
        m.d.comb += [vec.desc.eq(dsc),
                     vec.room.eq(room), vec.chan_data.eq(chan_r.data), vec.is_conv.eq(is_conv),
                     vec.pool_en.eq(flags.pool), vec.post.valid.eq(post.o.valid),
                     vec.post.payload.eq(post.o.payload), vec.pool_c.eq(wp.pool_c),
                     vec.pool_first.eq(wp.pool_first)]
        m.d.comb += [vec.start.eq(seq.vec_start), vec.settle.eq(seq.vec_settle),
                     vec.chunk.eq(seq.vec_chunk), vec.chunk_done.eq(seq.vec_chunk_done),
                     vec.pool_start.eq(seq.vec_pool_start), vec.active.eq(seq.vec_active),
                     vec.pool_out.eq(seq.vec_pool_out)]
        for name in ("next_n", "chunk_n", "a_addr", "b_addr", "fits", "all_done", "settled",
                     "c_last", "is_add", "is_pool", "a_busy"):
            m.d.comb += getattr(seq, name).eq(getattr(vec, name))
        # CONV reads the gate of the arriving row word's channel; VEC the element's channel
        m.d.comb += chan_r.addr.eq(Mux(is_conv, rl.c, vec.c))

        # ---------------- INPUT op (hw/engine/input_unit.py) --------------------------------
        inp = m.submodules.input = InputUnit(cfg)
        wiring.connect(m, wiring.flipped(self.i_stream), inp.i_stream)
        m.d.comb += [inp.desc.eq(dsc), inp.room.eq(room), inp.start.eq(seq.inp_start),
                     inp.go.eq(seq.inp_go), seq.inp_valid.eq(inp.o.valid),
                     seq.inp_more.eq(inp.more)]
        with m.If(inp.o.valid):
            m.d.comb += launch_conv.eq(1)

        # ---------------- post pipeline input: per op ----------------------------------------
        with m.If(is_conv):
            m.d.comb += [post.i.valid.eq(ser.o.valid), post.i.payload.eq(ser.o.payload)]
        with m.Elif(is_input):
            m.d.comb += [post.i.valid.eq(inp.o.valid), post.i.payload.eq(inp.o.payload)]
        with m.Else():
            m.d.comb += [post.i.valid.eq(vec.o.valid), post.i.payload.eq(vec.o.payload)]

        # the sequencer's drained condition: nothing in any pipeline
        m.d.comb += seq.idle.eq(~mac.busy & ~mac.o.valid & ~ser.busy & wp.idle & ~post.busy
                                & ~vec.busy & ~rl.busy)
        return m
