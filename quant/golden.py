"""The integer golden model: an interpreter of the artifact's layer program.

    >>> from quant.artifact import load
    >>> from quant.golden import GoldenModel
    >>> gm = GoldenModel(load("build/quant/seesaw_shuffle"))
    >>> out = gm.run(faces_uint8_nhwc, keep=True)
    >>> out.embedding, out.fmt          # int64 (N, 512) raw embedding and its Fmt
    >>> out.tensors["conv_23.dw.pre"]   # every named intermediate, int64 NCHW / NC

Every op is computed with :mod:`quant.ops` and :mod:`quant.activation` only (plus
:func:`depthwise_conv`, an exact and faster equivalent of ``ops.conv`` for depthwise layers), so
the program, the arithmetic and this interpreter together are the bit-level specification the
hardware must equal. Values travel as integers held in float64 tensors; the accumulator bound
checked at load (:func:`accumulator_bits`) guarantees that they stay below 2**53.
"""
import time
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from . import activation as act
from . import ops
from .fixedpoint import Fmt

# Integers below 2**24 are exact in float32, and so is every sum of them that stays below it.
F32_EXACT_BITS = 24


def depthwise_conv(x, weight, stride, padding):
    """Depthwise convolution as a sum of ``kh*kw`` shifted products, zero padding.

    Works in any dtype. For integer operands in float64 whose products and partial sums stay
    below 2**53 every step is exact, so the result equals :func:`quant.ops.conv` with
    ``groups = C`` bit for bit (tested); it exists because PyTorch's float64 grouped
    convolution is about 20x slower."""
    n, c, h, w = x.shape
    kh, kw = weight.shape[-2:]
    if padding:
        x = F.pad(x, (padding,) * 4)
    ho = (h + 2 * padding - kh) // stride + 1
    wo = (w + 2 * padding - kw) // stride + 1
    wt = torch.as_tensor(weight, dtype=x.dtype).reshape(c, kh, kw)
    acc = None
    for i in range(kh):
        for j in range(kw):
            tap = x[:, :, i:i + stride * (ho - 1) + 1:stride, j:j + stride * (wo - 1) + 1:stride]
            term = tap * wt[:, i, j].view(1, c, 1, 1)
            acc = term if acc is None else acc + term
    return acc


def accumulator_bits(artifact, op) -> int:
    """Signed width that holds every accumulator value (and every partial sum) of a conv or
    linear layer: ``max_c(sum |w_c| * max|x| + |b_c|)`` over the input format's range."""
    fin = artifact.fmt(op["inputs"][0])
    peak = max(-fin.lo, fin.hi)
    keys = [p["weight"] for p in op["parts"]] if op["op"] == "conv" else [op["weight"]]
    bias = np.abs(artifact.arrays[op["bias"]].astype(np.int64))
    sums = np.concatenate([np.abs(artifact.arrays[k].astype(np.int64))
                           .reshape(artifact.arrays[k].shape[0], -1).sum(1) for k in keys])
    bound = int((sums * peak + bias).max())
    return max(2, bound.bit_length() + 1)


@dataclass
class GoldenResult:
    """``embedding``: int64 (N, D) raw codes in format ``fmt``; ``tensors``: every named tensor
    as int64 numpy (only with ``keep=True``); ``seconds``: wall time of the run."""
    embedding: np.ndarray
    fmt: Fmt
    tensors: dict
    seconds: float

    def embedding_value(self) -> np.ndarray:
        return self.fmt.value(self.embedding)


class GoldenModel:
    """Runs an :class:`quant.artifact.Artifact` (or the path of one) on uint8 faces."""

    def __init__(self, artifact):
        if not hasattr(artifact, "program"):
            from .artifact import load
            artifact = load(artifact)
        self.artifact = artifact
        self.program = artifact.program
        self._w = {k: torch.from_numpy(np.asarray(v, dtype=np.float64))
                   for k, v in artifact.arrays.items()}
        self._w32 = {k: v.float() for k, v in self._w.items() if ".weight" in k}
        self._specs = {op["name"]: act.ActivationSpec.from_dict(op["spec"])
                       for op in self.program if op["op"] == "activation"}
        self._tables = {n: (s.in_fmt.lo, torch.from_numpy(act.table(s).astype(np.float64)))
                        for n, s in self._specs.items()}
        self._rate = {}
        for op in self.program:
            if op["op"] in ("conv", "linear"):
                m = artifact.arrays[op["multiplier"]].astype(np.int64)
                s = artifact.arrays[op["shift"]].astype(np.int64)
                need = accumulator_bits(artifact, op)
                if op["acc_bits"] < need:
                    raise ValueError(f"layer {op['name']!r}: key 'acc_bits' {op['acc_bits']} is "
                                     f"narrower than the {need} bits the weights and formats "
                                     f"can reach")
                # |acc| < 2**(acc_bits-1) and M < 2**17: the product must stay below 2**53.
                if op["acc_bits"] - 1 + 17 > 53:
                    raise ValueError(f"layer {op['name']!r}: accumulator of {op['acc_bits']} "
                                     f"bits times a 17-bit multiplier exceeds 2**53")
                self._rate[op["name"]] = torch.from_numpy(m * np.exp2(-s.astype(np.float64)))
        self._last_use = {}
        for i, op in enumerate(self.program):
            for t in op["inputs"]:
                self._last_use[t] = i
        self.output = self.program[-1]["output"]

    def fmt(self, tensor) -> Fmt:
        return self.artifact.fmt(tensor)

    def _input(self, op, faces):
        faces = np.asarray(faces)
        shape = tuple(self.artifact.tensors[op["output"]]["shape"])   # (C, H, W)
        want = (shape[1], shape[2], shape[0])
        if faces.ndim == 3:
            faces = faces[None]
        if faces.dtype != np.uint8 or faces.ndim != 4 or faces.shape[1:] != want:
            raise ValueError(f"faces must be uint8 (N, {want[0]}, {want[1]}, {want[2]}) NHWC, "
                             f"not {faces.dtype} {faces.shape}")
        x = torch.from_numpy(faces).permute(0, 3, 1, 2).double()
        return x * float(op["scale"]) + float(op["offset"])

    def _conv(self, op, x, out: Fmt):
        # float32 is exact here when every product and partial sum is an integer below 2**24:
        # the quantizer's accumulator bound acc_bits <= 24 guarantees it. Dense 3x3 stride-1
        # convolutions (none in the zoo) might be computed by Winograd, which is not exact, so
        # they always take the float64 path of ops.conv.
        fast = op["acc_bits"] <= F32_EXACT_BITS and (
            op["depthwise"] or op["kernel"] == 1 or op["stride"] > 1)
        accs = []
        for part in op["parts"]:
            xi = x[:, part["in"][0]:part["in"][1]]
            groups = xi.shape[1] if op["depthwise"] else 1
            if fast:
                accs.append(F.conv2d(xi.float(), self._w32[part["weight"]], None, op["stride"],
                                     op["padding"], 1, groups).double())
            elif op["depthwise"]:
                accs.append(depthwise_conv(xi, self._w[part["weight"]], op["stride"],
                                           op["padding"]))
            else:
                accs.append(ops.conv(xi, self._w[part["weight"]], None, op["stride"],
                                     op["padding"]))
        acc = accs[0] if len(accs) == 1 else torch.cat(accs, 1)
        acc += self._w[op["bias"]].view(1, -1, 1, 1)
        return self._requantize(op, acc, out)

    def _requantize(self, op, acc, out: Fmt):
        """Same result as ``ops.requantize(acc, M, s, out)`` (tested), in place: ``M * 2**-s``
        is exact in float64 and so is ``acc * M * 2**-s`` while ``|acc * M| < 2**53``, which
        the accumulator bound checked at load time guarantees; the ``+ 1/2`` then floor is the
        round-half-up of ops.requantize."""
        rate = self._rate[op["name"]]
        return acc.mul_(rate.view(1, -1, *([1] * (acc.ndim - 2)))).add_(0.5).floor_() \
            .clamp_(out.lo, out.hi)

    def _step(self, op, env, faces):
        kind, name = op["op"], op["name"]
        xs = [env[t] for t in op["inputs"]]
        out = self.fmt(op["output"])
        if kind == "input":
            return self._input(op, faces)
        if kind == "conv":
            return self._conv(op, xs[0], out)
        if kind == "linear":
            acc = ops.linear(xs[0].flatten(1), self._w[op["weight"]], self._w[op["bias"]])
            return self._requantize(op, acc, out)
        if kind == "activation":
            # act.table is what act.apply indexes; the requantize before every activation has
            # saturated its input to in_fmt, so the range checks of act.apply are redundant.
            lo, table = self._tables[name]
            return table[xs[0].sub(lo).long()]
        if kind == "shuffle":
            return ops.shuffle(xs[0], op["groups"])
        if kind == "avgpool":
            return ops.requantize(ops.channel_sum(xs[0]), op["multiplier"], op["shift"], out)
        if kind == "prelu":
            # Saturation only matters for |slope| > 1; it keeps the word width honest then.
            return ops.prelu(xs[0], self._w[op["slope"]], op["slope_frac"]).clamp(out.lo, out.hi)
        if kind == "scale_channels":
            # ops.scale_channels computed in place: dividing by 2**s is exact, so
            # floor(v * 2**-s + 1/2) is its round half up (tested against it).
            y = xs[0] * xs[1].view(*xs[1].shape, 1, 1)
            if op["shift"] > 0:
                y.mul_(2.0 ** -op["shift"]).add_(0.5).floor_()
            else:
                y.mul_(float(1 << -op["shift"]))
            return y.clamp_(out.lo, out.hi)
        if kind == "add":
            fa, fb = (self.fmt(t).n_frac for t in op["inputs"])
            return ops.add(xs[0], fa, xs[1], fb, out)
        if kind == "maxpool":
            if (op["kernel"], op["stride"]) != (2, 2):
                raise ValueError(f"layer {name!r}: only 2x2 stride-2 max pooling is specified, "
                                 f"not kernel {op['kernel']} stride {op['stride']}")
            return ops.maxpool2(xs[0])
        raise ValueError(f"layer {name!r}: unknown op {kind!r}")

    @torch.no_grad()
    def run(self, faces_uint8_nhwc, keep=False, stop_after=None) -> GoldenResult:
        """Run the program on uint8 NHWC faces. ``keep``: also return every named tensor.
        ``stop_after``: a tensor name; return as soon as it is computed (its raw codes are then
        in ``tensors``, ``embedding`` is None)."""
        t0 = time.perf_counter()
        env, kept = {}, {}
        for i, op in enumerate(self.program):
            y = self._step(op, env, faces_uint8_nhwc)
            env[op["output"]] = y
            if keep or op["output"] == stop_after:
                kept[op["output"]] = y.to(torch.int64).numpy()
            if op["output"] == stop_after:
                return GoldenResult(None, self.fmt(stop_after), kept, time.perf_counter() - t0)
            for t in op["inputs"]:
                if self._last_use[t] == i:
                    del env[t]
        emb = env[self.output].to(torch.int64).numpy()
        return GoldenResult(emb, self.fmt(self.output), kept, time.perf_counter() - t0)

    def embed(self, faces, batch=32, normalize=True) -> np.ndarray:
        """Float embeddings (L2-normalised unless ``normalize=False``), batched."""
        outs = []
        for i in range(0, len(faces), batch):
            outs.append(self.run(faces[i:i + batch]).embedding_value())
        e = np.concatenate(outs)
        if normalize:
            e = e / np.maximum(np.linalg.norm(e, axis=1, keepdims=True), 1e-30)
        return e

    def frames_per_second(self, faces, batch=32, repeats=1) -> float:
        """Measured throughput on ``faces`` (best of ``repeats``)."""
        best = None
        for _ in range(repeats):
            t0 = time.perf_counter()
            for i in range(0, len(faces), batch):
                self.run(faces[i:i + batch])
            dt = time.perf_counter() - t0
            best = dt if best is None else min(best, dt)
        return len(faces) / best
