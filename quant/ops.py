"""The integer operations of the golden model: the bit-level specification of the hardware.

Every function takes and returns *raw integers* (the ``q`` of ``value = q * 2**-n_frac``), held
in ``torch.float64`` tensors: every product and sum here stays below 2**53, so float64
convolutions are exact and fast (see :func:`check_exact`). Layout is NCHW; per-channel vectors
run along dimension 1.

Rounding is always *round half up* (``floor(v / 2**s + 1/2)``) and saturation always clamps to
the output format: see :mod:`quant.fixedpoint`. The hardware must equal these functions bit for
bit; the cocotb tests compare against them.
"""
import torch
import torch.nn.functional as F

from .fixedpoint import Fmt

EXACT_LIMIT = 2.0 ** 53


def check_exact(t: torch.Tensor, what: str):
    """Refuse values that float64 cannot hold exactly (would silently round)."""
    if t.numel() and t.abs().max().item() >= EXACT_LIMIT:
        raise OverflowError(f"{what}: intermediate value {t.abs().max().item():.3g} exceeds 2**53")


def _per_channel(v, ndim: int) -> torch.Tensor:
    v = torch.as_tensor(v, dtype=torch.float64)
    return v.view(1, -1, *([1] * (ndim - 2))) if v.ndim == 1 else v


def conv(x, weight, bias=None, stride=1, padding=0, groups=1) -> torch.Tensor:
    """Accumulator of a convolution: ``sum(x * w) + bias`` with integer ``x`` (N,C,H,W),
    integer ``weight`` (O, C/groups, kh, kw) and integer ``bias`` (O,) at accumulator scale.
    Zero padding. Pointwise, depthwise, stem and GDConv are all this function."""
    acc = F.conv2d(x.double(), torch.as_tensor(weight, dtype=torch.float64),
                   None if bias is None else torch.as_tensor(bias, dtype=torch.float64),
                   stride=stride, padding=padding, groups=groups)
    return acc


def linear(x, weight, bias=None) -> torch.Tensor:
    """Accumulator of a fully connected layer: ``x`` (N, I), ``weight`` (O, I), ``bias`` (O,)."""
    acc = x.double() @ torch.as_tensor(weight, dtype=torch.float64).t()
    if bias is not None:
        acc = acc + torch.as_tensor(bias, dtype=torch.float64)
    return acc


def requantize(acc, multiplier, shift, out: Fmt) -> torch.Tensor:
    """``saturate(floor(acc * M / 2**s + 1/2))``, per channel: ``multiplier`` and ``shift`` are
    integers or per-channel vectors. ``M`` is unsigned and below 2**17 so that it is one operand
    of an ECP5 18x18 multiplier."""
    m = _per_channel(multiplier, acc.ndim)
    s = _per_channel(shift, acc.ndim)
    prod = acc * m
    check_exact(prod, "requantize product")
    y = torch.floor((prod + torch.exp2(s - 1)) / torch.exp2(s))
    return y.clamp(out.lo, out.hi)


def shift_round(x, s: int) -> torch.Tensor:
    """``floor(x / 2**s + 1/2)`` for ``s > 0``; exact ``x * 2**-s`` for ``s <= 0``."""
    if s <= 0:
        return x * float(1 << -s)
    return torch.floor((x + float(1 << (s - 1))) / float(1 << s))


def add(a, fa: int, b, fb: int, out: Fmt) -> torch.Tensor:
    """Residual add of raw ``a`` (``fa`` fraction bits) and ``b`` (``fb``): both are aligned
    exactly to the finer grid ``F = max(fa, fb)``, added, then rounded once to ``out``."""
    f = max(fa, fb)
    s = a * float(1 << (f - fa)) + b * float(1 << (f - fb))
    return shift_round(s, f - out.n_frac).clamp(out.lo, out.hi)


def prelu(x, slope, slope_frac: int) -> torch.Tensor:
    """PReLU with per-channel integer slopes at ``slope_frac`` fraction bits; the output keeps
    the input format (negative side rounded half up)."""
    k = _per_channel(slope, x.ndim)
    return torch.where(x >= 0, x, shift_round(x * k, slope_frac))


def scale_channels(x, gate, shift: int, out: Fmt) -> torch.Tensor:
    """SE excitation: ``x`` (N,C,H,W) times per-(N,C) ``gate``, rounded by ``shift`` bits."""
    return shift_round(x * gate.double().view(*gate.shape, 1, 1), shift).clamp(out.lo, out.hi)


def channel_sum(x) -> torch.Tensor:
    """SE squeeze: the sum over H and W (the mean's 1/(H*W) is folded into a requantize)."""
    return x.double().sum((2, 3))


def shuffle(x, groups: int = 2) -> torch.Tensor:
    """Channel shuffle: output channel ``g*k + j`` is input channel ``j*C/g + k``."""
    n, c = x.shape[:2]
    return x.view(n, groups, c // groups, *x.shape[2:]).transpose(1, 2).reshape(x.shape)


def maxpool2(x) -> torch.Tensor:
    """2x2 max pool, stride 2 (the DW-SeesawFaceNet v2 mapping path)."""
    return F.max_pool2d(x, 2, 2)
