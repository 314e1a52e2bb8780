"""The engine's issue stage: a CONV output row's steps and their RAM addresses
(:mod:`hw.engine.layer_engine`).

Per output pixel ``ox`` of row ``oy``, per group ``g`` of ``P`` output channels (the group
header RAM: valid lanes, first input channel, ``n_cig``, weight base), per kernel tap
``(dy, dx)`` and, dense, per ``L`` input channels ``cig``, one step is issued to the MAC array
(``issue`` and its tags). Stages: I (the counters) -> Q1 (tap position, channel, weight entry)
-> Q2 (tap validity, slot base + channel) -> Q3 (row-buffer and weight addresses). The Q3
registers are the RAMs' own (:class:`hw.engine.sliced_ram.SlicedRAM`, one copy per slice):
``rb_addr`` and ``w_addr`` are their inputs. No multiplier touches an address: the pixel's row-buffer offset (``ix * CE``) and
the slot bases (``slot * row_entries``) are kept by adders.

The decisions read registers: ``dx_last`` (``dx == k - 1``), ``dy_last``, ``cig_last``
(``cig == n_cig - 1``) follow their counters step by step (set from the counter's next
value); ``g_last`` and ``ox_last`` are compares a cycle old (``g`` and ``ox`` move only at a
group's end, and the stage then waits ``h_stale`` cycles for the new group's header, read into
a register). A pixel's end moves ``ox`` a cycle later, a row's end ``oy``, ``top`` and
``top_slot`` (``row_end``): registers drive those enables; nothing reads them in between.
The sequencer starts a descriptor (``conv_start``) and each row (``row_start``) and waits for
``row_end``.
"""
from amaranth import Array, Module, Mux, Signal, signed, unsigned
from amaranth.lib import wiring
from amaranth.lib.memory import Memory, WritePort
from amaranth.lib.wiring import In, Out

from firmware import image as im
from firmware.image import EngineConfig

from hw.engine.stages import decoded, last_of, log2


class IssueUnit(wiring.Component):
    """The issue counters and address stages; see the module docstring.

    Members
    -------
    desc : In(Descriptor)
    hdr_w : Out(WritePort.Signature)
        The group header RAM's write port, as a memory's (64-bit records, 16-bit words).
    ce : In(12)
        Row-buffer entries of one pixel.
    nslots, nslots_last : In(5)
        Row slots (``k``, or ``k + 1`` with the prefetch) and that less one.
    ow_last : In(16)
        ``OW - 1``.
    dense : In(1)
        The descriptor's mode is dense (a register).
    can_issue : In(1)
        A pixel's first step may issue (the MAC array's result credits).
    conv_start, row_start : In(1)
        Sequencer pulses: a CONV's first row; a row's steps start (the counters are 0).
    issue, first, last, pend : Out(1)
        I: a step is issued; the pixel's first step of a group, its last of a group, the last
        of its last group.
    sel, wslot, nvalid, g : Out
        I: the MAC array's tags (dense lane group, depthwise weight slot, valid lanes, group).
    valid_tap : Out(1)
        Q2: the tap is inside the input.
    rb_addr, w_addr : Out(16)
        The row-buffer and weight RAM addresses, to be registered (Q3) by the RAMs.
    top, oy : Out
        The output row's first input row (``oy * stride - pad``) and the output row.
    row_end : Out(1)
        The row's last step has issued (a cycle late).
    """

    def __init__(self, config: EngineConfig):
        self.cfg = config
        P, L = config.lanes, config.in_lanes
        super().__init__({
            "desc": In(im.Descriptor),
            "hdr_w": Out(WritePort.Signature(addr_width=(config.groups - 1).bit_length(),
                                             shape=unsigned(64), granularity=16)),
            "ce": In(12),
            "nslots": In(5), "nslots_last": In(5),
            "ow_last": In(16),
            "dense": In(1),
            "can_issue": In(1),
            "conv_start": In(1), "row_start": In(1),
            "issue": Out(1), "first": Out(1), "last": Out(1), "pend": Out(1),
            "sel": Out(max(log2(P) - log2(L), 1)),
            "wslot": Out(max(log2(L), 1)),
            "nvalid": Out(16),
            "g": Out(range(config.groups + 1)),
            "valid_tap": Out(1),
            "rb_addr": Out(16), "w_addr": Out(16),
            "top": Out(signed(18)), "oy": Out(16),
            "row_end": Out(1),
        })

    def elaborate(self, platform):
        cfg = self.cfg
        P, L = cfg.lanes, cfg.in_lanes
        lP, lL = log2(P), log2(L)
        m = Module()
        dsc = self.desc
        H, W = dsc.H, dsc.W
        k, stride, pad = dsc.k, dsc.stride, dsc.pad
        rowE = dsc.row_entries
        CE, nslots, nslots_last, is_dense = self.ce, self.nslots, self.nslots_last, self.dense
        g_last_n = last_of(m, "groups_last", dsc.n_groups)

        hdr = m.submodules.hdr = Memory(shape=unsigned(64), depth=cfg.groups, init=[])
        hdr_w = hdr.write_port(granularity=16)
        hdr_r = hdr.read_port(domain="comb")
        m.d.comb += [hdr_w.addr.eq(self.hdr_w.addr), hdr_w.data.eq(self.hdr_w.data),
                     hdr_w.en.eq(self.hdr_w.en)]

        oy = Signal(16)
        ox = Signal(16)
        g = Signal(range(cfg.groups + 1))
        dy = Signal(4)
        dx = Signal(4)
        tap = Signal(8)
        cig = Signal(8)
        step = Signal(16)
        top = Signal(signed(18))     # oy * stride - pad
        left = Signal(signed(18))    # ox * stride - pad
        top_slot = Signal(4)
        top_slot_next = Signal(4)    # the next output row's, a register (top_slot moves per row)
        left_ce = Signal(signed(18))  # left * CE
        dx_ce = Signal(16)            # dx * CE
        issue = Signal()             # a step is issued this cycle
        in_issue, pix_end_q, row_end_q = Signal(), Signal(), Signal()

        # products of descriptor fields, as registers ready long before the rows start
        pad_ce, stride_ce = Signal(16), Signal(16)
        m.d.sync += [pad_ce.eq(sum(Mux(pad[b], CE << b, 0) for b in range(4))),
                     stride_ce.eq(sum(Mux(stride[b], CE << b, 0) for b in range(4)))]
        n_slots = 16
        slot_base = [Signal(16, name=f"slot_base{i}") for i in range(n_slots)]
        for i in range(1, n_slots):
            m.d.sync += slot_base[i].eq(slot_base[i - 1] + rowE)

        # The group header is read into a register (yosys makes it a block RAM's output
        # register) and n_cig - 1 into another: after g changes the issue stage waits two
        # cycles (h_stale) for the new group's header.
        h_stale = Signal(2)
        h_data = Signal(64)
        m.d.comb += hdr_r.addr.eq(g)
        m.d.sync += h_data.eq(hdr_r.data)
        h_nvalid = h_data[0:16]
        h_inlo = h_data[16:32]
        h_wbase = h_data[48:64]
        # from the RAM's output with h_data: n_cig - 2 and n_cig == 1, for the cig_last flag
        h_last_cig2, h_cig1 = Signal(16), Signal()
        m.d.sync += [h_last_cig2.eq(hdr_r.data[32:48] - 2), h_cig1.eq(hdr_r.data[32:48] == 1)]
        # sslot: the slot of input row top + dy, a register that follows dy (below);
        # top_slot_next: the next output row's top slot, three register stages after top_slot
        # (which moves once a row)
        sslot = Signal(4)
        ts, ts1 = Signal(5), Signal(5)
        m.d.sync += [ts.eq(top_slot + stride), ts1.eq(Mux(ts >= nslots, ts - nslots, ts)),
                     top_slot_next.eq(Mux(ts1 >= nslots, ts1 - nslots, ts1))]
        sslot_inc = Mux(sslot == nslots_last, 0, sslot + 1)
        chan_lo = Signal(16)
        m.d.comb += chan_lo.eq(Mux(is_dense, h_inlo + (cig << lL), h_inlo))
        dx_last, dy_last, cig_last, g_last, ox_last = (
            Signal(name=n) for n in ("dx_last", "dy_last", "cig_last", "g_last", "ox_last"))
        k_one = decoded(m, "k_one", k == 1)
        k_last2 = Signal(4)
        m.d.sync += [k_last2.eq(k - 2), g_last.eq(g == g_last_n), ox_last.eq(ox == self.ow_last)]
        last_tap = dx_last & dy_last
        s_first = Signal(init=1)      # step == 0 (1 after reset: rows start with step 0)
        s_last = last_tap & (~is_dense | cig_last)
        pix_end = s_last & g_last

        # Q1
        q1_iy, q1_ix = Signal(signed(18)), Signal(signed(18))
        q1_ixce = Signal(signed(18))
        q1_slot = Signal(4)
        q1_cbase, q1_waddr = Signal(16), Signal(16)
        m.d.sync += [q1_iy.eq(top + dy), q1_ix.eq(left + dx), q1_ixce.eq(left_ce + dx_ce),
                     q1_slot.eq(sslot), q1_cbase.eq(chan_lo >> lP),
                     q1_waddr.eq(h_wbase + Mux(is_dense, step, tap >> lL))]
        # Q2
        q2_valid_tap = Signal()
        q2_part, q2_ixce, q2_waddr = Signal(16), Signal(16), Signal(16)
        m.d.sync += [q2_valid_tap.eq((q1_iy >= 0) & (q1_iy < H) & (q1_ix >= 0) & (q1_ix < W)),
                     q2_part.eq(Array(slot_base)[q1_slot] + q1_cbase),
                     q2_ixce.eq(q1_ixce[:16]), q2_waddr.eq(q1_waddr)]
        # Q3: the RAMs register the addresses
        m.d.comb += [self.rb_addr.eq(q2_part + q2_ixce), self.w_addr.eq(q2_waddr),
                     self.issue.eq(issue), self.first.eq(s_first), self.last.eq(s_last),
                     self.pend.eq(pix_end), self.nvalid.eq(h_nvalid), self.g.eq(g),
                     self.valid_tap.eq(q2_valid_tap), self.top.eq(top), self.oy.eq(oy),
                     self.row_end.eq(row_end_q)]
        if lP > lL:
            m.d.comb += self.sel.eq(chan_lo[lL:lP])
        if lL:
            m.d.comb += self.wslot.eq(tap[:lL])

        # the sequencer's pulses (before the issue logic below: it takes precedence)
        with m.If(self.conv_start):
            m.d.sync += [oy.eq(0), top.eq(-pad), ox.eq(0), left.eq(-pad), left_ce.eq(-pad_ce),
                         top_slot.eq(Mux(pad == 0, 0, nslots - pad))]
        with m.If(self.row_start):
            # the step counters are 0 (every row ends with a group's last step) and ox, left,
            # left_ce were set at the row's start (row_end_q, conv_start)
            m.d.sync += [h_stale.eq(2), in_issue.eq(1)]
        # the issue logic (in_issue: the sequencer's ISSUE state, as a register)
        m.d.sync += [pix_end_q.eq(0), row_end_q.eq(0)]
        with m.If(in_issue):
            with m.If(h_stale != 0):
                # dx, dy and cig are 0 here; the header RAM's output is the new group's
                # in the last waiting cycle
                m.d.sync += [h_stale.eq(h_stale - 1), dx_last.eq(k_one), dy_last.eq(k_one),
                             cig_last.eq(hdr_r.data[32:48] == 1), sslot.eq(top_slot)]
            with m.Elif(self.can_issue | ~s_first):
                m.d.comb += issue.eq(1)
                m.d.sync += [step.eq(step + 1), s_first.eq(0)]
                with m.If(is_dense & ~cig_last):
                    m.d.sync += [cig.eq(cig + 1), cig_last.eq(cig == h_last_cig2)]
                with m.Else():
                    m.d.sync += [cig.eq(0), cig_last.eq(h_cig1), tap.eq(tap + 1)]
                    with m.If(dx_last):
                        m.d.sync += [dx.eq(0), dx_ce.eq(0), dx_last.eq(k_one)]
                        with m.If(dy_last):
                            m.d.sync += [dy.eq(0), dy_last.eq(k_one), sslot.eq(top_slot)]
                        with m.Else():
                            m.d.sync += [dy.eq(dy + 1), dy_last.eq(dy == k_last2),
                                         sslot.eq(sslot_inc)]
                    with m.Else():
                        m.d.sync += [dx.eq(dx + 1), dx_ce.eq(dx_ce + CE),
                                     dx_last.eq(dx == k_last2)]
                with m.If(s_last):
                    m.d.sync += [step.eq(0), s_first.eq(1), tap.eq(0), dx.eq(0), dy.eq(0),
                                 cig.eq(0), dx_ce.eq(0), h_stale.eq(2)]
                    with m.If(g_last):
                        m.d.sync += [g.eq(0), pix_end_q.eq(1)]
                        with m.If(ox_last):
                            m.d.sync += [row_end_q.eq(1), in_issue.eq(0)]
                    with m.Else():
                        m.d.sync += g.eq(g + 1)
        with m.If(pix_end_q):
            m.d.sync += [ox.eq(ox + 1), left.eq(left + stride), left_ce.eq(left_ce + stride_ce)]
        with m.If(row_end_q):
            m.d.sync += [oy.eq(oy + 1), top.eq(top + stride), top_slot.eq(top_slot_next),
                         ox.eq(0), left.eq(-pad), left_ce.eq(-pad_ce)]
        return m
