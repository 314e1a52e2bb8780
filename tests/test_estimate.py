"""Pre-synthesis estimate of the PE-array units: consistent with the unit cycle models the
cocotb tests measure, and with the zoo's MAC count."""
import pytest

from hw.engine import depthwise, pointwise
from hw.engine.estimate import EngineConfig, ebr_blocks, estimate, layer_estimate, resources, zoo_program


def test_ebr_blocks():
    assert ebr_blocks(9, 2048) == 1
    assert ebr_blocks(256, 2048) == 29         # 32 lanes x 8-bit weights, 2048 rows
    assert ebr_blocks(36, 512) == 1 and ebr_blocks(37, 512) == 2
    assert ebr_blocks(64, 4096) == 16


def test_layer_estimate_uses_the_measured_unit_models():
    cfg = EngineConfig(pw_lanes=16, vec=8, weight_bytes_per_cycle=1e9)
    pw = layer_estimate({"op": "conv", "in_c": 64, "out_c": 128, "h": 4, "w": 4, "kernel": 1,
                         "split": [[16, 32], [48, 96]]}, cfg)
    model = pointwise.layer_cycles(cfg.pointwise, [(16, 32), (48, 96)], 64, 16)
    assert pw["load"] + pw["compute"] == model["total"]
    dw = layer_estimate({"op": "conv", "in_c": 16, "out_c": 16, "h": 6, "w": 6, "kernel": 3,
                         "stride": 1, "groups": 16}, cfg)
    assert dw["load"] + dw["compute"] == depthwise.layer_cycles(cfg.depthwise, 16, 6, 6, 3, 1,
                                                                1)["total"]
    # The weight stream's bandwidth bounds the load.
    slow = layer_estimate({"op": "linear", "in_c": 512, "out_c": 512}, EngineConfig())
    assert slow["load"] == 512 * 512 // 2


def test_estimate_names_unsupported_layers():
    with pytest.raises(ValueError, match="fancy: op 'attention'"):
        estimate([{"name": "fancy", "op": "attention"}], EngineConfig())
    with pytest.raises(ValueError, match="grouped conv with groups=4"):
        estimate([{"op": "conv", "in_c": 16, "out_c": 16, "kernel": 1, "groups": 4}],
                 EngineConfig())
    with pytest.raises(ValueError, match="unknown engine configuration keys"):
        estimate([], {"pw_lanes": 32, "lanes_typo": 1})


def test_resources_follow_the_structure():
    r = resources(EngineConfig(pw_lanes=32, vec=8))
    # 32 pointwise MACs + 8 depthwise MACs + 2 x 8 requantizer lanes of 2 DSPs each.
    assert r["total"]["MULT18X18D"] == 32 + 8 + 2 * 8 * 2
    bigger = resources(EngineConfig(pw_lanes=64, vec=8))
    assert bigger["pointwise"]["MULT18X18D"] - r["pointwise"]["MULT18X18D"] == 32
    assert bigger["total"]["LUT4"] > r["total"]["LUT4"]


def test_seesaw_shuffle_estimate_counts_every_mac_and_scales_with_lanes():
    """The estimate's MAC count of seesaw_shuffle (from its layer program) equals the zoo's own
    count (quant.counts, from the outputs' sizes), and more lanes make the same program
    faster. (The units' streaming engine is not built yet -- the board runs
    hw/engine/layer_engine.py, whose cycle model is hw/engine/cycles.py -- so no frame rate
    of a board is claimed here.)"""
    from quant.counts import count
    from quant.zoo import build
    prog = zoo_program("seesaw_shuffle")
    e = estimate(prog, EngineConfig(pw_lanes=32, vec=8))
    assert e["macs"] == count(build("seesaw_shuffle"))["macs"]
    slower = estimate(prog, EngineConfig(pw_lanes=16, vec=8))
    assert slower["cycles_by_unit"]["pointwise"] > e["cycles_by_unit"]["pointwise"]
    assert slower["macs"] == e["macs"]
