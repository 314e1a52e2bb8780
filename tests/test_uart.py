import pytest

from hw.link.uart import MIN_DIVIDER, UARTRx, UARTTx, uart_divider
from sim.runner import run_cocotb


def test_divider_values():
    assert uart_divider(48e6, 3_000_000) == 16
    assert uart_divider(100e6, 3_000_000) == 33          # 3.03 Mbaud, 1.0 % off
    assert uart_divider(25e6, 115200) == 217


def test_divider_errors_name_both_values():
    with pytest.raises(ValueError, match=r"clk_freq=2.5e\+07.*baud=3e\+06"):
        uart_divider(25e6, 3_000_000)                     # 8 cycles: 3.125 Mbaud, 4.2 % off
    with pytest.raises(ValueError, match=r"clk_freq=1e\+07.*baud=3e\+06.*below the minimum"):
        uart_divider(10e6, 3_000_000)
    with pytest.raises(ValueError, match="divider"):
        UARTRx(MIN_DIVIDER - 1)
    with pytest.raises(ValueError, match="divider"):
        UARTTx(2.5)


def test_uart_cocotb():
    from sim.tb_uart import UARTBench
    run_cocotb(UARTBench(6), name="uart_d6", test_module="sim.tb_uart",
               extra_env={"DIVIDER": "6"})


def test_uart_bench_fails_on_an_extra_byte():
    """The bench's drain check bites: one byte more through the loopback than the test expects
    must fail it, naming the stream and the byte."""
    from sim.runner import SIM_BUILD
    from sim.tb_uart import UARTBench
    with pytest.raises((AssertionError, SystemExit)):    # (the cocotb runner exits)
        run_cocotb(UARTBench(6), name="uart_d6", test_module="sim.tb_uart",
                   testcase="loopback_with_stalls",
                   extra_env={"DIVIDER": "6", "UART_FAULT": "extra_byte"})
    log = (SIM_BUILD / "uart_d6" / "run.log").read_text()
    assert "DrainError: o_stream: an extra output word 0x5a after the expected count" in log
