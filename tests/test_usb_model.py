"""The USB link model (hw/link/usb_model.py) and its report."""
import json
import math

import pytest

from firmware import protocol as P
from hw.link import usb_model as U


def test_face_frames_cover_the_face():
    assert U.face_frames() == [4 + 112 * 112 * 3]         # one frame into the face buffer
    frames = U.face_frames(max_payload=P.MAX_PAYLOAD)      # a board with no room for a face
    assert sum(p - 4 for p in frames) == 112 * 112 * 3
    assert len(frames) == math.ceil(112 * 112 * 3 / (P.MAX_PAYLOAD - 4)) == 19


def test_usb_figures_from_first_principles():
    m = U.model(turnaround_ms=1.0)
    usb = m["links"]["usb_full_speed"]
    assert usb["bytes_per_s"] == 19 * 64 * 1000
    sw = usb["stop_and_wait"]
    # one FACE_DATA frame + READ_RESULT: 2 commands, 2 ms of turnarounds
    up = 112 * 112 * 3 + (4 + 8) + 8
    down = 8 + 1024 + 8
    assert sw["seconds"] == pytest.approx((up + down) / 1.216e6 + 2e-3)
    assert sw["overlapped_faces_per_s"] == pytest.approx(1 / usb["engine"]["seconds"])
    assert sw["bound_by"] == "engine"
    # each link's engine is its own board's build: cycles at the clock that build met
    for link, board in (("usb_full_speed", "ulx3s-usb"), ("uart_3mbaud", "ulx3s")):
        rep = json.loads((U.ROOT / "reports" / f"board_{board}.json").read_text())
        eng = m["links"][link]["engine"]
        assert eng["board"] == board
        assert eng["seconds"] == rep["cycles_per_frame"] / (rep["achieved_clock_mhz"] * 1e6)
    # the UART's 3 Mbaud carries a face in about 130 ms: the link bounds it
    assert m["links"]["uart_3mbaud"]["stop_and_wait"]["bound_by"] == "link"


def test_report_is_what_the_model_gives():
    rep = json.loads((U.ROOT / "reports" / "usb_link.json").read_text())
    assert rep == json.loads(json.dumps(U.model()))


def test_bad_arguments_exit_2(capsys, tmp_path):
    assert U.main(["--turnaround-ms", "-1"]) == 2
    assert "--turnaround-ms -1.0: must be >= 0" in capsys.readouterr().err
    assert U.main(["--reports", str(tmp_path)]) == 2
    assert "no build report board_ulx3s-usb.json" in capsys.readouterr().err
