"""Cross-layer equalisation (CLE) of the float program's exact pairs.

Scaling output channel ``c`` of a layer ``A`` by ``1/s_c`` and input channel ``c`` of the next
layer ``B`` by ``s_c`` leaves the network's function unchanged when everything between them is
*positively homogeneous per channel*: ``f(x / s) == f(x) / s`` for ``s > 0``. In the layer
program that holds for nothing (a direct link) and for ``prelu`` (the slope does not change),
not for swish (``swish(x / s) != swish(x) / s``), the sigmoid, ``add`` (both addends would need
the same scaling, which the residual stream cannot take), ``avgpool`` followed by a gate, or
``scale_channels`` (its input also feeds the SE pool). :func:`pairs` finds every pair that
qualifies; in SeesawFaceNet they are the SE ``fc1 -> prelu -> fc2`` of every block and the
GDConv ``conv_6_dw -> linear``. No depthwise/pointwise pair of a block qualifies: each depthwise
convolution is followed by swish.

The weights of ``A`` are quantized per output channel, so their ranges do not matter; what ``A``
and ``B`` share is the tensor between them, quantized per tensor, and ``B``'s weights, quantized
per *output* channel and therefore hurt by a few large input channels. :func:`equalize` balances
those two: with ``a_c`` the largest ``|value|`` of channel ``c`` of ``A``'s output on the
calibration faces and ``r_c`` the largest ``|weight|`` of ``B`` on input channel ``c``,
``s_c = sqrt(a_c / r_c)`` makes both ``sqrt(a_c * r_c)`` (normalised so that the geometric mean
of ``s`` is 1). See docs/NUMERICS.md.
"""
from collections import defaultdict

import numpy as np
import torch

# Ops that keep channels and satisfy f(x / s) == f(x) / s per channel for s > 0.
HOMOGENEOUS = ("prelu",)


def pairs(ops) -> list:
    """``[(producer op, [homogeneous link ops], consumer op)]``: every conv/linear whose output
    feeds, through homogeneous ops only and nothing else, exactly one dense conv or linear."""
    consumers = defaultdict(list)
    for op in ops:
        for t in op["inputs"]:
            consumers[t].append(op)
    found = []
    for op in ops:
        if op["op"] not in ("conv", "linear"):
            continue
        chain, t = [], op["output"]
        while len(consumers[t]) == 1:
            c = consumers[t][0]
            if c["op"] in HOMOGENEOUS:
                chain.append(c)
                t = c["output"]
                continue
            if c["op"] == "linear" or (c["op"] == "conv" and not c["depthwise"]):
                found.append((op, chain, c))
            break
    return found


def _rows(op, weights):
    """Output channel ``c`` of a conv/linear -> (part index, row in that part)."""
    return [(i, r) for i, w in enumerate(weights) for r in range(w.shape[0])]


def _input_columns(op, weights, channels, spatial):
    """Input channel ``c`` of a consumer -> list of (part index, column slice) in its weights
    (for a linear layer, the ``spatial`` flattened positions of that channel)."""
    cols = []
    for c in range(channels):
        if op["op"] == "linear":
            cols.append([(0, slice(c * spatial, (c + 1) * spatial))])
        else:
            cols.append([(i, slice(c - p["in"][0], c - p["in"][0] + 1))
                         for i, p in enumerate(op["parts"]) if p["in"][0] <= c < p["in"][1]])
    return cols


@torch.no_grad()
def equalize(ops, params, shapes, faces, batch=10):
    """``(params', report)``: the float parameters with every pair of :func:`pairs` equalised,
    and per pair ``{producer, consumer, links, channels, activation_range_ratio,
    weight_range_ratio}`` (largest over smallest per-channel range of the tensor between them
    and of the consumer's input weights, ``[before, after]``).
    ``shapes``: per-image tensor shapes; ``faces``: the calibration faces (uint8 NHWC)."""
    from .quantize import run_float
    found = pairs(ops)
    wanted = {a["output"] for a, _, _ in found}
    peak = {}

    def on_tensor(name, t):
        if name in wanted:
            m = t.abs().amax(dim=[d for d in range(t.dim()) if d != 1]).double().numpy()
            peak[name] = np.maximum(peak.get(name, 0), m)

    for i in range(0, len(faces), batch):
        run_float(ops, params, faces[i:i + batch], keep=False, on_tensor=on_tensor)
    new = dict(params)
    report = []
    for a, chain, b in found:
        pa = new[a["name"]]
        pb = new[b["name"]]
        wa = [w.copy() for w in pa["weights"]]
        wb = [w.copy() for w in pb["weights"]]
        shape = shapes[a["output"]]
        channels, spatial = shape[0], int(np.prod(shape[1:])) if len(shape) > 1 else 1
        cols = _input_columns(b, wb, channels, spatial)
        r = np.array([max(float(np.abs(wb[i][:, sl]).max()) for i, sl in cs) for cs in cols])
        act = peak[a["output"]]
        s = np.ones(channels)
        ok = (act > 0) & (r > 0)
        s[ok] = np.sqrt(act[ok] / r[ok])
        s[ok] /= np.exp(np.mean(np.log(s[ok])))
        for c, (i, row) in enumerate(_rows(a, wa)):
            wa[i][row] /= s[c]
        for c, cs in enumerate(cols):
            for i, sl in cs:
                wb[i][:, sl] *= s[c]
        new[a["name"]] = dict(pa, weights=wa, bias=pa["bias"] / s)
        new[b["name"]] = dict(pb, weights=wb)
        ratio = (lambda v: float(v[ok].max() / v[ok].min()) if ok.any() else 1.0)
        report.append({"producer": a["name"], "consumer": b["name"],
                       "links": [c["op"] for c in chain], "channels": int(channels),
                       "activation_range_ratio": [ratio(act), ratio(act / s)],
                       "weight_range_ratio": [ratio(r), ratio(r * s)]})
    return new, report
