"""The engine's ``P x L`` multiplier array and its accumulators (:mod:`hw.engine.layer_engine`).

Each issued step (one kernel tap and ``L`` input channels for ``P`` output channels when dense;
one tap of ``P`` channels when depthwise; the running maximum of ``P`` channels in max mode)
arrives as tags at the issue stage I, its tap validity at Q2 and the row-buffer and weight RAM
words at R (the issue stage addresses the RAMs at Q3). The tags pass six registers to R3 (the
RAM outputs pass two, R2 beside the RAMs and R3 beside the multipliers, before any logic);
then F (operand registers) -> DSP (:class:`hw.engine.dsp.RegisteredMultiplier`) -> a register
level per halving of the ``L`` products -> the accumulator. A pixel's finished accumulators
enter a 4-deep result FIFO (``o``) from their registers, the cycle after the last step.

Lock-step: every step issued is taken (``can_issue`` says whether a pixel may start: its
result has a place reserved in the FIFO).
"""
from amaranth import Array, Cat, Const, Module, Mux, Signal, signed
from amaranth.lib import data, fifo, stream, wiring
from amaranth.lib.wiring import In, Out

from firmware.image import EngineConfig

from hw.engine.dsp import LATENCY as DSP_LATENCY
from hw.engine.dsp import RegisteredMultiplier
from hw.engine.replicate import replicated
from hw.engine.stages import delay_line, delayed, log2

ACC_W = 32
RES_DEPTH = 4


def result_layout(config: EngineConfig):
    """One pixel's results: ``P`` accumulators, the group, whether the pixel ends with this
    group (``pend``) and the group's valid lanes."""
    return data.StructLayout({
        "acc": data.ArrayLayout(signed(ACC_W), config.lanes),
        "g": range(config.groups + 1),
        "pend": 1,
        "nvalid": 16,
    })


class MACArray(wiring.Component):
    """The multiplier array; see the module docstring.

    Members (I: the issue stage; Q2 two cycles later; R: the RAM read data of Q3's addresses)
    -------
    issue : In(1)
        I: a step is issued.
    first, last, pend : In(1)
        I: the pixel's first step of a group, its last step of a group, the last of its last
        group.
    sel : In(max(log2(P / L), 1))
        I: dense, the first input channel's lane group (which ``L`` of the ``P`` row-buffer
        elements are the operands).
    wslot : In(max(log2(L), 1))
        I: depthwise, the tap's slot in the weight entry.
    nvalid : In(16)
        I: the group's valid lanes.
    g : In(range(groups + 1))
        I: the group.
    valid_tap : In(1)
        Q2: the tap is inside the input (else the operands are 0).
    dense, max : In(1)
        The descriptor's mode (registers, stable during a descriptor).
    rb_data : In(16 * P)
        R: the row-buffer entry.
    w_data : In(8 * P * L)
        R: the weight entry.
    o : Out(stream.Signature(result_layout))
        The result FIFO's head; ``ready`` pops it.
    can_issue : Out(1)
        A pixel's first step may issue (its result will have a place in the FIFO).
    busy : Out(1)
        A step is in the array or a result is reserved.
    """

    def __init__(self, config: EngineConfig):
        self.cfg = config
        P, L = config.lanes, config.in_lanes
        super().__init__({
            "issue": In(1), "first": In(1), "last": In(1), "pend": In(1),
            "sel": In(max(log2(P) - log2(L), 1)),
            "wslot": In(max(log2(L), 1)),
            "nvalid": In(16),
            "g": In(range(config.groups + 1)),
            "valid_tap": In(1),
            "dense": In(1), "max": In(1),
            "rb_data": In(16 * P),
            "w_data": In(8 * P * L),
            "o": Out(stream.Signature(result_layout(config))),
            "can_issue": Out(1),
            "busy": Out(1),
        })

    def elaborate(self, platform):
        cfg = self.cfg
        P, L = cfg.lanes, cfg.in_lanes
        lP, lL = log2(P), log2(L)
        m = Module()

        # the step's tags, from I to R3
        to_r = 6
        rv_line = delay_line(m, self.issue, to_r, "mac_v")
        rv = rv_line[-1]
        rfirst, rlast, rpend = (delayed(m, sig, to_r, nm) for sig, nm in
                                ((self.first, "mac_first"), (self.last, "mac_last"),
                                 (self.pend, "mac_pend")))
        # the dense input-channel select, one copy per lane, at R2 (it picks R3's contents)
        rsel = replicated(m, platform, delayed(m, self.sel if lP > lL else Const(0, 1),
                                               to_r - 2, "mac_rsel", True), P, "mac_rsel")
        # the operand selects, one register copy per lane (hw/engine/replicate.py): each copy
        # drives its lane's L operand registers only
        rwslot = replicated(m, platform, delayed(m, self.wslot if lL else Const(0, 1),
                                                 to_r - 1, "mac_wslot", True), P, "mac_wslot")
        lane_dense = replicated(m, platform, self.dense, P, "lane_dense")
        lane_max = replicated(m, platform, self.max, P, "lane_max")
        rnv = delayed(m, self.nvalid, to_r, "mac_nv", True)
        rg = delayed(m, self.g, to_r, "mac_g", True)
        rvalid_tap = replicated(m, platform, delayed(m, self.valid_tap, to_r - 3, "mac_vt"), P,
                                "mac_vt")

        rb_q2, rb_q = (Signal.like(self.rb_data, reset_less=True, name=n)
                       for n in ("rb_q2", "rb_q"))
        wram_q2, wram_q = (Signal.like(self.w_data, reset_less=True, name=n)
                           for n in ("wram_q2", "wram_q"))
        m.d.sync += [rb_q2.eq(self.rb_data), wram_q2.eq(self.w_data), wram_q.eq(wram_q2)]
        # R3 holds the operands: dense, lane i the input channel i % L of the selected L
        # (each of the L repeated P / L times, so that every lane takes its operands from a
        # register of its own lane group); depthwise and max, lane i's own element
        elems2 = [rb_q2[16 * i:16 * i + 16] for i in range(P)]
        for i in range(P):
            dense_pick = Array(elems2[s * L + i % L] for s in range(P // L))[rsel[i]] \
                if P > L else elems2[i % L]
            m.d.sync += rb_q[16 * i:16 * i + 16].eq(Mux(lane_dense[i], dense_pick, elems2[i]))
        elems = [rb_q[16 * i:16 * i + 16].as_signed() for i in range(P)]
        wts = [[wram_q[8 * (j * L + l):8 * (j * L + l) + 8].as_signed() for l in range(L)]
               for j in range(P)]
        # F: operand registers in the fabric (the RAM outputs go through a multiplexer)
        a_f = [[Signal(signed(16), name=f"a_{j}_{l}", reset_less=True) for l in range(L)]
               for j in range(P)]
        b_f = [[Signal(signed(8), name=f"b_{j}_{l}", reset_less=True) for l in range(L)]
               for j in range(P)]
        wsel = [Array(wts[j])[rwslot[j]] for j in range(P)]
        for j in range(P):
            for l in range(L):
                a_dense = elems[j - j % L + l]
                a_dw = elems[j] if l == 0 else Const(0, signed(16))
                b_dw = wsel[j] if l == 0 else Const(0, signed(8))
                # max mode: the product with 1 passes the operand
                m.d.sync += [
                    a_f[j][l].eq(Mux(rvalid_tap[j], Mux(lane_dense[j], a_dense, a_dw), 0)),
                    b_f[j][l].eq(Mux(lane_max[j], 1 if l == 0 else 0,
                                     Mux(lane_dense[j], wts[j][l], b_dw))),
                ]
        products = []
        for j in range(P):
            row = []
            for l in range(L):
                mul = RegisteredMultiplier(16, 8)
                m.submodules[f"mac_{j}_{l}"] = mul
                m.d.comb += [mul.a.eq(a_f[j][l]), mul.b.eq(b_f[j][l])]
                row.append(mul.p)
            products.append(row)
        # the adder tree: one register level per halving
        sums = products
        for level in range(lL):
            nxt = []
            for j in range(P):
                pair = [Signal(signed(24 + level + 1), name=f"sum{level}_{j}_{i}",
                               reset_less=True) for i in range(len(sums[j]) // 2)]
                m.d.sync += [pair[i].eq(sums[j][2 * i] + sums[j][2 * i + 1])
                             for i in range(len(pair))]
                nxt.append(pair)
            sums = nxt
        to_m = 1 + DSP_LATENCY + lL
        mv_line = delay_line(m, rv, to_m, "acc_v")
        mv = mv_line[-1]
        mlast, mpend = (delayed(m, sig, to_m, nm) for sig, nm in
                        ((rlast, "acc_last"), (rpend, "acc_pend")))
        # the accumulators' controls, one register copy per lane (hw/engine/replicate.py):
        # each drives 32 accumulator bits, not 32 P
        lane_mv = replicated(m, platform, mv_line[-2], P, "acc_v")
        lane_mfirst = replicated(m, platform, delayed(m, rfirst, to_m - 1, "acc_first_e"), P,
                                 "acc_first")
        lane_acc_max = replicated(m, platform, self.max, P, "acc_max")
        mnv = delayed(m, rnv, to_m, "acc_nv", True)
        mg = delayed(m, rg, to_m, "acc_g", True)
        lane0 = [delayed(m, products[j][0], lL, f"max_{j}", True) for j in range(P)]
        # the accumulator (max mode: the running maximum of the operands)
        accs = [Signal(signed(ACC_W), name=f"acc{j}", reset_less=True) for j in range(P)]
        for j in range(P):
            nxt = Signal(signed(ACC_W), name=f"accn{j}")
            mx = Mux(accs[j] > lane0[j], accs[j], lane0[j])
            m.d.comb += nxt.eq(Mux(lane_acc_max[j], Mux(lane_mfirst[j], lane0[j], mx),
                                   Mux(lane_mfirst[j], 0, accs[j]) + sums[j][0]))
            with m.If(lane_mv[j]):
                m.d.sync += accs[j].eq(nxt)
        # a pixel's finished accumulators go to the result FIFO from their registers, the
        # cycle after the last step (a first step arriving then reads them before it writes)
        done_v = Signal()
        done_g, done_pend, done_nv = Signal.like(mg), Signal(), Signal(16)
        m.d.sync += [done_v.eq(mv & mlast), done_g.eq(mg), done_pend.eq(mpend),
                     done_nv.eq(mnv)]
        res = m.submodules.res = fifo.SyncFIFOBuffered(
            width=len(self.o.payload.as_value()), depth=RES_DEPTH)
        m.d.comb += [res.w_en.eq(done_v), res.w_data.eq(Cat(*accs, done_g, done_pend, done_nv)),
                     self.o.valid.eq(res.r_rdy), self.o.payload.eq(res.r_data),
                     res.r_en.eq(self.o.ready)]
        # a place in the result FIFO is reserved by a pixel's first step and freed by its pop
        res_reserved = Signal(range(RES_DEPTH + 1))
        m.d.sync += res_reserved.eq(res_reserved + (self.issue & self.first) - self.o.ready)
        m.d.comb += [self.can_issue.eq(res_reserved < RES_DEPTH - 1),
                     self.busy.eq(Cat(*rv_line, *mv_line, done_v).any() | (res_reserved != 0))]
        return m
