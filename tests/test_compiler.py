"""Firmware compiler: binary layout round trips and the errors that name the layer."""
import copy
import json
import re

import numpy as np
import pytest
from amaranth import Shape

from firmware import image as im
from firmware.compiler import CompileError, compile_artifact
from firmware.image import EngineConfig, ImageError
from quant.fixedpoint import Fmt
from tests.engine_nets import build

CFG = EngineConfig(lanes=8, in_lanes=4, rb_depth=512, w_depth=128, groups=16, lut_depth=512,
                   chan_depth=128, chunk=16, fifo_depth=256)


def test_descriptor_round_trip():
    rng = np.random.default_rng(1)
    fields = {}
    for name, field in im.Descriptor:
        shape = Shape.cast(field.shape)
        bits = shape.width
        lo, hi = ((-(1 << (bits - 1)), (1 << (bits - 1)) - 1) if shape.signed
                  else (0, (1 << bits) - 1))
        fields[name] = int(rng.integers(lo, hi, endpoint=True))
    words = im.pack_descriptor(fields)
    assert words.shape == (im.DESC_WORDS,)
    assert im.unpack_descriptor(words) == fields


def test_descriptor_layout_is_documented_and_word_aligned():
    """The module docstring's field table lists the layout's fields in order with their
    widths, and every field starts and ends on a 16-bit word (memory dumps stay readable)."""
    rows = re.findall(r"^(\w+(?:, \w+)*)\s+(s?)(\d+)\s", im.__doc__.split("field          bits")[1],
                      re.M)
    documented = [(name, sg == "s", int(bits)) for names, sg, bits in rows
                  for name in names.split(", ")]
    fields = [(name, Shape.cast(f.shape).signed, f.width) for name, f in im.Descriptor]
    assert documented == fields
    for name, f in im.Descriptor:
        assert f.offset % im.WORD_BITS == 0 and f.width % im.WORD_BITS == 0, name
    assert set(im.Flag.__members__) == {n.upper() for n, _ in im.Flags if n[0] != "_"}


def test_descriptor_errors_name_the_field():
    with pytest.raises(ImageError, match="'k'"):
        im.pack_descriptor({"k": 1 << 16})
    with pytest.raises(ImageError, match="'lut_off'"):
        im.pack_descriptor({"lut_off": 40000})
    with pytest.raises(ImageError, match="unknown field 'bogus'"):
        im.pack_descriptor({"bogus": 1})


def test_bytes_and_words_round_trip():
    v = np.random.default_rng(2).integers(-128, 128, 101)
    assert np.array_equal(im.unpack_bytes(im.pack_bytes(v), v.size), v)
    w = np.random.default_rng(3).integers(-32768, 32768, 50)
    assert np.array_equal(im.from_words(im.to_words(w)), w)
    with pytest.raises(ImageError):
        im.pack_bytes([200])


def test_hex_round_trip(tmp_path):
    w = np.random.default_rng(4).integers(0, 1 << 16, 77).astype(np.uint16)
    im.write_hex(w, tmp_path / "m.hex")
    assert np.array_equal(im.read_hex(tmp_path / "m.hex"), w)


@pytest.mark.parametrize("kind", ["pointwise_parts_shuffle_dw", "se", "add", "maxpool",
                                  "linear", "depthwise_s2"])
def test_image_unpacks_to_the_program(kind):
    net = build(kind)
    art = net.artifact()
    c = compile_artifact(art, CFG)
    assert c.descriptors[-1]["kind"] == "end"
    for i, d in enumerate(c.descriptors):
        got = im.unpack_descriptor(c.words[i * im.DESC_WORDS:(i + 1) * im.DESC_WORDS])
        for k, v in d.items():
            if k in im.FIELD_NAMES:
                assert got[k] == v, (d["name"], k)
    # weights of the first dense conv come back in entry order
    d = next(d for d in c.descriptors if d["kind"] == "conv")
    ent = im.unpack_bytes(c.words[d["w_addr"]:d["w_addr"] + d["w_words"]],
                          d["w_words"] * 2).reshape(-1, CFG.lanes, CFG.in_lanes)
    w = art.arrays[art.op(d["name"])["parts"][0]["weight"]]
    k = d["k"]
    n_cig = d["groups_detail"][0][2]
    for j in range(min(CFG.lanes, w.shape[0])):
        for tap in range(k * k):
            for l in range(min(CFG.in_lanes, w.shape[1])):
                assert ent[tap * n_cig + l // CFG.in_lanes, j, l] == w[j, l, tap // k, tap % k]
    # tensors do not overlap and lie inside the image
    spans = sorted((t["addr"], t["addr"] + int(np.prod(t["shape"])) // (2 if t.get("packed")
                                                                         else 1))
                   for t in c.tensors.values() if t["stored"])
    assert all(a[1] <= b[0] for a, b in zip(spans, spans[1:]))
    assert spans[-1][1] <= c.words.size and spans[0][0] >= c.tensor_base
    json.dumps(c.memory_map())


def test_fusions():
    c = compile_artifact(build("pointwise_parts_shuffle_dw").artifact(), CFG)
    kinds = [d["kind"] for d in c.descriptors]
    assert "activation" not in kinds and "shuffle" not in kinds
    dw = next(d for d in c.descriptors if d["name"] == "dw")
    assert dw["flags"] & im.Flag.SHUFFLE and dw["flags"] & im.Flag.ACT
    assert c.tensors["shuf"]["shuffled_from"] == "pw.act"
    assert not c.tensors["pw"]["stored"]


def test_se_fusions():
    """SE scale -> a flag on the projection (reads the unscaled tensor, gate at b_addr);
    average pool -> sums accumulated by the depthwise conv, the pool skips its read pass."""
    c = compile_artifact(build("se_block").artifact(), CFG)
    by = {d["name"]: d for d in c.descriptors}
    assert "se" not in by and not c.tensors["se"]["stored"]
    proj = by["proj"]
    assert proj["flags"] & im.Flag.SCALE
    assert proj["a_addr"] == c.tensors["dw.act"]["addr"]
    assert proj["b_addr"] == c.tensors["se.gate"]["addr"]
    assert by["dw"]["flags"] & im.Flag.POOL
    assert by["se.pool"]["flags"] & im.Flag.POOL and by["se.pool"]["n_elems"] == 0
    plain = compile_artifact(build("se_block").artifact(), CFG, fuse_scale=False,
                             fuse_pool=False)
    names = [d["name"] for d in plain.descriptors]
    assert "se" in names and not any(d.get("flags", 0) & (im.Flag.SCALE | im.Flag.POOL)
                                     for d in plain.descriptors)


def test_residual_fusion():
    """The residual add -> a flag on the projection: it reads the other operand (r_addr) and
    writes the sum to the add's tensor; the projection's own output is not stored."""
    c = compile_artifact(build("se_block").artifact(), CFG)
    by = {d["name"]: d for d in c.descriptors}
    assert "res" not in by and not c.tensors["proj"]["stored"]
    proj = by["proj"]
    assert proj["flags"] & im.Flag.RESID and proj["r_addr"] == c.tensors["stem.act"]["addr"]
    assert proj["out_addr"] == c.tensors["res"]["addr"]
    # the residual (stem.act, 8 bits) is packed: two elements a word
    assert c.tensors["stem.act"]["packed"] and proj["flags"] & im.Flag.PACK_RES
    assert proj["r_words"] == proj["OW"] * proj["OC"] // 2
    plain = compile_artifact(build("se_block").artifact(), CFG, fuse_resid=False)
    assert "res" in [d["name"] for d in plain.descriptors] and plain.tensors["proj"]["stored"]
    # a residual row larger than the engine's FIFO: the add stays a VEC pass
    tiny = EngineConfig(**{**CFG.to_dict(), "res_depth": 64})
    assert "res" in [d["name"] for d in compile_artifact(build("se_block").artifact(),
                                                          tiny).descriptors]


def test_packing():
    """8-bit tensors written whole by one conv and read only as conv rows or residuals are
    packed two a word; a tensor the shuffle or the output reads stays one a word."""
    c = compile_artifact(build("blocks").artifact(), CFG)
    by = {d["name"]: d for d in c.descriptors}
    assert all(c.tensors[t].get("packed") for t in ("stem.act", "r1", "r2"))
    assert by["stem"]["flags"] & im.Flag.PACK_OUT
    assert by["p2"]["flags"] & (im.Flag.PACK_IN | im.Flag.PACK_OUT | im.Flag.PACK_RES) == \
        im.Flag.PACK_IN | im.Flag.PACK_OUT | im.Flag.PACK_RES
    assert by["p2"]["row_words"] == by["p2"]["W"] * by["p2"]["C"] // 2
    assert not c.tensors["head"].get("packed")          # read by OUTPUT
    shuf = compile_artifact(build("pointwise_parts_shuffle_dw").artifact(), CFG)
    assert not shuf.tensors["pw.act"].get("packed")     # read through the shuffle
    plain = compile_artifact(build("blocks").artifact(), CFG, pack=False)
    assert not any(t.get("packed") for t in plain.tensors.values())
    # the loaders sign-extend a packed byte: an unsigned 8-bit tensor is not packed
    unsigned = compile_artifact(_mutate("blocks", lambda a: a.tensors["r1"].__setitem__(
        "fmt", Fmt(False, 8, 4))), CFG)
    assert not unsigned.tensors["r1"].get("packed") and unsigned.tensors["r2"].get("packed")


def _mutate(kind, fn):
    art = build(kind).artifact()
    art = copy.deepcopy(art)
    fn(art)
    return art


def test_error_wide_tensor():
    def f(a):
        a.tensors["stem.act"]["fmt"] = Fmt(True, 20, 4)
    with pytest.raises(CompileError, match="stem.*wider than the engine's 16-bit"):
        compile_artifact(_mutate("depthwise_s2", f), CFG)


def test_error_unknown_op():
    def f(a):
        a.program[-1]["op"] = "softmax"
    with pytest.raises(CompileError, match="layer 'dw.act'.*'softmax'"):
        compile_artifact(_mutate("depthwise_s2", f), CFG)


def test_error_shuffle_groups():
    def f(a):
        a.op("shuf")["groups"] = 4
    with pytest.raises(CompileError, match="layer 'shuf'.*4 groups"):
        compile_artifact(_mutate("pointwise_parts_shuffle_dw", f), CFG)


def test_error_misaligned_part():
    def f(a):
        a.op("pw")["parts"][1]["in"][0] = 5
    with pytest.raises(CompileError, match="layer 'pw'.*in_lanes"):
        compile_artifact(_mutate("pointwise_parts_shuffle_dw", f), CFG)


def test_error_row_buffer():
    small = EngineConfig(lanes=8, in_lanes=4, rb_depth=8, chunk=16, fifo_depth=256)
    with pytest.raises(CompileError, match="layer 'stem'.*rb_depth"):
        compile_artifact(build("depthwise_s2").artifact(), small)


def test_error_accumulator():
    def f(a):
        a.op("dw")["acc_bits"] = 40
    with pytest.raises(CompileError, match="layer 'dw'.*40 bits"):
        compile_artifact(_mutate("depthwise_s2", f), CFG)


def test_config_validation():
    with pytest.raises(ImageError, match="lanes"):
        EngineConfig(lanes=12)
    with pytest.raises(ImageError, match="in_lanes"):
        EngineConfig(lanes=4, in_lanes=8)


def test_error_pool_over_too_few_channels():
    """The engine's channel sums need 3 cycles between two updates of one channel."""
    def f(a):
        pool = next(op for op in a.program if op["op"] == "avgpool")
        a.tensors[pool["inputs"][0]]["shape"][0] = 2
    with pytest.raises(CompileError, match="se.pool.*2 channels.*at least 3"):
        compile_artifact(_mutate("se", f), CFG, fuse_pool=False)


def test_cycle_model_by_kind_adds_up_to_the_frame():
    """The per-kind table of docs/ENGINE.md (`make sim`'s estimated_cycles_by_kind) splits the
    model's total without loss, and puts each descriptor where its shape says."""
    from hw.engine.cycles import cycles_by_kind, descriptor_kind, estimate_cycles
    for net, kinds in (("se_block", {"depthwise", "dense", "dense_residual", "linear", "other"}),
                       ("maxpool", {"max_pool", "dense", "other"})):
        c = compile_artifact(build(net).artifact(), CFG)
        by = cycles_by_kind(c)
        assert sum(by.values()) == estimate_cycles(c)["total"]
        assert {k for k, v in by.items() if v} == kinds, net
        assert {descriptor_kind(d) for d in c.descriptors} == kinds, net
