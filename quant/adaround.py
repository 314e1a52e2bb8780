"""Adaptive rounding of the weights (AdaRound), layer by layer on the calibration faces.

Round-to-nearest is the best rounding of each weight alone, not of a layer's output. AdaRound
chooses, per weight, ``floor(w / scale)`` or that plus one (so no weight moves more than one
step from round-to-nearest) to minimise the layer's output error. Each choice is relaxed to a
soft value ``h(V) = clip(1.2 * sigmoid(V) - 0.1, 0, 1)``, started at the fractional part of
``w / scale`` (the soft weight is then the float weight), and ``V`` is optimised with Adam on

    |conv(x_q, scale * (floor(w / scale) + h(V))) - conv(x, w)|**2 / |conv(x, w)|**2
        + lambda * mean(1 - |2 h(V) - 1|**beta)

where the regulariser, switched on after a fifth of the iterations with ``beta`` annealed from
20 to 2, drives every ``h`` to 0 or 1. ``x`` is the layer's float input and ``x_q`` its input
in the quantized network (every earlier layer already rounded adaptively, every tensor
fake-quantized to its calibrated format, which is what the golden model computes up to the
rounding of biases), so a layer's rounding also compensates part of the error that reaches it.
The target is the float layer's output. The data are a random sample of output positions of
the calibration faces (all faces for a linear layer). A layer keeps round-to-nearest when the
adaptive rounding does not lower its error on that sample.

The result is a 0/1 array per weight part, ``params[layer]["round_up"]``, which
:func:`quant.quantize.quantize_weights` applies; the integer program is unchanged. See
docs/NUMERICS.md for the measured effect and the cost.
"""
import time

import numpy as np
import torch

from .quantize import _last_use, float_op, quantize_weights

# Defaults (quantizer options record the iterations; the others are fixed).
ITERATIONS = 300
SAMPLES = 4096          # sampled output positions per layer (the pool)
BATCH = 1024            # positions per Adam step
LEARNING_RATE = 0.02
REG_WEIGHT = 0.01
WARMUP = 0.2
BETA = (20.0, 2.0)
_ZETA, _GAMMA = 1.1, -0.1


def fake_quant(t: torch.Tensor, fmt) -> torch.Tensor:
    """Quantize to ``fmt`` (round half up, saturate) and back to real values."""
    q = (torch.floor(t / fmt.lsb + 0.5) - fmt.offset).clamp(fmt.lo, fmt.hi)
    return (q + fmt.offset) * fmt.lsb


def _h(v):
    return torch.clamp(torch.sigmoid(v) * (_ZETA - _GAMMA) + _GAMMA, 0, 1)


def _patches(x, op, lo, hi, index):
    """Input patches of conv ``op`` (input channels ``lo:hi``) at sampled output positions
    ``index = (n, i, j)``: ``(S, C, k, k)``."""
    k, st, pad = op["kernel"], op["stride"], op["padding"]
    x = x[:, lo:hi]
    if pad:
        x = torch.nn.functional.pad(x, (pad,) * 4)
    n, i, j = index
    rows = (i * st)[:, None] + torch.arange(k)
    cols = (j * st)[:, None] + torch.arange(k)
    c = torch.arange(hi - lo)
    return x[n[:, None, None, None], c[None, :, None, None], rows[:, None, :, None],
             cols[:, None, None, :]]


def _apply(p, w, depthwise):
    """Layer output on patch rows: dense ``(S, D) @ (O, D).T``, depthwise per channel."""
    if depthwise:
        return (p * w).sum(-1)
    return p @ w.t()


def fit(pf, pq, w, bits, depthwise, iterations=ITERATIONS, seed=0):
    """Adaptive rounding of one weight matrix ``w`` (``(O, D)``, or ``(C, k*k)`` when
    ``depthwise``) for float inputs ``pf`` and quantized inputs ``pq`` (``(S, D)`` or
    ``(S, C, k*k)``). Returns ``(up, error_nearest, error_adaptive)``: ``up`` (0/1 like ``w``)
    and the relative output errors of round-to-nearest and of ``up`` on the whole sample;
    ``up`` is round-to-nearest's own choice when adaptive rounding is not better."""
    w64 = np.asarray(w, dtype=np.float64)
    q_near, scale = quantize_weights(w64, bits)
    base = np.floor(w64 / scale[:, None])
    near_up = (q_near - base).astype(np.float32)
    qmax = (1 << (bits - 1)) - 1
    wt = torch.from_numpy(w64).float()
    sc = torch.from_numpy(scale).float()[:, None]
    bt = torch.from_numpy(base).float()
    target = _apply(pf, wt, depthwise)
    power = float((target ** 2).mean()) or 1.0

    def err(up):
        wq = sc * torch.clamp(bt + up, -qmax, qmax)
        return float(((_apply(pq, wq, depthwise) - target) ** 2).mean()) / power

    e_near = err(torch.from_numpy(near_up))
    if iterations <= 0:
        return near_up, e_near, e_near
    rest = torch.from_numpy(w64 / scale[:, None] - base).float().clamp(0.01, 0.99)
    v = torch.log((rest - _GAMMA) / (_ZETA - rest)).requires_grad_(True)
    opt = torch.optim.Adam([v], lr=LEARNING_RATE)
    gen = torch.Generator().manual_seed(seed)
    s = pf.shape[0]
    for it in range(iterations):
        idx = torch.randint(0, s, (min(BATCH, s),), generator=gen) if s > BATCH else slice(None)
        h = _h(v)
        wq = sc * (bt + h)
        rec = ((_apply(pq[idx], wq, depthwise) - target[idx]) ** 2).mean() / power
        loss = rec
        warm = int(WARMUP * iterations)
        if it >= warm:
            frac = (it - warm) / max(1, iterations - warm)
            beta = BETA[1] + (BETA[0] - BETA[1]) * (1 - frac)
            loss = loss + REG_WEIGHT * (1 - (2 * h - 1).abs() ** beta).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        up = (_h(v) >= 0.5).float()
        # never past the clip: floor + 1 must stay a representable weight
        up = torch.where(bt + up > qmax, torch.zeros_like(up), up).numpy()
    e_ada = err(torch.from_numpy(up))
    if e_ada >= e_near:
        return near_up, e_near, e_near
    return up, e_near, e_ada


@torch.no_grad()
def _sample_index(shape, count, gen):
    n, _, h, w = shape
    total = n * h * w
    flat = torch.randperm(total, generator=gen)[:count] if total > count else torch.arange(total)
    return flat // (h * w), (flat // w) % h, flat % w


def adaround(ops, params, fmts, faces, weight_bits=8, iterations=ITERATIONS, samples=SAMPLES,
             seed=0, log=None):
    """``(params', report)``: ``params`` with ``round_up`` (one 0/1 array per weight part) on
    every conv and linear layer, fitted in program order on ``faces`` (the calibration faces)
    with the tensor formats ``fmts``; ``report`` lists per layer ``{layer, error_nearest,
    error_adaptive, changed, seconds}`` (relative output errors on the sample, the fraction of
    weights rounded differently from round-to-nearest)."""
    gen = torch.Generator().manual_seed(seed)
    env_f, env_q, new, report = {}, {}, dict(params), []
    last = _last_use(ops)
    for k, op in enumerate(ops):
        name, kind = op["name"], op["op"]
        prm = params.get(name, {})
        with torch.no_grad():
            xf = [env_f[t] for t in op["inputs"]]
            xq = [env_q[t] for t in op["inputs"]]
            yf = float_op(op, prm, xf, faces)
        if kind in ("conv", "linear"):
            t0 = time.perf_counter()
            ups, e0, e1, changed, total = [], 0.0, 0.0, 0, 0
            if kind == "conv":
                index = _sample_index(yf.shape, samples, gen)
            for pi, w in enumerate(prm["weights"]):
                with torch.no_grad():
                    if kind == "linear":
                        pf, pq, w2, dw = xf[0].flatten(1), xq[0].flatten(1), w, False
                    else:
                        lo, hi = op["parts"][pi]["in"]
                        pf, pq = (_patches(x[0], op, lo, hi, index) for x in (xf, xq))
                        dw = op["depthwise"]
                        pf, pq = (p.reshape(p.shape[0], p.shape[1], -1) if dw else
                                  p.reshape(p.shape[0], -1) for p in (pf, pq))
                        w2 = w.reshape(w.shape[0], -1)
                up, en, ea = fit(pf, pq, w2, weight_bits, dw, iterations, seed + k)
                near = quantize_weights(w, weight_bits)[0]
                ups.append(up.reshape(w.shape).astype(np.int8))
                changed += int((quantize_weights(w, weight_bits, ups[-1])[0] != near).sum())
                total += near.size
                e0, e1 = e0 + en * near.size, e1 + ea * near.size
            new[name] = dict(prm, round_up=ups)
            deq = [q * sc.reshape(-1, *([1] * (w.ndim - 1))) for w, up in
                   zip(prm["weights"], ups) for q, sc in [quantize_weights(w, weight_bits, up)]]
            with torch.no_grad():
                yq = float_op(op, dict(prm, weights=deq), xq)
            report.append({"layer": name, "error_nearest": e0 / total,
                           "error_adaptive": e1 / total, "changed": changed / total,
                           "seconds": time.perf_counter() - t0})
            if log:
                log(f"    {name:32} error {e0 / total:.3e} -> {e1 / total:.3e}, "
                    f"{changed / total:.1%} changed ({report[-1]['seconds']:.1f} s)")
        else:
            with torch.no_grad():
                yq = yf if kind == "input" else float_op(op, prm, xq)
        if kind not in ("input", "shuffle", "maxpool"):
            yq = fake_quant(yq, fmts[op["output"]])
        env_f[op["output"]], env_q[op["output"]] = yf, yq
        for t in op["inputs"]:
            if last[t] == k:
                del env_f[t], env_q[t]
    return new, report
