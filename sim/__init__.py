"""cocotb testbenches and the Verilator runner for the generated hardware."""
