"""The engine's multiplier array alone (hw/engine/mac_array.py) in cocotb + Verilator: every
group's ``P`` accumulators equal to quant.ops, with random idle cycles between the steps,
random values on every input in the cycles that carry no step's field, and the result FIFO
popped with random stalls (the bench: sim/tb_mac_array.py).

The steps are those the issue stage makes for one output pixel of a layer (hw/engine/issue.py,
the weight layout of firmware/compiler.py and docs/ENGINE.md): per group of ``P`` output
channels, per kernel tap ``(dy, dx)`` and, dense, per ``L`` input channels ``cig`` from the
group's ``in_lo`` (a multiple of ``L``), one step; the row-buffer word is the entry of ``P``
channels that holds them (``sel`` the lane group of the ``L`` in it), the weight word the
entry ``tap * n_cig + cig`` (``P x L`` int8, lane-major; channels past the part's end have
weight 0 and whatever the entry holds). Depthwise: one step per tap, the entry ``tap // L``
holds ``L`` taps of every lane and ``wslot`` is ``tap % L``. Max mode: the running maximum of
each lane's element over the taps. Taps outside the input (``valid_tap`` low) carry random
row-buffer words, which must count as 0. Expected: ``ops.conv`` (dense; depthwise with
``groups = P``) and ``ops.maxpool2`` of the pixel's ``k x k`` patch with the outside taps 0.
Elements span the whole int16 range, weights the whole int8 range; one group per part has
every product at its largest (``-32768 * -128``).
"""
import numpy as np
import pytest
import torch

from firmware.image import EngineConfig
from hw.engine.mac_array import MACArray, result_layout
from quant import ops
from sim.runner import SIM_BUILD, run_cocotb, signature_ports
from sim.bench import read_result, write_case
from sim.tb_requantize import unpack

CONFIGS = {"p8_l2": EngineConfig(lanes=8, in_lanes=2, groups=8),
           "p4_l4": EngineConfig(lanes=4, in_lanes=4, groups=8)}


def _word(values, bits):
    return sum((int(v) & ((1 << bits) - 1)) << (bits * i) for i, v in enumerate(values))


def _patch(rng, C, k, extreme=False):
    """A pixel's ``C x k x k`` input patch and which taps are inside the input."""
    x = rng.integers(-(1 << 15), 1 << 15, (C, k, k))
    if extreme:
        x[:] = -(1 << 15)
    inside = rng.random((k, k)) >= 0.25
    return x, inside


def dense_pixel(rng, cfg, C, k, n_groups, extreme_group=None):
    """(steps, expected results) of one output pixel of a dense layer of ``C`` inputs."""
    P, L = cfg.lanes, cfg.in_lanes
    x, inside = _patch(rng, C, k)
    steps, want = [], []
    for g in range(n_groups):
        extreme = g == extreme_group
        # the group's part: input channels [i0, i1), i0 a multiple of L
        i0 = int(rng.integers(0, max(1, C // L))) * L
        i1 = int(rng.integers(i0 + 1, C + 1))
        n_cig = -(-(i1 - i0) // L)
        w = rng.integers(-128, 128, (P, i1 - i0, k, k))
        xg = x.copy()
        if extreme:
            w[:], xg[:] = -128, -(1 << 15)
        xin = np.where(inside, xg, 0)
        acc = ops.conv(torch.tensor(xin[i0:i1], dtype=torch.float64)[None],
                       torch.tensor(w, dtype=torch.float64))
        nvalid = int(rng.integers(1, P + 1))
        pend = int(g == n_groups - 1)
        n_steps = k * k * n_cig
        for tap in range(k * k):
            dy, dx = divmod(tap, k)
            for cig in range(n_cig):
                chan_lo = i0 + cig * L
                entry = chan_lo // P
                elems = [int(xg[c, dy, dx]) if c < C else int(rng.integers(-(1 << 15), 1 << 15))
                         for c in range(entry * P, entry * P + P)]
                if not inside[dy, dx]:
                    elems = rng.integers(-(1 << 15), 1 << 15, P).tolist()
                wts = [int(w[j, chan_lo + l - i0, dy, dx]) if chan_lo + l < i1 else 0
                       for j in range(P) for l in range(L)]
                steps.append([0, 0, 0, (chan_lo % P) // L, tap % L, nvalid, g,
                              int(inside[dy, dx]), _word(elems, 16), _word(wts, 8)])
        steps[-n_steps][0] = 1
        steps[-1][1], steps[-1][2] = 1, pend
        want.append({"acc": [int(v) for v in acc.view(-1).tolist()], "g": g, "pend": pend,
                     "nvalid": nvalid})
    return steps, want


def depthwise_pixel(rng, cfg, k, n_groups, max_mode=False, extreme_group=None):
    """(steps, expected results) of one output pixel of a depthwise layer (or a max pool)."""
    P, L = cfg.lanes, cfg.in_lanes
    steps, want = [], []
    for g in range(n_groups):
        extreme = g == extreme_group
        x, inside = _patch(rng, P, k, extreme)
        if max_mode and rng.random() < 0.5:
            inside[:] = True
        w = rng.integers(-128, 128, (P, 1, k, k))
        if extreme:
            w[:] = -128
        xin = np.where(inside, x, 0)
        if max_mode:
            acc = ops.maxpool2(torch.tensor(xin, dtype=torch.float64)[None])
        else:
            acc = ops.conv(torch.tensor(xin, dtype=torch.float64)[None],
                           torch.tensor(w, dtype=torch.float64), groups=P)
        n_entries = -(-k * k // L)
        entries = np.zeros((n_entries, P, L), np.int64)
        for tap in range(k * k):
            entries[tap // L, :, tap % L] = w[:, 0, tap // k, tap % k]
        if max_mode:
            entries = rng.integers(-128, 128, entries.shape)     # (no weights: anything)
        nvalid = int(rng.integers(1, P + 1))
        pend = int(g == n_groups - 1)
        for tap in range(k * k):
            dy, dx = divmod(tap, k)
            elems = x[:, dy, dx] if inside[dy, dx] else rng.integers(-(1 << 15), 1 << 15, P)
            steps.append([int(tap == 0), int(tap == k * k - 1), pend * int(tap == k * k - 1),
                          0, tap % L, nvalid, g, int(inside[dy, dx]), _word(elems, 16),
                          _word(entries[tap // L].reshape(-1), 8)])
        want.append({"acc": [int(v) for v in acc.view(-1).tolist()], "g": g, "pend": pend,
                     "nvalid": nvalid})
    return steps, want


def make_parts(rng, cfg):
    """Parts (one mode each, a few pixels) and the results each must give, in order."""
    parts = []
    for kind in ("dense", "depthwise", "max", "dense", "depthwise"):
        steps, want = [], []
        for pixel in range(int(rng.integers(4, 9))):
            n_groups = int(rng.integers(1, 4))
            extreme = 0 if pixel == 0 else None
            if kind == "dense":
                k = int(rng.choice([1, 1, 3]))     # (k 1, C <= L: one step a group)
                C = int(rng.integers(1, 3 * cfg.lanes + 1)) if rng.random() < 0.6 \
                    else int(rng.integers(1, cfg.in_lanes + 1))
                s, w = dense_pixel(rng, cfg, C, k, n_groups, extreme)
            elif kind == "depthwise":
                s, w = depthwise_pixel(rng, cfg, int(rng.choice([3, 5])), n_groups,
                                       extreme_group=extreme)
            else:
                s, w = depthwise_pixel(rng, cfg, 2, n_groups, max_mode=True,
                                       extreme_group=extreme)
            steps += s
            want += w
        parts.append(({"dense": int(kind == "dense"), "max": int(kind == "max"),
                       "steps": steps}, want, kind))
    return parts


def run_mac(name, parts, config, *, seed=1, **probs):
    dut = MACArray(config)
    (SIM_BUILD / name).mkdir(parents=True, exist_ok=True)
    case = write_case(SIM_BUILD / f"{name}.case.json",
                      {"parts": [p[0] for p in parts], "seed": seed, **probs})
    run_cocotb(dut, name=name, test_module="sim.tb_mac_array", ports=signature_ports(dut),
               extra_env={"CASE": case})
    return read_result(case)["parts"]


@pytest.mark.parametrize("cfg_name", sorted(CONFIGS))
def test_mac_array_results(cfg_name):
    config = CONFIGS[cfg_name]
    rng = np.random.default_rng(21)
    parts = make_parts(rng, config)
    got = run_mac(f"mac_array_{cfg_name}", parts, config, seed=21, idle=0.3, stall=0.4)
    layout = result_layout(config)
    held = 0
    for i, ((part, want, kind), g) in enumerate(zip(parts, got)):
        what = f"part {i} ({kind})"
        assert g["violations"] == [], f"{what}: {g['violations'][:4]}"
        assert g["unissued"] == 0, f"{what}: {g['unissued']} steps not issued"
        assert g["busy_end"] == 0, f"{what}: busy after the drain"
        held += g["held"]
        hw = [unpack(layout, v) for v in g["results"]]
        assert len(hw) == len(want), f"{what}: {len(hw)} results out, {len(want)} expected"
        bad = [j for j, (h, w) in enumerate(zip(hw, want)) if h != w]
        assert not bad, f"{what}: {len(bad)} of {len(want)} results differ, first {bad[0]}: " \
                        f"hw {hw[bad[0]]}, model {want[bad[0]]}"
    assert held > 0, "the result credit (can_issue) never held a group back: stall more"
