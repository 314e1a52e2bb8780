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

Descriptor (``DESC_WORDS`` = 56 words, field table :data:`FIELDS`; 32-bit fields are two
words, low word first; fields marked signed are two's complement):

=====  ===========  ===============================================================
word   field        meaning
=====  ===========  ===============================================================
0      opcode       :data:`OP_END`, :data:`OP_INPUT`, :data:`OP_CONV`, :data:`OP_VEC`,
                    :data:`OP_OUTPUT`
1      mode         CONV: 0 dense, 1 depthwise, 2 max (2x2 max pool); VEC: the sub-op
2      flags        bit 0: activation table on the output; bit 1: channel shuffle (2 groups)
                    on load of the input rows; bit 2 (CONV): SE channel scale on load of the
                    input rows (gate vector at ``b_addr``, see ``ls_*``); bit 3: average-pool
                    fusion (CONV: accumulate per-channel sums of the written output in the
                    engine's sum RAM; VEC avgpool: the sums are already there, only the
                    ``C`` results are computed and written, ``n_elems`` = 0); bit 4 (CONV):
                    row prefetch (``k + 1`` row slots: the next input row loads while the
                    array works on an output row); bit 5 (CONV): residual add fused into
                    the output (``r_*``, ``sa``/``sb``/``shift``); bits 6, 7, 8 (CONV): the
                    input rows, the output, the residual are packed, two 8-bit elements a
                    word (channel ``2i`` in the low byte)
3      layer        index of the layer in the artifact program (for reports)
4-5    a_addr       first input tensor
6-7    b_addr       second input tensor (VEC add: other operand; VEC scale and CONV with
                    the scale flag: the gate vector)
8-9    out_addr     output tensor (CONV: already offset by ``out_lo`` channels)
10-12  H, W, C      input height, width, channels
13-15  OH, OW, OC   output height, width, channels (OC = the pixel stride of the output)
16     n_out        CONV: channels this descriptor writes per pixel (output chunk width)
17     k            kernel size (square)
18     stride
19     pad          zero padding on every side
20     n_groups     CONV: output-channel groups of <= P channels (one parameter record each)
21-22  w_addr       CONV: weight entries; VEC prelu: the slope vector
23-24  w_words      words to load from w_addr
25-26  p_addr       CONV: group parameter records (``4 + 4 P`` words per group)
27-28  lut_addr     activation table (``lut_n`` words, one per input code)
29     lut_n        entries of the table (0: no table)
30     lut_off      signed: input code of table entry 0 (the input format's ``lo``)
31     sat_lo       signed: saturation bounds of the requantized value
32     sat_hi       signed
33     sa           VEC add / INPUT: left shift of operand a (CONV with the residual flag:
                    of the conv's requantized output)
34     sb           VEC add / INPUT: left shift of operand b (INPUT: of the offset; CONV
                    with the residual flag: of the residual)
35     shift        VEC, CONV with the residual flag: right shift (round half up) of the
                    result
36-37  mult         VEC avgpool: multiplier M (17 bits)
38     offset       signed: INPUT offset (the pixel transform ``raw = pixel << sa + offset``)
39-40  n_elems      VEC / INPUT / OUTPUT: elements (H * W * C)
41     rows_per_pass  CONV: row-buffer slots (``k``) used
42     ls_shift     CONV with the scale flag: ``x * gate[c]`` is rounded by this right shift
                    (round half up) ...
43-44  ls_lo/ls_hi  signed: ... and saturated to these bounds (the scaled tensor's format)
45     row_entries  CONV: row-buffer entries of one input row, ``W * ceil(C / P)``
46     row_words    CONV: words of one input row, ``W * C``
47     p_words      CONV: words of the group parameter records, ``n_groups * (4 + 4 P)``
                    (45-47 are products the compiler computes so that the engine does not
                    multiply descriptor fields in one clock cycle)
48-49  r_addr       CONV with the residual flag: the residual tensor (same shape as the
                    output, HWC), read one output row ahead of the row's results
50-51  r_lo/r_hi    signed: saturation bounds of the sum (the add's output format)
52     r_words      words of one residual row, ``OW * OC``
53-55  act_cfg      engines with the CORDIC activation unit: the activation's formats,
                    :func:`hw.engine.activation.activation_config_layout` packed from bit 0
                    (``lut_*`` are then 0: no table is loaded)
=====  ===========  ===============================================================

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
from dataclasses import asdict, dataclass

import numpy as np

from quant.cli import UserError

WORD_BITS = 16
ADDR_BITS = 24
DESC_WORDS = 56

OP_END, OP_INPUT, OP_CONV, OP_VEC, OP_OUTPUT = 0, 1, 2, 3, 4
OPCODES = {"end": OP_END, "input": OP_INPUT, "conv": OP_CONV, "vec": OP_VEC, "output": OP_OUTPUT}
MODE_DENSE, MODE_DEPTHWISE, MODE_MAX = 0, 1, 2
VEC_ADD, VEC_SCALE, VEC_PRELU, VEC_ACT, VEC_AVGPOOL = 0, 1, 2, 3, 4
VEC_OPS = {"add": VEC_ADD, "scale_channels": VEC_SCALE, "prelu": VEC_PRELU,
           "activation": VEC_ACT, "avgpool": VEC_AVGPOOL}
FLAG_ACT, FLAG_SHUFFLE, FLAG_SCALE, FLAG_POOL, FLAG_PREFETCH, FLAG_RESID = 1, 2, 4, 8, 16, 32
FLAG_PACK_IN, FLAG_PACK_OUT, FLAG_PACK_RES = 64, 128, 256

#: name -> (word offset, words, signed)
FIELDS = {
    "opcode": (0, 1, False), "mode": (1, 1, False), "flags": (2, 1, False),
    "layer": (3, 1, False),
    "a_addr": (4, 2, False), "b_addr": (6, 2, False), "out_addr": (8, 2, False),
    "H": (10, 1, False), "W": (11, 1, False), "C": (12, 1, False),
    "OH": (13, 1, False), "OW": (14, 1, False), "OC": (15, 1, False),
    "n_out": (16, 1, False), "k": (17, 1, False), "stride": (18, 1, False),
    "pad": (19, 1, False), "n_groups": (20, 1, False),
    "w_addr": (21, 2, False), "w_words": (23, 2, False), "p_addr": (25, 2, False),
    "lut_addr": (27, 2, False), "lut_n": (29, 1, False), "lut_off": (30, 1, True),
    "sat_lo": (31, 1, True), "sat_hi": (32, 1, True),
    "sa": (33, 1, False), "sb": (34, 1, False), "shift": (35, 1, False),
    "mult": (36, 2, False), "offset": (38, 1, True), "n_elems": (39, 2, False),
    "rows": (41, 1, False),
    "ls_shift": (42, 1, False), "ls_lo": (43, 1, True), "ls_hi": (44, 1, True),
    "row_entries": (45, 1, False), "row_words": (46, 1, False), "p_words": (47, 1, False),
    "r_addr": (48, 2, False), "r_lo": (50, 1, True), "r_hi": (51, 1, True),
    "r_words": (52, 1, False), "act_cfg": (53, 3, False),
}
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


def pack_descriptor(fields: dict) -> np.ndarray:
    """Field dict -> ``DESC_WORDS`` uint16 words. Unknown fields and values that do not fit
    raise :class:`ImageError` naming the field."""
    words = np.zeros(DESC_WORDS, dtype=np.uint16)
    for name, value in fields.items():
        if name not in FIELDS:
            raise ImageError(f"descriptor: unknown field {name!r}")
        off, n, signed = FIELDS[name]
        bits = 16 * n
        v = int(value)
        lo, hi = (-(1 << (bits - 1)), (1 << (bits - 1)) - 1) if signed else (0, (1 << bits) - 1)
        if not lo <= v <= hi:
            raise ImageError(f"descriptor field {name!r} = {v} does not fit "
                             f"{'signed' if signed else 'unsigned'} {bits} bits")
        v &= (1 << bits) - 1
        for i in range(n):
            words[off + i] = (v >> (16 * i)) & 0xFFFF
    return words


def unpack_descriptor(words) -> dict:
    words = np.asarray(words, dtype=np.int64)
    if words.shape != (DESC_WORDS,):
        raise ImageError(f"descriptor must be {DESC_WORDS} words, not {words.shape}")
    out = {}
    for name, (off, n, signed) in FIELDS.items():
        v = 0
        for i in range(n):
            v |= int(words[off + i]) << (16 * i)
        bits = 16 * n
        if signed and v >= 1 << (bits - 1):
            v -= 1 << bits
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
