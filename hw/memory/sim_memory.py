"""Simulation model of external memory behind a :class:`hw.memory.port.MemoryPort`.

The same port as :class:`hw.memory.sdram.SDRAMController` offers the engine: ``cmd`` (word
address, write, length), ``w`` and ``r`` of 16-bit words. Each command waits ``latency``
cycles (row activate + CAS latency of the real chip), then moves one word per cycle; commands
run in order, one at a time, like the controller's.

The storage is a plain Verilog array (:data:`ARRAY_VERILOG`, instantiated here) because a
multi-megaword Amaranth ``Memory`` with an initial value takes minutes to elaborate; the array
is preloaded with ``$readmemh`` from the firmware image at time 0 and written back with
``$writememh`` when ``dump`` is high, so a testbench can compare every tensor afterwards.
"""
from pathlib import Path

from amaranth import ClockSignal, Instance, Module, Signal
from amaranth.lib import stream, wiring
from amaranth.lib.wiring import In, Out

from firmware import image as im
from hw.memory.port import MemoryPort

ARRAY_MODULE = "engine_sim_mem_array"
ARRAY_VERILOG = f"""\
// Storage of hw/memory/sim_memory.py: preloaded with $readmemh, dumped with $writememh.
module {ARRAY_MODULE} #(parameter DEPTH = 1024, parameter INIT = "", parameter DUMP = "")
  (input clk, input we, input [23:0] waddr, input [15:0] wdata,
   input [23:0] raddr, output [15:0] rdata, input dump);
  reg [15:0] mem [0:DEPTH-1];
  integer i;
  initial begin
    for (i = 0; i < DEPTH; i = i + 1) mem[i] = 16'h0000;
    if (INIT != "") $readmemh(INIT, mem);
  end
  always @(posedge clk) if (we) mem[waddr] <= wdata;
  assign rdata = (raddr < DEPTH) ? mem[raddr] : 16'h0000;
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

    Members
    -------
    port : In(MemoryPort)
    dump : In(1)
        Write the whole array to ``dump_file`` at the next clock edge.
    """

    def __init__(self, depth, init_file, dump_file, latency):
        self.depth, self.latency = depth, latency
        self.init_file, self.dump_file = str(init_file), str(dump_file)
        super().__init__({
            "port": In(MemoryPort(im.ADDR_BITS)),
            "dump": In(1),
        })

    def elaborate(self, platform):
        m = Module()
        addr = Signal(im.ADDR_BITS)
        left = Signal(len(self.port.cmd.payload.length))
        write = Signal()
        wait = Signal(range(self.latency + 2))
        we = Signal()
        rdata = Signal(16)
        m.submodules.array = Instance(
            ARRAY_MODULE, p_DEPTH=self.depth, p_INIT=self.init_file, p_DUMP=self.dump_file,
            i_clk=ClockSignal(), i_we=we, i_waddr=addr, i_wdata=self.port.w.payload,
            i_raddr=addr, o_rdata=rdata, i_dump=self.dump)
        with m.FSM():
            with m.State("IDLE"):
                m.d.comb += self.port.cmd.ready.eq(1)
                with m.If(self.port.cmd.valid & (self.port.cmd.payload.length != 0)):
                    m.d.sync += [addr.eq(self.port.cmd.payload.addr), left.eq(self.port.cmd.payload.length),
                                 write.eq(self.port.cmd.payload.write), wait.eq(self.latency)]
                    m.next = "WAIT"
            with m.State("WAIT"):
                with m.If(wait <= 1):
                    m.next = "DATA"
                with m.Else():
                    m.d.sync += wait.eq(wait - 1)
            with m.State("DATA"):
                with m.If(write):
                    m.d.comb += [self.port.w.ready.eq(1), we.eq(self.port.w.valid)]
                    moved = self.port.w.valid
                with m.Else():
                    m.d.comb += [self.port.r.valid.eq(1), self.port.r.payload.eq(rdata)]
                    moved = self.port.r.ready
                with m.If(moved):
                    m.d.sync += [addr.eq(addr + 1), left.eq(left - 1)]
                    with m.If(left == 1):
                        m.next = "IDLE"
        return m


class EngineHarness(wiring.Component):
    """:class:`hw.engine.layer_engine.Engine` wired to a :class:`SimMemory`: what the simulations run.

    Members: ``i_stream``, ``o_stream``, ``frame_done``, ``busy``, ``pc`` (the engine's) and
    ``dump`` (the memory's)."""

    def __init__(self, config, depth, init_file, dump_file):
        from hw.engine.layer_engine import Engine
        self.engine = Engine(config)
        self.memory = SimMemory(depth, init_file, dump_file, config.mem_latency)
        super().__init__({
            "i_stream": In(stream.Signature(8)),
            "o_stream": Out(stream.Signature(16)),
            "frame_done": Out(1), "busy": Out(1), "pc": Out(16), "dump": In(1),
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
                     self.pc.eq(e.pc), mem.dump.eq(self.dump)]
        return m
