"""The loader (read-data demultiplexer): every kind of read under random idle cycles on the read
data and back-pressure on ``o_stream``, each word where the layout says, nothing elsewhere."""
import random

from amaranth import Signal, Value

from firmware import image as im
from firmware.image import EngineConfig
from hw.engine.loader import Loader, LoadKind
from sim.runner import SIM_BUILD, run_cocotb
from sim.bench import read_result, write_case

CFG = EngineConfig(lanes=4, in_lanes=2, rb_depth=64, w_depth=32, groups=8, lut_depth=64,
                   chan_depth=64, chunk=16, res_depth=64, fifo_depth=64, max_burst=64)


def _expected(kind, wrap, words):
    """(writes, streams) the loader must make for a read: writes as [port, addr, en, data
    lane], streams as [stream, word]."""
    P, ew = CFG.lanes, CFG.entry_words
    writes, streams = [], []
    for i, w in enumerate(words):
        streams.append(["data", w])
        entry, slot = divmod(i, wrap + 1)
        if kind == LoadKind.WEIGHTS:
            writes.append(["wram_w", entry, 1 << slot, w])
        elif kind == LoadKind.PARAMS:
            if slot < 4:
                writes.append(["hdr_w", entry, 1 << slot, w])
            else:
                lane, quarter = divmod(slot - 4, 4)
                writes.append(["lane_w", entry * P + lane, 1 << quarter, w])
        elif kind == LoadKind.LUT:
            writes.append(["lut_w", i, 1, w])
        elif kind == LoadKind.CHAN:
            writes.append(["chan_w", i, 1, w])
        elif kind == LoadKind.VEC_B:
            writes.append(["buf_w", i % CFG.chunk, 1, w])     # a chunk's words at most
        elif kind == LoadKind.ROW:
            streams.append(["rows", w])
        elif kind == LoadKind.RESIDUAL:
            streams.append(["res", w])
    assert ew == 4
    return writes, sorted(streams)


def _lane(port, en, data):
    """The 16-bit lane of a write's data that its enable selects (the loader repeats the word
    over every lane)."""
    if port in ("wram_w", "hdr_w", "lane_w"):
        lane = en.bit_length() - 1
        return (data >> (16 * lane)) & 0xFFFF
    return data


def _ports(component):
    """The component's port signals (an always-ready stream's ``ready`` is a constant, not a
    port)."""
    values = (Value.cast(value) for _, _, value in component.signature.flatten(component))
    return [value for value in values if isinstance(value, Signal)]


def test_loader_every_kind_under_stalls():
    rng = random.Random(7)
    word = lambda: rng.randrange(1 << 16)  # noqa: E731
    gw = CFG.group_words
    reads = [
        {"kind": LoadKind.NONE, "wrap": 0, "to_out": 1, "words": [word() for _ in range(150)]},
        {"kind": LoadKind.DESC, "wrap": 0, "to_out": 0,
         "words": [word() for _ in range(im.DESC_WORDS)]},
        {"kind": LoadKind.WEIGHTS, "wrap": CFG.entry_words - 1, "to_out": 0,
         "words": [word() for _ in range(3 * CFG.entry_words + 2)]},
        {"kind": LoadKind.PARAMS, "wrap": gw - 1, "to_out": 0,
         "words": [word() for _ in range(2 * gw)]},
        *({"kind": k, "wrap": 0, "to_out": 0, "words": [word() for _ in range(40)]}
          for k in (LoadKind.LUT, LoadKind.CHAN, LoadKind.VEC_B, LoadKind.ROW,
                    LoadKind.RESIDUAL)),
    ]
    case = write_case(SIM_BUILD / "loader.case.json", {
        "seed": 3, "reads": [{**r, "kind": r["kind"].value} for r in reads]})
    dut = Loader(CFG)
    run_cocotb(dut, name="loader", test_module="sim.tb_loader", ports=_ports(dut),
               extra_env={"CASE": case})
    res = read_result(case)
    assert len(res) == len(reads)
    for read, got in zip(reads, res):
        what = f"{read['kind'].name} read"
        words = read["words"]
        assert got["count"] == len(words), what
        if read["to_out"]:
            assert got["o_stream"] == [w - (1 << 16) if w >> 15 else w for w in words], what
        else:
            assert got["o_stream"] == [], what
        writes, streams = _expected(read["kind"], read["wrap"], words)
        assert sorted(got["streams"]) == streams, what
        seen = [[p, a, en, _lane(p, en, d)] for p, a, en, d in got["writes"]]
        assert seen == writes, what
        if read["kind"] == LoadKind.DESC:
            assert int(got["desc"]) == sum(w << (16 * i) for i, w in enumerate(words)), what
