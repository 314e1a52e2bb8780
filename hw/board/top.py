"""The board top: what is built into the ULX3S bitstream.

:class:`BoardTop` makes the engine clock (``sync`` domain) from the 25 MHz oscillator with the
``EHXPLLL`` dividers of ``boards.yaml``, holds ``sync`` in reset until the PLL locks, and puts
the pins around :class:`EngineSystem`: the engine (:mod:`hw.engine.layer_engine`), the SDRAM
controller (:mod:`hw.memory.sdram`), the host link (:mod:`hw.link.framing`, over the UART or
the USB port: ``boards.yaml`` ``link.kind``) and the
memory-port arbiter (:mod:`hw.memory.arbiter`). Its pre-synthesis estimate is
:func:`engine_estimate`.
"""
import math
import re

from amaranth import ClockDomain, ClockSignal, Elaboratable, Module, Mux, Signal
from amaranth import signed
from amaranth.lib import io, wiring
from amaranth.lib.cdc import ResetSynchronizer

from hw.board.pll import ehxplll

__all__ = ["BoardTop", "EngineSystem", "engine_config", "engine_estimate", "engine_resources",
           "face_buffer_bytes", "rtlil_census", "sdram_read_latency", "system_ports"]


class BoardTop(Elaboratable):
    """Top-level elaboratable for the amaranth-boards ULX3S platform of ``board``.

    Parameters
    ----------
    board : hw.board.boards.Board
    """

    def __init__(self, board):
        self.board = board

    def _clocking(self, m, platform):
        b = self.board
        pll = b.clock.pll
        clk25 = platform.request(platform.default_clk, dir="-")
        m.submodules.clk25_buf = clk25_buf = io.Buffer("i", clk25)
        self._clk25 = clk25_buf.i

        m.domains.sync = cd_sync = ClockDomain("sync")
        locked = Signal()
        # Feedback from CLKOP; the dividers and CLKOP_CPHASE are boards.yaml's (the values
        # yowasp-ecppll gives for the target), checked against the VCO range on load.
        m.submodules.pll = ehxplll(
            clk25_buf.i, cd_sync.clk, locked,
            a_FREQUENCY_PIN_CLKI=f"{b.clock.oscillator_mhz:g}",
            a_FREQUENCY_PIN_CLKOP=f"{b.clock.target_mhz:g}",
            p_CLKI_DIV=pll.clki_div, p_CLKFB_DIV=pll.clkfb_div, p_CLKOP_DIV=pll.clkop_div,
            p_CLKOP_CPHASE=pll.clkop_cphase, p_CLKOP_FPHASE=0)
        # No FREQUENCY NET for the PLL output: Amaranth would name the net by one of its
        # hierarchical aliases, which nextpnr does not find after flattening. nextpnr derives
        # the constraint itself from the 25 MHz input constraint and the dividers ("Derived
        # frequency constraint of 100.0 MHz for net clk"); hw/build/flow.py picks the engine clock
        # out of nextpnr's report by that constraint.
        # Hold the engine in reset until the PLL has locked; release synchronously.
        m.submodules.reset_sync = ResetSynchronizer(~locked, domain="sync")
        return locked

    def elaborate(self, platform):
        m = Module()
        locked = self._clocking(m, platform)
        self._elaborate_engine(m, platform, locked)
        return m

    @staticmethod
    def _led(m, platform, index):
        m.submodules[f"led_{index}"] = buf = io.Buffer("o", platform.request("led", index,
                                                                             dir="-"))
        return buf.o

    def _usb_pins(self, m, platform, pins):
        """The US2 port (:func:`hw.link.usb.us2_resource`) to the USB link's PHY, and the
        second PLL that makes its ``usb_io`` (48 MHz) and ``usb`` (12 MHz) domains."""
        from hw.link.usb import USBClocking, us2_resource
        m.submodules.usb_clocking = USBClocking(self._clk25, self.board.clock.oscillator_mhz)
        platform.add_resources([us2_resource()])
        us2 = platform.request("us2", 0, dir="-")
        for name in ("d_p", "d_n"):
            m.submodules[f"usb_{name}"] = buf = io.Buffer("io", getattr(us2, name))
            pin = getattr(pins, name)
            m.d.comb += [buf.o.eq(pin.o), buf.oe.eq(pin.oe), pin.i.eq(buf.i)]
        m.submodules.usb_pullup = pull = io.Buffer("o", us2.pullup)
        m.d.comb += pull.o.eq(pins.pullup.o)

    def _elaborate_engine(self, m, platform, locked):
        """SDRAM pins, UART pins and LEDs around :class:`EngineSystem` (see there)."""
        m.submodules.system = system = EngineSystem(self.board)
        pads = system.pads

        sdram = platform.request("sdram", 0, dir="-")
        # The SDRAM clock: an ODDRX1F (DDR output, D0=1 D1=0) replicates the sync clock in
        # phase at the pin; the command and data pins leave fabric flip-flops a little later,
        # which is the hold margin at the chip (hw/memory/sdram.py: in phase or slightly ahead).
        m.submodules.sdram_clk = clk_buf = io.DDRBuffer("o", sdram.clk, o_domain="sync")
        m.d.comb += [clk_buf.o[0].eq(1), clk_buf.o[1].eq(0)]
        outs = {"clk_en": pads.clk_en, "cs": ~pads.cs_n, "we": ~pads.we_n, "ras": ~pads.ras_n,
                "cas": ~pads.cas_n, "ba": pads.ba, "a": pads.a, "dqm": pads.dqm}
        for name, value in outs.items():    # cs/we/ras/cas are PinsN: the port inverts again
            buf = io.Buffer("o", getattr(sdram, name))
            m.submodules[f"sdram_{name}"] = buf
            m.d.comb += buf.o.eq(value)
        m.submodules.sdram_dq = dq = io.Buffer("io", sdram.dq)
        m.d.comb += [dq.o.eq(pads.dq_o), dq.oe.eq(pads.dq_oe), pads.dq_i.eq(dq.i)]

        if self.board.link.kind == "usb":
            self._usb_pins(m, platform, system.usb)
        else:
            # FT231X UART (role "dce": rx is the FPGA's input). uart_tx_enable (L3) is left
            # unrequested, hence undriven: the link does not need it.
            uart = platform.request("uart", 0, dir="-")
            m.submodules.uart_rx = rx = io.Buffer("i", uart.rx)
            m.submodules.uart_tx = tx = io.Buffer("o", uart.tx)
            m.d.comb += [system.rx.eq(rx.i), tx.o.eq(system.tx)]

        # LED 0: SDRAM initialised; LED 1: engine running; LED 2: a frame finished (sticky
        # until the next run); LED 7: PLL lock.
        m.d.comb += [self._led(m, platform, 0).eq(system.init_done),
                     self._led(m, platform, 1).eq(system.running),
                     self._led(m, platform, 2).eq(system.done),
                     self._led(m, platform, 7).eq(locked)]


# ---------------------------------------------------------------------------------------------
# The engine design without the platform: engine + arbiter + SDRAM controller + UART link

#: Inter-byte timeout of the host link (USB-UART bridges deliver in packets of some ms; the
#: driver's response timeout is 1 s).
LINK_TIMEOUT_S = 0.02
#: Longest SDRAM command (the link's ``max_burst``; the engine's bursts are shorter).
SDRAM_BURST = 4096
#: The link's face buffer (:class:`hw.link.face_buffer.FaceBuffer`): one 112 x 112 x 3 face
#: (37,632 bytes) rounded up to whole DP16KD of 2048 bytes, 19 of them. The next face uploads
#: into it while the engine computes (docs/BOARD.md, "Overlapping uploads with compute").
FACE_BUFFER_BYTES = 19 * 2048


def face_buffer_bytes(board) -> int:
    """The face buffer built for ``board``: a whole face (:data:`FACE_BUFFER_BYTES`) when its
    19 DP16KD are at most half the device's; otherwise one DP16KD (2048 bytes), through which
    a face streams in chunks while the engine takes it, faces one after the other (the
    ulx3s-12f, 32 DP16KD: the engine design needs 26 of them without the buffer)."""
    blocks = FACE_BUFFER_BYTES // 2048
    return FACE_BUFFER_BYTES if 2 * blocks <= board.resources.DP16KD else 2048


def engine_config(board, **overrides):
    """The :class:`firmware.image.EngineConfig` built for ``board`` (its ``engine`` section)."""
    from firmware.image import EngineConfig
    return EngineConfig.from_board(board, **overrides)


class EngineSystem(Elaboratable):
    """Everything of the engine design but the FPGA pins and the clock: the platform-free part
    of :class:`BoardTop` (also what the estimate counts and what a board-level simulation can
    drive).

    - :class:`hw.memory.sdram.SDRAMController` for the board's chip at the engine clock
      (``burst_words`` = :data:`SDRAM_BURST`);
    - the host link of ``link.kind``: :class:`hw.link.framing.SerialHostLink` at ``link.baud``
      (``uart``) or :class:`hw.link.usb.USBHostLink` (``usb``: members ``usb``, the US2 lines
      for the PHY, and domains ``usb``/``usb_io`` from the board top), memory port 24-bit word
      addresses and
      ``max_burst`` = :data:`SDRAM_BURST` (the same streams as the controller);
    - :class:`hw.engine.layer_engine.Engine` with :func:`engine_config` of the board, in its own reset
      domain ``eng`` (same clock): it is held in reset until a run starts -- the link's RUN
      (``start``) or a committed face byte in the link's face buffer -- and put back into
      reset when it reaches END (``frame_done``); a face already waiting in the buffer starts
      the next run at once. So it never fetches descriptors from a memory the host
      has not loaded yet, and each frame starts at descriptor 0. The memory image (program +
      weights) is written by the host over the link (:mod:`firmware.driver`); the bitstream
      holds no weights.
    - :class:`hw.memory.arbiter.MemoryArbiter`: master 0 the link, allowed while the engine is held;
      master 1 the engine, allowed while it runs. The link reports ``busy`` while the engine
      runs, so it NACKs memory commands meanwhile; the arbiter would hold them anyway.

    Members: ``pads`` (:class:`hw.memory.sdram.SDRAMPadsSignature`, controller side), ``rx`` / ``tx``
    (UART lines), ``init_done``, ``running``, ``done``.
    """

    def __init__(self, board, *, sdram_init_wait_ns=None):
        from firmware import protocol
        from hw.memory.arbiter import MemoryArbiter
        from hw.engine.layer_engine import Engine
        from hw.link.framing import SerialHostLink
        from hw.memory.sdram import SDRAMController
        from hw.memory.sdram_chips import get_chip
        from hw.link.uart import uart_divider
        self.board = board
        clk_hz = board.clock.target_hz
        self.config = engine_config(board)
        chip = get_chip(board.sdram.chip)
        # boards.yaml's CAS latency; the chip's minimum at this clock is the floor (a longer
        # latency is always legal: the mode register and the read tap follow it).
        cl_min = chip.cycles(clk_hz).cas_latency
        if board.sdram.cas_latency < cl_min:
            raise ValueError(f"board {board.name!r}: boards.yaml sdram.cas_latency is "
                             f"{board.sdram.cas_latency} but {chip.name} needs CL {cl_min} at "
                             f"{board.clock.target_mhz:g} MHz")
        self.sdram = SDRAMController(chip, clk_hz, burst_words=SDRAM_BURST,
                                     init_wait_ns=sdram_init_wait_ns,
                                     timing_overrides={"cas_latency": board.sdram.cas_latency})
        port = self.sdram.signature.members["port"].signature
        link_args = dict(timeout_cycles=int(LINK_TIMEOUT_S * clk_hz),
                         addr_width=port.addr_width, mem_words=chip.words,
                         max_burst=SDRAM_BURST, n_result=protocol.N_RESULT,
                         face_depth=face_buffer_bytes(board),
                         # the engine reads its face from FACE_DATA frames only
                         run_command=False)
        if board.link.kind == "usb":      # US2 port, CDC-ACM (hw/link/usb.py): pins `usb`
            from hw.link.usb import USBHostLink
            self.link = USBHostLink(**link_args)
            self.usb = self.link.pins
        else:
            self.link = SerialHostLink(uart_divider(clk_hz, board.link.baud), **link_args)
        self.engine = Engine(self.config)
        # Register slices toward the controller: its ready (a function of its whole command
        # decision) would otherwise run combinationally through the arbiter into the engine's
        # and the link's counters and RAM addresses (measured: the deepest non-engine paths).
        self.arbiter = MemoryArbiter(2, addr_width=port.addr_width,
                                     length_width=port.length_width,
                                     data_width=port.data_width, register_bus=True)
        self.pads = self.sdram.pads
        self.rx = Signal(init=1)
        self.tx = Signal(init=1)
        self.init_done = Signal()
        self.running = Signal()
        self.done = Signal()

    def elaborate(self, platform):
        from amaranth import DomainRenamer, ResetSignal
        m = Module()
        sdram, link, arb = self.sdram, self.link, self.arbiter
        m.submodules.sdram = sdram
        m.submodules.link = link
        m.submodules.arbiter = arb
        m.submodules.engine = DomainRenamer({"sync": "eng"})(self.engine)
        eng = self.engine

        # The engine's domain: the sync clock, reset while no run is in progress. The reset is
        # a register (set by the sync reset too): it fans out to thousands of flip-flops, and
        # a LUT in front of that net was the routed critical path (78.3 MHz against 81.25).
        m.domains.eng = ClockDomain("eng", local=True)
        running = self.running
        eng_reset = Signal(init=1)
        m.d.sync += eng_reset.eq(~running)
        m.d.comb += [ClockSignal("eng").eq(ClockSignal("sync")),
                     ResetSignal("eng").eq(eng_reset)]
        # Register slices on the face and result streams: the link and the engine sit apart
        # on the die, and these streams run at UART speed.
        from hw.memory.arbiter import StreamSlice
        m.submodules.face_slice = face = StreamSlice(8)
        m.submodules.result_slice = result = StreamSlice(signed(16))
        go = link.start | (face.o.valid & ~running)
        with m.If(eng.frame_done):
            m.d.sync += [running.eq(0), self.done.eq(1)]
        with m.Elif(go):
            m.d.sync += [running.eq(1), self.done.eq(0)]

        # Host link: UART pins, engine status, face bytes in, embedding out.
        if self.board.link.kind == "uart":
            m.d.comb += [link.rx.eq(self.rx), self.tx.eq(link.tx)]
        m.d.comb += [link.busy.eq(running), link.done.eq(self.done), link.error.eq(0),
                     face.i.valid.eq(link.o_face.valid),
                     face.i.payload.eq(link.o_face.payload),
                     link.o_face.ready.eq(face.i.ready),
                     # face bytes only while a run is on and the engine out of reset (the
                     # registered reset follows `running` a cycle late)
                     eng.i_stream.valid.eq(face.o.valid & running & ~eng_reset),
                     eng.i_stream.payload.eq(face.o.payload),
                     face.o.ready.eq(eng.i_stream.ready & running & ~eng_reset),
                     result.i.valid.eq(eng.o_stream.valid),
                     result.i.payload.eq(eng.o_stream.payload),
                     eng.o_stream.ready.eq(result.i.ready),
                     link.i_result.valid.eq(result.o.valid),
                     link.i_result.payload.eq(result.o.payload),
                     result.o.ready.eq(link.i_result.ready),
                     self.init_done.eq(sdram.init_done)]

        # Memory: link -> arbiter master 0, engine -> master 1, arbiter -> controller.
        wiring.connect(m, link.mem, arb.m0)
        wiring.connect(m, eng.mem, arb.m1)
        wiring.connect(m, arb.bus, sdram.port)
        m.d.comb += arb.allow.eq(Mux(running, 0b10, 0b01))
        return m


def system_ports(system):
    """Top-level ports of an :class:`EngineSystem` (for RTLIL/Verilog conversion)."""
    pads = system.pads
    link = system.usb.ports() if system.board.link.kind == "usb" else [system.rx, system.tx]
    return [getattr(pads, n) for n in pads.signature.members] + link + \
        [system.init_done, system.running, system.done]


# ---------------------------------------------------------------------------------------------
# Pre-synthesis estimate of the engine design

#: SDRAM cycles from a read command to its first word at the arbiter, on top of the engine's
#: own command handling: ACT + tRCD (a row miss at the start of a burst), CAS latency, the
#: controller's dq capture register and read FIFO, the command register and the arbiter's
#: register slices (the master's command, the bus command, the read data).
def sdram_read_latency(board) -> int:
    from hw.memory.sdram_chips import get_chip
    t = get_chip(board.sdram.chip).cycles(board.clock.target_hz)
    return 1 + t.tRCD + board.sdram.cas_latency + 1 + 2 + 3    # + the arbiter's 3 slices


def _rtlil_cells(text):
    """``[(type, params, connections)]`` of every cell and ``[(width, size)]`` of every
    memory of an RTLIL text (all modules; each module of an Amaranth design is instantiated
    once)."""
    cells, memories = [], {}
    cur = None
    module = None
    for line in text.splitlines():
        s = line.strip()
        if s.startswith("module "):
            module = s.split()[1]
        elif s.startswith("memory "):
            f = s.split()
            memories[(module, f[-1])] = {"width": int(f[f.index("width") + 1]),
                                         "depth": int(f[f.index("size") + 1]),
                                         "lanes": 1, "async_read": False}
        elif s.startswith("cell "):
            cur = (s.split()[1], {}, {})
            cells.append(cur)
        elif cur is not None and s.startswith("parameter "):
            f = s.split(None, 2)
            try:
                cur[1][f[1].lstrip("\\")] = int(f[2])
            except ValueError:
                cur[1][f[1].lstrip("\\")] = f[2]
        elif cur is not None and s.startswith("connect "):
            f = s.split(None, 2)
            cur[2][f[1].lstrip("\\")] = f[2]
        elif s == "end":
            if cur is not None and cur[0] in ("$memwr_v2", "$memrd_v2"):
                mem = memories.get((module, "\\" + str(cur[1].get("MEMID", "")).strip('"')
                                    .lstrip("\\")))
                if mem is not None and cur[0] == "$memwr_v2":
                    # Write enables: one distinct enable bit per lane of the granularity.
                    bits = set(re.findall(r"(\S+) \[(\d+)\](?= |$| })", cur[2].get("EN", "")))
                    mem["lanes"] = max(mem["lanes"], len(bits))
                elif mem is not None and cur[1].get("CLK_ENABLE") == 0:
                    mem["async_read"] = True
            cur = None
    return cells, list(memories.values())


def _is_const(conn):
    return conn is not None and "'" in conn and not conn.startswith("{") and \
        conn.split("'")[1].replace("0", "").replace("1", "") in ("", "x", "z")


def _const_is_pow2(conn):
    v = conn.split("'")[1]
    return set(v) <= {"0", "1"} and v.count("1") <= 1


#: Memories of at most this many bits become distributed RAM (TRELLIS_DPR16X4), larger ones
#: block RAM (yosys's memory_libmap picks by cost; measured on the engine: 2.5 Kbit and less
#: went to LUT RAM, 64 Kbit at 64 words to block RAM).
LUTRAM_MAX_BITS = 4096
#: TRELLIS_COMB (LUT4 sites) per TRELLIS_DPR16X4 (16 words x 4 bits) after nextpnr's packing,
#: measured on the ulx3s engine: 27174 TRELLIS_COMB placed for 24874 synthesised LUT4 and 258
#: DPR16X4 (8.9 each, the rest being route-through LUTs).
LUTRAM_LUTS = 8


def rtlil_census(text) -> dict:
    """Resource figures counted from the RTLIL of a design before synthesis (the rules, per
    yosys cell, of what synth_ecp5 makes of it):

    - FFs: the width of every ``$dff``-like cell;
    - ``$mul``: a constant power of two is a shift (free); otherwise one ``MULT18X18D`` per
      18 x 18 piece of the operands (``ceil(a/18) * ceil(b/18)``), plus a LUT adder per extra
      piece; products narrower than 2 bits are LUTs;
    - adders, subtractors and magnitude comparators: one LUT4 per bit (CCU2C carry chains,
      two LUT4 each 2 bits); equality: one LUT4 per 2 bits (per 4 against a constant);
    - ``$mux``: one LUT4 per bit; ``$pmux``: one per bit and 2 cases; variable shifts: one per
      bit and shift stage; bitwise and reduce logic: one LUT4 per 3 result bits (it merges
      into neighbouring LUTs);
    - memories: per write-enable lane (the write granularity: yosys maps each lane to its
      own blocks), the best DP16KD aspect ratio of at most 18 bits; LUT RAM
      (``TRELLIS_DPR16X4``, 16 x 4 bits) for at most :data:`LUTRAM_MAX_BITS` bits or an
      asynchronous read port (see :func:`ebr_lanes`).

    This counts logic before yosys's optimisations (constant folding, sharing, mux-tree
    merging), so the LUT figure is an upper-side count; :data:`LUT_CALIBRATION` scales it to
    what synthesis made of the engine (measured, see there).
    """
    cells, memories = _rtlil_cells(text)
    lut = ff = dsp = 0.0
    for typ, p, c in cells:
        yw = p.get("Y_WIDTH", p.get("WIDTH", 1))
        aw, bw = p.get("A_WIDTH", 0), p.get("B_WIDTH", 0)
        if typ in ("$dff", "$adff", "$sdff", "$dffe", "$adffe", "$sdffe", "$aldff", "$dlatch"):
            ff += p.get("WIDTH", 1)
        elif typ == "\\MULT18X18D":      # an explicit DSP (hw.engine.dsp), its registers inside
            dsp += 1
        elif typ == "$mul":
            consts = [k for k in ("A", "B") if _is_const(c.get(k))]
            if any(_const_is_pow2(c[k]) for k in consts):
                continue
            if min(aw, bw) < 2:
                lut += yw
                continue
            pieces = math.ceil(aw / 18) * math.ceil(bw / 18)
            dsp += pieces
            lut += (pieces - 1) * yw
        elif typ in ("$add", "$sub", "$neg", "$lt", "$le", "$gt", "$ge"):
            lut += max(yw, aw, bw) if typ in ("$lt", "$le", "$gt", "$ge") else yw
        elif typ in ("$eq", "$ne"):
            w = max(aw, bw)
            lut += math.ceil(w / 4) if _is_const(c.get("B")) else math.ceil(w / 2)
        elif typ == "$mux":
            lut += p.get("WIDTH", 1)
        elif typ == "$pmux":
            lut += p.get("WIDTH", 1) * max(1, p.get("S_WIDTH", 1) // 2)
        elif typ in ("$shl", "$shr", "$sshl", "$sshr", "$shift", "$shiftx"):
            if not _is_const(c.get("B")):
                lut += yw * min(bw, max(1, math.ceil(math.log2(max(aw, 2)))))
        elif typ in ("$and", "$or", "$xor", "$xnor", "$reduce_and", "$reduce_or",
                     "$reduce_xor", "$reduce_bool", "$logic_and", "$logic_or", "$logic_not"):
            lut += yw / 3
    ebr = dpr = 0
    for mem in memories:
        width, depth, lanes = mem["width"], mem["depth"], mem["lanes"]
        if mem["async_read"] or width * depth <= LUTRAM_MAX_BITS:
            dpr += math.ceil(width / 4) * math.ceil(depth / 16)
        else:
            ebr += ebr_lanes(lanes, math.ceil(width / lanes), depth)
    return {"LUT4": int(round(lut)), "TRELLIS_FF": int(round(ff)), "MULT18X18D": int(dsp),
            "DP16KD": int(ebr), "TRELLIS_DPR16X4": int(dpr),
            "memories": [[m["width"], m["depth"], m["lanes"]] for m in memories]}


# DP16KD aspect ratios up to 18 bits (true dual port).
_EBR18_SHAPES = ((18, 1024), (9, 2048), (4, 4096), (2, 8192), (1, 16384))


def ebr_lanes(lanes, granularity, depth) -> int:
    """Block RAMs for ``lanes`` write lanes of ``granularity`` bits x ``depth`` words, as
    yosys maps them (measured on the engine: it picks the cheaper of) -- DP16KD, each lane on
    its own blocks at the best aspect ratio up to 18 bits; or PDPW16KD, 36 x 512 with four
    9-bit byte enables, as many whole lanes per block as their 9-bit groups fit."""
    dp = lanes * min(math.ceil(granularity / w) * math.ceil(depth / d)
                     for w, d in _EBR18_SHAPES)
    per_block = 36 // (math.ceil(granularity / 9) * 9)
    if per_block:
        return min(dp, math.ceil(lanes / per_block) * math.ceil(depth / 512))
    return dp


#: synthesis / census, measured on the engine design for the ulx3s (85F; yosys 0.70,
#: synth_ecp5, the pipelined engine of 2026-11-28): LUT4 (CCU2C counted as two) 18463 / 21566
#: and TRELLIS_FF 12971 / 14120 -- yosys folds constants and merges mux trees the census counts
#: one by one. The multipliers (131 vs 131) matched without a factor; yosys put 2 of the
#: census's LUT RAMs into block RAM (DP16KD 106 vs 104, DPR16X4 198 vs 262).
LUT_CALIBRATION = 0.856
FF_CALIBRATION = 0.919


def engine_resources(board) -> dict:
    """Resources of :class:`EngineSystem` for ``board`` from its RTLIL (:func:`rtlil_census`),
    plus the clocking (PLL, reset synchroniser) and the pins' few registers.

    LUT4 is the logic (census x :data:`LUT_CALIBRATION`) plus :data:`LUTRAM_LUTS` LUT4 sites
    per ``TRELLIS_DPR16X4`` (nextpnr places LUT RAM on the LUT sites of slices)."""
    from amaranth.back import rtlil
    system = EngineSystem(board)
    # with the board's platform: hw.engine.dsp instantiates the DSPs as the build does
    text = rtlil.convert(system, name="engine_system", ports=system_ports(system),
                         platform=board.platform_instance())
    census = rtlil_census(text)
    res = {"LUT4": int(round(census["LUT4"] * LUT_CALIBRATION))
           + LUTRAM_LUTS * census["TRELLIS_DPR16X4"],
           "TRELLIS_FF": int(round(census["TRELLIS_FF"] * FF_CALIBRATION)) + 4,
           "MULT18X18D": census["MULT18X18D"], "DP16KD": census["DP16KD"]}
    return {"resources": res, "census": census, "lut_calibration": LUT_CALIBRATION,
            "ff_calibration": FF_CALIBRATION}


def sdram_overhead(board, descriptors, cfg) -> dict:
    """What the engine's cycle model leaves out of the SDRAM: refresh (``tRP + tRFC`` every
    ``tREFI``, the port stalls) and row changes of sequential streams (every ``2**col_bits``
    words a new row opens in the next bank: ``tRP + tRCD + 1`` cycles when it was open with
    another row). Returns the factor on the model's cycles and its parts."""
    import types

    from hw.engine.cycles import traffic_words
    from hw.memory.sdram_chips import get_chip
    chip = get_chip(board.sdram.chip)
    t = chip.cycles(board.clock.target_hz)
    refresh = (t.tRP + t.tRFC) / t.tREFI
    words = traffic_words(types.SimpleNamespace(descriptors=descriptors, config=cfg))["total"]
    rows = words / (1 << chip.col_bits) * (t.tRP + t.tRCD + 1)
    return {"refresh_fraction": round(refresh, 4), "port_words": words,
            "row_change_cycles": int(rows), "factor": 1 / (1 - refresh)}


def engine_estimate(board, firmware_record) -> dict:
    """The build's estimate of the engine design: ``resources`` (:func:`engine_resources`)
    and ``cycles_per_frame`` from the engine's cycle model
    (:func:`hw.engine.cycles.estimate_cycles`) on the compiled program of the firmware step
    (its ``memory.json``), with the SDRAM's read latency (:func:`sdram_read_latency`) for the
    memory model's, plus refresh and row changes (:func:`sdram_overhead`)."""
    import json
    from pathlib import Path

    from firmware.image import EngineConfig
    from hw.engine.cycles import estimate_cycles
    mem_map = (firmware_record or {}).get("map")
    if not mem_map or not Path(mem_map).exists():
        raise ValueError(f"board {board.name!r}: no compiled program (the firmware step's "
                         f"memory.json) to estimate cycles per frame from")
    image = json.loads(Path(mem_map).read_text())
    latency = sdram_read_latency(board)
    built = engine_config(board)
    cfg = EngineConfig(**{**image["config"], "mem_latency": latency})
    if (cfg.lanes, cfg.in_lanes) != (built.lanes, built.in_lanes):
        raise ValueError(f"board {board.name!r}: the firmware image was compiled for "
                         f"{cfg.lanes} x {cfg.in_lanes} lanes, the engine is built with "
                         f"{built.lanes} x {built.in_lanes}; rerun the firmware step")
    cycles = estimate_cycles(image["descriptors"], cfg)
    sim_cycles = estimate_cycles(image["descriptors"],
                                 EngineConfig(**image["config"]))["total"]
    sdram = sdram_overhead(board, image["descriptors"], cfg)
    total = int(round(cycles["total"] * sdram["factor"])) + sdram["row_change_cycles"]
    res = engine_resources(board)
    return {"source": "hw.board.top.engine_estimate (RTLIL census of EngineSystem; "
                      "hw.engine.cycles on the compiled program)",
            "resources": res["resources"], "census": res["census"],
            "lut_calibration": res["lut_calibration"],
            "cycles_per_frame": total,
            "fps_at_target": board.clock.target_mhz * 1e6 / total,
            "mem_latency_cycles": latency,
            "cycles_per_frame_model": cycles["total"],
            "sdram_overhead": sdram,
            "cycles_per_frame_sim_memory": sim_cycles,
            "engine_config": cfg.to_dict(),
            "per_descriptor": cycles["per_descriptor"]}
