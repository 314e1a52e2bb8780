"""cocotb testbench of :class:`hw.engine.pointwise.PointwiseArray`: the weight, parameter and pixel
streams of one layer go in with random idle cycles, the output leaves under random back-pressure
(the shared case harness of :mod:`sim.tb_requantize`; the pytest side compares bit for bit)."""
import cocotb

from sim.tb_requantize import run_case


@cocotb.test()
async def pointwise_case(dut):
    """One layer from $CASE."""
    await run_case(dut)
