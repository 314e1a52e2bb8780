"""The on-chip streaming schedule: which feature maps stay in block RAM, which pass through
line buffers, what the SDRAM still carries, and the compute bound of a frame.

This is the design model of the streaming engine (docs/ENGINE.md, "Streaming schedule"): it
reads a quantized artifact's layer program and a board, and answers, per layer and per
board, before any HDL exists for it:

- **Buffers.** A stored tensor is *streamed* when every reader is a convolution that follows
  its producer in the program with nothing but element-wise ops between (activation, channel
  shuffle, SE scale on load): it then lives in a line buffer of ``k`` input rows of the reading
  convolution (2 rows for a 1x1 reader, so that the writer fills one while the reader drains
  the other). Every other tensor is held *whole*, from the op that writes it to its last
  reader: the depthwise output that SE scales (the gate needs the whole map), a block input
  that the residual add reads after the SE barrier. Element-wise ops are fused into the
  convolution that writes or reads their tensor, as the current engine does (``Flag.ACT``,
  ``Flag.SHUFFLE``, ``Flag.SCALE``, ``Flag.RESID``): their tensors never exist.
- **Block RAM.** The peak over the program of the live buffers, plus a double buffer for the
  weights of the running and the next *run* (below), in DP16KD blocks of 2 KB of 8- or 16-bit
  data (the ninth bits are not used), against the board's ``resources.DP16KD``. A board that
  cannot hold the peak spills its largest whole tensors to SDRAM until it can, or is refused
  with the resource and the overrun named.
- **Cycles.** A *run* is a chain of convolutions linked by streamed tensors; it keeps both
  arrays busy at once, so it takes ``max(pointwise cycles, depthwise cycles)`` of its layers
  plus the line buffers' fill, and no less than its SDRAM words (weights prefetched during the
  previous run, spills) at one word a cycle. Runs follow each other. Pointwise and dense
  convolutions and the SE linears use the ``pw_out x pw_in`` array (``ceil`` per group of
  channels), depthwise convolutions the ``dw_channels x dw_taps`` array.
- **Post lanes.** Every element a convolution stores leaves through a requantize lane
  (``acc * M >> s``: two MULT18X18D), then the activation and the residual add. Each array
  has ``post_lanes`` of them, so a layer takes at least ``ceil(output elements / post_lanes)``
  cycles: a 64 -> 128 expand on a 16 x 8 array computes a pixel in 64 cycles but emits 128
  elements. The DSP budget pays for the lanes of both arrays and the SE gate's multiplier on
  load.

    python -m hw.engine.plan [--board NAME | --all-boards] [--variant V] [--artifact DIR]
                             [--pw OUTxIN] [--dw CHANNELSxTAPS] [--json PATH]
"""
import argparse
import math
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path

from quant import cli, files
from quant.artifact import Artifact

BRAM_BYTES = 2048           # one DP16KD as 2048 x 9 or 1024 x 18: 2 KB of 8/16-bit data
WORD_BYTES = 2              # the SDRAM word
PORT_EFFICIENCY = 0.95      # measured SDRAM reads: 194.7 MB/s of 200 (reports/sdram_throughput.json)
FIXED_BRAM = 5              # write and residual FIFOs, SE vectors (tables: Plan.fixed_brams)
LANE_MULTIPLIERS = 2        # one requantize lane: acc * M as two 17/18-bit products
CORDIC_MULTIPLIERS = 2      # one CORDIC swish/sigmoid unit (a table needs none)
GATE_MULTIPLIERS = 1        # the SE gate applied on the projection's load
MIN_WEIGHT_BUFFER = 32       # DP16KD: the weight prefetch FIFO takes what the maps leave, at least this
FUSED = ("activation", "shuffle", "scale_channels", "add", "prelu")   # element-wise


class PlanError(cli.UserError, ValueError):
    """The program does not fit the schedule or the board; the message names what."""


@dataclass(frozen=True)
class ArrayShape:
    """The streaming engine's multiplier arrays."""
    pw_out: int = 16        # pointwise array: output channels ...
    pw_in: int = 8          # ... x input channels a cycle
    dw_channels: int = 8    # depthwise array: channels ...
    dw_taps: int = 3        # ... x kernel taps a cycle (it works beside the expand conv, so
                            # a small one is enough)
    post_lanes: int = 4     # requantize lanes behind each array: output elements a cycle

    @property
    def multipliers(self) -> int:
        """Of the two arrays."""
        return self.pw_out * self.pw_in + self.dw_channels * self.dw_taps

    def post_multipliers(self, activation: str) -> int:
        """Of the post lanes of both arrays (with a CORDIC unit each when the activation is
        the CORDIC) and the SE gate."""
        per_lane = LANE_MULTIPLIERS + (CORDIC_MULTIPLIERS if activation == "cordic" else 0)
        return 2 * self.post_lanes * per_lane + GATE_MULTIPLIERS

    def dsp(self, activation: str) -> int:
        return self.multipliers + self.post_multipliers(activation)


@dataclass
class Layer:
    """One compute op of the program in the schedule."""
    name: str
    kind: str               # stem, pointwise, depthwise, linear, avgpool, maxpool, input
    run: int
    macs: int
    cycles: int             # on its array
    array: str              # "pw", "dw" or "-"
    weight_bytes: int
    fill: int = 0           # cycles it waits for its line buffer's first rows


@dataclass
class Buffer:
    tensor: str
    storage: str            # "line" or "whole" or "spilled"
    bytes: int
    first: int              # program positions (compute ops) it is live over
    last: int

    @property
    def brams(self) -> int:
        return 0 if self.storage == "spilled" else math.ceil(self.bytes / BRAM_BYTES)


@dataclass
class Plan:
    variant: str
    board: str
    arrays: ArrayShape
    clock_mhz: float
    layers: list = field(default_factory=list)
    buffers: list = field(default_factory=list)
    runs: list = field(default_factory=list)        # per run: cycles and what bounds it
    bram_budget: int = 0
    dsp: int = 0                                    # MULT18X18D: arrays, post lanes, gate
    activation: str = "lut"

    @property
    def fixed_brams(self) -> int:
        """FIFOs and SE vectors, and with ``activation: lut`` one table (two read ports) for
        every two post lanes."""
        lanes = 2 * self.arrays.post_lanes
        return FIXED_BRAM + (math.ceil(lanes / 2) if self.activation == "lut" else 0)

    @property
    def cycles(self) -> int:
        return sum(r["cycles"] for r in self.runs)

    @property
    def fps(self) -> float:
        return self.clock_mhz * 1e6 / self.cycles

    @property
    def pw_utilisation(self) -> float:
        pw = sum(l.macs for l in self.layers if l.array == "pw")
        return pw / (self.arrays.pw_out * self.arrays.pw_in * self.cycles)

    def peak_brams(self) -> tuple[int, int]:
        """(peak live-buffer DP16KD, program position of the peak)."""
        n = max(b.last for b in self.buffers) + 1
        live = [sum(b.brams for b in self.buffers if b.first <= i <= b.last) for i in range(n)]
        i = max(range(n), key=live.__getitem__)
        return live[i], i

    @property
    def weight_brams(self) -> int:
        """The weight prefetch FIFO: every DP16KD the feature maps and fixed blocks leave."""
        return max(MIN_WEIGHT_BUFFER, self.bram_budget - self.peak_brams()[0] - self.fixed_brams)

    @property
    def brams(self) -> int:
        return self.peak_brams()[0] + self.weight_brams + self.fixed_brams

    @property
    def sdram_words(self) -> int:
        return sum(r["sdram_words"] for r in self.runs)

    def summary(self) -> dict:
        peak, at = self.peak_brams()
        return {
            "variant": self.variant, "board": self.board, "arrays": asdict(self.arrays),
            "multipliers": self.arrays.multipliers, "mult18x18d": self.dsp,
            "clock_mhz": self.clock_mhz,
            "cycles_per_frame": self.cycles, "fps": round(self.fps, 2),
            "pw_utilisation": round(self.pw_utilisation, 4),
            "sdram_words_per_frame": self.sdram_words,
            "dp16kd": {"feature_maps_peak": peak, "peak_at": self.layers[at].name,
                       "weight_buffer": self.weight_brams, "fixed": self.fixed_brams,
                       "total": self.brams, "budget": self.bram_budget},
            "spilled": [b.tensor for b in self.buffers if b.storage == "spilled"],
            "runs": len(self.runs),
        }


def candidate_arrays(board) -> list:
    """For each number of post lanes (1 to 8) and depthwise array of 1 to 16 channels x 1, 3
    or 9 taps, the largest pointwise array (powers of two, most input channels first) that
    the board's MULT18X18D hold beside them."""
    out = []
    for lanes in (8, 4, 2, 1):
        budget = board.resources.MULT18X18D - ArrayShape(
            0, 0, 0, 0, lanes).post_multipliers(board.engine.activation)
        for dc in (16, 8, 4, 2, 1):
            for dt in (9, 3, 1):
                left = budget - dc * dt
                pws = [(o, i) for o in (32, 16, 8, 4, 2, 1) for i in (16, 8, 4, 2, 1)
                       if i <= o and o * i <= left]
                if pws:
                    o, i = max(pws, key=lambda s: (s[0] * s[1], s[1]))
                    out.append(ArrayShape(o, i, dc, dt, lanes))
    if not out:
        raise PlanError(f"board {board.name}: MULT18X18D {board.resources.MULT18X18D} cannot "
                        f"hold a pointwise and a depthwise array")
    return out


def _bytes_per(art: Artifact, tensor: str) -> int:
    return 1 if art.fmt(tensor).n_word <= 8 else 2


def _elements(art: Artifact, tensor: str) -> int:
    return math.prod(art.tensors[tensor]["shape"])


def _weight_bytes(art: Artifact, op) -> int:
    keys = [p["weight"] for p in op["parts"]] if op["op"] == "conv" else [op["weight"]]
    n = sum(art.arrays[k].size for k in keys)
    out_c = art.tensors[op["output"]]["shape"][0]
    return n + 8 * out_c          # int8 weights; bias (32 bits), multiplier and shift per channel


def frame_macs(art: Artifact) -> int:
    """Multiply-accumulates of one frame: every convolution and linear layer's."""
    return sum(_compute_cycles(art, op, ArrayShape())[2] for op in art.program
               if op["op"] in ("conv", "linear"))


def _compute_cycles(art: Artifact, op, a: ArrayShape) -> tuple[str, str, int, int]:
    """(kind, array, MACs, cycles) of one compute op: its array's cycles, or its output
    elements through the post lanes when they take longer."""
    kind = op["op"]
    if kind == "input":
        return "input", "-", 0, 0
    if kind in ("avgpool", "maxpool"):
        # avgpool: the sums accumulate while the depthwise conv writes its output (Flag.POOL);
        # maxpool: 2x2 compares on the depthwise array
        n = _elements(art, op["output"])
        return kind, ("-" if kind == "avgpool" else "dw"), 0, (
            0 if kind == "avgpool" else math.ceil(n / a.dw_channels))
    if kind == "linear":
        w = art.arrays[op["weight"]]
        out_c, in_c = w.shape[0], w.shape[1]
        macs = out_c * in_c
        return "linear", "pw", macs, max(math.ceil(out_c / a.post_lanes), math.ceil(
            out_c / a.pw_out) * math.ceil(in_c / a.pw_in))
    c, oh, ow = art.tensors[op["output"]]["shape"]
    k = op["kernel"]
    post = math.ceil(c / a.post_lanes) * oh * ow
    if op["depthwise"]:
        macs = c * oh * ow * k * k
        cyc = math.ceil(c / a.dw_channels) * math.ceil(k * k / a.dw_taps) * oh * ow
        return "depthwise", "dw", macs, max(cyc, post)
    macs, cyc = 0, 0
    for part in op["parts"]:
        n_in = part["in"][1] - part["in"][0]
        n_out = part["out"][1] - part["out"][0]
        macs += n_out * n_in * k * k * oh * ow
        cyc += math.ceil(n_out / a.pw_out) * math.ceil(n_in * k * k / a.pw_in) * oh * ow
    return ("stem" if k > 1 else "pointwise"), "pw", macs, max(cyc, post)


def _dataflow(prog):
    """The program's compute ops (element-wise ops fused away), the tensor each one stores
    (the end of its epilogue: activation, residual add), and ``reads(tensor)``: the compute
    position and kind of every read of a stored tensor."""
    readers_of = {}
    for op in prog:
        for t in op["inputs"]:
            readers_of.setdefault(t, []).append(op)
    compute = [op for op in prog if op["op"] not in FUSED]
    pos = {op["name"]: i for i, op in enumerate(compute)}
    owner = {}                  # tensor -> compute op that writes it (through its epilogue)
    for op in compute:
        t = op["output"]
        owner[t] = op
        # epilogue: the activation and the residual add that the writing conv applies
        while len(readers_of.get(t, [])) == 1 and readers_of[t][0]["op"] in ("activation",
                                                                              "add"):
            t = readers_of[t][0]["output"]
            owner[t] = op

    def reads(t):
        """(compute position, how) of every read of stored tensor ``t``: ``"rows"`` in
        order (directly, through a shuffle, an activation or the SE scale on load),
        ``"residual"`` (the add fused into another conv's output), ``"other"``."""
        out = []
        for r in readers_of.get(t, []):
            if r["op"] not in FUSED:
                out.append((pos[r["name"]], "rows" if r["op"] == "conv" else "other"))
            elif owner.get(r["output"]) is owner[t]:
                continue                                   # t's own epilogue
            elif r["op"] == "add":
                other = next(i for i in r["inputs"] if i != t)
                out.append((pos[owner[other]["name"]], "residual"))
            else:
                out += [(i, how if r["op"] != "scale_channels" or t == r["inputs"][0]
                         else "other") for i, how in reads(r["output"])]
        return out

    stored = {op["name"]: t for t, op in owner.items()}   # dicts keep the epilogue's order
    return compute, stored, reads


def plan(art: Artifact, board, arrays: ArrayShape | None = None,
         clock_mhz: float | None = None) -> Plan:
    """The schedule of ``art`` on ``board`` (a :class:`hw.board.boards.Board`) with
    ``arrays``, or the fastest of the board's :func:`candidate_arrays`."""
    if arrays is None:
        plans, errors = [], []
        for a in candidate_arrays(board):
            try:
                plans.append(plan(art, board, a, clock_mhz))
            except PlanError as e:
                errors.append(e)
        if not plans:
            raise errors[0]
        return min(plans, key=lambda pl: (pl.cycles, pl.arrays.multipliers))
    compute, stored, reads = _dataflow(art.program)
    pos = {op["name"]: i for i, op in enumerate(compute)}
    a = arrays
    dsp = a.dsp(board.engine.activation)
    if dsp > board.resources.MULT18X18D:
        raise PlanError(f"board {board.name}: MULT18X18D {dsp} needed (arrays "
                        f"{a.multipliers}, post lanes and SE gate {dsp - a.multipliers}), "
                        f"{board.resources.MULT18X18D} available: overrun "
                        f"{dsp - board.resources.MULT18X18D}")
    p = Plan(art.variant, board.name, a, float(clock_mhz or board.clock.target_mhz),
             bram_budget=board.resources.DP16KD, dsp=dsp,
             activation=board.engine.activation)
    for op in compute:
        kind, arr, macs, cyc = _compute_cycles(art, op, a)
        wb = _weight_bytes(art, op) if op["op"] in ("conv", "linear") else 0
        p.layers.append(Layer(op["name"], kind, 0, macs, cyc, arr, wb))
    run = list(range(len(compute)))
    for op in compute:
        t = stored[op["name"]]
        rs = reads(t)
        if not rs:
            continue
        first, last = pos[op["name"]], max(i for i, _ in rs)
        shape = art.tensors[t]["shape"]
        bpe = 1 if op["op"] == "input" else _bytes_per(art, t)
        if len(shape) == 3 and all(how == "rows" and i == first + 1 for i, how in rs):
            c, h, w = shape
            reader = compute[first + 1]
            rows = 2 if reader["kernel"] == 1 else reader["kernel"] + reader["stride"]
            p.buffers.append(Buffer(t, "line", rows * w * c * bpe, first, last))
            run[first + 1] = run[first]
            # the reader waits for its first rows: (rows - 1) rows of the writer
            p.layers[first + 1].fill = (rows - 1) * p.layers[first].cycles // max(1, h)
        else:
            p.buffers.append(Buffer(t, "whole", _elements(art, t) * bpe, first, last))
    for l, r in zip(p.layers, run):
        l.run = r
    _fit(p)
    _time_runs(p, art)
    return p


def _fit(p: Plan):
    """Spill the largest whole tensors to SDRAM until the board's block RAM holds the rest."""
    while p.brams > p.bram_budget:
        whole = [b for b in p.buffers if b.storage == "whole"]
        if not whole:
            raise PlanError(f"board {p.board}: DP16KD {p.brams} needed (line buffers, weights "
                            f"and fixed blocks alone), {p.bram_budget} available: overrun "
                            f"{p.brams - p.bram_budget}")
        max(whole, key=lambda b: b.bytes).storage = "spilled"


def _time_runs(p: Plan, art: Artifact):
    """Runs in program order on the arrays; one SDRAM port serves, in order, each run's
    weight prefetch (into the weight FIFO of :attr:`Plan.weight_brams` blocks: a fetch waits
    until the runs ahead of it in the buffer have finished) and the run's own words (weight
    slices of large layers, spills, the face)."""
    runs = {}
    for i, l in enumerate(p.layers):
        runs.setdefault(l.run, []).append(i)
    spill = [0] * len(p.layers)        # a spilled tensor: written once, read once
    for b in p.buffers:
        if b.storage == "spilled":
            spill[b.first] += b.bytes // WORD_BYTES
            spill[b.last] += b.bytes // WORD_BYTES
    face_words = math.ceil(_elements(art, art.program[0]["output"]) / WORD_BYTES)
    t_port, ends, held = 0, [], []
    buffer = p.weight_brams * BRAM_BYTES
    for j, idx in enumerate(runs[k] for k in sorted(runs)):
        layers = [p.layers[i] for i in idx]
        pw = sum(l.cycles for l in layers if l.array == "pw")
        dw = sum(l.cycles for l in layers if l.array == "dw")
        fill = sum(l.fill for l in layers)
        wb = [l.weight_bytes for l in layers]
        # a layer with more than half the FIFO's bytes streams its weights in slices instead
        prefetch = sum(w for w in wb if w <= buffer // 2)
        if prefetch > buffer:
            prefetch = 0
        own = (math.ceil((sum(wb) - prefetch) / WORD_BYTES) + sum(spill[i] for i in idx)
               + (face_words if j == 0 else 0))
        # room in the weight buffer: the runs ahead of this one that must have finished
        start_fetch, room = t_port, buffer - prefetch
        for i in range(j - 1, -1, -1):
            room -= held[i]
            if room < 0:
                start_fetch = max(start_fetch, ends[i])
                break
        fetched = start_fetch + math.ceil(prefetch / WORD_BYTES / PORT_EFFICIENCY)
        start = max(ends[-1] if ends else 0, fetched)
        own_cycles = math.ceil(own / PORT_EFFICIENCY)
        compute = max(pw, dw) + fill
        ends.append(start + max(compute, own_cycles))
        held.append(prefetch)
        t_port = fetched + own_cycles       # the prefetch stream yields to the run's own words
        waited = start - (ends[-2] if len(ends) > 1 else 0)
        p.runs.append({"layers": [l.name for l in layers], "pw_cycles": pw, "dw_cycles": dw,
                       "fill_cycles": fill, "weight_wait": waited,
                       "sdram_words": math.ceil(prefetch / WORD_BYTES) + own,
                       "cycles": ends[-1] - (ends[-2] if len(ends) > 1 else 0),
                       "bound": ("weights" if waited > 0 else "sdram" if own_cycles > compute
                                 else "dw" if dw > pw else "pw"),
                       "weight_bytes": prefetch})


# ---------------------------------------------------------------------------------------------
def report_md(plans: list, refused=()) -> str:
    lines = ["# Streaming schedule plan", "",
             "Model of the on-chip streaming engine (`python -m hw.engine.plan`, "
             "`hw/engine/plan.py`); figures are the model's, not a simulation.", "",
             "| board | arrays: pw + dw, post lanes (MULT18X18D) | clock MHz | cycles/frame | frames/s "
             "| pw busy | SDRAM words/frame | DP16KD maps (peak at) + weights + fixed = total "
             "/ budget | spilled |",
             "|---|---|---|---|---|---|---|---|---|"]
    for pl in plans:
        s = pl.summary()
        d = s["dp16kd"]
        a = s["arrays"]
        lines.append(
            f"| {s['board']} | {a['pw_out']}x{a['pw_in']} + {a['dw_channels']}x{a['dw_taps']}, "
            f"{a['post_lanes']} ({s['mult18x18d']}) | {s['clock_mhz']:g} | "
            f"{s['cycles_per_frame']:,} | "
            f"{s['fps']:.1f} | {100 * s['pw_utilisation']:.0f} % | "
            f"{s['sdram_words_per_frame']:,} | {d['feature_maps_peak']} ({d['peak_at']}) + "
            f"{d['weight_buffer']} + {d['fixed']} = {d['total']} / {d['budget']} | "
            f"{', '.join(s['spilled']) or '-'} |")
    lines += [f"- refused: {r}" for r in refused]
    pl = plans[0]
    lines += ["", f"## Buffers ({pl.variant}, {pl.board})", "",
              "| tensor | storage | KB | DP16KD | live from | to |", "|---|---|---|---|---|---|"]
    for b in pl.buffers:
        lines.append(f"| {b.tensor} | {b.storage} | {b.bytes / 1024:.1f} | {b.brams} | "
                     f"{pl.layers[b.first].name} | {pl.layers[b.last].name} |")
    lines += ["", f"## Runs ({pl.variant}, {pl.board})", "",
              "| run | layers | pw cycles | dw cycles | fill | weight wait | SDRAM words | "
              "cycles | bound |", "|---|---|---|---|---|---|---|---|---|"]
    for i, r in enumerate(pl.runs):
        lines.append(f"| {i} | {', '.join(r['layers'])} | {r['pw_cycles']:,} | "
                     f"{r['dw_cycles']:,} | {r['fill_cycles']:,} | {r['weight_wait']:,} | "
                     f"{r['sdram_words']:,} | "
                     f"{r['cycles']:,} | {r['bound']} |")
    return "\n".join(lines) + "\n"


def _array_shape(text: str) -> tuple[int, int]:
    """``"16x8"`` -> (16, 16); the option value a user gives."""
    try:
        a, b = (int(v) for v in text.lower().split("x"))
        if a >= 1 and b >= 1:
            return a, b
    except ValueError:
        pass
    raise argparse.ArgumentTypeError(f"expected two positive integers as AxB, not {text!r}")


def main(argv=None) -> int:
    return cli.run(_main, argv, prog="python -m hw.engine.plan")


def _main(argv) -> int:
    from hw.board.boards import get_board, load_boards
    from quant.artifact import load

    ap = cli.ArgumentParser(prog="python -m hw.engine.plan", description=__doc__.split(
        "\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--board", help="board of boards.yaml (default: its default board)")
    ap.add_argument("--all-boards", action="store_true", help="every board of boards.yaml")
    ap.add_argument("--variant", default="seesaw_shuffle")
    ap.add_argument("--artifact", type=Path,
                    help="quantized artifact folder (default build/quant/VARIANT, made by "
                         "python -m quant)")
    ap.add_argument("--pw", type=_array_shape,
                    help="pointwise array, OUTxIN (default: the largest the board's "
                         "MULT18X18D hold beside the depthwise array; 85F: 16x8)")
    ap.add_argument("--dw", type=_array_shape,
                    help="depthwise array, CHANNELSxTAPS (default: the fastest that fits)")
    ap.add_argument("--post-lanes", type=cli.count,
                    help="requantize lanes behind each array (default: the fastest that fits)")
    ap.add_argument("--clock", type=float, help="MHz (default: the board's target)")
    ap.add_argument("--json", type=Path, help="write the plans here (and a .md beside it)")
    args = ap.parse_args(argv)
    arrays = None
    if args.pw or args.dw or args.post_lanes:
        arrays = ArrayShape(*(args.pw or (16, 8)), *(args.dw or (8, 3)), args.post_lanes or 4)
    art_dir = args.artifact or Path("build/quant") / args.variant
    art = load(art_dir)
    boards = list(load_boards().values()) if args.all_boards else [get_board(args.board)]
    plans, refused = [], []
    for b in boards:
        try:
            plans.append(plan(art, b, arrays, args.clock))
        except PlanError as e:
            refused.append(str(e))
    if not plans:
        raise PlanError("; ".join(refused))
    md = report_md(plans, refused)
    print(md)
    if args.json:
        files.write_json(args.json, {
            "command": "python -m hw.engine.plan " + " ".join(argv),
            "artifact": str(art_dir), "quantizer": art.meta.get("quantizer"),
            "plans": [pl.summary() | {"runs_detail": pl.runs} for pl in plans],
            "refused": refused})
        files.write_text(args.json.with_suffix(".md"), md)
        print(f"wrote {args.json} and {args.json.with_suffix('.md')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
