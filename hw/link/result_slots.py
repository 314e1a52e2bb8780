"""The result slots of the host link (:mod:`hw.link.framing`): the engine's embeddings wait
here for the host's READ_RESULT.

Two slots of ``n_result`` words in one block RAM: the engine fills one (``i_result``) while
the host reads the other. A slot is complete after ``n_result`` words; with both slots
holding results, ``i_result.ready`` is low until the host frees one. READ_RESULT is answered
with the oldest complete result, which is kept (the *answered* result) until a READ_RESULT
with another sequence number frees it.
"""
from amaranth import Module, Mux, Signal
from amaranth.lib import stream, wiring
from amaranth.lib.memory import Memory, ReadPort
from amaranth.lib.wiring import In, Out
from amaranth.utils import ceil_log2

__all__ = ["ResultControl", "ResultSlots"]

#: The command executor's side of the result slots (:class:`hw.link.executor.CommandExecutor`).
ResultControl = wiring.Signature({
    # the sequence number of the frame being checked (a READ_RESULT or not)
    "seq": Out(8),
    # a READ_RESULT with a new sequence number: the answered result, if any, is freed
    "free": Out(1),
    # the READ_RESULT is answered: the oldest complete result (after a free in the same
    # cycle) is sent, and kept as the answered result, with ``seq``
    "answer": Out(1),
    # ``seq`` is the answered READ_RESULT's: its ACK was lost, the same result goes again
    "again": In(1),
    # a complete result the host has not been sent
    "ready": In(1),
})


class ResultSlots(wiring.Component):
    """Two result slots in one block RAM; see the module docstring.

    Members
    -------
    i_result : In(stream.Signature(16))
        The embedding words, in order.
    host : In(ResultControl)
        Frees, answers and what the executor's checks need.
    held_words : Out(range(2 * n_result + 1))
        Words held (complete results and the one being filled).
    read : Out(ReadPort.Signature)
        Word ``addr`` of the result being sent (the one answered last), a cycle later.
    """

    def __init__(self, n_result: int):
        self.n_result = n_result
        super().__init__({
            "i_result": In(stream.Signature(16)),
            "host": In(ResultControl),
            "held_words": Out(range(2 * n_result + 1)),
            "read": Out(ReadPort.Signature(addr_width=ceil_log2(n_result), shape=16)),
        })

    def elaborate(self, platform):
        m = Module()
        n, host = self.n_result, self.host
        m.submodules.ram = ram = Memory(shape=16, depth=2 * n, init=[])
        ram_w = ram.write_port()
        ram_r = ram.read_port()

        wr_slot, rd_slot = Signal(), Signal()   # the engine fills wr_slot, the host reads rd_slot
        wr_cnt = Signal(range(n))
        filled = Signal(range(3))         # complete results held (the answered one included)
        answered = Signal()               # rd_slot was sent; kept until another READ_RESULT
        answered_seq = Signal(8)
        send_slot = Signal()
        base = Signal(range(2 * n))       # the first word of the slot being sent
        held = self.held_words
        take = self.i_result.valid & self.i_result.ready
        fill = take & (wr_cnt == n - 1)
        release = host.free & answered
        m.d.comb += [self.i_result.ready.eq(filled != 2),
                     ram_w.addr.eq(Mux(wr_slot, n, 0) + wr_cnt),
                     ram_w.data.eq(self.i_result.payload), ram_w.en.eq(take),
                     host.ready.eq(filled > answered),
                     host.again.eq(answered & (host.seq == answered_seq)),
                     ram_r.addr.eq(base + self.read.addr), ram_r.en.eq(self.read.en),
                     self.read.data.eq(ram_r.data)]
        with m.If(take):
            m.d.sync += wr_cnt.eq(Mux(fill, 0, wr_cnt + 1))
        with m.If(fill):
            m.d.sync += wr_slot.eq(~wr_slot)
        m.d.sync += [filled.eq(filled + fill - release),
                     held.eq(held + take - Mux(release, n, 0)),
                     base.eq(Mux(send_slot, n, 0))]
        with m.If(release):
            m.d.sync += [rd_slot.eq(~rd_slot), answered.eq(0)]
        # the answered slot again, or the next one (after the release)
        with m.If(host.answer):
            m.d.sync += [answered.eq(1), answered_seq.eq(host.seq),
                         send_slot.eq(rd_slot ^ release)]
        return m
