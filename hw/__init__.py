"""Amaranth generator of the SeesawFaceNet accelerator and its ULX3S build."""
