"""The streaming schedule model (hw.engine.plan): buffers, cycles, spills, refusals, CLI."""
import dataclasses
import json
import math

import pytest

from hw.board.boards import get_board
from hw.engine import plan as P
from quant.artifact import save
from tests.engine_nets import build

ARRAYS = P.ArrayShape(pw_out=16, pw_in=4, dw_channels=4, dw_taps=3, post_lanes=8)


def _board(**resources):
    b = get_board("ulx3s")
    return dataclasses.replace(b, resources=dataclasses.replace(b.resources, **resources))


def _storage(pl):
    return {b.tensor: b.storage for b in pl.buffers}


def test_expand_streams_into_the_depthwise_line_buffer():
    art = build("pointwise_parts_shuffle_dw").artifact()
    pl = P.plan(art, get_board("ulx3s"), ARRAYS)
    buf = {b.tensor: b for b in pl.buffers}
    # pw.act -> shuffle -> 3x3 depthwise: k + stride rows of the reader, nothing stored whole
    c, h, w = art.tensors["pw.act"]["shape"]
    assert buf["pw.act"].storage == "line"
    assert buf["pw.act"].bytes == 4 * w * c * (2 if art.fmt("pw.act").n_word > 8 else 1)
    assert buf["stem.act"].storage == "line"            # read by the 1x1 conv right after it
    assert {b.storage for b in pl.buffers} == {"line"}
    # one run: stem, pointwise and depthwise convs overlap through the line buffers
    assert len({l.run for l in pl.layers if l.kind != "input"}) == 1
    cyc = {l.name: l.cycles for l in pl.layers}
    # parts (in 0:4 -> out 0:8) and (in 4:16 -> out 8:24) on a 16 x 4 array, 8 x 8 pixels
    assert cyc["pw"] == (1 * 1 + 1 * 3) * 64
    assert cyc["dw"] == math.ceil(24 / 4) * math.ceil(9 / 3) * 64


def test_se_and_residual_hold_whole_maps():
    art = build("se_block").artifact()
    pl = P.plan(art, get_board("ulx3s"), ARRAYS)
    st = _storage(pl)
    assert st["dw.act"] == "whole"       # SE: the gate needs the whole depthwise output
    assert st["stem.act"] == "whole"     # the residual add reads it after the SE barrier
    buf = {b.tensor: b for b in pl.buffers}
    names = [l.name for l in pl.layers]
    assert names[buf["dw.act"].last] == "proj"           # the scale is applied on the load
    assert names[buf["stem.act"].last] == "proj"         # the add is fused into its output


def test_small_block_ram_spills_the_largest_whole_map_to_sdram():
    art = build("se_block").artifact()
    full = P.plan(art, get_board("ulx3s"), ARRAYS)
    peak = full.peak_brams()[0]
    budget = peak + P.MIN_WEIGHT_BUFFER + full.fixed_brams - 1
    pl = P.plan(art, _board(DP16KD=budget), ARRAYS)
    spilled = [b for b in pl.buffers if b.storage == "spilled"]
    assert spilled and pl.brams <= budget
    whole = [b for b in full.buffers if b.storage == "whole"]
    assert spilled[0].tensor == max(whole, key=lambda b: b.bytes).tensor
    # written once and read once more over the port
    assert pl.sdram_words == full.sdram_words + 2 * sum(b.bytes // 2 for b in spilled)


def test_refusals_name_the_resource_and_the_overrun():
    art = build("se_block").artifact()
    with pytest.raises(P.PlanError, match=r"DP16KD \d+ needed .* 3 available: overrun \d+"):
        P.plan(art, _board(DP16KD=3), ARRAYS)
    big = P.ArrayShape(16, 8, 16, 9, post_lanes=4)      # 128 + 144 + 4 x 2 x 2 + 1
    with pytest.raises(P.PlanError, match=r"ulx3s: MULT18X18D 289 needed .* overrun 133"):
        P.plan(art, get_board("ulx3s"), big)


def test_default_arrays_are_the_fastest_that_fit():
    art = build("pointwise_parts_shuffle_dw").artifact()
    board = get_board("ulx3s")
    best = P.plan(art, board)
    assert best.dsp == best.arrays.dsp("lut") <= board.resources.MULT18X18D
    assert all(best.cycles <= P.plan(art, board, a).cycles for a in P.candidate_arrays(board))


def test_post_lanes_bound_a_layer_that_emits_more_than_it_computes():
    """A 1x1 conv with few input channels emits more elements a pixel than the array needs
    cycles for it: the post lanes, not the multipliers, set its cycles."""
    art = build("pointwise_parts_shuffle_dw").artifact()
    board = get_board("ulx3s")
    c, oh, ow = art.tensors["pw"]["shape"]
    one = {l.name: l.cycles for l in P.plan(
        art, board, dataclasses.replace(ARRAYS, post_lanes=1)).layers}
    wide = {l.name: l.cycles for l in P.plan(art, board, ARRAYS).layers}
    assert one["pw"] == c * oh * ow                       # 24 elements a pixel, one a cycle
    assert wide["pw"] == (1 * 1 + 1 * 3) * oh * ow        # the array's 4 cycles a pixel
    # each lane costs two MULT18X18D per array
    assert ARRAYS.dsp("lut") - dataclasses.replace(ARRAYS, post_lanes=7).dsp("lut") == 2 * 2
    # and with the CORDIC, one unit per lane: 2 arrays x 8 lanes
    assert ARRAYS.dsp("cordic") - ARRAYS.dsp("lut") == 2 * 8 * P.CORDIC_MULTIPLIERS


def test_cli_writes_json_and_markdown(tmp_path, capsys):
    art_dir = save(build("se_block").artifact(), tmp_path / "art")
    out = tmp_path / "plan.json"
    assert P.main(["--artifact", str(art_dir), "--board", "ulx3s", "--json", str(out)]) == 0
    data = json.loads(out.read_text())
    assert data["plans"][0]["board"] == "ulx3s" and data["plans"][0]["fps"] > 0
    assert "| tensor | storage |" in out.with_suffix(".md").read_text()


@pytest.mark.parametrize("args, culprit", [
    (["--pw", "16by8"], "--pw"),
    (["--post-lanes", "0"], "--post-lanes"),
    (["--board", "nope"], "nope"),
    (["--artifact", "no/such/dir"], "no/such/dir"),
])
def test_cli_errors_are_one_line(tmp_path, capsys, args, culprit):
    art_dir = save(build("se_block").artifact(), tmp_path / "art")
    argv = ["--artifact", str(art_dir)] + args
    assert P.main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert culprit in err and "\n" not in err
