"""The host driver's clock in a testbench: ``start_host_clock(transport, dut.clk)``.

A bench that runs :class:`firmware.driver.Device` in a thread over a
:class:`firmware.transport.QueueTransport` feeds it the simulated time, so that the driver's
timeouts count simulated seconds: a response is late when the design takes too many cycles,
never because a loaded machine runs the simulation slowly.
"""
import cocotb
from cocotb.triggers import ClockCycles
from cocotb.utils import get_sim_time


def _now() -> float:
    return get_sim_time(unit="ns") * 1e-9


async def _tick(transport, clk, every):
    while True:
        await ClockCycles(clk, every)
        transport.set_time(_now())


def start_host_clock(transport, clk, every: int = 1000):
    """Put ``transport`` on the simulated time now (before the driver's thread starts: a
    deadline taken on the host's clock would never come on the simulated one) and keep it
    there, updated every ``every`` cycles of ``clk``; returns the running task."""
    transport.set_time(_now())
    return cocotb.start_soon(_tick(transport, clk, every))
