"""The engine's row loader alone (hw/engine/row_loader.py) in cocotb + Verilator: every row-buffer
entry it writes equal to quant.ops, with random word gaps and row starts (the bench:
sim/tb_row_loader.py).

Each part is one descriptor: ``C`` channels, the 2-group shuffle (``ops.shuffle``), the fused
SE scale (``ops.scale_channels``: the gate product, the rounding shift, the saturation to
``ls_lo``/``ls_hi``) and packed input words (two signed bytes a word), each on or off, with
random tensors, gates and formats. The pytest side builds the row buffer the rows must leave
(row ``r`` at its slot's ``base``, pixel ``x`` at ``base + x * CE``, channel ``c`` at entry
``c // P``, lane ``c % P``) and compares it with every lane the loader wrote: each written
exactly once, nothing else written. The compiler never sets the packed input together with
the shuffle or the scale (a packed word is two elements, the gate product is of one), so the
bench does not either.
"""
import numpy as np
import pytest
import torch

from firmware import image as im
from firmware.image import EngineConfig
from hw.engine.row_loader import RowLoader
from quant import ops
from quant.fixedpoint import Fmt
from sim.runner import SIM_BUILD, run_cocotb, signature_ports
from sim.bench import read_result, write_case

CONFIG = EngineConfig(lanes=4, in_lanes=4, rb_depth=1024)


def _fmt(rng, max_bits, signed=None, min_bits=4):
    signed = bool(rng.integers(0, 2)) if signed is None else signed
    n = int(rng.integers(min_bits, max_bits + 1))
    return Fmt(signed, n if signed else min(n, 15), 0)


def _rand_in(rng, fmt, shape):
    return rng.integers(fmt.lo, fmt.hi + 1, shape)


def make_part(rng, config, *, C, W, rows=3, shuffle=False, scale=False, pack_in=False,
              ls_shift=None):
    """One descriptor's rows, channel RAM and descriptor; the row buffer quant.ops says."""
    P = config.lanes
    assert not (pack_in and (shuffle or scale)) and not ((shuffle or pack_in) and C % 2)
    x_fmt = _fmt(rng, 8 if pack_in else 16, signed=True if pack_in else None)
    X = _rand_in(rng, x_fmt, (rows, C, W))
    # the channel RAM holds a gate per channel whether or not the scale is on (off, it must
    # not matter); a sigmoid's u8 gate or any 16-bit format
    g_fmt = Fmt(False, 8, 8) if rng.random() < 0.5 else _fmt(rng, 16)
    gates = _rand_in(rng, g_fmt, C)
    ls = _fmt(rng, 16)
    big = int(np.abs(X).max()) * int(np.abs(gates).max())
    if ls_shift == 0:       # without a rounding shift: products that fit 16 bits
        ls = Fmt(True, 16, 0)
        X >>= max(0, big.bit_length() - 14)
    elif ls_shift is None:
        ls_shift = int(np.clip(big.bit_length() - ls.n_word + rng.integers(-1, 4), 0, 31))
    if ls_shift:        # exact halves before the rounding: x * g = odd * 2**(shift - 1)
        for r, c, x in zip(*(rng.integers(0, n, X.size // 6) for n in X.shape)):
            g = abs(int(gates[c]))
            e = ls_shift - 1 - ((g & -g).bit_length() - 1) if g else -1
            if e >= 0 and x_fmt.hi >> e >= 1:
                odd = 2 * int(rng.integers(0, ((x_fmt.hi >> e) + 1) // 2)) + 1
                X[r, c, x] = (-odd if x_fmt.signed and rng.random() < 0.5 else odd) << e
    flags = ((im.Flag.SHUFFLE if shuffle else 0) | (im.Flag.SCALE if scale else 0)
             | (im.Flag.PACK_IN if pack_in else 0))
    fields = {"opcode": int(im.Opcode.CONV), "C": C, "flags": flags, "ls_shift": ls_shift,
              "ls_lo": ls.lo, "ls_hi": ls.hi}
    desc = sum(int(w) << (16 * i) for i, w in enumerate(im.pack_descriptor(fields)))
    CE = -(-C // P)
    row_e = W * CE
    base0 = int(rng.integers(0, config.rb_depth - rows * row_e + 1))
    # rows after the first start in the cycle of the previous row's last word or not (at
    # least one does); the slots are in random order, and not all in ascending order where a
    # row starts that way (a start that lost to the counting would go unnoticed there)
    merges = [False] + [bool(rng.random() < 0.5) for _ in range(rows - 1)]
    if rows > 1 and not any(merges):
        merges[1] = True
    slots = rng.permutation(rows)
    if rows > 1 and all(slots[r] == slots[r - 1] + 1 for r in range(1, rows) if merges[r]):
        slots = slots[::-1]
    part_rows, want = [], {}
    for r in range(rows):
        base = base0 + int(slots[r]) * row_e
        if pack_in:
            words = [(int(X[r, c, x]) & 0xFF) | ((int(X[r, c + 1, x]) & 0xFF) << 8)
                     for x in range(W) for c in range(0, C, 2)]
        else:
            words = [int(X[r, c, x]) & 0xFFFF for x in range(W) for c in range(C)]
        part_rows.append({"base": base, "words": words, "merge": merges[r]})
        y = torch.tensor(X[r], dtype=torch.float64).view(1, C, 1, W)
        if scale:
            y = ops.scale_channels(y, torch.tensor(gates, dtype=torch.float64).view(1, C),
                                   ls_shift, ls)
        if shuffle:
            y = ops.shuffle(y, 2)
        y = y.view(C, W).numpy().astype(np.int64)
        for x in range(W):
            for c in range(C):
                want[(base + x * CE + c // P, c % P)] = int(y[c, x])
    part = {"desc": desc, "ce": CE, "gates": [int(g) & 0xFFFF for g in gates],
            "rows": part_rows}
    what = (f"C={C} W={W} x={x_fmt.fxp_dtype} shuffle={shuffle} scale={scale} "
            f"(gate {g_fmt.fxp_dtype}, shift {ls_shift}, {ls.fxp_dtype}) pack_in={pack_in}")
    return part, want, what


def random_part(rng, config):
    pack_in = rng.random() < 0.3
    shuffle = not pack_in and rng.random() < 0.5
    scale = not pack_in and rng.random() < 0.6
    C = int(rng.integers(1, 24)) * (2 if pack_in or shuffle else 1)
    return make_part(rng, config, C=C, W=int(rng.integers(1, 7)), rows=int(rng.integers(1, 4)),
                     shuffle=shuffle, scale=scale, pack_in=pack_in)


def run_loader(name, parts, *, case_name=None, seed=1, idle=0.3, config=CONFIG):
    dut = RowLoader(config)
    (SIM_BUILD / name).mkdir(parents=True, exist_ok=True)
    case = write_case(SIM_BUILD / f"{case_name or name}.case.json",
                      {"parts": [p for p, *_ in parts], "seed": seed, "idle": idle,
                       "lanes": config.lanes})
    run_cocotb(dut, name=name, test_module="sim.tb_row_loader", ports=signature_ports(dut),
               extra_env={"CASE": case})
    return read_result(case)["parts"]


def check(parts, got):
    """Every lane written once with quant.ops's value, nothing else; one latency; busy."""
    latencies = set()
    for i, ((part, want, what), g) in enumerate(zip(parts, got)):
        where = f"part {i} ({what})"
        assert g["violations"] == [], f"{where}: {g['violations'][:4]}"
        assert g["busy_end"] == 0, f"{where}: busy after the drain"
        n_words = sum(len(r["words"]) for r in part["rows"])
        assert g["words"] == n_words == g["write_cycles"], \
            f"{where}: {n_words} words, {g['words']} sent, {g['write_cycles']} write cycles"
        seen = {}
        for addr, lane, value in g["writes"]:
            seen.setdefault((addr, lane), []).append(value)
        twice = {k: v for k, v in seen.items() if len(v) > 1}
        assert not twice, f"{where}: lanes written more than once, e.g. {list(twice.items())[:3]}"
        got_rb = {k: v[0] for k, v in seen.items()}
        extra = sorted(set(got_rb) - set(want))
        missing = sorted(set(want) - set(got_rb))
        assert not extra and not missing, \
            f"{where}: written, not expected {extra[:4]}; expected, not written {missing[:4]}"
        bad = [(k, got_rb[k], want[k]) for k in sorted(want) if got_rb[k] != want[k]]
        assert not bad, (f"{where}: {len(bad)} of {len(want)} lanes differ, first "
                         f"((entry, lane), hw, quant.ops): {bad[:3]}")
        assert len(g["latency"]) == 1, f"{where}: latencies {g['latency']}"
        latencies |= set(g["latency"])
    assert len(latencies) == 1, f"latency differs between parts: {sorted(latencies)}"
    return latencies.pop()


def test_row_loader_bit_exact():
    """Six descriptors: none of the flags, each on its own, the scale without a rounding
    shift, shuffle with scale, channel counts that do not fill the last entry of a pixel;
    then three random ones."""
    rng = np.random.default_rng(12)
    parts = [make_part(rng, CONFIG, C=10, W=5),
             make_part(rng, CONFIG, C=12, W=4, shuffle=True),
             make_part(rng, CONFIG, C=9, W=5, scale=True),
             make_part(rng, CONFIG, C=7, W=3, scale=True, ls_shift=0),
             make_part(rng, CONFIG, C=14, W=4, shuffle=True, scale=True),
             make_part(rng, CONFIG, C=10, W=6, pack_in=True)]
    parts += [random_part(rng, CONFIG) for _ in range(3)]
    assert check(parts, run_loader("row_loader_p4", parts, seed=12)) > 0


@pytest.mark.slow
@pytest.mark.parametrize("seed", [5, 6])
def test_row_loader_random_descriptors_16_lanes(seed):
    config = EngineConfig(lanes=16, in_lanes=8, rb_depth=2048)
    rng = np.random.default_rng(seed)
    parts = [random_part(rng, config) for _ in range(12)]
    check(parts, run_loader("row_loader_p16", parts, case_name=f"row_loader_p16_s{seed}",
                            seed=seed, idle=float(rng.uniform(0, 0.6)), config=config))
