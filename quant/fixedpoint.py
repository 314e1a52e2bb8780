"""Fixed-point formats and the two integer primitives every layer is built from.

A format is ``Fmt(signed, n_word, n_frac, scale=1.0)``: the value of a raw integer ``q`` is
``(q + offset) * scale * 2**-n_frac``, and ``q`` lies in the ``n_word``-bit range. ``scale``
(1 <= scale < 2) is the mantissa of a scale that is not a power of two; ``offset`` (0 unless the
tensor feeds only an activation table) shifts the range. The integer arithmetic never sees
either (requantization multipliers, biases and activation tables absorb them), only the meaning
of the codes. The same triple is an
fxpmath dtype (``Fmt.fxp_dtype``), so reports and the artifact speak fxpmath's language.

Rounding rule (used by the golden model and the hardware alike): **round half up**, i.e.
``floor(x + 1/2)``, implemented as ``(v + (1 << (s - 1))) >> s`` with an arithmetic shift.
Saturation: clamp to the format's range. Both are explicit in every function below.
"""
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Fmt:
    signed: bool
    n_word: int
    n_frac: int
    scale: float = 1.0
    offset: int = 0

    def __post_init__(self):
        if not 1 <= self.n_word <= 48:
            raise ValueError(f"n_word must be 1..48, not {self.n_word!r}")
        if not (isinstance(self.scale, (int, float)) and 1.0 <= self.scale < 2.0):
            raise ValueError(f"scale must be in [1, 2), not {self.scale!r}")
        if isinstance(self.offset, bool) or not isinstance(self.offset, int) or \
                abs(self.offset) >= 1 << self.n_word:
            raise ValueError(f"offset must be an int below 2**n_word in magnitude, "
                             f"not {self.offset!r}")

    @property
    def lo(self) -> int:
        return -(1 << (self.n_word - 1)) if self.signed else 0

    @property
    def hi(self) -> int:
        return (1 << (self.n_word - 1)) - 1 if self.signed else (1 << self.n_word) - 1

    @property
    def lsb(self) -> float:
        return self.scale * 2.0 ** -self.n_frac

    @property
    def fxp_dtype(self) -> str:
        """fxpmath dtype string, e.g. ``fxp-s8/5``."""
        return f"fxp-{'s' if self.signed else 'u'}{self.n_word}/{self.n_frac}"

    def to_dict(self) -> dict:
        d = {"signed": self.signed, "n_word": self.n_word, "n_frac": self.n_frac,
             "fxp": self.fxp_dtype}
        if self.scale != 1.0:
            d["scale"] = float(self.scale)
        if self.offset:
            d["offset"] = int(self.offset)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "Fmt":
        return cls(bool(d["signed"]), int(d["n_word"]), int(d["n_frac"]),
                   float(d.get("scale", 1.0)), int(d.get("offset", 0)))

    def quantize(self, x) -> np.ndarray:
        """Float -> raw integers: round half up, saturate."""
        q = np.floor(np.asarray(x, dtype=np.float64) / self.lsb + 0.5) - self.offset
        return saturate(q.astype(np.int64), self)

    def value(self, q) -> np.ndarray:
        return (np.asarray(q, dtype=np.float64) + self.offset) * self.lsb

    def holds(self, q) -> bool:
        q = np.asarray(q)
        return bool(q.size == 0 or (q.min() >= self.lo and q.max() <= self.hi))


def saturate(q, fmt: Fmt):
    """Clamp raw integers to ``fmt``'s range (numpy arrays or torch tensors)."""
    if hasattr(q, "clamp"):
        return q.clamp(fmt.lo, fmt.hi)
    return np.clip(q, fmt.lo, fmt.hi)


def round_shift(v, s: int):
    """``floor(v / 2**s + 1/2)`` for integer ``v`` (round half up); ``s == 0`` is identity,
    ``s < 0`` shifts left exactly."""
    if s <= 0:
        return v * (1 << -s)
    return (v + (1 << (s - 1))) >> s
