"""The engine's INPUT op alone (hw/engine/input_unit.py) in cocotb + Verilator: every face
byte of every INPUT descriptor handed to the post pipeline as its operands, in order, once,
with random idle cycles on ``i_stream``, ``go`` dropping and the write FIFO's room withheld
at random (the bench, which also checks the unit's ready/more/valid contract each cycle:
sim/tb_input_unit.py).

Each byte ``p`` must leave as ``x = p``, ``y = offset``, the descriptor's ``sa`` and ``sb``,
``m = 1``, ``s = 0``, ``act = 0``, ``last`` at every ``chunk``-th element and at the last;
through the post pipeline's formula that is ``p << sa + offset << sb``, the golden model's
``pixel * scale + offset`` (quant/golden.py) where ``sb = 0`` as the compiler sets it. The
descriptors' lengths cover a multiple of the chunk, a multiple plus a short chunk, a single
byte, one short of a chunk and none; the stream holds more bytes than the descriptors take.
"""
import numpy as np
import pytest

from firmware import image as im
from firmware.image import EngineConfig
from hw.engine.input_unit import InputUnit
from hw.engine.post import Operands
from sim.runner import SIM_BUILD, run_cocotb, signature_ports
from sim.bench import read_result, write_case
from sim.tb_requantize import unpack

CONFIGS = {"c16": EngineConfig(lanes=4, in_lanes=2, chunk=16, fifo_depth=64),
           "c4": EngineConfig(lanes=4, in_lanes=2, chunk=4, fifo_depth=16)}


def make_case(rng, cfg):
    ch = cfg.chunk
    parts, want, stream = [], [], []
    for n in (2 * ch, 3 * ch + 5, 1, ch - 1, 0, ch + 1):
        sa, sb = int(rng.integers(0, 8)), int(rng.integers(0, 3))
        offset = int(rng.integers(-(1 << 15), 1 << 15))
        fields = {"opcode": int(im.Opcode.INPUT), "n_elems": n, "sa": sa, "sb": sb,
                  "offset": offset}
        desc = sum(int(w) << (16 * i) for i, w in enumerate(im.pack_descriptor(fields)))
        pixels = rng.integers(0, 256, n).tolist()
        stream += pixels
        parts.append({"desc": desc, "n": n})
        want.append([dict(x=p, y=offset, sa=sa, sb=sb, m=1, s=0,
                          last=int(i % ch == ch - 1 or i == n - 1), act=0)
                     for i, p in enumerate(pixels)])
    extra = rng.integers(0, 256, 5).tolist()
    return {"parts": parts, "bytes": stream + extra, "fifo_depth": cfg.fifo_depth}, want


def run_input(name, case, config, *, seed=1, **probs):
    dut = InputUnit(config)
    (SIM_BUILD / name).mkdir(parents=True, exist_ok=True)
    path = write_case(SIM_BUILD / f"{name}.case.json", dict(case, seed=seed, **probs))
    run_cocotb(dut, name=name, test_module="sim.tb_input_unit", ports=signature_ports(dut),
               extra_env={"CASE": path})
    return read_result(path)


@pytest.mark.parametrize("cfg_name", sorted(CONFIGS))
def test_input_unit_operands(cfg_name):
    config = CONFIGS[cfg_name]
    rng = np.random.default_rng(31)
    case, want = make_case(rng, config)
    got = run_input(f"input_unit_{cfg_name}", case, config, seed=31, idle=0.3, no_go=0.2)
    assert got["left"] == 5, f"{got['left']} stream bytes left, the 5 after the last part " \
                             f"expected"
    for i, (part, w, g) in enumerate(zip(case["parts"], want, got["parts"])):
        what = f"part {i} ({part['n']} bytes)"
        assert g["violations"] == [], f"{what}: {g['violations'][:4]}"
        assert g["taken"] == part["n"], f"{what}: {g['taken']} bytes taken"
        hw = [unpack(Operands, v) for v in g["ops"]]
        assert len(hw) == len(w), f"{what}: {len(hw)} operands out, {len(w)} expected"
        bad = [j for j, (h, e) in enumerate(zip(hw, w)) if h != e]
        assert not bad, f"{what}: {len(bad)} operands differ, first {bad[0]}: hw {hw[bad[0]]}, " \
                        f"model {w[bad[0]]}"
        for h, e in zip(hw, w):         # the post pipeline's formula: the golden transform
            if e["sb"] == 0:
                assert (h["x"] << h["sa"]) + (h["y"] << h["sb"]) == \
                    e["x"] * (1 << e["sa"]) + e["y"]
