"""The engine's element-wise unit (VEC descriptors) and its channel sums
(:mod:`hw.engine.layer_engine`).

A VEC descriptor runs in chunks of at most ``config.chunk`` elements: the sequencer reads the
chunk's other operand (residual add) into the operand buffer, then streams operand ``a``
through this unit (``rdata`` while ``active``), which hands each element with its operands to
the post pipeline (``o``): residual add ``(x << sa) + (y << sb)``, SE channel scale ``x * g``,
PReLU ``x * slope >> shift`` for negative ``x``, stand-alone activation, and the average pool:
every element adds to its channel's sum (the sum RAM), and the epilogue (``pool_out``) hands
the ``C`` sums over with ``* mult >> shift``. The sum RAM also takes a CONV's fused pool
(``Flag.POOL``): every element the post pipeline writes (``post``) adds to the sum of its
channel (``pool_c``), two stages after the post pipeline.

The sequencer drives the chunks (``start``, ``settle``, ``chunk``, ``chunk_done``,
``pool_start``, ``active``, ``pool_out``, one state each) and reads the next chunk's length,
addresses and admission from registers here (``next_n``, ``a_addr``, ``b_addr``, ``fits``,
``all_done``), three cycles after ``chunk_done`` (``settled``).
"""
from amaranth import Module, Mux, Signal, signed, unsigned
from amaranth.lib import stream, wiring
from amaranth.lib.memory import Memory, WritePort
from amaranth.lib.wiring import In, Out

from firmware import image as im
from firmware.image import EngineConfig

from hw.engine.mac_array import ACC_W
from hw.engine.post import Element, Operands
from hw.engine.stages import decoded, last_of


class VecUnit(wiring.Component):
    """Element-wise ops and channel sums; see the module docstring.

    Members
    -------
    desc : In(Descriptor)
    start, settle, chunk, chunk_done, pool_start : In(1)
        Sequencer pulses: a VEC descriptor starts; one settling cycle of the chunk registers;
        a chunk of ``next_n`` elements starts; the chunk's elements have all arrived; the
        pool epilogue starts.
    active, pool_out : In(1)
        Sequencer levels: operand ``a`` is arriving on ``rdata``; the pool epilogue.
    rdata : In(stream.Signature(16), always ready)
        The memory's read data (registered).
    room : In(range(2 * fifo_depth + 1))
        Room in the write FIFO (the write path's register).
    chan_data : In(16)
        The channel RAM's data at channel ``c`` (gate or slope), one cycle after ``c``.
    buf_w : Out(WritePort.Signature)
        The operand buffer's write port, as a memory's (the loader fills it).
    is_conv, pool_en : In(1)
        The descriptor is a CONV (the sum RAM belongs to its fused pool); its pool flag.
    post : In(stream of Element, always ready)
        Every element the post pipeline writes.
    pool_c, pool_first : In(16), In(1)
        The channel of the post pipeline's element, and whether it is of the descriptor's
        first output pixel (the sums restart).
    o : Out(stream of Operands, always ready)
        The post pipeline's operands.
    c : Out(16)
        The channel of the element arriving (the channel RAM's address).
    next_n, chunk_n : Out(16)
        The next chunk's length; the current chunk's length.
    a_addr, b_addr : Out(ADDR_BITS)
        The next chunk's operand addresses.
    fits, all_done, settled, c_last : Out(1)
        The next chunk fits the write FIFO; every element is done; the registers above are
        valid; the channel arriving is the last (pool epilogue).
    is_add, is_pool : Out(1)
        The VEC op (registered decodes).
    a_busy, busy : Out(1)
        An element of operand ``a`` is in the unit; any element is (or a pool update).
    """

    def __init__(self, config: EngineConfig):
        self.cfg = config
        super().__init__({
            "desc": In(im.Descriptor),
            "start": In(1), "settle": In(1), "chunk": In(1), "chunk_done": In(1),
            "pool_start": In(1), "active": In(1), "pool_out": In(1),
            "rdata": In(stream.Signature(16, always_ready=True)),
            "room": In(range(config.fifo_depth * 2 + 1)),
            "chan_data": In(16),
            "buf_w": Out(WritePort.Signature(addr_width=(config.chunk - 1).bit_length(),
                                             shape=unsigned(16))),
            "is_conv": In(1), "pool_en": In(1),
            "post": In(stream.Signature(Element, always_ready=True)),
            "pool_c": In(16), "pool_first": In(1),
            "o": Out(stream.Signature(Operands, always_ready=True)),
            "c": Out(16),
            "next_n": Out(16), "chunk_n": Out(16),
            "a_addr": Out(im.ADDR_BITS), "b_addr": Out(im.ADDR_BITS),
            "fits": Out(1), "all_done": Out(1), "settled": Out(1), "c_last": Out(1),
            "is_add": Out(1), "is_pool": Out(1),
            "a_busy": Out(1), "busy": Out(1),
        })

    def elaborate(self, platform):
        cfg = self.cfg
        m = Module()
        dsc = self.desc
        n_elems = dsc.n_elems
        C_last = last_of(m, "C_last", dsc.C)
        is_vec = dsc.opcode == im.Opcode.VEC
        v_add, v_scale, v_prelu, v_act, v_pool = (
            decoded(m, f"vec_{n}", is_vec & (dsc.mode.vec == code)) for n, code in (
                ("add", im.VecOp.ADD), ("scale", im.VecOp.SCALE), ("prelu", im.VecOp.PRELU),
                ("act", im.VecOp.ACT), ("pool", im.VecOp.AVGPOOL)))
        m.d.comb += [self.is_add.eq(v_add), self.is_pool.eq(v_pool)]

        # the operand buffer (residual add's other operand, one chunk) and the channel sums
        bbuf = m.submodules.bbuf = Memory(shape=unsigned(16), depth=cfg.chunk, init=[])
        accram = m.submodules.accram = Memory(shape=unsigned(ACC_W), depth=cfg.chan_depth,
                                              init=[])
        bbuf_w = bbuf.write_port()
        bbuf_r = bbuf.read_port()
        acc_w = accram.write_port()
        acc_r = accram.read_port(transparent_for=(acc_w,))
        m.d.comb += [bbuf_w.addr.eq(self.buf_w.addr), bbuf_w.data.eq(self.buf_w.data),
                     bbuf_w.en.eq(self.buf_w.en)]

        rx, rxd = self.rdata.valid, self.rdata.payload
        v_first_pass = Signal()   # avgpool: first pixel (overwrite sums)
        v_c = Signal(16)          # channel of the element arriving
        v_i = Signal(16)          # index in chunk
        v_idx = Signal(24)        # element index
        v_chunk_n = Signal(16)
        v_chunk_last = Signal(16)
        v_done = Signal(24)       # elements finished before this chunk
        # the next chunk's length and whether it fits the write FIFO, registers: VEC_CHUNK
        # waits three cycles (v_settle) after v_done changes before it uses them
        v_next_n = Signal(16)
        v_fits = Signal()
        v_settle = Signal(2)
        v_left = Signal(24)       # a register: VEC_CHUNK waits a third cycle (v_settle == 3)
        m.d.sync += v_left.eq(n_elems - v_done)
        v_a_addr, v_b_addr = Signal(im.ADDR_BITS), Signal(im.ADDR_BITS)
        v_all_done = Signal()
        m.d.sync += [v_all_done.eq(v_done == n_elems),
                     v_next_n.eq(Mux(v_left > cfg.chunk, cfg.chunk, v_left)),
                     v_fits.eq(self.room >= v_next_n + 9),
                     v_a_addr.eq(dsc.a_addr + v_done), v_b_addr.eq(dsc.b_addr + v_done)]
        m.d.comb += [self.settled.eq(v_settle == 3), self.next_n.eq(v_next_n),
                     self.chunk_n.eq(v_chunk_n), self.fits.eq(v_fits),
                     self.all_done.eq(v_all_done), self.a_addr.eq(v_a_addr),
                     self.b_addr.eq(v_b_addr), self.c.eq(v_c), self.c_last.eq(v_c == C_last)]
        vx = Signal(signed(16))
        vx_v, vx_flag = Signal(), Signal()
        vc_d = Signal(16)
        # the sum RAM: a fused average pool reads the running sum of the channel leaving the
        # post pipeline (its index in the pixel)
        m.d.comb += [bbuf_r.addr.eq(v_i), acc_r.addr.eq(Mux(self.is_conv, self.pool_c, v_c))]
        v_in = Signal()
        m.d.comb += v_in.eq((self.active & rx) | self.pool_out)
        m.d.sync += [vx.eq(rxd), vx_v.eq(v_in & ~self.pool_out), vc_d.eq(v_c),
                     vx_flag.eq(Mux(self.pool_out, v_c == C_last, v_i == v_chunk_last))]
        vp_v = Signal()
        m.d.sync += vp_v.eq(v_in & self.pool_out)
        with m.If(v_in):
            m.d.sync += [v_c.eq(Mux(v_c == C_last, 0, v_c + 1)), v_i.eq(v_i + 1),
                         v_idx.eq(v_idx + 1)]
            with m.If(v_idx == C_last):
                m.d.sync += v_first_pass.eq(0)
        # the sequencer's pulses (after the counting above: they take precedence)
        with m.If(self.start):
            m.d.sync += [v_c.eq(0), v_idx.eq(0), v_done.eq(0), v_first_pass.eq(1),
                         v_settle.eq(0)]
        with m.If(self.settle):
            m.d.sync += v_settle.eq(v_settle + 1)
        with m.If(self.chunk):
            m.d.sync += [v_chunk_n.eq(v_next_n), v_chunk_last.eq(v_next_n - 1), v_i.eq(0),
                         v_settle.eq(0)]
        with m.If(self.chunk_done):
            m.d.sync += v_done.eq(v_done + v_chunk_n)
        with m.If(self.pool_start):
            m.d.sync += v_c.eq(0)
        v_first_d = Signal()
        m.d.sync += v_first_d.eq(v_first_pass)
        # V2: the element, its flags and the three RAM outputs it needs (gate, other operand,
        # channel sum) registered before any logic (a block RAM's output is slow)
        v2_x = Signal(signed(16))
        v2_v, v2_pv, v2_flag, v2_first = Signal(), Signal(), Signal(), Signal()
        v2_c = Signal(16)
        v2_chan, v2_buf = Signal(signed(16)), Signal(signed(16))
        v2_acc = Signal(signed(ACC_W), reset_less=True)
        m.d.sync += [v2_x.eq(vx), v2_v.eq(vx_v), v2_pv.eq(vp_v), v2_flag.eq(vx_flag),
                     v2_first.eq(v_first_d), v2_c.eq(vc_d), v2_chan.eq(self.chan_data),
                     v2_buf.eq(bbuf_r.data), v2_acc.eq(acc_r.data)]
        # fused pool: two stages after the post pipeline (read, registered data), the
        # read-modify-write of the sum of the channel just written (sums restart on the
        # descriptor's first output pixel). Both read-modify-writes need 3 cycles between
        # two updates of one channel: the compiler asks for at least 3 channels.
        p6_v, p6_first = Signal(), Signal()
        p6_y = Signal(signed(16))
        p6_c = Signal(16)
        m.d.sync += [p6_v.eq(self.post.valid & self.is_conv & self.pool_en),
                     p6_y.eq(self.post.payload.data), p6_c.eq(self.pool_c),
                     p6_first.eq(self.pool_first)]
        p7_v, p7_first = Signal(), Signal()
        p7_y = Signal(signed(16))
        p7_c = Signal(16)
        p7_acc = Signal(signed(ACC_W), reset_less=True)
        m.d.sync += [p7_v.eq(p6_v), p7_y.eq(p6_y), p7_c.eq(p6_c), p7_first.eq(p6_first),
                     p7_acc.eq(acc_r.data)]
        with m.If(self.is_conv):
            m.d.comb += [acc_w.addr.eq(p7_c),
                         acc_w.data.eq(Mux(p7_first, p7_y, p7_acc + p7_y)),
                         acc_w.en.eq(p7_v)]
        with m.Else():
            m.d.comb += [acc_w.addr.eq(v2_c),
                         acc_w.data.eq(Mux(v2_first, v2_x, v2_acc + v2_x)),
                         acc_w.en.eq(v2_v & v_pool)]
        m.d.comb += [self.a_busy.eq(vx_v | v2_v),
                     self.busy.eq(vx_v | vp_v | v2_v | v2_pv | p6_v | p7_v)]

        # the post pipeline's operands, per op
        op = self.o.payload
        m.d.comb += [op.last.eq(v2_flag), op.act.eq(v_act),
                     self.o.valid.eq(Mux(v_pool, v2_pv, v2_v)), op.s.eq(dsc.shift)]
        with m.If(v_add):
            m.d.comb += [op.x.eq(v2_x), op.y.eq(v2_buf), op.sa.eq(dsc.sa[:4]),
                         op.sb.eq(dsc.sb[:4]), op.m.eq(1)]
        with m.Elif(v_scale):
            m.d.comb += [op.x.eq(v2_x), op.m.eq(v2_chan)]
        with m.Elif(v_prelu):
            m.d.comb += [op.x.eq(v2_x), op.m.eq(Mux(v2_x < 0, v2_chan, 1)),
                         op.s.eq(Mux(v2_x < 0, dsc.shift, 0))]
        with m.Elif(v_act):
            m.d.comb += [op.x.eq(v2_x), op.m.eq(1), op.s.eq(0)]
        with m.Elif(v_pool):
            m.d.comb += [op.x.eq(v2_acc), op.m.eq(dsc.mult)]
        return m
