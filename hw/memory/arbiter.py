"""Memory-port arbiter: one SDRAM controller user port shared by several masters.

Every port (the masters' and the controller's) is a :class:`hw.memory.port.MemoryPort`:
``cmd`` ``{addr, write, length}``, ``w`` (write words, master -> memory) and ``r`` (read
words, memory -> master).

Arbitration is **command-granular**: the grant holds until the data of every command it let
through has fully moved (``length`` words on ``w`` for a write, on ``r`` for a read), so read
data always belongs to the master that holds the grant and a write burst is never interleaved.
While the owner has data outstanding it may queue further commands (back-to-back bursts at
full speed) unless another allowed master is waiting; then the owner's next command waits, its
data drains and the grant moves on (round robin from the owner). An idle port is granted in
the same cycle a command arrives (no added latency). A command on ``bus.cmd`` stays there, from
the same master, until the memory takes it (the stream rule), whatever arrives meanwhile.

``allow`` (one bit per master, default all ones) keeps a master off the port: a master whose
bit is low gets no new grant and no new command through, but a command it already has on the
bus and the data of commands it already issued still move. The board top uses it to give the
port to the host link while the engine is idle and to the engine while it runs.
"""
from amaranth import Cat, Const, Module, Mux, Signal
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from hw.memory.port import MemoryPort

__all__ = ["MemoryArbiter", "StreamSlice"]


class StreamSlice(wiring.Component):
    """A full-throughput register slice (two-entry skid buffer) on one stream: ``o.valid``,
    ``o.payload`` and ``i.ready`` all come from flip-flops, so the ready/valid logic of the two
    sides is no longer one combinational path. One cycle of latency.

    Members: ``i`` (In stream), ``o`` (Out stream) of ``shape``.
    """

    def __init__(self, shape):
        super().__init__({"i": In(stream.Signature(shape)), "o": Out(stream.Signature(shape))})

    def elaborate(self, platform):
        m = Module()
        i, o = self.i, self.o
        skid_valid = Signal()
        skid = Signal.like(i.payload)
        m.d.comb += i.ready.eq(~skid_valid)
        with m.If(o.ready | ~o.valid):
            with m.If(skid_valid):
                m.d.sync += [o.valid.eq(1), o.payload.eq(skid), skid_valid.eq(0)]
            with m.Else():
                m.d.sync += [o.valid.eq(i.valid), o.payload.eq(i.payload)]
        with m.Elif(i.valid & i.ready):
            m.d.sync += [skid.eq(i.payload), skid_valid.eq(1)]
        return m


class MemoryArbiter(wiring.Component):
    """Command-granular arbiter of ``n`` masters onto one memory port.

    Parameters
    ----------
    n : int
        Number of masters (at least 1).
    addr_width, length_width, data_width : int
        Port widths; ``length_width`` is the width of the ``length`` field (the SDRAM
        controller's with ``burst_words=4096`` is 13).
    register_bus : bool
        Put a :class:`StreamSlice` on each stream of the bus and on each master's ``cmd``
        and ``w``: on ``cmd`` and ``w`` the controller's ``ready`` no longer reaches the
        masters in the same cycle and the arbitration reads registers, on ``r`` the read
        FIFO's ``valid`` no longer reaches the masters' counters and RAMs. The data a bus
        slice holds counts as moved for the grant (the controller takes it in order).
    n_queue : int
        Bound on the data in flight: a new command is let through only while the words still
        owed (both directions) leave room for ``n_queue`` longest commands in the counters (the
        check reads counts that may miss the last two accepted commands, so it asks for room
        for three; an idle port takes a command regardless).
        The SDRAM controller holds at most two commands' data in flight.

    Members
    -------
    masters : list of wiring members ``m0`` .. ``m{n-1}``
        In(MemoryPort): each master's port (``cmd``/``w`` in, ``r`` out).
    bus : Out(MemoryPort)
        To the memory controller.
    allow : In(n)
        Masters that may get the grant and issue commands.
    grant : Out(range(n))
        The master that holds (or last held) the port.
    idle : Out(1)
        No data outstanding.
    """

    def __init__(self, n=2, *, addr_width=24, length_width=13, data_width=16, n_queue=4,
                 register_bus=False):
        if not isinstance(n, int) or n < 1:
            raise ValueError(f"MemoryArbiter: n must be a positive integer, not {n!r}")
        if not isinstance(n_queue, int) or n_queue < 1:
            raise ValueError(f"MemoryArbiter: n_queue must be a positive integer, not "
                             f"{n_queue!r}")
        self.n = n
        self.n_queue = n_queue
        self.register_bus = register_bus
        self.sig = MemoryPort(addr_width, length_width, data_width)
        members = {f"m{i}": In(self.sig) for i in range(n)}
        members.update({"bus": Out(self.sig), "allow": In(n, init=(1 << n) - 1),
                        "grant": Out(range(max(n, 2))), "idle": Out(1)})
        super().__init__(members)

    @property
    def masters(self):
        return [getattr(self, f"m{i}") for i in range(self.n)]

    def elaborate(self, platform):
        m = Module()
        n = self.n
        ms = self.masters
        if self.register_bus:
            # Each master's cmd and w enter through a slice too: the arbitration reads
            # registers, and the masters see ready from registers.
            ms = []
            for i, master in enumerate(self.masters):
                cs = m.submodules[f"m{i}_cmd_slice"] = StreamSlice(master.cmd.payload.shape())
                ws = m.submodules[f"m{i}_w_slice"] = StreamSlice(self.sig.data_width)
                wiring.connect(m, wiring.flipped(master.cmd), cs.i)
                wiring.connect(m, wiring.flipped(master.w), ws.i)
                ms.append(_Bus(cs.o, ws.o, master.r))
            # The logic below drives the slices' inputs; the slices drive the bus.
            m.submodules.cmd_slice = cmd_slice = StreamSlice(self.bus.cmd.payload.shape())
            m.submodules.w_slice = w_slice = StreamSlice(self.sig.data_width)
            m.submodules.r_slice = r_slice = StreamSlice(self.sig.data_width)
            wiring.connect(m, cmd_slice.o, wiring.flipped(self.bus.cmd))
            wiring.connect(m, w_slice.o, wiring.flipped(self.bus.w))
            m.d.comb += [r_slice.i.valid.eq(self.bus.r.valid),
                         r_slice.i.payload.eq(self.bus.r.payload),
                         self.bus.r.ready.eq(r_slice.i.ready)]
            bus = _Bus(cmd_slice.i, w_slice.i, r_slice.o)
        else:
            bus = self.bus
        max_words = (self.n_queue + 1) * ((1 << self.sig.length_width) - 1)
        r_owed = Signal(range(max_words + 1))     # read words still to arrive for the owner
        w_owed = Signal(range(max_words + 1))     # write words the owner still has to send
        grant = Signal(range(max(n, 2)))
        # "words owed" flags, registers computed from the counters' next values (below)
        r_due, w_due = Signal(), Signal()
        # An accepted command enters the counters a cycle later (take_q: its length is a
        # register then, not the master's command logic); until then the port is not idle.
        take_q, write_q = Signal(), Signal()
        length_q = Signal(self.sig.length_width)
        idle = Signal()
        m.d.comb += [idle.eq(~r_due & ~w_due & ~take_q), self.idle.eq(idle),
                     self.grant.eq(grant)]

        req = Signal(n)
        m.d.comb += req.eq(Cat(*(ms[i].cmd.valid for i in range(n))) & self.allow)

        # Round robin from the owner: the first requester after it, the owner itself last.
        pick = Signal.like(grant)
        m.d.comb += pick.eq(grant)
        for k in range(n, 0, -1):               # later assignments win: k = 1 has priority
            for g in range(n):
                with m.If((grant == g) & req[(g + k) % n]):
                    m.d.comb += pick.eq((g + k) % n)

        max_len = (1 << self.sig.length_width) - 1
        # Room for one more longest command, a register: the counts it reads miss up to two
        # accepted commands (a cycle old, one in take_q), so it asks for room for three.
        room_ok = Signal()
        m.d.sync += room_ok.eq(r_owed + w_owed <= max_words - 3 * max_len)
        others_waiting = Signal()
        m.d.comb += others_waiting.eq((req & ~(Const(1, n) << grant)[:n]) != 0)
        # Who may put a command on the bus this cycle. A command offered and not yet taken
        # stays offered, from the same master while it holds it (the stream rule on bus.cmd):
        # requests that arrive meanwhile, the room check and allow wait until it is taken.
        sel = Signal.like(grant)
        sel_ok = Signal()
        offered = Signal()                      # bus.cmd was valid and not ready last cycle
        offered_sel = Signal.like(grant)
        m.d.sync += [offered.eq(bus.cmd.valid & ~bus.cmd.ready), offered_sel.eq(sel)]
        valids = Cat(*(ms[i].cmd.valid for i in range(n)))
        with m.If(offered):
            m.d.comb += [sel.eq(offered_sel), sel_ok.eq(valids.bit_select(offered_sel, 1))]
        with m.Elif(idle):
            m.d.comb += [sel.eq(pick), sel_ok.eq(req.bit_select(pick, 1))]
        with m.Else():
            m.d.comb += [sel.eq(grant),
                         sel_ok.eq(req.bit_select(grant, 1) & ~others_waiting
                                   & room_ok)]

        cmd_take = Signal()
        for i in range(n):
            with m.If(sel == i):
                m.d.comb += [bus.cmd.payload.eq(ms[i].cmd.payload),
                             bus.cmd.valid.eq(sel_ok),
                             ms[i].cmd.ready.eq(sel_ok & bus.cmd.ready)]
        m.d.comb += cmd_take.eq(bus.cmd.valid & bus.cmd.ready)
        with m.If(cmd_take):
            m.d.sync += grant.eq(sel)

        # Data follows the grant (after a take in an idle cycle, the grant register is already
        # the new owner when its first data word can move).
        w_take = Signal()
        r_take = Signal()
        for i in range(n):
            with m.If(grant == i):
                m.d.comb += [bus.w.payload.eq(ms[i].w.payload),
                             bus.w.valid.eq(ms[i].w.valid & w_due),
                             ms[i].w.ready.eq(bus.w.ready & w_due),
                             ms[i].r.payload.eq(bus.r.payload),
                             ms[i].r.valid.eq(bus.r.valid & r_due),
                             bus.r.ready.eq(ms[i].r.ready & r_due)]
        m.d.comb += [w_take.eq(bus.w.valid & bus.w.ready), r_take.eq(bus.r.valid & bus.r.ready)]

        length = bus.cmd.payload.length
        wr = bus.cmd.payload.write
        m.d.sync += [take_q.eq(cmd_take), write_q.eq(wr), length_q.eq(length)]
        w_next = w_owed + Mux(take_q & write_q, length_q, 0) - w_take
        r_next = r_owed + Mux(take_q & ~write_q, length_q, 0) - r_take
        m.d.sync += [w_owed.eq(w_next), r_owed.eq(r_next),
                     w_due.eq(w_next[:len(w_owed)] != 0), r_due.eq(r_next[:len(r_owed)] != 0)]
        return m


class _Bus:
    """The streams the arbitration logic drives (the bus itself, or the slices' inputs)."""

    def __init__(self, cmd, w, r):
        self.cmd, self.w, self.r = cmd, w, r
