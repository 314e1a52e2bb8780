"""The quantizer: float zoo model -> layer program -> calibrated integer artifact.

Three stages, each usable on its own:

1. :func:`float_program` walks a zoo model and emits the *layer program*: the ordered list of
   ops (``conv``, ``activation``, ``shuffle``, ``avgpool``, ``linear``, ``prelu``,
   ``scale_channels``, ``add``, ``maxpool``) with named input and output tensors, plus the float
   parameters with every BatchNorm folded in (:func:`fold_bn`). :func:`run_float` interprets
   that program in float64; it computes what the zoo model computes (a test checks it), and it
   names every intermediate tensor, which is what calibration and the per-layer fidelity report
   need.
2. :func:`calibrate` runs the float program on the calibration faces and picks a format
   ``Fmt(signed, n_word, n_frac, scale, offset)`` per tensor by minimising the quantization MSE
   (:func:`choose_fmt`; for activation inputs judged after the activation with ``"mse-act"``),
   with scale mantissas shared by the tensors that integer-only ops tie (:func:`scale_groups`)
   and offsets on activation inputs; the word width comes from the mixed-precision policy
   (:data:`DEFAULT_WIDE`, by tensor *role*). Bias correction (:func:`weight_bias_shift`) is
   optional.
3. :func:`quantize_program` turns weights into per-output-channel symmetric integers, biases into
   integers at accumulator scale, and every real rescale into a requantization multiplier
   ``M < 2**17`` and shift ``s`` (:func:`multiplier_shift`), producing an
   :class:`quant.artifact.Artifact` that :class:`quant.golden.GoldenModel` runs.

:func:`quantize_model` does all three. See ``docs/NUMERICS.md`` for the arithmetic.
"""
import math
import warnings
from collections import defaultdict

import numpy as np
import torch
import torch.nn.functional as F

from . import activation as act
from .artifact import Artifact
from .cli import UserError
from .fixedpoint import Fmt
from .zoo.layers import ConvBlock, InvertedResidual, LinearBlock, SeesawBlock

# Multiplier width: unsigned and below 2**17, so that M is one operand of an ECP5 18x18 DSP.
MULT_BITS = 17
# The input op feeds the stem ``2 * pixel - 255``: with 8 fraction bits that is exactly the
# reference's ``(pixel - 127.5) / 128``, and the stem's zero padding is exactly the float
# model's zero padding (see docs/NUMERICS.md, "input").
INPUT_FMT = Fmt(True, 9, 8)
# The SE gate (sigmoid output) lies in (0, 1): unsigned, 8 fraction bits.
GATE_FMT = Fmt(False, 8, 8)
# Roles of tensors; the mixed-precision policy maps roles to word widths.
ROLES = ("input", "preact", "act", "linear", "residual", "se", "gate", "embedding")
# Roles widened to 16 bits by default: the embedding (one 512-word vector) and the swish outputs,
# the inputs of every convolution, which buy the most fidelity per bit (measured on the shipped
# weights: docs/NUMERICS.md, "mixed precision"). The engine keeps every activation in one 16-bit
# memory word and multiplies 16 x 8 bits in one 18x18 DSP, so they cost no extra memory traffic.
DEFAULT_WIDE = ("embedding", "act")
WIDE_BITS = 16
# Activation calibration methods and scale kinds (quantizer options, recorded in the manifest).
CALIBRATIONS = ("mse", "mse-act", "max")
SCALES = ("pow2", "free")
# Cross-layer equalisation (quant.equalize) and adaptive rounding iterations per layer
# (quant.adaround, 0 = round to nearest): the quantizer's defaults, measured in
# docs/NUMERICS.md.
EQUALIZATION = False
ADAROUND_ITERATIONS = 100


class QuantizeError(UserError, ValueError):
    """The model or a parameter cannot be quantized as asked; the message names the layer."""


# ----------------------------------------------------------------------------------------------
# BatchNorm folding

def fold_bn(weight, bn):
    """Fold an eval-mode BatchNorm (1d or 2d) into the preceding bias-free conv or linear.

    Returns float64 numpy ``(weight', bias')`` with ``bn(conv(x, W)) == conv(x, W') + b'``:
    ``W' = W * g / sqrt(var + eps)`` per output channel, ``b' = beta - mean * g / sqrt(var + eps)``.
    """
    w = np.asarray(weight.detach().double().numpy() if torch.is_tensor(weight) else weight,
                   dtype=np.float64)
    g = bn.weight.detach().double().numpy() if bn.affine else np.ones(bn.num_features)
    beta = bn.bias.detach().double().numpy() if bn.affine else np.zeros(bn.num_features)
    mean = bn.running_mean.detach().double().numpy()
    var = bn.running_var.detach().double().numpy()
    k = g / np.sqrt(var + bn.eps)
    return w * k.reshape(-1, *([1] * (w.ndim - 1))), beta - mean * k


# ----------------------------------------------------------------------------------------------
# Stage 1: the float layer program

class _Builder:
    def __init__(self):
        self.ops = []
        self.params = {}          # op name -> dict of float64 arrays
        self.roles = {}           # tensor name -> role

    def op(self, name, kind, inputs, output, role, params=None, **fields):
        if any(o["name"] == name for o in self.ops):
            raise QuantizeError(f"duplicate op name {name!r}")
        self.ops.append({"name": name, "op": kind, "inputs": list(inputs), "output": output,
                         **fields})
        self.roles[output] = role
        if params:
            self.params[name] = params
        return output

    def conv(self, name, x, parts, kernel, stride, padding, depthwise, role, source):
        """``parts``: list of ``(in_lo, in_hi, ConvBlock | LinearBlock)``; the parts' outputs
        are concatenated (grouped pointwise with uneven groups)."""
        weights, biases, meta, out_lo = [], [], [], 0
        for lo, hi, block in parts:
            w, b = fold_bn(block.conv.weight, block.bn)
            weights.append(w)
            biases.append(b)
            meta.append({"in": [lo, hi], "out": [out_lo, out_lo + w.shape[0]]})
            out_lo += w.shape[0]
        return self.op(name, "conv", [x], name + ".pre" if role == "preact" else name, role,
                       {"weights": weights, "bias": np.concatenate(biases)},
                       kernel=kernel, stride=stride, padding=padding, depthwise=depthwise,
                       parts=meta, source=source)

    def conv_block(self, name, x, parts, kernel=1, stride=1, padding=0, depthwise=False,
                   source=None, out_name=None):
        pre = self.conv(name, x, parts, kernel, stride, padding, depthwise, "preact",
                        source or [name])
        return self.op(name + ".act", "activation", [pre], out_name or name, "act",
                       function="swish")


def float_program(model):
    """``(ops, params, roles)`` of a zoo model: the layer program with float (BN-folded)
    parameters. ``roles`` maps every tensor name to its role (:data:`ROLES`)."""
    b = _Builder()
    x = b.op("input", "input", [], "input", "input")
    x = b.conv_block("conv1", x, [(0, 3, model.conv1)], 3, 2, 1)
    c = model.conv2_dw.conv.out_channels
    x = b.conv_block("conv2_dw", x, [(0, c, model.conv2_dw)], 3, 1, 1, depthwise=True)
    for name, layer in model.layers()[2:8]:
        blocks = [(name, layer)] if not hasattr(layer, "model") else \
            [(f"{name}.model.{i}", blk) for i, blk in enumerate(layer.model)]
        for prefix, blk in blocks:
            if isinstance(blk, SeesawBlock):
                x = _seesaw_block(b, prefix, blk, x)
            elif isinstance(blk, InvertedResidual):
                x = _inverted_residual(b, prefix, blk, x)
            else:
                raise QuantizeError(f"{prefix}: unsupported block type {type(blk).__name__}")
    x = b.conv_block("conv_6_sep", x, [(0, model.conv_6_sep.conv.in_channels, model.conv_6_sep)])
    x = b.conv("conv_6_dw", x, [(0, 512, model.conv_6_dw)], model.conv_6_dw.conv.kernel_size[0],
               1, 0, True, "linear", ["conv_6_dw"])
    w, bias = fold_bn(model.linear.weight, model.bn)
    b.op("linear", "linear", [x], "embedding", "embedding", {"weights": [w], "bias": bias},
         source=["linear", "bn"])
    return b.ops, b.params, b.roles


def _seesaw_block(b, p, blk, x):
    in_c = blk.conv_1.conv.in_channels * 4
    e = blk.conv_dw.conv.out_channels
    y = b.conv_block(f"{p}.expand", x, [(0, in_c // 4, blk.conv_1), (in_c // 4, in_c, blk.conv_3)],
                     source=[f"{p}.conv_1", f"{p}.conv_3"])
    if blk.routing == "shuffle":
        y = b.op(f"{p}.shuffle", "shuffle", [y], f"{p}.shuffle", "act", groups=2)
    y = b.conv_block(f"{p}.dw", y, [(0, e, blk.conv_dw)], 3, blk.conv_dw.conv.stride[0], 1,
                     depthwise=True, source=[f"{p}.conv_dw"])
    y = _squeeze_excite(b, f"{p}.se", blk.se[0], y)
    if blk.routing == "shuffle":
        parts = [(0, e // 4, blk.project_1), (e // 4, e, blk.project_3)]
        src = [f"{p}.project_1", f"{p}.project_3"]
    else:
        parts = [(0, 3 * e // 4, blk.project_3), (3 * e // 4, e, blk.project_1)]
        src = [f"{p}.project_3", f"{p}.project_1"]
    joined = blk.residual or blk.mapping_kind is not None
    proj = b.conv(f"{p}.project" if joined else p, y, parts, 1, 1, 0, False,
                  "linear" if joined else "residual", src)
    if blk.residual:
        return b.op(f"{p}.add", "add", [x, proj], p, "residual")
    if blk.mapping_kind == "conv_s2":
        m = b.conv_block(f"{p}.mapping", x, [(0, in_c, blk.mapping)], 1, 2, 0,
                         source=[f"{p}.mapping"])
        return b.op(f"{p}.add", "add", [m, proj], p, "residual")
    if blk.mapping_kind == "maxpool_conv":
        m = b.op(f"{p}.mapping.pool", "maxpool", [x], f"{p}.mapping.pool", "residual",
                 kernel=2, stride=2)
        m = b.conv_block(f"{p}.mapping", m, [(0, in_c, blk.mapping[1])], source=[f"{p}.mapping.1"])
        return b.op(f"{p}.add", "add", [m, proj], p, "residual")
    return proj


def _inverted_residual(b, p, blk, x):
    in_c = blk.conv.conv.in_channels
    e = blk.conv_dw.conv.out_channels
    y = b.conv_block(f"{p}.conv", x, [(0, in_c, blk.conv)])
    y = b.conv_block(f"{p}.conv_dw", y, [(0, e, blk.conv_dw)], 3, blk.conv_dw.conv.stride[0], 1,
                     depthwise=True)
    proj = b.conv(f"{p}.project" if blk.residual else p, y, [(0, e, blk.project)], 1, 1, 0,
                  False, "linear" if blk.residual else "residual", [f"{p}.project"])
    if blk.residual:
        return b.op(f"{p}.add", "add", [x, proj], p, "residual")
    return proj


def _squeeze_excite(b, p, se, x):
    fc1, prelu, fc2 = se.fc[0], se.fc[1], se.fc[2]
    pooled = b.op(f"{p}.pool", "avgpool", [x], f"{p}.pool", "se")
    h = b.op(f"{p}.fc1", "linear", [pooled], f"{p}.fc1", "se",
             {"weights": [fc1.weight.detach().double().numpy()],
              "bias": fc1.bias.detach().double().numpy()}, source=[f"{p}.fc.0"])
    h = b.op(f"{p}.prelu", "prelu", [h], f"{p}.prelu", "se",
             {"slope": prelu.weight.detach().double().numpy()}, source=[f"{p}.fc.1"])
    z = b.op(f"{p}.fc2", "linear", [h], f"{p}.fc2", "preact",
             {"weights": [fc2.weight.detach().double().numpy()],
              "bias": fc2.bias.detach().double().numpy()}, source=[f"{p}.fc.2"])
    g = b.op(f"{p}.gate", "activation", [z], f"{p}.gate", "gate", function="sigmoid")
    return b.op(p, "scale_channels", [x, g], p, "act")


def _float_conv(op, prm, x):
    outs = []
    for part, w in zip(op["parts"], prm["weights"]):
        xi = x[:, part["in"][0]:part["in"][1]]
        outs.append(F.conv2d(xi, torch.from_numpy(w).to(x.dtype), stride=op["stride"],
                             padding=op["padding"], groups=xi.shape[1] if op["depthwise"] else 1))
    y = outs[0] if len(outs) == 1 else torch.cat(outs, 1)
    return y + torch.from_numpy(prm["bias"]).to(x.dtype).view(1, -1, 1, 1)


def float_input(faces_uint8_nhwc, dtype=torch.float32) -> torch.Tensor:
    """uint8 NHWC faces -> the float NCHW input ``(pixel - 127.5) / 128``."""
    faces = np.asarray(faces_uint8_nhwc)
    if faces.dtype != np.uint8 or faces.ndim != 4 or faces.shape[3] != 3:
        raise ValueError(f"faces must be uint8 (N, H, W, 3), not {faces.dtype} {faces.shape}")
    return (torch.from_numpy(faces).permute(0, 3, 1, 2).to(dtype) - 127.5) / 128


@torch.no_grad()
def run_float(ops, params, faces_uint8_nhwc, keep=True, on_tensor=None,
              dtype=torch.float32) -> dict:
    """Interpret the float program (float32 like the zoo model, or float64). Returns ``{tensor name: tensor}`` (all of them
    when ``keep``, else only ``"embedding"``); ``on_tensor(name, tensor)`` sees each one."""
    env = {}
    last_use = _last_use(ops)
    for i, op in enumerate(ops):
        y = float_op(op, params.get(op["name"], {}), [env[t] for t in op["inputs"]],
                     faces_uint8_nhwc, dtype)
        env[op["output"]] = y
        if on_tensor:
            on_tensor(op["output"], y)
        if not keep:
            for t in op["inputs"]:
                if last_use[t] == i:
                    del env[t]
    return env if keep else {"embedding": env["embedding"]}


def float_op(op, prm, xs, faces_uint8_nhwc=None, dtype=torch.float32):
    """One op of the float program on its input tensors ``xs`` (``faces_uint8_nhwc`` feeds the
    ``input`` op)."""
    kind = op["op"]
    if kind == "input":
        return float_input(faces_uint8_nhwc, dtype)
    if kind == "conv":
        return _float_conv(op, prm, xs[0])
    if kind == "activation":
        return torch.sigmoid(xs[0]) if op["function"] == "sigmoid" else xs[0] * torch.sigmoid(xs[0])
    if kind == "shuffle":
        return _shuffle(xs[0], op["groups"])
    if kind == "avgpool":
        return xs[0].mean((2, 3))
    if kind == "linear":
        return xs[0].flatten(1) @ torch.from_numpy(prm["weights"][0]).to(dtype).t() + \
            torch.from_numpy(prm["bias"]).to(dtype)
    if kind == "prelu":
        return torch.where(xs[0] >= 0, xs[0], xs[0] * torch.from_numpy(prm["slope"]).to(dtype))
    if kind == "scale_channels":
        return xs[0] * xs[1].view(*xs[1].shape, 1, 1)
    if kind == "add":
        return xs[0] + xs[1]
    if kind == "maxpool":
        return F.max_pool2d(xs[0], op["kernel"], op["stride"])
    raise QuantizeError(f"layer {op['name']!r}: unknown op {kind!r}")


def _shuffle(x, groups):
    n, c = x.shape[:2]
    return x.view(n, groups, c // groups, *x.shape[2:]).transpose(1, 2).reshape(x.shape)


def _last_use(ops):
    last = {}
    for i, op in enumerate(ops):
        for t in op["inputs"]:
            last[t] = i
    return last


# ----------------------------------------------------------------------------------------------
# Stage 2: calibration

def _fmt_error(fmt: Fmt, v: np.ndarray, function=None) -> float:
    """Mean squared quantization error; with ``function`` (``"swish"``/``"sigmoid"``), of the
    function's output, which is what an activation input's error costs downstream."""
    q = fmt.value(fmt.quantize(v))
    if function is not None:
        q, v = act.float_function(function, q), act.float_function(function, v)
    return float(np.mean((q - v) ** 2))


def choose_fmt(values: np.ndarray, bits: int, signed: bool = True, method: str = "mse",
               scale: float = 1.0, function=None) -> Fmt:
    """The format of ``bits`` bits and scale mantissa ``scale`` for these calibration values.

    ``"max"``: the most fraction bits that still hold the largest magnitude. ``"mse"``: from that
    format, try up to six more fraction bits (clipping the largest values harder, resolving the
    bulk finer) and keep the one with the least mean squared quantization error, saturation
    included. Values are rounded half up and saturated exactly as the hardware does.
    ``"mse-act"``: as ``"mse"``, but for the input of an activation (``function``) the error is
    measured on the activation's float output: clipping a swish input's negative tail costs
    little, its positive range a lot.
    """
    return _choose_fmt(values, bits, signed, method, scale, function)[0]


def _choose_fmt(values, bits, signed, method, scale, function=None):
    v = np.asarray(values, dtype=np.float64).ravel()
    if v.size == 0:
        raise QuantizeError("choose_fmt: no calibration values")
    if method not in CALIBRATIONS:
        raise QuantizeError(f"calibration method must be one of {CALIBRATIONS}, not {method!r}")
    peak = float(np.abs(v).max())
    int_bits = bits - 1 if signed else bits
    # n_frac at which `peak` still fits: peak / (scale * 2**-f) <= 2**int_bits - 1
    f_max = int_bits - 1 if peak == 0 else \
        int(math.floor(math.log2((2 ** int_bits - 1) * scale / peak)))
    if method == "max":
        fmt = Fmt(signed, bits, f_max, scale)
        return fmt, _fmt_error(fmt, v)
    function = function if method == "mse-act" else None
    best, best_err = None, None
    for f in range(f_max, f_max + 7):
        fmt = Fmt(signed, bits, f, scale)
        err = _fmt_error(fmt, v, function)
        if best_err is None or err < best_err * (1 - 1e-9):
            best, best_err = fmt, err
    return best, best_err


# Mantissas tried for a scale that is not a power of two (``scales="free"``): 1 + k/32.
FREE_MANTISSAS = tuple(1 + k / 32 for k in range(32))
# Sample size per tensor for the mantissa search (the final format uses the whole sample).
_SEARCH_SAMPLE = 1 << 13


def scale_groups(ops) -> list:
    """Tensors whose scale mantissas must be equal, as lists in program order.

    The integer ops that do no rescaling tie their operands: ``add`` aligns its inputs with
    shifts, ``scale_channels``, ``shuffle``, ``maxpool`` and ``prelu`` keep their input's scale
    up to a power of two. Every other tensor is produced through a requantization multiplier or
    an activation table, which absorb any scale, and starts a group of its own."""
    parent = {}

    def find(t):
        parent.setdefault(t, t)
        while parent[t] != t:
            parent[t] = parent[parent[t]]
            t = parent[t]
        return t

    for op in ops:
        find(op["output"])
        if op["op"] == "add":
            tied = op["inputs"]
        elif op["op"] == "scale_channels":
            tied = op["inputs"][:1]
        elif op["op"] in ("shuffle", "maxpool", "prelu"):
            tied = op["inputs"]
        else:
            tied = []
        for t in tied:
            parent[find(t)] = find(op["output"])
    groups = defaultdict(list)
    for op in ops:
        groups[find(op["output"])].append(op["output"])
    return list(groups.values())


class _Sampler:
    """Keeps a bounded random sample of every tensor's values plus its exact extremes."""

    def __init__(self, per_batch=1 << 16, seed=0):
        self.per_batch = per_batch
        self.rng = np.random.default_rng(seed)
        self.samples = defaultdict(list)
        self.peak = defaultdict(float)

    def __call__(self, name, t):
        v = t.detach().double().flatten().numpy()
        self.peak[name] = max(self.peak[name], float(np.abs(v).max()) if v.size else 0.0)
        if v.size > self.per_batch:
            v = v[self.rng.integers(0, v.size, self.per_batch)]
        self.samples[name].append(v)

    def values(self, name):
        v = np.concatenate(self.samples[name])
        # The extreme value always takes part, so "max" calibration is exact.
        return np.append(v, self.peak[name])


def policy_bits(role: str, bits: int, wide) -> int:
    if role not in ROLES:
        raise QuantizeError(f"unknown tensor role {role!r}; known: {', '.join(ROLES)}")
    return WIDE_BITS if role in wide else bits


def collect_statistics(ops, params, faces, batch=10, progress=None) -> "_Sampler":
    """Run the float program on ``faces`` and keep a sample of every tensor's values."""
    sampler = _Sampler()
    for i in range(0, len(faces), batch):
        run_float(ops, params, faces[i:i + batch], keep=False, on_tensor=sampler)
        if progress:
            progress(min(i + batch, len(faces)), len(faces))
    return sampler


class QuantizeWarning(UserWarning):
    """A tensor's format had to be clamped into the range the hardware accepts."""


def frac_limits(ops, act_form="lut", cordic_width=24) -> dict:
    """``{tensor: (lo, hi)}``: the fraction bits each tensor may have. Activation inputs
    need ``0..24`` (``0..cordic_width - 3`` for the CORDIC), every other tensor ``-8..24``."""
    limits = {}
    for op in ops:
        limits.setdefault(op["output"], (-8, 24))
        if op["op"] == "activation":
            hi = 24 if act_form == "lut" else min(24, cordic_width - 3)
            limits[op["inputs"][0]] = (0, hi)
    return limits


def choose_formats(ops, roles, stats, act_bits=8, wide=DEFAULT_WIDE, method="mse",
                   scales="pow2", act_form="lut", cordic_width=24, offsets=False) -> dict:
    """``{tensor: Fmt}`` from collected statistics and the mixed-precision policy.

    ``scales="free"`` gives each group of :func:`scale_groups` the mantissa (1 <= m < 2) that
    minimises the summed relative squared error of its tensors. Groups holding the input, the SE
    gate or (CORDIC form) an activation input or output keep power-of-two scales. A tensor whose
    range is tiny, dead or huge is clamped into :func:`frac_limits` with a
    :class:`QuantizeWarning` naming it. ``offsets``: an activation input of the LUT form gets
    the offset, scale and fraction bits that minimise the error after the activation
    (:func:`_table_input_fmt`)."""
    for w in wide:
        if w not in ROLES:
            raise QuantizeError(f"wide role {w!r} unknown; known: {', '.join(ROLES)}")
    if scales not in SCALES:
        raise QuantizeError(f"scales must be one of {SCALES}, not {scales!r}")
    fixed = {n: INPUT_FMT for n, r in roles.items() if r == "input"}
    fixed.update({n: GATE_FMT for n, r in roles.items() if r == "gate"})
    pow2_only = set(fixed)
    if act_form != "lut":
        for op in ops:
            if op["op"] == "activation":
                pow2_only.update((op["inputs"][0], op["output"]))
    limits = frac_limits(ops, act_form, cordic_width)
    copies = {op["output"] for op in ops if op["op"] in ("shuffle", "maxpool", "prelu")}
    functions = {op["inputs"][0]: op["function"] for op in ops if op["op"] == "activation"}
    # Offsets (zero points) only on tensors that feed nothing but a table (LUT form): the table
    # reads the codes whatever they mean, and the producer's bias absorbs the shift.
    consumers = defaultdict(set)
    for op in ops:
        for t in op["inputs"]:
            consumers[t].add(op["op"])
    table_inputs = {t for t in functions if consumers[t] == {"activation"}} \
        if act_form == "lut" else set()
    fmts = dict(fixed)
    for group in scale_groups(ops):
        free = [n for n in group if n not in fixed and n not in copies]
        if not free:
            continue
        bits = {n: policy_bits(roles[n], act_bits, wide) for n in free}
        values = {n: stats.values(n) for n in free}
        fn = {n: functions.get(n) for n in free}
        if offsets and len(free) == 1 and free[0] in table_inputs:
            n = free[0]
            fmts[n] = _clamped(n, _table_input_fmt(values[n], bits[n], fn[n],
                                                   scales == "free"), limits[n])
            continue
        mantissa = 1.0
        if scales == "free" and not pow2_only.intersection(group):
            mantissa = _best_mantissa(values, bits, method, fn)
        for n in free:
            fmts[n] = _clamped(n, choose_fmt(values[n], bits[n], True, method, mantissa, fn[n]),
                               limits[n])
    # Shuffle, maxpool and PReLU move values without arithmetic: they keep their input's format
    # (quant.ops.prelu rounds only the negative side).
    for op in ops:
        if op["op"] in ("shuffle", "maxpool", "prelu"):
            fmts[op["output"]] = fmts[op["inputs"][0]]
    return fmts


# Offsets tried for an activation input, in 1/16 of its code range (0 .. 7/16 upwards).
OFFSET_STEPS = 8


def _table_input_fmt(v, bits, function, free):
    """The format of an activation input (LUT form) with the least squared error of the
    activation's output: a grid over offset ``k/16`` of the code range (``k = 0..7``: the range
    moves up, a swish's negative tail costs little), scale mantissa (``1 + j/16`` when
    ``free``) and seven fraction-bit choices, on 4096 sampled values plus both extremes."""
    v = np.asarray(v, dtype=np.float64).ravel()
    rng = np.random.default_rng(0)
    s = v if v.size <= 4096 else np.concatenate([rng.choice(v, 4096, replace=False),
                                                 [v.min(), v.max()]])
    ref = act.float_function(function, s)
    lo, hi = -(1 << (bits - 1)), (1 << (bits - 1)) - 1
    codes = np.arange(lo, hi + 1)
    peak = max(float(s.max()), 1e-30)
    best, best_err = None, None
    for k in range(OFFSET_STEPS):
        z = k * (1 << bits) // 16
        for m in ((1 + j / 16 for j in range(16)) if free else (1.0,)):
            f0 = int(math.floor(math.log2((hi + z) * m / peak)))
            for f in range(f0, f0 + 7):
                fmt = Fmt(True, bits, f, m, z)
                out = act.float_function(function, fmt.value(codes))
                err = float(np.mean((out[fmt.quantize(s) - lo] - ref) ** 2))
                if best_err is None or err < best_err * (1 - 1e-9):
                    best, best_err = fmt, err
    return best


def _best_mantissa(values, bits, method, functions):
    rng = np.random.default_rng(0)
    sample = {}
    for n, v in values.items():
        if v.size > _SEARCH_SAMPLE:
            v = np.append(rng.choice(v, _SEARCH_SAMPLE, replace=False), np.abs(v).max())
        ref = v if method != "mse-act" or functions[n] is None else \
            act.float_function(functions[n], v)
        sample[n] = (v, max(float(np.mean(ref * ref)), 1e-300))
    best, best_err = 1.0, None
    for m in FREE_MANTISSAS:
        err = sum(_choose_fmt(v, bits[n], True, method, m, functions[n])[1] / power
                  for n, (v, power) in sample.items())
        if best_err is None or err < best_err * (1 - 1e-9):
            best, best_err = m, err
    return best


def _clamped(name, fmt, limits):
    lo, hi = limits
    if lo <= fmt.n_frac <= hi:
        return fmt
    f = min(max(fmt.n_frac, lo), hi)
    warnings.warn(f"tensor {name!r}: its calibrated range needs {fmt.n_frac} fraction bits; "
                  f"clamped to {f} (the hardware accepts {lo}..{hi}; the tensor is "
                  f"{'tiny or dead' if fmt.n_frac > hi else 'huge and saturates'})",
                  QuantizeWarning, stacklevel=3)
    return Fmt(fmt.signed, fmt.n_word, f, fmt.scale, fmt.offset)


def calibrate(ops, params, roles, faces, act_bits=8, wide=DEFAULT_WIDE, method="mse",
              batch=10, progress=None, scales="pow2", act_form="lut", cordic_width=24,
              offsets=False) -> dict:
    """``{tensor: Fmt}`` from the float program run on ``faces`` (uint8 NHWC)."""
    for w in wide:
        if w not in ROLES:
            raise QuantizeError(f"wide role {w!r} unknown; known: {', '.join(ROLES)}")
    stats = collect_statistics(ops, params, faces, batch, progress)
    return choose_formats(ops, roles, stats, act_bits, wide, method, scales, act_form,
                          cordic_width, offsets)


# ----------------------------------------------------------------------------------------------
# Stage 3: integers

def multiplier_shift(real: float, what: str = "requantize") -> tuple:
    """``(M, s)`` with ``M < 2**17`` unsigned and ``M / 2**s`` the closest to ``real`` that 17
    bits allow (``2**16 <= M < 2**17`` unless the shift would go negative)."""
    if not (real > 0 and math.isfinite(real)):
        raise QuantizeError(f"{what}: rescale factor must be positive and finite, not {real!r}")
    s = MULT_BITS - 1 - math.floor(math.log2(real))
    m = int(math.floor(real * 2.0 ** s + 0.5))
    if m >= 1 << MULT_BITS:
        m, s = int(math.floor(real * 2.0 ** (s - 1) + 0.5)), s - 1
    if s < 0:
        raise QuantizeError(f"{what}: rescale factor {real:.4g} needs a left shift "
                            f"(M >= 2**{MULT_BITS}); the output format is too fine")
    return m, s


def quantize_weights(w: np.ndarray, bits: int, up=None):
    """Per-output-channel symmetric: ``(q int, scale float64 per channel)`` with
    ``w ~= q * scale``, ``|q| <= 2**(bits-1) - 1``, rounded half up; or, with ``up`` (0/1 per
    weight, adaptive rounding: :mod:`quant.adaround`), ``floor(w / scale) + up``."""
    qmax = (1 << (bits - 1)) - 1
    flat = w.reshape(w.shape[0], -1)
    peak = np.abs(flat).max(1)
    scale = np.where(peak > 0, peak / qmax, 1.0)
    if up is None:
        q = np.floor(flat / scale[:, None] + 0.5)
    else:
        q = np.floor(flat / scale[:, None]) + np.asarray(up).reshape(flat.shape)
    q = np.clip(q, -qmax, qmax).astype(np.int64)
    return q.reshape(w.shape), scale


def _bits_signed(bound: float) -> int:
    """Signed word width that holds every integer of magnitude <= bound."""
    return max(2, int(math.ceil(math.log2(bound + 1))) + 1)


def _rescale_arrays(name, real_per_channel):
    ms = [multiplier_shift(float(r), f"layer {name!r} channel {c}")
          for c, r in enumerate(real_per_channel)]
    return (np.array([m for m, _ in ms], dtype=np.int32),
            np.array([s for _, s in ms], dtype=np.int8))


def quantize_program(ops, params, roles, fmts, shapes, weight_bits=8, act_form="lut",
                     cordic_iterations=16, cordic_width=24, meta=None) -> Artifact:
    """Integer artifact from a float program and its calibrated tensor formats.

    ``shapes``: ``{tensor: per-image shape}``."""
    if not 2 <= weight_bits <= 16:
        raise QuantizeError(f"weight bits must be 2..16, not {weight_bits!r}")
    if act_form not in act.FORMS:
        raise QuantizeError(f"activation form must be one of {act.FORMS}, not {act_form!r}")
    arrays, array_fmts, program = {}, {}, []
    wfmt = Fmt(True, weight_bits, 0)

    def put(key, value, fmt):
        arrays[key], array_fmts[key] = value, fmt

    for op in ops:
        name, kind = op["name"], op["op"]
        q = {k: v for k, v in op.items()}
        prm = params.get(name, {})
        if kind in ("conv", "linear"):
            in_fmt = fmts[op["inputs"][0]]
            out = fmts[op["output"]]
            qs, scales = [], []
            for w, up in zip(prm["weights"], prm.get("round_up", [None] * len(prm["weights"]))):
                wq, sc = quantize_weights(w, weight_bits, up)
                qs.append(wq)
                scales.append(sc)
            scale = np.concatenate(scales)
            acc_lsb = scale * in_fmt.lsb
            # an output offset z: code = round(y / lsb) - z, so the bias carries - z * lsb
            bias = np.floor((prm["bias"] - out.offset * out.lsb) / acc_lsb + 0.5).astype(np.int64)
            m, s = _rescale_arrays(name, acc_lsb / out.lsb)
            in_peak = max(-in_fmt.lo, in_fmt.hi)
            sums = np.concatenate([np.abs(wq).reshape(wq.shape[0], -1).sum(1) for wq in qs])
            acc_bits = max(2, int((sums * in_peak + np.abs(bias)).max()).bit_length() + 1)
            if kind == "conv":
                q["parts"] = [dict(p, weight=f"{name}.weight.{i}") for i, p in enumerate(op["parts"])]
                for i, wq in enumerate(qs):
                    put(f"{name}.weight.{i}", wq.astype(np.int8 if weight_bits <= 8 else np.int16),
                        wfmt)
            else:
                q["weight"] = f"{name}.weight"
                put(f"{name}.weight", qs[0].astype(np.int8 if weight_bits <= 8 else np.int16),
                    wfmt)
            q.update(bias=f"{name}.bias", multiplier=f"{name}.multiplier",
                     shift=f"{name}.shift", acc_bits=acc_bits)
            put(f"{name}.bias", bias, Fmt(True, _bits_signed(float(np.abs(bias).max())), 0))
            put(f"{name}.multiplier", m, Fmt(False, MULT_BITS, 0))
            put(f"{name}.shift", s, Fmt(False, 6, 0))
        elif kind == "activation":
            try:
                spec = act.ActivationSpec(op["function"], act_form, fmts[op["inputs"][0]],
                                          fmts[op["output"]], cordic_iterations, cordic_width)
            except ValueError as e:
                raise QuantizeError(f"layer {name!r}: {e}") from None
            q["spec"] = spec.to_dict()
        elif kind == "avgpool":
            x = op["inputs"][0]
            hw = shapes[x][1] * shapes[x][2]
            out = fmts[op["output"]]
            m, s = multiplier_shift(fmts[x].lsb / out.lsb / hw, f"layer {name!r}")
            peak = max(-fmts[x].lo, fmts[x].hi)
            q.update(multiplier=m, shift=s, acc_bits=_bits_signed(hw * peak))
        elif kind == "prelu":
            slope = prm["slope"]
            peak = float(np.abs(slope).max())
            frac = 7 if peak == 0 else min(15, int(math.floor(math.log2(127 / peak))))
            sq = np.floor(slope * 2.0 ** frac + 0.5).astype(np.int64)
            put(f"{name}.slope", sq.astype(np.int8), Fmt(True, 8, 0))
            q.update(slope=f"{name}.slope", slope_frac=frac)
        elif kind == "scale_channels":
            fx, fg = fmts[op["inputs"][0]].n_frac, fmts[op["inputs"][1]].n_frac
            _same_scale(name, [op["inputs"][0], op["output"]], fmts)
            q["shift"] = fx + fg - fmts[op["output"]].n_frac
        elif kind in ("add", "shuffle", "maxpool", "prelu"):
            _same_scale(name, op["inputs"] + [op["output"]], fmts)
        elif kind == "input":
            q.update(scale=2, offset=-255)
        program.append(q)
    tensors = {t: {"shape": list(shapes[t]), "fmt": fmts[t], "role": roles[t]} for t in roles}
    meta = dict(meta or {})
    meta.setdefault("weight_bits", weight_bits)
    meta.setdefault("activation_form", act_form)
    return Artifact(variant=meta.get("variant", "unknown"), program=program, tensors=tensors,
                    arrays=arrays, array_fmts=array_fmts, meta=meta)


def _same_scale(name, tensors, fmts):
    if len({fmts[t].scale for t in tensors}) > 1:
        raise QuantizeError(f"layer {name!r}: tensors {tensors} must share one scale mantissa, "
                            f"not {[fmts[t].scale for t in tensors]}")


def tensor_shapes(ops, params, size=112) -> dict:
    """Per-image shape of every tensor (one float run on a blank face)."""
    env = run_float(ops, params, np.full((1, size, size, 3), 128, np.uint8), keep=True)
    return {k: tuple(v.shape[1:]) for k, v in env.items()}


def weight_bias_shift(ops, params, faces, weight_bits=8, batch=10) -> dict:
    """Bias correction: ``{layer: per-channel shift}``, the mean over the calibration faces (and
    over positions) of the output change that rounding the weights causes,
    ``E[conv(x, W_q * scale - W)]`` with ``x`` the layer's float input. Subtracting it from the
    float bias before the bias is quantized removes that expected shift."""
    consumers, error = defaultdict(list), {}
    for op in ops:
        if op["op"] in ("conv", "linear"):
            consumers[op["inputs"][0]].append(op)
            errs = []
            prm = params[op["name"]]
            for w, up in zip(prm["weights"], prm.get("round_up", [None] * len(prm["weights"]))):
                q, sc = quantize_weights(w, weight_bits, up)
                errs.append(q * sc.reshape(-1, *([1] * (w.ndim - 1))) - w)
            error[op["name"]] = errs
    sums, counts = {}, defaultdict(int)

    def on_tensor(name, t):
        for op in consumers.get(name, ()):
            errs = error[op["name"]]
            if op["op"] == "conv":
                zero = np.zeros(sum(e.shape[0] for e in errs))
                y = _float_conv(op, {"weights": errs, "bias": zero}, t).double()
                total, n = y.sum((0, 2, 3)), y.shape[0] * y.shape[2] * y.shape[3]
            else:
                y = t.flatten(1).double() @ torch.from_numpy(errs[0]).t()
                total, n = y.sum(0), y.shape[0]
            sums[op["name"]] = sums.get(op["name"], 0) + total.numpy()
            counts[op["name"]] += n

    for i in range(0, len(faces), batch):
        run_float(ops, params, faces[i:i + batch], keep=False, on_tensor=on_tensor)
    return {k: v / counts[k] for k, v in sums.items()}


def quantize_model(model, calibration_faces, weight_bits=8, act_bits=8, act_form="lut",
                   wide=DEFAULT_WIDE, method="mse-act", cordic_iterations=16, cordic_width=24,
                   meta=None, progress=None, scales="free", bias_correction=False,
                   offsets=True, equalization=EQUALIZATION, adaround=ADAROUND_ITERATIONS,
                   log=None) -> Artifact:
    """The whole quantizer: float zoo model (eval mode) + calibration faces -> Artifact.

    ``scales``: ``"free"`` (a scale mantissa per tensor group, :func:`choose_formats`) or
    ``"pow2"``; ``bias_correction``: fold :func:`weight_bias_shift` into the biases;
    ``offsets``: activation inputs (LUT form) get an offset (:func:`choose_formats`);
    ``equalization``: cross-layer equalisation of the exact pairs (:mod:`quant.equalize`)
    before calibration; ``adaround``: iterations of adaptive weight rounding per layer
    (:mod:`quant.adaround`), 0 for round-to-nearest; ``log`` sees its per-layer lines."""
    from .adaround import adaround as fit_rounding
    from .equalize import equalize
    model = model.eval()
    if scales not in SCALES:
        raise QuantizeError(f"scales must be one of {SCALES}, not {scales!r}")
    if not 2 <= weight_bits <= 16:
        raise QuantizeError(f"weight bits must be 2..16, not {weight_bits!r}")
    if act_form not in act.FORMS:
        raise QuantizeError(f"activation form must be one of {act.FORMS}, not {act_form!r}")
    if isinstance(adaround, bool) or not isinstance(adaround, int) or adaround < 0:
        raise QuantizeError(f"adaround iterations must be an int >= 0, not {adaround!r}")
    ops, params, roles = float_program(model)
    shapes = tensor_shapes(ops, params)
    pairs = []
    if equalization:
        params, pairs = equalize(ops, params, shapes, calibration_faces)
    # Tensors clamped into what the hardware takes (choose_formats warns per tensor): the
    # warnings go on to the caller and their texts into the manifest.
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", QuantizeWarning)
        fmts = calibrate(ops, params, roles, calibration_faces, act_bits, wide, method,
                         progress=progress, scales=scales, act_form=act_form,
                         cordic_width=cordic_width, offsets=offsets)
    notes = []
    for w in caught:
        if issubclass(w.category, QuantizeWarning):
            notes.append(str(w.message))
        warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
    rounding = []
    if adaround:
        params, rounding = fit_rounding(ops, params, fmts, calibration_faces, weight_bits,
                                        iterations=adaround, log=log)
    if bias_correction:
        shift = weight_bias_shift(ops, params, calibration_faces, weight_bits)
        params = {k: dict(v, bias=v["bias"] - shift[k]) if k in shift else v
                  for k, v in params.items()}
    meta = dict(meta or {})
    meta["format_clamps"] = notes
    meta.setdefault("variant", model.spec.name)
    meta.update(weight_bits=weight_bits, act_bits=act_bits, activation_form=act_form,
                wide_roles=list(wide), wide_bits=WIDE_BITS, calibration_method=method,
                calibration_faces=int(len(calibration_faces)), scales=scales,
                bias_correction=bool(bias_correction),
                offsets=bool(offsets) and act_form == "lut",
                offset_tensors=sum(1 for f in fmts.values() if f.offset),
                equalization=bool(equalization), equalized_pairs=len(pairs),
                adaround_iterations=int(adaround),
                adaround_layers=sum(1 for r in rounding if r["changed"] > 0),
                scaled_tensors=sum(1 for f in fmts.values() if f.scale != 1.0))
    return quantize_program(ops, params, roles, fmts, shapes, weight_bits, act_form,
                            cordic_iterations, cordic_width, meta)
