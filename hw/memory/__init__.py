"""External memory: SDRAM controller and chip data, the port arbiter, the simulation memory."""
