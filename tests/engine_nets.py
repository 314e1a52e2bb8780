"""Small hand-built integer artifacts for the engine's per-op tests.

:class:`TinyNet` appends ops to a layer program and computes each one with the golden model's
own arithmetic as it goes, so that every requantization multiplier and shift is chosen from
the real accumulator range (outputs spread over the format, a little saturation).
"""
import numpy as np
import torch

from quant import activation as act
from quant import ops
from quant.artifact import Artifact
from quant.fixedpoint import Fmt
from quant.golden import GoldenModel

S8 = lambda f: Fmt(True, 8, f)       # noqa: E731


class TinyNet:
    def __init__(self, H=8, W=8, seed=0, batch=2, act_form="lut"):
        self.act_form = act_form
        self.rng = np.random.default_rng(seed)
        self.faces = self.rng.integers(0, 256, (batch, H, W, 3), dtype=np.uint8)
        self.program, self.tensors, self.arrays, self.fmts = [], {}, {}, {}
        self.env = {}
        x = torch.from_numpy(self.faces).permute(0, 3, 1, 2).double() * 2 - 255
        self._put("input", {"name": "input", "op": "input", "inputs": [], "output": "input",
                            "scale": 2, "offset": -255}, x, Fmt(True, 9, 8), "input")

    def _put(self, name, op, value, fmt, role="act"):
        self.program.append(op)
        self.tensors[op["output"]] = {"shape": list(value.shape[1:]), "fmt": fmt, "role": role}
        self.env[op["output"]] = value
        return op["output"]

    def _arr(self, key, a, fmt=Fmt(True, 40, 0)):
        self.arrays[key] = np.asarray(a)
        self.fmts[key] = fmt
        return key

    def _rescale(self, name, acc, out, per_channel=True):
        c = acc.shape[1]
        peak = acc.abs().amax(dim=[d for d in range(acc.ndim) if d != 1]).numpy() + 1
        target = out.hi * 1.2
        real = target / peak
        s = np.floor(16 - np.log2(real)).astype(np.int64)
        m = np.floor(real * 2.0 ** s + 0.5).astype(np.int64)
        m = np.clip(m, 1, (1 << 17) - 1)
        return (self._arr(f"{name}.multiplier", m.astype(np.int32), Fmt(False, 17, 0)),
                self._arr(f"{name}.shift", s.astype(np.int8), Fmt(False, 6, 0)), m, s)

    def conv(self, name, x, out_c, k=1, stride=1, pad=0, depthwise=False, parts=None,
             out=S8(4), wmax=40, role="preact"):
        xin = self.env[x]
        c = xin.shape[1]
        if parts is None:
            parts = [((0, c), (0, out_c))]
        weights, accs = [], []
        for i, ((i0, i1), (o0, o1)) in enumerate(parts):
            shape = (o1 - o0, 1 if depthwise else i1 - i0, k, k)
            w = self.rng.integers(-wmax, wmax + 1, shape)
            weights.append(self._arr(f"{name}.weight.{i}", w.astype(np.int8), Fmt(True, 8, 0)))
            xi = xin[:, i0:i1]
            accs.append(ops.conv(xi, w, None, stride, pad, groups=(i1 - i0) if depthwise else 1))
        acc = torch.cat(accs, 1)
        bias = self.rng.integers(-2000, 2000, out_c)
        acc = acc + torch.from_numpy(bias).double().view(1, -1, 1, 1)
        mk, sk, m, s = self._rescale(name, acc, out)
        y = ops.requantize(acc, m, s, out)
        op = {"name": name, "op": "conv", "inputs": [x], "output": name,
              "parts": [{"in": list(p[0]), "out": list(p[1]), "weight": w}
                        for p, w in zip(parts, weights)],
              "kernel": k, "stride": stride, "padding": pad, "depthwise": depthwise,
              "bias": self._arr(f"{name}.bias", bias), "multiplier": mk, "shift": sk,
              "acc_bits": 32}
        return self._put(name, op, y, out, role)

    def linear(self, name, x, out_c, out=S8(5)):
        xin = self.env[x].flatten(1)
        w = self.rng.integers(-60, 61, (out_c, xin.shape[1]))
        bias = self.rng.integers(-500, 500, out_c)
        acc = ops.linear(xin, w, bias)
        mk, sk, m, s = self._rescale(name, acc, out)
        y = ops.requantize(acc, m, s, out)
        op = {"name": name, "op": "linear", "inputs": [x], "output": name,
              "weight": self._arr(f"{name}.weight", w.astype(np.int8), Fmt(True, 8, 0)),
              "bias": self._arr(f"{name}.bias", bias), "multiplier": mk, "shift": sk,
              "acc_bits": 32}
        return self._put(name, op, y, out, "se")

    def activation(self, name, x, function="swish", out=None):
        fin = self.tensors[x]["fmt"]
        out = out or (fin if function == "swish" else Fmt(False, 8, 8))
        spec = act.ActivationSpec(function, self.act_form, fin, out)
        y = act.apply(spec, self.env[x])
        op = {"name": name, "op": "activation", "inputs": [x], "output": name,
              "function": function, "spec": spec.to_dict()}
        return self._put(name, op, y, out, "gate" if function == "sigmoid" else "act")

    def shuffle(self, name, x):
        y = ops.shuffle(self.env[x], 2)
        op = {"name": name, "op": "shuffle", "inputs": [x], "output": name, "groups": 2}
        return self._put(name, op, y, self.tensors[x]["fmt"])

    def avgpool(self, name, x, out=S8(6)):
        xin = self.env[x]
        hw = xin.shape[2] * xin.shape[3]
        s = ops.channel_sum(xin)
        peak = float(s.abs().max()) + 1
        real = out.hi * 1.1 / peak
        sh = int(np.floor(16 - np.log2(real)))
        m = int(np.floor(real * 2.0 ** sh + 0.5))
        y = ops.requantize(s, m, sh, out)
        op = {"name": name, "op": "avgpool", "inputs": [x], "output": name, "multiplier": m,
              "shift": sh, "acc_bits": 24}
        return self._put(name, op, y, out, "se")

    def prelu(self, name, x):
        c = self.env[x].shape[1]
        slope = self.rng.integers(-100, 100, c)
        fmt = self.tensors[x]["fmt"]
        y = ops.prelu(self.env[x], slope, 8).clamp(fmt.lo, fmt.hi)
        op = {"name": name, "op": "prelu", "inputs": [x], "output": name,
              "slope": self._arr(f"{name}.slope", slope.astype(np.int8), Fmt(True, 8, 0)),
              "slope_frac": 8}
        return self._put(name, op, y, fmt, "se")

    def scale_channels(self, name, x, gate):
        fx, fg = self.tensors[x]["fmt"], self.tensors[gate]["fmt"]
        out = fx
        shift = fx.n_frac + fg.n_frac - out.n_frac
        y = ops.scale_channels(self.env[x], self.env[gate], shift, out)
        op = {"name": name, "op": "scale_channels", "inputs": [x, gate], "output": name,
              "shift": shift}
        return self._put(name, op, y, out)

    def add(self, name, a, b, out=Fmt(True, 16, 9)):
        fa, fb = self.tensors[a]["fmt"].n_frac, self.tensors[b]["fmt"].n_frac
        y = ops.add(self.env[a], fa, self.env[b], fb, out)
        op = {"name": name, "op": "add", "inputs": [a, b], "output": name}
        return self._put(name, op, y, out, "residual")

    def maxpool(self, name, x):
        y = ops.maxpool2(self.env[x])
        op = {"name": name, "op": "maxpool", "inputs": [x], "output": name, "kernel": 2,
              "stride": 2}
        return self._put(name, op, y, self.tensors[x]["fmt"])

    def artifact(self, variant="tiny") -> Artifact:
        return Artifact(variant=variant, program=list(self.program), tensors=dict(self.tensors),
                        arrays=dict(self.arrays), array_fmts=dict(self.fmts), meta={})

    def check_golden(self):
        """The builder's running values equal the golden model's (sanity of the builder)."""
        r = GoldenModel(self.artifact()).run(self.faces, keep=True)
        for name, v in self.env.items():
            assert np.array_equal(r.tensors[name], v.to(torch.int64).numpy()), name
        return r


def stem(net, c=16):
    x = net.conv("stem", "input", c, k=3, stride=1, pad=1)
    return net.activation("stem.act", x)


def build(kind, H=8, W=8, seed=0, batch=2, act_form="lut"):
    """Named small programs for the per-op tests; ``act_form``: the activations' form."""
    n = TinyNet(H, W, seed, batch, act_form)
    x = stem(n)
    if kind == "pointwise_parts_shuffle_dw":
        y = n.conv("pw", x, 24, parts=[((0, 4), (0, 8)), ((4, 16), (8, 24))])
        y = n.activation("pw.act", y)
        y = n.shuffle("shuf", y)
        y = n.conv("dw", y, 24, k=3, stride=1, pad=1, depthwise=True)
        n.activation("dw.act", y)
    elif kind == "depthwise_s2":
        y = n.conv("dw", x, 16, k=3, stride=2, pad=1, depthwise=True)
        n.activation("dw.act", y)
    elif kind == "se":
        p = n.avgpool("se.pool", x)
        h = n.linear("se.fc1", p, 4)
        h = n.prelu("se.prelu", h)
        z = n.linear("se.fc2", h, 16, out=S8(5))
        gte = n.activation("se.gate", z, "sigmoid")
        n.scale_channels("se", x, gte)
    elif kind == "se_block":
        # the tail of a seesaw block: depthwise -> SE (pool fused into the depthwise conv,
        # scale fused into the projection's row load) -> projection in two parts -> residual
        y = n.conv("dw", x, 16, k=3, stride=1, pad=1, depthwise=True)
        y = n.activation("dw.act", y)
        p = n.avgpool("se.pool", y)
        h = n.linear("se.fc1", p, 4)
        h = n.prelu("se.prelu", h)
        z = n.linear("se.fc2", h, 16, out=S8(5))
        gte = n.activation("se.gate", z, "sigmoid")
        s = n.scale_channels("se", y, gte)
        y = n.conv("proj", s, 16, parts=[((0, 12), (0, 12)), ((12, 16), (12, 16))],
                   out=S8(3), role="linear")
        n.add("res", x, y)
    elif kind == "add":
        # an 8-bit sum: the add rounds (a right shift) and saturates
        y = n.conv("proj", x, 16, out=S8(3), role="linear")
        n.add("res", x, y, out=S8(3))
    elif kind == "blocks":
        # two residual blocks: 8-bit block outputs stored packed, read as rows and residuals
        y = n.conv("p1", x, 16, out=S8(3), role="linear")
        r1 = n.add("r1", x, y, out=S8(3))
        y = n.conv("p2", r1, 16, out=S8(3), role="linear")
        r2 = n.add("r2", r1, y, out=S8(3))
        n.conv("head", r2, 8)
    elif kind == "maxpool":
        y = n.maxpool("pool", x)
        n.conv("map", y, 8)
    elif kind == "linear":
        p = n.avgpool("pool", x)
        n.linear("fc", p, 40)
    else:
        raise ValueError(f"unknown tiny net {kind!r}")
    return n
