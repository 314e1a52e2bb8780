"""boards.yaml loads, and every validation error names the file, the board and the field."""
import copy
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from hw.board.boards import (BOARDS_YAML, PFD_MHZ, VCO_MHZ, BoardError, default_board_name,
                       get_board, load_boards)

EXPECTED = {"ulx3s": "LFE5U-85F", "ulx3s-usb": "LFE5U-85F", "ulx3s-cordic": "LFE5U-85F",
            "ulx3s-45f": "LFE5U-45F",
            "ulx3s-25f": "LFE5U-25F", "ulx3s-12f": "LFE5U-12F"}


def test_boards_yaml_loads_with_the_ulx3s_variants():
    boards = load_boards()
    assert {n: b.device for n, b in boards.items()} == EXPECTED
    assert default_board_name() == "ulx3s"
    assert get_board().name == "ulx3s"
    for b in boards.values():
        assert b.package == "CABGA381"
        assert b.clock.oscillator_mhz == 25
        # The dividers make the target, inside the PLL's ranges, recomputed here independently.
        p = b.clock.pll
        f_out = 25.0 / p.clki_div * p.clkfb_div
        assert f_out == pytest.approx(b.clock.target_mhz)
        assert VCO_MHZ[0] <= f_out * p.clkop_div <= VCO_MHZ[1]
        assert PFD_MHZ[0] <= 25.0 / p.clki_div <= PFD_MHZ[1]
        assert b.engine.macs <= b.resources.MULT18X18D
        assert b.engine.activation in ("lut", "cordic")
        assert b.platform_class().device == b.device
        assert b.sdram.chip == "IS42S16160G"


def test_85f_resources_match_design_md():
    r = get_board("ulx3s").resources
    assert (r.LUT4, r.MULT18X18D, r.DP16KD) == (83640, 156, 208)


@pytest.fixture
def doc():
    return yaml.safe_load(BOARDS_YAML.read_text())


def write(tmp_path, doc):
    path = tmp_path / "boards.yaml"
    path.write_text(yaml.safe_dump(doc))
    return path


def expect_error(path, board, field, *fragments, name=None):
    with pytest.raises(BoardError) as info:
        get_board(name or board, path)
    msg = str(info.value)
    assert str(path) in msg, msg
    assert f"board {board!r}" in msg, msg
    if field is not None:
        assert f"field {field!r}" in msg, msg
    for fragment in fragments:
        assert fragment in msg, msg
    return msg


def test_unknown_board_lists_the_known_ones():
    with pytest.raises(BoardError) as info:
        get_board("ulx3s-99f")
    msg = str(info.value)
    assert str(BOARDS_YAML) in msg and "'ulx3s-99f'" in msg
    for name in EXPECTED:
        assert name in msg


@pytest.mark.parametrize("field_path", ["device", "clock.target_mhz", "clock.pll.clkop_div",
                                        "sdram.cas_latency", "link.baud", "resources.DP16KD",
                                        "engine.activation"])
def test_missing_field(tmp_path, doc, field_path):
    entry = doc["boards"]["ulx3s-25f"]
    *parents, last = field_path.split(".")
    for p in parents:
        entry = entry[p]
    del entry[last]
    expect_error(write(tmp_path, doc), "ulx3s-25f", field_path, "missing")


@pytest.mark.parametrize("field_path,value,fragment", [
    ("speed_grade", "six", "expected int, not str"),
    ("speed_grade", True, "expected int, not bool"),
    ("clock.target_mhz", "100 MHz", "expected float"),
    ("engine.pointwise_in_lanes", 4.5, "expected int, not float"),
    ("link", 3000000, "expected a mapping"),
    ("engine.activation", "tanh", "'tanh' is not one of 'lut', 'cordic'"),
    ("link.kind", "ethernet", "'ethernet' is not one of 'uart', 'usb'"),
    ("sdram.cas_latency", 4, "not one of 2, 3"),
    ("clock.pll.clki_div", 0, "out of range"),
])
def test_bad_type_or_range(tmp_path, doc, field_path, value, fragment):
    entry = doc["boards"]["ulx3s"]
    *parents, last = field_path.split(".")
    for p in parents:
        entry = entry[p]
    entry[last] = value
    expect_error(write(tmp_path, doc), "ulx3s", field_path, fragment)


def test_unknown_key_names_it_and_lists_the_allowed(tmp_path, doc):
    doc["boards"]["ulx3s-45f"]["engine"]["pointwise_lanes"] = 8
    msg = expect_error(write(tmp_path, doc), "ulx3s-45f", "engine.pointwise_lanes", "unknown key")
    assert "pointwise_in_lanes" in msg


def test_unknown_top_level_key(tmp_path, doc):
    doc["board"] = {}
    path = write(tmp_path, doc)
    with pytest.raises(BoardError, match=re.escape(str(path)) + ".*unknown top-level key 'board'"):
        load_boards(path)


def test_default_must_be_a_board(tmp_path, doc):
    doc["default"] = "ulx3s-85"
    path = write(tmp_path, doc)
    with pytest.raises(BoardError, match="default board 'ulx3s-85' is not among"):
        get_board(None, path)


def test_pll_that_misses_the_target(tmp_path, doc):
    doc["boards"]["ulx3s"]["clock"]["target_mhz"] = 100
    doc["boards"]["ulx3s"]["clock"]["pll"] = {"clki_div": 1, "clkfb_div": 5, "clkop_div": 6,
                                              "clkop_cphase": 2}     # 125 MHz, target 100
    expect_error(write(tmp_path, doc), "ulx3s", "clock.pll", "125 MHz", "target_mhz=100")


def test_pll_vco_out_of_range(tmp_path, doc):
    doc["boards"]["ulx3s"]["clock"]["target_mhz"] = 100
    doc["boards"]["ulx3s"]["clock"]["pll"] = {"clki_div": 1, "clkfb_div": 4, "clkop_div": 10,
                                              "clkop_cphase": 2}     # VCO 1000 MHz
    expect_error(write(tmp_path, doc), "ulx3s", "clock.pll.clkop_div", "VCO", "1000 MHz",
                 "400..800")


def test_pll_pfd_out_of_range(tmp_path, doc):
    pll = doc["boards"]["ulx3s"]["clock"]["pll"]
    pll.update(clki_div=10, clkfb_div=40)                    # 2.5 MHz at the phase detector
    expect_error(write(tmp_path, doc), "ulx3s", "clock.pll.clki_div", "phase detector")


def test_platform_of_another_device(tmp_path, doc):
    doc["boards"]["ulx3s"]["platform"] = "amaranth_boards.ulx3s.ULX3S_45F_Platform"
    expect_error(write(tmp_path, doc), "ulx3s", "platform", "LFE5U-45F")


def test_platform_that_does_not_import(tmp_path, doc):
    doc["boards"]["ulx3s"]["platform"] = "amaranth_boards.ulx3s.NoSuchPlatform"
    expect_error(write(tmp_path, doc), "ulx3s", "platform", "cannot import")


def test_unknown_sdram_chip(tmp_path, doc):
    pytest.importorskip("hw.memory.sdram_chips")
    doc["boards"]["ulx3s"]["sdram"]["chip"] = "MT48LC16M16"
    expect_error(write(tmp_path, doc), "ulx3s", "sdram.chip", "MT48LC16M16", "IS42S16160G")


def test_cas_latency_too_short_for_the_clock(tmp_path, doc):
    pytest.importorskip("hw.memory.sdram_chips")
    b = doc["boards"]["ulx3s"]
    b["clock"]["target_mhz"] = 125
    b["clock"]["pll"] = {"clki_div": 1, "clkfb_div": 5, "clkop_div": 5, "clkop_cphase": 2}
    b["sdram"]["cas_latency"] = 2
    expect_error(write(tmp_path, doc), "ulx3s", "sdram.cas_latency", "CAS latency 2")


def test_baud_the_clock_cannot_make(tmp_path, doc):
    pytest.importorskip("hw.link.uart")
    doc["boards"]["ulx3s"]["link"]["baud"] = 12_000_000       # 100/12 = 8.33 cycles: 4 % off
    expect_error(write(tmp_path, doc), "ulx3s", "link.baud", "baud")


@pytest.mark.parametrize("field_path,value,fragment", [
    ("pointwise_out_lanes", 12, "power of two"),
    ("pointwise_in_lanes", 8, "must divide pointwise_out_lanes (4)"),
])
def test_pointwise_lanes_shape(tmp_path, doc, field_path, value, fragment):
    doc["boards"]["ulx3s-25f"]["engine"][field_path] = value
    expect_error(write(tmp_path, doc), "ulx3s-25f", "engine." + field_path, fragment)


def test_more_macs_than_multipliers(tmp_path, doc):
    doc["boards"]["ulx3s-12f"]["engine"]["pointwise_out_lanes"] = 8   # 32 + 3 > 28
    expect_error(write(tmp_path, doc), "ulx3s-12f", "engine", "4x8 array with the lut",
                 "needs 35 MULT18X18D, the device has 28")
    doc["boards"]["ulx3s-12f"]["engine"].update(pointwise_out_lanes=4, pointwise_in_lanes=2,
                                                activation="cordic")   # 8 + 3 + 2 fits
    doc["boards"]["ulx3s-12f"]["resources"]["MULT18X18D"] = 12
    expect_error(write(tmp_path, doc), "ulx3s-12f", "engine", "2x4 array with the cordic",
                 "needs 13 MULT18X18D, the device has 12")


def test_an_error_in_one_board_does_not_hide_behind_another(tmp_path, doc):
    bad = copy.deepcopy(doc)
    bad["boards"]["ulx3s-45f"]["device"] = "LFE5U-45"
    path = write(tmp_path, bad)
    assert get_board("ulx3s", path).device == "LFE5U-85F"      # the others still load one by one
    expect_error(path, "ulx3s-45f", "device", "not an ECP5 part")
    with pytest.raises(BoardError, match="ulx3s-45f"):
        load_boards(path)


def _ecppll(target_mhz, folder):
    exe = Path(sys.executable).parent / "yowasp-ecppll"
    if not exe.exists():
        pytest.skip("yowasp-ecppll not installed")
    subprocess.run([str(exe), "-i", "25", "-o", f"{target_mhz:g}", "-f", "pll.v"], cwd=folder,
                   capture_output=True, text=True, timeout=300, check=True)
    out = (Path(folder) / "pll.v").read_text()
    return {k.lower(): int(v) for k, v in
            re.findall(r"\.(CLKI_DIV|CLKFB_DIV|CLKOP_DIV|CLKOP_CPHASE)\((\d+)\)", out)}


@pytest.mark.synthesis
@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_pll_dividers_are_what_ecppll_gives(name, tmp_path):
    b = get_board(name)
    p = b.clock.pll
    expected = {"clki_div": p.clki_div, "clkfb_div": p.clkfb_div, "clkop_div": p.clkop_div,
                "clkop_cphase": p.clkop_cphase}
    assert _ecppll(b.clock.target_mhz, tmp_path) == expected


def test_link_kind_usb_takes_no_baud_and_uart_needs_one(tmp_path, doc):
    assert get_board("ulx3s-usb").link.kind == "usb" and get_board("ulx3s").link.kind == "uart"
    doc["boards"]["ulx3s-usb"]["link"]["baud"] = 3_000_000
    expect_error(write(tmp_path, doc), "ulx3s-usb", "link.baud", "kind 'uart'", "12 Mbit/s")
    doc["boards"]["ulx3s"]["link"] = {"kind": "uart"}
    expect_error(write(tmp_path, doc), "ulx3s", "link.baud", "missing")


def test_usb_pll_makes_exactly_48_and_12_mhz():
    from hw.link.usb import usb_pll
    # 25 MHz: 25 / 5 * 48 = 240 MHz (CLKOP, the feedback), VCO 480 = 48 * 10 = 12 * 40
    assert usb_pll(25) == {"clki_div": 5, "clkfb_div": 48, "clkop_div": 2, "clkos_div": 10,
                           "clkos2_div": 40, "clkop_mhz": 240.0, "vco_mhz": 480.0}
    with pytest.raises(ValueError, match="exactly 48 and 12 MHz from a 7.3 MHz"):
        usb_pll(7.3)


@pytest.mark.synthesis
def test_usb_pll_is_what_ecppll_gives(tmp_path):
    from hw.link.usb import usb_pll
    exe = Path(sys.executable).parent / "yowasp-ecppll"
    if not exe.exists():
        pytest.skip("yowasp-ecppll not installed")
    subprocess.run([str(exe), "-i", "25", "-o", "240", "--clkout1", "48", "--clkout2", "12",
                    "-f", "pll.v"], cwd=tmp_path, capture_output=True, text=True, timeout=300,
                   check=True)
    got = {k.lower(): int(v) for k, v in re.findall(
        r"\.(CLKI_DIV|CLKFB_DIV|CLKOP_DIV|CLKOS_DIV|CLKOS2_DIV)\((\d+)\)",
        (tmp_path / "pll.v").read_text())}
    d = usb_pll(25)
    assert got == {k: d[k] for k in got} and len(got) == 5
