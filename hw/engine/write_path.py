"""The engine's side of the memory port's commands: the write path and the read commands
(:mod:`hw.engine.layer_engine`).

Words from the post pipeline (``words``) collect in the write FIFO; its elements (``elems``)
make the write requests: a flagged element ends a pixel (CONV) or a chunk. A CONV that writes
whole pixels (``n_out == OC``: its output is contiguous) gathers pixels into one request while
another pixel fits ``gather_words``, up to its row's end; otherwise a request per pixel, the
next one ``OC`` words on. A request becomes commands of at most ``max_burst`` words, each
issued only when all its words are in the write FIFO; writes have priority on the port, a read
(``read``: address and words, from the sequencer) goes out in commands when no write waits.

Admission is by credits: ``room`` is the write FIFO's room less the elements admitted
(``reserve`` for a chunk, ``launch`` one element) and not yet written, a register one cycle
old; ``req_ok`` says the request FIFO has room for another chunk's or pixel's request.
"""
from amaranth import Cat, Const, Module, Mux, Signal
from amaranth.lib import data, fifo, stream, wiring
from amaranth.lib.wiring import In, Out

from firmware import image as im
from firmware.image import EngineConfig

from hw.engine.post import Element
from hw.engine.stages import decoded
from hw.memory.port import MemoryPort

REQ_DEPTH = 64


class WritePath(wiring.Component):
    """Write FIFO, write requests, command arbiter; see the module docstring.

    Members
    -------
    desc : In(Descriptor)
    init, is_conv : In(1)
        Descriptor start (the requests begin at ``out_addr``); the descriptor is a CONV.
    ow_last : In(16)
        ``OW - 1`` (the end of an output row).
    words : In(stream.Signature(16), always ready)
        Words for memory, in request order.
    elems : In(stream of Element, always ready)
        Every element written (``last`` ends a pixel or a chunk).
    reserve : In(range(fifo_depth + 1))
        Elements of a chunk admitted this cycle.
    launch : In(1)
        One element admitted this cycle.
    read : In(stream of {addr, n}, always ready)
        A read of ``n`` words from ``addr`` starts.
    cmd, w : Out(streams)
        The memory port's command and write-data streams.
    room : Out(range(2 fifo_depth + 1))
        Room in the write FIFO for admitted elements (a register, a cycle old).
    req_ok : Out(1)
        Room for another request.
    pool_c, pool_first : Out(16), Out(1)
        The element's index in its pixel (the fused pool's channel); whether it is of the
        descriptor's first output pixel.
    reading : Out(1)
        Words of the last read are still to be asked for.
    idle : Out(1)
        Nothing admitted, queued or owed; no read command pending.
    """

    def __init__(self, config: EngineConfig):
        self.cfg = config
        port = MemoryPort(im.ADDR_BITS)
        super().__init__({
            "desc": In(im.Descriptor),
            "init": In(1), "is_conv": In(1),
            "ow_last": In(16),
            "words": In(stream.Signature(16, always_ready=True)),
            "elems": In(stream.Signature(Element, always_ready=True)),
            "reserve": In(range(config.fifo_depth + 1)),
            "launch": In(1),
            "read": In(stream.Signature(data.StructLayout({"addr": im.ADDR_BITS, "n": 24}),
                                        always_ready=True)),
            "cmd": port.members["cmd"],
            "w": port.members["w"],
            "room": Out(range(config.fifo_depth * 2 + 1)),
            "req_ok": Out(1),
            "pool_c": Out(16), "pool_first": Out(1),
            "reading": Out(1),
            "idle": Out(1),
        })

    def elaborate(self, platform):
        cfg = self.cfg
        m = Module()
        dsc = self.desc
        OC = dsc.OC
        pack_out = dsc.flags.pack_out if cfg.lanes > 1 else Const(0, 1)

        wfifo = m.submodules.wfifo = fifo.SyncFIFOBuffered(width=16, depth=cfg.fifo_depth)
        wreq = m.submodules.wreq = fifo.SyncFIFOBuffered(width=im.ADDR_BITS + 16,
                                                         depth=REQ_DEPTH)
        m.d.comb += [wfifo.w_data.eq(self.words.payload), wfifo.w_en.eq(self.words.valid)]
        inflight = Signal(range(cfg.fifo_depth * 2 + 1))
        # Room in the write FIFO for admitted elements, a register: it lags one cycle, and
        # every user admits at most one element a cycle or waits for the FSM's next state,
        # so the thresholds of the users keep one element of margin.
        room = Signal(range(cfg.fifo_depth * 2 + 1))
        used = Signal(range(cfg.fifo_depth * 3 + 1))
        m.d.comb += used.eq(wfifo.level + inflight)
        m.d.sync += room.eq(Mux(used < cfg.fifo_depth, cfg.fifo_depth - used, 0))
        req_ok = Signal()
        m.d.sync += req_ok.eq(wreq.level < REQ_DEPTH - 13)
        m.d.comb += [self.room.eq(room), self.req_ok.eq(req_ok)]

        waddr = Signal(im.ADDR_BITS)
        wrem = Signal(16)
        owed = Signal(range(cfg.fifo_depth + cfg.max_burst + 1))
        rd_addr = Signal(im.ADDR_BITS)
        rd_rem = Signal(24)

        # Command lengths are registers, recomputed the cycle after the remaining count
        # changes (w_stale / r_stale: no command in that cycle).
        mb = cfg.max_burst
        wlen, rlen = Signal(range(mb + 1)), Signal(range(mb + 1))
        w_stale, r_stale = Signal(), Signal()
        w_has, r_has = Signal(), Signal()      # wrem != 0, rd_rem != 0 (registers)
        m.d.sync += [wlen.eq(Mux(wrem > mb, mb, wrem)), rlen.eq(Mux(rd_rem > mb, mb, rd_rem)),
                     w_has.eq(wrem != 0), r_has.eq(rd_rem != 0), w_stale.eq(0), r_stale.eq(0)]
        cmd = self.cmd
        with m.If(w_has & ~w_stale):
            m.d.comb += [cmd.valid.eq(1), cmd.payload.addr.eq(waddr), cmd.payload.write.eq(1),
                         cmd.payload.length.eq(wlen)]
        with m.Elif(~wreq.r_rdy & ~w_has & ~w_stale & r_has & ~r_stale):
            m.d.comb += [cmd.valid.eq(1), cmd.payload.addr.eq(rd_addr),
                         cmd.payload.write.eq(0), cmd.payload.length.eq(rlen)]
        w_cmd_acc = Signal()
        m.d.comb += w_cmd_acc.eq(cmd.valid & cmd.ready & cmd.payload.write)
        with m.If(wrem == 0):
            m.d.comb += wreq.r_en.eq(1)
            with m.If(wreq.r_rdy):
                m.d.sync += [waddr.eq(wreq.r_data[:im.ADDR_BITS]),
                             wrem.eq(wreq.r_data[im.ADDR_BITS:]), w_stale.eq(1)]
        with m.Elif(w_cmd_acc):
            m.d.sync += [waddr.eq(waddr + wlen), wrem.eq(wrem - wlen), w_stale.eq(1)]
        with m.If(self.read.valid):
            m.d.sync += [rd_addr.eq(self.read.payload.addr), rd_rem.eq(self.read.payload.n),
                         r_stale.eq(1)]
        with m.Elif(cmd.valid & cmd.ready & ~cmd.payload.write):
            m.d.sync += [rd_addr.eq(rd_addr + rlen), rd_rem.eq(rd_rem - rlen), r_stale.eq(1)]
        w_xfer = Signal()
        m.d.comb += [self.w.valid.eq(wfifo.r_rdy & (owed != 0)),
                     self.w.payload.eq(wfifo.r_data),
                     w_xfer.eq(self.w.valid & self.w.ready),
                     wfifo.r_en.eq(w_xfer)]
        # an accepted command's words are owed from the next cycle (the port's ready is far)
        w_acc_q = Signal()
        w_acc_len = Signal.like(wlen)
        m.d.sync += [w_acc_q.eq(w_cmd_acc), w_acc_len.eq(wlen),
                     owed.eq(owed + Mux(w_acc_q, w_acc_len, 0) - w_xfer)]

        # the write requests (see the module docstring)
        out_v, out_f = self.elems.valid, self.elems.payload.last
        req_addr = Signal(im.ADDR_BITS)
        req_cnt = Signal(16)       # element of the pixel (CONV) or of the chunk
        req_len = Signal(16)       # words of the open request
        req_px = Signal(16)        # pixel of the row (CONV)
        req_stride_oc = Signal()   # CONV: advance by OC per pixel; else by the count
        gather = decoded(m, "gather", self.is_conv & (dsc.n_out == OC))
        gather_lim = Signal(16)    # the open request takes another pixel below this length
        gather_max = cfg.gather_words
        m.d.sync += gather_lim.eq(Mux(dsc.n_out >= gather_max, 0, gather_max - dsc.n_out))
        pool_first = Signal()      # fused pool: the descriptor's first output pixel
        with m.If(self.init):
            m.d.sync += [req_addr.eq(dsc.out_addr), req_cnt.eq(0), req_len.eq(0),
                         req_px.eq(0), pool_first.eq(1), req_stride_oc.eq(self.is_conv)]
        with m.Elif(out_v):
            with m.If(out_f):
                row_end = req_px == self.ow_last
                m.d.sync += [req_cnt.eq(0), pool_first.eq(0),
                             req_px.eq(Mux(row_end, 0, req_px + 1))]
                with m.If(gather & ~row_end & (req_len < gather_lim)):
                    m.d.sync += req_len.eq(req_len + 1)
                with m.Else():
                    # words: elements, or half of them packed (packed outputs are gathered)
                    words = Mux(pack_out, (req_len + 1) >> 1, req_len + 1)
                    m.d.comb += [wreq.w_en.eq(1), wreq.w_data.eq(Cat(req_addr, words))]
                    m.d.sync += [req_len.eq(0),
                                 req_addr.eq(req_addr + Mux(req_stride_oc & ~gather, OC,
                                                            words))]
            with m.Else():
                m.d.sync += [req_cnt.eq(req_cnt + 1), req_len.eq(req_len + 1)]
        m.d.comb += [self.pool_c.eq(req_cnt), self.pool_first.eq(pool_first)]

        reserve_q = Signal.like(self.reserve)
        m.d.sync += [reserve_q.eq(self.reserve),
                     inflight.eq(inflight + reserve_q + self.launch - out_v)]
        m.d.comb += [self.reading.eq(rd_rem != 0),
                     self.idle.eq((inflight == 0) & ~wfifo.r_rdy & ~wreq.r_rdy & (wrem == 0)
                                  & ~w_acc_q & (owed == 0) & (rd_rem == 0))]
        return m
