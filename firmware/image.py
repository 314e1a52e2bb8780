"""The engine's memory image: word format, descriptor layout, engine configuration.

Everything the firmware compiler writes and the engine (:mod:`hw.engine.layer_engine`) reads is defined
here, once, so that the packer, the unpacker, the HDL field decoder and docs/ENGINE.md agree.

Memory is an array of 16-bit words (the SDRAM word). Word addresses are 24 bits (32 MB).

Image layout (word addresses)::

    0                descriptor table: DESC_WORDS words per op, the last one is END
    ...              constants: per-group parameter records, weight entries, activation
                     tables, per-channel vectors (PReLU slopes), each block aligned to 2 words
    tensor_base      activation tensors, one 16-bit word per element (sign-extended; packed
                     tensors of at most 8 bits: two elements a word, low byte first), HWC
                     order (a vector of C values is a 1x1xC tensor); every tensor of the layer
                     program has its own region (no reuse), so all of them can be dumped and
                     compared with the golden model after a frame

Descriptor: the :class:`amaranth.lib.data.StructLayout` :data:`Descriptor` below is the
one definition of the engine's instruction format. The compiler packs it
(:func:`pack_descriptor`), the engine views its descriptor registers through it, and the
opcodes, modes and flags are the enums and the flag layout next to it; no word offset or flag
index is written anywhere else. Every field is a whole number of 16-bit words, in this order
(``DESC_WORDS`` words in all; 32-bit fields low word first; ``s`` marks two's complement).
``tests/test_compiler.py`` checks this table against the layout:

=============  ====  ===============================================================
field          bits  meaning
=============  ====  ===============================================================
opcode         16    :class:`Opcode`
mode           16    CONV: :class:`ConvMode`; VEC: :class:`VecOp`
flags          16    :data:`Flags`: ``act`` activation on the output; ``shuffle`` channel
                     shuffle (2 groups) on load of the input rows; ``scale`` (CONV) SE
                     channel scale on load of the input rows (gate vector at ``b_addr``,
                     see ``ls_*``); ``pool`` average-pool fusion (CONV: accumulate
                     per-channel sums of the written output in the engine's sum RAM; VEC
                     avgpool: the sums are already there, only the ``C`` results are
                     computed and written, ``n_elems`` = 0); ``prefetch`` (CONV) ``k + 1``
                     row slots: the next input row loads while the array works on an
                     output row; ``resid`` (CONV) residual add fused into the output
                     (``r_*``, ``sa``/``sb``/``shift``); ``pack_in``, ``pack_out``,
                     ``pack_res`` (CONV) the input rows, the output, the residual are
                     packed, two 8-bit elements a word (channel ``2i`` in the low byte)
layer          16    index of the layer in the artifact program (for reports)
a_addr         32    first input tensor
b_addr         32    second input tensor (VEC add: other operand; VEC scale and CONV with
                     the scale flag: the gate vector)
out_addr       32    output tensor (CONV: already offset by ``out_lo`` channels)
H, W, C        16    input height, width, channels
OH, OW, OC     16    output height, width, channels (OC = the pixel stride of the output)
n_out          16    CONV: channels this descriptor writes per pixel (output chunk width)
k              16    kernel size (square)
stride         16
pad            16    zero padding on every side
n_groups       16    CONV: output-channel groups of <= P channels (one parameter record each)
w_addr         32    CONV: weight entries; VEC prelu: the slope vector
w_words        32    words to load from w_addr
p_addr         32    CONV: group parameter records (``4 + 4 P`` words per group)
lut_addr       32    activation table (``lut_n`` words, one per input code)
lut_n          16    entries of the table (0: no table)
lut_off        s16   input code of table entry 0 (the input format's ``lo``)
sat_lo         s16   saturation bounds of the requantized value
sat_hi         s16
sa             16    VEC add / INPUT: left shift of operand a (CONV with the residual flag:
                     of the conv's requantized output)
sb             16    VEC add / INPUT: left shift of operand b (INPUT: of the offset; CONV
                     with the residual flag: of the residual)
shift          16    VEC, CONV with the residual flag: right shift (round half up) of the
                     result
mult           32    VEC avgpool: multiplier M (17 bits)
offset         s16   INPUT offset (the pixel transform ``raw = pixel << sa + offset``)
n_elems        32    VEC / INPUT / OUTPUT: elements (H * W * C)
rows           16    CONV: row-buffer slots (``k``) used
ls_shift       16    CONV with the scale flag: ``x * gate[c]`` is rounded by this right
                     shift (round half up) ...
ls_lo, ls_hi   s16   ... and saturated to these bounds (the scaled tensor's format)
row_entries    16    CONV: row-buffer entries of one input row, ``W * ceil(C / P)``
row_words      16    CONV: words of one input row, ``W * C``
p_words        16    CONV: words of the group parameter records, ``n_groups * (4 + 4 P)``
                     (the last three are products the compiler computes so that the
                     engine does not multiply descriptor fields in one clock cycle)
r_addr         32    CONV with the residual flag: the residual tensor (same shape as the
                     output, HWC), read one output row ahead of the row's results
r_lo, r_hi     s16   saturation bounds of the sum (the add's output format)
r_words        16    words of one residual row, ``OW * OC``
act_cfg        48    engines with the CORDIC activation unit: the activation's formats,
                     :func:`hw.engine.activation.activation_config_layout` packed from
                     bit 0 (``lut_*`` are then 0: no table is loaded)
=============  ====  ===============================================================

Group parameter record (CONV, ``4 + 4 P`` words, one per group of <= P output channels)::

    n_valid, in_lo, n_cig, w_base,                 header
    then per lane j < P: bias_lo, bias_hi, m_lo, m_hi | shift << 8

``in_lo``: first input channel of the group (dense: the part's input range; depthwise: the
group's own channels), ``n_cig``: chunks of ``L`` input channels (dense), ``w_base``: first
weight entry.

Weight entry (``P * L / 2`` words): ``P * L`` signed 8-bit weights, lane-major
(``weight[j][l]`` at byte ``j * L + l``), two per word, low byte first. Dense: entry
``w_base + tap * n_cig + cig`` holds, for output lane ``j``, input channels
``in_lo + cig * L + l`` of kernel tap ``tap = dy * k + dx`` (zero beyond the part's range).
Depthwise / max: entry ``w_base + tap // L``, slot ``tap % L`` holds channel ``j``'s weight.
"""
import enum as pyenum
from dataclasses import asdict, dataclass

import numpy as np
from amaranth import Shape, signed, unsigned
from amaranth.lib import data, enum

from quant.cli import UserError

WORD_BITS = 16
ADDR_BITS = 24


class Opcode(enum.IntEnum, shape=16):
    """What a descriptor does."""
    END = 0
    INPUT = 1
    CONV = 2
    VEC = 3
    OUTPUT = 4


class ConvMode(enum.IntEnum, shape=16):
    """CONV descriptors: the multiplier array's mode."""
    DENSE = 0
    DEPTHWISE = 1
    MAX = 2          # 2x2 max pool


class VecOp(enum.IntEnum, shape=16):
    """VEC descriptors: the element-wise sub-op (the artifact op kinds are its names)."""
    ADD = 0
    SCALE = 1
    PRELU = 2
    ACT = 3
    AVGPOOL = 4


#: artifact op kind -> VEC sub-op
VEC_OPS = {"add": VecOp.ADD, "scale_channels": VecOp.SCALE, "prelu": VecOp.PRELU,
           "activation": VecOp.ACT, "avgpool": VecOp.AVGPOOL}

#: The flags word, one bit each (meanings in the module docstring).
Flags = data.StructLayout({
    "act": 1, "shuffle": 1, "scale": 1, "pool": 1, "prefetch": 1, "resid": 1,
    "pack_in": 1, "pack_out": 1, "pack_res": 1, "_reserved": WORD_BITS - 9})

#: The flags as Python integers for the compiler (``Flag.ACT | Flag.POOL``), derived from
#: :data:`Flags` so that the two cannot disagree.
Flag = pyenum.IntFlag("Flag", {name.upper(): 1 << field.offset for name, field in Flags
                               if not name.startswith("_")})

_u16, _u32, _s16 = unsigned(16), unsigned(32), signed(16)

#: The descriptor: the engine's instruction (field meanings in the module docstring).
Descriptor = data.StructLayout({
    "opcode": Opcode, "mode": data.UnionLayout({"conv": ConvMode, "vec": VecOp}),
    "flags": Flags, "layer": _u16,
    "a_addr": _u32, "b_addr": _u32, "out_addr": _u32,
    "H": _u16, "W": _u16, "C": _u16, "OH": _u16, "OW": _u16, "OC": _u16,
    "n_out": _u16, "k": _u16, "stride": _u16, "pad": _u16, "n_groups": _u16,
    "w_addr": _u32, "w_words": _u32, "p_addr": _u32,
    "lut_addr": _u32, "lut_n": _u16, "lut_off": _s16, "sat_lo": _s16, "sat_hi": _s16,
    "sa": _u16, "sb": _u16, "shift": _u16, "mult": _u32, "offset": _s16, "n_elems": _u32,
    "rows": _u16, "ls_shift": _u16, "ls_lo": _s16, "ls_hi": _s16,
    "row_entries": _u16, "row_words": _u16, "p_words": _u16,
    "r_addr": _u32, "r_lo": _s16, "r_hi": _s16, "r_words": _u16,
    "act_cfg": unsigned(48),
})
DESC_WORDS = Descriptor.size // WORD_BITS
FIELD_NAMES = frozenset(name for name, _ in Descriptor)

GROUP_HEADER_WORDS = 4
GATHER_MAX = 256
LANE_PARAM_WORDS = 4


class ImageError(UserError, ValueError):
    """A value does not fit the binary layout; the message names the field."""


@dataclass(frozen=True)
class EngineConfig:
    """Parallelism and on-chip buffer sizes of :class:`hw.engine.layer_engine.Engine`.

    Parameters
    ----------
    lanes : int
        ``P``: output-channel lanes (a power of two); one group of ``P`` output channels is
        computed at a time.
    in_lanes : int
        ``L``: input channels per lane and cycle in dense mode (a power of two dividing ``P``).
        ``P * L`` multipliers.
    rb_depth : int
        Row-buffer entries (``P`` elements each): holds ``k`` input rows.
    w_depth : int
        Weight-RAM entries (``P * L`` weights each).
    groups : int
        Parameter-RAM records (groups of ``P`` output channels) of one descriptor.
    lut_depth, chan_depth : int
        Activation-table entries; per-channel vector entries (VEC unit).
    chunk : int
        Elements per VEC / INPUT memory transfer.
    res_depth : int
        Residual FIFO (words) of the fused residual add: holds one output row of the
        residual (``OW * OC``); 0 builds no FIFO (every residual add is a VEC pass).
    fifo_depth : int
        Write-data FIFO (words); must hold one output pixel (``n_out``) and a chunk.
    max_burst : int
        Longest memory command (words).
    mem_latency : int
        Simulation memory model: cycles from a command to its first data word.
    activation : str
        The swish/sigmoid unit of the post pipeline: ``"lut"`` (a table loaded per layer) or
        ``"cordic"`` (:class:`hw.engine.activation.ActivationCORDIC`, formats per descriptor).
    cordic_iterations, cordic_width : int
        ``N`` and ``W`` of the CORDIC unit; the artifact's activations must be quantized with
        the same (``python -m quant --act cordic``).
    clock_mhz : float
        Engine clock (for frames per second).
    """
    lanes: int = 16
    in_lanes: int = 8
    rb_depth: int = 2048
    w_depth: int = 512
    groups: int = 64
    lut_depth: int = 1024
    chan_depth: int = 1024
    chunk: int = 256
    res_depth: int = 4096
    fifo_depth: int = 2048
    max_burst: int = 1024
    mem_latency: int = 6
    clock_mhz: float = 100.0
    activation: str = "lut"
    cordic_iterations: int = 16
    cordic_width: int = 24

    def __post_init__(self):
        for name in ("lanes", "in_lanes"):
            v = getattr(self, name)
            if v < 1 or v & (v - 1):
                raise ImageError(f"EngineConfig.{name} must be a power of two, not {v!r}")
        if self.lanes % self.in_lanes:
            raise ImageError(f"EngineConfig.in_lanes ({self.in_lanes}) must divide lanes "
                             f"({self.lanes})")
        if self.activation not in ("lut", "cordic"):
            raise ImageError(f"EngineConfig.activation must be 'lut' or 'cordic', "
                             f"not {self.activation!r}")
        if self.chunk > self.fifo_depth // 2:
            raise ImageError(f"EngineConfig.chunk ({self.chunk}) must be at most half of "
                             f"fifo_depth ({self.fifo_depth})")

    @property
    def entry_words(self) -> int:
        """Words of one weight entry."""
        return max(1, self.lanes * self.in_lanes // 2)

    @property
    def gather_words(self) -> int:
        """Longest write request of whole output pixels: the write FIFO holds a gathered
        request's words until its last pixel is in (so half of it at most), and a long
        write delays the next row's reads (measured on seesaw_shuffle, 16 x 4: gathering up
        to 1024 words took 0.4 % more cycles per frame than up to 256)."""
        return min(self.max_burst, self.fifo_depth // 2, GATHER_MAX)

    @property
    def group_words(self) -> int:
        return GROUP_HEADER_WORDS + LANE_PARAM_WORDS * self.lanes

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_board(cls, board, **overrides) -> "EngineConfig":
        """From a :class:`hw.board.boards.Board` (``pointwise_out_lanes`` x ``pointwise_in_lanes``)."""
        e = board.engine
        kw = dict(lanes=_pow2_floor(e.pointwise_out_lanes),
                  in_lanes=_pow2_floor(min(e.pointwise_in_lanes, e.pointwise_out_lanes)),
                  clock_mhz=float(board.clock.target_mhz), activation=e.activation)
        kw.update(overrides)
        return cls(**kw)


def _pow2_floor(v: int) -> int:
    return 1 << (int(v).bit_length() - 1)


def _field_range(shape) -> tuple[int, int]:
    shape = Shape.cast(shape)
    bits = shape.width
    return (-(1 << (bits - 1)), (1 << (bits - 1)) - 1) if shape.signed else (0, (1 << bits) - 1)


def pack_descriptor(fields: dict) -> np.ndarray:
    """Field dict -> ``DESC_WORDS`` uint16 words laid out by :data:`Descriptor`. Unknown
    fields and values that do not fit raise :class:`ImageError` naming the field."""
    bits = 0
    for name, value in fields.items():
        try:
            field = Descriptor[name]
        except KeyError:
            raise ImageError(f"descriptor: unknown field {name!r}") from None
        v = int(value)
        lo, hi = _field_range(field.shape)
        if not lo <= v <= hi:
            raise ImageError(f"descriptor field {name!r} = {v} does not fit "
                             f"{'signed' if lo < 0 else 'unsigned'} {field.width} bits")
        bits |= (v & ((1 << field.width) - 1)) << field.offset
    return np.array([(bits >> (WORD_BITS * i)) & 0xFFFF for i in range(DESC_WORDS)],
                    dtype=np.uint16)


def unpack_descriptor(words) -> dict:
    """``DESC_WORDS`` words -> every field of :data:`Descriptor` as a Python int."""
    words = np.asarray(words, dtype=np.int64)
    if words.shape != (DESC_WORDS,):
        raise ImageError(f"descriptor must be {DESC_WORDS} words, not {words.shape}")
    bits = sum(int(w) << (WORD_BITS * i) for i, w in enumerate(words))
    out = {}
    for name, field in Descriptor:
        v = (bits >> field.offset) & ((1 << field.width) - 1)
        if _field_range(field.shape)[0] < 0 and v >> (field.width - 1):
            v -= 1 << field.width
        out[name] = v
    return out


def to_words(values, what="values") -> np.ndarray:
    """Signed integers (each within 16 bits) -> uint16 words (two's complement)."""
    v = np.asarray(values, dtype=np.int64).ravel()
    if v.size and (v.min() < -(1 << 15) or v.max() > (1 << 16) - 1):
        raise ImageError(f"{what}: values [{v.min()}, {v.max()}] do not fit 16 bits")
    return (v & 0xFFFF).astype(np.uint16)


def from_words(words) -> np.ndarray:
    """uint16 words -> sign-extended int64."""
    w = np.asarray(words, dtype=np.int64)
    return np.where(w >= 1 << 15, w - (1 << 16), w)


def pack_bytes(values) -> np.ndarray:
    """Signed 8-bit values -> words, two per word, low byte first (odd count padded with 0)."""
    v = np.asarray(values, dtype=np.int64).ravel()
    if v.size and (v.min() < -128 or v.max() > 127):
        raise ImageError(f"weights [{v.min()}, {v.max()}] do not fit signed 8 bits")
    if v.size % 2:
        v = np.append(v, 0)
    b = v & 0xFF
    return (b[0::2] | (b[1::2] << 8)).astype(np.uint16)


def unpack_bytes(words, count) -> np.ndarray:
    w = np.asarray(words, dtype=np.int64)
    b = np.stack([w & 0xFF, (w >> 8) & 0xFF], 1).ravel()[:count]
    return np.where(b >= 128, b - 256, b)


def write_hex(words, path):
    """``$readmemh`` file: one 4-digit hex word per line."""
    w = np.asarray(words, dtype=np.uint16)
    with open(path, "w") as f:
        f.write("\n".join(f"{x:04x}" for x in w.tolist()))
        f.write("\n")


def read_hex(path, count=None) -> np.ndarray:
    vals = []
    with open(path) as f:
        for line in f:
            line = line.strip()
            if not line or line.startswith("//"):
                continue
            if line.startswith("@"):
                raise ImageError(f"{path}: address records are not supported")
            vals.append(int(line, 16) if "x" not in line.lower() else 0)
    a = np.array(vals, dtype=np.uint16)
    return a if count is None else a[:count]
