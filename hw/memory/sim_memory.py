"""Simulation model of external memory behind a :class:`hw.memory.port.MemoryPort`.

The same port as :class:`hw.memory.sdram.SDRAMController` offers the engine: ``cmd`` (word
address, write, length), ``w`` and ``r`` of 16-bit words. Each command waits ``latency``
cycles (row activate + CAS latency of the real chip), then moves one word per cycle; commands
run in order, one at a time, like the controller's.

Stress (both off by default, the ideal memory of ``make sim``'s figures): ``jitter`` adds a
random 0..``jitter`` cycles to each command's latency, and ``gap_prob`` drops ``w.ready`` /
``r.valid`` in a random share of the data cycles, so the engine meets a memory whose timing it
cannot predict, as with the SDRAM's refreshes and row changes. The randomness is a 32-bit
LFSR seeded by ``seed``: a run repeats exactly.

Strict: a word is *defined* once it is preloaded (the first ``init_words`` words of the image:
descriptors and constants, not the tensor area) or written. Reading a word that is not defined
-- never written, or beyond ``depth`` -- and writing beyond ``depth`` latch ``fault`` with the
address (``fault_addr``) and the kind (``fault_write``); the testbench fails on it at once,
naming the address, instead of computing on a 0 that the hardware would never have seen.

The storage is a plain Verilog array (:data:`ARRAY_VERILOG`, instantiated here) because a
multi-megaword Amaranth ``Memory`` with an initial value takes minutes to elaborate; the array
is preloaded with ``$readmemh`` from the firmware image at time 0 and written back with
``$writememh`` when ``dump`` is high, so a testbench can compare every tensor afterwards.
"""
from pathlib import Path

from amaranth import ClockSignal, Instance, Module, Mux, Signal
from amaranth.lib import stream, wiring
from amaranth.lib.wiring import In, Out

from firmware import image as im
from hw.memory.port import MemoryPort

ARRAY_MODULE = "engine_sim_mem_array"
ARRAY_VERILOG = f"""\
// Storage of hw/memory/sim_memory.py: preloaded with $readmemh, dumped with $writememh.
// defined[a]: word a was preloaded (a < INIT_WORDS) or written; rbad / wbad flag an access to
// an undefined word or beyond DEPTH.
module {ARRAY_MODULE} #(parameter DEPTH = 1024, parameter INIT = "", parameter DUMP = "",
                        parameter INIT_WORDS = 0)
  (input clk, input we, input [23:0] waddr, input [15:0] wdata,
   input [23:0] raddr, output [15:0] rdata, output rbad, output wbad, input dump);
  reg [15:0] mem [0:DEPTH-1];
  reg defined [0:DEPTH-1];
  integer i;
  initial begin
    for (i = 0; i < DEPTH; i = i + 1) begin
      mem[i] = 16'h0000;
      defined[i] = i < INIT_WORDS;
    end
    if (INIT != "") $readmemh(INIT, mem);
  end
  always @(posedge clk) if (we && waddr < DEPTH) begin
    mem[waddr] <= wdata;
    defined[waddr] <= 1'b1;
  end
  assign rdata = (raddr < DEPTH) ? mem[raddr] : 16'h0000;
  assign rbad = (raddr >= DEPTH) || !defined[raddr];
  assign wbad = waddr >= DEPTH;
  always @(posedge clk) if (dump && DUMP != "") $writememh(DUMP, mem);
endmodule
"""


def write_array_source(folder) -> Path:
    path = Path(folder) / f"{ARRAY_MODULE}.v"
    path.parent.mkdir(parents=True, exist_ok=True)
    if not path.exists() or path.read_text() != ARRAY_VERILOG:
        path.write_text(ARRAY_VERILOG)
    return path


class SimMemory(wiring.Component):
    """External memory model.

    Parameters
    ----------
    depth : int
        Words.
    init_file, dump_file : str
        ``$readmemh`` image and ``$writememh`` target (absolute paths).
    latency : int
        Cycles between accepting a command and its first word.
    init_words : int
        Words from address 0 that the preload defines (the rest of the image is space for
        tensors, undefined until written).
    jitter : int
        Largest random extra latency per command (0: none).
    gap_prob : float
        Share of data cycles in which the memory is not ready (0: none).
    seed : int
        Seed of the LFSR behind ``jitter`` and ``gap_prob``.

    Members
    -------
    port : In(MemoryPort)
    dump : In(1)
        Write the whole array to ``dump_file`` at the next clock edge.
    fault, fault_write : Out(1)
        Latched at the first bad access (see the module docstring); ``fault_write`` says it
        was a write beyond ``depth``.
    fault_addr : Out(ADDR_BITS)
        Its word address.
    """

    def __init__(self, depth, init_file, dump_file, latency, *, init_words=0, jitter=0,
                 gap_prob=0.0, seed=1):
        if not 0 <= init_words <= depth:
            raise ValueError(f"init_words must be within 0..depth ({depth}), not {init_words!r}")
        if jitter < 0:
            raise ValueError(f"jitter must be at least 0, not {jitter!r}")
        if not 0.0 <= gap_prob < 1.0:
            raise ValueError(f"gap_prob must be within [0, 1), not {gap_prob!r}")
        self.depth, self.latency, self.init_words = depth, latency, init_words
        self.jitter, self.gap_prob = jitter, gap_prob
        self.seed = (seed & 0xFFFFFFFF) or 1
        self.init_file, self.dump_file = str(init_file), str(dump_file)
        super().__init__({
            "port": In(MemoryPort(im.ADDR_BITS)),
            "dump": In(1),
            "fault": Out(1), "fault_write": Out(1), "fault_addr": Out(im.ADDR_BITS),
            "words_read": Out(32), "words_written": Out(32),
        })

    def elaborate(self, platform):
        m = Module()
        addr = Signal(im.ADDR_BITS)
        left = Signal(len(self.port.cmd.payload.length))
        write = Signal()
        wait = Signal(range(self.latency + self.jitter + 2))
        we = Signal()
        rdata = Signal(16)
        rbad, wbad = Signal(), Signal()
        m.submodules.array = Instance(
            ARRAY_MODULE, p_DEPTH=self.depth, p_INIT=self.init_file, p_DUMP=self.dump_file,
            p_INIT_WORDS=self.init_words,
            i_clk=ClockSignal(), i_we=we, i_waddr=addr, i_wdata=self.port.w.payload,
            i_raddr=addr, o_rdata=rdata, o_rbad=rbad, o_wbad=wbad, i_dump=self.dump)
        # Galois LFSR (x^32 + x^22 + x^2 + x + 1), a step a cycle.
        lfsr = Signal(32, init=self.seed)
        m.d.sync += lfsr.eq(Mux(lfsr[0], (lfsr >> 1) ^ 0x80200003, lfsr >> 1))
        extra = lfsr[8:24] % (self.jitter + 1) if self.jitter else 0
        gap = Signal()
        if self.gap_prob:
            m.d.comb += gap.eq(lfsr[:8] < round(self.gap_prob * 256))
        with m.FSM():
            with m.State("IDLE"):
                m.d.comb += self.port.cmd.ready.eq(1)
                with m.If(self.port.cmd.valid & (self.port.cmd.payload.length != 0)):
                    m.d.sync += [addr.eq(self.port.cmd.payload.addr), left.eq(self.port.cmd.payload.length),
                                 write.eq(self.port.cmd.payload.write),
                                 wait.eq(self.latency + extra)]
                    m.next = "WAIT"
            with m.State("WAIT"):
                with m.If(wait <= 1):
                    m.next = "DATA"
                with m.Else():
                    m.d.sync += wait.eq(wait - 1)
            with m.State("DATA"):
                moved, bad = Signal(), Signal()     # a word moves this cycle; it is a bad one
                with m.If(write):
                    m.d.comb += [self.port.w.ready.eq(~gap), we.eq(self.port.w.valid & ~gap),
                                 moved.eq(self.port.w.valid & ~gap), bad.eq(wbad)]
                with m.Else():
                    m.d.comb += [self.port.r.valid.eq(~gap), self.port.r.payload.eq(rdata),
                                 moved.eq(self.port.r.ready & ~gap), bad.eq(rbad)]
                with m.If(moved & bad & ~self.fault):
                    m.d.sync += [self.fault.eq(1), self.fault_write.eq(write),
                                 self.fault_addr.eq(addr)]
                with m.If(moved):
                    m.d.sync += [addr.eq(addr + 1), left.eq(left - 1)]
                    with m.If(write):
                        m.d.sync += self.words_written.eq(self.words_written + 1)
                    with m.Else():
                        m.d.sync += self.words_read.eq(self.words_read + 1)
                    with m.If(left == 1):
                        m.next = "IDLE"
        return m


class EngineHarness(wiring.Component):
    """:class:`hw.engine.layer_engine.Engine` wired to a :class:`SimMemory`: what the simulations run.

    Members: ``i_stream``, ``o_stream``, ``frame_done``, ``busy``, ``pc`` (the engine's) and
    ``dump``, ``mem_fault``, ``mem_fault_write``, ``mem_fault_addr``, ``mem_words_read``,
    ``mem_words_written`` (the memory's: every word that crossed the port, counted).
    ``init_words``, ``jitter``, ``gap_prob``, ``seed``: see :class:`SimMemory`."""

    def __init__(self, config, depth, init_file, dump_file, *, init_words=0, jitter=0,
                 gap_prob=0.0, seed=1):
        from hw.engine.layer_engine import Engine
        self.engine = Engine(config)
        self.memory = SimMemory(depth, init_file, dump_file, config.mem_latency,
                                init_words=init_words, jitter=jitter, gap_prob=gap_prob,
                                seed=seed)
        super().__init__({
            "i_stream": In(stream.Signature(8)),
            "o_stream": Out(stream.Signature(16)),
            "frame_done": Out(1), "busy": Out(1), "pc": Out(16), "dump": In(1),
            "mem_fault": Out(1), "mem_fault_write": Out(1), "mem_fault_addr": Out(im.ADDR_BITS),
            "mem_words_read": Out(32), "mem_words_written": Out(32),
        })

    def elaborate(self, platform):
        m = Module()
        m.submodules.engine = e = self.engine
        m.submodules.memory = mem = self.memory
        wiring.connect(m, e.mem, mem.port)
        wiring.connect(m, wiring.flipped(self.i_stream), e.i_stream)
        m.d.comb += [self.o_stream.valid.eq(e.o_stream.valid),
                     self.o_stream.payload.eq(e.o_stream.payload),
                     e.o_stream.ready.eq(self.o_stream.ready),
                     self.frame_done.eq(e.frame_done), self.busy.eq(e.busy),
                     self.pc.eq(e.pc), mem.dump.eq(self.dump),
                     self.mem_fault.eq(mem.fault), self.mem_fault_write.eq(mem.fault_write),
                     self.mem_fault_addr.eq(mem.fault_addr),
                     self.mem_words_read.eq(mem.words_read),
                     self.mem_words_written.eq(mem.words_written)]
        return m
