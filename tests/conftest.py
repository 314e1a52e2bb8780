"""Session fixtures shared by the test files.

``seesaw_shuffle_artifact``: the shipped weights (``models/seesaw_shuffle.pt``) quantized once
per session into ``build/quant/seesaw_shuffle`` (the folder ``make quantize`` and ``make sim``
use), so that a whole-frame test never depends on another test, or an earlier command, having
made it. On a fresh clone this quantizes (minutes: the adaptive weight rounding of the default
quantizer takes most of them; the artifact is the full one, only the fidelity report is cut
short); afterwards it reuses the folder.
"""
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session")
def seesaw_shuffle_artifact() -> Path:
    """Folder of the quantized shipped seesaw_shuffle (LUT activation, the ulx3s board's form)."""
    from hw.board.boards import get_board
    from sim.run_sim import _artifact
    weights = ROOT / "models" / "seesaw_shuffle.pt"
    assert weights.exists(), f"{weights}: the shipped weights are part of the repository"
    folder = _artifact(get_board("ulx3s"), "seesaw_shuffle", weights, quick=True)
    assert (folder / "manifest.json").exists(), f"{folder}: quantization left no manifest"
    return folder


@pytest.fixture(scope="module")
def cal():
    """The shipped calibration faces."""
    from quant import faces
    return faces.load("calibration")


@pytest.fixture(scope="module")
def model(cal):
    """seesaw_shuffle with seeded random weights, BatchNorm calibrated on 8 faces."""
    from tests.test_quantize import calibrated_random_model
    return calibrated_random_model("seesaw_shuffle", cal[:8])
