"""Fuzzing the firmware compiler (firmware/compiler.py) on random small networks built from the
golden model's own ops (tests/engine_nets.py TinyNet: every value is the golden model's).

Default tier: each random network compiles (or is refused with a CompileError naming one of
its layers), and the image holds exactly what the golden model computes with: every
descriptor's weights, bias, multipliers and shifts decode back to the artifact's arrays, and
the tensors lie apart inside the image. `slow`: the compiled image runs in the engine
(Verilator) and every stored tensor and the output equal the golden model's, integer for
integer."""
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from firmware import image as im
from firmware.compiler import CompileError, compile_artifact
from quant.golden import GoldenModel
from tests.engine_nets import S8, TinyNet
from tests.test_engine import SMALL

QUICK = settings(max_examples=25, deadline=None, derandomize=True, database=None,
                 suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


@st.composite
def networks(draw, batch=1):
    """A random small network: a stem, then 1-4 random blocks, maybe a pooled linear head."""
    hw = draw(st.sampled_from([(4, 4), (6, 8), (8, 8), (8, 6)]))
    n = TinyNet(*hw, seed=draw(st.integers(0, 1 << 16)), batch=batch)
    c = draw(st.sampled_from([8, 16]))
    x = n.activation("stem.act", n.conv("stem", "input", c, k=3, stride=1, pad=1))
    for i in range(draw(st.integers(1, 4))):
        kind = draw(st.sampled_from(["pw", "pw_parts", "dw", "dw_s2", "shuffle", "res", "se",
                                     "maxpool"]))
        H, W = n.tensors[x]["shape"][1:]
        C = n.tensors[x]["shape"][0]
        name = f"b{i}"
        if kind == "pw":
            oc = draw(st.sampled_from([8, 16, 24]))
            x = n.conv(name, x, oc)
            if draw(st.booleans()):
                x = n.activation(f"{name}.act", x)
        elif kind == "pw_parts" and C >= 8:
            split = draw(st.sampled_from([k for k in range(4, C, 4)]))
            x = n.conv(name, x, 2 * C, parts=[((0, split), (0, C)), ((split, C), (C, 2 * C))])
            x = n.activation(f"{name}.act", x)
        elif kind in ("dw", "dw_s2") and (kind == "dw" or min(H, W) >= 4):
            x = n.conv(name, x, C, k=3, stride=2 if kind == "dw_s2" else 1, pad=1,
                       depthwise=True)
            x = n.activation(f"{name}.act", x)
        elif kind == "shuffle":
            x = n.shuffle(name, x)
            x = n.activation(f"{name}.dw.act", n.conv(f"{name}.dw", x, C, k=3, pad=1,
                                                      depthwise=True))
        elif kind == "res":
            y = n.conv(f"{name}.proj", x, C, out=S8(3), role="linear")
            x = n.add(name, x, y, out=S8(3))
        elif kind == "se":
            p = n.avgpool(f"{name}.pool", x)
            h = n.prelu(f"{name}.prelu", n.linear(f"{name}.fc1", p, 4))
            g = n.activation(f"{name}.gate", n.linear(f"{name}.fc2", h, C, out=S8(5)),
                             "sigmoid")
            x = n.scale_channels(name, x, g)
        elif kind == "maxpool" and H % 2 == 0 and W % 2 == 0:
            x = n.maxpool(name, x)
    if draw(st.booleans()):
        n.linear("head", n.avgpool("head.pool", x), draw(st.sampled_from([8, 40])))
    return n


def _compile(net, **options):
    art = net.artifact()
    try:
        return art, compile_artifact(art, SMALL, **options)
    except CompileError as e:
        names = {op["name"] for op in art.program}
        assert any(f"layer {name!r}" in str(e) for name in names), \
            f"CompileError names no layer of the program: {e}"
        return art, None


def _check_image(art, comp):
    """The image holds the golden model's numbers: each conv's and linear's weights decode to
    the artifact's, bias/multiplier/shift records to its arrays; tensors lie apart."""
    assert comp.descriptors[-1]["kind"] == "end"
    for i, d in enumerate(comp.descriptors):
        got = im.unpack_descriptor(comp.words[i * im.DESC_WORDS:(i + 1) * im.DESC_WORDS])
        assert {k: got[k] for k in d if k in im.FIELD_NAMES} == {k: v for k, v in d.items()
                                                            if k in im.FIELD_NAMES}, d["name"]
    spans = sorted((t["addr"], t["addr"] + -(-int(np.prod(t["shape"]))
                                             // (2 if t.get("packed") else 1)))
                   for t in comp.tensors.values() if t["stored"])
    assert all(a[1] <= b[0] for a, b in zip(spans, spans[1:])), "tensors overlap"
    assert spans[0][0] >= comp.tensor_base and spans[-1][1] <= comp.words.size
    first = {}               # layer -> its next output channel (chunks come in order)
    for d in comp.descriptors:
        if d["kind"] in ("conv", "linear"):
            c = first.get(d["layer"], 0)
            first[d["layer"]] = _check_weights_and_params(art, comp, d, c)
    for op in art.program:
        if op["op"] in ("conv", "linear"):
            assert first.get(art.program.index(op)) == len(art.arrays[op["bias"]]), \
                f"layer {op['name']!r}: not every output channel has its weights in the image"


def _op_arrays(art, op):
    """(weights (OC, IC, k, k) with the part structure as a mask, bias, multiplier, shift):
    the numbers the golden model computes the op with."""
    if op["op"] == "linear":
        w = art.arrays[op["weight"]]
        full, mask = w.reshape(*w.shape, 1, 1).astype(np.int64), np.ones(w.shape, bool)
    else:
        oc = sum(p["out"][1] - p["out"][0] for p in op["parts"])
        ic = max(p["in"][1] for p in op["parts"])
        k = int(op["kernel"])
        full = np.zeros((oc, 1 if op["depthwise"] else ic, k, k), np.int64)
        mask = np.zeros(full.shape[:2], bool)
        for p in op["parts"]:
            w = art.arrays[p["weight"]]
            (i0, i1), (o0, o1) = p["in"], p["out"]
            cols = slice(0, 1) if op["depthwise"] else slice(i0, i1)
            full[o0:o1, cols] = w
            mask[o0:o1, cols] = True
    bias = np.asarray(art.arrays[op["bias"]], np.int64)
    mult = np.broadcast_to(np.asarray(art.arrays[op["multiplier"]], np.int64).reshape(-1),
                           bias.shape)
    shift = np.broadcast_to(np.asarray(art.arrays[op["shift"]], np.int64).reshape(-1),
                            bias.shape)
    return full, mask, bias, mult, shift


def _check_weights_and_params(art, comp, d, c):
    """Decode one CONV descriptor's weight entries and group records (from output channel
    ``c`` on) from the image words (layout: docs/ENGINE.md) and compare them with the op's
    arrays; returns the next channel."""
    cfg = comp.config
    P, L = cfg.lanes, cfg.in_lanes
    op = art.program[d["layer"]]
    w, mask, bias, mult, shift = _op_arrays(art, op)
    k = d["k"]
    taps = k * k
    words = comp.words[d["w_addr"]:d["w_addr"] + d["w_words"]]
    ent = im.unpack_bytes(words, d["w_words"] * 2).reshape(-1, P, L)
    params = comp.words[d["p_addr"]:d["p_addr"] + d["n_groups"] * cfg.group_words]
    for g in range(d["n_groups"]):
        rec = params[g * cfg.group_words:(g + 1) * cfg.group_words].astype(np.int64)
        n, in_lo, n_cig, wbase = (int(v) for v in rec[:4])
        assert [n, in_lo, n_cig] == d["groups_detail"][g], d["name"]
        for j in range(n):
            b = int(rec[4 + 4 * j]) | int(rec[5 + 4 * j]) << 16
            b = b - (1 << 32) if b >> 31 else b
            m = int(rec[6 + 4 * j]) | (int(rec[7 + 4 * j]) & 0xFF) << 16
            sh = int(rec[7 + 4 * j]) >> 8
            where = f"layer {op['name']!r} channel {c}"
            assert (b, m, sh) == (bias[c], mult[c], shift[c]), where
            for tap in range(taps):
                dy, dx = divmod(tap, k)
                if d["mode"] == im.ConvMode.DEPTHWISE:
                    assert ent[wbase + tap // L, j, tap % L] == w[c, 0, dy, dx], where
                    continue
                for cig in range(n_cig):
                    for lane in range(L):
                        ic = in_lo + cig * L + lane
                        want = w[c, ic, dy, dx] if ic < w.shape[1] and mask[c, ic] else 0
                        assert ent[wbase + tap * n_cig + cig, j, lane] == want, (where, ic)
            c += 1
    return c


@QUICK
@given(networks(), st.booleans())
def test_random_networks_compile_to_the_golden_models_numbers(net, fuse):
    art, comp = _compile(net, fuse_scale=fuse, fuse_pool=fuse, fuse_resid=fuse, pack=fuse)
    GoldenModel(art).run(net.faces)          # the golden model runs the network as built
    if comp is not None:
        _check_image(art, comp)


@pytest.mark.slow
@settings(max_examples=4, deadline=None, derandomize=True, database=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(networks(batch=1))
def test_random_networks_run_bit_exact_in_the_engine(net):
    """The compiled image in the engine (Verilator, random stalls): every stored tensor and
    the streamed output equal the golden model's."""
    from sim.tb_engine import simulate
    art, comp = _compile(net)
    if comp is None:
        return
    gold = GoldenModel(art).run(net.faces, keep=True)
    res = simulate(comp, net.faces, name="engine_small", idle_prob=0.3, stall_prob=0.3,
                   depth=1 << 14)
    for op in art.program:
        t = op["output"]
        if comp.tensors[t]["stored"]:
            got, want = comp.tensor(res["dump"], t), gold.tensors[t][-1]
            assert np.array_equal(got, want), f"tensor {t!r} differs"
    want = gold.tensors[art.program[-1]["output"]].reshape(len(net.faces), -1)
    c, *hw = art.tensors[art.program[-1]["output"]]["shape"]
    got = res["outputs"]
    if hw:
        got = got.reshape(len(net.faces), *hw, c).transpose(0, 3, 1, 2).reshape(
            len(net.faces), -1)
    assert np.array_equal(got, want), "streamed output differs"
