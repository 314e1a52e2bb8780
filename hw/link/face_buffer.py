"""The face buffer: a block-RAM byte FIFO whose writes stay invisible until committed.

The host link (:mod:`hw.link.framing`) writes the bytes of a FACE_DATA frame into it as they
arrive from the UART, before the frame's CRC is known; a good frame commits them (the engine's
side sees them from then on), anything else rolls them back. So a damaged frame never reaches
the engine, and the face of frame N+1 uploads into the buffer while the engine computes frame N
(docs/BOARD.md, "Overlapping uploads with compute").

Members
-------
w_data : In(8), w_en : In(1)
    A tentative byte, written when ``w_en`` and not ``w_full`` (a byte offered while full is
    dropped: the writer counts it as an overflow).
w_full : Out(1)
    No room for another tentative byte.
commit : In(1)
    Every tentative byte written before this cycle becomes readable.
rollback : In(1)
    Every tentative byte is dropped, one written in this cycle too (its room is free
    again). ``commit`` wins if both are high; a byte written in the same cycle as
    ``commit`` stays tentative.
o_stream : Out(stream.Signature(8))
    The committed bytes in order, one a cycle at most; ``valid`` and ``payload`` come from
    an output register, after the block RAMs' data register and a row register (three
    cycles from a commit to the first byte; up to three bytes wait in the registers).
level : Out(range(depth + 1))
    Committed bytes not yet read out of the RAM.
"""
from amaranth import Cat, Module, Mux, Signal
from amaranth.lib import stream, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

__all__ = ["FaceBuffer", "BLOCK_BYTES"]

#: Bytes of one DP16KD as 2048 x 9.
BLOCK_BYTES = 2048


class FaceBuffer(wiring.Component):
    """Byte FIFO of ``depth`` entries with commit and rollback on the write side.

    The bytes lie in ``lanes`` byte lanes of one wide memory (``depth / lanes`` rows; default
    one lane per 2048 bytes, so each lane is one DP16KD column): byte ``k`` of the FIFO's
    ring is lane ``k % lanes`` of row ``k // lanes``. A read takes a whole row into a fabric
    register straight from the block RAMs' outputs, and the lane is selected after that
    register: no multiplexer between the RAMs' slow clock-to-out and a flip-flop (a
    depth-cascaded memory puts one there: 19 blocks routed at 66 MHz on the 85F).
    """

    def __init__(self, depth: int, lanes: int | None = None):
        if not isinstance(depth, int) or depth < 2:
            raise ValueError(f"face buffer depth must be an integer of at least 2, not "
                             f"{depth!r}")
        lanes = -(-depth // BLOCK_BYTES) if lanes is None else lanes
        if not isinstance(lanes, int) or lanes < 1 or depth % lanes or depth // lanes < 2:
            raise ValueError(f"face buffer lanes must divide depth {depth} into rows of at "
                             f"least 2, not {lanes!r}")
        self.depth, self.lanes = depth, lanes
        super().__init__({
            "w_data": In(8), "w_en": In(1), "w_full": Out(1),
            "commit": In(1), "rollback": In(1),
            "o_stream": Out(stream.Signature(8)),
            "level": Out(range(depth + 1)),
        })

    def elaborate(self, platform):
        m = Module()
        depth, lanes = self.depth, self.lanes
        rows = depth // lanes
        m.submodules.mem = mem = Memory(shape=8 * lanes, depth=rows, init=[])
        wp = mem.write_port(granularity=8)
        rp = mem.read_port(transparent_for=())

        def pointer(name):
            return Signal(range(rows), name=f"{name}_row"), Signal(range(lanes), name=f"{name}_lane")

        def advance(m, ptr):
            row, lane = ptr
            with m.If(lane == lanes - 1):
                m.d.sync += [lane.eq(0), row.eq(Mux(row == rows - 1, 0, row + 1))]
            with m.Else():
                m.d.sync += lane.eq(lane + 1)

        w_ptr = pointer("w")                # next tentative byte
        c_ptr = pointer("c")                # end of the committed bytes
        r_ptr = pointer("r")                # next byte to read
        used = Signal(range(depth + 1))     # tentative + committed bytes not read
        pending = Signal(range(depth + 1))  # tentative bytes
        avail = self.level                  # committed bytes not read out of the RAM

        o = self.o_stream
        write = Signal()
        load = Signal()         # read the next byte's row into the RAMs' data register
        ram_valid = Signal()
        ram_lane = Signal(range(lanes))
        word = Signal(8 * lanes)            # the row, in fabric flip-flops
        word_valid = Signal()
        word_lane = Signal(range(lanes))
        move_word = Signal()    # RAM data register -> word
        move_out = Signal()     # word -> output register (the lane's byte)
        m.d.comb += [
            self.w_full.eq(used == depth),
            write.eq(self.w_en & ~self.w_full),
            wp.addr.eq(w_ptr[0]), wp.data.eq(Cat(*[self.w_data] * lanes)),
            wp.en.eq(Mux(write, 1 << w_ptr[1], 0)),
            move_out.eq(word_valid & (~o.valid | o.ready)),
            move_word.eq(ram_valid & (~word_valid | move_out)),
            load.eq((avail != 0) & (~ram_valid | move_word)),
            rp.addr.eq(r_ptr[0]), rp.en.eq(load),
        ]
        with m.If(load):
            m.d.sync += [ram_valid.eq(1), ram_lane.eq(r_ptr[1])]
            advance(m, r_ptr)
        with m.Elif(move_word):
            m.d.sync += ram_valid.eq(0)
        with m.If(move_word):
            m.d.sync += [word_valid.eq(1), word.eq(rp.data), word_lane.eq(ram_lane)]
        with m.Elif(move_out):
            m.d.sync += word_valid.eq(0)
        with m.If(move_out):
            m.d.sync += [o.valid.eq(1), o.payload.eq(word.word_select(word_lane, 8))]
        with m.Elif(o.ready):
            m.d.sync += o.valid.eq(0)

        drop = self.rollback & ~self.commit
        m.d.sync += [
            used.eq(Mux(drop, used - pending, used + write) - load),
            pending.eq(Mux(drop, 0, Mux(self.commit, 0, pending) + write)),
            avail.eq(avail + Mux(self.commit, pending, 0) - load),
        ]
        with m.If(self.commit):
            m.d.sync += [c_ptr[0].eq(w_ptr[0]), c_ptr[1].eq(w_ptr[1])]
        # the pointer after this cycle's write, or back to the committed end
        with m.If(self.rollback & ~self.commit):
            m.d.sync += [w_ptr[0].eq(c_ptr[0]), w_ptr[1].eq(c_ptr[1])]
        with m.Elif(write):
            advance(m, w_ptr)
        return m
