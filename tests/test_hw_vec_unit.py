"""The engine's element-wise unit alone (hw/engine/vec_unit.py) in cocotb + Verilator, on VEC
descriptors, the bench playing the sequencer (sim/tb_vec_unit.py): every operand it hands
the post pipeline equal to the model's, and through the post pipeline's formula
(``ops.requantize`` of ``(x << sa) + (y << sb)``) equal to quant.ops: ``ops.add``,
``ops.scale_channels``, ``ops.prelu``, and for the average pool ``ops.requantize`` of
``ops.channel_sum``. Operands arrive with random gaps, the write FIFO's room (``fits``) and
``req_ok`` hold chunks back at random; chunks of 16 elements, so every descriptor has
several, the last one short. (The fused pool of a CONV, the sums of the post pipeline's
output, is the whole engine's: tests/test_engine.py.)
"""
import numpy as np
import torch

from firmware import image as im
from firmware.image import EngineConfig
from hw.engine.post import Operands
from hw.engine.vec_unit import VecUnit
from quant import ops
from quant.fixedpoint import Fmt
from sim.runner import SIM_BUILD, run_cocotb, signature_ports
from sim.bench import read_result, write_case
from sim.tb_requantize import unpack

CONFIG = EngineConfig(lanes=4, in_lanes=4, chunk=16, chan_depth=64)


def _t(v):
    return torch.tensor(v, dtype=torch.float64)


def post_value(op, fmt):
    """The post pipeline's requantize (its spec) of one operand set."""
    t = (op["x"] << op["sa"]) + (op["y"] << op["sb"])
    return int(ops.requantize(_t([[t]]), op["m"], op["s"], fmt).item())


def make_part(rng, kind, n_pix, C, chunk):
    n = n_pix * C
    out = Fmt(True, 8, int(rng.integers(0, 6)))
    fields = {"opcode": int(im.Opcode.VEC), "mode": int(im.VEC_OPS[kind]), "C": C,
              "n_elems": n, "sat_lo": out.lo, "sat_hi": out.hi,
              "a_addr": int(rng.integers(0, 1 << 20)), "b_addr": int(rng.integers(0, 1 << 20))}
    x_fmt = Fmt(True, int(rng.integers(8, 11)), out.n_frac + int(rng.integers(0, 3)))
    a = rng.integers(x_fmt.lo, x_fmt.hi + 1, n)
    b = np.zeros(n, dtype=np.int64)
    chan = np.zeros(C, dtype=np.int64)
    c_of = np.arange(n) % C
    last = [int(i % chunk == min(chunk, n - i // chunk * chunk) - 1) for i in range(n)]
    X = _t(a.reshape(1, n_pix, C).transpose(0, 2, 1)).reshape(1, C, n_pix, 1)
    want_ops = []
    if kind == "add":
        # 8-bit operands with a finer grid than the sum's: some sums round, a few saturate
        x_fmt = Fmt(True, 8, out.n_frac + 1)
        b_fmt = Fmt(True, 8, out.n_frac + int(rng.integers(1, 3)))
        a = rng.integers(x_fmt.lo, x_fmt.hi + 1, n)
        b = rng.integers(b_fmt.lo, b_fmt.hi + 1, n)
        f = max(x_fmt.n_frac, b_fmt.n_frac)
        sa, sb, so = f - x_fmt.n_frac, f - b_fmt.n_frac, f - out.n_frac
        fields.update(sa=sa, sb=sb, shift=so)
        want = ops.add(_t(a), x_fmt.n_frac, _t(b), b_fmt.n_frac, out)
        want_ops = [dict(x=int(a[i]), y=int(b[i]), sa=sa, sb=sb, m=1, s=so, act=0)
                    for i in range(n)]
    elif kind == "scale_channels":
        chan = rng.integers(0, 256, C)           # u8/8 gates
        sh = int(np.abs(a).max() * 255).bit_length() - 7 + int(rng.integers(0, 3))
        fields["shift"] = sh
        want = ops.scale_channels(X, _t(chan).view(1, C), sh, out)
        want = want.reshape(C, n_pix).t().reshape(-1)
        want_ops = [dict(x=int(a[i]), y=0, sa=0, sb=0, m=int(chan[c_of[i]]), s=sh, act=0)
                    for i in range(n)]
    elif kind == "prelu":
        frac = int(rng.integers(4, 12))
        chan = rng.integers(-(1 << frac) // 2, (1 << frac) + 1, C)
        fields["shift"] = frac
        x = rng.integers(out.lo, out.hi + 1, n)        # PReLU keeps its input's format
        a = x
        want = ops.prelu(_t(x).view(1, n_pix, C).transpose(1, 2), _t(chan), frac)
        want = want.transpose(1, 2).reshape(-1)
        want_ops = [dict(x=int(v), y=0, sa=0, sb=0, m=int(chan[c_of[i]]) if v < 0 else 1,
                         s=frac if v < 0 else 0, act=0) for i, v in enumerate(x)]
    elif kind == "activation":
        a = rng.integers(out.lo, out.hi + 1, n)
        want = _t(a)
        want_ops = [dict(x=int(v), y=0, sa=0, sb=0, m=1, s=0, act=1) for v in a]
    if kind == "avgpool":
        sums = ops.channel_sum(X).view(-1)
        mult = int(rng.integers(1 << 14, 1 << 17))
        sh = int(sums.abs().max().item() * mult).bit_length() - 7 + int(rng.integers(0, 3))
        fields.update(mult=mult, shift=sh)
        want = ops.requantize(sums.view(1, C), mult, sh, out).view(-1)
        want_ops = [dict(x=int(s), y=0, sa=0, sb=0, m=mult, s=sh, act=0, last=int(c == C - 1))
                    for c, s in enumerate(sums.tolist())]
    else:
        for op, flag in zip(want_ops, last):
            op["last"] = flag
    desc = sum(int(w) << (16 * i) for i, w in enumerate(im.pack_descriptor(fields)))
    part = {"desc": desc, "n": n, "C": C, "a": [int(v) & 0xFFFF for v in a],
            "b": [int(v) & 0xFFFF for v in b], "chan": [int(v) & 0xFFFF for v in chan],
            "a_addr": fields["a_addr"], "b_addr": fields["b_addr"],
            "pool": kind == "avgpool", "add": kind == "add"}
    return part, want_ops, [int(v) for v in want.view(-1).tolist()], out, f"{kind} n={n} C={C}"


def run_vec(name, parts, *, seed=1, idle=0.3, no_req=0.2, config=CONFIG):
    dut = VecUnit(config)
    (SIM_BUILD / name).mkdir(parents=True, exist_ok=True)
    case = write_case(SIM_BUILD / f"{name}.case.json",
                      {"parts": [p[0] for p in parts], "seed": seed, "idle": idle,
                       "no_req": no_req, "chunk": config.chunk})
    run_cocotb(dut, name=name, test_module="sim.tb_vec_unit", ports=signature_ports(dut),
               extra_env={"CASE": case})
    return read_result(case)["parts"]


def test_vec_unit_ops():
    rng = np.random.default_rng(12)
    chunk = CONFIG.chunk
    parts = [make_part(rng, "add", 10, 5, chunk), make_part(rng, "scale_channels", 9, 6, chunk),
             make_part(rng, "prelu", 5, 9, chunk), make_part(rng, "activation", 4, 8, chunk),
             make_part(rng, "avgpool", 6, 4, chunk), make_part(rng, "add", 4, 8, chunk),
             make_part(rng, "avgpool", 5, 7, chunk)]      # (its sums restart)
    got = run_vec("vec_unit_p4", parts, seed=12)
    for (part, want_ops, want, out, what), g in zip(parts, got):
        assert g["violations"] == [], f"{what}: {g['violations'][:4]}"
        assert g["busy_end"] == 0, f"{what}: busy after the drain"
        hw = [unpack(Operands, w) for w in g["ops"]]
        assert len(hw) == len(want_ops), \
            f"{what}: {len(hw)} operands out, {len(want_ops)} expected"
        bad = [i for i, (h, w) in enumerate(zip(hw, want_ops)) if h != w]
        assert not bad, f"{what}: {len(bad)} operands differ, first {bad[0]}: hw {hw[bad[0]]}, " \
                        f"model {want_ops[bad[0]]}"
        if "activation" not in what:
            vals = [post_value(h, out) for h in hw]
            bad = [i for i, (v, w) in enumerate(zip(vals, want)) if v != w]
            assert not bad, f"{what}: through the post formula {len(bad)} differ from ops, " \
                            f"first {bad[0]}: {vals[bad[0]]} vs {want[bad[0]]}"
