"""A unit bench's case and result files, and its first steps.

The pytest side writes a case (:func:`write_case`) and passes its path in ``$CASE``; the bench
reads it (:func:`load_case`), starts the 10 ns clock and holds the design in reset with its
control inputs at 0 (:func:`clock_and_reset`), runs, and writes its result beside the case
(:func:`save_result`), which the pytest side reads (:func:`read_result`).
"""
import json
import os


def write_case(path, case: dict) -> str:
    """Pytest side: ``case`` as JSON at ``path``; returns the path for ``$CASE``."""
    path = os.fspath(path)
    with open(path, "w") as f:
        json.dump(case, f)
    return path


def read_result(path) -> dict:
    """Pytest side: what the bench saved for the case at ``path``."""
    with open(os.fspath(path) + ".out.json") as f:
        return json.load(f)


def save_result(result: dict) -> None:
    """Bench side: ``result`` beside the case file (``$CASE.out.json``)."""
    with open(os.environ["CASE"] + ".out.json", "w") as f:
        json.dump(result, f)


def load_case() -> dict:
    """The case of this run: the JSON file ``$CASE`` names."""
    with open(os.environ["CASE"]) as f:
        return json.load(f)


async def clock_and_reset(dut, idle=(), cycles: int = 3):
    """Start ``dut.clk`` (10 ns) and hold ``dut.rst`` for ``cycles`` cycles, with every input
    of ``idle`` that the design has at 0."""
    import cocotb
    from cocotb.clock import Clock
    from cocotb.triggers import ClockCycles
    cocotb.start_soon(Clock(dut.clk, 10, unit="ns").start())
    dut.rst.value = 1
    for name in idle:
        if hasattr(dut, name):
            getattr(dut, name).value = 0
    await ClockCycles(dut.clk, cycles)
    dut.rst.value = 0
