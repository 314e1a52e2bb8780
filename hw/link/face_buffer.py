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
    an output register behind the block RAMs' own data register (two cycles from a commit to
    the first byte; up to two bytes wait in the two registers).
level : Out(range(depth + 1))
    Committed bytes not yet read out of the RAM.
"""
from amaranth import Module, Mux, Signal
from amaranth.lib import stream, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

__all__ = ["FaceBuffer"]


class FaceBuffer(wiring.Component):
    """Byte FIFO of ``depth`` entries with commit and rollback on the write side."""

    def __init__(self, depth: int):
        if not isinstance(depth, int) or depth < 2:
            raise ValueError(f"face buffer depth must be an integer of at least 2, not "
                             f"{depth!r}")
        self.depth = depth
        super().__init__({
            "w_data": In(8), "w_en": In(1), "w_full": Out(1),
            "commit": In(1), "rollback": In(1),
            "o_stream": Out(stream.Signature(8)),
            "level": Out(range(depth + 1)),
        })

    def elaborate(self, platform):
        m = Module()
        depth = self.depth
        m.submodules.mem = mem = Memory(shape=8, depth=depth, init=[])
        wp = mem.write_port()
        rp = mem.read_port(transparent_for=())

        def inc(ptr):
            return Mux(ptr == depth - 1, 0, ptr + 1)

        w_ptr = Signal(range(depth))        # next tentative byte
        c_ptr = Signal(range(depth))        # end of the committed bytes
        r_ptr = Signal(range(depth))        # next byte to read
        used = Signal(range(depth + 1))     # tentative + committed bytes not read
        pending = Signal(range(depth + 1))  # tentative bytes
        avail = self.level                  # committed bytes not read

        o = self.o_stream
        write = Signal()
        load = Signal()     # read the next committed byte into the RAM's data register
        move = Signal()     # the RAM's data register -> the output register
        ram_valid = Signal()
        m.d.comb += [
            self.w_full.eq(used == depth),
            write.eq(self.w_en & ~self.w_full),
            wp.addr.eq(w_ptr), wp.data.eq(self.w_data), wp.en.eq(write),
            # Two register stages: the read port's data register (the block RAMs' outputs and
            # the multiplexer between them) and the output register, so that no RAM output
            # reaches the consumer combinationally.
            move.eq(ram_valid & (~o.valid | o.ready)),
            load.eq((avail != 0) & (~ram_valid | move)),
            rp.addr.eq(r_ptr), rp.en.eq(load),
        ]
        with m.If(load):
            m.d.sync += [ram_valid.eq(1), r_ptr.eq(inc(r_ptr))]
        with m.Elif(move):
            m.d.sync += ram_valid.eq(0)
        with m.If(move):
            m.d.sync += [o.valid.eq(1), o.payload.eq(rp.data)]
        with m.Elif(o.ready):
            m.d.sync += o.valid.eq(0)

        drop = self.rollback & ~self.commit
        m.d.sync += [
            used.eq(Mux(drop, used - pending, used + write) - load),
            pending.eq(Mux(drop, 0, Mux(self.commit, 0, pending) + write)),
            avail.eq(avail + Mux(self.commit, pending, 0) - load),
        ]
        with m.If(self.commit):
            m.d.sync += c_ptr.eq(w_ptr)
        # the pointer after this cycle's write, or back to the committed end
        with m.If(self.rollback & ~self.commit):
            m.d.sync += w_ptr.eq(c_ptr)
        with m.Elif(write):
            m.d.sync += w_ptr.eq(inc(w_ptr))
        return m
