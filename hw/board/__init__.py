"""Boards: boards.yaml, the board top (PLL, SDRAM, link, engine)."""
