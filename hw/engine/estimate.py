"""Pre-synthesis estimate: cycles per layer and per frame, and resources, of the compute engine.

Used by the build flow (estimate before synthesis) and the simulation report (estimate beside the
measured cycles). The cycle models of the pointwise and depthwise arrays are the ones their
cocotb tests check against measured cycles (within 10 %, measured: within 0.1 %).

    from hw.engine.estimate import EngineConfig, estimate, resources, zoo_program
    cfg = EngineConfig(pw_lanes=32, vec=8, clock_mhz=100)
    report = estimate(zoo_program("seesaw_shuffle"), cfg)   # report["fps"], report["layers"]
    resources(cfg)                                          # LUT4, TRELLIS_FF, MULT18X18D, DP16KD

Layer program
-------------
A list of dicts (the quantizer's manifest gives them): ``op`` (``conv``, ``linear``, or an
element-wise op: ``act``, ``add``, ``scale``, ``pool``, ``prelu``), ``in_c``, ``out_c``,
``h``, ``w`` (input size), ``kernel``, ``stride``, ``groups``, optional ``padding`` (default
``kernel // 2``) and ``split`` (list of ``[in_count, out_count]`` for Seesaw's uneven groups run
as one layer). A ``conv`` with ``groups == in_c == out_c`` runs on the depthwise array; one with
``kernel == 1`` on the pointwise array; any other conv (the 3-channel stem) is assumed to run on
the pointwise array as an im2col product (``in_c * k * k`` inputs per output pixel, the window
gathered by the line buffer). Anything else raises ``ValueError`` naming the layer.

Assumptions (stated, not measured)
----------------------------------
* Layers run one after another; a layer's weights load before it computes (the arrays have one
  weight bank). The weight stream delivers ``weight_bytes_per_cycle`` bytes a cycle (16-bit
  SDRAM at the engine clock: 2), so loading a layer costs
  ``max(rows, weight_bytes / weight_bytes_per_cycle)``. ``prefetch=True`` models a second weight
  bank (load hidden under the previous layer's compute).
* Layers whose weight rows exceed the weight memory run in output-channel passes.
* Element-wise ops (activation, residual add, SE scale, pooling) stream ``vec`` channels a cycle.
"""
import math
from dataclasses import asdict, dataclass, fields

from quant.fixedpoint import Fmt

from hw.engine import depthwise, pointwise
from hw.engine.requantize import M_WIDTH, S_WIDTH, chunk_widths


@dataclass(frozen=True)
class EngineConfig:
    """The compute engine's parameters (a board's ``engine`` section in boards.yaml)."""
    pw_lanes: int = 32                  # pointwise MAC lanes
    vec: int = 8                        # channels per stream transfer = depthwise lanes
    clock_mhz: float = 100.0
    a_width: int = 8
    w_width: int = 8
    acc_width: int = 32                 # pointwise accumulator
    dw_acc_width: int = 24              # depthwise accumulator (7x7 taps of s8 x s8: 21 bits)
    bias_width: int = 32
    out_width: int = 8
    pw_weight_depth: int = 2048         # weight rows (P weights each)
    max_in: int = 512
    max_out: int = 512
    max_size: int = 112
    lb_depth: int = 4096                # line-buffer words (vec channels each)
    max_k: int = 7
    weight_bytes_per_cycle: float = 2.0
    prefetch: bool = False

    @classmethod
    def from_dict(cls, d: dict) -> "EngineConfig":
        names = {f.name for f in fields(cls)}
        unknown = set(d) - names
        if unknown:
            raise ValueError(f"unknown engine configuration keys: {sorted(unknown)}")
        return cls(**d)

    @property
    def pointwise(self) -> pointwise.PointwiseParams:
        return pointwise.PointwiseParams(
            lanes=self.pw_lanes, vec=self.vec, a_width=self.a_width, w_width=self.w_width,
            acc_width=self.acc_width, bias_width=self.bias_width,
            out_fmt=Fmt(True, self.out_width, 0), weight_depth=self.pw_weight_depth,
            max_in=self.max_in, max_out=self.max_out, max_pixels=self.max_size ** 2)

    @property
    def depthwise(self) -> depthwise.DepthwiseParams:
        return depthwise.DepthwiseParams(
            vec=self.vec, a_width=self.a_width, w_width=self.w_width,
            acc_width=self.dw_acc_width, bias_width=self.bias_width,
            out_fmt=Fmt(True, self.out_width, 0), lb_depth=self.lb_depth, max_k=self.max_k,
            max_size=self.max_size, max_cg=self.max_out // self.vec)


def _cfg(engine_config) -> EngineConfig:
    if isinstance(engine_config, EngineConfig):
        return engine_config
    return EngineConfig.from_dict(dict(engine_config))


# -- cycles ----------------------------------------------------------------------------------

def _pointwise_cycles(cfg, in_c, split, pixels, weight_bytes):
    p = cfg.pointwise
    rows = sum(-(-og // p.lanes) * ig for ig, og in split)
    passes = max(1, -(-rows // p.weight_depth))
    m = pointwise.layer_cycles(p, split, in_c, pixels)
    load = max(m["load"], math.ceil(weight_bytes / cfg.weight_bytes_per_cycle))
    compute = m["total"] - m["load"] + (passes - 1) * (pointwise.ISSUE_TO_OUT + 2)
    return load, compute, passes


def layer_estimate(layer: dict, engine_config, index=0) -> dict:
    """Cycles of one layer: ``{"unit", "load", "compute", "cycles", "macs"}``."""
    cfg = _cfg(engine_config)
    op = layer.get("op")
    name = layer.get("name", f"layer {index}")
    V = cfg.vec
    if op in ("act", "add", "scale", "pool", "prelu", "shuffle"):
        c, h, w = layer["in_c"], layer.get("h", 1), layer.get("w", 1)
        n = h * w * -(-c // V)
        return {"name": name, "unit": "elementwise", "load": 0, "compute": n, "cycles": n,
                "macs": 0}
    if op == "linear":
        layer = dict(layer, op="conv", kernel=1, stride=1, groups=1, h=1, w=1)
        op = "conv"
    if op != "conv":
        raise ValueError(f"{name}: op {op!r} is not supported by the estimate")
    in_c, out_c = layer["in_c"], layer["out_c"]
    h, w = layer.get("h", 1), layer.get("w", 1)
    k, s, groups = layer.get("kernel", 1), layer.get("stride", 1), layer.get("groups", 1)
    pad = layer.get("padding", k // 2)
    oh, ow = (h + 2 * pad - k) // s + 1, (w + 2 * pad - k) // s + 1
    if groups == in_c == out_c and groups > 1:
        p = cfg.depthwise
        m = depthwise.layer_cycles(p, in_c, h, w, k, s, pad)
        load = max(m["load"], math.ceil(in_c * k * k / cfg.weight_bytes_per_cycle))
        compute = m["total"] - m["load"]
        macs = oh * ow * in_c * k * k
        unit = "depthwise"
    elif groups == 1 or "split" in layer:
        split = [tuple(g) for g in layer.get("split", [(in_c * k * k, out_c)])]
        kin = in_c * k * k
        pix = oh * ow
        wbytes = sum(ig * og for ig, og in split)
        load, compute, _ = _pointwise_cycles(cfg, -(-kin // V) * V, split, pix, wbytes)
        macs = pix * wbytes
        unit = "pointwise" if k == 1 else "pointwise(im2col)"
    else:
        raise ValueError(f"{name}: grouped conv with groups={groups} (in {in_c}, out {out_c}) "
                         "is neither depthwise nor an uneven split")
    cycles = compute if cfg.prefetch else load + compute
    return {"name": name, "unit": unit, "load": load, "compute": compute, "cycles": cycles,
            "macs": macs}


def estimate(program, engine_config) -> dict:
    """Cycles per layer and per frame of a layer program (see the module docstring)."""
    cfg = _cfg(engine_config)
    layers = [layer_estimate(layer, cfg, i) for i, layer in enumerate(program)]
    total = sum(x["cycles"] for x in layers)
    by_unit = {}
    for x in layers:
        by_unit[x["unit"]] = by_unit.get(x["unit"], 0) + x["cycles"]
    macs = sum(x["macs"] for x in layers)
    return {"config": asdict(cfg), "layers": layers, "cycles_per_frame": total,
            "cycles_by_unit": by_unit, "macs": macs,
            "frame_ms": total / (cfg.clock_mhz * 1e3),
            "fps": cfg.clock_mhz * 1e6 / total if total else float("inf"),
            "mac_utilisation": macs / (total * (cfg.pw_lanes + cfg.vec)) if total else 0.0}


# -- resources -------------------------------------------------------------------------------

# DP16KD aspect ratios (width, depth) of one 18 Kbit block.
_EBR_SHAPES = ((36, 512), (18, 1024), (9, 2048), (4, 4096), (2, 8192), (1, 16384))


def ebr_blocks(width: int, depth: int) -> int:
    """DP16KD blocks for a ``width`` x ``depth`` memory (best single aspect ratio)."""
    if width <= 0 or depth <= 0:
        return 0
    return min(math.ceil(width / w) * math.ceil(depth / d) for w, d in _EBR_SHAPES)


def _requantizer(acc_width, out_width):
    t = acc_width + 1
    p = t + M_WIDTH
    dsp = len(chunk_widths(t))
    # Registers: t, M, s (DSP inputs), partial products, sum, shifted, output, shift delays.
    ff = t + M_WIDTH + S_WIDTH + sum(w + M_WIDTH for w in chunk_widths(t)) + 2 * p + out_width \
        + 3 * S_WIDTH
    # LUT4: bias add (t), partial-product sum (p), barrel shifter (one 2:1 mux per bit and
    # level), increment (p), saturation compare and mux (~2 out_width + p / 2).
    lut = t + p + p * S_WIDTH + p + 2 * out_width + p // 2
    return {"LUT4": lut, "TRELLIS_FF": ff, "MULT18X18D": dsp, "DP16KD": 0}


def _mac(a, b, acc):
    # a*b in the DSP (input and pipeline registers inside it); accumulator in the fabric: one
    # LUT4 per bit (CCU2C carry chain) and acc flip-flops, plus the first flag.
    return {"LUT4": acc, "TRELLIS_FF": acc + 2, "MULT18X18D": 1, "DP16KD": 0}


def _add(*parts):
    out = {"LUT4": 0, "TRELLIS_FF": 0, "MULT18X18D": 0, "DP16KD": 0}
    for part, n in parts:
        for key in out:
            out[key] += part[key] * n
    return out


def _drain(n_acc, lanes, acc, bias_w, out_w, param_depth):
    bank = {"LUT4": n_acc * acc, "TRELLIS_FF": n_acc * acc + lanes * acc + 40,
            "MULT18X18D": 0,
            "DP16KD": ebr_blocks(lanes * (bias_w + M_WIDTH + S_WIDTH), param_depth)}
    return _add((bank, 1), (_requantizer(max(acc, bias_w), out_w), lanes))


def resources(engine_config) -> dict:
    """LUT4, TRELLIS_FF, MULT18X18D, DP16KD of the pointwise and depthwise arrays (with their
    line buffer, weight memories and requantizers), per unit and in total.

    Derivation: one ``MULT18X18D`` per MAC lane; two per requantizer lane with a 32-bit
    accumulator (:func:`hw.engine.requantize.chunk_widths`); memories in 18 Kbit ``DP16KD`` at the best
    aspect ratio; adders one LUT4 per bit; a barrel shifter one LUT4 per bit and level;
    control counters and handshakes ~400 LUT4 / 300 FF per unit. Activation units, SE, the
    sequencer, SDRAM controller and host link are other units' figures.
    """
    cfg = _cfg(engine_config)
    P, V = cfg.pw_lanes, cfg.vec
    control = {"LUT4": 400, "TRELLIS_FF": 300, "MULT18X18D": 0, "DP16KD": 0}
    pw_mem = {"LUT4": V * cfg.a_width // 2, "TRELLIS_FF": 0, "MULT18X18D": 0,
              "DP16KD": ebr_blocks(P * cfg.w_width, cfg.pw_weight_depth)
              + ebr_blocks(V * cfg.a_width, 2 * cfg.max_in // V)}
    pw = _add((_mac(cfg.a_width, cfg.w_width, cfg.acc_width), P),
              (_drain(P, V, cfg.acc_width, cfg.bias_width, cfg.out_width, cfg.max_out // V), 1),
              (pw_mem, 1), (control, 1))
    cg = cfg.max_out // V
    dw_mem = {"LUT4": 0, "TRELLIS_FF": V * cfg.a_width, "MULT18X18D": 0,
              "DP16KD": ebr_blocks(V * cfg.a_width, cfg.lb_depth)
              + ebr_blocks(V * cfg.w_width, cg * cfg.max_k ** 2)}
    dw = _add((_mac(cfg.a_width, cfg.w_width, cfg.dw_acc_width), V),
              (_drain(V, V, cfg.dw_acc_width, cfg.bias_width, cfg.out_width, cg), 1),
              (dw_mem, 1), (control, 2))      # depthwise control + line-buffer address counters
    total = _add((pw, 1), (dw, 1))
    return {"pointwise": pw, "depthwise": dw, "total": total,
            "device_85f": {"LUT4": 83640, "MULT18X18D": 156, "DP16KD": 208}}


# -- the zoo as a layer program -------------------------------------------------------------

def zoo_program(variant: str, size: int = 112) -> list:
    """Layer program of a zoo model traced with forward hooks: every Conv2d and Linear (the
    SE FCs included). Activations, residual adds and the SE scale are left out: in the streaming
    block engine they sit in the stream behind a PE array and add latency, not cycles."""
    import torch
    from torch import nn

    from quant.zoo import build
    model = build(variant).eval()
    program, hooks = [], []

    def conv_hook(mod, inputs, output):
        x = inputs[0]
        if isinstance(mod, nn.Linear):
            program.append({"name": mod._name, "op": "linear", "in_c": mod.in_features,
                            "out_c": mod.out_features, "h": 1, "w": 1})
            return
        program.append({"name": mod._name, "op": "conv", "in_c": mod.in_channels,
                        "out_c": mod.out_channels, "h": x.shape[2], "w": x.shape[3],
                        "kernel": mod.kernel_size[0], "stride": mod.stride[0],
                        "groups": mod.groups, "padding": mod.padding[0]})

    for name, mod in model.named_modules():
        if isinstance(mod, (nn.Conv2d, nn.Linear)):
            mod._name = name
            hooks.append(mod.register_forward_hook(conv_hook))
    with torch.no_grad():
        model(torch.zeros(1, 3, size, size))
    for h in hooks:
        h.remove()
    return program
