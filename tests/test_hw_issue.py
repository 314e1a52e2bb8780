"""The engine's issue stage alone (hw/engine/issue.py) in cocotb + Verilator: every step of every
output row in the order and with the tags and addresses the MAC array and the RAMs need, under
random credit gaps and row starts (the bench: sim/tb_issue.py).

The model below is written from what the steps mean, not from the stage's counters: output
pixel ``ox`` of row ``oy`` reads input rows ``oy * stride - pad + dy`` and columns
``ox * stride - pad + dx``; input row ``iy`` lies in row-buffer slot ``iy mod nslots`` (where
the sequencer loads it), pixel ``ix`` of a row ``ix * CE`` entries into its slot and channel
``c`` at entry ``c // P``, lane ``c % P``; a group's weights start at its header's base, one
entry a step when dense, one entry per ``L`` taps (slot ``tap % L``) when depthwise.
Addresses are compared where the tap lies inside the input (elsewhere the MAC array zeroes
the product and the address does not matter).
"""
import numpy as np
import pytest

from firmware import image as im
from firmware.image import EngineConfig
from hw.engine.issue import IssueUnit
from sim.bench import read_result, write_case
from sim.runner import SIM_BUILD, run_cocotb, signature_ports


def make_conv(rng, cfg, *, dense, k, stride, H, W, C, n_groups, nslots=None):
    """One CONV's case entry (descriptor, headers, decoded inputs)."""
    P, L = cfg.lanes, cfg.in_lanes
    pad = (k - 1) // 2
    OH, OW = (H + 2 * pad - k) // stride + 1, (W + 2 * pad - k) // stride + 1
    CE = -(-C // P)
    headers = []
    for _ in range(n_groups):
        n_cig = int(rng.integers(1, C // L + 1)) if dense else 1
        inlo = (int(rng.integers(0, C // L - n_cig + 1)) * L if dense
                else int(rng.integers(0, CE)) * P)
        headers.append((int(rng.integers(1, P + 1)), inlo, n_cig,
                        int(rng.integers(0, cfg.w_depth - k * k * n_cig))))
    fields = {"opcode": int(im.Opcode.CONV), "H": H, "W": W, "C": C, "OH": OH, "OW": OW,
              "k": k, "stride": stride, "pad": pad, "n_groups": n_groups,
              "row_entries": W * CE}
    desc = sum(int(w) << (16 * i) for i, w in enumerate(im.pack_descriptor(fields)))
    return {"desc": desc, "fields": fields, "headers": headers, "ce": CE, "ow_last": OW - 1,
            "nslots": nslots or k + int(rng.integers(0, 2)), "dense": int(dense), "rows": OH}


def expected_steps(cfg, conv):
    """Per output row, its steps: the tags and, for a tap inside the input, the addresses."""
    P, L = cfg.lanes, cfg.in_lanes
    f = conv["fields"]
    k, stride, pad, CE, nslots = f["k"], f["stride"], f["pad"], conv["ce"], conv["nslots"]
    rows = []
    for oy in range(f["OH"]):
        steps = []
        for ox in range(f["OW"]):
            for g, (nvalid, inlo, n_cig, wbase) in enumerate(conv["headers"]):
                taps = [(dy, dx) for dy in range(k) for dx in range(k)]
                cigs = range(n_cig) if conv["dense"] else [0]
                order = [(t, dy, dx, cig) for t, (dy, dx) in enumerate(taps) for cig in cigs]
                for s, (t, dy, dx, cig) in enumerate(order):
                    iy, ix = oy * stride - pad + dy, ox * stride - pad + dx
                    chan = inlo + cig * L if conv["dense"] else inlo
                    last = s == len(order) - 1
                    step = {"first": int(s == 0), "last": int(last),
                            "pend": int(last and g == len(conv["headers"]) - 1),
                            "sel": (chan % P) // L if P > L else 0,
                            "wslot": t % L if L > 1 else 0, "nvalid": nvalid, "g": g,
                            "valid_tap": int(0 <= iy < f["H"] and 0 <= ix < f["W"])}
                    if step["valid_tap"]:
                        step["rb_addr"] = ((iy % nslots) * f["row_entries"] + ix * CE
                                           + chan // P)
                        step["w_addr"] = wbase + (s if conv["dense"] else t // L)
                    steps.append(step)
        rows.append({"top": oy * stride - pad, "oy": oy, "steps": steps})
    return rows


def run_issue(name, convs, cfg, *, seed=1, stall=0.3):
    dut = IssueUnit(cfg)
    (SIM_BUILD / name).mkdir(parents=True, exist_ok=True)
    case = write_case(SIM_BUILD / f"{name}_s{seed}.case.json",
                      {"convs": [{k: v for k, v in c.items() if k != "fields"} for c in convs],
                       "seed": seed, "stall": stall})
    run_cocotb(dut, name=name, test_module="sim.tb_issue", ports=signature_ports(dut),
               extra_env={"CASE": case})
    return read_result(case)


def check(cfg, convs, result):
    assert result["violations"] == [], result["violations"][:4]
    for i, (conv, got) in enumerate(zip(convs, result["convs"])):
        f = conv["fields"]
        what = (f"conv {i} ({'dense' if conv['dense'] else 'depthwise'} k={f['k']} "
                f"stride={f['stride']} {f['H']}x{f['W']}x{f['C']} groups={f['n_groups']} "
                f"nslots={conv['nslots']})")
        want = expected_steps(cfg, conv)
        assert len(got["rows"]) == len(want), f"{what}: {len(got['rows'])} rows ended"
        for oy, (g_row, w_row) in enumerate(zip(got["rows"], want)):
            assert (g_row["top"], g_row["oy"]) == (w_row["top"], w_row["oy"]), \
                f"{what} row {oy}: top, oy = {g_row['top']}, {g_row['oy']}"
            steps = got["steps"][g_row["first_step"]:g_row["end_step"]]
            assert len(steps) == len(w_row["steps"]), \
                f"{what} row {oy}: {len(steps)} steps issued, {len(w_row['steps'])} expected"
            for s, (g_step, w_step) in enumerate(zip(steps, w_row["steps"])):
                bad = {key: (g_step[key] & 0xFFFF, value) for key, value in w_step.items()
                       if g_step[key] & 0xFFFF != value}
                assert not bad, f"{what} row {oy} step {s}: (hw, model) {bad}"
        assert got["rows"][-1]["end_step"] == len(got["steps"]), f"{what}: steps after the end"


CFG4 = EngineConfig(lanes=4, in_lanes=2, w_depth=512, groups=8)


def test_issue_order_tags_and_addresses():
    """Pointwise (dense, k = 1, several input-channel steps), the stem-like dense 3x3 of
    stride 2, depthwise 3x3 at strides 1 and 2 with and without the prefetch slot, and a
    1x1 depthwise; random credit gaps and row gaps."""
    rng = np.random.default_rng(3)
    convs = [make_conv(rng, CFG4, dense=True, k=1, stride=1, H=3, W=4, C=12, n_groups=3),
             make_conv(rng, CFG4, dense=True, k=3, stride=2, H=5, W=6, C=4, n_groups=2),
             make_conv(rng, CFG4, dense=False, k=3, stride=1, H=4, W=5, C=8, n_groups=2,
                       nslots=3),
             make_conv(rng, CFG4, dense=False, k=3, stride=2, H=6, W=5, C=4, n_groups=1,
                       nslots=4),
             make_conv(rng, CFG4, dense=False, k=1, stride=1, H=2, W=3, C=8, n_groups=2)]
    check(CFG4, convs, run_issue("issue_p4", convs, CFG4, seed=3))


@pytest.mark.parametrize("seed", [4])
def test_issue_16_lanes_random(seed):
    cfg = EngineConfig(lanes=16, in_lanes=4, w_depth=512, groups=8)
    rng = np.random.default_rng(seed)
    convs = []
    for _ in range(4):
        dense = bool(rng.random() < 0.5)
        k = int(rng.choice([1, 3]))
        convs.append(make_conv(rng, cfg, dense=dense, k=k, stride=int(rng.integers(1, 3)),
                               H=int(rng.integers(k, 6)), W=int(rng.integers(k, 6)),
                               C=int(rng.integers(1, 5)) * 16, n_groups=int(rng.integers(1, 4))))
    check(cfg, convs, run_issue("issue_p16", convs, cfg, seed=seed,
                                stall=float(rng.uniform(0.1, 0.6))))
