"""Integer swish (``x * sigmoid(x)``) and sigmoid: the bit-exact specification of the activation
unit, in two forms selectable per build.

``lut``
    One table entry per input code: the float function of the input value, rounded half up and
    saturated to the output format. This is the best any implementation can do (error at most
    0.5 output LSB wherever the value is inside the output range).

``cordic``
    The integer datapath that :class:`hw.engine.activation.ActivationCORDIC` runs, replayed step by
    step. With ``W = cordic_width`` and ``F = W - 3`` internal fraction bits (sign, two integer
    bits), ``N = cordic_iterations`` and ``Fs = N`` quotient fraction bits:

    1. *Magnitude*: ``a = |q|`` (``in_fmt.n_word`` bits unsigned), ``neg = q < 0``.
    2. *Argument reduction* ``e^-a = 2^-k * e^-r``: ``k = (a * INV_LN2) >> (16 + f_in)`` with
       the 17-bit constant ``INV_LN2 = round(2^16 / ln 2)`` (one 18x18 multiply);
       ``r = a * 2^(F - f_in) - LN2K[k]`` with ``LN2K[k] = k * round(ln 2 * 2^F)`` (a small
       table, exact). ``k`` may be one too large or small next to a multiple of ln 2; ``r`` then
       lies a hair outside ``[0, ln 2)``, far inside the CORDIC's range of 1.1182. When
       ``k >= F + 2`` the result ``e^-a`` rounds to zero at ``F`` bits whatever ``r`` is: the
       flag ``sat`` forces ``E = 0`` (and ``r = 0``, which keeps every register in range).
    3. *Hyperbolic rotation* (``W``-bit signed ``x, y, z``): ``x0 = round(2^F / A)`` with ``A``
       the gain of the actual shift sequence (``1/A = 1.20750`` for N = 16), ``y0 = 0``,
       ``z0 = r``; shifts ``1, 2, 3, 4, 4, 5, ..., 13, 13, ..., N`` (4, 13, 40 repeated);
       ``d = +1 if z >= 0 else -1``; ``x += d*(y >> s)``, ``y += d*(x >> s)`` (both from the old
       values, arithmetic shift = floor), ``z -= d*ATANH[s]`` with
       ``ATANH[s] = round(atanh(2^-s) * 2^F)``. Result ``x = cosh r``, ``y = sinh r``.
    4. ``e^-r = cosh - sinh``; ``E = round_half_up(e^-r / 2^k) = (((e << 1) >> k) + 1) >> 1``.
    5. *Sigmoid symmetry* without a subtraction: ``num = E if neg else 2^F``,
       ``den = 2^F + E`` (so ``num/den = sigmoid(x)`` for either sign).
    6. *Linear vectoring division* ``z = num/den`` in ``Fs + 1`` steps ``i = 0..Fs``:
       ``d = +1 if Y >= 0 else -1``; ``Y = 2 * (Y - d*den)``; ``Z += d * 2^(Fs - i)``. This is
       the linear-vectoring recurrence ``y -= d * x * 2^-i`` with ``y`` kept scaled by ``2^i``
       (``Y = y * 2^i``), so no bit of ``den`` is ever shifted out: the residual is exact and
       ``F + 4`` bits wide, ``Z`` is ``Fs + 2`` bits. A final correction
       ``S = Z - (Y < 0)`` turns the non-restoring digits into the truncated quotient:
       ``S = floor(sigmoid * 2^Fs)`` or one less.
    7. *Output*: sigmoid ``round_half_up(S / 2^(Fs - f_out))``; swish
       ``round_half_up(q * S / 2^(f_in + Fs - f_out))`` (one multiply), both saturated.

    :func:`cordic_trace` returns every intermediate and checks each against its stated width,
    so the hardware can use exactly those widths without wrap-around.

Raw codes travel in ``torch.float64`` tensors as elsewhere in the golden model. Inputs are at
most 16 bits, so :func:`apply` indexes a per-spec table (built once, cached), which makes both
forms as fast as a gather.

``python -m quant.activation`` prints the error table and writes ``build/activation_error.json``.
"""
import argparse
import functools
import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from .fixedpoint import Fmt, round_shift, saturate

FUNCTIONS = ("swish", "sigmoid")
FORMS = ("lut", "cordic")

# k = floor(|x| / ln 2) is computed as (a * INV_LN2) >> (INV_LN2_FRAC + f_in); 17 bits, so the
# product with a 16-bit magnitude is one ECP5 MULT18X18D.
INV_LN2_FRAC = 16
INV_LN2 = round(2 ** INV_LN2_FRAC / math.log(2))
# Iterations whose angle must be repeated for the hyperbolic CORDIC to converge (k' = 3k + 1).
REPEATED_SHIFTS = (4, 13, 40)

_SPEC_KEYS = ("function", "form", "in_fmt", "out_fmt", "cordic_iterations", "cordic_width")
_FMT_KEYS = ("signed", "n_word", "n_frac")   # + optional "scale" (default 1), "offset" (0)


@dataclass(frozen=True)
class ActivationSpec:
    """What one activation unit computes and how.

    Parameters
    ----------
    function : str
        ``"swish"`` or ``"sigmoid"``.
    form : str
        ``"lut"`` (a table of every input code) or ``"cordic"`` (hyperbolic CORDIC + linear
        vectoring division; see the module docstring for the exact integer steps).
    in_fmt, out_fmt : Fmt
        Formats of the raw input and output codes. The input is at most 16 bits.
    cordic_iterations : int
        ``N``: distinct shifts ``1..N`` of the hyperbolic CORDIC (4, 13 and 40 are run twice,
        so ``N = 16`` is 18 micro-rotations); also the number of quotient fraction bits of the
        division (``N + 1`` steps). Ignored by the LUT form. ``4 <= N <= cordic_width - 3``.
    cordic_width : int
        ``W``: word width of the hyperbolic datapath (``F = W - 3`` fraction bits). 12..40.

    Raises
    ------
    ValueError
        Naming the field and the value, when any field is out of range.
    """
    function: str
    form: str
    in_fmt: Fmt
    out_fmt: Fmt
    cordic_iterations: int = 16
    cordic_width: int = 24

    def __post_init__(self):
        if self.function not in FUNCTIONS:
            raise ValueError(f"ActivationSpec.function must be one of {FUNCTIONS}, "
                             f"not {self.function!r}")
        if self.form not in FORMS:
            raise ValueError(f"ActivationSpec.form must be one of {FORMS}, not {self.form!r}")
        for field in ("in_fmt", "out_fmt"):
            if not isinstance(getattr(self, field), Fmt):
                raise ValueError(f"ActivationSpec.{field} must be a Fmt, "
                                 f"not {getattr(self, field)!r}")
        if not 2 <= self.in_fmt.n_word <= 16:
            raise ValueError(f"ActivationSpec.in_fmt.n_word must be 2..16 (one table entry or "
                             f"one CORDIC result per code), not {self.in_fmt.n_word!r}")
        if not 0 <= self.in_fmt.n_frac <= 24:
            raise ValueError(f"ActivationSpec.in_fmt.n_frac must be 0..24, "
                             f"not {self.in_fmt.n_frac!r}")
        if not 2 <= self.out_fmt.n_word <= 32:
            raise ValueError(f"ActivationSpec.out_fmt.n_word must be 2..32, "
                             f"not {self.out_fmt.n_word!r}")
        if not -8 <= self.out_fmt.n_frac <= 31:
            raise ValueError(f"ActivationSpec.out_fmt.n_frac must be -8..31, "
                             f"not {self.out_fmt.n_frac!r}")
        for field in ("cordic_iterations", "cordic_width"):
            v = getattr(self, field)
            if not isinstance(v, int) or isinstance(v, bool):
                raise ValueError(f"ActivationSpec.{field} must be an int, not {v!r}")
        if not 12 <= self.cordic_width <= 40:
            raise ValueError(f"ActivationSpec.cordic_width must be 12..40, "
                             f"not {self.cordic_width!r}")
        if not 4 <= self.cordic_iterations <= self.frac_bits:
            raise ValueError(f"ActivationSpec.cordic_iterations must be 4..{self.frac_bits} "
                             f"(cordic_width - 3) for cordic_width={self.cordic_width}, "
                             f"not {self.cordic_iterations!r}")
        if self.out_fmt.offset:
            raise ValueError(f"ActivationSpec.out_fmt.offset must be 0, not "
                             f"{self.out_fmt.offset!r}")
        if self.form == "cordic" and self.in_fmt.offset:
            raise ValueError(f"ActivationSpec: the CORDIC form needs in_fmt.offset 0, not "
                             f"{self.in_fmt.offset!r}")
        if self.form == "cordic" and (self.in_fmt.scale != 1.0 or self.out_fmt.scale != 1.0):
            raise ValueError(f"ActivationSpec: the CORDIC form needs power-of-two formats "
                             f"(scale 1), not in_fmt.scale={self.in_fmt.scale!r}, "
                             f"out_fmt.scale={self.out_fmt.scale!r}")
        if self.form == "cordic" and self.in_fmt.n_frac > self.frac_bits:
            raise ValueError(f"ActivationSpec.in_fmt.n_frac={self.in_fmt.n_frac} exceeds the "
                             f"CORDIC's {self.frac_bits} fraction bits; raise cordic_width")

    # -- derived CORDIC parameters -------------------------------------------------------------
    @property
    def frac_bits(self) -> int:
        """``F``: fraction bits of the hyperbolic datapath and of ``E``, ``num``, ``den``."""
        return self.cordic_width - 3

    @property
    def quotient_frac(self) -> int:
        """``Fs``: fraction bits of the sigmoid quotient ``S``."""
        return self.cordic_iterations

    @property
    def shifts(self) -> tuple:
        """Shift amounts of the hyperbolic micro-rotations, repeats included."""
        seq = []
        for i in range(1, self.cordic_iterations + 1):
            seq.append(i)
            if i in REPEATED_SHIFTS:
                seq.append(i)
        return tuple(seq)

    @property
    def k_sat(self) -> int:
        """Reduction index from which ``e^-|x|`` rounds to zero at ``F`` bits."""
        return self.frac_bits + 2

    @property
    def name(self) -> str:
        s = f"{self.function}_{self.form}_{_fmt_tag(self.in_fmt)}_{_fmt_tag(self.out_fmt)}"
        if self.form == "cordic":
            s += f"_n{self.cordic_iterations}w{self.cordic_width}"
        return s

    def to_dict(self) -> dict:
        return {"function": self.function, "form": self.form,
                "in_fmt": self.in_fmt.to_dict(), "out_fmt": self.out_fmt.to_dict(),
                "cordic_iterations": self.cordic_iterations, "cordic_width": self.cordic_width}

    @classmethod
    def from_dict(cls, d) -> "ActivationSpec":
        """Inverse of :meth:`to_dict`; every error names the offending field."""
        if not isinstance(d, dict):
            raise ValueError(f"ActivationSpec.from_dict needs a dict, not {type(d).__name__}")
        unknown = sorted(set(d) - set(_SPEC_KEYS))
        if unknown:
            raise ValueError(f"ActivationSpec: unknown field(s) {unknown}; "
                             f"expected {list(_SPEC_KEYS)}")
        for key in ("function", "form", "in_fmt", "out_fmt"):
            if key not in d:
                raise ValueError(f"ActivationSpec: missing field {key!r}")
        kw = {"function": d["function"], "form": d["form"],
              "in_fmt": _fmt_from_dict(d["in_fmt"], "in_fmt"),
              "out_fmt": _fmt_from_dict(d["out_fmt"], "out_fmt")}
        for key in ("cordic_iterations", "cordic_width"):
            if key in d:
                v = d[key]
                if isinstance(v, bool) or not isinstance(v, (int, np.integer)):
                    raise ValueError(f"ActivationSpec.{key} must be an int, not {v!r}")
                kw[key] = int(v)
        return cls(**kw)


def _fmt_tag(f: Fmt) -> str:
    tag = f"{'s' if f.signed else 'u'}{f.n_word}f{f.n_frac}".replace("-", "m")
    tag = tag if f.scale == 1.0 else f"{tag}x{f.scale:.6f}"
    return tag if not f.offset else f"{tag}o{f.offset}".replace("-", "m")


def _fmt_from_dict(d, field: str) -> Fmt:
    if not isinstance(d, dict):
        raise ValueError(f"ActivationSpec.{field} must be a dict with {list(_FMT_KEYS)}, "
                         f"not {d!r}")
    for key in _FMT_KEYS:
        if key not in d:
            raise ValueError(f"ActivationSpec.{field}: missing field {key!r}")
    if not isinstance(d["signed"], (bool, np.bool_)):
        raise ValueError(f"ActivationSpec.{field}.signed must be a bool, not {d['signed']!r}")
    for key in ("n_word", "n_frac"):
        if isinstance(d[key], bool) or not isinstance(d[key], (int, np.integer)):
            raise ValueError(f"ActivationSpec.{field}.{key} must be an int, not {d[key]!r}")
    try:
        fmt = Fmt(bool(d["signed"]), int(d["n_word"]), int(d["n_frac"]),
                  float(d.get("scale", 1.0)), int(d.get("offset", 0)))
    except (TypeError, ValueError) as e:
        raise ValueError(f"ActivationSpec.{field}: {e}") from None
    if "fxp" in d and d["fxp"] != fmt.fxp_dtype:
        raise ValueError(f"ActivationSpec.{field}.fxp {d['fxp']!r} disagrees with "
                         f"signed/n_word/n_frac ({fmt.fxp_dtype!r})")
    return fmt


# -- float reference ---------------------------------------------------------------------------
def float_function(function: str, x) -> np.ndarray:
    """The real function in float64 (a numerically stable sigmoid)."""
    x = np.asarray(x, dtype=np.float64)
    e = np.exp(-np.abs(x))
    sig = np.where(x >= 0, 1.0 / (1.0 + e), e / (1.0 + e))
    if function == "sigmoid":
        return sig
    if function == "swish":
        return x * sig
    raise ValueError(f"function must be one of {FUNCTIONS}, not {function!r}")


def input_codes(spec: ActivationSpec) -> np.ndarray:
    return np.arange(spec.in_fmt.lo, spec.in_fmt.hi + 1, dtype=np.int64)


# -- CORDIC constants and replay ---------------------------------------------------------------
@dataclass(frozen=True)
class CordicConstants:
    """Every integer constant of the CORDIC datapath, derived from the spec."""
    x0: int            # round(2^F / A), the gain-compensated start value
    gain_inv: float    # 1/A for the shift sequence
    atanh: dict        # shift -> round(atanh(2^-s) * 2^F)
    ln2: int           # round(ln 2 * 2^F)
    ln2k: tuple        # k * ln2 for k = 0 .. k_sat - 1
    inv_ln2: int       # round(2^16 / ln 2)


def cordic_constants(spec: ActivationSpec) -> CordicConstants:
    F = spec.frac_bits
    gain = 1.0
    for s in spec.shifts:
        gain *= math.sqrt(1.0 - 2.0 ** (-2 * s))
    ln2 = round(math.log(2) * 2 ** F)
    return CordicConstants(
        x0=round(2 ** F / gain), gain_inv=1.0 / gain,
        atanh={s: round(math.atanh(2.0 ** -s) * 2 ** F) for s in sorted(set(spec.shifts))},
        ln2=ln2, ln2k=tuple(k * ln2 for k in range(spec.k_sat)), inv_ln2=INV_LN2)


def cordic_widths(spec: ActivationSpec) -> dict:
    """Signed bit widths of the CORDIC registers (what the hardware instantiates)."""
    F = spec.frac_bits
    return {"r": spec.cordic_width, "x": spec.cordic_width, "y": spec.cordic_width,
            "z": spec.cordic_width, "e": spec.cordic_width,
            "den": F + 3, "Y": F + 4, "Z": spec.quotient_frac + 2,
            "S": spec.quotient_frac + 2}


def _check_width(v: np.ndarray, bits: int, what: str, spec: ActivationSpec):
    lo, hi = -(1 << (bits - 1)), (1 << (bits - 1)) - 1
    if v.size and (v.min() < lo or v.max() > hi):
        raise OverflowError(f"{spec.name}: CORDIC register {what} reaches "
                            f"[{v.min()}, {v.max()}], outside its {bits}-bit signed range")


def cordic_trace(spec: ActivationSpec, codes) -> dict:
    """Replay the hardware's integer CORDIC on raw input ``codes`` (any int array).

    Returns every intermediate (``a, neg, k, sat, r, cosh, sinh, e, E, num, den, Y, Z, S, out``)
    as int64 arrays, after checking each against its width in :func:`cordic_widths`.
    """
    c = cordic_constants(spec)
    w = cordic_widths(spec)
    F, Fs, f_in = spec.frac_bits, spec.quotient_frac, spec.in_fmt.n_frac
    q = np.asarray(codes, dtype=np.int64)
    neg = q < 0
    a = np.abs(q)
    k_raw = (a * c.inv_ln2) >> (INV_LN2_FRAC + f_in)
    sat = k_raw >= spec.k_sat
    k = np.where(sat, 0, k_raw)
    ln2k = np.asarray(c.ln2k, dtype=np.int64)
    r = np.where(sat, 0, (a << (F - f_in)) - ln2k[k])
    _check_width(r, w["r"], "r", spec)

    x = np.full_like(q, c.x0)
    y = np.zeros_like(q)
    z = r.copy()
    for s in spec.shifts:
        d = np.where(z >= 0, 1, -1)
        x, y, z = x + d * (y >> s), y + d * (x >> s), z - d * c.atanh[s]
        _check_width(x, w["x"], f"x after shift {s}", spec)
        _check_width(y, w["y"], f"y after shift {s}", spec)
        _check_width(z, w["z"], f"z after shift {s}", spec)
    e = x - y
    _check_width(e, w["e"], "cosh - sinh", spec)
    if e.size and e.min() < 0:
        raise OverflowError(f"{spec.name}: cosh - sinh went negative ({e.min()})")
    # round half up of e / 2^k, written the way the hardware shifts: ((2e >> k) + 1) >> 1
    E = np.where(sat, 0, (((e << 1) >> k) + 1) >> 1)
    one = 1 << F
    num = np.where(neg, E, one)
    den = one + E
    _check_width(den, w["den"], "den", spec)

    Y = num.copy()
    Z = np.zeros_like(q)
    for i in range(Fs + 1):
        d = np.where(Y >= 0, 1, -1)
        Y = 2 * (Y - d * den)
        Z = Z + d * (1 << (Fs - i))
        _check_width(Y, w["Y"], f"Y after division step {i}", spec)
        _check_width(Z, w["Z"], f"Z after division step {i}", spec)
    S = Z - (Y < 0)
    if S.size and (S.min() < 0 or S.max() > 1 << Fs):
        raise OverflowError(f"{spec.name}: quotient S reaches [{S.min()}, {S.max()}], "
                            f"outside [0, 2^{Fs}]")
    out_frac = spec.out_fmt.n_frac
    if spec.function == "sigmoid":
        out = round_shift(S, Fs - out_frac)
    else:
        out = round_shift(q * S, f_in + Fs - out_frac)
    out = saturate(out, spec.out_fmt)
    return {"q": q, "a": a, "neg": neg, "k": k, "sat": sat, "r": r, "cosh": x, "sinh": y,
            "e": e, "E": E, "num": num, "den": den, "Y": Y, "Z": Z, "S": S,
            "out": out.astype(np.int64)}


# -- public golden API -------------------------------------------------------------------------
@functools.lru_cache(maxsize=64)
def _table_cached(spec: ActivationSpec) -> np.ndarray:
    codes = input_codes(spec)
    if spec.form == "lut":
        t = spec.out_fmt.quantize(float_function(spec.function, spec.in_fmt.value(codes)))
    else:
        t = cordic_trace(spec, codes)["out"]
    t = np.asarray(t, dtype=np.int64)
    t.setflags(write=False)
    return t


def table(spec: ActivationSpec) -> np.ndarray:
    """Output code (int64) for every input code ``lo..hi``; index = ``code - in_fmt.lo``."""
    return _table_cached(spec)


@functools.lru_cache(maxsize=64)
def _torch_table(spec: ActivationSpec) -> torch.Tensor:
    return torch.from_numpy(table(spec).astype(np.float64))


def apply(spec: ActivationSpec, x: torch.Tensor) -> torch.Tensor:
    """Raw input codes (integers held in a float64 tensor, any shape) -> raw output codes.

    Raises
    ------
    ValueError
        If a value is not an integer or lies outside ``spec.in_fmt``.
    """
    x = torch.as_tensor(x)
    if x.numel() == 0:
        return x.to(torch.float64).clone()
    xd = x.to(torch.float64)
    lo, hi = spec.in_fmt.lo, spec.in_fmt.hi
    xmin, xmax = (v.item() for v in torch.aminmax(xd))
    if xmin < lo or xmax > hi:
        bad = xmin if xmin < lo else xmax
        raise ValueError(f"activation {spec.name}: input code {bad:g} outside in_fmt "
                         f"{spec.in_fmt.fxp_dtype} range [{lo}, {hi}]")
    if torch.any(xd.frac() != 0):
        raise ValueError(f"activation {spec.name}: input holds non-integer raw codes")
    idx = (xd - lo).to(torch.int64).reshape(-1)
    return _torch_table(spec).index_select(0, idx).view(xd.shape)


def error_report(spec: ActivationSpec) -> dict:
    """Error of ``table(spec)`` against the float function over every input code.

    ``*_lsb`` figures are in output LSBs, the others in real units. A code counts as
    *saturated* when its exactly rounded float value lies outside ``out_fmt`` (no form can be
    within 0.5 LSB there); ``max_err_lsb_unsaturated`` leaves those codes out. For the CORDIC
    form the report also gives the error of the internal quotient ``S`` (before output rounding)
    and how many codes differ from the LUT.
    """
    codes = input_codes(spec)
    xv = spec.in_fmt.value(codes)
    ref = float_function(spec.function, xv)
    got = spec.out_fmt.value(table(spec))
    err = np.abs(got - ref)
    lsb = spec.out_fmt.lsb
    exact = np.floor(ref / lsb + 0.5)
    sat = (exact < spec.out_fmt.lo) | (exact > spec.out_fmt.hi)
    worst = int(np.argmax(err))
    rep = {
        "spec": spec.to_dict(), "name": spec.name, "codes": int(codes.size),
        "saturated_codes": int(sat.sum()),
        "max_err": float(err.max()), "mean_err": float(err.mean()),
        "max_err_lsb": float(err.max() / lsb), "mean_err_lsb": float(err.mean() / lsb),
        "max_err_lsb_unsaturated": float(err[~sat].max() / lsb) if (~sat).any() else 0.0,
        "worst_code": int(codes[worst]),
    }
    if spec.form == "cordic":
        tr = cordic_trace(spec, codes)
        sig = float_function("sigmoid", xv)
        s_err = np.abs(tr["S"] * 2.0 ** -spec.quotient_frac - sig)
        lut = table(ActivationSpec(spec.function, "lut", spec.in_fmt, spec.out_fmt))
        rep.update({
            "sigmoid_quotient_max_err": float(s_err.max()),
            "sigmoid_quotient_max_err_lsb": float(s_err.max() / lsb) if spec.function ==
            "sigmoid" else float((s_err * np.abs(xv)).max() / lsb),
            "codes_differing_from_lut": int((tr["out"] != lut).sum()),
            "gain_inv": cordic_constants(spec).gain_inv,
            "micro_rotations": len(spec.shifts),
            "division_steps": spec.quotient_frac + 1,
        })
    return rep


def default_specs(cordic_iterations=16, cordic_width=24) -> list:
    """The CLI's defaults: swish and sigmoid, s8 input with 4 and 5 fraction bits, s8 output
    (swish keeps the input's fraction bits, sigmoid uses 7), both forms."""
    specs = []
    for function in FUNCTIONS:
        for f_in in (4, 5):
            out = Fmt(True, 8, f_in if function == "swish" else 7)
            for form in FORMS:
                specs.append(ActivationSpec(function, form, Fmt(True, 8, f_in), out,
                                            cordic_iterations, cordic_width))
    return specs


def main(argv=None):
    p = argparse.ArgumentParser(prog="python -m quant.activation",
                                description="Error of the integer swish/sigmoid vs float.")
    p.add_argument("--iterations", type=int, default=16, help="cordic_iterations (N)")
    p.add_argument("--width", type=int, default=24, help="cordic_width (W)")
    p.add_argument("--json", default="build/activation_error.json", help="report file")
    args = p.parse_args(argv)
    reports = [error_report(s) for s in default_specs(args.iterations, args.width)]
    head = (f"{'function':8} {'form':6} {'in':7} {'out':7} {'max LSB':>8} {'max LSB':>8} "
            f"{'mean LSB':>9} {'max real':>10} {'sat':>4} {'!=LUT':>6}")
    print(head)
    print(f"{'':31} {'(all)':>8} {'(unsat)':>8}")
    for r in reports:
        s = r["spec"]
        print(f"{s['function']:8} {s['form']:6} {s['in_fmt']['fxp'][4:]:7} "
              f"{s['out_fmt']['fxp'][4:]:7} {r['max_err_lsb']:8.3f} "
              f"{r['max_err_lsb_unsaturated']:8.3f} {r['mean_err_lsb']:9.4f} "
              f"{r['max_err']:10.3g} {r['saturated_codes']:4d} "
              f"{r.get('codes_differing_from_lut', 0):6d}")
    out = Path(args.json)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(reports, indent=2))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
