"""The engine's post pipeline alone (hw/engine/post.py) in cocotb + Verilator: every element and
every write-FIFO word equal to quant.ops, with random operand gaps and a residual FIFO filled
with random gaps (the bench: sim/tb_post.py).

Each part is one descriptor with random fields: the requantize format, the activation table
(random words or a real swish/sigmoid table; on, off or per element), the fused residual add
(``ops.add``'s alignment and rounding shifts derived as the compiler derives them, packed
residual words or not) and the output packing. The operands of every element are those of
one of the engine's ops, chosen per element: a CONV's accumulator and bias (``requantize``),
the general ``((x << sa) + (y << sb)) * m >> s`` at full width (``requantize`` of the sum),
a VEC add (``ops.add``), a VEC SE scale (``ops.scale_channels``) and a VEC PReLU
(``ops.prelu``).
"""
import numpy as np
import pytest
import torch

from firmware import image as im
from firmware.image import EngineConfig
from hw.engine.post import Operands, PostPipeline
from quant import ops
from quant.activation import ActivationSpec, table
from quant.fixedpoint import Fmt
from sim.runner import SIM_BUILD, run_cocotb, signature_ports
from sim.bench import read_result, write_case
from sim.tb_requantize import pack

CONFIG = EngineConfig(lanes=4, in_lanes=4)
KINDS = ("conv", "general", "add", "scale", "prelu")


def _t(v):
    return torch.tensor([[float(v)]], dtype=torch.float64)


def _fmt(rng, max_bits, signed=None, min_bits=2):
    signed = bool(rng.integers(0, 2)) if signed is None else signed
    n = int(rng.integers(min_bits, max_bits + 1))
    if not signed:
        n = min(n, 15)          # (sat_hi is a signed 16-bit descriptor field)
    return Fmt(signed, n, int(rng.integers(-2, n + 3)))


def _near(rng, fmt, signed=None):
    """A format at most as wide as ``fmt`` (at least 4 bits) whose grid is within 3 bits."""
    signed = bool(rng.integers(0, 2)) if signed is None else signed
    n = int(rng.integers(min(4, fmt.n_word), fmt.n_word + 1))
    n = n if signed else min(n, 15)
    return Fmt(signed, n, fmt.n_frac + int(rng.integers(-3, 4)))


def _rand_in(rng, fmt, n=None):
    return rng.integers(fmt.lo, fmt.hi + 1, n)


def _shift_for(rng, magnitude, fmt):
    """A rounding shift that lands ``magnitude`` near ``fmt``'s range (some saturate)."""
    return int(np.clip(int(magnitude).bit_length() - fmt.n_word + rng.integers(-1, 6), 0, 63))


def _element(rng, kind, q, prm):
    """One element of ``kind``: (Operands dict, its value by quant.ops before the activation)."""
    if kind in ("conv", "general"):
        if kind == "conv":
            x, y = int(rng.integers(-(1 << 31), 1 << 31)), int(rng.integers(-(1 << 20), 1 << 20))
            sa = sb = 0
            m = int(rng.integers(0, 1 << 17))
        else:       # every field at full width, |t| below 2**33 (the pipeline's 34-bit sum)
            sa, sb = (int(v) for v in rng.integers(0, 16, 2))
            x = int(rng.integers(-(1 << (32 - sa)), 1 << (32 - sa)))
            y = int(rng.integers(-(1 << (31 - sb)), 1 << (31 - sb)))
            m = int(rng.integers(-(1 << 17), 1 << 17))
        t = (x << sa) + (y << sb)
        s = _shift_for(rng, abs(t * m), q)
        if rng.random() < 0.25:     # an exact half before the rounding, inside the format
            s = int(rng.integers(1, 17))
            m, t = 1, (2 * int(rng.integers(q.lo, q.hi)) + 1) << (s - 1)
            x, y, sa, sb = t, 0, 0, 0
        want = ops.requantize(_t(t), m, s, q)
        return dict(x=x, y=y, sa=sa, sb=sb, m=m, s=s), want
    if kind == "add":
        a, b = int(_rand_in(rng, prm["add_fa"])), int(_rand_in(rng, prm["add_fb"]))
        sa, sb, so = prm["add_shifts"]
        want = ops.add(_t(a), prm["add_fa"].n_frac, _t(b), prm["add_fb"].n_frac, q)
        return dict(x=a, y=b, sa=sa, sb=sb, m=1, s=so), want
    if kind == "scale":
        x, g = int(_rand_in(rng, prm["scale_x"])), int(_rand_in(rng, prm["gate"]))
        sh = int(np.clip(abs(x * g).bit_length() - q.n_word + rng.integers(-1, 5), 0, 31))
        want = ops.scale_channels(_t(x).view(1, 1, 1, 1), _t(g), sh, q).view(1, 1)
        return dict(x=x, y=0, sa=0, sb=0, m=g, s=sh), want
    x = int(_rand_in(rng, q))
    k, f = int(prm["slope"]), prm["slope_frac"]
    want = ops.prelu(_t(x), torch.tensor([float(k)], dtype=torch.float64), f)
    return dict(x=x, y=0, sa=0, sb=0, m=k if x < 0 else 1, s=f if x < 0 else 0), want


def _add_shifts(fa, fb, fo):
    """The compiler's alignment and rounding shifts of ``ops.add`` (firmware/compiler.py)."""
    f = max(fa, fb)
    sa, sb, so = f - fa, f - fb, f - fo
    if so < 0:
        sa, sb, so = sa - so, sb - so, 0
    return sa, sb, so


def _shifts_ok(fa, fb, fo):
    sa, sb, so = _add_shifts(fa, fb, fo)
    return max(sa, sb, so) <= 15


def make_part(rng, n, *, act=None, resid=None, pack_res=None, pack_out=None, real_table=None):
    """One descriptor's elements, the words the bench drives and what quant.ops says."""
    pick = (lambda v, p=0.5: bool(rng.random() < p) if v is None else v)
    pack_out, resid = pick(pack_out, 0.4), pick(resid)
    pack_res = resid and pick(pack_res)
    act = act if act is not None else ["off", "all", "mixed"][int(rng.integers(0, 3))]
    narrow = 8 if (pack_out and not resid) else 16
    # the requantize format (the table's input: at most lut_depth codes)
    q = _fmt(rng, min(narrow, 10) if act != "off" else narrow)
    real = act != "off" and (real_table if real_table is not None else rng.random() < 0.3)
    if real and q.n_frac < 0:       # (a table's input has 0..24 fraction bits)
        q = Fmt(q.signed, q.n_word, 0)
    prm = {}
    while True:     # the add's operands: about as wide as its output, grids close to it
        prm["add_fa"], prm["add_fb"] = (_near(rng, q) for _ in range(2))
        if _shifts_ok(prm["add_fa"].n_frac, prm["add_fb"].n_frac, q.n_frac):
            break
    prm["add_shifts"] = _add_shifts(prm["add_fa"].n_frac, prm["add_fb"].n_frac, q.n_frac)
    prm["scale_x"] = _fmt(rng, 16, signed=True)
    prm["gate"] = Fmt(False, 8, 8) if rng.random() < 0.5 else _fmt(rng, 16)
    prm["slope_frac"] = int(rng.integers(0, 16))
    # slopes in [-1/2, 1]: the result stays in the input's format (ops.prelu does not clamp)
    prm["slope"] = int(rng.integers(-(1 << prm["slope_frac"]) // 2, (1 << prm["slope_frac"]) + 1))

    fields = {"opcode": int(im.Opcode.CONV), "sat_lo": q.lo, "sat_hi": q.hi}
    flags = 0
    tab = None
    if act != "off":
        a_fmt = _fmt(rng, 8 if pack_out and not resid else 16)
        if real:
            fn = "swish" if rng.random() < 0.5 else "sigmoid"
            if fn == "sigmoid":
                a_fmt = Fmt(False, 8, 8)
            codes = table(ActivationSpec(fn, "lut", q, a_fmt))
        else:
            codes = _rand_in(rng, a_fmt, q.hi - q.lo + 1)
        tab = [int(c) & 0xFFFF for c in codes]
        fields["lut_off"] = q.lo
    kinds = rng.choice(KINDS, n)
    elems, pre = [], []
    for i, kind in enumerate(kinds):
        e, want = _element(rng, str(kind), q, prm)
        e["last"] = int(rng.random() < 0.2)
        e["act"] = int(act == "all" or (act == "mixed" and rng.random() < 0.5))
        elems.append(e)
        y = int(want.item())
        if e["act"]:
            v = tab[y - q.lo]
            y = v - 0x10000 if v & 0x8000 else v
        pre.append(y)
    res_words, out = [], list(pre)
    if resid:
        flags |= im.Flag.RESID
        pre_fmt = a_fmt if act == "all" else q          # the format entering the add
        fa = pre_fmt.n_frac
        while True:     # the sum's format: about the operands' range (some saturate)
            r_in = _near(rng, Fmt(True, 8 if pack_res else 16, fa),
                         signed=True if pack_res else None)
            nw = int(rng.integers(4, (8 if pack_out else 16) + 1))
            int_bits = max(pre_fmt.n_word - fa, r_in.n_word - r_in.n_frac)
            r_out = Fmt(bool(rng.integers(0, 2)) or nw == 16, nw,
                        nw - 1 - int_bits + int(rng.integers(-1, 2)))
            if _shifts_ok(fa, r_in.n_frac, r_out.n_frac):
                break
        sa, sb, so = _add_shifts(fa, r_in.n_frac, r_out.n_frac)
        fields.update(sa=sa, sb=sb, shift=so, r_lo=r_out.lo, r_hi=r_out.hi)
        r = _rand_in(rng, r_in, n)
        out = [int(ops.add(_t(a), fa, _t(b), r_in.n_frac, r_out).item())
               for a, b in zip(pre, r)]
        if pack_res:
            flags |= im.Flag.PACK_RES
            res_words = [(int(r[i]) & 0xFF) | ((int(r[i + 1]) & 0xFF) << 8)
                         for i in range(0, n, 2)]
        else:
            res_words = [int(v) & 0xFFFF for v in r]
    if pack_out:
        flags |= im.Flag.PACK_OUT
        words = [(out[i] & 0xFF) | ((out[i + 1] & 0xFF) << 8) for i in range(0, n - 1, 2)]
    else:
        words = [v & 0xFFFF for v in out]
    fields["flags"] = flags
    desc = sum(int(w) << (16 * i) for i, w in enumerate(im.pack_descriptor(fields)))
    part = {"desc": desc, "ops": [pack(Operands, e) for e in elems], "res": res_words,
            "pack_res": bool(pack_res)}
    if tab is not None:
        part["table"] = tab
    want = {"o": [[v, e["last"]] for v, e in zip(out, elems)], "w": words}
    what = (f"q={q.fxp_dtype} act={act} resid={resid} pack_res={pack_res} "
            f"pack_out={pack_out} n={n}")
    return part, want, what, elems


def run_post(name, parts, *, case_name=None, seed=1, idle=0.3, res_idle=0.3, config=CONFIG):
    dut = PostPipeline(config)
    (SIM_BUILD / name).mkdir(parents=True, exist_ok=True)
    case = write_case(SIM_BUILD / f"{case_name or name}.case.json",
                      {"parts": [p for p, *_ in parts], "seed": seed, "idle": idle,
                       "res_idle": res_idle})
    run_cocotb(dut, name=name, test_module="sim.tb_post", ports=signature_ports(dut),
               extra_env={"CASE": case})
    return read_result(case)["parts"]


def check(parts, got):
    """Every element, every word, one latency, the contract and the drain."""
    latencies = set()
    for i, ((part, want, what, elems), g) in enumerate(zip(parts, got)):
        where = f"part {i} ({what})"
        assert g["violations"] == [], f"{where}: {g['violations'][:4]}"
        assert g["unsent"] == 0 and g["res_left"] == 0, \
            f"{where}: {g['unsent']} operands not sent, {g['res_left']} residual words left"
        assert g["busy_end"] == 0, f"{where}: busy after the drain"
        assert len(g["o"]) == len(want["o"]), \
            f"{where}: {len(g['o'])} elements out, {len(want['o'])} expected"
        bad = [j for j, (a, b) in enumerate(zip(g["o"], want["o"])) if a != b]
        assert not bad, (f"{where}: {len(bad)} elements differ, first {bad[0]}: operands "
                         f"{elems[bad[0]]}, hw {g['o'][bad[0]]}, quant.ops {want['o'][bad[0]]}")
        assert g["w"] == want["w"], (f"{where}: write words differ ({len(g['w'])} out, "
                                     f"{len(want['w'])} expected)")
        assert len(g["latency"]) == 1, f"{where}: latencies {g['latency']}"
        latencies |= set(g["latency"])
    assert len(latencies) == 1, f"latency differs between parts: {sorted(latencies)}"
    return latencies.pop()


def test_post_pipeline_bit_exact():
    """Seven descriptors: the first four cover the flag combinations on purpose (the first
    packs an odd count: its last element waits for a partner that never comes, and the next
    descriptor, packed too, starts with its ``init``, which must clear the phase), the rest
    are random."""
    rng = np.random.default_rng(12)
    parts = [make_part(rng, 61, act="mixed", resid=False, pack_out=True, real_table=True),
             make_part(rng, 160, act="all", resid=True, pack_res=True, pack_out=True),
             make_part(rng, 160, act="off", resid=False, pack_out=False),
             make_part(rng, 120, act="mixed", resid=True, pack_res=False, pack_out=False)]
    parts += [make_part(rng, 2 * int(rng.integers(30, 80))) for _ in range(3)]
    got = run_post("post_l4", parts, seed=12)
    assert check(parts, got) > 0


def test_post_bench_reports_a_credit_violation():
    """The bench's contract check bites: operands admitted without waiting for their residual
    word make the pipeline pop an empty FIFO, which the bench reports."""
    rng = np.random.default_rng(3)
    part = make_part(rng, 40, act="off", resid=True, pack_res=False, pack_out=False)
    part[0]["credit"] = False
    got = run_post("post_l4", [part], case_name="post_l4_credit", seed=3, idle=0.0, res_idle=0.9)
    assert any("popped while empty" in v for v in got[0]["violations"])


@pytest.mark.slow
@pytest.mark.parametrize("seed", [5, 6])
def test_post_pipeline_random_descriptors(seed):
    rng = np.random.default_rng(seed)
    parts = [make_part(rng, 2 * int(rng.integers(50, 200))) for _ in range(12)]
    check(parts, run_post("post_l4", parts, case_name=f"post_l4_s{seed}", seed=seed,
                          idle=float(rng.uniform(0, 0.6)), res_idle=float(rng.uniform(0, 0.8))))
