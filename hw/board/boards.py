"""Board descriptions from ``boards.yaml``: device, clock and PLL, SDRAM, link, resources and
engine parallelism, validated on load.

    from hw.board.boards import get_board, load_boards
    board = get_board("ulx3s")          # the default board of boards.yaml when name is None
    board.clock.pll.clkfb_div, board.engine.macs, board.platform_class()

Every error is a :class:`BoardError` naming the file, the board and the field (as a dotted path,
for example ``clock.pll.clkop_div``) with the offending value: an unknown board lists the known
ones; an unknown key lists the allowed ones.
"""
import dataclasses
import importlib
import math
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from quant.cli import UserError

__all__ = ["BoardError", "Board", "Clock", "PLL", "SDRAM", "Link", "Resources", "Engine",
           "load_boards", "get_board", "default_board_name", "BOARDS_YAML", "RESOURCE_NAMES",
           "LINK_KINDS"]

BOARDS_YAML = Path(__file__).resolve().parents[2] / "boards.yaml"

#: The resources the fit check and the reports speak of, in nextpnr's cell names
#: (``LUT4`` is nextpnr's ``TRELLIS_COMB``).
RESOURCE_NAMES = ("LUT4", "TRELLIS_FF", "MULT18X18D", "DP16KD")

# EHXPLLL limits (Lattice TN1263 / FPGA-TN-02200, ECP5 sysCLOCK PLL): VCO 400..800 MHz, phase
# detector input 3.125..400 MHz, CLKOP 3.125..400 MHz, dividers 1..128 (feedback 1..80).
VCO_MHZ = (400.0, 800.0)
PFD_MHZ = (3.125, 400.0)
CLKOP_MHZ = (3.125, 400.0)
# The PLL output must equal the target to this relative tolerance.
TARGET_TOLERANCE = 1e-6

# amaranth-boards spells packages the Lattice way; nextpnr the long way.
_PACKAGE_TO_AMARANTH = {"CABGA381": "BG381", "CABGA256": "BG256", "CSFBGA285": "MG285",
                        "CABGA554": "BG554", "CABGA756": "BG756"}


class BoardError(UserError, ValueError):
    """A problem in a boards file; the message names the file, the board and the field."""


def _rng(lo=None, hi=None, choices=None):
    return {"range": (lo, hi), "choices": choices}


@dataclass(frozen=True)
class PLL:
    """EHXPLLL dividers, feedback from CLKOP (``f_out = f_in / clki_div * clkfb_div``)."""
    clki_div: int = field(metadata=_rng(1, 128))
    clkfb_div: int = field(metadata=_rng(1, 80))
    clkop_div: int = field(metadata=_rng(1, 128))
    clkop_cphase: int = field(metadata=_rng(0, 127))


@dataclass(frozen=True)
class Clock:
    oscillator_mhz: float = field(metadata=_rng(1.0, 400.0))
    target_mhz: float = field(metadata=_rng(3.125, 400.0))
    pll: PLL

    @property
    def pfd_mhz(self) -> float:
        return self.oscillator_mhz / self.pll.clki_div

    @property
    def output_mhz(self) -> float:
        """What the PLL really makes from the oscillator with these dividers."""
        return self.pfd_mhz * self.pll.clkfb_div

    @property
    def vco_mhz(self) -> float:
        return self.output_mhz * self.pll.clkop_div

    @property
    def target_hz(self) -> float:
        return self.target_mhz * 1e6


@dataclass(frozen=True)
class SDRAM:
    chip: str
    cas_latency: int = field(metadata=_rng(choices=(2, 3)))


#: Host links a board can carry (``link.kind``): the FT231X UART, or USB full speed on the
#: ULX3S's US2 port (:mod:`hw.link.usb`).
LINK_KINDS = ("uart", "usb")


@dataclass(frozen=True)
class Link:
    """``kind: uart`` (the default) needs ``baud``; ``kind: usb`` takes none (USB full speed,
    12 Mbit/s, its own 48/12 MHz clocks from the oscillator: :mod:`hw.link.usb`)."""
    kind: str = field(default="uart", metadata=_rng(choices=LINK_KINDS))
    baud: int = field(default=None, metadata=_rng(9600, 12_000_000))


@dataclass(frozen=True)
class Resources:
    LUT4: int = field(metadata=_rng(1, 10_000_000))
    TRELLIS_FF: int = field(metadata=_rng(1, 10_000_000))
    MULT18X18D: int = field(metadata=_rng(0, 100_000))
    DP16KD: int = field(metadata=_rng(0, 100_000))

    def as_dict(self) -> dict:
        return {name: getattr(self, name) for name in RESOURCE_NAMES}


@dataclass(frozen=True)
class Engine:
    """The layer engine's datapath (:mod:`hw.engine.layer_engine`): its multiplier array and
    its swish/sigmoid unit."""
    pointwise_in_lanes: int = field(metadata=_rng(1, 1024))
    pointwise_out_lanes: int = field(metadata=_rng(1, 1024))
    activation: str = field(metadata=_rng(choices=("lut", "cordic")))

    @property
    def pointwise_macs(self) -> int:
        return self.pointwise_in_lanes * self.pointwise_out_lanes

    @property
    def macs(self) -> int:
        """The engine's MULT18X18D: the array, the post pipeline's 34 x 18 product (2), the SE
        gate on load (1) and, with ``activation: cordic``, the CORDIC's two products."""
        return self.pointwise_macs + 3 + (2 if self.activation == "cordic" else 0)


@dataclass(frozen=True)
class Board:
    name: str
    description: str
    device: str
    package: str
    speed_grade: int = field(metadata=_rng(choices=(6, 7, 8)))
    platform: str
    clock: Clock
    sdram: SDRAM
    link: Link
    resources: Resources
    engine: Engine
    source: str = field(default="", compare=False)  # the file it came from (not a YAML key)

    def platform_class(self):
        """The amaranth-boards platform class named by :attr:`platform`."""
        return _import_class(self.platform, self.source, self.name)

    def platform_instance(self):
        return self.platform_class()()

    @property
    def nextpnr_device(self) -> str:
        """``--85k`` and friends."""
        size = self.device.split("-")[1].rstrip("F").lower()
        prefix = {"LFE5U": "", "LFE5UM": "um-", "LFE5UM5G": "um5g-"}[self.device.split("-")[0]]
        return f"--{prefix}{size}k"

    def as_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d.pop("source")
        return d


_NESTED = {"clock": Clock, "pll": PLL, "sdram": SDRAM, "link": Link, "resources": Resources,
           "engine": Engine}
_KNOWN_DEVICES = ("LFE5U-12F", "LFE5U-25F", "LFE5U-45F", "LFE5U-85F",
                  "LFE5UM-25F", "LFE5UM-45F", "LFE5UM-85F",
                  "LFE5UM5G-25F", "LFE5UM5G-45F", "LFE5UM5G-85F")


def _where(path, board, field_path):
    where = f"{path}: board {board!r}"
    return f"{where}: field {field_path!r}" if field_path else where


def _import_class(dotted, path, board):
    module_name, _, cls_name = str(dotted).rpartition(".")
    try:
        module = importlib.import_module(module_name)
        return getattr(module, cls_name)
    except (ImportError, AttributeError, ValueError) as e:
        raise BoardError(f"{_where(path, board, 'platform')}: cannot import {dotted!r} ({e})") \
            from None


def _build(cls, data, path, board, prefix):
    """Build dataclass ``cls`` from mapping ``data``, checking keys, types and ranges."""
    if not isinstance(data, dict):
        raise BoardError(f"{_where(path, board, prefix.rstrip('.') or None)}: expected a mapping, "
                         f"not {type(data).__name__} {data!r}")
    yaml_fields = [f for f in dataclasses.fields(cls) if f.name not in ("name", "source")]
    allowed = {f.name for f in yaml_fields}
    for key in data:
        if key not in allowed:
            raise BoardError(f"{_where(path, board, prefix + str(key))}: unknown key; allowed "
                             f"here: {', '.join(sorted(allowed))}")
    values = {}
    for f in yaml_fields:
        fpath = prefix + f.name
        if f.name not in data:
            if f.default is not dataclasses.MISSING:     # optional field: its default
                values[f.name] = f.default
                continue
            raise BoardError(f"{_where(path, board, fpath)}: missing")
        value = data[f.name]
        if f.name in _NESTED:
            values[f.name] = _build(_NESTED[f.name], value, path, board, fpath + ".")
            continue
        ftype = f.type
        # bool is an int subclass in Python: reject it explicitly; ints are fine for floats.
        ok = (not isinstance(value, bool)) and (
            isinstance(value, ftype) or (ftype is float and isinstance(value, int)))
        if not ok:
            raise BoardError(f"{_where(path, board, fpath)}: expected {ftype.__name__}, "
                             f"not {type(value).__name__} {value!r}")
        if ftype is float:
            value = float(value)
        meta = f.metadata
        if meta.get("choices") is not None and value not in meta["choices"]:
            raise BoardError(f"{_where(path, board, fpath)}: {value!r} is not one of "
                             f"{', '.join(map(repr, meta['choices']))}")
        lo, hi = meta.get("range", (None, None))
        if (lo is not None and value < lo) or (hi is not None and value > hi):
            raise BoardError(f"{_where(path, board, fpath)}: {value!r} is out of range "
                             f"{lo}..{hi}")
        values[f.name] = value
    return values


def _check_board(b: Board, path):
    """Cross-field rules: PLL arithmetic, platform consistency, SDRAM, link, DSP budget."""
    def err(field_path, msg):
        return BoardError(f"{_where(path, b.name, field_path)}: {msg}")

    if b.device not in _KNOWN_DEVICES:
        raise err("device", f"{b.device!r} is not an ECP5 part nextpnr-ecp5 knows; known: "
                            f"{', '.join(_KNOWN_DEVICES)}")
    if b.package not in _PACKAGE_TO_AMARANTH:
        raise err("package", f"{b.package!r} is not one of {', '.join(_PACKAGE_TO_AMARANTH)}")

    c, p = b.clock, b.clock.pll
    if not PFD_MHZ[0] <= c.pfd_mhz <= PFD_MHZ[1]:
        raise err("clock.pll.clki_div", f"phase detector input {c.oscillator_mhz:g} MHz / "
                  f"{p.clki_div} = {c.pfd_mhz:g} MHz is outside {PFD_MHZ[0]}..{PFD_MHZ[1]} MHz")
    if not math.isclose(c.output_mhz, c.target_mhz, rel_tol=TARGET_TOLERANCE):
        raise err("clock.pll", f"dividers make {c.oscillator_mhz:g} / {p.clki_div} * "
                  f"{p.clkfb_div} = {c.output_mhz:g} MHz, not target_mhz={c.target_mhz:g}")
    if not VCO_MHZ[0] <= c.vco_mhz <= VCO_MHZ[1]:
        raise err("clock.pll.clkop_div", f"VCO {c.output_mhz:g} MHz * {p.clkop_div} = "
                  f"{c.vco_mhz:g} MHz is outside the EHXPLLL range {VCO_MHZ[0]:g}.."
                  f"{VCO_MHZ[1]:g} MHz")
    if not CLKOP_MHZ[0] <= c.output_mhz <= CLKOP_MHZ[1]:
        raise err("clock.target_mhz", f"{c.output_mhz:g} MHz outside the CLKOP range")

    cls = b.platform_class()
    if getattr(cls, "device", None) != b.device:
        raise err("platform", f"{b.platform} is for {getattr(cls, 'device', None)!r}, not "
                              f"device {b.device!r}")
    if getattr(cls, "package", None) != _PACKAGE_TO_AMARANTH[b.package]:
        raise err("package", f"{b.package!r} but {b.platform} uses {cls.package!r}")
    if str(getattr(cls, "speed", "")) != str(b.speed_grade):
        raise err("speed_grade", f"{b.speed_grade!r} but {b.platform} is speed "
                                 f"{getattr(cls, 'speed', None)!r}")
    osc = cls().lookup(cls.default_clk).clock.frequency / 1e6
    if not math.isclose(osc, c.oscillator_mhz, rel_tol=1e-9):
        raise err("clock.oscillator_mhz", f"{c.oscillator_mhz:g} but {b.platform}'s "
                                          f"{cls.default_clk} is {osc:g} MHz")

    # The SDRAM chip data and the UART divider rule belong to other modules; check against them
    # when they are there (they are optional while the tree is being built).
    try:
        from hw.memory import sdram_chips
    except ImportError:
        sdram_chips = None
    if sdram_chips is not None:
        try:
            chip = sdram_chips.get_chip(b.sdram.chip)
        except KeyError as e:
            raise err("sdram.chip", e.args[0]) from None
        tck_min = {2: chip.cl2_tck_min_ns, 3: chip.cl3_tck_min_ns}[b.sdram.cas_latency]
        if 1e3 / c.target_mhz < tck_min:
            raise err("sdram.cas_latency", f"CAS latency {b.sdram.cas_latency} needs a clock "
                      f"period of at least {tck_min} ns on {chip.name}; target_mhz="
                      f"{c.target_mhz:g} gives {1e3 / c.target_mhz:.2f} ns")
    if b.link.kind == "usb":
        if b.link.baud is not None:
            raise err("link.baud", f"{b.link.baud!r}: a baud rate is for kind 'uart'; the USB "
                                   f"link (kind 'usb') runs at full speed, 12 Mbit/s")
        from hw.link.usb import usb_pll
        try:
            usb_pll(c.oscillator_mhz)
        except ValueError as e:
            raise err("link.kind", str(e)) from None
    elif b.link.baud is None:
        raise err("link.baud", "missing (kind 'uart' needs the UART's baud rate)")
    try:
        from hw.link.uart import uart_divider
    except ImportError:
        uart_divider = None
    if uart_divider is not None and b.link.kind == "uart":
        try:
            uart_divider(c.target_hz, b.link.baud)
        except ValueError as e:
            raise err("link.baud", str(e)) from None

    # The pointwise array is P output lanes x L input lanes, both powers of two, L dividing P
    # (the engine's weight entries and the firmware image layout rely on it).
    e = b.engine
    for name in ("pointwise_in_lanes", "pointwise_out_lanes"):
        v = getattr(e, name)
        if v & (v - 1):
            raise err(f"engine.{name}", f"must be a power of two, not {v!r}")
    if e.pointwise_out_lanes % e.pointwise_in_lanes:
        raise err("engine.pointwise_in_lanes", f"{e.pointwise_in_lanes} must divide "
                  f"pointwise_out_lanes ({e.pointwise_out_lanes})")

    if b.engine.macs > b.resources.MULT18X18D:
        e = b.engine
        raise err("engine", f"a {e.pointwise_in_lanes}x{e.pointwise_out_lanes} array with the "
                  f"{e.activation} activation needs {e.macs} MULT18X18D, the device has "
                  f"{b.resources.MULT18X18D}")


def _read(path):
    path = Path(path) if path is not None else BOARDS_YAML
    try:
        text = path.read_text()
    except OSError as e:
        raise BoardError(f"{path}: cannot read boards file ({e.strerror})") from None
    try:
        doc = yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise BoardError(f"{path}: not valid YAML: {e}") from None
    if not isinstance(doc, dict):
        raise BoardError(f"{path}: expected a mapping with 'default' and 'boards'")
    for key in doc:
        if key not in ("default", "boards"):
            raise BoardError(f"{path}: unknown top-level key {key!r}; allowed: boards, default")
    boards = doc.get("boards")
    if not isinstance(boards, dict) or not boards:
        raise BoardError(f"{path}: 'boards' must be a non-empty mapping of board name -> entry")
    default = doc.get("default")
    if default is None:
        raise BoardError(f"{path}: top-level field 'default' is missing")
    if default not in boards:
        raise BoardError(f"{path}: default board {default!r} is not among the boards: "
                         f"{', '.join(boards)}")
    return path, doc


def _load_one(path, name, entry) -> Board:
    values = _build(Board, entry, path, name, "")

    def make(cls, v):
        kwargs = {}
        for f in dataclasses.fields(cls):
            if f.name in v:
                kwargs[f.name] = make(_NESTED[f.name], v[f.name]) if f.name in _NESTED \
                    else v[f.name]
        return cls(**kwargs)

    board = make(Board, {**values, "name": name, "source": str(path)})
    _check_board(board, path)
    return board


def load_boards(path=None) -> dict:
    """All boards of ``path`` (default: the repository's ``boards.yaml``), validated.

    Raises
    ------
    BoardError
        Naming the file, the board and the field at fault.
    """
    path, doc = _read(path)
    return {name: _load_one(path, name, entry) for name, entry in doc["boards"].items()}


def default_board_name(path=None) -> str:
    return _read(path)[1]["default"]


def get_board(name=None, path=None) -> Board:
    """One board by name (``None``: the file's default), validated.

    Raises
    ------
    BoardError
        If the board is unknown (listing the known ones) or its entry is invalid.
    """
    path, doc = _read(path)
    name = doc["default"] if name is None else name
    if name not in doc["boards"]:
        raise BoardError(f"{path}: unknown board {name!r}; known boards: "
                         f"{', '.join(doc['boards'])}")
    return _load_one(path, name, doc["boards"][name])
