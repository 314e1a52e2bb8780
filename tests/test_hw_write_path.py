"""The engine's write path alone (hw/engine/write_path.py) in cocotb + Verilator: every word
that reaches memory at the address the layout says, each written once and nothing else, and
every read asked for in commands that cover it in order, with random back-pressure and long
stalls on the memory's command and write streams, elements admitted by credit at random as
the engine's users admit them, and reads started at random (the bench, which also checks the
credit, command and ``idle`` contract each cycle: sim/tb_write_path.py).

The descriptors: CONVs that write whole pixels (``n_out == OC``: gathered requests, unpacked
and packed two 8-bit elements a word, and pixels longer than a command), a CONV that writes
part of each pixel (``n_out < OC``, from an offset: a request per pixel, ``OC`` words
apart), a VEC pass (chunks reserved at once) and an INPUT (one element a launch, no
``req_ok``); the memory stalls for long at the start of some (the request FIFO or the write
FIFO fills, and the credits must hold the admissions back). The expected image: element ``c`` of pixel ``p`` at ``out_addr + p * OC + c``
(packed: the word ``(p * OC + c) // 2``, the even channel in the low byte); element ``i`` of
a VEC or INPUT at ``out_addr + i``. A gathered request never crosses an output row.
"""
import numpy as np
import pytest

from firmware import image as im
from firmware.image import EngineConfig
from hw.engine.write_path import WritePath
from sim.runner import SIM_BUILD, run_cocotb, signature_ports
from sim.bench import read_result, write_case

CONFIGS = {"b8": EngineConfig(lanes=4, in_lanes=2, fifo_depth=96, max_burst=8, chunk=16),
           "b32": EngineConfig(lanes=4, in_lanes=2, fifo_depth=128, max_burst=32, chunk=32)}


def _desc(**fields):
    return sum(int(w) << (16 * i) for i, w in enumerate(im.pack_descriptor(fields)))


def conv_part(rng, cfg, OH, OW, OC, n_out, pack=False):
    out_addr = int(rng.integers(0, 1 << 20))
    elems, words, image = [], [], {}
    rows = {}                   # address -> output row, for the row-crossing check
    for p in range(OH * OW):
        for c in range(n_out):
            v = int(rng.integers(-128, 128)) if pack else int(rng.integers(-(1 << 15), 1 << 15))
            elems.append([v, int(c == n_out - 1)])
            e = p * OC + c
            if pack:
                words.append(-1 if c % 2 == 0 else
                             (elems[-2][0] & 0xFF) | ((v & 0xFF) << 8))
                if c % 2:
                    image[out_addr + e // 2] = words[-1]
                    rows[out_addr + e // 2] = p // OW
            else:
                words.append(v & 0xFFFF)
                image[out_addr + e] = v & 0xFFFF
                rows[out_addr + e] = p // OW
    flags = im.Flag.PACK_OUT if pack else 0
    desc = _desc(opcode=int(im.Opcode.CONV), OC=OC, n_out=n_out, OW=OW, OH=OH,
                 out_addr=out_addr, flags=int(flags))
    what = f"CONV {OH}x{OW}x{OC} n_out {n_out}{' packed' if pack else ''}"
    return {"desc": desc, "is_conv": 1, "ow_last": OW - 1, "style": "launch", "elems": elems,
            "words": words}, image, rows, what


def flat_part(rng, cfg, n, style):
    out_addr = int(rng.integers(0, 1 << 20))
    ch = cfg.chunk
    elems = [[int(rng.integers(-(1 << 15), 1 << 15)), int(i % ch == ch - 1 or i == n - 1)]
             for i in range(n)]
    words = [v & 0xFFFF for v, _ in elems]
    image = {out_addr + i: w for i, w in enumerate(words)}
    opcode = im.Opcode.VEC if style == "reserve" else im.Opcode.INPUT
    desc = _desc(opcode=int(opcode), n_elems=n, out_addr=out_addr, OC=3, n_out=3, OW=1)
    return {"desc": desc, "is_conv": 0, "ow_last": 0, "style": style, "elems": elems,
            "words": words}, image, None, f"{opcode.name} {n} elements ({style})"


def make_case(rng, cfg):
    mb, ch = cfg.max_burst, cfg.chunk
    long_pixel = min(2 * mb + 3, cfg.fifo_depth // 2)
    parts = [conv_part(rng, cfg, 3, 3, 5, 5), conv_part(rng, cfg, 2, 4, 6, 6, pack=True),
             conv_part(rng, cfg, 3, 4, 12, 3), conv_part(rng, cfg, 2, 2, long_pixel, long_pixel),
             flat_part(rng, cfg, cfg.fifo_depth + 3 * ch + 5, "reserve"),
             flat_part(rng, cfg, cfg.fifo_depth + 2 * ch + 3, "input"),
             conv_part(rng, cfg, 10, 8, 4, 1)]       # a request per element: req_ok
    for part, *_ in parts:
        part["latency"] = int(rng.choice([2, 7, 17]))
        part["chunk"] = ch
        part["reads"] = [[int(rng.integers(0, 1 << 22)), int(rng.integers(1, 3 * mb + 1))]
                         for _ in range(int(rng.integers(1, 4)))]
    parts[-1][0]["hold_cmd"] = 250          # the requests pile up: req_ok holds them back
    for part, *_ in parts[4:6]:              # the write FIFO fills: room holds them back
        part["hold_w"] = 250
        part["latency"] = 17                 # (about the post pipeline's)
    return parts


def run_write_path(name, parts, cfg, *, case_name=None, seed=1, **probs):
    dut = WritePath(cfg)
    (SIM_BUILD / name).mkdir(parents=True, exist_ok=True)
    path = write_case(SIM_BUILD / f"{case_name or name}.case.json",
                      {"parts": [p[0] for p in parts], "seed": seed, "max_burst": cfg.max_burst,
                       "fifo_depth": cfg.fifo_depth, **probs})
    run_cocotb(dut, name=name, test_module="sim.tb_write_path", ports=signature_ports(dut),
               extra_env={"CASE": path})
    return read_result(path)


def memory_image(w_cmds, w_words):
    """Address -> word of every write, and the addresses written more than once."""
    image, twice, k = {}, [], 0
    for addr, length in w_cmds:
        for a in range(addr, addr + length):
            if a in image:
                twice.append(a)
            image[a] = w_words[k] if k < len(w_words) else None
            k += 1
    return image, twice, k


def check(parts, got):
    assert got["extra"] == [], f"after the last part: {got['extra']}"
    held_room = held_req = 0
    for (part, want, rows, what), g in zip(parts, got["parts"]):
        assert g["violations"] == [], f"{what}: {g['violations'][:4]}"
        image, twice, n_words = memory_image(g["w_cmds"], g["w_words"])
        assert n_words == len(g["w_words"]), \
            f"{what}: {len(g['w_words'])} words written for commands of {n_words}"
        assert not twice, f"{what}: {len(twice)} addresses written twice, first {twice[0]:#x}"
        assert set(image) == set(want), \
            f"{what}: addresses {sorted(set(image) ^ set(want))[:6]} written or missed"
        bad = [a for a in want if image[a] != want[a]]
        assert not bad, f"{what}: {len(bad)} words differ, first at {bad[0]:#x}: " \
                        f"{image[bad[0]]:#x}, expected {want[bad[0]]:#x}"
        if rows is not None:
            for addr, length in g["w_cmds"]:
                spans = {rows[a] for a in range(addr, addr + length)}
                assert len(spans) == 1, f"{what}: a command at {addr:#x} spans rows {spans}"
        covered = [a for addr, length in g["r_cmds"] for a in range(addr, addr + length)]
        asked = [a for addr, n in part["reads"] for a in range(addr, addr + n)]
        assert covered == asked, f"{what}: read commands {g['r_cmds']} for reads " \
                                 f"{part['reads']}"
        held_room += g["held_room"]
        held_req += g["held_req"]
    assert held_room > 0 and held_req > 0, \
        f"the credits never held an admission back (room {held_room}, req_ok {held_req})"


@pytest.mark.parametrize("cfg_name", sorted(CONFIGS))
def test_write_path_memory(cfg_name):
    cfg = CONFIGS[cfg_name]
    rng = np.random.default_rng(41)
    parts = make_case(rng, cfg)
    # idle_word_lag 2: a word that arrived in cycle t keeps idle low from t + 2 (see below)
    check(parts, run_write_path(f"write_path_{cfg_name}", parts, cfg, seed=41, idle=0.3,
                                cmd_stall=0.3, w_stall=0.4, long_stall=0.01,
                                idle_word_lag=2))


class IdleWithAWordInside(AssertionError):
    """``idle`` was high in a cycle with a word in the write path."""


@pytest.mark.xfail(strict=True, raises=IdleWithAWordInside,
                   reason="WritePath.idle is high for one cycle with a word in the write FIFO: "
                   "idle reads the FIFO's r_rdy, which rises two cycles after the word "
                   "arrived (the engine's sequencer reads idle as a register in NEXT and the "
                   "pending request then holds the next read back, so no frame goes wrong)")
def test_write_path_idle_with_a_word_inside():
    """The stated contract (``idle``: nothing admitted, queued or owed) cycle for cycle: a
    CONV whose elements arrive far apart (a word in the write FIFO, nothing in flight)."""
    cfg = CONFIGS["b8"]
    part, *_ = conv_part(np.random.default_rng(5), cfg, 2, 2, 3, 3)
    part.update(latency=2, chunk=cfg.chunk, reads=[])
    got = run_write_path("write_path_b8", [(part,)], cfg, case_name="write_path_b8_idle",
                         seed=5, idle=0.8, idle_word_lag=1)
    violations = got["parts"][0]["violations"]
    assert [v for v in violations if "idle with" not in v] == [], violations[:4]
    if violations:
        raise IdleWithAWordInside(violations[0])
