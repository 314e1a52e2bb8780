"""The error convention of every command (quant/cli.py), atomic outputs (quant/files.py) and
caches that cannot go stale (hw.build's step records, the Verilator build record).

Each bad input runs the command as a user would (a subprocess) and checks the exit code (2 for
a user error) and that stderr is exactly one line naming the culprit. docs/RELIABILITY.md lists
the same cases with their messages.
"""
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from quant import cli, files

ROOT = Path(__file__).resolve().parent.parent


def run(module, *args, timeout=300):
    proc = subprocess.run([sys.executable, "-m", module, *map(str, args)], cwd=ROOT,
                          capture_output=True, text=True, timeout=timeout)
    return proc.returncode, proc.stdout, proc.stderr


# Where each command's main lives (``python -m quant`` runs quant/__main__.py, ...).
MAINS = {"quant": "quant.__main__", "hw.build": "hw.build.flow"}
# One case per command runs as a real process (the exit code as the shell sees it); the
# others call the same main in this process, which is the same code path and much quicker.
SUBPROCESS = set()


def call(module, *args):
    """``main(args)`` of ``module`` in this process: (exit code, stdout, stderr)."""
    import contextlib
    import importlib
    import io
    main = importlib.import_module(MAINS.get(module, module)).main
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main([str(a) for a in args])
    return code, out.getvalue(), err.getvalue()


def one_line_error(module, *args, culprit, code=2):
    """Run; the exit code is ``code`` and stderr one line ``<prog>: error: ...`` naming
    ``culprit`` (each string of a tuple). The first case of each command runs as a process."""
    if module not in SUBPROCESS:
        SUBPROCESS.add(module)
        rc, out, err = run(module, *args)
    else:
        rc, out, err = call(module, *args)
    lines = err.strip().splitlines()
    assert rc == code, f"exit {rc}, stderr: {err}"
    assert len(lines) == 1, f"stderr is not one line: {err}"
    assert lines[0].startswith(f"python -m {module}") and ": error: " in lines[0], lines[0]
    for c in (culprit if isinstance(culprit, tuple) else (culprit,)):
        assert str(c) in lines[0], f"{c!r} not named in {lines[0]!r}"
    assert "Traceback" not in err
    return lines[0]


@pytest.fixture(scope="module")
def notes(tmp_path_factory):
    path = tmp_path_factory.mktemp("bad") / "notes.txt"
    path.write_text("hello, not a checkpoint\n")
    return path


@pytest.fixture(scope="module")
def negative_clock(tmp_path_factory):
    text = (ROOT / "boards.yaml").read_text()
    assert "target_mhz: 81.25" in text
    path = tmp_path_factory.mktemp("boards") / "boards.yaml"
    path.write_text(text.replace("target_mhz: 81.25", "target_mhz: -5", 1))
    return path


# -- the rows of issue 14's table ------------------------------------------------------------

def test_quant_weights_not_a_checkpoint(notes, tmp_path):
    line = one_line_error("quant", "--weights", notes, "--out", tmp_path / "q",
                          culprit=(notes, "not a PyTorch checkpoint"))
    assert "(101)" not in line
    assert not (tmp_path / "q").exists()


def test_firmware_compiler_unknown_board(tmp_path):
    one_line_error("firmware.compiler", "--artifact", tmp_path, "--board", "nope",
                   culprit=("unknown board 'nope'", "ulx3s-45f"))


def test_firmware_compiler_negative_clock(negative_clock, tmp_path):
    one_line_error("firmware.compiler", "--artifact", tmp_path, "--boards-file", negative_clock,
                   culprit=(negative_clock, "clock.target_mhz", "-5"))


def test_run_sim_negative_clock(negative_clock):
    one_line_error("sim.run_sim", "--boards-file", negative_clock,
                   culprit=(negative_clock, "clock.target_mhz"))


@pytest.mark.parametrize("faces", ["0", "-1"])
def test_run_sim_face_count(faces):
    one_line_error("sim.run_sim", "--faces", faces, culprit=("--faces", faces))


def test_run_sim_more_faces_than_there_are():
    one_line_error("sim.run_sim", "--faces", "60", culprit=("--faces 60", "only 51"))


@pytest.mark.parametrize("option,value,culprit", [
    ("--eval-faces", "0", "--eval-faces"),
    ("--calibration-faces", "0", "--calibration-faces"),
    ("--act-bits", "1", "activation bits must be 2..16"),
    ("--bits", "40", "weight bits must be 2..16"),
    ("--threads", "0", "--threads"),
    ("--wide", "act,bogus", "'bogus'"),
    ("--cordic-width", "8", "CORDIC width must be 12..40"),
    ("--variant", "seesaw_foo", "known: seesaw_shuffle"),
])
def test_quant_options_are_checked_before_any_work(option, value, culprit, tmp_path):
    one_line_error("quant", option, value, "--out", tmp_path / "q", culprit=culprit)
    assert not (tmp_path / "q").exists()      # nothing written, not even a manifest


def test_quant_cordic_iterations_beyond_width(tmp_path):
    one_line_error("quant", "--cordic-width", "12", "--cordic-iterations", "10",
                   culprit=("--cordic-iterations", "4..9"))


@pytest.mark.parametrize("module,args", [
    ("hw.build", ["--variant", "seesaw_foo"]),
    ("quant.verification", ["--shipped", "--variant", "seesaw_foo"]),
    ("quant.counts", ["seesaw_foo"]),
    ("quant.reference_model", ["check", "--variant", "seesaw_foo"]),
    ("sim.run_sim", ["--variant", "seesaw_foo"]),
])
def test_unknown_variant_lists_the_known_ones(module, args):
    one_line_error(module, *args, culprit=("seesaw_foo", "seesaw_shuffle, seesaw_share"))


def test_run_sim_corrupt_image(tmp_path):
    folder = tmp_path / "faces"
    folder.mkdir()
    (folder / "fake.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    one_line_error("sim.run_sim", "--images", folder, "--faces", "1", culprit="fake.png")


# -- the same cases for the other commands ---------------------------------------------------

def test_hw_build_unknown_board():
    one_line_error("hw.build", "--board", "ulx3s-99f", culprit=("'ulx3s-99f'", "ulx3s-12f"))


def test_hw_build_negative_clock(negative_clock):
    one_line_error("hw.build", "--boards-file", negative_clock,
                   culprit=(negative_clock, "clock.target_mhz"))


def test_hw_build_missing_weights(tmp_path):
    one_line_error("hw.build", "--weights", tmp_path / "none.pt", culprit="--weights")


def test_hw_build_unknown_step():
    one_line_error("hw.build", "--stop-step", "route", culprit="--stop-step")


def test_verification_missing_bin(tmp_path):
    one_line_error("quant.verification", "--bin", tmp_path / "lfw.bin",
                   culprit=("--bin", "lfw.bin", "no such file"))


def test_verification_bin_that_is_not_one(notes):
    one_line_error("quant.verification", "--bin", notes, "--limit", "1",
                   culprit=(notes, "verification .bin"))


@pytest.mark.parametrize("option,value", [("--folds", "1"), ("--limit", "0"), ("--seed", "-3")])
def test_verification_counts(option, value):
    one_line_error("quant.verification", "--shipped", option, value, culprit=option)


def test_verification_bad_artifact(tmp_path):
    one_line_error("quant.verification", "--shipped", "--artifact", tmp_path,
                   culprit=("manifest.json", "missing"))


def test_reference_model_weights_not_a_checkpoint(notes):
    one_line_error("quant.reference_model", "check", "--weights", notes,
                   culprit=(notes, "not a PyTorch checkpoint"))


def test_reference_model_steps():
    one_line_error("quant.reference_model", "train", "--steps", "0", culprit="--steps")


def test_other_weights_snapshot_is_not_retrained(tmp_path):
    """A missing snapshot is named, not silently replaced by a full training run."""
    missing = tmp_path / "seed1_step300.pt"
    one_line_error("quant.other_weights", "--weights", missing, "--stopped-at", "300",
                   culprit=(missing, "not retrained"))
    assert not missing.exists()
    one_line_error("quant.other_weights", "--weights", missing, "--stopped-at", "700",
                   culprit=("--stopped-at 700", "more than --steps 600"))


def test_faces_out_is_a_file(notes):
    one_line_error("quant.faces", "--out", notes, culprit=("--out", "not a folder"))


def test_firmware_compiler_not_an_artifact(tmp_path):
    one_line_error("firmware.compiler", "--artifact", tmp_path,
                   culprit=("manifest.json", "not a quantized-model artifact"))


def test_firmware_run_serial_port(tmp_path):
    face = tmp_path / "face.npy"
    np.save(face, np.zeros((112, 112, 3), np.uint8))
    one_line_error("firmware.run", "--port", tmp_path / "ttyNONE", face,
                   culprit=("serial port", "ttyNONE"))


def test_firmware_run_face_not_an_image(notes):
    one_line_error("firmware.run", "--port", "/dev/null", notes,
                   culprit=(notes, "not an image"))


@pytest.mark.parametrize("option,value", [("--baud", "0"), ("--timeout", "0"),
                                          ("--retries", "-1")])
def test_firmware_run_options(option, value, tmp_path):
    one_line_error("firmware.run", "--port", "/dev/null", option, value, tmp_path / "f.npy",
                   culprit=option)


def test_debug_shows_the_traceback(notes):
    rc, _, err = run("quant", "--weights", notes, "--debug")
    assert rc == 2 and "Traceback" in err and "CheckpointError" in err


# -- the helper itself -----------------------------------------------------------------------

def test_internal_error_is_one_line_exit_1(capsys):
    def boom(argv):
        raise RuntimeError("first\nsecond")
    assert cli.run(boom, [], prog="prog") == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["prog: error: RuntimeError: first; second (an internal error; --debug "
                   "shows the traceback)"]


def test_failed_run_exits_1_and_user_error_2(capsys):
    def failed(argv):
        raise cli.RunFailed("2 of 2 frames not bit-exact")

    def bad(argv):
        raise cli.UserError("--images x", "no such folder")
    assert cli.run(failed, [], prog="p") == 1
    assert cli.run(bad, [], prog="p") == 2
    err = capsys.readouterr().err.splitlines()
    assert err == ["p: failed: 2 of 2 frames not bit-exact", "p: error: --images x: no such folder"]


def test_project_errors_are_user_errors():
    from firmware.compiler import CompileError
    from firmware.image import ImageError
    from firmware.transport import TransportError
    from hw.board.boards import BoardError
    from quant.artifact import ArtifactError
    from quant.checkpoint import CheckpointError
    from quant.quantize import QuantizeError
    from quant.verification import BinFormatError
    for cls in (CompileError, ImageError, TransportError, BoardError, ArtifactError,
                CheckpointError, QuantizeError, BinFormatError):
        assert issubclass(cls, cli.UserError), cls


# -- no half-written outputs -----------------------------------------------------------------

def test_atomic_write_keeps_the_old_file_on_failure(tmp_path):
    path = tmp_path / "report.json"
    files.write_json(path, {"good": 1})
    with pytest.raises(RuntimeError):
        with files.atomic(path) as tmp:
            tmp.write_text('{"half": ')
            raise RuntimeError("the writer died")
    assert json.loads(path.read_text()) == {"good": 1}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["report.json"]


def test_staged_dir_moves_all_or_nothing(tmp_path):
    out = tmp_path / "q"
    with files.staged_dir(out) as stage:
        (stage / "model.npz").write_text("new arrays")
        (stage / "manifest.json").write_text("new manifest")
    assert (out / "manifest.json").read_text() == "new manifest"
    with pytest.raises(ZeroDivisionError):
        with files.staged_dir(out) as stage:
            (stage / "model.npz").write_text("newer arrays")
            1 / 0
    assert (out / "model.npz").read_text() == "new arrays"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["q"]


# -- caches that cannot go stale -------------------------------------------------------------

def _product_step(tmp_path, calls):
    from hw.build.flow import Step
    product = tmp_path / "product.bin"
    source = tmp_path / "input.txt"

    def make(ctx):
        calls.append(1)
        files.write_bytes(product, source.read_bytes() * 2)
        return {"product": str(product)}
    return Step("make", make, key=lambda ctx: {"input": files.sha256(source)},
                outputs=lambda ctx: [product]), source, product


class _Ctx:
    def __init__(self):
        self.results, self.status, self.seconds, self.built_seconds = {}, {}, {}, {}


def test_step_cache_rebuilds_a_corrupt_product(tmp_path):
    from hw.build.flow import StepRunner
    calls, lines = [], []
    step, source, product = _product_step(tmp_path, calls)
    source.write_text("abc")
    runner = StepRunner([step], tmp_path / ".cache", log=lines.append)
    runner.run(_Ctx())
    runner.run(_Ctx())
    assert len(calls) == 1 and any("unchanged, skipped" in t for t in lines)
    product.write_bytes(product.read_bytes()[:2])            # truncated behind the cache's back
    runner.run(_Ctx())
    assert len(calls) == 2 and product.read_text() == "abcabc"
    assert any("not the one recorded" in t for t in lines)
    source.write_text("abd")                                  # an input changed
    runner.run(_Ctx())
    assert len(calls) == 3 and product.read_text() == "abdabd"


def test_step_cache_without_product_hashes_rebuilds(tmp_path):
    """A record written before products were hashed is not trusted."""
    from hw.build.flow import StepRunner
    calls = []
    step, source, product = _product_step(tmp_path, calls)
    source.write_text("x")
    runner = StepRunner([step], tmp_path / ".cache", log=lambda t: None)
    runner.run(_Ctx())
    rec_file = tmp_path / ".cache" / "make.json"
    rec = json.loads(rec_file.read_text())
    del rec["products"]
    rec_file.write_text(json.dumps(rec))
    runner.run(_Ctx())
    assert len(calls) == 2


def test_quantize_key_covers_weights_sources_options_and_faces(tmp_path):
    from hw.board.boards import get_board
    from hw.build.flow import BuildContext, _quantize_key
    weights = tmp_path / "w.pt"
    weights.write_bytes(b"one")
    ctx = BuildContext(board=get_board("ulx3s"), weights=weights, out=tmp_path)
    key = _quantize_key(ctx)
    assert key["weights_hash"] == files.sha256(weights)
    assert key["quant_sources"] and key["torch"] and key["calibration_faces"]
    weights.write_bytes(b"two")
    assert _quantize_key(ctx)["weights_hash"] != key["weights_hash"]
    quick = BuildContext(board=get_board("ulx3s"), weights=weights,
                         out=tmp_path, quant_args=("--eval-faces", "4"))
    assert _quantize_key(quick)["quant_args"] == ["--eval-faces", "4"]
    cordic = BuildContext(board=get_board("ulx3s-cordic"), weights=weights, out=tmp_path)
    assert _quantize_key(cordic)["act"] == "cordic" and cordic.quant_dir.name.endswith("_cordic")


def test_truncated_model_npz_is_detected(tmp_path):
    from tests.engine_nets import build
    from quant.artifact import ArtifactError, load, save
    art = build("se_block").artifact()
    save(art, tmp_path)
    load(tmp_path)
    data = (tmp_path / "model.npz").read_bytes()
    (tmp_path / "model.npz").write_bytes(data[:len(data) // 2])
    with pytest.raises(ArtifactError, match="model.npz.*does not match"):
        load(tmp_path)


def test_verilator_build_record(tmp_path):
    """The simulator is reused only with the same input hash and the same executable."""
    from sim.runner import _build_current, _build_key, _clean_build
    src = tmp_path / "top.v"
    src.write_text("module top; endmodule\n")
    key = _build_key(src, [], ["-O2"], ("1ns", "1ps"), False, "top")
    assert key == _build_key(src, [], ["-O2"], ("1ns", "1ps"), False, "top")
    assert key != _build_key(src, [], ["-O3"], ("1ns", "1ps"), False, "top")
    exe = tmp_path / "top"
    exe.write_bytes(b"\x7fELF simulator")
    record = tmp_path / ".cache" / "verilator.json"
    files.write_json(record, {"key": key, "simulator": files.sha256(exe)})
    assert _build_current(record, key, exe)
    src.write_text("module top; wire a; endmodule\n")          # the Verilog changed
    assert not _build_current(record, _build_key(src, [], ["-O2"], ("1ns", "1ps"), False,
                                                 "top"), exe)
    exe.write_bytes(b"\x7fELF simul")                          # the simulator is corrupt
    assert not _build_current(record, key, exe)
    (tmp_path / "Vtop.mk").write_text("")
    (tmp_path / "Vtop__ALL.o").write_text("")
    _clean_build(tmp_path, "top")
    assert sorted(p.name for p in tmp_path.iterdir()) == [".cache", "top.v"]


def test_hw_build_passes_on_the_quantizer_refusing_its_weights(notes, tmp_path):
    """hw.build's quantize step runs `python -m quant`; its one-line refusal stays one line and
    a user error (exit 2), and no cache record is left for the failed step."""
    line = one_line_error("hw.build", "--weights", notes, "--stop-step", "quantize",
                          "--out", tmp_path, culprit=(notes, "not a PyTorch checkpoint",
                                                      "quantize.log"))
    assert "quantize (python -m quant)" in line
    assert not list(tmp_path.rglob(".cache/quantize.json"))


