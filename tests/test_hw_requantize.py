"""Requantizer and MAC: bit-exact against quant.ops.requantize, under stalls and back-pressure."""
import numpy as np
import pytest
import torch

from hw.engine.requantize import Requantizer, chunk_widths, dsp_count
from quant import ops
from quant.fixedpoint import Fmt
from sim.runner import SIM_BUILD, run_cocotb
from sim.bench import read_result, write_case
from sim.tb_requantize import pack, unpack


def test_chunks_cover_the_accumulator():
    assert chunk_widths(33) == [17, 16]
    assert chunk_widths(18) == [18]
    assert chunk_widths(36) == [17, 17, 2]
    assert dsp_count(32) == 2 and dsp_count(16, bias=False) == 1


def _values(rng, n, acc_width):
    lim = 1 << (acc_width - 1)
    acc = rng.integers(-lim, lim, n)
    # Edges: extremes of the accumulator and of M, every shift, exact halves.
    acc[:4] = [lim - 1, -lim, 0, -1]
    m = rng.integers(0, 1 << 17, n)
    m[:3] = [(1 << 17) - 1, 0, 1]
    s = rng.integers(0, 64, n)
    s[: min(n, 64)] = np.arange(min(n, 64))
    # Values that land exactly on .5 before rounding: acc*M = (2k+1) * 2**(s-1).
    for i in range(64, min(n, 96)):
        s[i] = rng.integers(1, acc_width - 12)
        m[i] = 1
        acc[i] = (2 * int(rng.integers(-1000, 1000)) + 1) << (int(s[i]) - 1)
    return acc, m, s


@pytest.mark.parametrize("acc_width,fmt,lanes", [
    (32, Fmt(True, 8, 3), 1),
    pytest.param(24, Fmt(True, 16, 7), 2, marks=pytest.mark.slow),
    pytest.param(18, Fmt(False, 8, 0), 1, marks=pytest.mark.slow),
])
def test_requantizer_bit_exact(acc_width, fmt, lanes):
    rng = np.random.default_rng(acc_width)
    n = 240 * lanes
    acc, m, s = _values(rng, n, acc_width)
    dut = Requantizer(acc_width=acc_width, fmt=fmt, lanes=lanes)
    il = dut.i_stream.payload.shape()
    ol = dut.o_stream.payload.shape()
    words = []
    beats = n // lanes
    for b in range(beats):
        sl = slice(b * lanes, (b + 1) * lanes)
        words.append(pack(il, {"acc": acc[sl].tolist(), "m": m[sl].tolist(), "s": s[sl].tolist(),
                               "first": int(b == 0), "last": int(b == beats - 1)}))
    name = f"requantize_a{acc_width}_{'s' if fmt.signed else 'u'}{fmt.n_word}_l{lanes}"
    case = write_case(SIM_BUILD / f"{name}.case.json", {
        "inputs": {"i_stream": words}, "outputs": {"o_stream": beats}})
    (SIM_BUILD / name).mkdir(parents=True, exist_ok=True)
    run_cocotb(dut, name=name, test_module="sim.tb_requantize", extra_env={"CASE": case})
    res = read_result(case)
    assert res["extra"] == {}, f"stray output beats after the case: {res['extra']}"
    got = [unpack(ol, w) for w in res["outputs"]["o_stream"]]
    hw = np.array([g["data"] for g in got]).reshape(-1)
    want = ops.requantize(torch.tensor(acc, dtype=torch.float64).view(1, -1),
                          torch.tensor(m), torch.tensor(s), fmt).view(-1).numpy().astype(np.int64)
    bad = np.flatnonzero(hw != want)
    assert bad.size == 0, (f"{bad.size} mismatches, first at {bad[0]}: acc={acc[bad[0]]} "
                           f"M={m[bad[0]]} s={s[bad[0]]} hw={hw[bad[0]]} golden={want[bad[0]]}")
    assert [g["first"] for g in got] == [1] + [0] * (beats - 1)
    assert [g["last"] for g in got] == [0] * (beats - 1) + [1]


def test_harness_reports_an_extra_output_beat():
    """The shared case harness's drain check bites: a case that expects one beat fewer than
    the requantizer produces reports that beat in ``extra``."""
    rng = np.random.default_rng(1)
    acc, m, s = _values(rng, 8, 32)
    dut = Requantizer(acc_width=32, fmt=Fmt(True, 8, 3), lanes=1)
    il = dut.i_stream.payload.shape()
    words = [pack(il, {"acc": [int(acc[b])], "m": [int(m[b])], "s": [int(s[b])],
                       "first": int(b == 0), "last": int(b == 7)}) for b in range(8)]
    name = "requantize_a32_s8_l1"
    case = write_case(SIM_BUILD / f"{name}.extra.case.json", {
        "inputs": {"i_stream": words}, "outputs": {"o_stream": 7}})
    (SIM_BUILD / name).mkdir(parents=True, exist_ok=True)
    run_cocotb(dut, name=name, test_module="sim.tb_requantize", extra_env={"CASE": case})
    assert read_result(case)["extra"] == {"o_stream": 1}
