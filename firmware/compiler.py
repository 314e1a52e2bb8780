"""Firmware compiler: quantized-model artifact + engine configuration -> memory image.

    python -m firmware.compiler --artifact build/quant/seesaw_shuffle --board ulx3s \\
        --out build/ulx3s/memory.bin          # also writes memory.json (the map) beside it

The artifact's layer program (:mod:`quant.artifact`) becomes a list of binary descriptors for
:class:`hw.engine.layer_engine.Engine` (layout: :mod:`firmware.image` and docs/ENGINE.md), with everything a
descriptor points at packed behind the descriptor table: group parameter records (bias,
multiplier, shift), weight entries in the order the engine's weight RAM holds them, activation
tables, per-channel vectors; then one region per activation tensor.

Fusions the compiler makes (each removes a pass over memory):

- ``conv``/``linear`` followed by the ``activation`` that is the only reader of its output:
  one CONV descriptor with the table applied after requantization (the pre-activation tensor
  never exists in memory);
- ``shuffle`` (2 groups): no descriptor; the CONV that reads the shuffled tensor permutes the
  channels while loading its input rows (the tensor in memory is the unshuffled one);
- ``scale_channels`` (SE excitation) read only by convs: no descriptor; those convs read the
  unscaled tensor and multiply each word by its channel's gate while loading their input rows
  (``Flag.SCALE``; the scaled tensor never exists in memory);
- ``avgpool`` (SE squeeze) of the output of a conv compiled to one descriptor that directly
  precedes it: the conv accumulates the per-channel sums while writing its output
  (``Flag.POOL``), the pool descriptor only requantizes and writes the ``C`` results;
- ``add`` (residual) of the output of a conv (no activation) compiled to one descriptor that
  directly precedes it and is its only reader: the conv reads the other operand one output
  row ahead and writes the sum (``Flag.RESID``; the conv's own output never exists in memory).

Packing: a tensor of at most 8 bits that one CONV writes whole (``n_out == OC``) and only
CONVs read -- as input rows without shuffle or SE scale, or as a fused residual -- is stored
two elements a word (channel ``2i`` in the low byte, ``2i + 1`` in the high byte; flags
``Flag.PACK_OUT`` / ``Flag.PACK_IN`` / ``Flag.PACK_RES``): the block inputs and outputs.

Anything the engine cannot run stops compilation with a :class:`CompileError` naming the layer:
a format wider than 16 bits, an accumulator wider than 32 bits, a part boundary that is not
aligned to the lanes, a row that does not fit the row buffer, an op of an unknown kind.
"""
import json
import math
import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from . import image as im
from .image import EngineConfig, ImageError
from quant import cli, files
from quant.cli import UserError

ACC_BITS = 32


class CompileError(UserError, ValueError):
    """The artifact holds something the engine cannot run; the message names the layer."""


@dataclass
class Compiled:
    """Result of :func:`compile_artifact`.

    ``words``: the whole memory image (uint16); ``descriptors``: one dict per descriptor
    (fields plus ``name``/``kind``); ``tensors``: tensor name -> map entry (``addr``, ``shape``
    CHW, ``fmt``, ``stored``: whether it exists in memory, ``shuffled_from`` for aliases);
    ``tensor_base``: first tensor word; ``config``: the engine configuration."""
    words: np.ndarray
    descriptors: list
    tensors: dict
    tensor_base: int
    config: EngineConfig
    variant: str = ""
    blocks: dict = field(default_factory=dict)

    @property
    def input(self):
        return self.tensors["input"]

    def memory_map(self) -> dict:
        return {"variant": self.variant, "config": self.config.to_dict(),
                "words": int(self.words.size), "tensor_base": self.tensor_base,
                "desc_words": im.DESC_WORDS,
                "descriptors": self.descriptors, "tensors": self.tensors,
                "constants": self.blocks}

    def tensor(self, words, name) -> np.ndarray:
        """Read tensor ``name`` (CHW int64) out of a memory dump ``words``."""
        t = self.tensors[name]
        if not t["stored"]:
            raise KeyError(f"tensor {name!r} is not stored in memory ({t.get('note', '')})")
        c, h, w = _chw(t["shape"])
        if t.get("packed"):
            flat = im.unpack_bytes(np.asarray(words)[t["addr"]:t["addr"] + c * h * w // 2],
                                   c * h * w)
        else:
            flat = im.from_words(np.asarray(words)[t["addr"]:t["addr"] + c * h * w])
        return flat.reshape(h, w, c).transpose(2, 0, 1).reshape(t["shape"])


def _chw(shape):
    shape = list(shape)
    if len(shape) == 1:
        return shape[0], 1, 1
    if len(shape) == 3:
        return tuple(shape)
    raise CompileError(f"tensor shape {shape} is neither (C,) nor (C, H, W)")


class _Builder:
    def __init__(self, config):
        self.cfg = config
        self.chunks = []          # list of uint16 arrays after the descriptor table
        self.size = 0
        self.blocks = {}

    def add(self, name, words):
        words = np.asarray(words, dtype=np.uint16)
        if self.size % 2:
            self.chunks.append(np.zeros(1, np.uint16))
            self.size += 1
        addr = self.size
        self.chunks.append(words)
        self.size += words.size
        self.blocks[name] = {"offset": addr, "words": int(words.size)}
        return addr


def _fits16(fmt, layer, what):
    if fmt.n_word > 16:
        raise CompileError(f"layer {layer!r}: {what} format {fmt.fxp_dtype} is wider than the "
                           f"engine's 16-bit words")


#: An average pool's channel sums are updated by a 3-cycle read-modify-write (hw/engine/layer_engine.py).
POOL_MIN_CHANNELS = 3


def compile_artifact(artifact, config: EngineConfig = None, fuse_scale=True,
                     fuse_pool=True, fuse_resid=True, pack=True) -> Compiled:
    """Compile an :class:`quant.artifact.Artifact` (or its folder) for ``config``.

    ``fuse_scale`` / ``fuse_pool`` / ``fuse_resid``: make the SE scale, average-pool and
    residual-add fusions (module docstring); off, each runs as its own VEC pass. ``pack``:
    store the 8-bit tensors that allow it two elements a word."""
    from quant import activation as act
    if not hasattr(artifact, "program"):
        from quant.artifact import load
        artifact = load(artifact)
    cfg = config or EngineConfig()
    prog = artifact.program
    consumers = {}
    for op in prog:
        for t in op["inputs"]:
            consumers.setdefault(t, []).append(op)
    producer = {op["output"]: op for op in prog}

    # --- which ops fuse --------------------------------------------------------------------
    fused_act = {}            # conv/linear name -> activation op
    skip = set()
    shuffled = {}             # shuffle output tensor -> its input tensor
    fused_scale = {}          # conv name -> the scale_channels op applied on its row load
    for op in prog:
        kind = op["op"]
        if kind in ("conv", "linear"):
            cons = consumers.get(op["output"], [])
            if len(cons) == 1 and cons[0]["op"] == "activation":
                fused_act[op["name"]] = cons[0]
                skip.add(cons[0]["name"])
        elif kind == "shuffle":
            if op["groups"] != 2:
                raise CompileError(f"layer {op['name']!r}: channel shuffle with "
                                   f"{op['groups']} groups; the engine permutes 2 groups")
            src = op["inputs"][0]
            if src in shuffled:
                raise CompileError(f"layer {op['name']!r}: shuffle of a shuffled tensor")
            for c in consumers.get(op["output"], []):
                if c["op"] not in ("conv",):
                    raise CompileError(f"layer {c['name']!r}: reads the shuffled tensor "
                                       f"{op['output']!r}; only a conv can apply the shuffle "
                                       f"on load")
            shuffled[op["output"]] = src
            skip.add(op["name"])
        elif kind == "scale_channels" and fuse_scale:
            cons = consumers.get(op["output"], [])
            x = op["inputs"][0]
            if (cons and op is not prog[-1] and x not in shuffled
                    and all(c["op"] == "conv" and c["inputs"] == [op["output"]] for c in cons)
                    and _chw(artifact.tensors[x]["shape"])[0] <= cfg.chan_depth):
                for c in cons:
                    fused_scale[c["name"]] = op
                skip.add(op["name"])

    # --- tensor map ---------------------------------------------------------------------------
    tensors = {}
    for name, t in artifact.tensors.items():
        tensors[name] = {"shape": list(t["shape"]), "fmt": t["fmt"].to_dict(), "stored": True}
    for conv_name, a in fused_act.items():
        pre = a["inputs"][0]
        tensors[pre].update(stored=False, note=f"fused into {conv_name!r} (activation "
                                                f"{a['name']!r} applied before the write)")
    for out, src in shuffled.items():
        tensors[out].update(stored=False, shuffled_from=src,
                            note=f"channel shuffle of {src!r}, applied on load")
    for conv_name, sc in fused_scale.items():
        tensors[sc["output"]].update(stored=False, note=f"SE scale {sc['name']!r} applied while "
                                                        f"{conv_name!r} loads its input rows")
    for name, t in tensors.items():
        fmt = artifact.tensors[name]["fmt"]
        if t["stored"]:
            _fits16(fmt, producer[name]["name"] if name in producer else name, f"tensor {name!r}")

    b = _Builder(cfg)
    descs = []

    def T(name):
        return tensors[name]

    # --- per-op descriptors ------------------------------------------------------------------
    for li, op in enumerate(prog):
        kind, name = op["op"], op["name"]
        if name in skip:
            continue
        outname = op["output"]
        if kind in ("conv", "linear") and name in fused_act:
            outname = fused_act[name]["output"]
        d = {"layer": li, "name": name, "kind": kind}
        if kind == "input":
            c, h, w = _chw(T(outname)["shape"])
            scale, offset = int(op["scale"]), int(op["offset"])
            if scale <= 0 or scale & (scale - 1):
                raise CompileError(f"layer {name!r}: input scale {scale} is not a power of two")
            fmt = artifact.fmt(outname)
            d.update(opcode=im.Opcode.INPUT, H=h, W=w, C=c, OH=h, OW=w, OC=c, n_elems=h * w * c,
                     sa=int(math.log2(scale)), sb=0, offset=offset, sat_lo=fmt.lo,
                     sat_hi=fmt.hi, out_tensor=outname)
            descs.append(d)
        elif kind in ("conv", "linear", "maxpool"):
            descs.extend(_conv_descs(artifact, op, outname, fused_act.get(name), shuffled, b,
                                     cfg, li, fused_scale.get(name)))
        elif kind in ("add", "scale_channels", "prelu", "activation", "avgpool"):
            x = op["inputs"][0]
            if x in shuffled or (len(op["inputs"]) > 1 and op["inputs"][1] in shuffled):
                raise CompileError(f"layer {name!r}: reads a shuffled tensor")
            c, h, w = _chw(T(x)["shape"])
            out = artifact.fmt(outname)
            _fits16(out, name, "output")
            d.update(opcode=im.Opcode.VEC, mode=im.VEC_OPS[kind], H=h, W=w, C=c,
                     n_elems=h * w * c, sat_lo=out.lo, sat_hi=out.hi, in_tensors=op["inputs"],
                     out_tensor=outname)
            if c > cfg.chan_depth:
                raise CompileError(f"layer {name!r}: {c} channels exceed the engine's "
                                   f"chan_depth {cfg.chan_depth}")
            if kind == "add":
                fa, fb = (artifact.fmt(t).n_frac for t in op["inputs"])
                f = max(fa, fb)
                sa, sb, so = f - fa, f - fb, f - out.n_frac
                if so < 0:
                    sa, sb, so = sa - so, sb - so, 0
                if max(sa, sb) > 15:
                    raise CompileError(f"layer {name!r}: add alignment shift {max(sa, sb)} > 15")
                if so > 15:
                    raise CompileError(f"layer {name!r}: add rounding shift {so} > 15")
                d.update(sa=sa, sb=sb, shift=so, add_shifts=(sa, sb))
            elif kind == "scale_channels":
                d.update(shift=int(op["shift"]))
            elif kind == "prelu":
                slope = artifact.arrays[op["slope"]]
                addr = b.add(f"{name}.slope", im.to_words(slope, f"layer {name!r} slope"))
                d.update(w_addr=addr, w_words=slope.size, shift=int(op["slope_frac"]))
            elif kind == "activation":
                spec = act.ActivationSpec.from_dict(op["spec"])
                d.update(_activation(b, name, spec, cfg))
                d.update(sat_lo=spec.in_fmt.lo, sat_hi=spec.in_fmt.hi)
            elif kind == "avgpool":
                if int(op["acc_bits"]) > ACC_BITS:
                    raise CompileError(f"layer {name!r}: pool sum needs {op['acc_bits']} bits, "
                                       f"more than {ACC_BITS}")
                d.update(mult=int(op["multiplier"]), shift=int(op["shift"]))
                if d["C"] < POOL_MIN_CHANNELS:
                    raise CompileError(f"layer {name!r}: average pool over {d['C']} channels; "
                                       f"the engine's sum RAM needs at least "
                                       f"{POOL_MIN_CHANNELS} (a channel's read-modify-write "
                                       f"takes 3 cycles)")
            descs.append(d)
        elif kind == "shuffle":
            raise CompileError(f"layer {name!r}: unfused shuffle")  # pragma: no cover
        else:
            raise CompileError(f"layer {name!r}: op {kind!r} is not supported by the engine")
    if fuse_pool:
        _fuse_pools(descs, tensors)
    if fuse_resid and cfg.res_depth:
        descs = _fuse_residuals(descs, tensors, consumers, cfg)
    if pack and cfg.lanes >= 2:
        _pack_narrow(descs, tensors)
    final = prog[-1]["output"]
    c, h, w = _chw(T(final)["shape"])
    descs.append({"layer": len(prog) - 1, "name": "output", "kind": "output",
                  "opcode": im.Opcode.OUTPUT, "n_elems": c * h * w, "C": c, "H": h, "W": w,
                  "in_tensors": [final]})
    descs.append({"layer": len(prog) - 1, "name": "end", "kind": "end", "opcode": im.Opcode.END})

    # --- addresses ----------------------------------------------------------------------------
    table_words = len(descs) * im.DESC_WORDS
    const_base = table_words + (table_words % 2)
    addr = const_base + b.size
    addr += (-addr) % 64
    tensor_base = addr
    for name, t in tensors.items():
        if t["stored"]:
            c, h, w = _chw(t["shape"])
            t["addr"] = addr
            addr += c * h * w // (2 if t.get("packed") else 1)
            addr += (-addr) % 16
    for t in tensors.values():
        if not t["stored"] and "shuffled_from" in t:
            t["addr"] = tensors[t["shuffled_from"]]["addr"]
    if addr > 1 << im.ADDR_BITS:
        raise CompileError(f"image needs {addr} words, more than the {1 << im.ADDR_BITS} "
                           f"addressable")
    words = np.zeros(addr, dtype=np.uint16)
    pos = const_base
    for ch in b.chunks:
        words[pos:pos + ch.size] = ch
        pos += ch.size
    for blk in b.blocks.values():
        blk["offset"] += const_base

    out_descs = []
    for i, d in enumerate(descs):
        fields = {k: v for k, v in d.items() if k in im.FIELD_NAMES}
        for key in ("w_addr", "p_addr", "lut_addr"):
            if key in d:
                fields[key] = d[key] + const_base
        if "in_tensors" in d:
            ins = d["in_tensors"]
            fields["a_addr"] = tensors[ins[0]]["addr"]
            if len(ins) > 1:
                fields["b_addr"] = tensors[ins[1]]["addr"]
        if "out_tensor" in d:
            fields["out_addr"] = tensors[d["out_tensor"]]["addr"] + d.get("out_lo", 0)
        if "res_tensor" in d:
            fields["r_addr"] = tensors[d["res_tensor"]]["addr"]
        if d.get("opcode") == im.Opcode.CONV:
            fields.update(row_entries=d["W"] * -(-d["C"] // cfg.lanes),
                          row_words=d["W"] * d["C"] // (2 if d["flags"] & im.Flag.PACK_IN else 1),
                          p_words=d["n_groups"] * cfg.group_words)
        try:
            words[i * im.DESC_WORDS:(i + 1) * im.DESC_WORDS] = im.pack_descriptor(fields)
        except ImageError as e:
            raise CompileError(f"layer {d['name']!r}: {e}") from None
        extra = {"groups_detail": d["groups_detail"]} if "groups_detail" in d else {}
        out_descs.append(dict(fields, name=d["name"], kind=d["kind"], **extra,
                              **({"in_tensors": d["in_tensors"]} if "in_tensors" in d else {}),
                              **({"out_tensor": d["out_tensor"]} if "out_tensor" in d else {}),
                              **({"res_tensor": d["res_tensor"]} if "res_tensor" in d else {})))
    return Compiled(words=words, descriptors=out_descs, tensors=tensors, tensor_base=tensor_base,
                    config=cfg, variant=artifact.variant, blocks=b.blocks)


def _fuse_pools(descs, tensors):
    """Average pool right after the one CONV descriptor that writes its whole input: the
    conv accumulates the channel sums (indexed by the channel's place in the output pixel,
    so the conv must write every channel of the pixel) and the pool skips its read pass."""
    for i, d in enumerate(descs):
        if d.get("kind") != "avgpool" or i == 0:
            continue
        prev = descs[i - 1]
        x = d["in_tensors"][0]
        if (prev.get("opcode") == im.Opcode.CONV and prev.get("out_tensor") == x
                and prev["out_lo"] == 0 and prev["n_out"] == prev["OC"] == d["C"]
                and d["C"] >= 2 and prev["OH"] * prev["OW"] == d["H"] * d["W"]):
            prev["flags"] |= im.Flag.POOL
            d["flags"] = d.get("flags", 0) | im.Flag.POOL
            d["n_elems"] = 0
            d["pool_fused_into"] = prev["name"]


def _fuse_residuals(descs, tensors, consumers, cfg):
    """A residual add right after the one CONV descriptor that writes one of its operands
    (the whole tensor, no activation, no pool sums) and is that tensor's only reader: the conv
    adds the other operand to each result (``Flag.RESID``) and writes the sum; the add's
    descriptor is dropped and the conv's own output is not stored. An output row of the
    residual must fit the engine's residual FIFO (``res_depth``); else the add stays a pass."""
    out = []
    for d in descs:
        prev = out[-1] if out else None
        if (d.get("kind") == "add" and prev is not None and prev.get("opcode") == im.Opcode.CONV
                and prev.get("out_tensor") in d["in_tensors"]
                and prev["out_lo"] == 0 and prev["n_out"] == prev["OC"]
                and not prev["flags"] & (im.Flag.ACT | im.Flag.POOL)
                and len(consumers.get(prev["out_tensor"], [])) == 1
                and prev["OH"] * prev["OW"] * prev["OC"] == d["n_elems"]
                and prev["OW"] * prev["OC"] <= cfg.res_depth):
            mine = d["in_tensors"].index(prev["out_tensor"])
            conv_out = prev["out_tensor"]
            shifts = d["add_shifts"]
            prev["flags"] |= im.Flag.RESID
            prev.update(sa=shifts[mine], sb=shifts[1 - mine], shift=d["shift"],
                        r_lo=d["sat_lo"], r_hi=d["sat_hi"], r_words=prev["OW"] * prev["OC"],
                        res_tensor=d["in_tensors"][1 - mine], out_tensor=d["out_tensor"])
            tensors[conv_out].update(stored=False, note=f"residual add {d['name']!r} fused "
                                                        f"into {prev['name']!r}")
            continue
        out.append(d)
    return out


def _pack_narrow(descs, tensors):
    """Mark the tensors stored two 8-bit elements a word (module docstring) and flag their
    writer and readers."""
    aliased = {t["shuffled_from"] for t in tensors.values() if "shuffled_from" in t}
    for name, t in tensors.items():
        c, h, w = _chw(t["shape"])
        # (the loaders sign-extend a packed byte: an unsigned 8-bit tensor stays one a word)
        if (not t["stored"] or t["fmt"]["n_word"] > 8 or not t["fmt"]["signed"] or c % 2
                or name in aliased):
            continue
        writers = [d for d in descs if d.get("out_tensor") == name]
        readers = [d for d in descs if name in d.get("in_tensors", ())]
        res_readers = [d for d in descs if d.get("res_tensor") == name]
        if not (len(writers) == 1 and writers[0].get("opcode") == im.Opcode.CONV
                and writers[0]["n_out"] == writers[0]["OC"] and writers[0]["out_lo"] == 0
                and readers + res_readers
                and all(d.get("opcode") == im.Opcode.CONV and d["in_tensors"] == [name]
                        and not d["flags"] & (im.Flag.SHUFFLE | im.Flag.SCALE)
                        for d in readers)):
            continue
        t["packed"] = True
        writers[0]["flags"] |= im.Flag.PACK_OUT
        for d in readers:
            d["flags"] |= im.Flag.PACK_IN
        for d in res_readers:
            d["flags"] |= im.Flag.PACK_RES
            d["r_words"] //= 2


def _activation(b, name, spec, cfg):
    """Descriptor fields of the activation ``spec`` on the engine's unit: a table in the image
    (``lut``) or the CORDIC's run-time formats (``cordic``)."""
    from quant import activation as act
    if spec.out_fmt.n_word > 16:
        raise CompileError(f"layer {name!r}: activation output {spec.out_fmt.fxp_dtype} is "
                           f"wider than 16 bits")
    if cfg.activation == "cordic":
        from hw.engine.activation import activation_config, activation_config_layout
        try:        # the engine's unit: 16-bit signed codes in, 17-bit out (the defaults)
            config = activation_config(spec, iterations=cfg.cordic_iterations,
                                       width=cfg.cordic_width)
        except ValueError as e:
            raise CompileError(f"layer {name!r}: {e}") from None
        packed = activation_config_layout().const(config).as_value().value
        return {"act_cfg": packed, "flags": im.Flag.ACT}
    if 1 << spec.in_fmt.n_word > cfg.lut_depth:
        raise CompileError(f"layer {name!r}: activation input {spec.in_fmt.fxp_dtype} needs a "
                           f"{1 << spec.in_fmt.n_word}-entry table, more than lut_depth "
                           f"{cfg.lut_depth}")
    t = act.table(spec)
    addr = b.add(f"{name}.table", im.to_words(t, f"layer {name!r} table"))
    return {"lut_addr": addr, "lut_n": t.size, "lut_off": spec.in_fmt.lo,
            "flags": im.Flag.ACT}


def _conv_descs(artifact, op, outname, act_op, shuffled, b, cfg, li, scale_op=None):
    """CONV descriptors of a conv, linear or maxpool op (split into output chunks that fit
    the weight and parameter RAMs). ``scale_op``: a fused SE scale of the input."""
    from quant import activation as act
    P, L = cfg.lanes, cfg.in_lanes
    name, kind = op["name"], op["op"]
    x = op["inputs"][0]
    shuffle = x in shuffled
    src = shuffled.get(x, x)
    in_shape = artifact.tensors[x]["shape"]
    C, H, W = _chw(in_shape)
    pre = artifact.fmt(op["output"])
    outshape = artifact.tensors[outname]["shape"]
    OC, OH, OW = _chw(outshape)
    _fits16(artifact.fmt(x), name, "input")
    _fits16(pre, name, "output")
    if kind == "linear":
        wt = artifact.arrays[op["weight"]]
        if C * H * W != wt.shape[1]:
            raise CompileError(f"layer {name!r}: linear input {in_shape} has "
                               f"{C * H * W} values, weight wants {wt.shape[1]}")
        if H * W != 1:
            raise CompileError(f"layer {name!r}: linear on a {H}x{W} map; the engine runs "
                               f"linear layers on vectors (1x1) only")
        parts = [{"in": [0, C], "out": [0, wt.shape[0]], "w": wt.reshape(*wt.shape, 1, 1)}]
        k, stride, pad, mode = 1, 1, 0, im.ConvMode.DENSE
    elif kind == "maxpool":
        if (op["kernel"], op["stride"]) != (2, 2):
            raise CompileError(f"layer {name!r}: only 2x2 stride-2 max pooling is supported")
        parts = [{"in": [0, C], "out": [0, C], "w": np.zeros((C, 1, 2, 2), np.int64)}]
        k, stride, pad, mode = 2, 2, 0, im.ConvMode.MAX
    else:
        parts = [{"in": p["in"], "out": p["out"], "w": artifact.arrays[p["weight"]]}
                 for p in op["parts"]]
        k, stride, pad = int(op["kernel"]), int(op["stride"]), int(op["padding"])
        mode = im.ConvMode.DEPTHWISE if op["depthwise"] else im.ConvMode.DENSE
        if int(op["acc_bits"]) > ACC_BITS:
            raise CompileError(f"layer {name!r}: accumulator needs {op['acc_bits']} bits, more "
                               f"than the engine's {ACC_BITS}")
    for p in parts:
        if p["w"].size and np.abs(p["w"]).max() > 127:
            raise CompileError(f"layer {name!r}: weights wider than 8 bits")
    CE = -(-C // P)
    if k * W * CE > cfg.rb_depth:
        raise CompileError(f"layer {name!r}: {k} rows of {W}x{C} need {k * W * CE} row-buffer "
                           f"entries, more than rb_depth {cfg.rb_depth}")
    if kind == "maxpool":
        bias = np.zeros(OC, np.int64)
        mult = np.ones(OC, np.int64)
        shift = np.zeros(OC, np.int64)
    else:
        bias = np.asarray(artifact.arrays[op["bias"]], np.int64)
        mult = np.asarray(artifact.arrays[op["multiplier"]], np.int64).reshape(-1)
        shift = np.asarray(artifact.arrays[op["shift"]], np.int64).reshape(-1)
        if mult.size == 1:
            mult = np.full(OC, mult[0])
        if shift.size == 1:
            shift = np.full(OC, shift[0])
    if bias.size and (bias.min() < -(1 << 31) or bias.max() >= 1 << 31):
        raise CompileError(f"layer {name!r}: bias wider than 32 bits")

    # groups of <= P output channels, each inside one part
    groups = []           # (o_lo, n_valid, in_lo, n_cig, part)
    for p in parts:
        o0, o1 = p["out"]
        i0, i1 = p["in"]
        for g0 in range(o0, o1, P):
            n = min(P, o1 - g0)
            if mode == im.ConvMode.DENSE:
                if i0 % L:
                    raise CompileError(f"layer {name!r}: part input range {p['in']} does not "
                                       f"start on a multiple of in_lanes {L}")
                groups.append((g0, n, i0, -(-(i1 - i0) // L), p))
            else:
                if g0 % P or i0 != o0:
                    raise CompileError(f"layer {name!r}: depthwise part {p['out']} is not "
                                       f"aligned to {P} lanes")
                groups.append((g0, n, g0, 1, p))
    taps = k * k
    entries = [taps * g[3] if mode == im.ConvMode.DENSE else -(-taps // L) for g in groups]

    # chunks: consecutive groups that fit the weight RAM and the parameter RAM
    chunks, cur, used = [], [], 0
    for gi, e in enumerate(entries):
        if e > cfg.w_depth:
            raise CompileError(f"layer {name!r}: one group needs {e} weight entries, more than "
                               f"w_depth {cfg.w_depth}")
        if cur and (used + e > cfg.w_depth or len(cur) == cfg.groups):
            chunks.append(cur)
            cur, used = [], 0
        cur.append(gi)
        used += e
    chunks.append(cur)

    lut = {}
    if act_op is not None:
        spec = act.ActivationSpec.from_dict(act_op["spec"])
        lut = _activation(b, act_op["name"], spec, cfg)
    descs = []
    for ci, chunk in enumerate(chunks):
        ew = cfg.entry_words
        wbuf, prec, wbase = [], [], 0
        for gi in chunk:
            g0, n, in_lo, n_cig, p = groups[gi]
            w = np.asarray(p["w"], np.int64)
            o0, i0, i1 = p["out"][0], p["in"][0], p["in"][1]
            ent = np.zeros((entries[gi], P, L), np.int64)
            for j in range(n):
                oc = g0 + j - o0
                for tap in range(taps):
                    dy, dx = divmod(tap, k)
                    if mode == im.ConvMode.DENSE:
                        for cig in range(n_cig):
                            for l in range(L):
                                ic = in_lo + cig * L + l
                                if ic < i1:
                                    ent[tap * n_cig + cig, j, l] = w[oc, ic - i0, dy, dx]
                    else:
                        ent[tap // L, j, tap % L] = w[oc, 0, dy, dx]
            wbuf.append(ent)
            rec = np.zeros(cfg.group_words, np.int64)
            rec[:4] = [n, in_lo, n_cig, wbase]
            for j in range(n):
                c = g0 + j
                bv = int(bias[c]) & 0xFFFFFFFF
                m, s = int(mult[c]), int(shift[c])
                if not (0 <= m < 1 << 17 and 0 <= s < 64):
                    raise CompileError(f"layer {name!r}: channel {c}: multiplier {m} / shift {s} "
                                       f"out of range")
                rec[4 + 4 * j:8 + 4 * j] = [bv & 0xFFFF, bv >> 16, m & 0xFFFF,
                                            (m >> 16) | (s << 8)]
            prec.append(rec)
            wbase += entries[gi]
        wall = np.concatenate(wbuf).reshape(-1, P * L)
        wwords = np.concatenate([im.pack_bytes(e) for e in wall]) if wall.size else \
            np.zeros(0, np.uint16)
        assert wwords.size == wall.shape[0] * ew or P * L == 1
        tag = f"{name}.{ci}" if len(chunks) > 1 else name
        w_addr = b.add(f"{tag}.weights", wwords)
        p_addr = b.add(f"{tag}.params", np.concatenate(prec).astype(np.uint16))
        out_lo = groups[chunk[0]][0]
        n_out = sum(groups[gi][1] for gi in chunk)
        d = {"layer": li, "name": tag, "kind": kind, "opcode": im.Opcode.CONV, "mode": mode,
             "flags": (im.Flag.SHUFFLE if shuffle else 0)
                      | (im.Flag.PREFETCH if (k + 1) * W * CE <= cfg.rb_depth else 0),
             "H": H, "W": W, "C": C,
             "OH": OH, "OW": OW, "OC": OC, "n_out": n_out, "k": k, "stride": stride,
             "pad": pad, "n_groups": len(chunk), "w_addr": w_addr, "w_words": wwords.size,
             "p_addr": p_addr, "rows": k, "sat_lo": pre.lo, "sat_hi": pre.hi,
             "in_tensors": [src], "out_tensor": outname, "out_lo": out_lo,
             "groups_detail": [[groups[gi][1], groups[gi][2], groups[gi][3]] for gi in chunk]}
        if lut:
            d.update({kk: v for kk, v in lut.items() if kk != "flags"})
            d["flags"] |= im.Flag.ACT
        if shuffle and C % 2:
            raise CompileError(f"layer {name!r}: shuffle of an odd channel count {C}")
        if scale_op is not None:
            sfmt = artifact.fmt(scale_op["output"])
            d["flags"] |= im.Flag.SCALE
            d["in_tensors"] = list(scale_op["inputs"])       # unscaled tensor, gate vector
            d.update(ls_shift=int(scale_op["shift"]), ls_lo=sfmt.lo, ls_hi=sfmt.hi,
                     scale_fused=scale_op["name"])
            if not 1 <= int(scale_op["shift"]) < 32:
                raise CompileError(f"layer {scale_op['name']!r}: scale shift "
                                   f"{scale_op['shift']} outside 1..31")
        descs.append(d)
    return descs


def compile_files(artifact_dir, board="ulx3s", out=None, **overrides) -> Compiled:
    """``board``: a name of the repository's boards.yaml or a loaded ``Board``."""
    from hw.board.boards import get_board
    cfg = EngineConfig.from_board(get_board(board) if isinstance(board, str) else board,
                                  **overrides)
    c = compile_artifact(artifact_dir, cfg)
    if out is not None:
        out = Path(out)
        files.write_bytes(out, c.words.astype("<u2").tobytes())
        files.write_text(out.with_suffix(".json"), json.dumps(c.memory_map(), indent=1) + "\n")
    return c


def load_image(path):
    """``(words, memory map)`` of a ``memory.bin`` written by this module."""
    path = Path(path)
    words = np.fromfile(path, dtype="<u2")
    return words, json.loads(path.with_suffix(".json").read_text())


def main(argv=None):
    return cli.run(_main, argv, prog="python -m firmware.compiler")


def _main(argv):
    p = cli.ArgumentParser(prog="python -m firmware.compiler", description=__doc__.split(
        "\n")[0])
    p.add_argument("--artifact", required=True, help="quantized-model folder (build/quant/V)")
    p.add_argument("--board", default="ulx3s", help="board of boards.yaml (engine config)")
    p.add_argument("--boards-file", default=None, help="another boards.yaml")
    p.add_argument("--out", default=None, help="memory.bin (default build/<board>/memory.bin)")
    a = p.parse_args(argv)
    from hw.board.boards import get_board
    board = get_board(a.board, a.boards_file)     # BoardError names the file, board and field
    out = a.out or f"build/{board.name}/memory.bin"
    if Path(out).is_dir():
        raise cli.UserError(f"--out {out}", "is a folder, not a file")
    c = compile_files(a.artifact, board, out)
    n_conv = sum(d["kind"] in ("conv", "linear", "maxpool") for d in c.descriptors)
    print(f"{c.variant}: {len(c.descriptors)} descriptors ({n_conv} conv/linear), "
          f"{c.tensor_base} words of program and constants, {c.words.size} words in all "
          f"({c.words.size * 2 / 2**20:.2f} MiB) -> {out} (+ .json map)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
