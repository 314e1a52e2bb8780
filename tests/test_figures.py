"""The README's figures against the reports they come from (reports/*.json, written by the
commands of ``make reports`` and, for the board, ``make reports-pnr``).

Each test reads a figure where the README states it and formats the report's value the way
the README does; a README edited without its report, or a report regenerated without the
README, fails here. Nothing is measured: these are quick.
"""
import json
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text()
FLAT = " ".join(README.split())          # line breaks inside sentences do not matter


def report(name):
    path = ROOT / "reports" / name
    assert path.exists(), f"{path} is missing: `make reports` writes it"
    return json.loads(path.read_text())


def row(first_cell):
    """The cells of the README table row whose first cell is ``first_cell``."""
    for line in README.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if line.startswith("|") and cells[0] == first_cell:
            return cells
    raise AssertionError(f"README: no table row starting with {first_cell!r}")


def sentence(pattern):
    m = re.search(pattern, FLAT)
    assert m, f"README: nothing matches {pattern!r}"
    return m.groups()


def test_counts_table():
    for r in report("counts.json"):
        cells = row(r["variant"])
        assert cells[1] == f"{r['params']:,}", r["variant"]
        assert cells[2] == f"{r['macs'] / 1e6:.1f} M", r["variant"]


def test_reference_check_table():
    r = report("reference_check.json")
    cells = row(f"mean cosine, face vs face + uniform +-1 LSB noise ({r['faces']} faces)")
    assert cells[1] == f"{r['noise_cosine_mean']:.5f} (min {r['noise_cosine_min']:.5f})"
    pairs = r["faces"] * (r["faces"] - 1) // 2
    cells = row(f"mean pairwise cosine between different faces ({pairs} pairs)")
    assert cells[1] == f"{r['pairwise_cosine_mean']:.3f} (max {r['pairwise_cosine_max']:.3f})"


def test_quantizer_table_and_acceptance():
    r, w = report("quant_seesaw_shuffle.json"), report("quant_seesaw_shuffle_all8bit.json")
    e, p, d, a = r["embedding"], r["peer"], r["decisions"], r["acceptance_thresholds"]
    assert e["faces"] == 51 and "51 evaluation faces" in FLAT
    cells = row("embedding cosine vs float, mean / min")
    assert cells[1] == f"{e['cosine_mean']:.5f} / {e['cosine_min']:.5f}"
    assert cells[2] == f"{w['embedding']['cosine_mean']:.5f} / {w['embedding']['cosine_min']:.5f}"
    assert cells[3] == f"{p['cosine_mean']:.5f} / {p['cosine_min']:.5f}"
    assert cells[4].startswith(f">= {a['cosine_mean']} / {a['cosine_min']}; ")
    cells = row(f"same/different decisions agreeing with float ({d['pairs']} pairs at the "
                f"float EER threshold)")
    n = d["disagreeing_pairs"]
    assert cells[1] == f"{100 * d['agreement']:.2f} % ({n} differ{'s' if n == 1 else ''})"
    wd = w["decisions"]
    n = wd["disagreeing_pairs"]
    assert cells[2] == f"{100 * wd['agreement']:.2f} % ({n} differ{'s' if n == 1 else ''})"
    assert cells[4] == f">= {100 * a['decision_agreement']:.1f} %"
    cells = row("golden model throughput (batch 32, 1 thread, loaded machine)")
    assert cells[1] == f"{r['golden_fps']:.1f} frames/s"
    assert cells[2] == f"{w['golden_fps']:.1f} frames/s"
    assert all(r["accepted"].values()), r["accepted"]


def test_cordic_figures():
    r = report("quant_seesaw_shuffle_cordic.json")
    assert r["quantizer"]["activation_form"] == "cordic"
    mean, low, agree = sentence(r"CORDIC instead of the table \(`--act cordic`[^)]*\): cosine "
                                r"([\d.]+) / ([\d.]+), agreement ([\d.]+) %")
    assert (mean, low) == (f"{r['embedding']['cosine_mean']:.5f}",
                           f"{r['embedding']['cosine_min']:.5f}")
    assert agree == f"{100 * r['decisions']['agreement']:.2f}"


def test_other_weights_figures():
    r = report("quant_other_seed.json")
    assert r["weights"]["sha256"] != r["shipped"]["sha256"], "the same weights as shipped"
    assert r["reference_check"]["accepted"]
    t, by = r["weights"]["training"], {x["run"]: x for x in r["runs"]}
    assert t["stopped_at"] == t["steps"], "README: the weights of the whole training run"
    cos = lambda x: f"{x['cosine_mean']:.5f} / {x['cosine_min']:.5f}"
    got = sentence(r"Other weights \(a seesaw_shuffle trained with seed (\d+), all (\d+) steps; "
                   r"[^)]*\): ([\d.]+ / [\d.]+) at the default precision \(`--adaround 0`: "
                   r"([\d.]+ / [\d.]+)\) and ([\d.]+ / [\d.]+) at all-8-bit \(`--adaround 0`: "
                   r"([\d.]+ / [\d.]+)\)")
    assert got == (str(t["seed"]), str(t["steps"]), cos(by["default"]),
                   cos(by["default_adaround0"]), cos(by["all8bit"]),
                   cos(by["all8bit_adaround0"]))
    for x in r["runs"]:     # draw 0 of the pair analysis is the report's own decisions
        assert x["pair_scores"]["disagreeing_pairs_by_draw"][0] == x["disagreeing_pairs"]
    d, d0 = by["default"], by["default_adaround0"]
    draws = [sum(x["pair_scores"]["disagreeing_pairs_by_draw"]) for x in (d, d0)]
    got = sentence(r"its decisions differ from float in (\d+) of (\d+) pairs at the default "
                   r"precision over six draws of the perturbed copies \(round-to-nearest: (\d+)\)")
    assert got == (str(draws[0]),
                   str(d["pairs"] * len(d["pair_scores"]["disagreeing_pairs_by_draw"])),
                   str(draws[1]))
    assert r["adaround_regressions"] == [], "README: AdaRound does not regress there"
    assert all(by[a]["cosine_mean"] > by[a + "_adaround0"]["cosine_mean"] and
               by[a]["cosine_min"] > by[a + "_adaround0"]["cosine_min"]
               for a in ("default", "all8bit")), "README: AdaRound raises the cosine there too"
    assert not any(by[a]["accepted"]["cosine_mean"] for a in ("all8bit", "all8bit_adaround0")), \
        "README: all-8-bit misses its bar on these weights with either rounding"


def test_activation_error():
    (lsb,) = sentence(r"at most ([\d.]+) output LSB, unsaturated")
    worst = max(x["max_err_lsb_unsaturated"] for x in report("activation_error.json"))
    assert worst <= float(lsb)


def test_sdram_throughput():
    mbs, share = sentence(r"(\d+) MB/s sustained at 100 MHz \((\d+) % of peak")
    best = max((x for x in report("sdram_throughput.json") if x["clk_mhz"] == 100.0),
               key=lambda x: x["mb_per_s"])
    assert mbs == f"{best['mb_per_s']:.0f}" and share == f"{100 * best['efficiency']:.0f}"


def _sim_row(r, first_cell):
    cells = row(first_cell)
    cycles = r["cycles_per_frame"]
    c, est = cycles[0], r["estimated_cycles_per_frame"]
    assert cells[1] == str(r["frames"])
    assert cells[2] == ", ".join("yes" if x else "no" for x in r["bit_exact"])
    assert all(r["bit_exact"])
    assert cells[4] == ", ".join(f"{x:,}" for x in sorted(set(cycles)))
    assert cells[7] == f"{max(r['sim_cpu_seconds_per_frame']):.0f}"
    assert cells[5].split(" (")[0] == f"{est:,}"
    if "(" in cells[5]:
        assert cells[5] == f"{est:,} ({100 * (est / c - 1):.1f} %)"
    assert cells[6] == f"{r['config']['clock_mhz'] * 1e6 / c:.2f}"
    return cells


def test_sim_seesaw_shuffle_row():
    r = report("sim_seesaw_shuffle.json")
    assert not r["random_weights"] and r["board"] == "ulx3s"
    cells = _sim_row(r, "seesaw_shuffle (shipped weights)")
    assert cells[3] == ", ".join(f"{x:.4f}" for x in r["cosine_vs_float"])
    (read, written), busy = r["sdram_words_read_written_per_frame"][0], r["pe_utilisation"][0]
    assert sentence(r"the multiplier array's useful work: ([\d,]+) words a frame \(([\d,]+) "
                    r"read, ([\d,]+) written\) and ([\d.]+) %") == (
        f"{read + written:,}", f"{read:,}", f"{written:,}", f"{100 * busy:.1f}")


def test_sdram_synthesis():
    r = report("sdram_synthesis.json")
    assert sentence(r"([\d.]+) MHz alone on the 85F with (\d+) LUT4 and (\d+) flip-flops") == (
        f"{r['fmax_mhz']:.1f}", str(r["cells"]["LUT4"]), str(r["cells"]["TRELLIS_FF"]))


def test_cordic_unit_synthesis():
    r = report("activation_synthesis.json")
    pnr = r["nextpnr"]
    assert sentence(r"CORDIC: ([\d.]+) MHz, (\d+) TRELLIS_COMB \(LUT4 and carry cells\), "
                    r"(\d+) flip-flops, (\d+) MULT18X18D, alone on the 85F") == (
        f"{r['fmax_mhz']:.1f}", str(pnr["LUT4"]), str(pnr["TRELLIS_FF"]),
        str(pnr["MULT18X18D"]))


def test_sim_variant_rows():
    """Every variant of ``python -m sim.variants`` (reports/sim_variants.json) has its row,
    bit-exact, from its own report."""
    table = report("sim_variants.json")
    assert table["variants"], "reports/sim_variants.json lists no variant"
    for v in table["variants"]:
        assert v["report"], f"{v['variant']}: {v['error']}"
        r = report(Path(v["report"]).name)
        assert r["random_weights"] and r["board"] == "ulx3s" and r["variant"] == v["variant"]
        cells = _sim_row(r, f"{v['variant']} (random weights)")
        assert cells[3] == "-", "random weights: the cosine vs float means nothing"


def test_board_figures():
    r = report("board_ulx3s.json")
    u = r["utilization"]
    est = r["estimate"]["resources"]
    got = sentence(r"with ([\d,]+) LUT4, ([\d,]+) FF, (\d+) of (\d+) MULT18X18D and (\d+) of "
                   r"(\d+) DP16KD \(estimate ([\d,]+) / ([\d,]+) / (\d+) / (\d+)\)")
    want = (f"{u['LUT4']['used']:,}", f"{u['TRELLIS_FF']['used']:,}",
            str(u["MULT18X18D"]["used"]), str(u["MULT18X18D"]["available"]),
            str(u["DP16KD"]["used"]), str(u["DP16KD"]["available"]))
    assert got[:6] == want
    assert got[6:] == (f"{est['LUT4']:,}", f"{est['TRELLIS_FF']:,}", str(est["MULT18X18D"]),
                       str(est["DP16KD"]))
    assert r["timing_met"]
    (fmax,) = sentence(r"routed fmax ([\d.]+) MHz")
    assert fmax == f"{r['fmax_mhz']:.2f}"
    cycles, fps, mhz = sentence(r"The frame takes ([\d,]+) cycles with the SDRAM's latency, "
                                r"refresh and row changes: \*\*([\d.]+) frames/s at ([\d.]+) MHz")
    assert cycles == f"{r['cycles_per_frame']:,}"
    assert fps == f"{r['fps_at_target_clock']:.2f}" and mhz == f"{r['target_mhz']:g}"


def test_engine_plan_table_in_the_engine_doc():
    """docs/ENGINE.md quotes the streaming engine's plan table as
    `python -m hw.engine.plan --all-boards` printed it into reports/engine_plan.md."""
    doc = (ROOT / "docs" / "ENGINE.md").read_text()
    plans = report("engine_plan.json")["plans"]
    table = (ROOT / "reports" / "engine_plan.md").read_text().split("\n\n")[2]
    assert table in doc, "docs/ENGINE.md: the plan table differs from reports/engine_plan.md"
    ulx3s = next(p for p in plans if p["board"] == "ulx3s")
    assert f"| {ulx3s['cycles_per_frame']:,} | {ulx3s['fps']:.1f} |" in table


def test_running_on_a_ulx3s_figures():
    """The README's "Running on a ULX3S" table against reports/link_throughput.json."""
    r = report("link_throughput.json")
    one_ms = next(x for x in r["model"] if x["turnaround_ms"] == 1)
    assert row("end to end, host turnaround 1 ms a transaction (model)")[1] == \
        f"{one_ms['faces_per_s_overlapped']:.2f} faces/s"
    assert row("one face after the other in 2 KB frames, no face buffer, turnaround 1 ms (model)")[1] == \
        f"{r['model_unbuffered']['faces_per_s_serial']:.2f} faces/s"
    m = r["measured"]
    if m is None:           # a model-only report: the README must not quote a measurement
        assert "(board simulation) |" not in README
        return
    assert m["bit_exact"] and m["faces"] >= 2
    assert row("end to end, faces pipelined (board simulation)")[1] == \
        f"{m['faces_per_s_at_3mbaud']:.2f} faces/s"
    assert row("one face alone, first byte up to last byte of its embedding (board "
               "simulation)")[1] == f"{m['latency_alone_ms']:.0f} ms"
    assert row("face 2 uploading while face 1 computes (board simulation)")[1] == \
        f"{m['overlap_ms']:.0f} ms of {m['compute_ms'][0]:.0f} ms"


def test_usb_link_row():
    r = report("usb_link.json")
    sw = r["links"]["usb_full_speed"]["stop_and_wait"]
    sw_engine = r["links"]["usb_full_speed"]["engine"]
    cells = [c for c in row(next(line.split("|")[1].strip() for line in README.splitlines()
                                 if line.startswith("| USB full-speed host link")))]
    want = (f"model (`reports/usb_link.json`): {sw['seconds'] * 1e3:.1f} ms a face "
            f"stop-and-wait, {sw['link_faces_per_s']:.1f} faces/s for the link alone; with the "
            f"engine's {sw_engine['seconds'] * 1e3:.1f} ms at {sw_engine['clock_mhz']:g} MHz, "
            f"{sw['overlapped_faces_per_s']:.1f} faces/s overlapped")
    assert cells[-1] == want, cells[-1]


def _board_row(r):
    """docs/BOARD.md's "Measured builds" row of a board report."""
    u = {k: v["used"] for k, v in r["utilization"].items()}
    verdict = "met" if r["timing_met_all_clocks"] else "NOT met"
    return (f"| `{r['board']}` | {r['source']} | {r['pnr_seed']} | {r['fmax_mhz']:.2f} MHz "
            f"({r['target_mhz']:g}): {verdict} | {u['LUT4']:,} | {u['TRELLIS_FF']:,} | "
            f"{u['MULT18X18D']} | {u['DP16KD']} | {r['cycles_per_frame']:,} | "
            f"{r['fps']:.2f} |")


def test_board_builds_table():
    """Every board report has its row in docs/BOARD.md, and every row there has its report."""
    board_md = (ROOT / "docs" / "BOARD.md").read_text()
    reports = sorted((ROOT / "reports").glob("board_*.json"))
    assert reports, "no board report: `make reports-pnr` writes them"
    rows = [line for line in board_md.splitlines() if line.startswith("| `ulx3s")]
    want = [_board_row(json.loads(p.read_text())) for p in reports]
    assert sorted(rows) == sorted(want)


ENGINE_CYCLE_ROWS = {"depthwise": "depthwise convs (with the SE pool sums)",
                     "dense": "dense convs without residual (stem, expands, strided projections)",
                     "dense_residual": "projections with the residual add",
                     "linear": "linear layers (SE FCs, final)",
                     "max_pool": "2x2 max pools",
                     "other": "INPUT, VEC, OUTPUT, END"}
ENGINE_WORD_ROWS = {"weights_params_tables": "weights, group parameters, tables, gates",
                    "activations_read": "activations read",
                    "activations_written": "activations written"}


def test_engine_doc_cycle_model_and_measured_frame():
    """docs/ENGINE.md's cycle-model tables and its "Measured" paragraph against
    reports/sim_seesaw_shuffle.json (`make sim`)."""
    doc = (ROOT / "docs" / "ENGINE.md").read_text()
    flat = " ".join(doc.split())
    r = report("sim_seesaw_shuffle.json")
    rows = {}
    for line in doc.splitlines():
        cells = [c.strip().strip("*") for c in line.strip().strip("|").split("|")]
        if line.startswith("|") and len(cells) == 2:
            rows[cells[0]] = cells[1]
    by_kind, words = r["estimated_cycles_by_kind"], r["estimated_port_words"]
    for kind, label in ENGINE_CYCLE_ROWS.items():
        if by_kind[kind] or label in rows:
            assert rows.get(label) == f"{by_kind[kind]:,}", f"docs/ENGINE.md row {label!r}"
    for kind, label in ENGINE_WORD_ROWS.items():
        assert rows.get(label) == f"{words[kind]:,}", f"docs/ENGINE.md row {label!r}"
    assert f"| **total** | **{r['estimated_cycles_per_frame']:,}** |" in doc
    assert f"| **total** | **{words['total']:,}** |" in doc
    c = r["cycles_per_frame"][0]
    assert all(r["bit_exact"])
    m = re.search(r"bit-exact both, cosine vs float ([\d.]+) and ([\d.]+), ([\d,]+) cycles a "
                  r"frame \(([\d.]+) frames/s at ([\d.]+) MHz with the simulation's memory\), "
                  r"([\d,]+) port words a frame", flat)
    assert m, "docs/ENGINE.md: the Measured paragraph's sentence is missing"
    assert m.groups() == (*(f"{x:.4f}" for x in r["cosine_vs_float"]), f"{c:,}",
                          f"{r['config']['clock_mhz'] * 1e6 / c:.2f}",
                          f"{r['config']['clock_mhz']:g}", f"{r['sdram_words_per_frame'][0]:,}")
    assert f"{100 * (c / r['estimated_cycles_per_frame'] - 1):.1f} % above the model" in flat
    assert f"busy {100 * r['pe_utilisation'][0]:.1f} % of the frame" in flat
