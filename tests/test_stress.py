"""The engine under stress, and the engine bench's own checks shown to bite.

Stress: random idle cycles on the face stream, back-pressure on the result stream, and a
memory model with a random extra latency per command and random ready gaps
(:class:`hw.memory.sim_memory.SimMemory`); every frame must stay bit-exact. Default tier: a
small residual/SE network; slow tier: a whole seesaw_shuffle frame through ``make sim``'s
entry point.

The bench's checks: a face with one byte too many (left unconsumed) or one too few (the
engine never finishes), a result stream with one word more than the bench expects, and a
read of a memory word that was never defined must each fail the run with a message that
names what went wrong.
"""
import dataclasses
import json

import numpy as np
import pytest

from firmware.compiler import compile_artifact
from quant.golden import GoldenModel
from tests.engine_nets import build
from tests.test_engine import SMALL


@pytest.fixture(scope="module")
def small():
    """The se_block program (stem, depthwise, SE, two-part projection, residual add)."""
    net = build("se_block")
    art = net.artifact()
    comp = compile_artifact(art, SMALL)
    gold = GoldenModel(art).run(net.faces, keep=True)
    return net, art, comp, gold


def _streamed_golden(art, gold, n):
    want = gold.tensors[art.program[-1]["output"]]
    c, *hw = want.shape[1:]
    return want.reshape(n, c, -1).transpose(0, 2, 1).reshape(n, -1)   # the engine streams HWC


def test_small_net_bit_exact_under_memory_jitter_and_gaps(small):
    from sim.tb_engine import simulate
    net, art, comp, gold = small
    res = simulate(comp, net.faces, name="engine_small_stress", idle_prob=0.4, stall_prob=0.4,
                   depth=1 << 14, mem_jitter=9, mem_gap_prob=0.3, seed=5)
    assert np.array_equal(res["outputs"], _streamed_golden(art, gold, len(net.faces)))
    for op in art.program:
        t = op["output"]
        if comp.tensors[t]["stored"]:
            assert np.array_equal(comp.tensor(res["dump"], t), gold.tensors[t][-1]), t
    # the stress is real: the same frames take longer than on the ideal memory
    ideal = simulate(comp, net.faces, name="engine_small", depth=1 << 14)
    assert np.array_equal(ideal["outputs"], res["outputs"])
    assert min(res["cycles"]) > 1.2 * max(ideal["cycles"]), (res["cycles"], ideal["cycles"])


@pytest.mark.parametrize("kw,message", [
    ({"input_delta": 1}, r"frame 0: face stream \(at frame_done\): 1 of \d+ input words not consumed"),
    ({"input_delta": -1}, r"frame 0: no result word \(the engine took (\d+) of \1 face bytes\)"),
    ({"output_delta": -1}, r"frame 0: result stream: an extra output word"),
])
def test_bench_fails_on_a_dropped_or_extra_word(small, kw, message):
    from sim.tb_engine import BenchError, simulate
    net, art, comp, gold = small
    with pytest.raises(BenchError, match=message):
        simulate(comp, net.faces[:1], name="engine_small", depth=1 << 14, **kw)


def test_read_of_an_undefined_word_fails(small):
    """The same program with the constants left out of the preloaded region: the engine's
    first read of them must stop the run, naming the address."""
    from sim.tb_engine import BenchError, simulate
    net, art, comp, gold = small
    first_const = min(b["offset"] for b in comp.blocks.values())
    strict = dataclasses.replace(comp, tensor_base=first_const)
    with pytest.raises(BenchError, match=r"memory model: read of a word never preloaded nor "
                                         r"written .* at word address 0x[0-9a-f]+"):
        simulate(strict, net.faces[:1], name="engine_small_undefined", depth=1 << 14)


@pytest.mark.slow
def test_whole_frame_bit_exact_under_stress(tmp_path, seesaw_shuffle_artifact):
    """One whole seesaw_shuffle frame at the ULX3S configuration with 20 % idle cycles on the
    face stream, 30 % back-pressure on the results, up to 6 extra memory cycles per command
    and 20 % memory ready gaps: bit-exact, every stored tensor too."""
    from sim.run_sim import main
    report = tmp_path / "report.json"
    assert main(["--faces", "1", "--artifact", str(seesaw_shuffle_artifact), "--report",
                 str(report), "--idle", "0.2", "--stall", "0.3", "--mem-jitter", "6",
                 "--mem-gaps", "0.2", "--seed", "7"]) == 0
    rep = json.loads(report.read_text())
    assert rep["bit_exact"] == [True] and rep["first_mismatch"] is None, rep["first_mismatch"]
    assert rep["stress"] == {"idle": 0.2, "stall": 0.3, "mem_jitter": 6, "mem_gaps": 0.2,
                             "seed": 7}
    # the memory stress slows the frame well beyond the ideal memory's cycle model
    assert rep["cycles_per_frame"][0] > 1.1 * rep["estimated_cycles_per_frame"]
