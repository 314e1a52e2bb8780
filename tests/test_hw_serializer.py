"""The engine's serializer alone (hw/engine/serializer.py) in cocotb + Verilator: every operand
it hands the post pipeline equal to the result heads and lane records it was given, with
random idle cycles on the result stream and random credit (``room``, ``req_ok``) withheld
(the bench: sim/tb_serializer.py).

Lane records are written as the image lays them out (firmware/image.py: ``bias_lo, bias_hi,
m_lo, m_hi | shift << 8``); each head (``P`` accumulators, group ``g``, ``pend``, ``nvalid``)
must leave as its first ``nvalid`` lanes in order, with lane ``j``'s record of group ``g``,
``last`` on the final lane of a head with ``pend`` and the descriptor's activation flag.
The operands then go through ``quant.ops.requantize`` (the post pipeline's spec) on both
sides: hardware and model operands must give the same requantized values too.
"""
import numpy as np
import pytest
import torch

from firmware.image import EngineConfig
from hw.engine.mac_array import result_layout
from hw.engine.post import Operands
from hw.engine.serializer import Serializer
from quant import ops
from quant.fixedpoint import Fmt
from sim.runner import SIM_BUILD, run_cocotb, signature_ports
from sim.bench import read_result, write_case
from sim.tb_requantize import pack, unpack

CONFIG = EngineConfig(lanes=8, in_lanes=4, groups=6)


def record(bias, m, shift):
    """The 64-bit lane record of the image's four lane words."""
    words = [bias & 0xFFFF, (bias >> 16) & 0xFFFF, m & 0xFFFF, (m >> 16) | (shift << 8)]
    return sum(w << (16 * i) for i, w in enumerate(words))


def make_case(rng, config, n_heads, act):
    P, G = config.lanes, config.groups
    bias = rng.integers(-(1 << 31), 1 << 31, (G, P))
    mult = rng.integers(0, 1 << 17, (G, P))
    shift = rng.integers(0, 64, (G, P))
    records = [[g * P + j, record(int(bias[g, j]), int(mult[g, j]), int(shift[g, j]))]
               for g in range(G) for j in range(P)]
    rng.shuffle(records)
    layout = result_layout(config)
    heads, want = [], []
    for _ in range(n_heads):
        acc = rng.integers(-(1 << 31), 1 << 31, P)
        g, nvalid = int(rng.integers(0, G)), int(rng.integers(1, P + 1))
        pend = int(rng.random() < 0.5)
        heads.append(pack(layout, {"acc": acc.tolist(), "g": g, "pend": pend, "nvalid": nvalid}))
        for j in range(nvalid):
            want.append({"x": int(acc[j]), "y": int(bias[g, j]), "sa": 0, "sb": 0,
                         "m": int(mult[g, j]), "s": int(shift[g, j]),
                         "last": int(pend and j == nvalid - 1), "act": act})
    return {"records": records, "heads": heads, "act": act, "expected_ops": len(want)}, want


def run_serializer(name, case, *, case_name=None, seed=1, config=CONFIG, **probs):
    dut = Serializer(config)
    (SIM_BUILD / name).mkdir(parents=True, exist_ok=True)
    case = write_case(SIM_BUILD / f"{case_name or name}.case.json",
                      dict(case, seed=seed, **probs))
    run_cocotb(dut, name=name, test_module="sim.tb_serializer", ports=signature_ports(dut),
               extra_env={"CASE": case})
    return read_result(case)


def requantized(operands, fmt=Fmt(True, 8, 0)):
    acc = torch.tensor([[o["x"] + o["y"] for o in operands]], dtype=torch.float64)
    return ops.requantize(acc, torch.tensor([o["m"] for o in operands]),
                          torch.tensor([o["s"] for o in operands]), fmt).view(-1).tolist()


def check(got, want):
    assert got["violations"] == [], got["violations"][:4]
    assert got["left"] == 0, f"{got['left']} result heads not taken"
    assert got["busy_end"] == 0, "busy after the drain"
    hw = [unpack(Operands, w) for w in got["ops"]]
    assert len(hw) == len(want), f"{len(hw)} operands out, {len(want)} expected"
    bad = [i for i, (a, b) in enumerate(zip(hw, want)) if a != b]
    assert not bad, f"{len(bad)} operands differ, first {bad[0]}: hw {hw[bad[0]]}, " \
                    f"model {want[bad[0]]}"
    assert requantized(hw) == requantized(want)


def test_serializer_operands():
    rng = np.random.default_rng(12)
    case, want = make_case(rng, CONFIG, 120, 1)
    check(run_serializer("serializer_p8", case, seed=12), want)


@pytest.mark.slow
@pytest.mark.parametrize("seed", [5, 6])
def test_serializer_heavy_back_pressure(seed):
    rng = np.random.default_rng(seed)
    case, want = make_case(rng, CONFIG, 400, seed % 2)
    check(run_serializer("serializer_p8", case, case_name=f"serializer_p8_s{seed}", seed=seed,
                         idle=0.6, no_room=0.7, no_req=0.5), want)
