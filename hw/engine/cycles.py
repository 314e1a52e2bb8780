"""Cycle model of :class:`hw.engine.layer_engine.Engine`: ``estimate_cycles(program, config)``.

``program`` is a compiled image (:class:`firmware.compiler.Compiled`) or its list of
descriptor dicts. The model follows the implementation phase by phase (it is checked against
the simulation, tests/test_engine.py and ``make sim``):

- every descriptor: fetch (``DESC_WORDS`` words + one memory latency) and a drain (with the
  CORDIC activation unit, its pipeline is that much longer);
- memory transfers move one word per cycle after a command latency (``mem_latency``) per
  command of at most ``max_burst`` words; reads and writes share the one port;
- CONV: load weights, group parameters, the table and (SE scale fused) the gate vector; then
  per output row the new input rows not prefetched (port), then the multiplier array issues ``k*k*n_cig`` (dense) or ``k*k`` (depthwise) steps
  (plus two cycles for the group's header) per group and pixel while the serializer emits
  ``n_valid + 2`` cycles per group and the
  port writes ``n_out`` words per pixel (whole pixels gathered into commands of up to
  ``gather_words``): the row takes the longest of the three; with
  ``Flag.PREFETCH`` the next input row (if its slot is free) loads meanwhile, its words
  sharing the port with the writes; with ``Flag.RESID`` the row's residual (``r_words``)
  is read before the row starts;
- VEC: per chunk, read the operand(s) and write the result over the port (3 transfers for
  add, 2 otherwise, 1 for average pooling plus its ``C`` results; a pool fused into the conv
  before it has ``n_elems`` = 0: only the ``C`` results);
- INPUT / OUTPUT: one element per cycle.
"""
import math

from firmware import image as im

FETCH_OVERHEAD = 7
OP_OVERHEAD = 6
RES_OVERHEAD = 6          # the residual row's read: start_read's site, FSM steps
ROW_OVERHEAD = 15         # row-load command (start_read's site, then a registered start),
#                           FSM steps (2 settling), the 6-stage load pipeline, the MAC array's
#                           second RAM-output register


def _xfer(n, cfg):
    """Port cycles to move ``n`` words in commands of at most ``max_burst``."""
    if n <= 0:
        return 0
    cmds = math.ceil(n / cfg.max_burst)
    return n + cmds * (cfg.mem_latency + 1)


def _activation_drain(cfg) -> int:
    """Post-pipeline stages beyond the table's two that a CONV or VEC descriptor drains."""
    if cfg.activation == "cordic":
        from hw.engine.activation import cordic_latency
        return cordic_latency(cfg.cordic_iterations, cfg.cordic_width) - 2
    return 0


def descriptor_cycles(d, cfg) -> int:
    op = d["opcode"]
    c = im.DESC_WORDS + cfg.mem_latency + FETCH_OVERHEAD
    if op == im.Opcode.END:
        return c
    c += OP_OVERHEAD
    if op in (im.Opcode.CONV, im.Opcode.VEC):
        c += _activation_drain(cfg)
    if op == im.Opcode.INPUT:
        n = d["n_elems"]
        return c + n + math.ceil(n / cfg.chunk) * (cfg.mem_latency + 1)
    if op == im.Opcode.OUTPUT:
        return c + _xfer(d["n_elems"], cfg)
    if op == im.Opcode.VEC:
        n, C = d["n_elems"], d["C"]
        chunks = math.ceil(n / cfg.chunk)
        mode = d["mode"]
        per = cfg.mem_latency + 7      # command latency, FSM steps, 3 cycles of settling
        if mode == im.VecOp.ADD:
            c += 3 * n + chunks * 3 * per
        elif mode == im.VecOp.AVGPOOL:
            c += n + chunks * per + C + _xfer(C, cfg) + 8
        else:
            pre = C if mode in (im.VecOp.SCALE, im.VecOp.PRELU) else d.get("lut_n", 0)
            c += _xfer(pre, cfg) + 2 * n + chunks * 2 * per
        return c
    if op == im.Opcode.CONV:
        c += _xfer(d["w_words"], cfg) + _xfer(d["n_groups"] * cfg.group_words, cfg) + 6
        if d["flags"] & im.Flag.ACT:
            c += _xfer(d.get("lut_n", 0), cfg)
        c += 2
        if d["flags"] & im.Flag.SCALE:      # the SE gate vector
            c += _xfer(d["C"], cfg)
        k, s, pad = d["k"], d["stride"], d["pad"]
        H, W, C = d["H"], d["W"], d["C"]
        OH, OW = d["OH"], d["OW"]
        groups = d["groups_detail"]
        if d["mode"] == im.ConvMode.DENSE:
            steps = sum(k * k * g[2] for g in groups)
        else:
            steps = k * k * len(groups)
        steps += 2 * len(groups)    # two cycles per group: the issue stage reads its header
        ser = sum(g[0] + 2 for g in groups)
        n_out = d["n_out"]
        # the row's write commands: whole pixels gathered up to gather_words (n_out == OC),
        # else one request per pixel
        ppr = max(1, cfg.gather_words // n_out) if n_out == d["OC"] else 1
        reqs = math.ceil(OW / ppr)
        per_word = 2 if d["flags"] & im.Flag.PACK_OUT else 1     # elements a word
        wr_row = OW * n_out // per_word + reqs * math.ceil(ppr * n_out / per_word /
                                                            cfg.max_burst) * (cfg.mem_latency + 1)
        prefetch = d["flags"] & im.Flag.PREFETCH
        row_xfer = _xfer(W * C // (2 if d["flags"] & im.Flag.PACK_IN else 1), cfg)
        loaded = 0
        for oy in range(OH):
            top = oy * s - pad
            need = min(H - 1, top + k - 1)
            new = max(0, need + 1 - loaded)
            loaded += new
            c += new * row_xfer + ROW_OVERHEAD
            if d["flags"] & im.Flag.RESID:
                c += _xfer(d["r_words"], cfg) + RES_OVERHEAD
            body = max(OW * steps, OW * ser, wr_row)
            if prefetch and loaded < H and loaded <= top + k:
                # the next row shares the port with this row's writes
                loaded += 1
                body = max(body, row_xfer + wr_row)
            c += body + 8
        return c
    raise ValueError(f"descriptor {d.get('name')!r}: unknown opcode {op}")


def estimate_cycles(program, config=None) -> dict:
    """``{"total": cycles per frame, "per_descriptor": [(name, cycles), ...],
    "frames_per_second": at config.clock_mhz}``."""
    descs = program.descriptors if hasattr(program, "descriptors") else program
    cfg = config or program.config
    per = [(d["name"], descriptor_cycles(d, cfg)) for d in descs]
    total = sum(c for _, c in per)
    return {"total": total, "per_descriptor": per,
            "frames_per_second": cfg.clock_mhz * 1e6 / total}


#: The kinds of :func:`cycles_by_kind`, in the order docs/ENGINE.md tabulates them.
KINDS = ("depthwise", "dense", "dense_residual", "linear", "max_pool", "other")


def descriptor_kind(d) -> str:
    """What a descriptor computes, for the per-kind table: ``depthwise`` (with any fused
    pool sums), ``dense`` (stem, expands, strided projections), ``dense_residual`` (a
    projection with the residual add fused), ``linear`` (a dense conv on a 1x1 map: the SE
    FCs, the final linear), ``max_pool``, or ``other`` (INPUT, VEC, OUTPUT, END)."""
    if d["opcode"] != im.Opcode.CONV:
        return "other"
    if d["mode"] == im.ConvMode.DEPTHWISE:
        return "depthwise"
    if d["mode"] == im.ConvMode.MAX:
        return "max_pool"
    if d["H"] == 1 and d["W"] == 1:
        return "linear"
    return "dense_residual" if d["flags"] & im.Flag.RESID else "dense"


def cycles_by_kind(program, config=None) -> dict:
    """Modelled cycles per frame summed by :func:`descriptor_kind` (every kind in
    :data:`KINDS`, zero when absent)."""
    descs = program.descriptors if hasattr(program, "descriptors") else program
    cfg = config or program.config
    out = dict.fromkeys(KINDS, 0)
    for d in descs:
        out[descriptor_kind(d)] += descriptor_cycles(d, cfg)
    return out


def traffic_words(program) -> dict:
    """Words moved over the memory port per frame, by kind."""
    descs = program.descriptors if hasattr(program, "descriptors") else program
    t = {"weights_params_tables": 0, "activations_read": 0, "activations_written": 0}
    for d in descs:
        op = d["opcode"]
        if op == im.Opcode.CONV:
            table = d.get("lut_n", 0) if d["flags"] & im.Flag.ACT else 0   # (CORDIC: none)
            t["weights_params_tables"] += d["w_words"] + d["n_groups"] * \
                program.config.group_words + table + (d["C"] if d["flags"] & im.Flag.SCALE else 0)
            k, s, pad, H = d["k"], d["stride"], d["pad"], d["H"]
            rows = min(H, (d["OH"] - 1) * s - pad + k)
            t["activations_read"] += rows * d["W"] * d["C"] // \
                (2 if d["flags"] & im.Flag.PACK_IN else 1)
            t["activations_written"] += d["OH"] * d["OW"] * d["n_out"] // \
                (2 if d["flags"] & im.Flag.PACK_OUT else 1)
            if d["flags"] & im.Flag.RESID:
                t["activations_read"] += d["OH"] * d["r_words"]
        elif op == im.Opcode.VEC:
            n = d["n_elems"]
            t["activations_read"] += n * (2 if d["mode"] == im.VecOp.ADD else 1)
            t["activations_written"] += d["C"] if d["mode"] == im.VecOp.AVGPOOL else n
        elif op == im.Opcode.INPUT:
            t["activations_written"] += d["n_elems"]
        elif op == im.Opcode.OUTPUT:
            t["activations_read"] += d["n_elems"]
    t["total"] = sum(t.values())
    return t
