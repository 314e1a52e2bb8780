"""The board top: what is built into the ULX3S bitstream.

:class:`BoardTop` owns the clocking that every design shares -- the ``EHXPLLL`` that makes the
engine clock (``sync`` domain) from the 25 MHz oscillator with the dividers of ``boards.yaml``,
and a reset synchroniser that holds ``sync`` in reset until the PLL locks -- and then one of two
designs:

``"engine"``
    The accelerator: engine (:mod:`hw.engine`), SDRAM controller (:mod:`hw.sdram`) and UART link
    (:mod:`hw.link`). Imported lazily; wiring them together is the integrator's part (see
    :meth:`BoardTop._elaborate_engine`). Until then asking for it is an error naming what is
    missing.
``"dsp-probe"``
    A registered MAC array with the board's engine MAC count (``engine.macs`` of
    ``boards.yaml``), fed by an LFSR and XOR-reduced, through a pipelined tree, to an LED so that
    nothing is optimised away. It is a real timing and DSP-packing probe of the MAC the PE arrays
    are built from, **not** the accelerator; reports say ``"design": "dsp-probe"``.

``"auto"`` picks ``"engine"`` once :data:`ENGINE_WIRED` is true and :mod:`hw.engine` imports,
``"dsp-probe"`` otherwise.
"""
import importlib
import importlib.util

from amaranth import ClockDomain, ClockSignal, Const, Elaboratable, Instance, Module, Mux, Signal
from amaranth import signed
from amaranth.lib import io
from amaranth.lib.cdc import ResetSynchronizer

__all__ = ["BoardTop", "DSPProbe", "DESIGNS", "PROBE_MACS", "ENGINE_WIRED", "resolve_design",
           "probe_estimate",
           "available_components"]

DESIGNS = ("auto", "engine", "dsp-probe")

#: The integrator sets this once :meth:`BoardTop._elaborate_engine` composes the real engine.
ENGINE_WIRED = False

#: Components the engine design is made of: module -> what it provides.
COMPONENTS = {"hw.engine": "the streaming block engine",
              "hw.sdram": "the SDRAM controller",
              "hw.link": "the UART link to the host"}


def _module_exists(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is not None
    except ModuleNotFoundError:
        return False


def available_components() -> dict:
    """``{module: True/False}`` for the modules the engine design needs."""
    return {name: _module_exists(name) for name in COMPONENTS}


def resolve_design(design: str) -> str:
    if design not in DESIGNS:
        raise ValueError(f"design must be one of {', '.join(DESIGNS)}, not {design!r}")
    if design == "auto":
        return "engine" if ENGINE_WIRED and _module_exists("hw.engine") else "dsp-probe"
    return design


# Probe datapath widths: the engine's default 8-bit activations and weights (DESIGN.md section
# 3) and a 32-bit accumulator, which is what one MAC of a pointwise PE holds.
PROBE_A_WIDTH = 8
PROBE_B_WIDTH = 8
PROBE_ACC_WIDTH = 32
# XOR-reduction tree fan-in per register stage: one LUT4 level between registers.
_TREE_FANIN = 4


def _mac_class():
    """The PE arrays' own MAC (:class:`hw.mac.MAC`) when it is there, so the probe measures the
    primitive the engine will use; otherwise :class:`_ProbeMAC`, with the same register stages."""
    try:
        from .mac import MAC
        return MAC, "hw.mac.MAC"
    except ImportError:
        return _ProbeMAC, "hw.top._ProbeMAC"


class _ProbeMAC(Elaboratable):
    """Registered inputs, registered product, accumulator (three stages, like hw.mac.MAC)."""

    def __init__(self, a_width, b_width, acc_width):
        self.en = Signal(init=1)
        self.first = Signal()
        self.a = Signal(signed(a_width))
        self.b = Signal(signed(b_width))
        self.acc = Signal(signed(acc_width))

    def elaborate(self, platform):
        m = Module()
        a_r = Signal.like(self.a)
        b_r = Signal.like(self.b)
        p_r = Signal(signed(len(self.a) + len(self.b)))
        with m.If(self.en):
            m.d.sync += [a_r.eq(self.a), b_r.eq(self.b), p_r.eq(a_r * b_r),
                         self.acc.eq(self.acc + p_r)]
        return m


class _PrimitiveMAC(Elaboratable):
    """The same MAC with an explicit ``MULT18X18D`` whose own input, pipeline and output
    registers are on (yosys does not pack fabric registers into ECP5 DSPs): three register
    stages inside the DSP, then the fabric accumulator. A probe of what the DSP itself reaches.
    """

    def __init__(self, a_width, b_width, acc_width):
        if not (1 <= a_width <= 18 and 1 <= b_width <= 18):
            raise ValueError(f"operand widths must be 1..18 for one MULT18X18D, not "
                             f"{a_width!r}, {b_width!r}")
        self.en = Signal(init=1)
        self.first = Signal()
        self.a = Signal(signed(a_width))
        self.b = Signal(signed(b_width))
        self.acc = Signal(signed(acc_width))

    def elaborate(self, platform):
        m = Module()
        a18 = Signal(signed(18))
        b18 = Signal(signed(18))
        p = Signal(36)
        m.d.comb += [a18.eq(self.a), b18.eq(self.b)]
        ports = {f"i_A{i}": a18[i] for i in range(18)}
        ports.update({f"i_B{i}": b18[i] for i in range(18)})
        ports.update({f"i_C{i}": 0 for i in range(18)})
        ports.update({f"o_P{i}": p[i] for i in range(36)})
        for r in ("INPUTA", "INPUTB", "PIPELINE", "OUTPUT"):
            ports[f"p_REG_{r}_CLK"] = "CLK0"
            ports[f"p_REG_{r}_CE"] = "CE0"
            ports[f"p_REG_{r}_RST"] = "RST0"
        m.submodules.dsp = Instance(
            "MULT18X18D", p_GSR="DISABLED", p_RESETMODE="SYNC", p_MULT_BYPASS="DISABLED",
            p_SOURCEB_MODE="B_SHIFT", p_CAS_MATCH_REG="FALSE", p_HIGHSPEED_CLK="NONE",
            p_REG_INPUTC_CLK="NONE",
            i_SIGNEDA=1, i_SIGNEDB=1, i_SOURCEA=0, i_SOURCEB=0,
            i_CLK0=ClockSignal("sync"), i_CLK1=0, i_CLK2=0, i_CLK3=0,
            i_CE0=self.en, i_CE1=0, i_CE2=0, i_CE3=0,
            i_RST0=0, i_RST1=0, i_RST2=0, i_RST3=0,
            **ports)
        product = p[:len(self.a) + len(self.b)].as_signed()
        with m.If(self.en):
            m.d.sync += self.acc.eq(self.acc + product)
        return m


#: MAC implementations the probe can use: ``engine`` is :class:`hw.mac.MAC` (what the PE arrays
#: use; fabric registers around an inferred multiplier), ``primitive`` the explicit DSP above.
PROBE_MACS = ("engine", "primitive")


class DSPProbe(Elaboratable):
    """``n_macs`` pipelined MACs in a systolic chain fed by a 32-bit LFSR; ``out`` is the XOR of
    every accumulator bit, reduced through a registered tree (one LUT level per stage).

    Operands move one MAC along per cycle (like activations through a PE row), so every MAC sees
    different data and none can be merged; every accumulator bit reaches ``out``.
    """

    def __init__(self, n_macs, a_width=PROBE_A_WIDTH, b_width=PROBE_B_WIDTH,
                 acc_width=PROBE_ACC_WIDTH, mac="engine"):
        if not isinstance(n_macs, int) or n_macs < 1:
            raise ValueError(f"n_macs must be a positive integer, not {n_macs!r}")
        if mac not in PROBE_MACS:
            raise ValueError(f"mac must be one of {', '.join(PROBE_MACS)}, not {mac!r}")
        self.n_macs = n_macs
        self.a_width, self.b_width, self.acc_width = a_width, b_width, acc_width
        self.mac = mac
        self.out = Signal()
        self.mac_impl = _mac_class()[1] if mac == "engine" else "hw.top._PrimitiveMAC"

    def elaborate(self, platform):
        m = Module()
        mac_cls = _mac_class()[0] if self.mac == "engine" else _PrimitiveMAC

        # Galois LFSR, x^32 + x^22 + x^2 + x + 1 (maximal length).
        lfsr = Signal(32, init=1)
        m.d.sync += lfsr.eq((lfsr >> 1) ^ Mux(lfsr[0], Const(0x80200003, 32), 0))

        a_prev = lfsr[:self.a_width].as_signed()
        b_prev = lfsr[16:16 + self.b_width].as_signed()
        bits = []
        for i in range(self.n_macs):
            a_i = Signal(signed(self.a_width), name=f"a_{i}")
            b_i = Signal(signed(self.b_width), name=f"b_{i}")
            m.d.sync += [a_i.eq(a_prev), b_i.eq(b_prev)]
            mac = mac_cls(self.a_width, self.b_width, self.acc_width)
            m.submodules[f"mac_{i}"] = mac
            m.d.comb += [mac.en.eq(1), mac.first.eq(0), mac.a.eq(a_i), mac.b.eq(b_i)]
            # Per-MAC reduction of the accumulator, registered.
            r = Signal(name=f"acc_xor_{i}")
            m.d.sync += r.eq(mac.acc.xor())
            bits.append(r)
            a_prev, b_prev = a_i, b_i

        level = 0
        while len(bits) > 1:
            nxt = []
            for j in range(0, len(bits), _TREE_FANIN):
                r = Signal(name=f"tree_{level}_{j // _TREE_FANIN}")
                group = bits[j:j + _TREE_FANIN]
                x = group[0]
                for g in group[1:]:
                    x = x ^ g
                m.d.sync += r.eq(x)
                nxt.append(r)
            bits, level = nxt, level + 1
        m.d.comb += self.out.eq(bits[0])
        return m


def probe_estimate(board, mac="engine") -> dict:
    """Pre-synthesis resource estimate of :class:`DSPProbe` for ``board`` (same resource names
    as the fit check and nextpnr). Counted from the structure above:

    - per MAC: operand registers (a+b FFs: the MAC's input registers hold what the next
      stage of the operand chain holds, and yosys merges the two), product and accumulator
      registers, the accumulator's adder (one LUT4 per bit: nextpnr packs carry logic as
      TRELLIS_COMB), its XOR reduction (a 4-ary tree of LUT4s) and one register;
    - the reduction tree: one LUT4 and one FF per node; the LFSR; the reset synchroniser.

    Measured with yosys 0.70 for 148 MACs: 7811 FFs against 9.7 K estimated -- yosys also
    merges the first 32-bit stretch of operand chain into the LFSR, which shifts the same bits.
    """
    n = board.engine.macs
    a, b, acc = PROBE_A_WIDTH, PROBE_B_WIDTH, PROBE_ACC_WIDTH
    xor_luts = 0
    width = acc
    while width > 1:
        width = -(-width // 4)
        xor_luts += width
    nodes = 0
    width = n
    while width > 1:
        width = -(-width // _TREE_FANIN)
        nodes += width
    # With mac="primitive" the input and product registers are inside the DSP.
    mac_ff = (a + b) + acc + 1 if mac == "primitive" else (a + b) + (a + b) + acc + 1
    ff = n * mac_ff + nodes + 32 + 2
    lut = n * (acc + xor_luts) + nodes + 4
    return {"LUT4": lut, "TRELLIS_FF": ff, "MULT18X18D": n, "DP16KD": 0}


class BoardTop(Elaboratable):
    """Top-level elaboratable for the amaranth-boards ULX3S platform of ``board``.

    Parameters
    ----------
    board : hw.boards.Board
    design : str
        ``"auto"``, ``"engine"`` or ``"dsp-probe"`` (see the module docstring).
    probe_mac : str
        The probe's MAC (:data:`PROBE_MACS`): ``"engine"`` (:class:`hw.mac.MAC`, the default)
        or ``"primitive"`` (explicit ``MULT18X18D`` with its own registers).

    Members
    -------
    design : str
        The resolved design (``"engine"`` or ``"dsp-probe"``).
    info : dict
        What was built, for the report (design, MAC count and implementation, clock).
    """

    def __init__(self, board, design="auto", probe_mac="engine"):
        self.board = board
        self.design = resolve_design(design)
        if probe_mac not in PROBE_MACS:
            raise ValueError(f"probe_mac must be one of {', '.join(PROBE_MACS)}, not "
                             f"{probe_mac!r}")
        self.probe_mac = probe_mac
        self.info = {"design": self.design, "target_mhz": board.clock.target_mhz,
                     "components": available_components()}
        if self.design == "dsp-probe":
            mac = _mac_class()[1] if probe_mac == "engine" else "hw.top._PrimitiveMAC"
            self.info.update({"macs": board.engine.macs, "mac": mac,
                              "operand_bits": [PROBE_A_WIDTH, PROBE_B_WIDTH],
                              "acc_bits": PROBE_ACC_WIDTH})

    def _clocking(self, m, platform):
        b = self.board
        pll = b.clock.pll
        clk25 = platform.request(platform.default_clk, dir="-")
        m.submodules.clk25_buf = clk25_buf = io.Buffer("i", clk25)

        m.domains.sync = cd_sync = ClockDomain("sync")
        locked = Signal()
        # Feedback from CLKOP; the dividers and CLKOP_CPHASE are boards.yaml's (the values
        # yowasp-ecppll gives for the target), checked against the VCO range on load.
        m.submodules.pll = Instance(
            "EHXPLLL",
            a_FREQUENCY_PIN_CLKI=f"{b.clock.oscillator_mhz:g}",
            a_FREQUENCY_PIN_CLKOP=f"{b.clock.target_mhz:g}",
            a_ICP_CURRENT="12", a_LPF_RESISTOR="8",
            a_MFG_ENABLE_FILTEROPAMP="1", a_MFG_GMCREF_SEL="2",
            p_PLLRST_ENA="DISABLED", p_INTFB_WAKE="DISABLED", p_STDBY_ENABLE="DISABLED",
            p_DPHASE_SOURCE="DISABLED",
            p_OUTDIVIDER_MUXA="DIVA", p_OUTDIVIDER_MUXB="DIVB", p_OUTDIVIDER_MUXC="DIVC",
            p_OUTDIVIDER_MUXD="DIVD",
            p_CLKI_DIV=pll.clki_div, p_CLKFB_DIV=pll.clkfb_div,
            p_CLKOP_ENABLE="ENABLED", p_CLKOP_DIV=pll.clkop_div,
            p_CLKOP_CPHASE=pll.clkop_cphase, p_CLKOP_FPHASE=0,
            p_FEEDBK_PATH="CLKOP",
            i_RST=0, i_STDBY=0, i_CLKI=clk25_buf.i, i_CLKFB=cd_sync.clk,
            i_PHASESEL0=0, i_PHASESEL1=0, i_PHASEDIR=1, i_PHASESTEP=1, i_PHASELOADREG=1,
            i_PLLWAKESYNC=0, i_ENCLKOP=0,
            o_CLKOP=cd_sync.clk, o_LOCK=locked,
        )
        # No FREQUENCY NET for the PLL output: Amaranth would name the net by one of its
        # hierarchical aliases, which nextpnr does not find after flattening. nextpnr derives
        # the constraint itself from the 25 MHz input constraint and the dividers ("Derived
        # frequency constraint of 100.0 MHz for net clk"); hw/build.py picks the engine clock
        # out of nextpnr's report by that constraint.
        # Hold the engine in reset until the PLL has locked; release synchronously.
        m.submodules.reset_sync = ResetSynchronizer(~locked, domain="sync")
        return locked

    def elaborate(self, platform):
        if self.design == "engine":
            self._check_engine()
        m = Module()
        locked = self._clocking(m, platform)
        if self.design == "dsp-probe":
            self._elaborate_probe(m, platform, locked)
        else:
            self._elaborate_engine(m, platform, locked)
        return m

    @staticmethod
    def _led(m, platform, index):
        m.submodules[f"led_{index}"] = buf = io.Buffer("o", platform.request("led", index,
                                                                             dir="-"))
        return buf.o

    def _elaborate_probe(self, m, platform, locked):
        m.submodules.probe = probe = DSPProbe(self.board.engine.macs, mac=self.probe_mac)
        heartbeat = Signal(27)
        m.d.sync += heartbeat.eq(heartbeat + 1)
        # LED 0: the probe's result; LED 1: toggles every 1.3 s at 100 MHz; LED 7: PLL lock.
        m.d.comb += [self._led(m, platform, 0).eq(probe.out),
                     self._led(m, platform, 1).eq(heartbeat[-1]),
                     self._led(m, platform, 7).eq(locked)]

    def _check_engine(self):
        missing = [f"{name.replace('.', '/')}.py ({what})"
                   for name, what in COMPONENTS.items() if not _module_exists(name)]
        if missing:
            raise NotImplementedError(
                f"board {self.board.name!r}: design 'engine' needs {', '.join(missing)}, not "
                f"written yet; build design 'dsp-probe' meanwhile")
        if not ENGINE_WIRED:
            raise NotImplementedError(
                f"board {self.board.name!r}: hw/engine.py, hw/sdram.py and hw/link.py exist but "
                f"BoardTop._elaborate_engine (hw/top.py) does not wire them yet")

    def _elaborate_engine(self, m, platform, locked):
        # Integrator: compose here -- engine = importlib.import_module("hw.engine")...; SDRAM
        # controller on platform.request("sdram", 0) with hw.sdram_chips.get_chip(
        # self.board.sdram.chip) and self.board.sdram.cas_latency; UART link on
        # platform.request("uart", 0) at self.board.link.baud; drive uart_tx_enable; then set
        # ENGINE_WIRED = True.
        raise NotImplementedError(
            f"board {self.board.name!r}: hw/engine.py, hw/sdram.py and hw/link.py exist but "
            f"BoardTop._elaborate_engine (hw/top.py) does not wire them yet")
