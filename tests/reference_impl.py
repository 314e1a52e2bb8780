"""An independent, functional re-statement of the public reference implementation's semantics
(the SeesawFaceNets paper's architecture tables and its public code), used as a test fixture:
it builds a state_dict with the reference key names from the architecture tables alone and computes the forward pass with plain
torch.nn.functional calls. It shares no code with quant.zoo, so agreement checks both the key
names and the arithmetic."""
import torch
import torch.nn.functional as F

EPS = 1e-5
TABLES = {
    # stem, (c1, c2, c3), down E, residual E, depths, block kind, routing, mapping
    "seesaw_shuffle": (64, (64, 128, 128), (128, 256, 512), (128, 256, 256), (4, 6, 2), "seesaw", "shuffle", None),
    "seesaw_share": (64, (64, 128, 128), (128, 256, 512), (128, 256, 256), (4, 6, 2), "seesaw", "share", None),
    "mobilefacenet": (64, (64, 128, 128), (128, 256, 512), (128, 256, 256), (4, 6, 2), "mobile", None, None),
    "dw_seesaw_v1": (96, (96, 192, 192), (192, 384, 768), (192, 384, 384), (8, 12, 4), "seesaw", "shuffle", "v1"),
    "dw_seesaw_v2": (96, (96, 192, 192), (192, 384, 768), (192, 384, 384), (8, 12, 4), "seesaw", "shuffle", "v2"),
}


def _bn(sd, p, c, g):
    sd[p + ".weight"] = 1 + 0.2 * torch.randn(c, generator=g)
    sd[p + ".bias"] = 0.2 * torch.randn(c, generator=g)
    sd[p + ".running_mean"] = 0.2 * torch.randn(c, generator=g)
    sd[p + ".running_var"] = 0.5 + torch.rand(c, generator=g)
    sd[p + ".num_batches_tracked"] = torch.tensor(100)


def _conv(sd, p, o, i, k, g, groups=1):
    fan = (i // groups) * k * k
    sd[p + ".conv.weight"] = torch.randn(o, i // groups, k, k, generator=g) * (2.0 / fan) ** 0.5
    _bn(sd, p + ".bn", o, g)


def _blocks(name):
    stem, widths, e_down, e_res, depths, kind, routing, mapping = TABLES[name]
    out, c_in = [], stem
    for j, (c, ed, er, n) in enumerate(zip(widths, e_down, e_res, depths)):
        out.append((["conv_23", "conv_34", "conv_45"][j], c_in, c, ed, 2, False))
        for i in range(n):
            out.append((f"{['conv_3', 'conv_4', 'conv_5'][j]}.model.{i}", c, c, er, 1, True))
        c_in = c
    return out


def make_state_dict(name, seed=0):
    stem, widths, *_ , kind, routing, mapping = TABLES[name]
    g = torch.Generator().manual_seed(seed)
    sd = {}
    _conv(sd, "conv1", stem, 3, 3, g)
    _conv(sd, "conv2_dw", stem, stem, 3, g, groups=stem)
    for p, i, o, e, stride, res in _blocks(name):
        if kind == "mobile":
            _conv(sd, p + ".conv", e, i, 1, g)
            _conv(sd, p + ".conv_dw", e, e, 3, g, groups=e)
            _conv(sd, p + ".project", o, e, 1, g)
            continue
        _conv(sd, p + ".conv_1", e // 4, i // 4, 1, g)
        _conv(sd, p + ".conv_dw", e, e, 3, g, groups=e)
        _conv(sd, p + ".project_1", o // 4, e // 4, 1, g)
        _conv(sd, p + ".conv_3", 3 * e // 4, 3 * i // 4, 1, g)
        _conv(sd, p + ".project_3", 3 * o // 4, 3 * e // 4, 1, g)
        if mapping == "v1":
            _conv(sd, p + ".mapping", o, i, 1, g)
        elif mapping == "v2":
            _conv(sd, p + ".mapping.1", o, i, 1, g)
        sd[p + ".se.0.fc.0.weight"] = torch.randn(e // 4, e, generator=g) * e ** -0.5
        sd[p + ".se.0.fc.0.bias"] = 0.1 * torch.randn(e // 4, generator=g)
        sd[p + ".se.0.fc.1.weight"] = 0.25 + 0.05 * torch.randn(e // 4, generator=g)
        sd[p + ".se.0.fc.2.weight"] = torch.randn(e, e // 4, generator=g) * (e // 4) ** -0.5
        sd[p + ".se.0.fc.2.bias"] = 0.1 * torch.randn(e, generator=g)
    _conv(sd, "conv_6_sep", 512, widths[-1], 1, g)
    _conv(sd, "conv_6_dw", 512, 512, 7, g, groups=512)
    sd["linear.weight"] = torch.randn(512, 512, generator=g) * 512 ** -0.5
    _bn(sd, "bn", 512, g)
    return sd


def _cb(sd, p, x, stride=1, pad=0, groups=1, act=True):
    y = F.conv2d(x, sd[p + ".conv.weight"], None, stride, pad, 1, groups)
    y = F.batch_norm(y, sd[p + ".bn.running_mean"], sd[p + ".bn.running_var"],
                     sd[p + ".bn.weight"], sd[p + ".bn.bias"], False, 0.0, EPS)
    return y * torch.sigmoid(y) if act else y


def forward(name, sd, x):
    stem, widths, *_, kind, routing, mapping = TABLES[name]
    x = _cb(sd, "conv1", x, 2, 1)
    x = _cb(sd, "conv2_dw", x, 1, 1, groups=stem)
    for p, i, o, e, stride, res in _blocks(name):
        inp = x
        if kind == "mobile":
            y = _cb(sd, p + ".conv", x)
            y = _cb(sd, p + ".conv_dw", y, stride, 1, groups=e)
            y = _cb(sd, p + ".project", y, act=False)
        else:
            y = torch.cat([_cb(sd, p + ".conv_1", x[:, :i // 4]),
                           _cb(sd, p + ".conv_3", x[:, i // 4:])], 1)
            if routing == "shuffle":   # ShuffleNet permutation with two groups
                n, c, h, w = y.shape
                y = y.reshape(n, 2, c // 2, h, w).permute(0, 2, 1, 3, 4).reshape(n, c, h, w)
            y = _cb(sd, p + ".conv_dw", y, stride, 1, groups=e)
            s = y.mean((2, 3))
            s = F.linear(s, sd[p + ".se.0.fc.0.weight"], sd[p + ".se.0.fc.0.bias"])
            s = F.prelu(s, sd[p + ".se.0.fc.1.weight"])
            s = torch.sigmoid(F.linear(s, sd[p + ".se.0.fc.2.weight"], sd[p + ".se.0.fc.2.bias"]))
            y = y * s[:, :, None, None]
            cut = e // 4 if routing == "shuffle" else 3 * e // 4
            a, b = y[:, :cut], y[:, cut:]
            if routing == "shuffle":
                y = torch.cat([_cb(sd, p + ".project_1", a, act=False),
                               _cb(sd, p + ".project_3", b, act=False)], 1)
            else:
                y = torch.cat([_cb(sd, p + ".project_3", a, act=False),
                               _cb(sd, p + ".project_1", b, act=False)], 1)
        if res:
            y = inp + y
        elif mapping == "v1":
            y = y + _cb(sd, p + ".mapping", inp, stride=2)
        elif mapping == "v2":
            y = y + _cb(sd, p + ".mapping.1", F.max_pool2d(inp, 2, 2))
        x = y
    x = _cb(sd, "conv_6_sep", x)
    x = _cb(sd, "conv_6_dw", x, groups=512, act=False)
    x = F.linear(x.flatten(1), sd["linear.weight"])
    x = F.batch_norm(x, sd["bn.running_mean"], sd["bn.running_var"], sd["bn.weight"],
                     sd["bn.bias"], False, 0.0, EPS)
    return x / x.norm(dim=1, keepdim=True)
