"""Layer-program compiler, memory image and host driver."""
